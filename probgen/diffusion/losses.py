r"""Diffusion likelihood bounds: the discrete-time DDPM VLB, the continuous-time VDM VLB, and the
ε-prediction "simple" loss.

With z_t = α_t x + σ_t ε, p(z_1) = N(0, I) and the Gaussian decoder p(x | z_0) = N(z_0 / α_0,
(σ_0 / α_0)² I) (Kingma et al., 2021, "Variational Diffusion Models", eqs. 11-17):

    log p(x) >= VLB(x) = E[log p(x | z_0)] - KL(q(z_1 | x) || p(z_1)) - L_T(x),
    L_T(x)   = T/2 E_{i, ε}[expm1(λ_s - λ_t) ||ε - ε̂(z_t, t)||²],  s = (i-1)/T, t = i/T,
    L_∞(x)   = -1/2 E_{t ~ U(0,1), ε}[λ'(t) ||ε - ε̂(z_t, t)||²].

All functions take ``x`` of shape ``(..., d)`` and return per-example values of shape ``(...)``.
A denoiser is any callable ``denoiser(z_t, t) -> ε̂`` with ``z_t`` ``(..., d)``, ``t`` ``(...)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from probgen.diffusion.schedules import NoiseSchedule

__all__ = [
    "Denoiser",
    "prior_kl",
    "reconstruction_log_prob",
    "diffusion_loss",
    "simple_loss",
    "vlb",
    "vlb_terms",
    "sample_times",
]

Denoiser = Callable[[Tensor, Tensor], Tensor]


def sample_times(shape: torch.Size | tuple[int, ...], *, dtype: torch.dtype, device: torch.device,
                 stratified: bool = True) -> Tensor:
    r"""t ~ U(0, 1) for every entry; stratified: t_i = (u + i / n) mod 1 (VDM's low-discrepancy
    sampler: each t_i is still uniform, so per-example estimates stay unbiased)."""
    numel = int(torch.Size(shape).numel())
    if not stratified:
        return torch.rand(shape, dtype=dtype, device=device)
    offset = torch.rand((), dtype=dtype, device=device)
    grid = torch.arange(numel, dtype=dtype, device=device) / numel
    times = torch.remainder(offset + grid, 1.0)
    return times[torch.randperm(numel, device=device)].reshape(shape)


def prior_kl(x: Tensor, schedule: NoiseSchedule) -> Tensor:
    r"""KL(q(z_1 | x) || N(0, I)) = 1/2 Σ_j (σ_1² + α_1² x_j² - 1 - log σ_1²)."""
    _, logsnr_1 = schedule.endpoints(x)
    alpha_sq, sigma_sq = torch.sigmoid(logsnr_1), torch.sigmoid(-logsnr_1)
    d = x.shape[-1]
    constant = d * (sigma_sq - 1 - torch.nn.functional.logsigmoid(-logsnr_1))
    return 0.5 * (alpha_sq * (x**2).sum(-1) + constant)


def reconstruction_log_prob(x: Tensor, schedule: NoiseSchedule) -> Tensor:
    r"""E_{q(z_0|x)} log N(x; z_0/α_0, e^{-λ_0} I) = -d/2 (log 2π - λ_0 + 1), in closed form."""
    logsnr_0, _ = schedule.endpoints(x)
    d = x.shape[-1]
    value = -0.5 * d * (math.log(2 * math.pi) - logsnr_0 + 1)
    return value.expand(x.shape[:-1])


def _control_variate_integrals(schedule: NoiseSchedule, x: Tensor,
                               num_steps: int | None) -> tuple[Tensor, Tensor]:
    r"""A, B with L(x) of the N(0, I)-optimal denoiser = d A + ||x||² B (see ``diffusion_loss``).

    Continuous time: A = 1/2 [softplus(λ) - s(λ)]_{λ_1}^{λ_0}, B = 1/2 [s(λ)]_{λ_1}^{λ_0},
    s = sigmoid; discrete time: the same integrands summed with the T step weights.
    """
    if num_steps is None:
        ends = torch.stack(schedule.endpoints(x))  # (λ_0, λ_1)
        s = torch.sigmoid(ends)
        a = torch.nn.functional.softplus(ends) - s
        return 0.5 * (a[0] - a[1]), 0.5 * (s[0] - s[1])
    grid = torch.linspace(0.0, 1.0, int(num_steps) + 1, dtype=x.dtype, device=x.device)
    logsnr = schedule.logsnr(grid)
    weights = 0.5 * torch.expm1(logsnr[:-1] - logsnr[1:])  # step i: s = (i-1)/T, t = i/T
    s = torch.sigmoid(logsnr[1:])
    return (weights * s**2).sum(), (weights * s * (1 - s)).sum()


def diffusion_loss(denoiser: Denoiser, schedule: NoiseSchedule, x: Tensor, *,
                   num_steps: int | None = None, sampling: str = "logsnr",
                   control_variate: bool = True, stratified: bool = True) -> Tensor:
    r"""One-sample unbiased estimate of L_T(x) (``num_steps=T``) or L_∞(x) (``None``), shape ``(...)``.

    ``sampling="logsnr"`` importance-samples the time so the weight is flat: in continuous time
    λ ~ U(λ_1, λ_0) and L_∞ = (λ_0 - λ_1)/2 E||ε - ε̂||² (a change of variables, Kingma et al.
    2021, eq. 18); in discrete time step i is drawn with probability ∝ λ_s - λ_t.
    ``sampling="time"`` is the plain t ~ U(0, 1) estimator (VDM's, for learned schedules).

    ``control_variate`` subtracts c = s ||√s ε - √(1-s) x||², s = sigmoid(λ_t), the squared
    error of the denoiser that is optimal for N(0, I) data, and adds back its exact integral
    d A + ||x||² B. Still unbiased for any denoiser; it removes the χ² noise of ||ε||² at high
    SNR (where every smooth-data denoiser has ε̂ -> 0), which dominates the plain estimate.
    """
    if sampling not in ("logsnr", "time"):
        raise ValueError(f"sampling must be 'logsnr' or 'time', got {sampling!r}")
    uniform = sample_times(x.shape[:-1], dtype=x.dtype, device=x.device, stratified=stratified)
    eps = torch.randn_like(x)
    if num_steps is None and sampling == "time":
        times = uniform
        logsnr_t, derivative = schedule.logsnr_and_derivative(times)
        weight = -0.5 * derivative
    elif num_steps is None:
        logsnr_0, logsnr_1 = schedule.endpoints(x)
        logsnr_t = logsnr_1 + uniform * (logsnr_0 - logsnr_1)
        times = schedule.time_of(logsnr_t.detach())
        weight = 0.5 * (logsnr_0 - logsnr_1)
    else:
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be a positive integer or None, got {num_steps}")
        if sampling == "time":
            step = torch.floor(uniform * num_steps).clamp(max=num_steps - 1).long() + 1
            probability = torch.full_like(uniform, 1.0 / num_steps)
        else:
            grid = torch.linspace(0.0, 1.0, int(num_steps) + 1, dtype=x.dtype, device=x.device)
            with torch.no_grad():
                gaps = -torch.diff(schedule.logsnr(grid)).clamp(min=0)  # (T,)  λ_s - λ_t
                step_probs = (gaps + 1e-12) / (gaps + 1e-12).sum()
                cdf = torch.cumsum(step_probs, 0)
                step = torch.searchsorted(cdf, uniform.contiguous() * cdf[-1]).clamp(
                    max=num_steps - 1) + 1
                probability = step_probs[step - 1]
        times = step.to(x.dtype) / num_steps
        logsnr_t = schedule.logsnr(times)
        logsnr_s = schedule.logsnr((step.to(x.dtype) - 1) / num_steps)
        weight = 0.5 * torch.expm1(logsnr_s - logsnr_t) / probability
    alpha_sq = torch.sigmoid(logsnr_t).unsqueeze(-1)
    sigma_sq = torch.sigmoid(-logsnr_t).unsqueeze(-1)
    z_t = alpha_sq.sqrt() * x + sigma_sq.sqrt() * eps
    error = ((eps - denoiser(z_t, times)) ** 2).sum(-1)
    if not control_variate:
        return weight * error
    baseline = (alpha_sq * (alpha_sq.sqrt() * eps - sigma_sq.sqrt() * x) ** 2).sum(-1)
    a, b = _control_variate_integrals(schedule, x, num_steps)
    return weight * (error - baseline) + x.shape[-1] * a + (x**2).sum(-1) * b


def simple_loss(denoiser: Denoiser, schedule: NoiseSchedule, x: Tensor, *,
                stratified: bool = True) -> Tensor:
    r"""Ho et al. (2020)'s L_simple: E_{t, ε} ||ε - ε̂(z_t, t)||² (a training loss, not a bound)."""
    times = sample_times(x.shape[:-1], dtype=x.dtype, device=x.device, stratified=stratified)
    eps = torch.randn_like(x)
    alpha, sigma = schedule.alpha_sigma(times)
    z_t = alpha.unsqueeze(-1) * x + sigma.unsqueeze(-1) * eps
    return ((eps - denoiser(z_t, times)) ** 2).sum(-1)


def vlb_terms(denoiser: Denoiser, schedule: NoiseSchedule, x: Tensor, *,
              num_steps: int | None = None, num_samples: int = 1, sampling: str = "logsnr",
              control_variate: bool = True, stratified: bool = True) -> dict[str, Tensor]:
    """The three VLB terms per example (nats): reconstruction, prior KL, diffusion loss."""
    if int(num_samples) < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    expanded = x.expand(int(num_samples), *x.shape)  # (samples, ..., d)
    diffusion = diffusion_loss(denoiser, schedule, expanded, num_steps=num_steps,
                               sampling=sampling, control_variate=control_variate,
                               stratified=stratified).mean(0)
    return {"reconstruction": reconstruction_log_prob(x, schedule),
            "prior_kl": prior_kl(x, schedule), "diffusion": diffusion}


def vlb(denoiser: Denoiser, schedule: NoiseSchedule, x: Tensor, *, num_steps: int | None = None,
        num_samples: int = 1, sampling: str = "logsnr", control_variate: bool = True,
        stratified: bool = True) -> Tensor:
    r"""Per-example estimate of the variational lower bound on log p(x) (nats), shape ``(...)``.

    ``num_steps=None`` is the continuous-time bound; ``num_samples`` averages that many (t, ε)
    draws per example. The estimate is unbiased for the bound, so its mean over data is a lower
    bound on mean log p(x) up to Monte Carlo error (which the across-data stderr includes).
    """
    terms = vlb_terms(denoiser, schedule, x, num_steps=num_steps, num_samples=num_samples,
                      sampling=sampling, control_variate=control_variate, stratified=stratified)
    return terms["reconstruction"] - terms["prior_kl"] - terms["diffusion"]
