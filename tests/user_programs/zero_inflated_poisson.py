"""A zero-inflated Poisson with exposures as per-example side data (``model(x, exposure)``):
the structural-zero indicator is an enumerated latent and the observation a ``MaskedMixture``
of a Poisson and a point mass at zero, as in Pyro's ZIP examples.

Exact; checked against log(π 1[x = 0] + (1 − π) Poisson(x | e λ)) with scipy.
"""

from types import SimpleNamespace

import numpy as np
import pyro
import pyro.distributions as dist
import scipy.stats
import torch
from torch.distributions import constraints

KIND = "exact"
FIT = dict(num_steps=200, optim=0.05, batch_size=100, seed=0)
EVALUATE: dict = {}


def model(x, exposure):
    gate = pyro.param("gate", torch.tensor(0.5), constraint=constraints.unit_interval)
    rate = pyro.param("rate", torch.tensor(1.0), constraint=constraints.positive)
    with pyro.plate("data", len(x)):
        zero = pyro.sample("zero", dist.Bernoulli(gate), infer={"enumerate": "parallel"})
        counts = dist.Poisson(exposure * rate)
        pyro.sample("x", dist.MaskedMixture(zero.bool(), counts, dist.Delta(torch.zeros_like(x))),
                    obs=x)


def make_data(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    exposure = torch.rand(500, generator=generator) + 0.5
    x = torch.poisson(3.0 * exposure, generator=generator) * (
        torch.rand(500, generator=generator) > 0.25)
    return (x[:400], exposure[:400]), (x[400:], exposure[400:])


def build() -> SimpleNamespace:
    return SimpleNamespace(model=model, guide=None)


def reference(program, test) -> torch.Tensor:
    x, exposure = (t.double().numpy() for t in test)
    gate, rate = pyro.param("gate").item(), pyro.param("rate").item()
    poisson = (1 - gate) * scipy.stats.poisson.pmf(x, exposure * rate)
    return torch.as_tensor(np.log(gate * (x == 0) + poisson))


def check_samples(program, guide, test) -> None:
    x, exposure = test
    samples = pyro.infer.Predictive(pyro.poutine.uncondition(model), num_samples=50,
                                    return_sites=["zero", "x"])(x, exposure)
    assert samples["x"].shape == (50, len(x))
    assert (samples["x"] >= 0).all() and (samples["x"] == samples["x"].round()).all()
    assert (samples["x"][samples["zero"].bool()] == 0).all()  # structural zeros are zeros
