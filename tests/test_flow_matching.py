"""FlowMatching: the ODE log-likelihood against closed forms (Gaussian data, the optimal
velocity), exact vs Hutchinson divergence, a trained model's density, couplings and labels."""

import itertools
import math

import pyro
import pytest
import torch

import probgen
from probgen.data.transforms import logit_transform
from probgen.guides.dequantizer import VariationalDequantizer
from probgen.models.flow_matching import (
    FlowMatching,
    GaussianVelocity,
    cfm_loss,
    evaluate_ode,
    ot_coupling,
)
from probgen.models.registry import get_model_class

DT = torch.float64
MEAN = torch.tensor([1.0, -0.5], dtype=DT)
COV = torch.tensor([[1.0, 0.7], [0.7, 0.9]], dtype=DT)


def gaussian_model(mean, cov, **kwargs):
    """A model whose velocity is the optimal one for N(mean, cov) in standardized units."""
    model = FlowMatching(len(mean), hidden_features=(8,), **kwargs).double()
    model.velocity = GaussianVelocity(mean, cov)
    return model


def test_registered_and_rebuilt_from_config():
    torch.manual_seed(0)
    model = FlowMatching(2, hidden_features=(8, 8), coupling="ot", shift=[1.0, 2.0], scale=3.0)
    assert get_model_class("flow_matching") is FlowMatching
    clone = FlowMatching(**model.config)
    clone.load_state_dict(model.state_dict())
    x = torch.randn(5, 2)
    torch.testing.assert_close(clone.log_prob_ode(x), model.log_prob_ode(x))


def test_bad_configuration_and_data_errors():
    with pytest.raises(ValueError, match="coupling"):
        FlowMatching(2, coupling="sinkhorn")
    with pytest.raises(ValueError, match="scale"):
        FlowMatching(2, scale=-1.0)
    with pytest.raises(ValueError, match="atol"):
        FlowMatching(2, atol=0.0)
    model = FlowMatching(2, hidden_features=(8,))
    with pytest.raises(ValueError, match="shape"):
        evaluate_ode(model, (torch.zeros(3, 5),))
    with pytest.raises(ValueError, match="NaN"):
        probgen.evaluate(model, torch.full((3, 2), float("nan")))
    with pytest.raises(ValueError, match="noise"):
        model.validate_batch(torch.zeros(3, 2), torch.zeros(4, 2))


@pytest.mark.parametrize("dims", [1, 2, 5])
def test_optimal_velocity_gives_the_gaussian_log_density(dims):
    """The closed-form velocity of x_1 ~ N(μ, Σ), through the family's ODE path (scaling, the
    N(0, I) base), reproduces log N(x; μ, Σ) to 1e-3 nats (here to ~1e-7)."""
    generator = torch.Generator().manual_seed(dims)
    mean = torch.randn(dims, generator=generator, dtype=DT)
    factor = torch.randn(dims, dims, generator=generator, dtype=DT)
    cov = factor @ factor.T / dims + 0.2 * torch.eye(dims, dtype=DT)
    shift, scale = torch.linspace(-1, 1, dims, dtype=DT), torch.linspace(0.5, 2, dims, dtype=DT)
    model = gaussian_model(mean, cov, shift=shift.tolist(), scale=scale.tolist())
    x_std = torch.distributions.MultivariateNormal(mean, cov).sample((32,))
    x = shift + scale * x_std
    ll = evaluate_ode(model, (x,), atol=1e-8, rtol=1e-8)
    data = torch.distributions.MultivariateNormal(shift + scale * mean,
                                                  cov * scale[:, None] * scale[None, :])
    gap = float((ll.per_example - data.log_prob(x)).abs().max())
    assert gap < 1e-3, gap
    assert ll.kind == "exact" and ll.settings["trace"] == "exact"
    assert ll.settings["atol"] == 1e-8 and ll.settings["rtol"] == 1e-8 and "solver" in ll.settings


