"""Generic ELBO / IWAE-k on user-written model/guide pairs, against closed forms."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import probgen


@pytest.fixture(autouse=True)
def float64_by_default():
    """Exact quantities are checked in float64; restored afterwards for other test modules."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
NOISE = 0.5


def model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, NOISE), obs=x)


def exact(x):
    return dist.Normal(0.0, math.sqrt(1 + NOISE**2)).log_prob(x)


def make_guide(shrink, scale):
    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(shrink * x, scale))
    return guide


def optimal_guide(x):
    precision = 1 + 1 / NOISE**2
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(x / NOISE**2 / precision, precision**-0.5))


def test_optimal_guide_makes_every_bound_exact():
    x = torch.linspace(-3, 3, 7)
    for estimator, k in (("elbo", 1), ("iwae", 10)):
        ll = probgen.evaluate(model, x, guide=optimal_guide, estimator=estimator, k=k)
        torch.testing.assert_close(ll.per_example, exact(x), atol=1e-10, rtol=0)
        assert ll.kind == "lower_bound" and ll.settings == {"k": k}


def test_bounds_are_ordered_and_converge_to_exact():
    torch.manual_seed(0)
    x = torch.randn(200) * 1.2
    guide = make_guide(0.4, 1.0)  # a poor but valid proposal
    truth = exact(x).mean().item()
    elbo = probgen.evaluate(model, x, guide=guide, estimator="elbo", k=200, seed=0)
    means = [elbo.mean]
    for k in (5, 50, 2000):
        means.append(probgen.evaluate(model, x, guide=guide, estimator="iwae", k=k, seed=0).mean)
    assert all(a < b for a, b in zip(means, means[1:])), means
    assert means[-1] <= truth + 1e-3
    assert truth - means[-1] < 0.01 < truth - means[0]


def test_particle_and_data_chunking_agree_in_distribution():
    torch.manual_seed(1)
    x = torch.randn(30)
    guide = make_guide(0.5, 0.8)
    a = probgen.evaluate(model, x, guide=guide, estimator="iwae", k=4000, seed=0)
    b = probgen.evaluate(model, x, guide=guide, estimator="iwae", k=4000, batch_size=7, seed=1)
    assert abs(a.mean - b.mean) < 3e-3


def test_enumerated_discrete_latent_inside_importance_sampling():
    """c ~ Bernoulli(0.3) summed out exactly, z sampled from the guide."""

    def mixed_model(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(0.3))
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z + 3.0 * c, NOISE), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.3 * x, 1.0))

    x = torch.tensor([-1.0, 0.5, 2.5, 4.0])
    marginal = math.sqrt(1 + NOISE**2)
    truth = torch.logsumexp(torch.stack([
        math.log(0.7) + dist.Normal(0.0, marginal).log_prob(x),
        math.log(0.3) + dist.Normal(3.0, marginal).log_prob(x)]), 0)
    ll = probgen.evaluate(mixed_model, x, guide=guide, estimator="iwae", k=20000, seed=0)
    assert (ll.per_example <= truth + 5e-3).all()
    torch.testing.assert_close(ll.per_example, truth, atol=0.03, rtol=0)


def test_auto_picks_iwae_with_a_guide_and_rejects_bad_k():
    x = torch.randn(5)
    ll = probgen.evaluate(model, x, guide=optimal_guide, k=3)
    assert ll.estimator == "iwae"
    with pytest.raises(ValueError, match="k must be a positive integer"):
        probgen.evaluate(model, x, guide=optimal_guide, estimator="iwae", k=0)


def test_global_guide_site_is_refused():
    def global_model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x):
        pyro.sample("mu", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="global"):
        probgen.evaluate(global_model, torch.randn(3), guide=guide, estimator="iwae", k=2)


def test_sites_whose_log_prob_is_only_a_bound_are_labelled_honestly():
    """A site flagged log_prob_is_bound (a diffusion VLB) is never reported as exact, and inside
    IWAE's log-mean-exp it makes the result an estimate, not a bound."""

    class BoundNormal(dist.Normal):
        log_prob_is_bound = True

    def bound_model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", BoundNormal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, NOISE), obs=x)

    def observed_bound(x):
        with pyro.plate("data", len(x)):
            pyro.sample("x", BoundNormal(0.0, 1.0), obs=x)

    x = torch.randn(4)
    with pytest.raises(ValueError, match="only a bound"):
        probgen.evaluate(observed_bound, x, estimator="exact")
    assert probgen.evaluate(observed_bound, x, guide=lambda x: None, estimator="elbo").kind == \
        "lower_bound"
    guide = make_guide(0.5, 1.0)
    assert probgen.evaluate(bound_model, x, guide=guide, estimator="elbo").kind == "lower_bound"
    assert probgen.evaluate(bound_model, x, guide=guide, estimator="iwae", k=4).kind == "estimate"
