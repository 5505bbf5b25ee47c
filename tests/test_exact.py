"""Generic exact evaluation against brute-force sums over every latent value."""

import itertools
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


def poisson_mixture(x):
    weights = torch.tensor([0.2, 0.5, 0.3])
    rates = torch.tensor([0.5, 4.0, 11.0])
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Categorical(weights), infer={"enumerate": "parallel"})
        pyro.sample("x", dist.Poisson(rates[z]), obs=x)


def poisson_mixture_brute(x):
    weights = torch.tensor([0.2, 0.5, 0.3])
    rates = torch.tensor([0.5, 4.0, 11.0])
    terms = [weights[k].log() + dist.Poisson(rates[k]).log_prob(x) for k in range(3)]
    return torch.logsumexp(torch.stack(terms), 0)


def two_level(x):
    """Two discrete latents per example: a cluster c, then a sub-cluster s | c; 2-D Gaussian obs,
    one observation plate over features inside the data plate."""
    pc = torch.tensor([0.6, 0.4])
    ps = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    locs = torch.arange(6.0).reshape(2, 3, 1) * torch.tensor([1.0, -0.5])
    with pyro.plate("data", x.shape[0], dim=-2):
        c = pyro.sample("c", dist.Categorical(pc))
        s = pyro.sample("s", dist.Categorical(ps[c]))
        with pyro.plate("features", 2, dim=-1):
            pyro.sample("x", dist.Normal(locs[c, s, torch.arange(2)], 0.7), obs=x)


def two_level_brute(x):
    pc = torch.tensor([0.6, 0.4])
    ps = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    locs = torch.arange(6.0).reshape(2, 3, 1) * torch.tensor([1.0, -0.5])
    terms = []
    for c, s in itertools.product(range(2), range(3)):
        terms.append(pc[c].log() + ps[c, s].log() + dist.Normal(locs[c, s], 0.7).log_prob(x).sum(-1))
    return torch.logsumexp(torch.stack(terms), 0)


def test_mixture_of_poissons_equals_brute_force():
    x = torch.tensor([0.0, 1.0, 3.0, 7.0, 12.0, 20.0])
    ll = probgen.evaluate(poisson_mixture, x)
    assert ll.kind == "exact" and ll.estimator == "exact" and ll.data_space == "discrete"
    torch.testing.assert_close(ll.per_example, poisson_mixture_brute(x), atol=1e-10, rtol=0)


def test_two_discrete_latents_per_example_equals_brute_force():
    torch.manual_seed(1)
    x = torch.randn(9, 2) * 2
    ll = probgen.evaluate(two_level, x, estimator="exact")
    torch.testing.assert_close(ll.per_example, two_level_brute(x), atol=1e-10, rtol=0)
    assert ll.data_space == "continuous"
    assert ll.num_dims == 2


@pytest.mark.parametrize("batch_size", [1, 4, 100])
def test_chunking_does_not_change_values(batch_size):
    torch.manual_seed(2)
    x = torch.randn(9, 2)
    full = probgen.evaluate(two_level, x).per_example
    chunked = probgen.evaluate(two_level, x, batch_size=batch_size).per_example
    torch.testing.assert_close(full, chunked)


def test_no_latent_program_is_exact_sum_of_log_probs():
    def model(x):
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(1.0, 2.0).expand([3]).to_event(1), obs=x)

    x = torch.randn(5, 3)
    ll = probgen.evaluate(model, x)
    torch.testing.assert_close(ll.per_example, dist.Normal(1.0, 2.0).log_prob(x).sum(-1))


def test_side_data_is_sliced_with_the_data():
    """Per-example side data (a known rate multiplier) travels with its rows when chunked."""

    def model(x, exposure):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(0.3))
            pyro.sample("x", dist.Poisson(exposure * (1.0 + 4.0 * z)), obs=x)

    x = torch.tensor([0.0, 2.0, 5.0, 9.0, 1.0])
    exposure = torch.tensor([1.0, 0.5, 2.0, 3.0, 1.5])
    brute = torch.logsumexp(torch.stack([
        math.log(0.7) + dist.Poisson(exposure).log_prob(x),
        math.log(0.3) + dist.Poisson(5 * exposure).log_prob(x)]), 0)
    for batch_size in (None, 2):
        ll = probgen.evaluate(model, (x, exposure), batch_size=batch_size)
        torch.testing.assert_close(ll.per_example, brute)


def test_program_closing_over_full_data_is_caught():
    full = torch.randn(10)

    def model(x):
        with pyro.plate("data", len(full)):  # wrong: sized from data it closes over
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=full)

    with pytest.raises(ValueError, match="plate"):
        probgen.evaluate(model, full, batch_size=4)


def test_global_enumerated_latent_is_refused():
    def model(x):
        z = pyro.sample("z", dist.Bernoulli(0.5))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(ValueError, match="global"):
        probgen.evaluate(model, torch.randn(4), estimator="exact")


def test_continuous_latents_need_a_guide():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(ValueError, match="guide"):
        probgen.evaluate(model, torch.randn(4))
    with pytest.raises(ValueError, match="continuous"):
        probgen.evaluate(model, torch.randn(4), estimator="exact")


def test_masked_enumerated_latent_is_refused_then_warned_when_allowed():
    def model(x):
        with pyro.plate("data", len(x)):
            with pyro.poutine.mask(mask=torch.tensor([True, False, True])):
                z = pyro.sample("z", dist.Categorical(torch.ones(3) / 3))
            pyro.sample("x", dist.Normal(z.double(), 1.0), obs=x)

    with pytest.raises(ValueError, match="'z' are masked"):
        probgen.evaluate(model, torch.randn(3))
    with pytest.warns(UserWarning, match="'z' are masked"):
        probgen.evaluate(model, torch.randn(3), allow_masked_latents=True)