def test_unit_interval_domain_is_a_logit_change_of_variables():
    """domain="unit_interval": log p(x) = log p_flow(logit(α + (1-2α) x)) + log |det|."""
    model = gaussian_model(MEAN, COV, domain="unit_interval", logit_alpha=0.05, shift=0.5,
                           scale=2.0)
    x = torch.rand(16, 2, dtype=DT, generator=torch.Generator().manual_seed(11))
    z, log_det = logit_transform(x, 0.05)
    flow = torch.distributions.MultivariateNormal(0.5 + 2.0 * MEAN, 4.0 * COV)
    ll = evaluate_ode(model, (x,), atol=1e-8, rtol=1e-8)
    assert float((ll.per_example - flow.log_prob(z) - log_det).abs().max()) < 1e-3
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate_ode(model, (x + 1,))
    samples = model.sample(5)
    assert ((samples >= 0) & (samples <= 1)).all()


def test_optimal_velocity_sends_noise_to_the_gaussian():
    torch.manual_seed(1)
    model = gaussian_model(MEAN, COV)
    samples = model.sample(4000)
    assert torch.allclose(samples.mean(0), MEAN, atol=0.1)
    assert torch.allclose(torch.cov(samples.T), COV, atol=0.1)


def test_the_optimal_velocity_minimizes_the_flow_matching_loss():
    """u_t = E[x_1 - x_0 | x_t]: the closed form beats any perturbation of it on the CFM loss."""
    torch.manual_seed(2)
    data = torch.distributions.MultivariateNormal(MEAN, COV).sample((200000,))
    optimal = GaussianVelocity(MEAN, COV)
    torch.manual_seed(3)
    best = float(cfm_loss(optimal, data).mean())
    for offset in (0.1, -0.1):
        torch.manual_seed(3)  # the same (t, x_0) draws
        perturbed = float(cfm_loss(lambda x, t, o=offset: optimal(x, t) + o, data).mean())
        assert perturbed - best == pytest.approx(2 * offset**2, rel=0.1)


def test_exact_and_hutchinson_agree_within_monte_carlo_error():
    generator = torch.Generator().manual_seed(4)
    dims = 6
    factor = torch.randn(dims, dims, generator=generator, dtype=DT)
    model = gaussian_model(torch.zeros(dims, dtype=DT), factor @ factor.T / dims + 0.3 * torch.eye(
        dims, dtype=DT))
    x = torch.randn(64, dims, generator=generator, dtype=DT)
    exact = evaluate_ode(model, (x,))
    estimate = evaluate_ode(model, (x,), exact=False, num_probes=8, seed=0)
    assert estimate.kind == "estimate" and estimate.settings["trace"] == "hutchinson"
    assert estimate.settings["num_probes"] == 8 and estimate.estimator_stderr > 0
    gap = estimate.mean - exact.mean
    assert abs(gap) < 4 * estimate.estimator_stderr, (gap, estimate.estimator_stderr)
    # each example's probe error is of the reported size: the z-scores have unit spread
    assert 0.5 < float((estimate.per_example - exact.per_example).std()) / (
        estimate.estimator_stderr * math.sqrt(len(x))) < 2.0
    auto = probgen.evaluate(model, x)  # d = 6 ≤ 16: the exact divergence by default
    assert auto.estimator == "ode" and auto.kind == "exact"


@pytest.fixture(scope="module")
def trained():
    """A small model trained by probgen.fit on 2-D Gaussian data (about 30 s on a shared core)."""
    pyro.clear_param_store()
    torch.manual_seed(5)
    data = torch.distributions.MultivariateNormal(MEAN.float(), COV.float())
    x, test = data.sample((4096,)), data.sample((1000,))
    model = FlowMatching(2, hidden_features=(64, 64), time_features=16,
                         shift=x.mean(0).tolist(), scale=x.std(0).tolist())
    steps = 1000
    result = probgen.fit(model, x, num_steps=steps, batch_size=256, seed=0, progress=False,
                         validation=test[:200], validate_every=500,
                         optim=pyro.optim.ClippedAdam({"lr": 3e-3, "clip_norm": 10.0,
                                                       "lrd": 0.01 ** (1 / steps)}))
    return model, data, test, result


def test_trained_model_log_likelihood_is_within_005_nats(trained):
    model, data, test, result = trained
    assert [step for step, _ in result.validation] == [500, 1000]  # exact ODE NLL held out
    ll = probgen.evaluate(model, test, atol=1e-6, rtol=1e-6)
    gap = ll.mean - float(data.log_prob(test).mean())
    assert ll.kind == "exact" and abs(gap) < 0.05, gap


