"""Bayesian probabilistic PCA: a global loading matrix W ~ N(0, 1) *and* a latent z_n per row
(global + per-example latents together), the noise σ a parameter; the guide is the AutoNormal
that ``probgen.fit`` builds (one (loc, scale) per training row for z).

The held-out number is an estimate of lppd_i = log (1/S) Σ_s p(x_i | W_s), W_s ~ q(W); checked
against the same quantity with p(x_i | W) = N(x_i; 0, W Wᵀ + σ² I) in closed form and 4000
draws of W from the fitted guide's Gaussian.
"""

from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

D, Q = 4, 1
KIND = "estimate"
SLACK = 0.05  # nats: importance sampling of z inside each p(x_i | W_s) is biased low
FIT = dict(num_steps=300, optim=0.03, seed=0)
EVALUATE = dict(num_draws=100, k=256, refit_steps=300, seed=0)


def model(x):
    weight = pyro.sample("W", dist.Normal(0.0, 1.0).expand([D, Q]).to_event(2))
    sigma = pyro.param("sigma", torch.tensor(1.0), constraint=constraints.positive)
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([Q]).to_event(1))
        pyro.sample("x", dist.Normal(z @ weight.T, sigma).to_event(1), obs=x)


def make_data(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    loading = torch.randn(D, Q, generator=generator)
    x = (torch.randn(200, Q, generator=generator) @ loading.T
         + 0.5 * torch.randn(200, D, generator=generator))
    return x[:150], x[150:]


def build() -> SimpleNamespace:
    return SimpleNamespace(model=model, guide=None)


def reference(program, test) -> torch.Tensor:
    loc = pyro.param("AutoNormal.locs.W").detach().double()
    scale = pyro.param("AutoNormal.scales.W").detach().double()
    sigma = pyro.param("sigma").detach().double()
    generator = torch.Generator().manual_seed(1)
    draws = loc + scale * torch.randn(4000, D, Q, generator=generator, dtype=torch.float64)
    covariance = draws @ draws.transpose(-1, -2) + sigma**2 * torch.eye(D, dtype=torch.float64)
    log_lik = dist.MultivariateNormal(torch.zeros(D, dtype=torch.float64), covariance
                                      ).log_prob(test.double()[:, None])  # (examples, draws)
    return torch.logsumexp(log_lik, -1) - torch.log(torch.tensor(4000.0, dtype=torch.float64))


def check_samples(program, guide, test) -> None:
    weight_loc = pyro.param("AutoNormal.locs.W").detach()
    samples = pyro.infer.Predictive(pyro.poutine.uncondition(model),
                                    posterior_samples={"W": weight_loc.expand(3, D, Q)},
                                    return_sites=["z", "x"])(test)
    assert samples["z"].shape == (3, len(test), Q)
    assert samples["x"].shape == (3, len(test), D) and torch.isfinite(samples["x"]).all()
