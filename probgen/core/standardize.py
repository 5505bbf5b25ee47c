"""A per-feature affine standardization x_std = (x - shift) / scale, as families store it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["config_floats", "standardization_buffers"]


def config_floats(value: float | Sequence[float] | Tensor) -> float | list[float]:
    """A shift or scale as JSON-able config: one float, or a list of floats."""
    if isinstance(value, Tensor):
        value = value.tolist()
    return float(value) if isinstance(value, (int, float)) else [float(v) for v in value]


def standardization_buffers(features: int, shift: float | Sequence[float],
                            scale: float | Sequence[float]) -> tuple[Tensor, Tensor]:
    """``(shift, scale)`` as ``(features,)`` tensors in the default dtype; refuses scale <= 0."""
    shift_t = torch.as_tensor(shift, dtype=torch.get_default_dtype()).expand(int(features))
    scale_t = torch.as_tensor(scale, dtype=torch.get_default_dtype()).expand(int(features))
    if not (scale_t > 0).all():
        raise ValueError(f"scale must be positive, got {scale}; a constant feature needs "
                         "scale 1")
    return shift_t.clone(), scale_t.clone()
