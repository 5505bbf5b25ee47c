"""A network built *inside* the program on every call, its parameters taken from the param store
with ``pyro.module(..., update_module_params=True)`` (the pattern of Pyro's older examples: the
fresh module's random weights are replaced by the stored ones). Linear-Gaussian regression.
Without ``update_module_params`` every call's new module would be the one used and nothing would
train: probgen refuses that program and says why (checked in ``train``).

Exact; checked against scipy with the stored weight, bias and scale.
"""

from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import pytest
import scipy.stats
import torch
from torch import nn
from torch.distributions import constraints

import probgen

KIND = "exact"
FIT = dict(num_steps=200, optim=0.05, batch_size=50, seed=0)
EVALUATE: dict = {}


def model(features, y):
    linear = pyro.module("linear", nn.Linear(3, 1), update_module_params=True)
    scale = pyro.param("scale", torch.tensor(1.0), constraint=constraints.positive)
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(linear(features).squeeze(-1), scale), obs=y)


def without_update(features, y):
    linear = pyro.module("linear", nn.Linear(3, 1))  # a new module, and its weights, every call
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(linear(features).squeeze(-1), 1.0), obs=y)


def train(program, data):
    with pytest.raises(ValueError, match="nn.Modules anew in every call"):
        probgen.fit(without_update, data, progress=False, **FIT)
    pyro.clear_param_store()
    return probgen.fit(program.model, data, progress=False, **FIT)


def make_data(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(200, 3, generator=generator)
    y = features @ torch.tensor([1.0, -2.0, 0.5]) + 0.7 + 0.3 * torch.randn(200, generator=generator)
    return (features[:150], y[:150]), (features[150:], y[150:])


def build() -> SimpleNamespace:
    return SimpleNamespace(model=model, guide=None)


def reference(program, test) -> torch.Tensor:
    features, y = test
    weight = pyro.param("linear$$$weight").detach().double()
    bias = pyro.param("linear$$$bias").detach().double()
    scale = pyro.param("scale").item()
    loc = features.double() @ weight[0] + bias[0]
    return torch.as_tensor(scipy.stats.norm.logpdf(y.double().numpy(), loc.numpy(), scale))


def check_samples(program, guide, test) -> None:
    features, y = test
    samples = pyro.infer.Predictive(pyro.poutine.uncondition(model), num_samples=3,
                                    return_sites=["y"])(features, y)
    assert samples["y"].shape == (3, len(y)) and torch.isfinite(samples["y"]).all()
