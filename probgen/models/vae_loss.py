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
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor
from torch.distributions import Distribution, kl_divergence

__all__ = ["standard_normal_kl", "elbo", "iwae_bound", "floored", "site_bound", "expanded", "Site",
           "Gaussian"]

Site = tuple["Distribution | Gaussian", "Distribution | Gaussian", Tensor]  # (q, p, z ~ q)


class Decoder(Protocol):
    """log p(x | z): z ``(*particles, batch, latent_dim)`` → ``(*particles, batch)`` (x of shape
    ``(batch, *data_shape)`` broadcasts over the particles); ``summed``: the total, a scalar."""

    def __call__(self, x: Tensor, z: Tensor, *, summed: bool = False) -> Tensor: ...


def standard_normal_kl(loc: Tensor, log_scale: Tensor) -> Tensor:
    r"""KL(N(μ, σ²) || N(0, I)) = ½ Σ_j (μ_j² + σ_j² − 2 log σ_j − 1), summed over the last
    dimension: ``(batch, latent_dim)`` → ``(batch,)``."""
    return 0.5 * (loc * loc + (2 * log_scale).exp() - 2 * log_scale - 1).sum(-1)


def floored(kl: Tensor, free_bits: float, count: int) -> Tensor:
    r"""max(KL, λ·count): the free-bits floor on a latent site's KL summed over its examples,
    ``count`` = latent dimensions × examples (Kingma et al., 2016)."""
    return kl.clamp_min(free_bits * count)


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
         num_particles: int = 1, analytic_kl: bool = True, beta: float = 1.0,
         free_bits: float = 0.0) -> Tensor:
    r"""Σ_n (1/k) Σ_i [log p(x_n | z_i) − β KL_n], z_i = μ_n + σ_n ε_i (Kingma & Welling, 2014).

    KL_n is KL(q(z | x_n) || N(0, I)) in closed form (``analytic_kl``, as
    ``TraceMeanField_ELBO``) or its one-sample estimate log q(z_i | x_n) − log p(z_i) (as
    ``Trace_ELBO``). ``loc`` and ``log_scale`` are the encoder's ``(batch, latent_dim)``
    outputs; returns the bound summed over the batch (a scalar to maximize). ``free_bits``
    λ > 0 (one particle): Σ_n KL_n is floored at λ·D·B, as the annealed ELBO does.
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
    if free_bits > 0:
        kl = floored(kl, free_bits, loc.numel())
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


class Gaussian:
    r"""N(μ, diag σ²) over the last dimension, the few operations a bound needs, computed as
    ``Normal(loc, scale).to_event(1)`` computes them (the same draws, values and gradients)
    without a distribution object's checks and dispatch."""

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        self.loc, self.scale = loc, scale

    @property
    def batch_shape(self) -> torch.Size:
        return self.loc.shape[:-1]

    @property
    def event_shape(self) -> torch.Size:
        return self.loc.shape[-1:]

    def expand(self, batch_shape: Sequence[int]) -> Gaussian:
        shape = (*batch_shape, self.loc.shape[-1])
        return Gaussian(self.loc.expand(shape), self.scale.expand(shape))

    def rsample(self) -> Tensor:
        """μ + σ ε, ε ~ N(0, I) of the (batch, event) shape: one ``randn``, as Normal draws."""
        noise = torch.randn(self.loc.shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + noise * self.scale

    def log_prob(self, z: Tensor) -> Tensor:
        r"""Σ_j −(z_j − μ_j)² / (2σ_j²) − log σ_j − ½ log 2π."""
        return (-((z - self.loc) ** 2) / (2 * self.scale**2) - self.scale.log()
                - math.log(math.sqrt(2 * math.pi))).sum(-1)

    def kl(self, other: Gaussian) -> Tensor:
        r"""KL(self || other) = ½ Σ_j (r_j + ((μ_j − μ'_j) / σ'_j)² − 1 − log r_j),
        r_j = (σ_j / σ'_j)²."""
        var_ratio = (self.scale / other.scale).pow(2)
        t1 = ((self.loc - other.loc) / other.scale).pow(2)
        return (0.5 * (var_ratio + t1 - 1 - var_ratio.log())).sum(-1)


def expanded(distribution: Distribution | Gaussian, particles: int) -> Distribution | Gaussian:
    """``distribution`` over a leading particle dimension, as Pyro's vectorized particle plate
    expands a site's distribution (unchanged for one particle)."""
    return distribution if particles == 1 else distribution.expand(
        (particles, *distribution.batch_shape))


def site_kl(q: Distribution | Gaussian, p: Distribution | Gaussian, z: Tensor,
            analytic: bool) -> Tensor:
    r"""KL(q || p) per example (q's batch shape): in closed form where ``analytic`` and torch
    knows one, else the one-sample log q(z) − log p(z), as Pyro's ELBOs fall back."""
    if analytic and isinstance(q, Gaussian) and isinstance(p, Gaussian):
        return q.kl(p)
    if analytic and not isinstance(q, Gaussian) and not isinstance(p, Gaussian):
        try:
            kl = kl_divergence(q, p)
            if kl.shape == q.batch_shape:
                return kl
        except NotImplementedError:
            pass
    return q.log_prob(z) - p.log_prob(z)


def site_bound(log_likelihood: Tensor, sites: Sequence[Site], *, particles: int = 1,
               iwae: bool = False, analytic_kl: bool = False, beta: float = 1.0,
               free_bits: float = 0.0) -> Tensor:
    r"""Σ_n (1/k) Σ_i [log p(x_n | z_i) − β Σ_s max(KL_s, λ D_s B)] over latent sites s, or
    with ``iwae`` Σ_n log (1/k) Σ_i p(x_n | z_i) Π_s [p_s(z_i) / q_s(z_i)]^β, from the draws.

    ``log_likelihood``: log p(x | z), ``(k, batch)`` or ``(batch,)`` for one particle (or its
    total, a scalar, outside ``iwae``);
    ``sites``: each latent's (q, p, z ~ q) on the same draws; KL_s is closed form where
    ``analytic_kl`` (:func:`site_kl`). The free-bits floor λ (one particle) applies to each
    site's KL summed over the batch, as the annealed ELBO does. A scalar to maximize.
    """
    if iwae:  # β scales each site's log p − log q (a beta-VAE's poutine.scale)
        log_ratio = sum(p.log_prob(z) - q.log_prob(z) for q, p, z in sites)
        log_weights = log_likelihood + (log_ratio if beta == 1.0 else beta * log_ratio)
        return (torch.logsumexp(log_weights, 0) - math.log(particles)).sum()
    kl = 0.0
    for q, p, z in sites:
        total = site_kl(q, p, z, analytic_kl).sum()
        if free_bits > 0:
            total = floored(total, free_bits, q.batch_shape.numel() * q.event_shape.numel())
        kl = kl + total
    bound = log_likelihood.sum() - (kl if beta == 1.0 else beta * kl)
    return bound if particles == 1 else bound / particles
