"""fit_em: monotone, equal to scikit-learn's EM step, stationary at convergence, MAP, collapse."""

from __future__ import annotations

import warnings

import numpy as np
import pyro
import pytest
import torch
from scipy import stats
from scipy.optimize import linear_sum_assignment

from probgen.models.mixture.em import (
    ComponentCollapseWarning,
    GaussianMixturePrior,
    fit_em,
    initial_parameters,
    log_prior,
)
from probgen.models.mixture import GaussianMixture

COVARIANCES = ["full", "tied", "diag", "spherical"]



def simulate(num_examples: int = 1500, seed: int = 0, separation: float = 4.0):
    """Three 2-D components with known weights, means and covariances (float64)."""
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    locs = separation * torch.tensor([[0.0, 0.0], [1.5, 1.0], [-1.0, 1.5]], dtype=torch.float64)
    covariances = torch.tensor([[[1.0, 0.5], [0.5, 1.0]], [[0.6, -0.2], [-0.2, 0.4]],
                                [[0.3, 0.0], [0.0, 1.2]]], dtype=torch.float64)
    truth = GaussianMixture(3, 2).double().set_parameters(weights, locs, covariances)
    torch.manual_seed(seed)
    return truth.sample(num_examples), truth


def test_em_history_is_exact_and_monotone_without_regularization():
    x, _ = simulate(separation=1.5)  # overlapping: EM moves for many iterations
    for covariance in COVARIANCES:
        model = GaussianMixture(3, 2, covariance, reg_covar=0.0).double()
        result = fit_em(model, x, num_iters=60, tol=0.0, init="random_points", seed=1)
        history = np.array(result.log_likelihood_history)
        assert len(history) == 61 and result.num_iters == 60 and not result.converged
        assert np.diff(history).min() >= -1e-12 * np.abs(history).max(), covariance
        assert history[-1] > history[0] + 0.05  # it actually climbed
        # The last entry is the exact log-likelihood of the returned parameters.
        assert history[-1] == pytest.approx(float(model.log_prob(x).detach().mean()), abs=1e-10)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_map_objective_never_decreases(covariance):
    x, _ = simulate(num_examples=300, separation=1.5)
    model = GaussianMixture(4, 2, covariance).double()
    prior = GaussianMixturePrior(weight_concentration=2.0, mean_precision=0.5)
    result = fit_em(model, x, num_iters=60, tol=0.0, init="random_points", prior=prior, seed=2)
    objective = np.array(result.objective_history)
    assert np.diff(objective).min() >= -1e-12 * np.abs(objective).max()
    # The recorded objective is log p(x | θ)/N + log p(θ)/N of the returned parameters.
    resolved = prior.resolve(x, 4, covariance)
    expected = (model.log_prob(x).sum() + log_prior(model.parameters_dict(), resolved)) / len(x)
    assert objective[-1] == pytest.approx(float(expected.detach()), abs=1e-10)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_one_em_step_equals_sklearn(covariance):
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    x, _ = simulate(num_examples=500, separation=1.5)
    init = initial_parameters(x, 3, covariance=covariance, init="random_points", seed=0)
    cov_key = "covariances" if covariance in ("full", "tied") else "variances"
    model = GaussianMixture(3, 2, covariance, reg_covar=1e-3).double()
    model.set_parameters(init["weights"], init["locs"], init[cov_key])
    fit_em(model, x, num_iters=3, tol=0.0, init="model")
    precisions = (torch.linalg.inv(init[cov_key]) if cov_key == "covariances" else 1 / init[cov_key])
    sk = SkGaussianMixture(3, covariance_type=covariance, max_iter=3, tol=0.0, reg_covar=1e-3,
                           weights_init=init["weights"].numpy(), means_init=init["locs"].numpy(),
                           precisions_init=precisions.numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's "did not converge" after 3 iterations
        sk.fit(x.numpy())
    params = model.parameters_dict()
    np.testing.assert_allclose(params["weights"].numpy(), sk.weights_, atol=1e-10)
    np.testing.assert_allclose(params["locs"].numpy(), sk.means_, atol=1e-9)
    np.testing.assert_allclose(params[cov_key].numpy(), sk.covariances_, atol=1e-9)


@pytest.mark.parametrize("covariance", COVARIANCES)
@pytest.mark.parametrize("use_prior", [False, True])
def test_em_converges_to_a_stationary_point_of_its_objective(covariance, use_prior):
    x, _ = simulate(num_examples=400, separation=3.0)
    prior = GaussianMixturePrior(weight_concentration=1.5) if use_prior else None
    model = GaussianMixture(3, 2, covariance, reg_covar=0.0).double()
    result = fit_em(model, x, num_iters=2000, tol=1e-13, prior=prior, seed=0)
    assert result.converged
    objective = model.log_prob(x).sum()
    if prior is not None:
        # The parameters as differentiable tensors, shaped as parameters_dict gives them.
        if covariance in ("full", "tied"):
            shaped = {"covariances": model.covariance_matrix[0 if covariance == "tied" else ...]}
        else:
            variances = (2 * model.log_scales).exp()
            shaped = {"variances": variances[:, 0] if covariance == "spherical" else variances}
        objective = objective + log_prior(
            {"weights": model.weights, "locs": model.locs, **shaped},
            prior.resolve(x, 3, covariance))
    objective.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad.abs().max() < 1e-5, (name, parameter.grad)


def test_recovers_a_known_mixture_up_to_permutation():
    x, truth = simulate(num_examples=3000, seed=4)
    model = GaussianMixture(3, 2).double()
    fit_em(model, x, num_iters=200, seed=0)
    fitted, true = model.parameters_dict(), truth.parameters_dict()
    cost = torch.cdist(fitted["locs"], true["locs"]).numpy()
    rows, cols = linear_sum_assignment(cost)
    order = torch.as_tensor(cols[np.argsort(rows)])
    # Standard errors with n_k ~ 600..1500 points: means ~0.03, weights ~0.01, cov ~0.04.
    torch.testing.assert_close(fitted["locs"], true["locs"][order], atol=0.15, rtol=0)
    torch.testing.assert_close(fitted["weights"], true["weights"][order], atol=0.04, rtol=0)
    torch.testing.assert_close(fitted["covariances"], true["covariances"][order], atol=0.2, rtol=0)


def test_em_and_generic_pyro_path_agree_after_fitting():
    x, _ = simulate(num_examples=400)
    for covariance in COVARIANCES:
        model = GaussianMixture(3, 2, covariance).double()
        result = fit_em(model, x, num_iters=50, seed=0)
        pyro.clear_param_store()
        enumerated = -pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).loss(model.model, model.guide, x)
        assert enumerated / len(x) == pytest.approx(result.log_likelihood_history[-1], abs=1e-10)


