"""Training data as mini-batches: tensors shuffled per epoch, or a Dataset/DataLoader/iterable."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch

from probgen.core.loaders import as_tuple, is_batch_iterable

__all__ = ["Batches", "positive_int"]


def positive_int(name: str, value: Any, *, allow_none: bool = True, numpy: bool = False
                 ) -> int | None:
    """``value`` as a positive int; None passes when allowed. ``numpy=True`` accepts NumPy
    integers too, for callers that keep the returned Python int (a NumPy integer stored in a
    checkpoint's settings would make it unloadable with ``weights_only=True``)."""
    if value is None and allow_none:
        return None
    integer_types = (int, np.integer) if numpy else int
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, integer_types) \
            or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class Batches:
    """The training data as mini-batches: a tensor (or tuple) shuffled per epoch with a seeded
    permutation, or a ``Dataset``/``DataLoader``/iterable of batches with ``num_examples``.

    An iterable is read once per epoch. A one-shot iterator (a generator) is read once: its
    first batch is kept for the first epoch, and asking it for a second epoch after it ended
    raises a ValueError naming the step, instead of waiting forever for a batch.
    """

    def __init__(self, data: Any, batch_size: int | None, num_examples: int | None,
                 shuffle: bool, prepare: Callable[[tuple], tuple]) -> None:
        self.prepare = prepare
        self.loader: Iterable | None = None
        self.one_shot = False
        self._head: list[Any] = []  # a one-shot iterator's first batch, trained on in epoch 0
        if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, Iterable):
            if _length(data) == 0:
                raise ValueError(f"data is an empty {type(data).__name__} (0 examples); pass "
                                 "at least one example")
            data = torch.utils.data.DataLoader(data, batch_size=batch_size or len(data),
                                               shuffle=shuffle)
        if is_batch_iterable(data):
            self.loader = data
            self.one_shot = isinstance(data, Iterator)
            kind = _describe(data)
            size = num_examples if num_examples is not None else _dataset_size(data)
            if size is None:
                raise TypeError(f"data is {kind} of batches with no dataset to count: pass "
                                "num_examples=N (the training-set size), so that mini-batch "
                                "sites are scaled by N/B")
            if num_examples is None and size == 0:
                raise ValueError(f"data is {kind} over an empty dataset (0 examples); pass at "
                                 "least one example")
            size = positive_int("num_examples", size, allow_none=False, numpy=True)
            try:
                first = next(iter(data))
            except StopIteration:
                raise ValueError(f"data is {kind} that yielded no batch (it is empty, or an "
                                 "iterator already read to its end); pass at least one batch"
                                 ) from None
            if self.one_shot:
                self._head = [first]
            self.tensors: tuple[torch.Tensor, ...] = self.prepare(as_tuple(first))
            self.size = int(size)
            self.batch_size = int(self.tensors[0].shape[0])
            if self.batch_size > self.size:
                raise ValueError(f"num_examples={self.size} is smaller than the first batch "
                                 f"({self.batch_size} examples); num_examples is the size of "
                                 "the whole training set, not of a batch")
            self.steps_per_epoch = len(data) if hasattr(data, "__len__") else max(
                1, math.ceil(self.size / self.batch_size))
        else:
            self.tensors = self.prepare(data)
            self.size = int(self.tensors[0].shape[0])
            if num_examples is not None and positive_int(
                    "num_examples", num_examples, numpy=True) != self.size:
                raise ValueError(f"num_examples={num_examples} but data holds {self.size} "
                                 "examples; num_examples sizes an iterable of batches, a "
                                 "tensor's own length is used: leave it unset")
            batch_size = positive_int("batch_size", batch_size, numpy=True)
            if batch_size is not None and batch_size > self.size:
                raise ValueError(f"batch_size={batch_size} exceeds the {self.size} examples in "
                                 "data; use batch_size=None to fit on all of them at once")
            self.batch_size = batch_size or self.size
            self.steps_per_epoch = math.ceil(self.size / self.batch_size)
        self.shuffle = shuffle
        self.first = tuple(t[:self.batch_size] for t in self.tensors)

    def epochs(self, start_step: int, seed: int, stop_step: int | None = None
               ) -> Iterator[tuple[int, int, tuple]]:
        """(step, epoch, batch) from ``start_step`` on, up to ``stop_step`` (None: forever);
        an iterable that stops yielding batches before then raises a ValueError rather than
        looping."""
        step = start_step
        if stop_step is not None and step >= stop_step:
            return
        epoch, position = divmod(start_step, self.steps_per_epoch)
        generator = torch.Generator()
        while True:
            if self.loader is not None:
                batches: Iterable = self._loader_batches(epoch)
            elif self.batch_size == self.size:
                batches = [self.tensors]
            else:
                order = (torch.randperm(self.size, generator=generator.manual_seed(seed + epoch))
                         if self.shuffle else torch.arange(self.size))
                order = order.to(self.tensors[0].device)
                batches = (tuple(t[order[i:i + self.batch_size]] for t in self.tensors)
                           for i in range(0, self.size, self.batch_size))
            seen = 0
            for index, batch in enumerate(batches):
                seen += 1
                if index < position:
                    continue
                yield step, epoch, batch
                step += 1
                if stop_step is not None and step >= stop_step:
                    return  # not a batch more: a one-shot iterator keeps the rest
            if seen <= position:
                raise ValueError(self._ended(step, epoch, seen, position))
            epoch, position = epoch + 1, 0

    def _loader_batches(self, epoch: int) -> Iterator[tuple]:
        """One epoch of the loader's batches, prepared and checked against the first batch."""
        if self.one_shot:
            raw: Iterable = itertools.chain(self._head, self.loader)  # type: ignore[arg-type]
            self._head = []
        else:
            with torch.random.fork_rng(devices=[]):  # a DataLoader draws a worker seed
                raw = iter(self.loader)  # type: ignore[arg-type]
        for index, batch in enumerate(raw):
            prepared = self.prepare(as_tuple(batch))
            self._check_like_first(prepared, epoch, index)
            yield prepared

    def _check_like_first(self, batch: tuple[torch.Tensor, ...], epoch: int, index: int) -> None:
        if len(batch) != len(self.tensors):
            raise ValueError(f"data's batch {index} of epoch {epoch} holds {len(batch)} "
                             f"tensor(s) but the first batch held {len(self.tensors)}; every "
                             "batch must hold the same tensors")
        for i, (tensor, reference) in enumerate(zip(batch, self.tensors)):
            if tensor.shape[1:] != reference.shape[1:]:
                part = f"[{i}]" if len(batch) > 1 else ""
                raise ValueError(f"data{part}'s batch {index} of epoch {epoch} has examples of "
                                 f"shape {tuple(tensor.shape[1:])} but the first batch had "
                                 f"{tuple(reference.shape[1:])}; every batch must hold the "
                                 "same features")

    def _ended(self, step: int, epoch: int, seen: int, position: int) -> str:
        kind = _describe(self.loader)
        if self.one_shot:
            return (f"data is {kind}, which can be read only once, and it ended at step {step} "
                    f"(epoch {epoch}) before training did; pass a list of batches or a "
                    f"DataLoader (read once per epoch), or ask for at most num_steps={step}")
        if seen == 0:
            return (f"data ({kind}) yielded no batch in epoch {epoch} (step {step}); an "
                    "iterable of batches must yield the same batches every time it is read")
        return (f"data ({kind}) yielded {seen} batch(es) in epoch {epoch}, but the run resumes "
                f"at batch {position} of that epoch; resume with the same data")


def _describe(data: Any) -> str:
    name = type(data).__name__
    if isinstance(data, Iterator):
        return f"a one-shot iterator ({name})"
    return f"a {name}"


def _length(dataset: Any) -> int | None:
    try:
        return len(dataset)
    except TypeError:
        return None


def _dataset_size(loader: Any) -> int | None:
    dataset = getattr(loader, "dataset", None)
    return _length(dataset) if dataset is not None else None

