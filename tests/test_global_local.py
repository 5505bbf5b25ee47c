"""Held-out scores for programs with a global latent and per-example latents (Bayesian PPCA),
against the exact lppd with the same posterior draws: z integrated in closed form,
x_i | W ~ N(0, W Wᵀ + σ² I)."""

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import scipy.stats
import torch
from pyro.distributions import constraints
from pyro.infer.autoguide import AutoDelta, AutoGuideList, AutoNormal

import probgen

D, Q, SIGMA = 5, 2, 0.5
NUM_DRAWS = 40


def bayesian_ppca(x):
    """W ~ N(0, 1) (global, D×Q); z_i ~ N(0, I) and x_i ~ N(W z_i, σ² I) per row."""
    weight = pyro.sample("W", dist.Normal(0.0, 1.0).expand([D, Q]).to_event(2))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([Q]).to_event(1))
        pyro.sample("x", dist.Normal(z @ weight.T, SIGMA).to_event(1), obs=x)


def exact_lppd(test: torch.Tensor, weights: torch.Tensor) -> np.ndarray:
    """log (1/S) Σ_s N(x_i; 0, W_s W_sᵀ + σ² I) per row, by scipy in float64."""
    rows = [scipy.stats.multivariate_normal(np.zeros(D), w @ w.T + SIGMA**2 * np.eye(D))
            .logpdf(test.double().numpy()) for w in weights.double().numpy()]
    log_lik = np.stack(rows)  # (draws, examples)
    return np.logaddexp.reduce(log_lik, axis=0) - math.log(len(rows))


def guide_draws(guide, test: torch.Tensor, seed: int) -> torch.Tensor:
    """The draws of W evaluate takes from ``guide`` with ``seed``: its first NUM_DRAWS."""
    pyro.set_rng_seed(seed)
    with torch.no_grad(), pyro.poutine.block():
        return torch.stack([pyro.poutine.trace(guide).get_trace(test).nodes["W"]["value"]
                            for _ in range(NUM_DRAWS)])


@pytest.fixture(scope="module")
def fitted():
    """Data from the model, the default AutoNormal fit by probgen.fit, and the store after it."""
    generator = torch.Generator().manual_seed(0)
    true_weight = torch.randn(D, Q, generator=generator)

    def draw(n):
        return (torch.randn(n, Q, generator=generator) @ true_weight.T
                + SIGMA * torch.randn(n, D, generator=generator))

    train, test = draw(200), draw(40)
    pyro.clear_param_store()
    result = probgen.fit(bayesian_ppca, train, num_steps=500, optim=0.03, seed=0, progress=False)
    assert isinstance(result.guide, AutoNormal)
    return result.guide, pyro.get_param_store().get_state(), train, test


@pytest.fixture
def ppca(fitted):
    guide, state, train, test = fitted
    pyro.get_param_store().set_state(state)
    return guide, train, test


def within_mc_error(held_out, expected: np.ndarray, stderrs: float = 3.0) -> None:
    gap = float(expected.mean()) - held_out.mean  # the IWAE-k terms bound from below
    assert abs(gap) < stderrs * held_out.estimator_stderr + 1e-3, (gap, held_out.estimator_stderr)
    per_row = held_out.estimator_stderr * math.sqrt(held_out.num_examples)  # a row's, roughly
    np.testing.assert_allclose(held_out.per_example.double().numpy(), expected,
                               atol=max(0.02, stderrs * 2 * per_row))


def test_default_autonormal_scores_the_same_draws_lppd(ppca):
    guide, _, test = ppca
    trained = {name: value.detach().clone() for name, value in pyro.get_param_store().items()}
    held_out = probgen.evaluate(bayesian_ppca, test, guide=guide, num_draws=NUM_DRAWS, seed=3,
                                k=500, refit_steps=400)
    expected = exact_lppd(test, guide_draws(guide, test, seed=3))
    assert held_out.kind == "estimate" and held_out.estimator == "predictive"
    assert held_out.settings["num_draws"] == NUM_DRAWS and held_out.settings["k"] == 500
    assert held_out.settings["local_latents"] == "iwae"
    assert held_out.settings["refit"]["num_steps"] == 400
    assert held_out.settings["refit"]["global_latents"] == "posterior draws"
    within_mc_error(held_out, expected)
    # the fitted guide's parameters (one z per *training* row) are untouched
    for name, value in pyro.get_param_store().items():
        assert torch.equal(value.detach(), trained[name]), name
    assert pyro.param("AutoNormal.locs.z").shape == (200, Q)


