"""Feature sets at the metrics' boundary: 2-D float64 tensors, image batches flattened, checked."""

from __future__ import annotations

import os
from typing import Any

import torch

from probgen.core.validate import validate_data

__all__ = ["as_features", "check_pair", "check_count", "check_pairwise_cost",
           "MAX_PAIRWISE_WORK"]

MAX_PAIRWISE_WORK = 1e14  # n·m·d multiply-adds: hours on a CPU past this (env PROBGEN_MAX_PAIRWISE_WORK)


def as_features(samples: Any, *, name: str = "samples") -> torch.Tensor:
    """``samples`` as a float64 ``(n, d)`` tensor: feature vectors, or images flattened.

    Accepts a tensor, numpy array or nested list of shape ``(n, d)`` or ``(n, *image_shape)``
    (e.g. ``(n, 1, 28, 28)``, flattened to ``(n, 784)``); integers and booleans (raw pixels)
    are cast. Refuses 1-D input, no samples, NaN/Inf, text and complex numbers.

    Example:
        >>> as_features(torch.zeros(5, 1, 8, 8)).shape
        torch.Size([5, 64])
    """
    if isinstance(samples, (str, bytes)):
        raise TypeError(f"{name} is a {type(samples).__name__}; pass feature vectors as an "
                        "(n, d) tensor or numpy array")
    features = validate_data(samples, name=name)
    if features.dim() < 2:
        raise ValueError(f"{name} has shape {tuple(features.shape)}, but metrics take one feature "
                         f"vector per sample, shape (n, d); for one feature per sample pass "
                         f"x[:, None], for one sample pass x[None] (and more samples)")
    if features.shape[1:].numel() == 0:
        raise ValueError(f"{name} has shape {tuple(features.shape)}: samples without features; "
                         "pass at least one feature per sample")
    return features.reshape(features.shape[0], -1).to(torch.float64)  # (n, d)


def check_pair(real: torch.Tensor, generated: torch.Tensor) -> None:
    """Raise unless two feature sets have the same feature size and device."""
    if real.shape[1] != generated.shape[1]:
        raise ValueError(f"real has {real.shape[1]} features per sample but generated has "
                         f"{generated.shape[1]}; compute both with the same feature extractor "
                         "(or flatten images of the same shape)")
    if real.device != generated.device:
        raise ValueError(f"real is on {real.device} but generated is on {generated.device}; "
                         f"move one of them (e.g. generated.to('{real.device}'))")


def check_pairwise_cost(num_rows: int, num_columns: int, num_features: int, *, what: str
                        ) -> None:
    """Refuse pairwise work of ``num_rows · num_columns · num_features`` past the limit before
    starting it, with the numbers and the fix (subsample), instead of running for hours."""
    try:
        limit = float(os.environ.get("PROBGEN_MAX_PAIRWISE_WORK", MAX_PAIRWISE_WORK))
    except ValueError:
        limit = MAX_PAIRWISE_WORK
    work = float(num_rows) * float(num_columns) * max(int(num_features), 1)
    if work > limit:
        scale = (limit / work) ** 0.5
        raise ValueError(f"{what} over {num_rows:,} × {num_columns:,} samples of "
                         f"{num_features:,} features is {work:.2g} multiply-adds, over the "
                         f"{limit:.2g} limit (hours of work); subsample to about {scale:.1%} of the "
                         "samples, or raise the limit with PROBGEN_MAX_PAIRWISE_WORK")


def check_count(features: torch.Tensor, minimum: int, *, name: str, why: str) -> None:
    """Raise unless ``features`` has at least ``minimum`` samples; ``why`` says who needs them."""
    if features.shape[0] < minimum:
        raise ValueError(f"{name} has {features.shape[0]} sample(s), but {why} needs at least "
                         f"{minimum}; pass more samples")
