"""A program that subsamples itself, ``pyro.plate("data", len(x), subsample_size=32)``, as in
Pyro's SVI tutorial part II: trained with Pyro's own subsampling, scored on every held-out row
(37 of them: not a multiple of the subsample size).

Exact; checked against scipy's normal log-density.
"""

from types import SimpleNamespace

import numpy as np
import pyro
import pyro.distributions as dist
import scipy.stats
import torch
from torch.distributions import constraints

KIND = "exact"
FIT = dict(num_steps=200, optim=0.05, seed=0)
EVALUATE: dict = {}


def model(x):
    loc = pyro.param("loc", torch.tensor(0.0))
    scale = pyro.param("scale", torch.tensor(1.0), constraint=constraints.positive)
    with pyro.plate("data", len(x), subsample_size=32) as index:
        pyro.sample("x", dist.Normal(loc, scale), obs=x[index])


def make_data(seed: int = 0):
    values = np.random.default_rng(seed).normal(3.0, 2.0, size=437)  # NumPy float64 input
    return values[:400], values[400:]


def build() -> SimpleNamespace:
    return SimpleNamespace(model=model, guide=None)


def reference(program, test) -> torch.Tensor:
    return torch.as_tensor(scipy.stats.norm.logpdf(test, pyro.param("loc").item(),
                                                   pyro.param("scale").item()))


def check_samples(program, guide, test) -> None:
    samples = pyro.infer.Predictive(pyro.poutine.uncondition(model), num_samples=5,
                                    return_sites=["x"])(torch.as_tensor(test, dtype=torch.float32))
    assert samples["x"].shape == (5, 32)  # one subsample of the plate per draw
    assert torch.isfinite(samples["x"]).all()
