"""AIS partition functions against exact enumeration and closed forms."""

import math
import warnings

import pytest
import torch

import probgen
from probgen.models.ebm import RBM, GaussianRBM
from probgen.models.ebm.ais import (
    ais_ess_threshold,
    ais_log_partition,
    ais_log_partition_energy,
    beta_schedule,
    evaluate_ais,
    evaluate_rbm_exact,
    exact_log_partition,
)
from probgen.models.ebm.partition import binary_states
from probgen.models.ebm.reverse_ais import evaluate_raise


def random_rbm(num_visible, num_hidden, scale=0.5, seed=0, cls=RBM):
    torch.manual_seed(seed)
    rbm = cls(num_visible, num_hidden, init_scale=scale, seed=seed).double()
    with torch.no_grad():
        rbm.visible_bias.normal_(0.0, 0.5)
        rbm.hidden_bias.normal_(0.0, 0.5)
    return rbm


def prototype_data(num_examples, num_visible, seed=0):
    """Noisy copies of three binary prototypes: a data set an RBM can learn."""
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.bernoulli(torch.full((3, num_visible), 0.5), generator=generator)
    which = torch.randint(3, (num_examples,), generator=generator)
    flips = torch.bernoulli(torch.full((num_examples, num_visible), 0.05), generator=generator)
    return (prototypes[which] + flips) % 2


def test_beta_schedule_runs_from_zero_to_one_increasing():
    betas = beta_schedule(1000)
    assert betas.shape == (1000,)
    assert betas[0] == 0 and betas[-1] == 1
    assert (betas[1:] > betas[:-1]).all()
    # most of the temperatures sit near beta = 1, as in Salakhutdinov & Murray (2008)
    assert (betas >= 0.9).float().mean() > 0.6


def test_ais_log_z_within_3_stderr_of_exact_on_random_rbm():
    rbm = random_rbm(12, 10, scale=0.5)
    exact = float(exact_log_partition(rbm).detach())
    estimate = ais_log_partition(rbm, num_chains=200, num_betas=300, seed=1)
    assert 0 < estimate.stderr < 0.1
    assert abs(estimate.log_z - exact) < 3 * estimate.stderr


def test_ais_log_z_within_3_stderr_of_exact_on_trained_rbm():
    torch.manual_seed(0)
    data = prototype_data(200, 14).double()
    rbm = RBM(14, 8, seed=0).double()
    probgen.fit(rbm, data, method="cd", k=1, num_steps=100, batch_size=20, optim=0.2, seed=0,
                progress=False)
    exact = float(exact_log_partition(rbm).detach())
    estimate = ais_log_partition(rbm, num_chains=200, num_betas=400, seed=2)
    assert rbm.weight.abs().max() > 0.5  # training moved the weights far from the init
    assert abs(estimate.log_z - exact) < 3 * estimate.stderr


def test_ais_stderr_shrinks_with_more_chains():
    rbm = random_rbm(12, 10, scale=0.8, seed=3)
    few = ais_log_partition(rbm, num_chains=50, num_betas=200, seed=0)
    many = ais_log_partition(rbm, num_chains=800, num_betas=200, seed=0)
    # stderr ~ 1/sqrt(chains): 16x the chains should give about a quarter of the error
    assert many.stderr < few.stderr / 2.5
    exact = float(exact_log_partition(rbm).detach())
    assert abs(many.log_z - exact) < 3 * many.stderr


def test_gaussian_rbm_ais_matches_exact():
    rbm = random_rbm(5, 6, scale=0.4, seed=4, cls=GaussianRBM)
    exact = float(exact_log_partition(rbm).detach())
    estimate = ais_log_partition(rbm, num_chains=200, num_betas=300, seed=0,
                                 base_data=torch.randn(50, 5, dtype=torch.float64))
    assert abs(estimate.log_z - exact) < 3 * estimate.stderr


def test_mala_ais_on_quadratic_energy_matches_closed_form():
    loc = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    scale = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)

    def energy(x):
        return 0.5 * (((x - loc) / scale) ** 2).sum(-1)

    exact = float(0.5 * torch.log(2 * math.pi * scale**2).sum())
    base_loc, base_scale = torch.zeros(3, dtype=torch.float64), torch.full((3,), 2.0, dtype=torch.float64)
    estimate = ais_log_partition_energy(energy, base_loc, base_scale, num_chains=200,
                                        num_betas=200, step_size=0.3, seed=0)
    assert estimate.settings["acceptance_rate"] > 0.5
    assert abs(estimate.log_z - exact) < 3 * estimate.stderr + 1e-3


