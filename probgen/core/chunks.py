"""What every estimator loop shares: eval mode for the duration, and chunks over the data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from probgen.core.program import ForceSubsample

__all__ = ["eval_mode", "map_chunks", "data_plate_pieces"]


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


def _unchanged(fn: Callable) -> Callable:
    return fn


def data_plate_pieces(batch: tuple[Tensor, ...], subsample_size: int | None, data_plate: str | None,
                      chunk: int) -> Iterator[tuple[tuple[Tensor, ...], Callable, int]]:
    """(rows to pass, a handler for the program and guide, how many results to keep), chunk by
    chunk. A program whose data plate subsamples itself gets all rows, with the plate made to
    draw each chunk of indices in turn (the last chunk padded by wrapping around), so every
    row is scored once, in order."""
    n = int(batch[0].shape[0])
    if subsample_size is None:
        for start in range(0, n, chunk):
            yield tuple(t[start:start + chunk] for t in batch), _unchanged, chunk
        return
    for start in range(0, n, subsample_size):
        indices = torch.arange(start, start + subsample_size, device=batch[0].device) % n
        yield batch, ForceSubsample(data_plate, indices), min(subsample_size, n - start)