def test_trained_model_integrates_to_one_on_a_grid(trained):
    model = trained[0]
    step = 0.25  # the trapezoid rule on a smooth, fast-decaying density: error far below 1%
    axis = torch.arange(-6, 6 + step / 2, step)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2) + MEAN.float()
    ll = evaluate_ode(model, (grid,))
    mass = float(ll.per_example.exp().sum()) * step**2
    assert abs(mass - 1) < 0.01, mass


def test_ot_coupling_is_the_optimal_permutation():
    generator = torch.Generator().manual_seed(6)
    noise, data = torch.randn(6, 2, generator=generator), torch.randn(6, 2, generator=generator)
    coupled = ot_coupling(noise, data)
    assert sorted(coupled.tolist()) == sorted(noise.tolist())
    best = min(float((noise[list(p)] - data).square().sum())
               for p in itertools.permutations(range(6)))
    assert float((coupled - data).square().sum()) == pytest.approx(best)


def test_fit_with_ot_coupling_and_a_reflow_step():
    torch.manual_seed(7)
    x = torch.randn(128, 2) * 0.5 + 1.0
    teacher = FlowMatching(2, hidden_features=(16, 16), time_features=8, coupling="ot")
    result = probgen.fit(teacher, x, num_steps=20, batch_size=64, seed=0, progress=False)
    assert all(math.isfinite(v) for v in result.losses)
    samples, noise = teacher.reflow_pairs(64)
    assert torch.allclose(teacher.sample(64, noise=noise), samples, atol=1e-4)
    student = FlowMatching(2, hidden_features=(16, 16), time_features=8)
    before = float(student.loss(samples, noise).mean().detach())
    probgen.fit(student, (samples, noise), num_steps=30, batch_size=64, seed=0, progress=False,
                optim=1e-2)
    assert float(student.loss(samples, noise).mean().detach()) < before  # regresses the pairs
    assert probgen.evaluate(student, samples[:4]).num_examples == 4


def test_program_in_eval_mode_observes_the_ode_density():
    """The eval-mode program's log p(x) is the ODE's: the generic ELBO equals the estimator."""
    torch.manual_seed(8)
    model = gaussian_model(MEAN, COV).eval()
    x = torch.randn(5, 2, dtype=DT)
    elbo = probgen.evaluate(model, x, estimator="elbo", seed=0)
    torch.testing.assert_close(elbo.per_example, evaluate_ode(model, (x,)).per_example)
    model.train()
    trace = pyro.poutine.trace(model.model).get_trace(x)
    assert "cfm_loss" in trace.nodes and "x" not in trace.nodes


@pytest.mark.parametrize("variational", [False, True])
def test_dequantized_digits_like_data(variational):
    """Discrete data: the dequantization bound with the ODE density, uniform or variational."""
    torch.manual_seed(9)
    levels = 5
    x = torch.randint(0, levels, (32, 3)).float()
    model = FlowMatching(3, hidden_features=(16,), time_features=8, shift=0.5, scale=0.3,
                         dequantized=True)
    probgen.fit(model, x, num_steps=5, batch_size=32, seed=0, progress=False,
                transform=lambda batch: (batch + torch.rand_like(batch)) / levels)
    dequantizer = VariationalDequantizer(3, levels, transforms=1, hidden=(8,)) \
        if variational else None
    ll = probgen.evaluate(model, x.long(), num_levels=levels, dequantizer=dequantizer, seed=0)
    assert ll.kind == "lower_bound" and ll.data_space == "dequantized" and ll.estimator == "ode"
    assert ll.settings["dequantizer"] == ("variational_dequantization" if variational
                                          else "uniform_dequantization")
    assert ll.settings["trace"] == "exact" and math.isfinite(ll.mean)
    hutchinson = evaluate_ode(model, (x,), num_levels=levels, exact=False, seed=0)
    assert hutchinson.kind == "estimate"
    continuous = probgen.evaluate(model, (x + 0.5) / levels)
    assert continuous.data_space == "dequantized"


def test_demo_entry_smoke(tmp_path):
    from probgen.demo.flow_matching import demo_entries
    from probgen.demo.run import DATASETS

    (entry,) = demo_entries(smoke=True)
    assert entry.dataset == "iris"
    ll = entry.run(DATASETS["iris"](True), str(tmp_path))
    assert ll.kind == "exact" and ll.estimator == "ode" and ll.num_dims == 4
    assert math.isfinite(ll.mean)
