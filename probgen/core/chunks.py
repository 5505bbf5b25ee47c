"""What every estimator loop shares: eval mode for the duration, and chunks over the data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["eval_mode", "map_chunks"]


@contextmanager
def eval_mode(model: nn.Module, *, seed: int | None = None) -> Iterator[nn.Module]:
    """``model.eval()`` inside the block (``torch.manual_seed(seed)`` first, when given); the
    train/eval mode it had is restored on exit, also on error."""
    if seed is not None:
        torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def map_chunks(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int | None) -> Tensor:
    """``torch.cat([fn(x[i:i+b]) for each chunk])``: per-example values in bounded memory
    (``batch_size=None``: one chunk)."""
    return torch.cat([fn(chunk) for chunk in torch.split(x, batch_size or max(len(x), 1))])
