"""Global and per-example latents with an amortized guide: factor analysis with a loading
matrix W ~ N(0, 1) drawn once and a z_n per row, guided by a hand-written guide that calls an
``AutoDelta`` over W (``poutine.block``-ed to expose it) and samples z from an encoder network
registered with ``pyro.module``.

The guide is a plain function, so probgen cannot know that its W is a point mass: the held-out
number is the predictive estimate over draws of W (all equal), each p(x_i | W) importance-sampled
with the encoder. Checked against the closed form N(x; 0, W* W*ᵀ + diag(ψ²)) at the point W*.
"""

from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoDelta
from torch import nn
from torch.distributions import constraints

D, Q = 5, 2
KIND = "estimate"
SLACK = 0.1  # nats: IWAE-256 with an encoder trained for 200 steps is biased low (0.07)
FIT = dict(num_steps=200, optim=0.03, batch_size=50, seed=0)
EVALUATE = dict(k=256, num_draws=4, seed=0)


def model(x):
    weight = pyro.sample("W", dist.Normal(0.0, 1.0).expand([D, Q]).to_event(2))
    noise = pyro.param("noise", torch.ones(D), constraint=constraints.positive)
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([Q]).to_event(1))
        pyro.sample("x", dist.Normal(z @ weight.T, noise).to_event(1), obs=x)


def make_data(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    loading = torch.randn(D, Q, generator=generator)
    x = (torch.randn(260, Q, generator=generator) @ loading.T
         + torch.linspace(0.2, 0.8, D) * torch.randn(260, D, generator=generator))
    return x[:200], x[200:]


def build() -> SimpleNamespace:
    encoder = nn.Sequential(nn.Linear(D, 16), nn.Tanh(), nn.Linear(16, 2 * Q))

    def local_guide(x):
        pyro.module("encoder", encoder)
        loc, log_scale = encoder(x).chunk(2, -1)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    point = AutoDelta(poutine.block(model, expose=["W"]))

    def guide(x):
        point(x)
        local_guide(x)

    return SimpleNamespace(model=model, guide=guide, point=point, encoder=encoder)


def reference(program, test) -> torch.Tensor:
    weight = program.point.median(test)["W"].detach().double()
    noise = pyro.param("noise").detach().double()
    covariance = weight @ weight.T + torch.diag(noise**2)
    return dist.MultivariateNormal(torch.zeros(D, dtype=torch.float64), covariance
                                   ).log_prob(test.double())


def check_samples(program, guide, test) -> None:
    point = program.point.median(test)["W"].detach()
    samples = pyro.infer.Predictive(poutine.uncondition(model),
                                    posterior_samples={"W": point.expand(3, D, Q)},
                                    return_sites=["z", "x"])(test)
    assert samples["x"].shape == (3, len(test), D) and torch.isfinite(samples["x"]).all()
    assert samples["z"].shape == (3, len(test), Q)
