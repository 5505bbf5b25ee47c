"""Bayesian linear regression with a conjugate prior, w ~ N(0, I), y ~ N(Xw, σ²) with σ known,
and an ``AutoMultivariateNormal`` guide (a family that holds the exact posterior).

The held-out number is the predictive estimate lppd_i over S guide draws; checked against the
same quantity integrated in closed form under the fitted guide, N(y; xᵀμ_q, σ² + xᵀΣ_q x)
(4 × stderr + 0.02 nats), and the guide against the exact conjugate posterior.
"""

from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoMultivariateNormal

NOISE, FEATURES = 0.5, 3
KIND = "estimate"
SLACK = 0.02
FIT = dict(num_steps=300, optim=0.03, lr_schedule="cosine", seed=0)
EVALUATE = dict(num_draws=200, seed=0)


def model(features, y):
    weight = pyro.sample("weight", dist.Normal(0.0, 1.0).expand([FEATURES]).to_event(1))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(features @ weight, NOISE), obs=y)


def make_data(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(80, FEATURES, generator=generator)
    y = features @ torch.tensor([1.0, -0.5, 0.25]) + NOISE * torch.randn(80, generator=generator)
    return (features[:30], y[:30]), (features[30:], y[30:])


def build() -> SimpleNamespace:
    return SimpleNamespace(model=model, guide=AutoMultivariateNormal(model))


def _guide_gaussian(guide, features, y):
    posterior = guide.get_posterior(features, y)
    return posterior.loc.detach().double(), posterior.covariance_matrix.detach().double()


def reference(program, test) -> torch.Tensor:
    features, y = (t.double() for t in test)
    loc, covariance = _guide_gaussian(program.guide, *test)
    variance = NOISE**2 + torch.einsum("ni,ij,nj->n", features, covariance, features)
    return torch.distributions.Normal(features @ loc, variance.sqrt()).log_prob(y)


def train(program, data):
    import probgen

    result = probgen.fit(program.model, data, guide=program.guide, progress=False, **FIT)
    features, y = (t.double() for t in data)
    precision = torch.eye(FEATURES, dtype=torch.float64) + features.T @ features / NOISE**2
    exact_covariance = torch.linalg.inv(precision)
    exact_loc = exact_covariance @ features.T @ y / NOISE**2
    loc, covariance = _guide_gaussian(program.guide, *data)
    exact_scale = exact_covariance.diagonal().sqrt()
    assert ((loc - exact_loc).abs() < 0.5 * exact_scale).all(), (loc, exact_loc, exact_scale)
    ratio = covariance.diagonal().sqrt() / exact_scale
    assert ((ratio > 0.75) & (ratio < 1.33)).all(), ratio
    return result


def check_samples(program, guide, test) -> None:
    features, y = test
    samples = pyro.infer.Predictive(pyro.poutine.uncondition(model), guide=guide, num_samples=6,
                                    return_sites=["weight", "y"])(features, y)
    weight = samples["weight"].reshape(6, FEATURES)  # Predictive keeps a plate dimension: (6, 1, 3)
    assert samples["y"].shape == (6, len(y)) and torch.isfinite(samples["y"]).all()
    assert not torch.equal(weight[0], weight[1])  # a posterior, not a point
