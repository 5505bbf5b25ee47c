"""Fréchet distance between Gaussian fits (FID on the features the user supplies)."""

from __future__ import annotations

from typing import Any

import torch

from probgen.metrics.features import as_features, check_count, check_pair
from probgen.metrics.result import MetricResult

__all__ = ["frechet_distance", "fid"]

_SYMMETRY_TOLERANCE = 1e-6  # relative to the largest |entry|
_PSD_TOLERANCE = 1e-8  # a negative eigenvalue beyond this fraction of the largest is an error


def _real_tensor(value: Any, name: str, device: torch.device | None = None) -> torch.Tensor:
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a tensor or array of numbers, got "
                        f"{type(value).__name__}")
    try:
        tensor = torch.as_tensor(value, device=device)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{name} must be a tensor or array of numbers ({error})") from None
    if tensor.is_complex():
        raise TypeError(f"{name} is complex ({tensor.dtype}); Gaussian moments are real")
    return tensor.to(torch.float64)


def _as_moments(mean: Any, covariance: Any, which: str) -> tuple[torch.Tensor, torch.Tensor]:
    mean = _real_tensor(mean, f"mu{which}")
    covariance = _real_tensor(covariance, f"cov{which}", device=mean.device)
    if mean.dim() != 1 or mean.numel() == 0 or covariance.shape != (mean.numel(), mean.numel()):
        raise ValueError(f"mu{which} must have shape (d,) and cov{which} shape (d, d), got "
                         f"{tuple(mean.shape)} and {tuple(covariance.shape)}")
    if not (torch.isfinite(mean).all() and torch.isfinite(covariance).all()):
        raise ValueError(f"mu{which} or cov{which} has NaN or Inf; compute the moments from "
                         "finite features")
    if float((covariance - covariance.T).abs().max()) > _SYMMETRY_TOLERANCE * float(
            covariance.abs().max()):
        raise ValueError(f"cov{which} is not symmetric; pass a covariance matrix (e.g. "
                         "torch.cov(x.T)), or symmetrize it with (c + c.T) / 2")
    return mean, covariance


def _psd_sqrt(covariance: torch.Tensor, which: str) -> torch.Tensor:
    """Symmetric square root of a covariance; tiny negative eigenvalues (rounding) count as 0."""
    eigenvalues, vectors = torch.linalg.eigh(covariance)
    if float(eigenvalues.min()) < -_PSD_TOLERANCE * float(eigenvalues.abs().max()):
        raise ValueError(f"cov{which} is not positive semi-definite (eigenvalue "
                         f"{float(eigenvalues.min()):.3g}); pass a covariance matrix")
    return (vectors * eigenvalues.clamp_min(0.0).sqrt()) @ vectors.T


def frechet_distance(mu1: Any, cov1: Any, mu2: Any, cov2: Any) -> float:
    r"""Fréchet (2-Wasserstein²) distance between N(μ1, Σ1) and N(μ2, Σ2):
    ||μ1 - μ2||² + Tr(Σ1 + Σ2 - 2 (Σ1 Σ2)^{1/2}) (Dowson & Landau, 1982; Heusel et al., 2017).

    Tr (Σ1 Σ2)^{1/2} = Σ_i √λ_i(Σ1^{1/2} Σ2 Σ1^{1/2}): the eigenvalues of a symmetric PSD
    matrix in float64, so no complex parts or unstable ``sqrtm`` iterations, also for singular
    covariances (fewer samples than features).

    Example:
        >>> frechet_distance(torch.zeros(2), torch.eye(2), torch.ones(2), 4 * torch.eye(2))
        4.0
    """
    mu1, cov1 = _as_moments(mu1, cov1, "1")
    mu2, cov2 = _as_moments(mu2, cov2, "2")
    if mu1.shape != mu2.shape:
        raise ValueError(f"the Gaussians have {mu1.numel()} and {mu2.numel()} dimensions; fit "
                         "both to the same features")
    mu2, cov2 = mu2.to(mu1.device), cov2.to(mu1.device)
    root1 = _psd_sqrt(cov1, "1")
    _psd_sqrt(cov2, "2")  # checks Σ2 as Σ1 is checked
    middle = root1 @ cov2 @ root1
    middle = (middle + middle.T) / 2  # symmetric up to rounding: make it exactly so for eigh
    trace_sqrt = torch.linalg.eigvalsh(middle).clamp_min(0.0).sqrt().sum()
    distance = ((mu1 - mu2) ** 2).sum() + cov1.trace() + cov2.trace() - 2 * trace_sqrt
    return max(float(distance), 0.0)  # >= 0 exactly; a negative value is rounding


def fid(real: Any, generated: Any) -> MetricResult:
    r"""FID = ||μ_r - μ_g||² + Tr(Σ_r + Σ_g - 2 (Σ_r Σ_g)^{1/2}) of Gaussian fits to the features
    (Heusel et al., 2017), sample means and unbiased covariances in float64.

    On Inception-v3 pool features this is the FID of the literature; on other features (or raw
    pixels) it is the same distance in that space, comparable only within it. It is biased
    upward at finite sample size (Bińkowski et al., 2018): compare models at equal numbers of
    samples. It has no stderr here (``stderr=None``).

    Arguments:
        real: ``(n, d)`` features (or raw pixels, flattened), n >= 2.
        generated: ``(m, d)`` features from the same extractor, m >= 2.

    Example:
        >>> x = torch.randn(500, 3, dtype=torch.float64)
        >>> round(fid(x, x).value, 8)
        0.0
    """
    real, generated = as_features(real, name="real"), as_features(generated, name="generated")
    check_pair(real, generated)
    check_count(real, 2, name="real", why="a covariance")
    check_count(generated, 2, name="generated", why="a covariance")
    value = frechet_distance(real.mean(0), torch.cov(real.T).reshape(real.shape[1], -1),
                             generated.mean(0),
                             torch.cov(generated.T).reshape(generated.shape[1], -1))
    settings = {"num_real": len(real), "num_generated": len(generated),
                "num_features": real.shape[1]}
    return MetricResult("fid", value, None, settings, higher_is_better=False)
