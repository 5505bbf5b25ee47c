"""Ground truth for probgen.diffusion: schedules, VLBs, samplers and the probability-flow ODE,
pinned against Gaussian and Gaussian-mixture data where the optimal denoiser and the model's
exact density are known in closed form."""

import math

import pytest
import torch

from probgen.diffusion import (
    CosineSchedule,
    GaussianMixtureDenoiser,
    LearnedSchedule,
    LinearSchedule,
    ancestral_sample,
    ddim_sample,
    gaussian_ancestral_marginal,
    ode_encode,
    ode_log_prob,
    ode_sample,
    vlb,
)

DT = torch.float64


def gaussian(mean, cov, schedule):
    mean = torch.as_tensor(mean, dtype=DT)
    cov = torch.as_tensor(cov, dtype=DT)
    denoiser = GaussianMixtureDenoiser(torch.ones(1, dtype=DT), mean[None], cov[None], schedule)
    return torch.distributions.MultivariateNormal(mean, cov), denoiser


def mixture(schedule):
    weights = torch.tensor([0.3, 0.7], dtype=DT)
    means = torch.tensor([[-1.5, 0.5], [1.0, -0.5]], dtype=DT)
    covs = torch.stack([torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=DT),
                        torch.tensor([[0.5, -0.2], [-0.2, 0.4]], dtype=DT)])
    data = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(weights),
        torch.distributions.MultivariateNormal(means, covs))
    return data, GaussianMixtureDenoiser(weights, means, covs, schedule)


def discrete_model_density(mean, cov, schedule, num_steps):
    return gaussian_ancestral_marginal(mean, cov, schedule, num_steps)


def mean_and_stderr(values):
    values = values.detach()
    return float(values.mean()), float(values.std() / math.sqrt(values.numel()))


# --- schedules ------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [LinearSchedule, CosineSchedule, LearnedSchedule])
def test_schedule_contract(cls):
    torch.manual_seed(0)
    schedule = cls(logsnr_min=-8.0, logsnr_max=6.0).to(DT)
    t = torch.linspace(0, 1, 101, dtype=DT)
    logsnr = schedule.logsnr(t).detach()
    assert abs(float(logsnr[0]) - 6.0) < 1e-6 and abs(float(logsnr[-1]) + 8.0) < 1e-6
    assert (logsnr.diff() < 0).all(), "log-SNR must decrease in t"
    alpha, sigma = schedule.alpha_sigma(t)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(t))
    torch.testing.assert_close(schedule.time_of(logsnr), t, atol=1e-7, rtol=0)
    inner = torch.tensor([0.2, 0.5, 0.8], dtype=DT)
    _, derivative = schedule.logsnr_and_derivative(inner)
    h = 1e-6
    finite = (schedule.logsnr(inner + h) - schedule.logsnr(inner - h)) / (2 * h)
    torch.testing.assert_close(derivative.detach(), finite.detach(), rtol=1e-5, atol=1e-5)


def test_bad_schedule_range():
    with pytest.raises(ValueError, match="logsnr_min < logsnr_max"):
        CosineSchedule(logsnr_min=5.0, logsnr_max=1.0)


# --- the VLB against exact log-densities -----------------------------------------------------
@pytest.mark.parametrize("num_steps", [20, 200])
def test_discrete_vlb_bounds_the_model_density(num_steps):
    """VLB_T(x) <= log p_T(x), with p_T the T-step model's exact (linear-Gaussian) density."""
    torch.manual_seed(0)
    schedule = CosineSchedule(-10.0, 8.0)
    mean, cov = torch.tensor([0.5, -1.0], dtype=DT), torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=DT)
    data, denoiser = gaussian(mean, cov, schedule)
    model = discrete_model_density(mean, cov, schedule, num_steps)
    x = data.sample((64,))
    bound = vlb(denoiser, schedule, x, num_steps=num_steps, num_samples=300)
    gap, stderr = mean_and_stderr(bound - model.log_prob(x))
    assert gap <= 3 * stderr, f"VLB exceeds the exact log p_T by {gap:.4f} (stderr {stderr:.4f})"
    # The gap is the KL between q(z|x) and the model posterior: it is real and shrinks with T.
    if num_steps == 200:
        assert gap > -1.0


@pytest.mark.parametrize("case", ["gauss1d", "gauss2d", "mixture2d"])
def test_vlb_approaches_exact_as_steps_grow(case):
    """Mean VLB over data: T=50 < T=500 < continuous <= E log p(x), continuous within 0.05 nats."""
    torch.manual_seed(1)
    schedule = CosineSchedule(-12.0, 10.0)
    if case == "gauss1d":
        data, denoiser = gaussian([0.7], [[0.6]], schedule)
    elif case == "gauss2d":
        data, denoiser = gaussian([0.5, -1.0], [[1.0, 0.3], [0.3, 0.5]], schedule)
    else:
        data, denoiser = mixture(schedule)
    x = data.sample((100,))
    exact = data.log_prob(x)
    means = {}
    for steps in (50, 500, None):
        gap, stderr = mean_and_stderr(
            vlb(denoiser, schedule, x, num_steps=steps, num_samples=200) - exact)
        means[steps] = gap
        assert gap <= 3 * stderr + 1e-3, f"T={steps}: VLB above exact by {gap} ± {stderr}"
    assert means[50] < means[500] < means[None] + 3 * stderr
    assert abs(means[None]) < 0.05 + 4 * stderr


