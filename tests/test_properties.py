"""Property tests (hypothesis): padding round trips, and the estimators' invariants on random
small programs — exact = brute force, ELBO <= IWAE-k <= exact."""

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import probgen
from probgen.data.sequences import lengths_to_mask, pad_sequences, unpad_sequences

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(st.lists(st.integers(1, 7), min_size=1, max_size=6), st.integers(0, 3), st.integers(0, 99))
def test_padding_round_trips_and_masks_exactly_the_observed_steps(lengths, features, seed):
    generator = torch.Generator().manual_seed(seed)
    shape = () if features == 0 else (features,)
    sequences = [torch.randn(n, *shape, generator=generator, dtype=torch.float64) for n in lengths]
    batch = pad_sequences(sequences)
    assert batch.values.shape[:2] == (len(lengths), max(lengths))
    assert batch.lengths.tolist() == lengths
    for original, back in zip(sequences, unpad_sequences(batch.values, batch.lengths)):
        assert torch.equal(original, back)
    mask = lengths_to_mask(batch.lengths, batch.values.shape[1])
    assert mask.sum().item() == sum(lengths)
    assert all(mask[i, :n].all() and not mask[i, n:].any() for i, n in enumerate(lengths))


@SETTINGS
@given(st.integers(1, 3), st.integers(2, 3), st.integers(0, 10_000))
def test_exact_equals_brute_force_on_random_discrete_programs(num_latents, num_states, seed):
    """A random chain of `num_latents` categorical latents per example, each depending on the
    previous one, and a Poisson observation of the last: exact == sum over all paths."""
    generator = torch.Generator().manual_seed(seed)
    first = torch.softmax(torch.randn(num_states, generator=generator, dtype=torch.float64), -1)
    transitions = torch.softmax(torch.randn(num_latents, num_states, num_states,
                                            generator=generator, dtype=torch.float64), -1)
    rates = torch.rand(num_states, generator=generator, dtype=torch.float64) * 8 + 0.1
    x = torch.poisson(torch.full((5,), 3.0, dtype=torch.float64), generator=generator)

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z0", dist.Categorical(first))
            for i in range(1, num_latents):
                z = pyro.sample(f"z{i}", dist.Categorical(transitions[i][z]))
            pyro.sample("x", dist.Poisson(rates[z]), obs=x)

    terms = []
    for path in itertools.product(range(num_states), repeat=num_latents):
        log_p = first[path[0]].log()
        for i in range(1, num_latents):
            log_p = log_p + transitions[i][path[i - 1], path[i]].log()
        terms.append(log_p + dist.Poisson(rates[path[-1]]).log_prob(x))
    brute = torch.logsumexp(torch.stack(terms), 0)
    torch.testing.assert_close(probgen.evaluate(model, x).per_example, brute, atol=1e-9, rtol=0)


@SETTINGS
@given(st.floats(0.2, 2.0), st.floats(-1.0, 1.5), st.floats(0.3, 2.0), st.integers(0, 10_000))
def test_bounds_are_below_exact_for_random_guides(noise, shrink, guide_scale, seed):
    """z ~ N(0,1), x ~ N(z, noise²): log p(x) = log N(x; 0, 1 + noise²). Any guide gives
    ELBO <= IWAE-k <= exact (up to Monte Carlo error, here 4 standard errors)."""
    x = torch.randn(40, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 1.5

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
            pyro.sample("x", dist.Normal(z, noise), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(shrink * x, guide_scale))

    exact = dist.Normal(0.0, math.sqrt(1 + noise**2)).log_prob(x).mean().item()
    elbo = probgen.evaluate(model, x, guide=guide, estimator="elbo", k=64, seed=seed)
    iwae = probgen.evaluate(model, x, guide=guide, estimator="iwae", k=64, seed=seed)
    # the ELBO is below exact by KL >= 0; the IWAE mean is a bound only in expectation
    assert elbo.mean <= exact + 4 * elbo.stderr / math.sqrt(64) + 1e-9
    assert iwae.mean <= exact + 0.05 + 4 * iwae.stderr / math.sqrt(40)
    assert elbo.mean <= iwae.mean + 1e-6


@pytest.mark.parametrize("k", [1, 3])
def test_iwae_with_one_particle_is_the_elbo(k):
    x = torch.randn(6, dtype=torch.float64)

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.3 * x, 1.0))

    a = probgen.evaluate(model, x, guide=guide, estimator="iwae", k=1, seed=k)
    b = probgen.evaluate(model, x, guide=guide, estimator="elbo", k=1, seed=k)
    torch.testing.assert_close(a.per_example, b.per_example)
