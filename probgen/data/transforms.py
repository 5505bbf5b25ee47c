r"""Data transforms: binarize, uniform dequantization, logit, with their Jacobians.

Dequantization turns discrete data x ∈ {0, …, K-1}^D into continuous y = (x + u) / K with
u ∈ [0, 1)^D. The noise proposals q(u | x) live in :mod:`probgen.guides.dequantizer` and the
bound they give on log P(x) in :mod:`probgen.evaluate.dequantized`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Transform, constraints

from probgen.core.validate import check_finite, check_size, validate_data

__all__ = ["LogitTransform", "binarize", "check_levels", "logit_transform", "uniform_dequantize"]


def binarize(x: Tensor, *, threshold: float = 0.5, dynamic: bool = False,
             generator: torch.Generator | None = None) -> Tensor:
    r"""Binarize intensities in [0, 1]: static x > threshold, or dynamic b ~ Bernoulli(x).

    Dynamic binarization (Salakhutdinov & Murray, 2008) draws a fresh binary image per call;
    pass a seeded ``generator`` for reproducible draws.

    Example:
        >>> binarize(torch.tensor([[0.2, 0.7]]))
        tensor([[0., 1.]])
    """
    threshold = check_finite("threshold", threshold)
    x = validate_data(x, name="x", support="unit_interval")
    x = x.to(torch.get_default_dtype()) if not x.is_floating_point() else x
    if dynamic:
        return torch.bernoulli(x, generator=generator)
    return (x > threshold).to(x.dtype)


def check_levels(x: Tensor, num_levels: int) -> Tensor:
    """Discrete data x in {0, …, K-1} checked against K = ``num_levels`` >= 2, as floats."""
    if isinstance(num_levels, (int, np.integer)) and not isinstance(num_levels, (bool, np.bool_)) \
            and num_levels < 2:
        raise ValueError(f"num_levels must be >= 2 (e.g. 256 for 8-bit data), got {num_levels}")
    num_levels = check_size("num_levels", num_levels, minimum=2)
    x = validate_data(x, name="x", support="categorical", num_categories=num_levels)
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def uniform_dequantize(x: Tensor, num_levels: int, *, generator: torch.Generator | None = None,
                       scale: bool = True) -> Tensor:
    r"""y = (x + u) / K with u ~ U[0, 1)^D (``scale=False``: x + u, in [0, K)^D).

    Example:
        >>> y = uniform_dequantize(torch.tensor([[0, 3]]), 4)
        >>> bool(((y * 4).floor() == torch.tensor([[0., 3.]])).all())
        True
    """
    x = check_levels(x, num_levels)
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    y = x + noise
    return y / num_levels if scale else y


class LogitTransform(Transform):
    r"""z = logit(α + (1 - 2α) y) on y ∈ [0, 1]; log |dz/dy| = log(1-2α) - log s - log(1-s).

    The α margin keeps the logit finite at y = 0 (Dinh et al., 2016 use α = 0.05 for images).
    Use ``LogitTransform(α).inv`` in a ``TransformedDistribution`` to move a flow on ℝ^D to a
    density on [0, 1]^D.
    """

    domain = constraints.unit_interval
    codomain = constraints.real
    bijective = True
    sign = +1

    def __init__(self, alpha: float = 1e-6, cache_size: int = 0) -> None:
        if not 0 <= alpha < 0.5:
            raise ValueError(f"alpha must lie in [0, 0.5), got {alpha}")
        super().__init__(cache_size=cache_size)
        self.alpha = float(alpha)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LogitTransform) and other.alpha == self.alpha

    def _squeeze(self, y: Tensor) -> Tensor:
        return self.alpha + (1 - 2 * self.alpha) * y

    def _call(self, y: Tensor) -> Tensor:
        s = self._squeeze(y)
        return torch.log(s) - torch.log1p(-s)

    def _inverse(self, z: Tensor) -> Tensor:
        return (torch.sigmoid(z) - self.alpha) / (1 - 2 * self.alpha)

    def log_abs_det_jacobian(self, y: Tensor, z: Tensor) -> Tensor:
        s = self._squeeze(y)
        return math.log1p(-2 * self.alpha) - torch.log(s) - torch.log1p(-s)

    def with_cache(self, cache_size: int = 1) -> LogitTransform:
        return self if self._cache_size == cache_size else LogitTransform(self.alpha, cache_size)


def logit_transform(y: Tensor, alpha: float = 1e-6) -> tuple[Tensor, Tensor]:
    r"""z = logit(α + (1-2α) y) and the per-example log |det ∂z/∂y| (summed over features)."""
    transform = LogitTransform(alpha)
    z = transform(y)
    log_det = transform.log_abs_det_jacobian(y, z).reshape(y.shape[0], -1).sum(-1)
    return z, log_det
