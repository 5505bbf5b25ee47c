r"""Closed-form ground truth for diffusion on Gaussian-mixture data: the optimal denoiser.

For x ~ Σ_k π_k N(μ_k, Σ_k) and z_t = α_t x + σ_t ε, the marginal is
q(z_t) = Σ_k π_k N(α_t μ_k, α_t² Σ_k + σ_t² I) and the optimal (MMSE) denoiser is
E[x | z_t] = Σ_k w_k(z_t) (μ_k + α_t Σ_k (α_t² Σ_k + σ_t² I)^{-1} (z_t - α_t μ_k)),
with w_k the posterior component weights; ε̂ = (z_t - α_t E[x | z_t]) / σ_t.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from probgen.diffusion.schedules import NoiseSchedule

__all__ = ["GaussianMixtureDenoiser", "gaussian_ancestral_marginal"]


class GaussianMixtureDenoiser(nn.Module):
    r"""The optimal ε-prediction network for Gaussian-mixture data under a schedule.

    Arguments:
        weights: ``(K,)`` mixture weights (one component: a Gaussian).
        means: ``(K, d)`` component means.
        covariances: ``(K, d, d)`` component covariances.
        schedule: the noise schedule the forward process uses.

    Example:
        >>> from probgen.diffusion.schedules import CosineSchedule
        >>> den = GaussianMixtureDenoiser(torch.ones(1), torch.zeros(1, 2),
        ...                               torch.eye(2)[None], CosineSchedule())
        >>> den(torch.zeros(5, 2), torch.full((5,), 0.5)).shape
        torch.Size([5, 2])
    """

    def __init__(self, weights: Tensor, means: Tensor, covariances: Tensor,
                 schedule: NoiseSchedule) -> None:
        super().__init__()
        if means.dim() != 2 or covariances.shape != (*means.shape, means.shape[-1]):
            raise ValueError(f"means must be (K, d) and covariances (K, d, d); got "
                             f"{tuple(means.shape)} and {tuple(covariances.shape)}")
        self.register_buffer("log_weights", torch.log(weights / weights.sum()))
        self.register_buffer("means", means)
        self.register_buffer("covariances", covariances)
        self.schedule = schedule

    def _components(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        alpha, sigma = self.schedule.alpha_sigma(t)
        alpha, sigma = alpha[..., None, None, None], sigma[..., None, None, None]  # (..., 1, 1, 1)
        eye = torch.eye(self.means.shape[-1], dtype=self.means.dtype, device=self.means.device)
        marginal_cov = alpha**2 * self.covariances + sigma**2 * eye  # (..., K, d, d)
        return alpha, sigma, marginal_cov, torch.linalg.cholesky(marginal_cov)

    def marginal_log_prob(self, z: Tensor, t: Tensor) -> Tensor:
        """log q(z_t) at time ``t`` (broadcast against ``z``'s batch shape), shape ``z.shape[:-1]``."""
        t = torch.as_tensor(t, dtype=z.dtype, device=z.device).expand(z.shape[:-1])
        alpha, _, _, chol = self._components(t)
        diff = z[..., None, :] - alpha[..., 0] * self.means  # (..., K, d)
        white = torch.linalg.solve_triangular(chol, diff.unsqueeze(-1), upper=False).squeeze(-1)
        d = z.shape[-1]
        log_det = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        log_normal = -0.5 * (white**2).sum(-1) - 0.5 * log_det - 0.5 * d * math.log(2 * math.pi)
        return torch.logsumexp(self.log_weights + log_normal, dim=-1)

    def posterior_mean(self, z: Tensor, t: Tensor) -> Tensor:
        r"""E[x | z_t], shape ``z.shape``."""
        t = torch.as_tensor(t, dtype=z.dtype, device=z.device).expand(z.shape[:-1])
        alpha, _, marginal_cov, chol = self._components(t)
        diff = z[..., None, :] - alpha[..., 0] * self.means  # (..., K, d)
        solved = torch.cholesky_solve(diff.unsqueeze(-1), chol)  # (..., K, d, 1)
        component_means = self.means + alpha[..., 0] * (self.covariances @ solved).squeeze(-1)
        white = torch.linalg.solve_triangular(chol, diff.unsqueeze(-1), upper=False).squeeze(-1)
        log_det = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        logits = self.log_weights - 0.5 * (white**2).sum(-1) - 0.5 * log_det  # (..., K)
        weights = torch.softmax(logits, dim=-1)
        return (weights.unsqueeze(-1) * component_means).sum(-2)

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        """The optimal ε̂(z_t, t) = (z_t - α_t E[x | z_t]) / σ_t."""
        t = torch.as_tensor(t, dtype=z.dtype, device=z.device).expand(z.shape[:-1])
        alpha, sigma = self.schedule.alpha_sigma(t)
        return (z - alpha.unsqueeze(-1) * self.posterior_mean(z, t)) / sigma.unsqueeze(-1)


def gaussian_ancestral_marginal(mean: Tensor, covariance: Tensor, schedule: NoiseSchedule,
                                num_steps: int) -> torch.distributions.MultivariateNormal:
    r"""The exact density of the ``num_steps``-step ancestral model with the optimal denoiser for
    x ~ N(mean, covariance): every step z_s = c_1 z_t + c_2 E[x | z_t] + σ_Q ξ is linear-Gaussian
    (Kingma et al., 2021, eq. 10), so moments propagate in closed form from z_1 ~ N(0, I)
    through the decoder x = z_0/α_0 + (σ_0/α_0) ξ. Ground truth for discrete-time VLBs."""
    d = mean.shape[-1]
    eye = torch.eye(d, dtype=mean.dtype, device=mean.device)
    loc, cov = torch.zeros_like(mean), eye.clone()
    grid = torch.linspace(1.0, 0.0, int(num_steps) + 1, dtype=mean.dtype, device=mean.device)
    logsnr = schedule.logsnr(grid).detach()
    for i in range(int(num_steps)):
        logsnr_t, logsnr_s = logsnr[i], logsnr[i + 1]
        alpha_t, sigma_t = torch.sigmoid(logsnr_t).sqrt(), torch.sigmoid(-logsnr_t).sqrt()
        alpha_s, sigma_s = torch.sigmoid(logsnr_s).sqrt(), torch.sigmoid(-logsnr_s).sqrt()
        # E[x | z_t] = mean + gain (z_t - α_t mean)
        gain = alpha_t * covariance @ torch.linalg.inv(alpha_t**2 * covariance + sigma_t**2 * eye)
        c_1 = (alpha_t / alpha_s) * sigma_s**2 / sigma_t**2
        c_2 = alpha_s * -torch.expm1(logsnr_t - logsnr_s)
        step = c_1 * eye + c_2 * gain
        loc = step @ loc + c_2 * (mean - alpha_t * gain @ mean)
        cov = step @ cov @ step.T + sigma_s**2 * -torch.expm1(logsnr_t - logsnr_s) * eye
    alpha_0, sigma_0 = torch.sigmoid(logsnr[-1]).sqrt(), torch.sigmoid(-logsnr[-1]).sqrt()
    return torch.distributions.MultivariateNormal(
        loc / alpha_0, cov / alpha_0**2 + (sigma_0 / alpha_0) ** 2 * eye)
