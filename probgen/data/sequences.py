"""Ragged sequences <-> a padded ``(batch, time, ...)`` tensor with lengths and a mask."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from probgen.core.validate import check_num_samples, check_size, validate_data

__all__ = ["PaddedSequences", "pad_sequences", "unpad_sequences", "lengths_to_mask",
           "validate_sequences"]


@dataclass(frozen=True)
class PaddedSequences:
    """Sequences of different lengths stored as one padded tensor.

    Fields:
        values: ``(batch, time, *feature_shape)`` tensor; steps ``t >= lengths[b]`` are padding.
        lengths: ``(batch,)`` long tensor, each in ``1..time``.

    Example:
        >>> batch = pad_sequences([torch.ones(2, 3), torch.ones(4, 3)])
        >>> batch.values.shape, batch.lengths.tolist()
        (torch.Size([2, 4, 3]), [2, 4])
    """

    values: torch.Tensor
    lengths: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """``(batch, time)`` bool, True at observed (non-padded) steps."""
        return lengths_to_mask(self.lengths, self.values.shape[1])

    @property
    def num_steps(self) -> int:
        """Total number of observed time steps."""
        return int(self.lengths.sum())

    def as_tuple(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(values, lengths)``: the batch a sequence model's ``model(sequences, lengths)`` takes."""
        return self.values, self.lengths

    def to(self, *args: Any, **kwargs: Any) -> PaddedSequences:
        values = self.values.to(*args, **kwargs)
        return PaddedSequences(values, self.lengths.to(values.device))

    def __getitem__(self, index: Any) -> PaddedSequences:
        """Select sequences (not time steps); trims trailing all-padding steps."""
        lengths = self.lengths[index].reshape(-1)
        values = self.values[index].reshape(lengths.numel(), *self.values.shape[1:])
        return PaddedSequences(values[:, : int(lengths.max())], lengths)

    def __len__(self) -> int:
        return self.values.shape[0]

    def unpad(self) -> list[torch.Tensor]:
        return unpad_sequences(self.values, self.lengths)


def lengths_to_mask(lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """``mask[b, t] = t < lengths[b]``, shape ``(batch, max_length)``."""
    lengths = torch.as_tensor(lengths)
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be integers (steps per sequence), got dtype {lengths.dtype}; "
                         "pass e.g. torch.tensor([5, 3])")
    if lengths.dim() != 1:
        raise ValueError(f"lengths must have shape (batch,), got {tuple(lengths.shape)}")
    if lengths.numel() and int(lengths.min()) < 0:
        raise ValueError(f"lengths must be >= 0, got {int(lengths.min())} (sequence "
                         f"{int(torch.argmin(lengths))})")
    if max_length is None:
        max_length = int(lengths.max()) if lengths.numel() else 0
    max_length = check_size("max_length", max_length, minimum=0)
    if max_length and lengths.numel():
        check_num_samples("max_length", max_length, per_sample=lengths.numel(), element_bytes=1,
                          fix="pass max_length=None (the longest length) or at most {largest}")
    steps = torch.arange(max_length, device=lengths.device)
    return steps < lengths[:, None]  # (batch, time)


