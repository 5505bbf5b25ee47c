"""DiffusionPrior (a Pyro distribution whose log_prob is a bound) and the "diffusion" density
family: labels, Pyro programs, estimators and a trained model's bound ordering."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

import probgen
from probgen.diffusion import CosineSchedule, GaussianMixtureDenoiser, vlb
from probgen.distributions.diffusion import DiffusionPrior
from probgen.models.diffusion import DiffusionDensity, evaluate_ode, evaluate_vlb
from probgen.models.registry import get_model_class
from probgen.nn.denoiser import MLPDenoiser

DT = torch.float64


def small_model(**kwargs):
    return DiffusionDensity(features=2, hidden_features=(16, 16), time_features=8, **kwargs)


# --- the distribution ------------------------------------------------------------------------
def test_prior_is_flagged_as_a_bound_and_has_pyro_shapes():
    torch.manual_seed(0)
    prior = DiffusionPrior(MLPDenoiser(3, (16,)), CosineSchedule(), features=3)
    assert prior.log_prob_is_bound is True and not prior.has_rsample
    assert prior.event_shape == (3,) and prior.batch_shape == ()
    wide = prior.expand((4,))
    assert wide.batch_shape == (4,) and wide.sample((2,)).shape == (2, 4, 3)
    assert wide.log_prob(torch.randn(5, 4, 3)).shape == (5, 4)
    with pytest.raises(ValueError, match="features"):
        prior.log_prob(torch.randn(2, 5))


def test_prior_log_prob_is_the_vlb_and_differentiable():
    schedule = CosineSchedule()
    denoiser = MLPDenoiser(2, (16,))
    prior = DiffusionPrior(denoiser, schedule, features=2, num_steps=50, num_samples=3)
    value = torch.randn(6, 2, requires_grad=True)
    torch.manual_seed(1)
    got = prior.log_prob(value)
    torch.manual_seed(1)
    expected = vlb(denoiser, schedule, value, num_steps=50, num_samples=3)
    torch.testing.assert_close(got, expected)
    got.sum().backward()
    assert value.grad is not None and torch.isfinite(value.grad).all()
    assert all(p.grad is not None for p in denoiser.parameters() if p.requires_grad)


def test_user_program_with_a_diffusion_prior_trains_with_trace_elbo():
    """A user-written Pyro program: z ~ DiffusionPrior, x ~ N(z, 0.1); guide q(z|x) amortized."""
    torch.manual_seed(2)
    denoiser = MLPDenoiser(2, (16,))
    schedule = CosineSchedule()
    x = torch.randn(32, 2)
    loc_net = torch.nn.Linear(2, 2)

    def model(x):
        pyro.module("denoiser", denoiser)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", DiffusionPrior(denoiser, schedule, features=2))
            pyro.sample("x", dist.Normal(z, 0.1).to_event(1), obs=x)

    def guide(x):
        pyro.module("loc", loc_net)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc_net(x), 0.1).to_event(1))

    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(x) for _ in range(5)]
    assert all(math.isfinite(v) for v in losses)
    assert all(p.grad is not None for p in denoiser.parameters())


# --- the family --------------------------------------------------------------------------------
def test_registered_and_rebuilt_from_config():
    torch.manual_seed(3)
    model = small_model(schedule="linear", num_steps=100, shift=[1.0, 2.0], scale=3.0)
    assert get_model_class("diffusion") is DiffusionDensity
    clone = DiffusionDensity(**model.config)
    clone.load_state_dict(model.state_dict())
    x = torch.randn(5, 2)
    torch.manual_seed(4)
    a = model.vlb(x)
    torch.manual_seed(4)
    torch.testing.assert_close(clone.vlb(x), a)


def test_bad_configuration_and_data_errors():
    with pytest.raises(ValueError, match="loss"):
        small_model(loss="mse")
    with pytest.raises(ValueError, match="scale"):
        small_model(scale=-1.0)
    with pytest.raises(ValueError, match="schedule"):
        small_model(schedule="sqrt")
    with pytest.raises(ValueError, match="shape"):
        evaluate_vlb(small_model(), (torch.zeros(3, 5),))
    with pytest.raises(ValueError, match="NaN"):
        evaluate_vlb(small_model(), (torch.full((3, 2), float("nan")),))


def test_data_scaling_is_a_change_of_variables():
    """log p(x) under shift/scale = log p_std((x - shift)/scale) - d log scale, exactly."""
    torch.manual_seed(5)
    base = small_model()
    scaled = small_model(shift=3.0, scale=2.0)
    scaled.load_state_dict(base.state_dict(), strict=False)
    scaled.shift.fill_(3.0), scaled.scale.fill_(2.0)
    x = torch.randn(7, 2)
    torch.manual_seed(6)
    expected = base.vlb(x)
    torch.manual_seed(6)
    torch.testing.assert_close(scaled.vlb(3.0 + 2.0 * x), expected - 2 * math.log(2.0))


def test_estimator_labels_and_evaluate_auto():
    torch.manual_seed(7)
    model = small_model()
    x = torch.randn(2, 2)
    ll = evaluate_vlb(model, (x,), num_samples=4)
    assert ll.kind == "lower_bound" and ll.estimator == "vlb"
    assert ll.settings["num_steps"] == "continuous" and ll.data_space == "continuous"
    exact = evaluate_ode(model, (x,), atol=1e-2, rtol=1e-2)
    assert exact.kind == "exact" and exact.estimator == "prob_flow_ode"
    assert exact.settings == {"atol": 1e-2, "rtol": 1e-2, "trace": "exact"}
    hutchinson = evaluate_ode(model, (x,), exact=False, atol=1e-2, rtol=1e-2)
    assert hutchinson.kind == "estimate" and hutchinson.settings["trace"] == "hutchinson"
    auto = probgen.evaluate(model, x, k=4)
    assert auto.kind == "lower_bound" and auto.estimator == "vlb"
    dequantized = small_model(dequantized=True)
    assert dequantized.data_space == "dequantized" and small_model().data_space == "continuous"
    assert DiffusionDensity(**dequantized.config).data_space == "dequantized"
    with pytest.raises(AttributeError):  # declared once, from the config
        dequantized.data_space = "continuous"


def test_ode_log_prob_of_model_with_optimal_denoiser_matches_data_density():
    """The family's ODE path (scaling, α_0 Jacobian, N(0, I) base) with the optimal denoiser
    reproduces a Gaussian mixture's log-density to 1e-3 (λ_max = 10: smoothing e^-10)."""
    torch.manual_seed(8)
    model = DiffusionDensity(features=2, hidden_features=(8,), logsnr_min=-20.0,
                             logsnr_max=10.0, shift=1.0, scale=2.0).double()
    weights = torch.tensor([0.4, 0.6], dtype=DT)
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.5]], dtype=DT)
    covs = torch.stack([0.3 * torch.eye(2, dtype=DT), torch.tensor([[0.4, 0.1], [0.1, 0.2]],
                                                                   dtype=DT)])
    model.denoiser = GaussianMixtureDenoiser(weights, means, covs, model.schedule)
    data = dist.MixtureSameFamily(dist.Categorical(weights), dist.MultivariateNormal(means, covs))
    x_std = data.sample((8,))
    x = 1.0 + 2.0 * x_std
    ll = evaluate_ode(model, (x,), atol=1e-6, rtol=1e-6)
    # The model's exact density: the data smoothed by the decoder noise e^{-λ_0/2} = e^{-5}.
    alpha_0 = model.schedule.alpha_sigma(torch.zeros((), dtype=DT))[0]
    smoothed = model.denoiser.marginal_log_prob(alpha_0 * x_std, torch.zeros((), dtype=DT))
    expected = smoothed + 2 * torch.log(alpha_0) - 2 * math.log(2.0)
    assert float((ll.per_example - expected).abs().max()) < 1e-3
    unsmoothed = data.log_prob(x_std) - 2 * math.log(2.0)
    assert float((ll.per_example - unsmoothed).abs().max()) < 1e-2