@pytest.mark.parametrize("reg_covar", [1e-3, 0.0])
def test_collapsing_component_warns_and_is_regularized(reg_covar):
    generator = torch.Generator().manual_seed(0)
    spread = torch.randn(200, 2, generator=generator, dtype=torch.float64)
    duplicates = torch.tensor([[6.0, 6.0]], dtype=torch.float64).expand(25, 2)
    x = torch.cat([spread, duplicates])
    model = GaussianMixture(3, 2, reg_covar=reg_covar).double()
    # Start one component right on the duplicated point: EM shrinks it onto that point.
    init = initial_parameters(x, 3, init="random_points", seed=0)
    init["locs"][0] = duplicates[0]
    model.set_parameters(init["weights"], init["locs"], init["covariances"])
    with pytest.warns(ComponentCollapseWarning, match="component 0 collapsed"):
        result = fit_em(model, x, num_iters=30, tol=0.0, init="model")
    assert 0 in result.collapsed_components
    eigenvalues = torch.linalg.eigvalsh(model.covariance_matrix.detach())
    assert (eigenvalues > 0).all()
    if reg_covar > 0:
        assert eigenvalues.min() >= reg_covar * (1 - 1e-6)  # floored at reg_covar
    assert torch.isfinite(model.log_prob(x)).all()
    assert np.isfinite(result.log_likelihood_history).all()