def amortized_exact_posterior(x):
    """q(z_i | x_i, W) = p(z_i | x_i, W): N(M⁻¹Wᵀx_i, σ²M⁻¹), M = WᵀW + σ²I (no parameters)."""
    weight = pyro.sample("W", dist.Normal(0.0, 1.0).expand([D, Q]).to_event(2))
    precision = weight.T @ weight + SIGMA**2 * torch.eye(Q, dtype=weight.dtype)
    covariance = SIGMA**2 * torch.linalg.inv(precision)
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.MultivariateNormal(x @ weight @ torch.linalg.inv(precision),
                                                 covariance))


@pytest.mark.parametrize("path", ["posterior", "posterior+autonormal", "posterior+z-only"])
def test_posterior_draws_with_or_without_a_guide(ppca, path):
    """posterior= alone, with the fit's AutoNormal, or with a z-only AutoNormal: the global
    draws come from posterior=, the z-guide is refit on the held-out rows."""
    guide, _, test = ppca
    weights = guide_draws(guide, test, seed=5)
    passed = {"posterior": None, "posterior+autonormal": guide,
              "posterior+z-only": AutoNormal(pyro.poutine.block(bayesian_ppca, hide=["W"]))}[path]
    held_out = probgen.evaluate(bayesian_ppca, test, posterior={"W": weights.double()},
                                guide=passed, seed=0, k=500, refit_steps=400)  # MCMC's float64
    assert held_out.kind == "estimate" and held_out.settings["num_draws"] == NUM_DRAWS
    assert held_out.settings["proposal"] == "AutoNormal refit on the held-out rows"
    within_mc_error(held_out, exact_lppd(test, weights))


def test_an_amortized_exact_posterior_guide_recovers_the_lppd_with_one_particle(ppca):
    """With q(z | x, θ_s) = p(z | x, θ_s) every weight is p(x_i | θ_s): exact to rounding."""
    guide, _, test = ppca
    weights = guide_draws(guide, test, seed=5).double()
    held_out = probgen.evaluate(bayesian_ppca, test.double(), posterior={"W": weights},
                                guide=amortized_exact_posterior, k=1)
    assert held_out.kind == "estimate" and "refit" not in held_out.settings
    assert held_out.settings["proposal"] == "amortized_exact_posterior"
    np.testing.assert_allclose(held_out.per_example.numpy(), exact_lppd(test, weights),
                               atol=1e-8)


def test_a_hand_written_guide_with_an_encoder_for_z(ppca):
    """A user's guide: a mean-field Normal for W and an encoder q(z | x). W's draws come from it;
    the encoder, not a refit, proposes z for every draw."""
    _, train, test = ppca
    pyro.clear_param_store()
    encoder = torch.nn.Linear(D, 2 * Q)

    def guide(x):
        loc = pyro.param("W_loc", torch.zeros(D, Q))
        scale = pyro.param("W_scale", 0.1 * torch.ones(D, Q), constraint=constraints.positive)
        pyro.sample("W", dist.Normal(loc, scale).to_event(2))
        pyro.module("encoder", encoder)
        z_loc, z_log_scale = encoder(x).split(Q, -1)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(z_loc, z_log_scale.exp()).to_event(1))

    probgen.fit(bayesian_ppca, train, guide=guide, num_steps=600, optim=0.03, seed=0,
                progress=False)
    held_out = probgen.evaluate(bayesian_ppca, test, guide=guide, num_draws=NUM_DRAWS, seed=3,
                                k=500)
    assert held_out.kind == "estimate" and "refit" not in held_out.settings
    assert held_out.settings["proposal"] == "guide"
    within_mc_error(held_out, exact_lppd(test, guide_draws(guide, test, seed=3)))


def test_an_autoguide_list_refits_its_per_example_part(ppca):
    _, train, test = ppca
    pyro.clear_param_store()
    guide = AutoGuideList(bayesian_ppca)
    guide.append(AutoNormal(pyro.poutine.block(bayesian_ppca, expose=["W"])))
    guide.append(AutoNormal(pyro.poutine.block(bayesian_ppca, expose=["z"])))
    probgen.fit(bayesian_ppca, train, guide=guide, num_steps=500, optim=0.03, seed=0,
                progress=False)
    held_out = probgen.evaluate(bayesian_ppca, test, guide=guide, num_draws=NUM_DRAWS, seed=3,
                                k=500, refit_steps=400)
    assert held_out.settings["proposal"] == "AutoNormal refit on the held-out rows"
    within_mc_error(held_out, exact_lppd(test, guide_draws(guide, test, seed=3)))