def test_vlb_time_and_logsnr_sampling_agree():
    """The importance-sampled (uniform log-SNR) and plain (uniform t) estimators agree."""
    torch.manual_seed(2)
    schedule = LinearSchedule(-10.0, 8.0)
    data, denoiser = gaussian([0.2], [[0.8]], schedule)
    x = data.sample((100,))
    for steps in (100, None):
        a = vlb(denoiser, schedule, x, num_steps=steps, num_samples=200, sampling="logsnr")
        b = vlb(denoiser, schedule, x, num_steps=steps, num_samples=200, sampling="time")
        diff, stderr = mean_and_stderr(a - b)
        assert abs(diff) < 4 * stderr + 1e-3, (steps, diff, stderr)


# --- probability-flow ODE -------------------------------------------------------------------
@pytest.mark.parametrize("case", ["gauss1d", "mixture2d"])
def test_ode_log_prob_matches_exact(case):
    """With the optimal score and q(z_1) as the base, the ODE density is exactly q(z_0)."""
    torch.manual_seed(3)
    schedule = CosineSchedule(-10.0, 10.0)
    data, denoiser = gaussian([0.7], [[0.6]], schedule) if case == "gauss1d" else mixture(schedule)
    z_0 = data.sample((6,)) * schedule.alpha_sigma(torch.zeros((), dtype=DT))[0]
    base = lambda z: denoiser.marginal_log_prob(z, torch.ones((), dtype=DT))  # noqa: E731
    log_density = ode_log_prob(denoiser, schedule, z_0, exact=True, atol=1e-6, rtol=1e-6,
                               prior_log_prob=base)
    expected = denoiser.marginal_log_prob(z_0, torch.zeros((), dtype=DT))
    assert float((log_density - expected).abs().max()) < 1e-3


def test_hutchinson_is_unbiased_for_the_exact_trace():
    torch.manual_seed(4)
    schedule = CosineSchedule(-10.0, 6.0)
    data, denoiser = mixture(schedule)
    z_0 = data.sample((2,)).repeat(32, 1)  # 32 probes per point
    exact = ode_log_prob(denoiser, schedule, z_0[:2], exact=True, atol=1e-5, rtol=1e-5)
    estimate = ode_log_prob(denoiser, schedule, z_0, exact=False, atol=1e-5, rtol=1e-5)
    estimate = estimate.reshape(32, 2)
    stderr = estimate.std(0) / 32**0.5
    assert ((estimate.mean(0) - exact).abs() < 4 * stderr + 1e-3).all()
    assert (estimate.std(0) > 0).all(), "Hutchinson probes should vary"


def test_ode_encode_decode_round_trip():
    torch.manual_seed(5)
    schedule = CosineSchedule(-10.0, 8.0)
    _, denoiser = mixture(schedule)
    noise = torch.randn(8, 2, dtype=DT)
    x = ode_sample(denoiser, schedule, (8, 2), noise=noise, atol=1e-7, rtol=1e-7)
    a0 = schedule.alpha_sigma(torch.zeros((), dtype=DT))[0]
    back = ode_encode(denoiser, schedule, x * a0, atol=1e-7, rtol=1e-7)
    torch.testing.assert_close(back, noise, atol=1e-3, rtol=0)


# --- samplers --------------------------------------------------------------------------------
def test_ddim_and_ancestral_match_the_data_moments():
    """DDIM (η=0) and ancestral sampling (60 steps) reproduce the data's mean and covariance."""
    torch.manual_seed(6)
    schedule = CosineSchedule(-10.0, 8.0)
    data, denoiser = mixture(schedule)
    n = 3000
    draws = {
        "ancestral": ancestral_sample(denoiser, schedule, (n, 2), num_steps=60, dtype=DT),
        "ddim": ddim_sample(denoiser, schedule, (n, 2), num_steps=60, dtype=DT),
    }
    weights = data.mixture_distribution.probs
    means = data.component_distribution.mean
    second = (weights[:, None, None] * (data.component_distribution.covariance_matrix
                                        + means[:, :, None] * means[:, None, :])).sum(0)
    true_mean = data.mean
    true_cov = second - true_mean[:, None] * true_mean[None, :]
    stderr = (true_cov.diagonal() / n).sqrt()
    for name, x in draws.items():
        assert ((x.mean(0) - true_mean).abs() < 4 * stderr + 0.01).all(), name
        # sampling error of a covariance entry is about sqrt(2/n) * scale: 4 of them + bias 0.02
        assert ((x.T.cov() - true_cov).abs() < 4 * (2 / n) ** 0.5 + 0.02).all(), name
    gap = draws["ddim"].mean(0) - draws["ancestral"].mean(0)
    assert (gap.abs() < 4 * 2**0.5 * stderr + 0.01).all()


def test_sampler_argument_errors():
    schedule = CosineSchedule()
    _, denoiser = gaussian([0.0], [[1.0]], schedule)
    with pytest.raises(ValueError, match="num_steps"):
        ddim_sample(denoiser, schedule, (2, 1), num_steps=0)
    with pytest.raises(ValueError, match="eta"):
        ddim_sample(denoiser, schedule, (2, 1), eta=2.0)
    with pytest.raises(ValueError, match="sampling"):
        vlb(denoiser, schedule, torch.zeros(2, 1, dtype=DT), sampling="bogus")