def test_mala_ais_on_gaussian_rbm_free_energy_matches_enumeration():
    rbm = random_rbm(2, 5, scale=0.6, seed=5, cls=GaussianRBM)
    exact = float(exact_log_partition(rbm).detach())
    ones = torch.ones(2, dtype=torch.float64)
    estimate = ais_log_partition_energy(lambda v: rbm.free_energy(v).detach(), 0 * ones, 1.5 * ones,
                                        num_chains=100, num_betas=100, step_size=0.5, seed=0)
    assert abs(estimate.log_z - exact) < 3 * estimate.stderr + 1e-3


def test_evaluate_ais_is_labelled_estimate_with_chain_stderr():
    rbm = random_rbm(10, 6, seed=6)
    data = prototype_data(40, 10, seed=1).double()
    ll = evaluate_ais(rbm, (data,), num_chains=100, num_betas=200, seed=0)
    exact = evaluate_rbm_exact(rbm, (data,))
    assert ll.kind == "estimate" and ll.estimator == "ais" and exact.kind == "exact"
    assert set(ll.settings) == {"num_chains", "num_betas", "ess", "log_weight_variance"}
    assert (ll.settings["num_chains"], ll.settings["num_betas"]) == (100, 200)
    assert ll.data_space == "discrete" and ll.num_dims == 10
    assert ll.estimator_stderr > 0
    # every example shares the one log Z estimate: per-example offsets are constant
    offsets = ll.per_example - exact.per_example
    assert torch.allclose(offsets, offsets[0].expand_as(offsets))
    assert abs(float(offsets[0])) < 3 * ll.estimator_stderr


def test_evaluate_rbm_exact_normalizes_over_all_states():
    from probgen.models.ebm.ais import binary_states

    rbm = random_rbm(7, 25, seed=7)  # wide hidden layer: enumerates the 7 visible units
    states = binary_states(7, dtype=torch.float64)
    ll = evaluate_rbm_exact(rbm, (states,))
    assert torch.logsumexp(ll.per_example, 0).abs() < 1e-10


def test_evaluate_ais_rejects_other_models_and_bad_data():
    rbm = random_rbm(4, 3)
    with pytest.raises(ValueError, match="binary"):
        evaluate_ais(rbm, (torch.full((3, 4), 0.5, dtype=torch.float64),), num_chains=4, num_betas=4)
    with pytest.raises(TypeError, match="energy-based"):
        evaluate_ais(torch.nn.Linear(2, 2), (torch.zeros(2, 2),))
    with pytest.raises(ValueError, match="at most 20"):
        exact_log_partition(RBM(30, 30))


# --- AIS bias, its ESS diagnostic, and the RAISE lower bound (Burda, Grosse & Salakhutdinov) ---


def gaussian_weight_rbm(num_visible, num_hidden, seed=0, cls=RBM):
    """N(0, 1) weights, zero biases, uniform base: the hard case of the AIS-bias issue."""
    return cls(num_visible, num_hidden, init_scale=1.0, seed=seed).double()


def exact_samples(rbm, num_samples, seed=0):
    """Exact draws from a Bernoulli RBM with few hidden units: h ~ p(h) by enumeration, v ~ p(v|h)."""
    generator = torch.Generator().manual_seed(seed)
    states = binary_states(rbm.num_hidden, dtype=rbm.weight.dtype)
    with torch.no_grad():
        probs = torch.softmax(rbm.log_marginal_hidden(states), 0)
        hidden = states[torch.multinomial(probs, num_samples, replacement=True, generator=generator)]
        return torch.bernoulli(torch.sigmoid(rbm.visible_bias + hidden @ rbm.weight.T),
                               generator=generator)


def quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return function(*args, **kwargs)


def test_ais_log_z_is_biased_low_so_its_log_likelihood_is_biased_high_with_a_short_schedule():
    rbm = gaussian_weight_rbm(20, 10)
    exact_log_z = float(exact_log_partition(rbm))
    gaps = torch.tensor([quiet(ais_log_partition, rbm, num_chains=20, num_betas=10, seed=seed).log_z
                         - exact_log_z for seed in range(20)], dtype=torch.float64)
    # E[log Z_AIS] < log Z (Jensen): many stderrs of the mean over seeds below zero
    assert gaps.mean() < -3 * gaps.std() / math.sqrt(len(gaps))
    # the same bias, seen as a test log-likelihood: optimistic against the exact value
    x = exact_samples(rbm, 50)
    exact = probgen.evaluate(rbm, x, estimator="exact").mean
    ais = [quiet(probgen.evaluate, rbm, x, estimator="ais", num_betas=10, num_chains=20,
                 seed=seed).mean for seed in range(20)]
    assert sum(ais) / len(ais) > exact + 0.3