def test_refit_steps_is_honoured(ppca):
    guide, _, test = ppca
    expected = exact_lppd(test, guide_draws(guide, test, seed=3))
    with pytest.warns(UserWarning, match=r"effective sample size.*raise refit_steps \(now 20\)"):
        short = probgen.evaluate(bayesian_ppca, test, guide=guide, num_draws=NUM_DRAWS, seed=3,
                                 k=500, refit_steps=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a proposal refit for 400 steps raises no warning
        long = probgen.evaluate(bayesian_ppca, test, guide=guide, num_draws=NUM_DRAWS, seed=3,
                                k=500, refit_steps=400)
    assert (short.settings["refit"]["num_steps"], long.settings["refit"]["num_steps"]) == (20, 400)
    # A proposal fitted for 20 steps is poor: the IWAE-k terms sit far below log p(x | θ_s).
    assert float(expected.mean()) - short.mean > 10 * long.estimator_stderr
    within_mc_error(long, expected)
    with pytest.raises(ValueError, match="refit_steps must be a positive integer"):
        probgen.evaluate(bayesian_ppca, test, guide=guide, refit_steps=0)


def test_point_mass_for_w_is_a_lower_bound_on_the_likelihood_at_w_hat(ppca):
    _, train, test = ppca
    pyro.clear_param_store()
    point = AutoDelta(bayesian_ppca)
    probgen.fit(bayesian_ppca, train, guide=point, num_steps=300, optim=0.03, seed=0,
                progress=False)
    held_out = probgen.evaluate(bayesian_ppca, test, guide=point, seed=0, k=500)
    weight_hat = point.median(train)["W"].detach()[None]
    expected = exact_lppd(test, weight_hat)
    assert held_out.kind == "lower_bound" and held_out.settings["num_draws"] == 1
    assert held_out.settings["refit"]["guide"] == "AutoNormal"  # a point mass proposes no density
    assert 0 < held_out.estimator_stderr < 0.01  # the k particles' error, by the delta method
    within_mc_error(held_out, expected)
    with pytest.raises(ValueError, match="lower bound; use estimator='predictive'"):
        probgen.evaluate(bayesian_ppca, test, guide=point, estimator="exact")


def test_a_z_only_guide_without_posterior_draws_names_the_fix(ppca):
    guide, _, test = ppca
    z_only = AutoNormal(pyro.poutine.block(bayesian_ppca, hide=["W"]))
    # Pyro's autoguides of one class share parameter names: this one reads the fit's 200 z's
    with pytest.raises(ValueError, match=r"global latents \['W'\].*pass posterior="):
        probgen.evaluate(bayesian_ppca, test, guide=z_only)
    pyro.clear_param_store()
    with pytest.raises(ValueError, match=r"samples no draws of the global latent 'W'.*posterior="):
        probgen.evaluate(bayesian_ppca, test, guide=AutoNormal(
            pyro.poutine.block(bayesian_ppca, hide=["W"])))


def per_row_guide(x):
    """A user-written z-guide with one parameter per row it was first called on."""
    loc = pyro.param("q_loc", torch.zeros(len(x), Q))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))


def test_an_unfitted_or_per_training_row_user_guide_is_refused(ppca):
    guide, _, test = ppca
    weights = guide_draws(guide, test, seed=5)
    with pytest.raises(ValueError, match=r"created the parameters \['q_loc'\].*never fitted"):
        probgen.evaluate(bayesian_ppca, test, posterior={"W": weights}, guide=per_row_guide)
    assert "q_loc" not in pyro.get_param_store()
    pyro.param("q_loc", torch.zeros(200, Q))  # as if fitted on the 200 training rows
    with pytest.raises(ValueError, match="40 held-out rows.*one parameter per training example"):
        probgen.evaluate(bayesian_ppca, test, posterior={"W": weights}, guide=per_row_guide)


@pytest.mark.parametrize("estimator", ["iwae", "elbo"])
def test_per_example_bounds_are_refused_for_global_latents(ppca, estimator):
    guide, _, test = ppca
    with pytest.raises(ValueError, match=r"global latents \['W'\].*estimator='predictive'"):
        probgen.evaluate(bayesian_ppca, test, guide=guide, estimator=estimator)
    with pytest.raises(ValueError, match="not a point mass.*estimator='predictive'"):
        probgen.evaluate(bayesian_ppca, test, guide=guide, estimator="exact")


def test_predictive_without_global_latents_names_the_fix():
    def local_only(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(ValueError, match="has none: use estimator='auto'"):
        probgen.evaluate(local_only, torch.randn(5), estimator="predictive")
