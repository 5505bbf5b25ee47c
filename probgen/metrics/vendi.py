"""The Vendi score: the effective number of distinct samples under a similarity kernel."""

from __future__ import annotations

import math
from typing import Any

import torch

from probgen.core.validate import check_finite, check_num_samples
from probgen.metrics.features import as_features, check_pairwise_cost
from probgen.metrics.kernels import Cosine, Kernel
from probgen.metrics.result import MetricResult

__all__ = ["vendi"]


def _gram_eigenvalues(kernel: Kernel, samples: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of K/n (they sum to 1 for a unit diagonal), clamped at 0, float64."""
    n = len(samples)
    if kernel.has_feature_map:
        features = kernel.feature_map(samples)  # (n, p): K = Φ Φᵀ shares Φᵀ Φ's non-zero spectrum
        if features.shape[1] < n:
            return torch.linalg.eigvalsh(features.T @ features / n).clamp_min(0.0)
    return torch.linalg.eigvalsh(kernel(samples, samples) / n).clamp_min(0.0)


def vendi(samples: Any, *, kernel: Kernel | None = None, q: float = 1.0) -> MetricResult:
    r"""Vendi score VS_q = exp(H_q(λ)), λ the eigenvalues of K/n, K_ij = k(x_i, x_j), k(x, x) = 1
    (Friedman & Dieng, 2023); q = 1: exp(-Σ λ_i log λ_i).

    The exponential of the Shannon (q = 1) or Rényi (order q) entropy of the similarity
    spectrum: 1 when every sample is the same, n for n mutually dissimilar (orthogonal) samples,
    k for k equal-sized groups of identical, mutually orthogonal samples. It scores diversity
    alone, without reference data; q < 1 weighs rare samples more, q = ∞ gives 1 / max λ.

    Arguments:
        samples: ``(n, d)`` features (or raw pixels, flattened) of one sample set.
        kernel: a similarity with ``k(x, x) = 1``: :class:`Cosine` (default; needs non-zero
            vectors; the spectrum comes from the ``d × d`` matrix when d < n) or :class:`RBF`
            (an ``n × n`` eigendecomposition, O(n³)).
        q: the order, > 0 (``math.inf`` allowed).

    Returns:
        ``MetricResult("vendi", value in [1, n], stderr=None, settings)``.

    Example:
        >>> round(vendi(torch.eye(4)).value, 6)
        4.0
    """
    if kernel is None:
        kernel = Cosine()
    if not isinstance(kernel, Kernel):
        raise TypeError(f"kernel must be a probgen.metrics Kernel (Cosine(), RBF()), got "
                        f"{type(kernel).__name__}")
    if not kernel.unit_diagonal:
        raise ValueError(f"the Vendi score needs a similarity with k(x, x) = 1, but "
                         f"{type(kernel).__name__} is not one; use Cosine() or RBF()")
    if isinstance(q, (int, float)) and not isinstance(q, bool) and q == math.inf:
        order = math.inf
    else:
        order = check_finite("q", q, positive=True)
    samples = as_features(samples, name="samples")
    n, d = samples.shape
    if not kernel.has_feature_map or d >= n:  # an n × n Gram matrix and its eigenvalues
        check_num_samples("samples (rows)", n, per_sample=n, element_bytes=8,
                          fix=f"the {type(kernel).__name__} Gram matrix is n × n: subsample to at "
                              "most {largest} rows" + ("" if kernel.has_feature_map else
                                                       ", or use Cosine() (a d × d spectrum)"))
        check_pairwise_cost(n, n, max(d, n), what="the Vendi score's eigendecomposition")
    kernel = kernel.fitted(samples=samples)
    eigenvalues = _gram_eigenvalues(kernel, samples)
    eigenvalues = eigenvalues / eigenvalues.sum()  # exact for a unit diagonal, up to rounding
    positive = eigenvalues[eigenvalues > 0]
    if order == 1:
        entropy = float(-(positive * positive.log()).sum())
    elif order == math.inf:
        entropy = -math.log(float(positive.max()))
    else:
        entropy = float(torch.logsumexp(order * positive.log(), dim=0)) / (1 - order)
    settings = {**kernel.settings(), "q": order, "num_samples": len(samples)}
    return MetricResult("vendi", math.exp(entropy), None, settings, higher_is_better=True)
