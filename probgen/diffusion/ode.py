r"""The probability-flow ODE of a diffusion model: sampling and log-densities via zuko's odeint.

For the variance-preserving process the ODE with the same marginals as the diffusion is
dz/dt = 1/2 λ'(t) (σ_t² z - σ_t ε̂(z, t)) (Song et al., 2021, "Score-based generative modeling
through SDEs", eq. 13, with score = -ε̂/σ_t), and along its paths
log p_0(z_0) = log p_1(z_1) + ∫_0^1 div v(z_t, t) dt (Chen et al., 2018; Grathwohl et al., 2019).
The divergence is exact (d backward passes) or Hutchinson's estimate E[ξᵀ (∂v/∂z) ξ].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from zuko.utils import odeint

from probgen.diffusion.losses import Denoiser
from probgen.diffusion.schedules import NoiseSchedule

__all__ = ["velocity", "ode_sample", "ode_log_prob", "ode_encode"]


def velocity(denoiser: Denoiser, schedule: NoiseSchedule, z: Tensor, t: Tensor) -> Tensor:
    """The probability-flow velocity v(z, t) at scalar time ``t`` for ``z`` of shape ``(..., d)``."""
    logsnr, derivative = schedule.logsnr_and_derivative(t)
    sigma_sq = torch.sigmoid(-logsnr)
    eps_hat = denoiser(z, t.expand(z.shape[:-1]))
    return 0.5 * derivative * (sigma_sq * z - sigma_sq.sqrt() * eps_hat)


def _detached(schedule: NoiseSchedule) -> Callable:
    def call(denoiser: Denoiser, z: Tensor, t: Tensor) -> Tensor:
        with torch.no_grad():
            return velocity(denoiser, schedule, z, t)
    return call


def ode_encode(denoiser: Denoiser, schedule: NoiseSchedule, z_0: Tensor, *,
               atol: float = 1e-5, rtol: float = 1e-5) -> Tensor:
    """Integrate z_0 forward to z_1 (the ODE's latent code)."""
    step = _detached(schedule)
    return odeint(lambda t, z: step(denoiser, z, t), z_0, 0.0, 1.0, atol=atol, rtol=rtol)


def ode_sample(denoiser: Denoiser, schedule: NoiseSchedule, shape: tuple[int, ...], *,
               atol: float = 1e-5, rtol: float = 1e-5, dtype: torch.dtype | None = None,
               device: torch.device | str | None = None, noise: Tensor | None = None) -> Tensor:
    """Samples by integrating z_1 ~ N(0, I) back to t = 0; returns z_0 / α_0 (shape ``shape``)."""
    z_1 = torch.randn(shape, dtype=dtype or torch.get_default_dtype(), device=device) \
        if noise is None else noise
    step = _detached(schedule)
    z_0 = odeint(lambda t, z: step(denoiser, z, t), z_1, 1.0, 0.0, atol=atol, rtol=rtol)
    logsnr_0, _ = schedule.endpoints(z_0)
    return z_0 / torch.sigmoid(logsnr_0).sqrt()


def ode_log_prob(denoiser: Denoiser, schedule: NoiseSchedule, z_0: Tensor, *,
                 exact: bool = True, atol: float = 1e-5, rtol: float = 1e-5,
                 prior_log_prob: Callable[[Tensor], Tensor] | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
    r"""log p_0(z_0) under the probability-flow ODE, shape ``z_0.shape[:-1]``.

    Arguments:
        exact: the exact divergence (d vector-Jacobian products per evaluation: for small d) or
            Hutchinson's unbiased estimate with one Rademacher probe per example (large d).
        prior_log_prob: log p_1; the default is the standard normal N(0, I).
    """
    d = z_0.shape[-1]
    if exact:
        basis = torch.eye(d, dtype=z_0.dtype, device=z_0.device)
        basis = basis.expand(*z_0.shape, d).movedim(-1, 0)  # (d, ..., d)
    else:
        probe = torch.randint(0, 2, z_0.shape, generator=generator, dtype=z_0.dtype,
                              device=z_0.device) * 2 - 1

    def augmented(t: Tensor, z: Tensor, _: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            v = velocity(denoiser, schedule, z, t)
            if exact:
                (jacobian,) = torch.autograd.grad(v, z, basis, is_grads_batched=True)
                divergence = torch.einsum("i...i->...", jacobian)
            else:
                (vjp,) = torch.autograd.grad(v, z, probe)
                divergence = (vjp * probe).sum(-1)
        return v.detach(), divergence.detach()

    start = torch.zeros(z_0.shape[:-1], dtype=z_0.dtype, device=z_0.device)
    with torch.no_grad():
        z_1, integral = odeint(augmented, (z_0, start), 0.0, 1.0, atol=atol, rtol=rtol)
    if prior_log_prob is None:
        prior = torch.distributions.Normal(torch.zeros((), dtype=z_0.dtype, device=z_0.device), 1.0)
        prior_log_prob = lambda z: prior.log_prob(z).sum(-1)  # noqa: E731
    return prior_log_prob(z_1) + integral
