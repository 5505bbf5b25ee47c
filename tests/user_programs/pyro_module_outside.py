"""A network built outside the program and registered with ``pyro.module`` inside it, as Pyro's
VAE and DMM examples do: heteroscedastic regression y ~ N(μ(x), s(x)) with μ, s from an MLP.

Exact (no latents); checked against scipy's normal log-density at the network's own outputs.
"""

from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import scipy.stats
import torch
from torch import nn

KIND = "exact"
FIT = dict(num_steps=150, optim=0.02, batch_size=50, seed=0)
EVALUATE: dict = {}


class MeanAndScale(nn.Module):
    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, 2))

    def forward(self, features):
        loc, raw_scale = self.body(features).unbind(-1)
        return loc, nn.functional.softplus(raw_scale) + 1e-3


regressor = MeanAndScale()  # built once, when the script runs


def model(features, y):
    pyro.module("regressor", regressor)
    loc, scale = regressor(features)
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(loc, scale), obs=y)


def make_data(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.rand(250, 1, generator=generator) * 4 - 2
    y = torch.sin(2 * features[:, 0]) + (0.1 + 0.3 * features[:, 0].abs()) * torch.randn(
        250, generator=generator)
    return (features[:200], y[:200]), (features[200:], y[200:])


def build() -> SimpleNamespace:
    return SimpleNamespace(model=model, guide=None, network=regressor)


def reference(program, test) -> torch.Tensor:
    features, y = test
    with torch.no_grad():
        loc, scale = program.network(features)
    return torch.as_tensor(scipy.stats.norm.logpdf(y.double().numpy(), loc.double().numpy(),
                                                   scale.double().numpy()))


def check_samples(program, guide, test) -> None:
    features, y = test
    samples = pyro.infer.Predictive(pyro.poutine.uncondition(model), num_samples=4,
                                    return_sites=["y"])(features, y)
    assert samples["y"].shape == (4, len(y)) and torch.isfinite(samples["y"]).all()
