"""Data given as a ``torch.utils.data.Dataset``, a ``DataLoader`` or another iterable of batches,
as :func:`probgen.fit` takes it, for code that reads it batch by batch (``evaluate``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["batch_iterable", "is_batch_iterable", "as_tuple"]


def batch_iterable(data: Any, batch_size: int | None) -> Iterable | None:
    """``data`` as an iterable of batches when it is a map-style ``Dataset`` (then a
    ``DataLoader`` in order, ``batch_size`` rows at a time, all at once by default), a
    ``DataLoader`` or another iterable of batches; None for tensors, arrays, tuples and lists
    (data given whole)."""
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, Iterable):
        return torch.utils.data.DataLoader(data, batch_size=batch_size or len(data),
                                           shuffle=False)
    return data if is_batch_iterable(data) else None


def is_batch_iterable(data: Any) -> bool:
    """A ``DataLoader`` or another iterable of batches (not a tensor, array, tuple, list, dict
    or string, which hold the data whole)."""
    return isinstance(data, torch.utils.data.DataLoader) or (
        isinstance(data, Iterable)
        and not isinstance(data, (torch.Tensor, tuple, list, dict, str, bytes))
        and not hasattr(data, "__array__"))


def as_tuple(batch: Any) -> tuple:
    """One batch as a tuple of its parts (a ``TensorDataset`` yields lists)."""
    return tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
