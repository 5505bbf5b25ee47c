r"""Samplers of a trained diffusion model: ancestral (DDPM) and DDIM with any number of steps.

Both walk a grid 1 = t_T > ... > t_0 = 0 from z_1 ~ N(0, I). With x̂ = (z_t - σ_t ε̂) / α_t and
σ̃² = η² σ_s² (1 - e^{λ_t - λ_s}), a step t -> s is
z_s = α_s x̂ + sqrt(σ_s² - σ̃²) ε̂ + σ̃ ξ (Song et al., 2021, "DDIM", eq. 12);
η = 1 is the DDPM ancestral step q(z_s | z_t, x = x̂) (Ho et al., 2020), η = 0 the deterministic
DDIM step. The output is the decoder mean z_0 / α_0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from probgen.diffusion.losses import Denoiser
from probgen.diffusion.schedules import NoiseSchedule

__all__ = ["ancestral_sample", "ddim_sample", "sample_loop"]


@torch.no_grad()
def sample_loop(denoiser: Denoiser, schedule: NoiseSchedule, shape: tuple[int, ...], *,
                num_steps: int, eta: float, dtype: torch.dtype | None = None,
                device: torch.device | str | None = None, noise: Tensor | None = None) -> Tensor:
    """Run ``num_steps`` DDIM(η) steps from z_1 ~ N(0, I) (or ``noise``); returns ``shape`` samples."""
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1] (0: DDIM, 1: ancestral), got {eta}")
    dtype = dtype or torch.get_default_dtype()
    z = torch.randn(shape, dtype=dtype, device=device) if noise is None else noise
    batch_shape = z.shape[:-1]
    grid = torch.linspace(1.0, 0.0, int(num_steps) + 1, dtype=z.dtype, device=z.device)
    logsnrs = schedule.logsnr(grid)
    for i in range(int(num_steps)):
        logsnr_t, logsnr_s = logsnrs[i], logsnrs[i + 1]
        alpha_t, sigma_t = torch.sigmoid(logsnr_t).sqrt(), torch.sigmoid(-logsnr_t).sqrt()
        alpha_s, sigma_s = torch.sigmoid(logsnr_s).sqrt(), torch.sigmoid(-logsnr_s).sqrt()
        eps_hat = denoiser(z, grid[i].expand(batch_shape))
        x_hat = (z - sigma_t * eps_hat) / alpha_t
        noise_var = eta**2 * sigma_s**2 * -torch.expm1(logsnr_t - logsnr_s)
        z = alpha_s * x_hat + (sigma_s**2 - noise_var).clamp(min=0).sqrt() * eps_hat
        if eta > 0:
            z = z + noise_var.sqrt() * torch.randn_like(z)
    alpha_0 = torch.sigmoid(logsnrs[-1]).sqrt()
    return z / alpha_0


def ancestral_sample(denoiser: Denoiser, schedule: NoiseSchedule, shape: tuple[int, ...], *,
                     num_steps: int = 1000, **kwargs) -> Tensor:
    r"""DDPM ancestral sampling: z_s ~ q(z_s | z_t, x = x̂(z_t)) over ``num_steps`` steps."""
    return sample_loop(denoiser, schedule, shape, num_steps=num_steps, eta=1.0, **kwargs)


def ddim_sample(denoiser: Denoiser, schedule: NoiseSchedule, shape: tuple[int, ...], *,
                num_steps: int = 50, eta: float = 0.0, **kwargs) -> Tensor:
    r"""DDIM sampling with ``num_steps`` (typically far fewer than training steps), η = 0 default."""
    return sample_loop(denoiser, schedule, shape, num_steps=num_steps, eta=eta, **kwargs)
