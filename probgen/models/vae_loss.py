r"""A Gaussian-posterior VAE's training objectives in plain torch: the ELBO (closed-form or
one-sample KL) and the IWAE-k bound, vectorized over particles. No Pyro trace: each is one
encoder pass, one decoder pass over every particle, and a few reductions.

They equal Pyro's ``TraceMeanField_ELBO``, ``Trace_ELBO`` and ``RenyiELBO(alpha=0)`` (probgen's
``IWAE``) on the same noise, values and gradients: z = μ + σ ε with ε drawn by one
``randn`` of shape ``(num_particles, batch, latent_dim)``, the draw Pyro's vectorized particle
plate makes (``tests/test_lean_training.py``).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

__all__ = ["standard_normal_kl", "elbo", "iwae_bound"]


class Decoder(Protocol):
    """log p(x | z): z ``(*particles, batch, latent_dim)`` → ``(*particles, batch)`` (x of shape
    ``(batch, *data_shape)`` broadcasts over the particles); ``summed``: the total, a scalar."""

    def __call__(self, x: Tensor, z: Tensor, *, summed: bool = False) -> Tensor: ...


def standard_normal_kl(loc: Tensor, log_scale: Tensor) -> Tensor:
    r"""KL(N(μ, σ²) || N(0, I)) = ½ Σ_j (μ_j² + σ_j² − 2 log σ_j − 1), summed over the last
    dimension: ``(batch, latent_dim)`` → ``(batch,)``."""
    return 0.5 * (loc * loc + (2 * log_scale).exp() - 2 * log_scale - 1).sum(-1)


def _reparameterized(loc: Tensor, log_scale: Tensor, num_particles: int | None) -> tuple[Tensor, Tensor]:
    """(ε, z = μ + σ ε): ε of shape ``(batch, latent_dim)``, or ``(k, batch, latent_dim)``."""
    shape = loc.shape if num_particles is None else (num_particles, *loc.shape)
    noise = torch.randn(shape, dtype=loc.dtype, device=loc.device)
    return noise, loc + log_scale.exp() * noise


def _log_ratio(noise: Tensor, z: Tensor, log_scale: Tensor) -> Tensor:
    r"""log p(z) − log q(z | x) at z = μ + σ ε, summed over latent dimensions:
    Σ_j (½ ε_j² + log σ_j − ½ z_j²)."""
    return (0.5 * noise * noise + log_scale - 0.5 * z * z).sum(-1)


def elbo(loc: Tensor, log_scale: Tensor, x: Tensor, log_likelihood: Decoder, *,
         num_particles: int = 1, analytic_kl: bool = True, beta: float = 1.0) -> Tensor:
    r"""Σ_n (1/k) Σ_i [log p(x_n | z_i) − β KL_n], z_i = μ_n + σ_n ε_i (Kingma & Welling, 2014).

    KL_n is KL(q(z | x_n) || N(0, I)) in closed form (``analytic_kl``, as
    ``TraceMeanField_ELBO``) or its one-sample estimate log q(z_i | x_n) − log p(z_i) (as
    ``Trace_ELBO``). ``loc`` and ``log_scale`` are the encoder's ``(batch, latent_dim)``
    outputs; returns the bound summed over the batch (a scalar to maximize).
    """
    particles = None if num_particles == 1 else num_particles
    noise, z = _reparameterized(loc, log_scale, particles)
    log_lik = log_likelihood(x, z, summed=True)  # over particles and examples
    if analytic_kl:
        kl = standard_normal_kl(loc, log_scale).sum()
    else:
        kl = -_log_ratio(noise, z, log_scale).sum()
    if particles:
        log_lik = log_lik / num_particles
        kl = kl if analytic_kl else kl / num_particles
    return log_lik - kl if beta == 1.0 else log_lik - beta * kl


def iwae_bound(loc: Tensor, log_scale: Tensor, x: Tensor, log_likelihood: Decoder, *,
               num_particles: int, beta: float = 1.0) -> Tensor:
    r"""log (1/k) Σ_i p(x_n | z_i) [p(z_i) / q(z_i | x_n)]^β, z_i ~ q(z | x_n), per example n:
    ``(batch,)``; β = 1 is the IWAE bound (Burda et al., 2016). All k particles in one decoder
    pass."""
    noise, z = _reparameterized(loc, log_scale, num_particles)  # (k, batch, latent_dim)
    log_ratio = _log_ratio(noise, z, log_scale)  # (k, batch)
    log_weights = log_likelihood(x, z) + (log_ratio if beta == 1.0 else beta * log_ratio)
    return torch.logsumexp(log_weights, 0) - math.log(num_particles)
