"""Held-out scores for programs with global latents: lppd over posterior draws, against the
forward algorithm, brute-force averages over the same draws, and arviz."""

import math
import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoDelta, AutoNormal

import probgen

NUM_STATES, NUM_SYMBOLS, LENGTH = 3, 4, 6


def hmm_model_1(sequences):
    """Pyro's examples/hmm.py model_1: Dirichlet priors on both tables, outside the plate."""
    probs_x = pyro.sample("probs_x", dist.Dirichlet(0.9 * torch.eye(NUM_STATES) + 0.1).to_event(1))
    probs_y = pyro.sample("probs_y", dist.Dirichlet(torch.ones(NUM_STATES, NUM_SYMBOLS)).to_event(1))
    with pyro.plate("sequences", len(sequences)):
        x = 0
        for t in pyro.markov(range(sequences.shape[1])):
            x = pyro.sample(f"x_{t}", dist.Categorical(probs_x[x]),
                            infer={"enumerate": "parallel"})
            pyro.sample(f"y_{t}", dist.Categorical(probs_y[x]), obs=sequences[:, t])


def forward(sequences, probs_x, probs_y):
    """log p(y_1..T) per sequence by the forward algorithm (x_0 = 0 as in the model)."""
    log_x, log_y = probs_x.double().log(), probs_y.double().log()
    alpha = log_x[0] + log_y[:, sequences[:, 0]].T  # (sequences, states)
    for t in range(1, sequences.shape[1]):
        alpha = torch.logsumexp(alpha[:, :, None] + log_x[None], 1) + log_y[:, sequences[:, t]].T
    return torch.logsumexp(alpha, -1)


@pytest.fixture
def sequences():
    generator = torch.Generator().manual_seed(0)
    train = torch.randint(0, NUM_SYMBOLS, (40, LENGTH), generator=generator)
    test = torch.randint(0, NUM_SYMBOLS, (12, LENGTH), generator=generator)
    return train, test


def test_autodelta_point_estimate_is_exact_forward_per_sequence(sequences):
    train, test = sequences
    guide = AutoDelta(pyro.poutine.block(hmm_model_1, expose=["probs_x", "probs_y"]))
    probgen.fit(hmm_model_1, train, guide=guide, num_steps=60, optim=0.05, seed=0, progress=False)
    held_out = probgen.evaluate(hmm_model_1, test, guide=guide)
    point = guide.median()
    expected = forward(test, point["probs_x"], point["probs_y"])
    assert held_out.kind == "exact" and held_out.estimator == "predictive"
    assert "point mass" in held_out.settings["posterior"]
    torch.testing.assert_close(held_out.per_example.double(), expected, atol=1e-5, rtol=0)
    assert probgen.evaluate(hmm_model_1, test, guide=guide, estimator="exact").kind == "exact"


def test_autonormal_draws_average_like_brute_force(sequences):
    train, test = sequences
    guide = AutoNormal(pyro.poutine.block(hmm_model_1, expose=["probs_x", "probs_y"]))
    probgen.fit(hmm_model_1, train, guide=guide, num_steps=60, optim=0.05, seed=0, progress=False)
    held_out = probgen.evaluate(hmm_model_1, test, guide=guide, num_draws=30, seed=4)
    assert held_out.kind == "estimate" and held_out.settings["num_draws"] == 30
    assert held_out.estimator_stderr > 0
    # The same draws, scored by brute force: replay the guide with the same seed.
    pyro.set_rng_seed(4)
    draws = []
    with torch.no_grad(), pyro.poutine.block():
        for _ in range(30):
            trace = pyro.poutine.trace(guide).get_trace(test)
            draws.append(forward(test, trace.nodes["probs_x"]["value"],
                                 trace.nodes["probs_y"]["value"]))
    expected = torch.logsumexp(torch.stack(draws), 0) - math.log(30)
    torch.testing.assert_close(held_out.per_example.double(), expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="not a point mass.*predictive"):
        probgen.evaluate(hmm_model_1, test, guide=guide, estimator="exact")


def test_posterior_dict_of_draws(sequences):
    _, test = sequences
    generator = torch.Generator().manual_seed(1)
    draws = {"probs_x": dist.Dirichlet(torch.ones(NUM_STATES, NUM_STATES)).sample((7,)),
             "probs_y": dist.Dirichlet(torch.ones(NUM_STATES, NUM_SYMBOLS)).sample((7,))}
    del generator
    held_out = probgen.evaluate(hmm_model_1, test, posterior=draws)
    expected = torch.logsumexp(torch.stack([forward(test, draws["probs_x"][s], draws["probs_y"][s])
                                            for s in range(7)]), 0) - math.log(7)
    torch.testing.assert_close(held_out.per_example.double(), expected, atol=1e-5, rtol=0)
    assert held_out.settings["posterior"] == "7 posterior draws"


SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0], dtype=torch.float64)


def eight_schools(sigma, y):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(torch.tensor(5.0, dtype=torch.float64)))
    with pyro.plate("schools", len(y)):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def test_eight_schools_lppd_equals_arviz_from_the_same_pointwise_values():
    generator = torch.Generator().manual_seed(2)
    num_chains, num_draws = 2, 50
    mu = torch.randn(num_chains, num_draws, generator=generator, dtype=torch.float64) * 3 + 4
    tau = torch.rand(num_chains, num_draws, generator=generator, dtype=torch.float64) * 5 + 0.5
    theta = mu[..., None] + tau[..., None] * torch.randn(num_chains, num_draws, 8,
                                                         generator=generator, dtype=torch.float64)
    idata = az.from_dict(posterior={"mu": mu.numpy(), "tau": tau.numpy(), "theta": theta.numpy()})
    y_new = torch.tensor([20.0, 5.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], dtype=torch.float64)
    held_out = probgen.evaluate(eight_schools, (SIGMA, y_new), posterior=idata, data_plate="schools")
    pointwise = dist.Normal(theta, SIGMA).log_prob(y_new)  # (chain, draw, school)
    idata.add_groups(log_likelihood={"y": pointwise.numpy()})
    arviz_lppd = az.stats.stats_utils.logsumexp(pointwise.numpy().reshape(-1, 8), axis=0,
                                                b_inv=num_chains * num_draws)
    np.testing.assert_allclose(held_out.per_example.numpy(), arviz_lppd, atol=1e-8)
    with warnings.catch_warnings():  # arviz's WAIC caveat on 8 points, when it applies
        warnings.simplefilter("ignore")
        waic = az.waic(idata)
    total = float(waic["elpd_waic"] + waic["p_waic"])  # WAIC's lppd
    assert float(held_out.per_example.sum()) == pytest.approx(total, abs=1e-8)
    assert held_out.settings["num_draws"] == num_chains * num_draws


def test_global_latents_without_guide_or_posterior_get_a_clear_error(sequences):
    _, test = sequences
    with pytest.raises(ValueError, match="global latents.*guide=.*posterior="):
        probgen.evaluate(hmm_model_1, test)
