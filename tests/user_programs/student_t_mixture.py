"""A mixture of three Student-t components whose locations start at the first rows of the data
the program is called with (``pyro.param("locs", lambda: x[:K].clone())``: data-dependent
initialization inside the program), the assignment enumerated with ``config_enumerate``.

Exact; checked against scipy.stats.t and logsumexp.
"""

from types import SimpleNamespace

import numpy as np
import pyro
import pyro.distributions as dist
import scipy.special
import scipy.stats
import torch
from pyro.infer import config_enumerate
from torch.distributions import constraints

K = 3
KIND = "exact"
FIT = dict(num_steps=150, optim=0.05, batch_size=150, seed=0)
EVALUATE: dict = {}


@config_enumerate
def model(x):
    weights = pyro.param("weights", torch.ones(K) / K, constraint=constraints.simplex)
    locs = pyro.param("locs", lambda: x[:K].clone())
    scales = pyro.param("scales", torch.ones(K), constraint=constraints.positive)
    df = pyro.param("df", torch.tensor(4.0), constraint=constraints.greater_than(1.0))
    with pyro.plate("data", len(x)):
        assignment = pyro.sample("assignment", dist.Categorical(weights))
        pyro.sample("x", dist.StudentT(df, locs[assignment], scales[assignment]), obs=x)


def make_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.array([-6.0, 0.0, 5.0])[rng.integers(3, size=400)] + rng.standard_t(3.0, size=400)
    x = torch.as_tensor(x, dtype=torch.float32)  # heavy tails
    return x[:300], x[300:]


def build() -> SimpleNamespace:
    return SimpleNamespace(model=model, guide=None)


def reference(program, test) -> torch.Tensor:
    weights, locs, scales = (pyro.param(n).detach().double().numpy()
                             for n in ("weights", "locs", "scales"))
    df = pyro.param("df").item()
    assert locs.shape == (K,), locs.shape
    per_component = np.log(weights) + scipy.stats.t.logpdf(test.double().numpy()[:, None], df,
                                                           locs, scales)
    return torch.as_tensor(scipy.special.logsumexp(per_component, axis=1))


def check_samples(program, guide, test) -> None:
    samples = pyro.infer.Predictive(pyro.poutine.uncondition(model), num_samples=4,
                                    return_sites=["assignment", "x"])(test)
    assert samples["x"].shape == (4, len(test)) and torch.isfinite(samples["x"]).all()
    assert set(samples["assignment"].unique().tolist()) <= set(range(K))