def test_trained_model_bound_ordering():
    """A small trained model on 1-D Gaussian data: VLB_T=20 < VLB_T=200 < VLB_∞ <= log p."""
    torch.manual_seed(9)
    data = dist.Normal(torch.tensor([1.0], dtype=DT), 0.5)
    x_train, x_test = data.sample((512,)), data.sample((100,))
    model = DiffusionDensity(features=1, hidden_features=(16, 16), time_features=8,
                             logsnr_max=8.0).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        optimizer.zero_grad()
        (-model.vlb(x_train[torch.randint(0, 512, (128,))]).mean()).backward()
        optimizer.step()
    exact = data.log_prob(x_test).sum(-1)
    gaps = {}
    for steps in (20, 200, None):
        torch.manual_seed(10)
        values = evaluate_vlb(model, (x_test,), num_samples=32, num_steps=steps).per_example
        gaps[steps] = float((values - exact).mean())
        stderr = float((values - exact).std() / math.sqrt(len(values)))
        assert gaps[steps] <= 3 * stderr, (steps, gaps[steps], stderr)
    assert gaps[20] < gaps[200] < gaps[None] + 0.05
    assert gaps[None] > -1.0, f"the trained bound is {gaps[None]:.2f} nats below log p(x)"


def test_fit_with_clipped_adam_and_simple_loss():
    """probgen.fit trains the family with either objective and a pyro.optim ClippedAdam."""
    torch.manual_seed(11)
    x = torch.randn(64, 2)
    for loss in ("vlb", "simple"):
        pyro.clear_param_store()
        model = small_model(loss=loss)
        before = [p.detach().clone() for p in model.parameters()]
        result = probgen.fit(model, x, num_steps=4, batch_size=32, seed=0, progress=False,
                             optim=pyro.optim.ClippedAdam({"lr": 1e-3, "clip_norm": 10.0}))
        assert len(result.losses) == 4 and all(math.isfinite(v) for v in result.losses)
        assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
        ll = probgen.evaluate(model, x, estimator="vlb", num_samples=2, seed=0)
        assert ll.kind == "lower_bound"  # the "simple" model is still scored by its VLB
        samples = model.sample(5, sampler="ddim", num_steps=5)
        assert samples.shape == (5, 2) and torch.isfinite(samples).all()


def test_demo_entry_smoke(tmp_path):
    from probgen.demo.diffusion import demo_entries
    from probgen.demo.run import DATASETS

    (entry,) = demo_entries(smoke=True)
    assert entry.dataset == "iris"
    ll = entry.run(DATASETS["iris"](True), str(tmp_path))
    assert ll.kind == "lower_bound" and ll.num_dims == 4 and math.isfinite(ll.mean)
