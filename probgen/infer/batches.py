"""Training data as mini-batches: tensors shuffled per epoch, or a Dataset/DataLoader/iterable."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

__all__ = ["Batches", "positive_int"]


def positive_int(name: str, value: Any, *, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class Batches:
    """The training data as mini-batches: a tensor (or tuple) shuffled per epoch with a seeded
    permutation, or a ``Dataset``/``DataLoader``/iterable of batches with ``num_examples``."""

    def __init__(self, data: Any, batch_size: int | None, num_examples: int | None,
                 shuffle: bool, prepare: Callable[[tuple], tuple]) -> None:
        self.prepare = prepare
        self.loader: Iterable | None = None
        if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, Iterable):
            data = torch.utils.data.DataLoader(data, batch_size=batch_size or len(data),
                                               shuffle=shuffle)
        if _is_loader(data):
            self.loader = data
            size = num_examples if num_examples is not None else _dataset_size(data)
            if size is None:
                raise TypeError("data is an iterable of batches with no dataset to count: pass "
                                "num_examples=N (the training-set size), so that mini-batch "
                                "sites are scaled by N/B")
            positive_int("num_examples", size, allow_none=False)
            self.tensors: tuple[torch.Tensor, ...] = self.prepare(_as_tuple(next(iter(data))))
            self.size = int(size)
            self.batch_size = int(self.tensors[0].shape[0])
            self.steps_per_epoch = len(data) if hasattr(data, "__len__") else max(
                1, math.ceil(self.size / self.batch_size))
        else:
            self.tensors = self.prepare(data)
            self.size = int(self.tensors[0].shape[0])
            positive_int("batch_size", batch_size)
            if batch_size is not None and batch_size > self.size:
                raise ValueError(f"batch_size={batch_size} exceeds the {self.size} examples in "
                                 "data; use batch_size=None to fit on all of them at once")
            self.batch_size = batch_size or self.size
            self.steps_per_epoch = math.ceil(self.size / self.batch_size)
        self.shuffle = shuffle
        self.first = tuple(t[:self.batch_size] for t in self.tensors)

    def epochs(self, start_step: int, seed: int) -> Iterator[tuple[int, int, tuple]]:
        """(step, epoch, batch) from ``start_step`` on, forever."""
        step = start_step
        epoch, position = divmod(start_step, self.steps_per_epoch)
        generator = torch.Generator()
        while True:
            if self.loader is not None:
                with torch.random.fork_rng(devices=[]):  # a DataLoader draws a worker seed
                    iterator = iter(self.loader)
                batches: Iterable = (self.prepare(_as_tuple(b)) for b in iterator)
            elif self.batch_size == self.size:
                batches = [self.tensors]
            else:
                order = (torch.randperm(self.size, generator=generator.manual_seed(seed + epoch))
                         if self.shuffle else torch.arange(self.size))
                order = order.to(self.tensors[0].device)
                batches = (tuple(t[order[i:i + self.batch_size]] for t in self.tensors)
                           for i in range(0, self.size, self.batch_size))
            for index, batch in enumerate(batches):
                if index < position:
                    continue
                yield step, epoch, batch
                step += 1
            epoch, position = epoch + 1, 0


def _is_loader(data: Any) -> bool:
    return isinstance(data, torch.utils.data.DataLoader) or (
        isinstance(data, Iterable) and not isinstance(data, (torch.Tensor, tuple, list, dict,
                                                             str, bytes))
        and not hasattr(data, "__array__"))


def _dataset_size(loader: Any) -> int | None:
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None


def _as_tuple(batch: Any) -> tuple:
    return tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
