"""GaussianMixture: exact log p(x) against scipy/sklearn, the enumerated Pyro program, sampling."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from probgen.demo.mixture import demo_entries
from probgen.models.mixture import GaussianMixture, initial_parameters, select_num_components
from probgen.models.registry import get_model_class

COVARIANCES = ["full", "tied", "diag", "spherical"]



def random_mixture(covariance: str, num_components: int = 3, num_features: int = 4,
                   seed: int = 0) -> GaussianMixture:
    """A float64 GMM with random, well-conditioned, unequal components."""
    generator = torch.Generator().manual_seed(seed)
    options = dict(generator=generator, dtype=torch.float64)
    weights = torch.distributions.Dirichlet(torch.full((num_components,), 2.0, dtype=torch.float64))
    torch.manual_seed(seed)
    locs = 2 * torch.randn(num_components, num_features, **options)
    if covariance in ("full", "tied"):
        factors = torch.randn(num_components, num_features, num_features, **options)
        covariances = factors @ factors.transpose(-1, -2) / num_features + 0.2 * torch.eye(
            num_features, dtype=torch.float64)
        covariances = covariances if covariance == "full" else covariances[0]
    elif covariance == "diag":
        covariances = torch.rand(num_components, num_features, **options) + 0.2
    else:
        covariances = torch.rand(num_components, **options) + 0.2
    model = GaussianMixture(num_components, num_features, covariance).double()
    return model.set_parameters(weights.sample(), locs, covariances)


def full_covariances(model: GaussianMixture) -> np.ndarray:
    params = model.parameters_dict()
    k, d = model.num_components, model.num_features
    if model.covariance in ("full", "tied"):
        return params["covariances"].expand(k, d, d).numpy()
    variances = params["variances"]
    variances = variances if model.covariance == "diag" else variances[:, None]
    return torch.diag_embed(variances.expand(k, d)).numpy()


def scipy_log_density(model: GaussianMixture, x: torch.Tensor) -> np.ndarray:
    params = model.parameters_dict()
    covariances = full_covariances(model)
    per_component = np.stack([
        math.log(float(params["weights"][k]))
        + stats.multivariate_normal(params["locs"][k].numpy(), covariances[k]).logpdf(x.numpy())
        for k in range(model.num_components)], axis=1)
    return logsumexp(per_component, axis=1)


def sklearn_mixture(model: GaussianMixture):
    """An sklearn GaussianMixture carrying exactly the same parameters."""
    from sklearn.mixture import GaussianMixture as SkGaussianMixture
    from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky

    params = model.parameters_dict()
    covariance_type = model.covariance
    sk = SkGaussianMixture(model.num_components, covariance_type=covariance_type)
    sk.weights_ = params["weights"].numpy()
    sk.means_ = params["locs"].numpy()
    sk.covariances_ = params.get("covariances", params.get("variances")).numpy()
    sk.precisions_cholesky_ = _compute_precision_cholesky(sk.covariances_, covariance_type)
    return sk


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_log_prob_matches_scipy_mixture_density(covariance):
    model = random_mixture(covariance)
    x = model.sample(300) * 1.5  # include points in the tails
    ours = model.log_prob(x).detach().numpy()
    np.testing.assert_allclose(ours, scipy_log_density(model, x), rtol=0, atol=1e-8)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_log_prob_is_chunked_consistently(covariance, monkeypatch):
    import probgen.models.mixture.model as mixture

    model = random_mixture(covariance)
    x = model.sample(101)
    whole = model.log_prob(x).detach()
    monkeypatch.setattr(mixture, "_CHUNK_ELEMENTS", 7 * model.num_components * model.num_features)
    torch.testing.assert_close(model.log_prob(x).detach(), whole, rtol=0, atol=1e-12)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_responsibilities_predict_and_bic_match_sklearn(covariance):
    model = random_mixture(covariance)
    x = model.sample(200)
    sk = sklearn_mixture(model)
    np.testing.assert_allclose(model.responsibilities(x).detach().numpy(),
                               sk.predict_proba(x.numpy()), atol=1e-10)
    np.testing.assert_array_equal(model.predict(x).numpy(), sk.predict(x.numpy()))
    np.testing.assert_allclose(model.bic(x), sk.bic(x.numpy()), rtol=1e-10)
    np.testing.assert_allclose(model.log_prob(x).detach().numpy(), sk.score_samples(x.numpy()),
                               atol=1e-9)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_enumerated_pyro_program_gives_the_exact_marginal(covariance):
    model = random_mixture(covariance)
    x = model.sample(64)
    elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    enumerated = -elbo.loss(model.model, model.guide, x)  # = Σ_n log p(x_n): nothing else latent
    assert enumerated == pytest.approx(float(model.log_prob(x).detach().sum()), abs=1e-8)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_generic_evaluate_matches_fast_path(covariance):
    evaluate = pytest.importorskip("probgen.evaluate").__dict__.get("evaluate")
    if evaluate is None:
        pytest.skip("probgen.evaluate.evaluate is not available yet")
    model = random_mixture(covariance)
    x = model.sample(50)
    generic = evaluate(model, x, estimator="exact", fast=False)
    assert generic.kind == "exact"
    torch.testing.assert_close(generic.per_example, model.log_prob(x).detach(), rtol=0, atol=1e-8)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_every_parameter_gets_a_gradient_from_both_paths(covariance):
    model = random_mixture(covariance)
    x = model.sample(32)
    model.log_prob(x).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    fast_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(
        model.model, model.guide, x).backward()
    for fast, p in zip(fast_grads, model.parameters()):
        torch.testing.assert_close(-p.grad, fast, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_sample_moments_match_the_mixture(covariance):
    model = random_mixture(covariance, num_features=3)
    torch.manual_seed(1)
    num_samples = 40_000
    samples = model.sample(num_samples)
    params = model.parameters_dict()
    weights, locs = params["weights"], params["locs"]
    mean = weights @ locs
    second = (weights[:, None, None] * (torch.from_numpy(full_covariances(model))
                                        + locs[:, :, None] * locs[:, None, :])).sum(0)
    cov = second - mean[:, None] * mean[None, :]
    stderr = (cov.diagonal() / num_samples).sqrt()
    assert ((samples.mean(0) - mean).abs() < 5 * stderr).all()  # 5 standard errors
    # Sample covariance: a loose 5% relative check on the diagonal (variance of variances).
    torch.testing.assert_close(samples.T.cov().diagonal(), cov.diagonal(), rtol=0.05, atol=0)
    # Component frequencies: multinomial, 5 standard errors.
    counts = torch.bincount(model.predict(samples), minlength=model.num_components)
    assert counts.sum() == num_samples


def test_config_rebuilds_the_model_and_state_dict_round_trips():
    model = random_mixture("full")
    x = model.sample(20)
    rebuilt = get_model_class("gmm")(**model.config).double()
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.log_prob(x), model.log_prob(x))


def test_bad_input_names_the_problem():
    model = GaussianMixture(2, 3).double()
    with pytest.raises(ValueError, match="shape \\(4,\\).*expects \\(3,\\)"):
        model.log_prob(torch.zeros(5, 4, dtype=torch.float64))
    bad = torch.zeros(5, 3, dtype=torch.float64)
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN in 1 row"):
        model.log_prob(bad)
    with pytest.raises(ValueError, match="covariance must be"):
        GaussianMixture(2, 3, covariance="isotropic")
    with pytest.raises(ValueError, match="num_components"):
        GaussianMixture(0, 3)
    with pytest.raises(ValueError, match="positive definite"):
        model.set_parameters(torch.tensor([0.5, 0.5]), torch.zeros(2, 3),
                             -torch.eye(3).expand(2, 3, 3))
    with pytest.raises(ValueError, match="expected weights"):
        model.set_parameters(torch.tensor([1.0]), torch.zeros(2, 3), torch.eye(3).expand(2, 3, 3))


def test_select_num_components_prefers_the_true_number():
    truth = random_mixture("full", num_components=3, num_features=2, seed=3)
    with torch.no_grad():
        truth.locs.mul_(3)  # well separated
    torch.manual_seed(0)
    x = truth.sample(900)
    selection = select_num_components(x[:600], x[600:], (1, 2, 3, 4), num_steps=100)
    assert selection.best_by_bic == "gmm-full-K3"
    heldout = {name: ll.mean for name, ll in selection.heldout.items()}
    assert heldout["gmm-full-K3"] > heldout["gmm-full-K2"] > heldout["gmm-full-K1"]
    assert all(ll.kind == "exact" and ll.data_space == "continuous"
               for ll in selection.heldout.values())


def test_demo_entries_fit_iris():
    from probgen.data.bundled import load_dataset, train_test_split
    from probgen.demo.registry import DemoData

    data = load_dataset("iris").data
    data = (data - data.mean(0)) / data.std(0)
    train_index, test_index = train_test_split(len(data), 0.2, seed=0)
    demo = DemoData("iris", (data[train_index],), (data[test_index],), "standardized iris")
    entries = demo_entries(smoke=True)
    assert [entry.name for entry in entries] == [f"gmm-full-K{k} (MAP EM)" for k in (1, 2, 3, 4)]
    results = [entry.run(demo, "") for entry in entries]
    assert all(r.kind == "exact" and r.num_examples == 30 and math.isfinite(r.mean)
               for r in results)
    assert results[2].mean > results[0].mean  # three species beat one Gaussian


def test_generic_fit_climbs_toward_the_em_optimum():
    probgen = pytest.importorskip("probgen")

    truth = random_mixture("full", num_components=2, num_features=2, seed=5)
    torch.manual_seed(0)
    x = truth.sample(300)
    optimum = GaussianMixture(2, 2).double()
    best = -probgen.fit(optimum, x, method="em", num_steps=500, tol=1e-12, seed=0,
                        progress=False).losses[-1] / len(x)
    init = initial_parameters(x, 2, init="random_points", seed=0)
    model = GaussianMixture(2, 2).double()
    model.set_parameters(init["weights"], init["locs"], init["covariances"])
    start = float(model.log_prob(x).detach().mean())
    result = probgen.fit(model, x, method="svi", num_steps=150,
                         optim=pyro.optim.Adam({"lr": 0.1}), seed=0, progress=False)
    assert result.losses[-1] < result.losses[0]
    fitted = float(model.log_prob(x).detach().mean())
    assert start + 0.1 < fitted <= best + 1e-9  # gradient ascent on the exact marginal, below EM's