def pad_sequences(
    sequences: Sequence[Any],
    *,
    padding_value: float = 0.0,
    dtype: torch.dtype | None = None,
    max_length: int | None = None,
) -> PaddedSequences:
    """Stack sequences of shape ``(length_i, *feature_shape)`` into a padded batch.

    Args:
        sequences: tensors, arrays or nested lists, one per sequence, time first.
        padding_value: value written at padded steps (0 is valid for every bundled emission).
        max_length: pad to this many steps (default: the longest sequence).
    """
    if isinstance(sequences, torch.Tensor) or (
            isinstance(sequences, np.ndarray) and sequences.dtype != np.dtype(object)):
        raise TypeError("pad_sequences takes a list of sequences; an already rectangular tensor "
                        "needs only lengths (pass it with torch.full((n,), time))")
    if isinstance(sequences, (str, bytes, dict)) or not isinstance(sequences, (Sequence, np.ndarray)):
        raise TypeError(f"pad_sequences takes a list of sequences (tensors, arrays or nested "
                        f"lists, time first), got {type(sequences).__name__}")
    if len(sequences) == 0:
        raise ValueError("pad_sequences got no sequences; pass at least one")
    tensors = [_sequence_tensor(i, sequence) for i, sequence in enumerate(sequences)]
    feature_shape = tuple(tensors[0].shape[1:])
    for i, tensor in enumerate(tensors):
        if tuple(tensor.shape[1:]) != feature_shape:
            raise ValueError(f"sequence {i} has steps of shape {tuple(tensor.shape[1:])} but "
                             f"sequence 0 has {feature_shape}; every step needs the same features")
    lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.long)
    longest = int(lengths.max())
    if max_length is None:
        max_length = longest
    else:
        max_length = check_size("max_length", max_length)
    if max_length < longest:
        raise ValueError(f"max_length={max_length} is shorter than the longest sequence ({longest})")
    dtype = dtype or tensors[0].dtype
    check_num_samples("max_length", max_length, per_sample=len(tensors) * max(
        int(torch.Size(feature_shape).numel()), 1), element_bytes=torch.empty((), dtype=dtype
                                                                            ).element_size(),
                      fix="pad to the longest sequence (max_length=None) or at most {largest}")
    _check_padding_value(padding_value, dtype)
    values = torch.full((len(tensors), max_length, *feature_shape), padding_value, dtype=dtype)
    for i, tensor in enumerate(tensors):  # a copy per sequence, once, at load time
        values[i, : tensor.shape[0]] = tensor.to(dtype)
    return PaddedSequences(values, lengths)


def _sequence_tensor(i: int, sequence: Any) -> torch.Tensor:
    """Sequence ``i`` as a tensor with a time dimension, or a ValueError/TypeError saying why not."""
    if isinstance(sequence, torch.Tensor):
        tensor = sequence
    else:
        if sequence is None or isinstance(sequence, (str, bytes, dict)):
            raise TypeError(f"sequence {i} is {type(sequence).__name__}, not a sequence of numbers; "
                            "pass tensors, arrays or nested lists, time first")
        try:
            array = np.asarray(sequence)
        except (ValueError, TypeError):
            raise ValueError(f"sequence {i} has steps of different shapes; every step of a "
                             "sequence needs the same features") from None
        if array.dtype == object or array.dtype.kind in "USVmM":
            raise TypeError(f"sequence {i} holds {array.dtype} values, not numbers (None, text "
                            "or steps of different shapes?); convert it to a numeric array")
        tensor = torch.as_tensor(array)
    if tensor.device.type == "meta":
        raise ValueError(f"sequence {i} is on the meta device and holds no values; pass real data")
    if tensor.dim() == 0:
        raise ValueError(f"sequence {i} is a scalar; each sequence needs a time dimension")
    if tensor.shape[0] == 0:
        raise ValueError(f"sequence {i} is empty; drop empty sequences before padding")
    return tensor


def _check_padding_value(padding_value: Any, dtype: torch.dtype) -> None:
    if isinstance(padding_value, (bool, np.bool_)) or not isinstance(
            padding_value, (int, float, np.number)):
        raise TypeError(f"padding_value must be a number, got {padding_value!r}")
    if dtype.is_floating_point or dtype.is_complex:
        return
    if not np.isfinite(float(padding_value)) or not float(padding_value).is_integer():
        raise ValueError(f"padding_value={padding_value!r} does not fit the sequences' integer "
                         f"dtype {dtype}; pass a whole number (e.g. padding_value=0) or dtype=float")
    if dtype != torch.bool:
        info = torch.iinfo(dtype)
        if not info.min <= int(padding_value) <= info.max:
            raise ValueError(f"padding_value={padding_value!r} is outside the range of {dtype}")


