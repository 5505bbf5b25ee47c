"""The README's program: a mixture of two Poissons, the assignment enumerated (summed out).

Checked against scipy: log p(x) = logsumexp_k [log w_k + log Poisson(x | λ_k)], exact.
"""

from types import SimpleNamespace

import numpy as np
import pyro
import pyro.distributions as dist
import scipy.special
import scipy.stats
import torch
from torch.distributions import constraints

KIND = "exact"
FIT = dict(num_steps=150, optim=0.05, batch_size=100, seed=0)
EVALUATE: dict = {}


def model(x):
    weights = pyro.param("weights", torch.ones(2) / 2, constraint=constraints.simplex)
    rates = pyro.param("rates", torch.tensor([1.0, 5.0]), constraint=constraints.positive)
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Categorical(weights), infer={"enumerate": "parallel"})
        pyro.sample("x", dist.Poisson(rates[z]), obs=x)


def make_data(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    rates = torch.tensor([2.0, 9.0])[torch.randint(2, (400,), generator=generator)]
    x = torch.poisson(rates, generator=generator)
    return x[:300], x[300:]


def build() -> SimpleNamespace:
    return SimpleNamespace(model=model, guide=None)


def reference(program, test) -> torch.Tensor:
    weights = pyro.param("weights").detach().double().numpy()
    rates = pyro.param("rates").detach().double().numpy()
    per_component = np.log(weights) + scipy.stats.poisson.logpmf(test.numpy()[:, None], rates)
    return torch.as_tensor(scipy.special.logsumexp(per_component, axis=1))


def check_samples(program, guide, test) -> None:
    samples = pyro.infer.Predictive(pyro.poutine.uncondition(program.model), num_samples=7,
                                    return_sites=["z", "x"])(test)
    assert samples["x"].shape == (7, len(test))
    assert (samples["x"] >= 0).all() and (samples["x"] == samples["x"].round()).all()
    assert set(samples["z"].unique().tolist()) <= {0, 1}
