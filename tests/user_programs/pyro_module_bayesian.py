"""Pyro's Bayesian regression tutorial (``tutorial/source/bayesian_regression.ipynb``): a
``PyroModule[nn.Linear]`` whose weight and bias are ``PyroSample`` priors, a global noise scale,
``forward(x, y=None)``, and an ``AutoDiagonalNormal`` guide.

The held-out number is the predictive estimate over guide draws; checked against log (1/S)
Σ_s N(y | x w_s + b_s, σ_s) computed by hand on 4000 draws that Pyro's ``Predictive`` takes from
the same guide (4 × stderr + 0.02 nats).
"""

import math
from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoDiagonalNormal
from pyro.nn import PyroModule, PyroSample
from torch import nn

KIND = "estimate"
SLACK = 0.02
FIT = dict(num_steps=300, optim=0.03, lr_schedule="cosine", seed=0)
EVALUATE = dict(num_draws=200, seed=0)
SITES = ["linear.weight", "linear.bias", "sigma"]


class BayesianRegression(PyroModule):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.linear = PyroModule[nn.Linear](in_features, out_features)
        self.linear.weight = PyroSample(
            dist.Normal(0.0, 1.0).expand([out_features, in_features]).to_event(2))
        self.linear.bias = PyroSample(dist.Normal(0.0, 10.0).expand([out_features]).to_event(1))

    def forward(self, x, y=None):
        sigma = pyro.sample("sigma", dist.Uniform(0.0, 10.0))
        mean = self.linear(x).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mean, sigma), obs=y)
        return mean


def make_data(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(120, 3, generator=generator)
    y = x @ torch.tensor([1.5, -1.0, 0.0]) + 2.0 + 0.5 * torch.randn(120, generator=generator)
    return (x[:80], y[:80]), (x[80:], y[80:])


def build() -> SimpleNamespace:
    model = BayesianRegression(3, 1)
    return SimpleNamespace(model=model, guide=AutoDiagonalNormal(model))


def reference(program, test) -> torch.Tensor:
    x, y = test
    with torch.random.fork_rng():
        torch.manual_seed(1)
        draws = pyro.infer.Predictive(program.model, guide=program.guide, num_samples=4000,
                                      return_sites=SITES)(x)
    weight = draws["linear.weight"].double().reshape(4000, 3)
    bias = draws["linear.bias"].double().reshape(4000, 1)
    sigma = draws["sigma"].double().reshape(4000, 1)
    log_lik = torch.distributions.Normal(weight @ x.double().T + bias, sigma).log_prob(y.double())
    return torch.logsumexp(log_lik, 0) - math.log(4000)  # (examples,)


def check_samples(program, guide, test) -> None:
    x, _ = test
    samples = pyro.infer.Predictive(program.model, guide=guide, num_samples=5,
                                    return_sites=["obs", "sigma"])(x)  # y=None: y is drawn
    assert samples["obs"].shape == (5, len(x)) and torch.isfinite(samples["obs"]).all()
    assert ((samples["sigma"] > 0) & (samples["sigma"] < 10)).all()
