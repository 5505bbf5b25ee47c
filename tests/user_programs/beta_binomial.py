"""A beta-binomial: a success probability p_n ~ Beta(α, β) per example and x_n ~ Binomial(n_n,
p_n) with the numbers of trials as side data, α and β parameters; the guide is the per-example
AutoNormal that ``probgen.fit`` builds, refit on the held-out rows by ``evaluate``.

IWAE-k with the refit guide is a lower bound; checked against scipy.stats.betabinom.
"""

from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import scipy.stats
import torch
from torch.distributions import constraints

KIND = "lower_bound"
MAX_GAP = 0.05  # nats: a 1-D posterior, refit for 300 steps, k = 500
FIT = dict(num_steps=200, optim=0.05, seed=0)
EVALUATE = dict(k=500, refit_steps=300, seed=0)


def model(successes, trials):
    alpha = pyro.param("alpha", torch.tensor(1.0), constraint=constraints.positive)
    beta = pyro.param("beta", torch.tensor(1.0), constraint=constraints.positive)
    with pyro.plate("data", len(successes)):
        p = pyro.sample("p", dist.Beta(alpha, beta))
        pyro.sample("x", dist.Binomial(trials, p), obs=successes)


def make_data(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    trials = torch.randint(5, 30, (160,), generator=generator).float()
    p = torch.rand(160, generator=generator) ** 2  # skewed towards 0, like a Beta(1/2, 1)
    successes = torch.binomial(trials, p, generator=generator)
    return (successes[:120], trials[:120]), (successes[120:], trials[120:])


def build() -> SimpleNamespace:
    return SimpleNamespace(model=model, guide=None)


def reference(program, test) -> torch.Tensor:
    successes, trials = (t.double().numpy() for t in test)
    alpha, beta = pyro.param("alpha").item(), pyro.param("beta").item()
    return torch.as_tensor(scipy.stats.betabinom.logpmf(successes, trials, alpha, beta))


def check_samples(program, guide, test) -> None:
    successes, trials = test
    samples = pyro.infer.Predictive(pyro.poutine.uncondition(model), num_samples=5,
                                    return_sites=["p", "x"])(successes, trials)
    assert samples["p"].shape == (5, len(trials))
    assert ((samples["p"] > 0) & (samples["p"] < 1)).all()
    assert ((samples["x"] >= 0) & (samples["x"] <= trials)).all()