def test_tied_collapse_warns_once_about_the_shared_covariance():
    line = torch.randn(300, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = torch.cat([line, 2 * line], dim=1)  # on a line: every scatter matrix is singular
    model = GaussianMixture(3, 2, "tied", reg_covar=0.0).double()
    with pytest.warns(ComponentCollapseWarning, match="tied covariance") as caught:
        result = fit_em(model, x, num_iters=10, tol=0.0, seed=0)
    assert len([w for w in caught if issubclass(w.category, ComponentCollapseWarning)]) == 1
    assert result.collapsed_components == (0,)
    assert torch.isfinite(model.log_prob(x)).all()


def test_prior_prevents_collapse_without_warning():
    x = torch.cat([torch.randn(100, 2, dtype=torch.float64),
                   torch.tensor([[6.0, 6.0]], dtype=torch.float64).expand(10, 2)])
    model = GaussianMixture(3, 2, reg_covar=0.0).double()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ComponentCollapseWarning)
        result = fit_em(model, x, num_iters=50, prior=GaussianMixturePrior(), seed=0)
    assert not result.collapsed_components
    assert torch.linalg.eigvalsh(model.covariance_matrix.detach()).min() > 1e-3


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_log_prior_matches_scipy(covariance):
    x, _ = simulate(num_examples=200)
    prior = GaussianMixturePrior(weight_concentration=2.5, mean_precision=0.3,
                                 degrees_of_freedom=5.0)
    resolved = prior.resolve(x, 3, covariance)
    model = GaussianMixture(3, 2, covariance).double()
    fit_em(model, x, num_iters=5, seed=0)
    params = model.parameters_dict()
    mean, kappa = resolved["mean"].numpy(), 0.3
    expected = stats.dirichlet(np.full(3, 2.5)).logpdf(params["weights"].numpy())
    scale = resolved["scale"].numpy()
    if covariance == "tied":  # one inverse Wishart for the shared Σ
        expected += stats.invwishart(df=5.0, scale=scale).logpdf(params["covariances"].numpy())
    for k in range(3):
        if covariance in ("full", "tied"):
            cov = params["covariances"][k if covariance == "full" else ...].numpy()
            expected += stats.multivariate_normal(mean, cov / kappa).logpdf(params["locs"][k].numpy())
            if covariance == "full":
                expected += stats.invwishart(df=5.0, scale=scale).logpdf(cov)
        else:  # diag: an inverse gamma per variance; spherical: one per component
            var = params["variances"][k].numpy()
            expected += stats.norm(mean, np.sqrt(var / kappa)).logpdf(params["locs"][k].numpy()).sum()
            expected += stats.invgamma(2.5, scale=scale / 2).logpdf(var).sum()
    assert float(log_prior(params, resolved)) == pytest.approx(expected, abs=1e-9)


def test_float32_matches_float64():
    x, _ = simulate(num_examples=2000, separation=2.0)
    init = initial_parameters(x, 3, init="kmeans++", seed=0)
    results = {}
    for dtype in (torch.float64, torch.float32):
        model = GaussianMixture(3, 2).to(dtype)
        model.set_parameters(init["weights"], init["locs"], init["covariances"])
        results[dtype] = fit_em(model, x.to(dtype), num_iters=20, tol=0.0, init="model")
    assert results[torch.float32].log_likelihood_history == pytest.approx(
        results[torch.float64].log_likelihood_history, abs=1e-4)


def test_seeded_inits_are_reproducible_and_differ_by_seed():
    x, _ = simulate(num_examples=300)
    for init in ("kmeans++", "random_points"):
        first = initial_parameters(x, 3, init=init, seed=5)
        again = initial_parameters(x, 3, init=init, seed=5)
        other = initial_parameters(x, 3, init=init, seed=6)
        torch.testing.assert_close(first["locs"], again["locs"])
        assert not torch.equal(first["locs"], other["locs"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_em_runs_on_the_device_of_the_data():
    x, _ = simulate(num_examples=500)
    model = GaussianMixture(3, 2).double().cuda()
    result = fit_em(model, x.cuda(), num_iters=20, seed=0)
    assert model.locs.device.type == "cuda"
    cpu_model = GaussianMixture(3, 2).double()
    cpu_result = fit_em(cpu_model, x, num_iters=20, seed=0, init="random_points")
    assert np.isfinite(result.log_likelihood_history[-1])
    assert np.isfinite(cpu_result.log_likelihood_history[-1])


def test_bad_input_and_options_raise_clear_errors():
    model = GaussianMixture(2, 2).double()
    x = torch.randn(10, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="expects \\(2,\\)"):
        fit_em(model, torch.randn(10, 3, dtype=torch.float64))
    bad = x.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fit_em(model, bad)
    with pytest.raises(ValueError, match="unknown init"):
        fit_em(model, x, init="kmeans")
    with pytest.raises(ValueError, match="exceeds the 10 examples"):
        fit_em(GaussianMixture(11, 2).double(), x)
    with pytest.raises(ValueError, match="weight_concentration must be >= 1"):
        fit_em(model, x, prior=GaussianMixturePrior(weight_concentration=0.5))
    with pytest.raises(ValueError, match="prior mean must have shape"):
        fit_em(model, x, prior=GaussianMixturePrior(mean=torch.zeros(3)))


def test_dtype_option_computes_in_float64_for_a_float32_model(monkeypatch):
    import probgen.models.mixture.em as em

    seen = []
    features = em._features
    monkeypatch.setattr(em, "_features", lambda z, full: seen.append(z.dtype) or features(z, full))
    x, _ = simulate(num_examples=400)
    model = GaussianMixture(3, 2)  # float32 parameters
    result = fit_em(model, x, num_iters=5, seed=0, dtype=torch.float64)
    assert seen == [torch.float64] and model.dtype == torch.float32
    assert result.log_likelihood_history[-1] == pytest.approx(
        float(model.double().log_prob(x).detach().mean()), abs=1e-6)  # float32-rounded params
