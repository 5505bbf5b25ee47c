"""probgen.fit(gmm, x, method="em"): monotone, equal to scikit-learn's EM step, stationary at
convergence, MAP, collapse, the same optimum as SVI, resume, callbacks."""

from __future__ import annotations

import warnings

import numpy as np
import pyro
import pytest
import torch
from scipy import stats
from scipy.optimize import linear_sum_assignment

import probgen
from probgen.infer import FitState
from probgen.models.mixture import (
    ComponentCollapseWarning,
    GaussianMixture,
    GaussianMixturePrior,
    initial_parameters,
    log_prior,
)

COVARIANCES = ["full", "tied", "diag", "spherical"]


def em(model, x, **options):
    """EM through the one trainer."""
    return probgen.fit(model, x, method="em", progress=False, **options)



def simulate(num_examples: int = 1500, seed: int = 0, separation: float = 4.0):
    """Three 2-D components with known weights, means and covariances (float64)."""
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    locs = separation * torch.tensor([[0.0, 0.0], [1.5, 1.0], [-1.0, 1.5]], dtype=torch.float64)
    covariances = torch.tensor([[[1.0, 0.5], [0.5, 1.0]], [[0.6, -0.2], [-0.2, 0.4]],
                                [[0.3, 0.0], [0.0, 1.2]]], dtype=torch.float64)
    truth = GaussianMixture(3, 2).double().set_parameters(weights, locs, covariances)
    torch.manual_seed(seed)
    return truth.sample(num_examples), truth


def test_em_losses_are_exact_and_monotone_without_regularization():
    x, _ = simulate(separation=1.5)  # overlapping: EM moves for many iterations
    n = len(x)
    for covariance in COVARIANCES:
        model = GaussianMixture(3, 2, covariance, reg_covar=0.0).double()
        result = em(model, x, num_steps=60, tol=0.0, init="random_points", seed=1)
        losses = np.array(result.losses)
        assert result.method == "em" and len(losses) == 60 and result.num_steps == 60
        assert not result.converged
        assert np.diff(losses).max() <= 1e-12 * np.abs(losses).max(), covariance
        assert losses[-1] < losses[0] - 0.05 * n  # it actually climbed
        # The last loss is the exact negative log-likelihood of the returned parameters.
        assert losses[-1] == pytest.approx(-float(model.log_prob(x).detach().sum()), abs=1e-10 * n)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_map_objective_never_decreases(covariance):
    x, _ = simulate(num_examples=300, separation=1.5)
    model = GaussianMixture(4, 2, covariance).double()
    prior = GaussianMixturePrior(weight_concentration=2.0, mean_precision=0.5)
    result = em(model, x, num_steps=60, tol=0.0, init="random_points", prior=prior, seed=2)
    losses = np.array(result.losses)
    assert np.diff(losses).max() <= 1e-12 * np.abs(losses).max()
    # The loss is -log p(x | θ) - log p(θ) of the returned parameters.
    resolved = prior.resolve(x, 4, covariance)
    expected = -(model.log_prob(x).sum() + log_prior(model.parameters_dict(), resolved))
    assert losses[-1] == pytest.approx(float(expected.detach()), abs=1e-10 * len(x))


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_one_em_step_equals_sklearn(covariance):
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    x, _ = simulate(num_examples=500, separation=1.5)
    init = initial_parameters(x, 3, covariance=covariance, init="random_points", seed=0)
    cov_key = "covariances" if covariance in ("full", "tied") else "variances"
    model = GaussianMixture(3, 2, covariance, reg_covar=1e-3).double()
    model.set_parameters(init["weights"], init["locs"], init[cov_key])
    em(model, x, num_steps=3, tol=0.0, init="model")
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
    result = em(model, x, num_steps=2000, tol=1e-13, prior=prior, seed=0)
    assert result.converged and result.num_steps < 2000
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
    em(model, x, num_steps=200, seed=0)
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
        result = em(model, x, num_steps=50, seed=0)
        pyro.clear_param_store()
        enumerated = -pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).loss(model.model, model.guide, x)
        assert enumerated / len(x) == pytest.approx(-result.losses[-1] / len(x), abs=1e-10)


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
    with pytest.warns(ComponentCollapseWarning, match="component 0 collapsed") as caught:
        result = em(model, x, num_steps=30, tol=0.0, init="model")
    collapses = [str(w.message) for w in caught if issubclass(w.category, ComponentCollapseWarning)]
    assert len([m for m in collapses if "component 0 collapsed" in m]) == 1  # warned once
    eigenvalues = torch.linalg.eigvalsh(model.covariance_matrix.detach())
    assert (eigenvalues > 0).all()
    if reg_covar > 0:
        assert eigenvalues.min() >= reg_covar * (1 - 1e-6)  # floored at reg_covar
    assert torch.isfinite(model.log_prob(x)).all()
    assert np.isfinite(result.losses).all()


