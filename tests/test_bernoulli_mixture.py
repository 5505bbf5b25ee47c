"""BernoulliMixture: exact log p(x) against brute force, EM (monotone, closed form, MAP) against
scikit-learn's BernoulliNB and against SVI on the same program, sampling, save/load."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from sklearn.naive_bayes import BernoulliNB

import probgen
from probgen.models.mixture import BernoulliMixture, BernoulliMixturePrior
from probgen.models.registry import get_model_class


def random_mixture(num_components: int = 3, features: int = 5, seed: int = 0) -> BernoulliMixture:
    generator = torch.Generator().manual_seed(seed)
    weights = torch.distributions.Dirichlet(torch.full((num_components,), 2.0,
                                                       dtype=torch.float64)).sample()
    probs = 0.05 + 0.9 * torch.rand(num_components, features, generator=generator,
                                    dtype=torch.float64)
    return BernoulliMixture(num_components, features).double().set_parameters(weights, probs)


def brute_force(model: BernoulliMixture, x: np.ndarray) -> np.ndarray:
    """log Σ_k π_k Π_d μ^x (1 - μ)^(1 - x), term by term in numpy."""
    weights, probs = (v.numpy() for v in model.parameters_dict().values())
    per_component = (x[:, None, :] * np.log(probs) + (1 - x[:, None, :]) * np.log1p(-probs)).sum(-1)
    return logsumexp(np.log(weights) + per_component, axis=1)


@pytest.mark.parametrize("fast", [True, False], ids=["log_prob", "enumeration"])
def test_exact_log_likelihood_is_the_brute_force_sum_and_normalizes(fast):
    model = random_mixture()
    every = torch.tensor(list(itertools.product([0.0, 1.0], repeat=5)), dtype=torch.float64)
    result = probgen.evaluate(model, every, fast=fast)
    assert result.kind == "exact" and result.data_space == "discrete"
    np.testing.assert_allclose(result.per_example.numpy(), brute_force(model, every.numpy()),
                               rtol=0, atol=1e-12)
    assert float(torch.logsumexp(result.per_example, 0)) == pytest.approx(0.0, abs=1e-12)


def data(num_examples: int = 2000, seed: int = 0) -> tuple[torch.Tensor, BernoulliMixture]:
    truth = random_mixture(3, 8, seed=seed)
    torch.manual_seed(seed)
    return truth.sample(num_examples), truth


@pytest.mark.parametrize("init", ["random_points", "random"])
@pytest.mark.parametrize("prior", [None, BernoulliMixturePrior(2.0, 1.5, 3.0)], ids=["ml", "map"])
def test_em_is_monotone_and_its_loss_is_the_objective(prior, init):
    x, _ = data()
    model = BernoulliMixture(3, 8).double()
    result = probgen.fit(model, x, num_steps=60, tol=0.0, prior=prior, init=init, seed=1,
                         progress=False)
    losses = np.array(result.losses)
    assert result.method == "em" and len(losses) == 60
    assert np.diff(losses).max() <= 1e-9 * np.abs(losses).max()
    assert losses[-1] < losses[0]
    objective = float(model.log_prob(x).detach().sum())
    if prior is not None:
        params = model.parameters_dict()
        objective += float(prior.log_prob(params["weights"], params["probs"]))
    assert losses[-1] == pytest.approx(-objective, abs=1e-8 * len(x))


def test_one_component_em_is_bernoulli_naive_bayes_per_class():
    """Laplace-smoothed ML, (S + 1) / (N + 2), is MAP EM under Beta(2, 2): BernoulliNB(alpha=1)."""
    x, _ = data(500)
    labels = (torch.arange(len(x)) % 2).numpy()
    reference = BernoulliNB(alpha=1.0).fit(x.numpy(), labels)
    for c in (0, 1):
        model = BernoulliMixture(1, 8).double()
        result = probgen.fit(model, x[labels == c], num_steps=5, prior=BernoulliMixturePrior(),
                             seed=0, progress=False)
        assert result.converged  # the closed form in one M-step, then no change
        np.testing.assert_allclose(model.probs.detach().log().numpy()[0],
                                   reference.feature_log_prob_[c], rtol=0, atol=1e-12)


def test_maximum_likelihood_keeps_probabilities_off_zero_and_one():
    x = torch.zeros(50, 4, dtype=torch.float64)
    x[:, 0] = 1.0  # a feature always on, three always off
    model = BernoulliMixture(2, 4).double()
    probgen.fit(model, x, num_steps=10, seed=0, progress=False)
    probs = model.probs.detach()
    assert ((probs > 0) & (probs < 1)).all()
    held_out = probgen.evaluate(model, torch.ones(3, 4, dtype=torch.float64))
    assert torch.isfinite(held_out.per_example).all()


def test_em_and_svi_reach_the_same_likelihood():
    x, truth = data(1500)
    em_model, svi_model = BernoulliMixture(3, 8).double(), BernoulliMixture(3, 8).double()
    probgen.fit(em_model, x, num_steps=300, seed=0, progress=False)
    probgen.fit(svi_model, x, method="svi", num_steps=800, optim=0.05, seed=0, progress=False)
    em_ll, svi_ll = (probgen.evaluate(m, x).mean for m in (em_model, svi_model))
    truth_ll = probgen.evaluate(truth, x).mean
    assert em_ll >= truth_ll - 1e-9  # the MLE beats the generating parameters on its data
    assert svi_ll == pytest.approx(em_ll, abs=0.01)  # nats per example


def test_sampling_matches_the_marginal_means():
    model = random_mixture(3, 6, seed=2)
    torch.manual_seed(0)
    samples = model.sample(40_000)
    assert samples.shape == (40_000, 6) and set(samples.unique().tolist()) <= {0.0, 1.0}
    params = model.parameters_dict()
    expected = params["weights"] @ params["probs"]  # (D,)
    stderr = (expected * (1 - expected) / len(samples)).sqrt()
    assert ((samples.mean(0) - expected).abs() < 5 * stderr).all()


def test_registry_and_save_load_round_trip(tmp_path):
    assert get_model_class("bernoulli_mixture") is BernoulliMixture
    model = random_mixture()
    probgen.save(model, tmp_path / "bmm.pt")
    loaded = probgen.load(tmp_path / "bmm.pt")
    x = model.sample(20)
    with torch.no_grad():  # load rebuilds in the default dtype (float32)
        torch.testing.assert_close(loaded.log_prob(x), model.log_prob(x), check_dtype=False)


@pytest.mark.parametrize("make, message", [
    (lambda: probgen.fit(BernoulliMixture(2, 3), torch.full((10, 3), 0.5)), "binary"),
    (lambda: probgen.fit(BernoulliMixture(2, 3), torch.ones(10, 4)), "expects"),
    (lambda: BernoulliMixturePrior(concentration1=0.5), "concentration1"),
    (lambda: probgen.fit(BernoulliMixture(2, 3), torch.ones(10, 3), prior=(2, 2)),
     "BernoulliMixturePrior"),
    (lambda: probgen.fit(BernoulliMixture(2, 3), torch.ones(10, 3), init="kmeans"), "init"),
    (lambda: probgen.fit(BernoulliMixture(20, 3), torch.ones(10, 3)), "exceeds"),
    (lambda: BernoulliMixture(0, 3), "num_components"),
    (lambda: BernoulliMixture(2, 3).double().set_parameters(torch.tensor([0.5, 0.5]),
                                                             torch.zeros(2, 3)), "strictly"),
])
def test_bad_inputs_say_what_to_do(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()
