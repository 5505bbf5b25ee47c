r"""Importance weights over a whole diffusion trajectory: unbiased estimates of p_T(x).

The T-step ancestral model (the one :func:`~probgen.diffusion.samplers.ancestral_sample` draws
from, with the Gaussian decoder of the VLB) is a latent-variable model over z_{0:1} on the grid
t_i = i / T. The forward process q(z_{0:1} | x) is a proposal for it, so one forward trajectory
gives the weight

    w = p(z_1) Π_i p(z_{s_i} | z_{t_i}) p(x | z_0) / (q(z_1 | x) Π_i q(z_{s_i} | z_{t_i}, x)),

with E_q[w] = p_T(x) and E_q[log w] = VLB_T(x) (Kingma et al., 2021, eqs. 11-17). Unlike the
VLB estimate (one random step), log-mean-exp over k such weights is an IWAE bound (Burda et al.,
2016): E log (1/k) Σ w_j <= log p_T(x), growing with k. Each weight costs T denoiser calls.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from probgen.diffusion.losses import Denoiser
from probgen.diffusion.schedules import NoiseSchedule

__all__ = ["trajectory_log_weight"]


def _gaussian_log_ratio(residual: Tensor, shift: Tensor, variance: Tensor) -> Tensor:
    r"""log N(y; μ_p, v) - log N(y; μ_q, v) = -(2 r·δ + |δ|²) / (2v) with r = y - μ_q and
    δ = μ_q - μ_p (equal variances: the normalisers cancel)."""
    return -(2 * (residual * shift).sum(-1) + (shift**2).sum(-1)) / (2 * variance)


def trajectory_log_weight(denoiser: Denoiser, schedule: NoiseSchedule, x: Tensor, *,
                          num_steps: int, chunk_steps: int = 64) -> Tensor:
    r"""log p(x, z_{0:1}) - log q(z_{0:1} | x) for one forward trajectory per entry of ``x``.

    ``x`` is ``(..., d)``; the result ``(...)``, with exp of it unbiased for p_T(x), the density
    of the ``num_steps``-step ancestral model. The trajectory is drawn and the weight summed in
    float64 (the residuals at high SNR are ~1e-4 of the values); the denoiser sees its own dtype.
    ``chunk_steps`` denoiser calls are batched together (memory ~ chunk_steps × x.numel()).

    In ỹ_t = z_t / α_t the forward process has independent increments: ỹ_{t_i} = x + Σ_{j≤i} c_j ξ_j
    with c_0² = e^{-λ_0} and c_j² = e^{-λ_{t_j}} - e^{-λ_{t_{j-1}}}, so one cumsum draws it.
    """
    steps = int(num_steps)
    if steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    work = torch.float64
    d = x.shape[-1]
    grid = torch.linspace(0.0, 1.0, steps + 1, dtype=work, device=x.device)
    with torch.no_grad():
        logsnr = schedule.logsnr(grid.to(x.dtype)).to(work)  # λ_0 > ... > λ_T
    variance_scaled = torch.exp(-logsnr)  # Var(ỹ_t | x) = e^{-λ_t}
    increments = torch.cat([variance_scaled[:1], torch.diff(variance_scaled)]).clamp(min=0).sqrt()
    noise = torch.randn((steps + 1, *x.shape), dtype=work, device=x.device)
    x_work = x.to(work)
    scaled = x_work + torch.cumsum(increments.view(-1, *([1] * x.dim())) * noise, dim=0)
    alpha = torch.sigmoid(logsnr).sqrt().view(-1, *([1] * x.dim()))
    sigma = torch.sigmoid(-logsnr).sqrt().view(-1, *([1] * x.dim()))
    z = alpha * scaled  # (T + 1, ..., d): z_{t_0} ... z_{t_T}

    # p(x | z_0) = N(x; z_0 / α_0, e^{-λ_0}): the residual x - ỹ_0 is -c_0 ξ_0 exactly.
    log_w = (-0.5 * (noise[0] ** 2).sum(-1) - d * torch.log(increments[0])
             - 0.5 * d * math.log(2 * math.pi))
    # p(z_1) = N(0, I) against q(z_1 | x) = N(α_1 x, σ_1² I)
    z_1 = z[-1]
    log_w = log_w - 0.5 * (z_1**2).sum(-1) + 0.5 * (((z_1 - alpha[-1] * x_work) / sigma[-1]) ** 2
                                                    ).sum(-1) + d * torch.log(sigma[-1, ..., 0])
    # steps t_i -> s = t_{i-1}, i = 1..T: model and posterior share the variance
    # v = σ_s² (1 - e^{λ_t - λ_s}); δ = μ_q - μ_p = -α_s (1 - e^{λ_t - λ_s}) (σ_t/α_t) (ε_t - ε̂)
    for start in range(1, steps + 1, int(chunk_steps)):
        index = torch.arange(start, min(start + int(chunk_steps), steps + 1), device=x.device)
        z_t, z_s = z[index], z[index - 1]
        shape = (-1, *([1] * x.dim()))
        lam_t, lam_s = logsnr[index].view(shape), logsnr[index - 1].view(shape)
        a_t, s_t = alpha[index], sigma[index]
        a_s, s_s = alpha[index - 1], sigma[index - 1]
        keep = -torch.expm1(lam_t - lam_s)  # 1 - e^{λ_t - λ_s}
        times = grid[index].view(shape[:-1]).expand(z_t.shape[:-1])
        with torch.no_grad():
            eps_hat = denoiser(z_t.to(x.dtype), times.to(x.dtype)).to(work)
        eps_t = (z_t - a_t * x_work) / s_t
        posterior_mean = (a_t / a_s) * (s_s**2 / s_t**2) * z_t + a_s * keep * x_work
        shift = -a_s * keep * (s_t / a_t) * (eps_t - eps_hat)
        variance = (s_s**2 * keep)[..., 0]
        log_w = log_w + _gaussian_log_ratio(z_s - posterior_mean, shift, variance).sum(0)
    return log_w.to(x.dtype)