def test_tied_collapse_warns_once_about_the_shared_covariance():
    line = torch.randn(300, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = torch.cat([line, 2 * line], dim=1)  # on a line: every scatter matrix is singular
    model = GaussianMixture(3, 2, "tied", reg_covar=0.0).double()
    with pytest.warns(ComponentCollapseWarning, match="tied covariance") as caught:
        result = em(model, x, num_steps=10, tol=0.0, seed=0)
    assert len([w for w in caught if issubclass(w.category, ComponentCollapseWarning)]) == 1
    assert result.num_steps == 10 and np.isfinite(result.losses).all()
    assert torch.isfinite(model.log_prob(x)).all()


def test_prior_prevents_collapse_without_warning():
    x = torch.cat([torch.randn(100, 2, dtype=torch.float64),
                   torch.tensor([[6.0, 6.0]], dtype=torch.float64).expand(10, 2)])
    model = GaussianMixture(3, 2, reg_covar=0.0).double()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ComponentCollapseWarning)
        result = em(model, x, num_steps=50, prior=GaussianMixturePrior(), seed=0)
    assert np.isfinite(result.losses).all()
    assert torch.linalg.eigvalsh(model.covariance_matrix.detach()).min() > 1e-3


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_log_prior_matches_scipy(covariance):
    x, _ = simulate(num_examples=200)
    prior = GaussianMixturePrior(weight_concentration=2.5, mean_precision=0.3,
                                 degrees_of_freedom=5.0)
    resolved = prior.resolve(x, 3, covariance)
    model = GaussianMixture(3, 2, covariance).double()
    em(model, x, num_steps=5, seed=0)
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
        results[dtype] = em(model, x.to(dtype), num_steps=20, tol=0.0, init="model")
    per_example = {dtype: np.array(r.losses) / len(x) for dtype, r in results.items()}
    np.testing.assert_allclose(per_example[torch.float32], per_example[torch.float64], atol=1e-4)


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
    result = em(model, x.cuda(), num_steps=20, seed=0)
    assert model.locs.device.type == "cuda"
    cpu_model = GaussianMixture(3, 2).double()
    cpu_result = em(cpu_model, x, num_steps=20, seed=0, init="random_points")
    assert np.isfinite(result.losses[-1]) and np.isfinite(cpu_result.losses[-1])


def test_bad_input_and_options_raise_clear_errors():
    model = GaussianMixture(2, 2).double()
    x = torch.randn(10, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="expects \\(2,\\)"):
        em(model, torch.randn(10, 3, dtype=torch.float64))
    bad = x.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        em(model, bad)
    with pytest.raises(ValueError, match="unknown init"):
        em(model, x, init="kmeans")
    with pytest.raises(ValueError, match="exceeds the 10 examples"):
        em(GaussianMixture(11, 2).double(), x)
    with pytest.raises(ValueError, match="weight_concentration must be >= 1"):
        em(model, x, prior=GaussianMixturePrior(weight_concentration=0.5))
    with pytest.raises(ValueError, match="prior mean must have shape"):
        em(model, x, prior=GaussianMixturePrior(mean=torch.zeros(3)))
    with pytest.raises(TypeError, match="unexpected options \\['num_iters'\\]"):
        em(model, x, num_iters=5)
    with pytest.raises(ValueError, match="batch_size=None"):
        em(model, x, batch_size=5)
    with pytest.raises(TypeError, match="no optim"):
        em(model, x, optim=0.1)


def test_dtype_option_computes_in_float64_for_a_float32_model(monkeypatch):
    import probgen.models.mixture.em as em_module

    seen = []
    features = em_module._features
    monkeypatch.setattr(em_module, "_features",
                        lambda z, full: seen.append(z.dtype) or features(z, full))
    x, _ = simulate(num_examples=400)
    x = x.float().double()  # fit hands a float32 model float32 data
    model = GaussianMixture(3, 2)  # float32 parameters
    result = em(model, x, num_steps=5, seed=0, dtype=torch.float64)
    assert seen == [torch.float64] and model.dtype == torch.float32
    assert -result.losses[-1] / len(x) == pytest.approx(
        float(model.double().log_prob(x).detach().mean()), abs=1e-6)  # float32-rounded params