def unpad_sequences(values: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    """The inverse of :func:`pad_sequences`: a list of ``(length_i, *feature_shape)`` views."""
    return [values[i, :length] for i, length in enumerate(lengths.tolist())]


def _padded_values(values: Any, lengths: Any, name: str) -> tuple[torch.Tensor, Any]:
    """``(values, lengths)`` unpacked from a PaddedSequences, values as a tensor of rank >= 2."""
    if isinstance(values, PaddedSequences):
        if lengths is not None:
            raise ValueError("pass either a PaddedSequences or (values, lengths), not both")
        values, lengths = values.values, values.lengths
    if isinstance(values, (list, tuple)) and values and _looks_ragged(values):
        raise TypeError(f"{name} is a list of sequences of different lengths; pad them with "
                        "probgen.data.sequences.pad_sequences(...) and pass (values, lengths)")
    if not isinstance(values, torch.Tensor):
        values = torch.as_tensor(np.asarray(values))
    if values.dtype == torch.bool:
        values = values.to(torch.get_default_dtype())
    if values.dim() < 2:
        raise ValueError(f"{name} must be (batch, time, ...) but has shape {tuple(values.shape)}; "
                         "for a single sequence use x[None]")
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(values.shape)}); pass at least one step")
    return values, lengths


def _checked_lengths(lengths: Any, values: torch.Tensor, name: str) -> torch.Tensor:
    """One whole length in 1..time per sequence (default: the full time dimension), as longs."""
    batch, time = values.shape[:2]
    if lengths is None:
        lengths = torch.full((batch,), time, dtype=torch.long, device=values.device)
    lengths = torch.as_tensor(lengths, device=values.device)
    if lengths.is_floating_point():
        if not torch.equal(lengths, lengths.round()):
            raise ValueError(f"lengths must be whole numbers, got {lengths.tolist()[:5]}...")
        lengths = lengths.long()
    if lengths.dtype == torch.bool or lengths.is_complex():
        raise TypeError(f"lengths must be an integer tensor, got {lengths.dtype}")
    lengths = lengths.long()
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},) (one per sequence in {name}), got "
                         f"{tuple(lengths.shape)}")
    if (lengths < 1).any() or (lengths > time).any():
        bad = int(torch.nonzero((lengths < 1) | (lengths > time))[0])
        raise ValueError(f"lengths must lie in 1..{time} (the padded time dimension of {name}); "
                         f"sequence {bad} has length {int(lengths[bad])}")
    return lengths


def validate_sequences(
    values: Any,
    lengths: Any = None,
    *,
    name: str = "sequences",
    support: str = "real",
    feature_shape: Sequence[int] | None = None,
    num_categories: int | None = None,
    float_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a padded batch and its lengths; return ``(values, lengths)`` as tensors.

    Only observed steps are checked against the support; padding may hold anything (NaN, -1)
    and is returned as zeros. ``lengths`` default to the full time dimension.

    Args:
        feature_shape: the shape of one time step (``()`` for scalar, e.g. categorical, steps).
    """
    values, lengths = _padded_values(values, lengths, name)
    batch, time = values.shape[:2]
    lengths = _checked_lengths(lengths, values, name)
    if feature_shape is not None and tuple(values.shape[2:]) != tuple(feature_shape):
        raise ValueError(f"{name} has steps of shape {tuple(values.shape[2:])} but the model "
                         f"expects {tuple(feature_shape)}; pass the features it was fitted on "
                         "(layout: (batch, time, *features))")
    padded = bool((lengths < time).any())
    mask = lengths_to_mask(lengths, time)
    observed = values[mask] if padded else values  # only observed steps must be in the support
    validate_data(observed, name=f"{name} (observed steps)" if padded else name, support=support,
                  num_categories=num_categories)
    if padded:  # zero the padding so that any emission can evaluate it (its factor is masked)
        values = torch.where(mask.reshape(batch, time, *(1,) * (values.dim() - 2)), values,
                             torch.zeros((), dtype=values.dtype, device=values.device))
    if float_dtype is not None and values.is_floating_point():
        values = values.to(float_dtype)
    return values, lengths


def _looks_ragged(values: Sequence[Any]) -> bool:
    try:
        return len({len(v) for v in values}) > 1
    except TypeError:
        return False