def test_raise_is_below_exact_for_every_seed_and_tight_with_a_long_schedule():
    rbm = gaussian_weight_rbm(20, 10)
    x = exact_samples(rbm, 40, seed=1)
    exact = probgen.evaluate(rbm, x, estimator="exact").mean
    for seed in range(4):
        for num_betas in (10, 100):
            bound = probgen.evaluate(rbm, x, estimator="raise", num_betas=num_betas,
                                     num_chains=10, seed=seed)
            assert bound.kind == "lower_bound" and bound.estimator == "raise"
            assert bound.mean < exact, (seed, num_betas, bound.mean, exact)
    short = probgen.evaluate(rbm, x, estimator="raise", num_betas=10, num_chains=10, seed=0)
    long = probgen.evaluate(rbm, x, estimator="raise", num_betas=1000, num_chains=5, seed=0)
    assert short.mean < exact - 0.3  # conservative: a short schedule errs low, never high
    assert abs(long.mean - exact) < 0.2  # and it closes the gap as the schedule grows
    assert (long.per_example - probgen.evaluate(rbm, x, estimator="exact").per_example
            ).abs().max() < 1.0


def test_raise_and_ais_bracket_the_exact_log_likelihood():
    rbm = gaussian_weight_rbm(20, 10, seed=2)
    x = exact_samples(rbm, 40, seed=3)
    exact = probgen.evaluate(rbm, x, estimator="exact").mean
    low = probgen.evaluate(rbm, x, estimator="raise", num_betas=30, num_chains=10, seed=0)
    high = [quiet(probgen.evaluate, rbm, x, estimator="ais", num_betas=30, num_chains=20,
                  seed=seed).mean for seed in range(10)]
    assert low.mean < exact < sum(high) / len(high)


def test_raise_on_gaussian_rbm_is_below_and_close_to_exact():
    rbm = random_rbm(4, 6, scale=0.4, seed=4, cls=GaussianRBM)
    rbm.set_base_rate(torch.randn(50, 4, dtype=torch.float64))
    x = quiet(rbm.sample, 30, num_steps=200).detach()
    exact = probgen.evaluate(rbm, x, estimator="exact").mean
    short = probgen.evaluate(rbm, x, estimator="raise", num_betas=5, num_chains=10, seed=0)
    long = probgen.evaluate(rbm, x, estimator="raise", num_betas=300, num_chains=10, seed=0)
    assert short.data_space == "continuous"
    assert short.mean < long.mean + 0.05 and long.mean < exact + 0.05
    assert abs(long.mean - exact) < 0.2


def test_ess_warning_fires_on_the_issue_case_and_names_num_betas():
    # The issue: 784 visible x 12 hidden, N(0, 1) weights, 100 betas, 100 chains.
    rbm = gaussian_weight_rbm(784, 12)
    x = exact_samples(rbm, 20)
    with pytest.warns(UserWarning, match="num_betas") as record:
        ais = probgen.evaluate(rbm, x, estimator="ais", num_betas=100, num_chains=100, seed=0)
    ais_warnings = [w for w in record if "effective sample size" in str(w.message)]
    assert len(ais_warnings) == 1 and "biased high" in str(ais_warnings[0].message)
    assert ais.kind == "estimate"
    assert ais.settings["ess"] < ais_ess_threshold(100) == 10
    assert ais.settings["log_weight_variance"] > 10
    exact = probgen.evaluate(rbm, x, estimator="exact").mean
    assert ais.mean > exact + 10  # what the warning is about: tens of nats optimistic


def test_ess_warning_does_not_fire_on_an_easy_case():
    rbm = gaussian_weight_rbm(20, 10, seed=5)
    with torch.no_grad():
        rbm.weight.mul_(0.1)
    x = exact_samples(rbm, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        ais = probgen.evaluate(rbm, x, estimator="ais", num_betas=100, num_chains=100, seed=0)
    assert ais.settings["ess"] > 90 and ais.settings["log_weight_variance"] < 0.05
    exact = probgen.evaluate(rbm, x, estimator="exact").mean
    assert abs(ais.mean - exact) < 0.05


def test_diagnostics_are_in_the_settings_of_ais_and_raise():
    rbm = random_rbm(10, 6, seed=6)
    data = prototype_data(20, 10, seed=1).double()
    estimate = ais_log_partition(rbm, num_chains=50, num_betas=50, seed=0)
    assert estimate.settings["ess"] == pytest.approx(estimate.effective_sample_size, abs=0.01)
    assert estimate.settings["log_weight_variance"] == pytest.approx(
        float(estimate.log_weights.var()), rel=1e-3)
    for name in ("ais", "raise"):
        ll = probgen.evaluate(rbm, data, estimator=name, num_betas=50, num_chains=50, seed=0)
        assert 1 <= ll.settings["ess"] <= 50 and ll.settings["log_weight_variance"] >= 0
    bound = evaluate_raise(rbm, (data,), num_betas=50, num_chains=8, seed=0, batch_size=7)
    again = evaluate_raise(rbm, (data,), num_betas=50, num_chains=8, seed=0, batch_size=7)
    assert torch.equal(bound.per_example, again.per_example)  # seeded
    assert bound.settings["num_chains"] == 8 and bound.num_examples == 20