# --- EM as a method of probgen.fit ------------------------------------------------------------
def test_fit_without_a_method_runs_em():
    x, _ = simulate(num_examples=300)
    default = GaussianMixture(3, 2).double()
    result = probgen.fit(default, x, num_steps=20, tol=0.0, seed=3, progress=False)
    explicit = GaussianMixture(3, 2).double()
    reference = em(explicit, x, num_steps=20, tol=0.0, seed=3)
    assert GaussianMixture.default_method == "em" and result.method == "em"
    assert result.losses == reference.losses  # the same seeded k-means++ start, the same EM
    for a, b in zip(default.parameters(), explicit.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_em_reaches_the_optimum_generic_svi_reaches():
    """The fast path and the generic path (SVI on the enumerated program) find the same fixed
    point from the same start: zero ELBO gradient at EM's solution, and SVI's held-out exact
    log-likelihood equal to EM's (SVI can never beat EM's local maximum on the training set)."""
    x, _ = simulate(num_examples=600, separation=3.0, seed=7)
    train, test = x[:400], x[400:]
    start = initial_parameters(train, 3, init="kmeans++", seed=0)

    def fresh():
        return GaussianMixture(3, 2, reg_covar=0.0).double().set_parameters(
            start["weights"], start["locs"], start["covariances"])

    by_em = fresh()
    assert em(by_em, train, num_steps=2000, tol=1e-13, init="model").converged
    by_em.zero_grad()
    pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(
        by_em.model, by_em.guide, train).backward()  # the generic path's gradient
    for name, parameter in by_em.named_parameters():
        assert parameter.grad.abs().max() < 1e-6, (name, parameter.grad)
    by_svi = fresh()
    result = probgen.fit(by_svi, train, method="svi", num_steps=100, optim=0.05, seed=0,
                         progress=False)
    assert result.method == "svi"
    with torch.no_grad():
        em_train, svi_train = by_em.log_prob(train).mean(), by_svi.log_prob(train).mean()
        em_test, svi_test = by_em.log_prob(test).mean(), by_svi.log_prob(test).mean()
    assert float(svi_train) <= float(em_train) + 1e-9
    assert float(svi_train) == pytest.approx(float(em_train), abs=1e-5)
    assert float(svi_test) == pytest.approx(float(em_test), abs=1e-3)


def test_em_checkpoint_resume_equals_an_uninterrupted_run(tmp_path):
    x, _ = simulate(num_examples=400, separation=1.5)
    prior = GaussianMixturePrior()
    uninterrupted = GaussianMixture(3, 2).double()
    reference = em(uninterrupted, x, num_steps=25, tol=0.0, prior=prior, seed=4)
    path = tmp_path / "em.pt"
    interrupted = GaussianMixture(3, 2).double()
    em(interrupted, x, num_steps=10, tol=0.0, prior=prior, seed=4, checkpoint=path)
    resumed_model = GaussianMixture(3, 2).double()  # a fresh process would start like this
    resumed = em(resumed_model, x, num_steps=25, tol=0.0, prior=prior, seed=4, checkpoint=path,
                 resume=True)
    assert resumed.num_steps == 25 and resumed.losses == reference.losses
    for a, b in zip(resumed_model.parameters(), uninterrupted.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_callbacks_see_fit_state_and_can_stop_em():
    x, _ = simulate(num_examples=300, separation=1.5)
    model = GaussianMixture(3, 2).double()
    states = []

    def callback(state):
        states.append(state)
        return state.step == 4

    result = em(model, x, num_steps=50, tol=0.0, seed=0, callbacks=[callback])
    assert all(isinstance(state, FitState) for state in states)
    assert [state.step for state in states] == [0, 1, 2, 3, 4]
    assert result.stopped_early and result.num_steps == 5 and not result.converged
    assert [state.loss for state in states] == result.losses
    assert states[-1].loss == pytest.approx(-float(model.log_prob(x).detach().sum()), rel=1e-12)


def test_em_validation_is_the_held_out_exact_log_likelihood():
    x, _ = simulate(num_examples=500)
    model = GaussianMixture(3, 2).double()
    result = em(model, x[:400], validation=x[400:], validate_every=5, num_steps=20, tol=0.0,
                seed=0, restore_best=False)
    assert [step for step, _ in result.validation] == [5, 10, 15, 20]
    assert result.validation[-1][1] == pytest.approx(
        -float(model.log_prob(x[400:]).detach().mean()), rel=1e-12)


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical", "tied"])
def test_default_prior_scale_survives_a_constant_feature(covariance):
    """A feature that never varies (a digit's border pixel) used to make the default Ψ₀
    singular: the first EM loss was inf and fit blamed the learning rate."""
    from probgen.models.mixture import GaussianMixture, GaussianMixturePrior

    torch.manual_seed(0)
    x = torch.cat([torch.randn(200, 3, dtype=torch.float64),
                   torch.zeros(200, 1, dtype=torch.float64)], dim=1)
    resolved = GaussianMixturePrior().resolve(x, 2, covariance)
    scale = resolved["scale"]
    diagonal = scale.diagonal() if scale.dim() == 2 else scale.reshape(-1)
    assert (diagonal > 0).all()
    assert torch.allclose(diagonal[:3] if diagonal.numel() > 1 else diagonal,
                          (torch.cov(x.T).diagonal()[:3] / 2 ** 0.5 if diagonal.numel() > 1
                           else diagonal), rtol=1e-6)
    gmm = GaussianMixture(2, 4, covariance).double()
    result = probgen.fit(gmm, x, num_steps=5, prior=GaussianMixturePrior(), seed=0,
                         progress=False)
    assert np.isfinite(result.losses).all()


def reference_em(x, weights, locs, covariances, reg_covar: float, num_steps: int) -> list[float]:
    """EM for a full-covariance mixture written plainly (per-component densities, softmax
    responsibilities, weighted scatter): the log-likelihood after each step."""
    eye = torch.eye(x.shape[1], dtype=x.dtype)
    history = []
    for _ in range(num_steps):
        log_joint = torch.distributions.MultivariateNormal(locs, covariances).log_prob(
            x[:, None]) + weights.log()  # (N, K)
        responsibilities = torch.softmax(log_joint, 1)
        counts = responsibilities.sum(0)
        weights = counts / len(x)
        locs = responsibilities.T @ x / counts[:, None]
        centred = x[:, None] - locs  # (N, K, D)
        covariances = torch.einsum("nk,nkd,nke->kde", responsibilities, centred, centred) \
            / counts[:, None, None] + reg_covar * eye
        log_joint = torch.distributions.MultivariateNormal(locs, covariances).log_prob(
            x[:, None]) + weights.log()
        history.append(float(torch.logsumexp(log_joint, 1).sum()))
    return history


def test_em_trajectory_equals_a_plain_reference_em():
    """Every step's log-likelihood: the moment-form E-step, the (N, F) feature layout and the
    one-product M-step change no number beyond rounding (and match sklearn's final fit)."""
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    x, _ = simulate(num_examples=2000, separation=1.2)
    x = torch.cat([x, x[:, :1] * x[:, 1:] + 0.3 * torch.randn(len(x), 1, dtype=x.dtype)], 1)
    init = initial_parameters(x, 4, covariance="full", init="random_points", seed=3)
    model = GaussianMixture(4, 3, "full", reg_covar=1e-6).double()
    model.set_parameters(init["weights"], init["locs"], init["covariances"])
    result = em(model, x, num_steps=15, tol=0.0, init="model")
    expected = reference_em(x, init["weights"], init["locs"], init["covariances"], 1e-6, 15)
    np.testing.assert_allclose([-loss for loss in result.losses], expected, rtol=1e-10)
    sk = SkGaussianMixture(4, covariance_type="full", tol=0.0, max_iter=15, reg_covar=1e-6,
                           weights_init=init["weights"].numpy(), means_init=init["locs"].numpy(),
                           precisions_init=torch.linalg.inv(init["covariances"]).numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(x.numpy())
    np.testing.assert_allclose(model.parameters_dict()["locs"].detach().numpy(), sk.means_,
                               rtol=1e-8, atol=1e-10)
    sk_total = float(sk.score(x.numpy())) * len(x)
    assert -result.losses[-1] == pytest.approx(sk_total, rel=1e-10)
