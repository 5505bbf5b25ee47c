"""The one place that checks data at probgen's boundary: shape, dtype, NaN/Inf, support, emptiness."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["SUPPORTS", "as_batch", "validate_data", "check_device", "check_size",
           "check_finite", "check_memory", "max_parameter_bytes",
           "check_seed", "check_probability", "check_option", "check_num_samples",
           "max_sample_bytes", "check_regular_file", "max_file_bytes", "is_number"]

SUPPORTS = ("real", "positive", "nonnegative", "unit_interval", "binary", "count", "categorical")


def is_number(value: Any) -> bool:
    """Whether ``value`` is a real number: Python or NumPy int/float, not a bool or a string."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def check_size(name: str, value: Any, *, minimum: int = 1, maximum: int | None = None,
               fix: str = "") -> int:
    """``value`` as an int >= ``minimum`` (and <= ``maximum``); refuses booleans, fractions
    (2.7), NaN and strings; NumPy integers are accepted.

    An integral float (``3.0``, as JSON may give) is accepted and returned as ``3``. Past
    ``maximum`` the message gives the number, the limit and ``fix`` (what to do instead).
    """
    if isinstance(value, (bool, np.bool_)) or value is None:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}; pass a number "
                         f"such as {name}={max(minimum, 2)}")
    if isinstance(value, (int, np.integer)):
        number = int(value)
    elif isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        number = int(value)
    else:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}; sizes are "
                         f"whole numbers (e.g. {name}={max(minimum, 2)})")
    if number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name}={number:,} is over the limit of {maximum:,} (it would take hours "
                         f"or more memory than a machine has); {fix or f'pass a smaller {name}'}")
    return number


def check_seed(seed: Any) -> int | None:
    """``seed`` as an int in 0 .. 2**32 - 1 (None passes); refuses booleans, floats, strings."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) \
            or not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be an integer in 0 .. 2**32 - 1, got {seed!r}")
    return int(seed)


def check_finite(name: str, value: Any, *, positive: bool = False, nonnegative: bool = False
                 ) -> float:
    """``value`` as a finite float (and > 0 or >= 0 when asked); refuses NaN, Inf, booleans and
    strings; NumPy scalars and 0-d arrays/tensors holding one number are accepted."""
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        value = value.item()  # a 0-d array holding one number
    elif isinstance(value, torch.Tensor) and value.dim() == 0 and (
            value.is_floating_point() or value.dtype in (torch.int64, torch.int32)):
        value = value.item()
    if not is_number(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {number}; pass a real value "
                         f"(NaN or Inf would make every parameter NaN)")
    if positive and not number > 0:
        raise ValueError(f"{name} must be positive, got {number}")
    if nonnegative and not number >= 0:
        raise ValueError(f"{name} must be >= 0, got {number}")
    return number


def check_probability(name: str, value: Any, *, open_interval: bool = False) -> float:
    """``value`` as a float in [0, 1] (``open_interval``: in (0, 1)); NumPy scalars accepted."""
    number = check_finite(name, value)
    inside = 0 < number < 1 if open_interval else 0 <= number <= 1
    if not inside:
        interval = "(0, 1)" if open_interval else "[0, 1]"
        raise ValueError(f"{name} must be a probability in {interval}, got {number}; e.g. "
                         f"{name}=0.5")
    return number


def check_option(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` as one of the strings ``choices`` (a NumPy string is accepted); else a
    ValueError listing them."""
    if isinstance(value, str) and value in choices:
        return str(value)
    hint = ""
    if isinstance(value, str):
        folded = [c for c in choices if c.lower() == value.strip().lower()]
        hint = f" (did you mean {folded[0]!r}?)" if folded else ""
    raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}{hint}")


def _limit_from_env(variable: str, default: int) -> int:
    import os

    try:
        return int(float(os.environ.get(variable, default)))
    except ValueError:
        return default


def max_sample_bytes() -> int:
    """The most memory one call may fill with samples, particles or draws (env
    PROBGEN_MAX_SAMPLE_BYTES, default 8 GiB)."""
    return _limit_from_env("PROBGEN_MAX_SAMPLE_BYTES", 8 * 2**30)


def check_num_samples(name: str, value: Any, *, per_sample: int = 1, element_bytes: int = 4,
                      fix: str = "") -> int:
    """``value`` as a positive int whose ``value × per_sample`` values of ``element_bytes`` fit
    under :func:`max_sample_bytes`, checked before anything is allocated or drawn.

    ``fix`` says what to do instead (``{largest}`` in it becomes the largest value that fits);
    by default: at most that many per call.

    Example:
        >>> check_num_samples("num_samples", np.int64(16), per_sample=784)
        16
    """
    number = check_size(name, value)
    need = number * max(int(per_sample), 1) * element_bytes
    limit = max_sample_bytes()
    if need > limit:
        largest = f"{max(limit // (max(int(per_sample), 1) * element_bytes), 1):,}"
        advice = (fix or "use at most {largest} per call (a loop of calls for more)").format(
            largest=largest)
        raise ValueError(f"{name}={number:,} would fill {_human(need)} ({number:,} × "
                         f"{max(int(per_sample), 1):,} values), over the {_human(limit)} limit; "
                         f"{advice}, or raise the limit with PROBGEN_MAX_SAMPLE_BYTES")
    return number


def max_file_bytes() -> int:
    """The largest file probgen reads whole (env PROBGEN_MAX_FILE_BYTES, default 64 GiB)."""
    return _limit_from_env("PROBGEN_MAX_FILE_BYTES", 64 * 2**30)


def check_regular_file(name: str, path: Any, *, what: str = "a file",
                       max_bytes: int | None = None) -> Path:
    """``path`` as a Path to an existing regular file no larger than ``max_bytes`` (default
    :func:`max_file_bytes`), checked with ``stat`` only: a FIFO, a device, a socket or a folder
    is refused without being opened (opening a FIFO waits for a writer forever; a device such as
    /dev/zero never ends).

    Raises FileNotFoundError when nothing is there, ValueError otherwise; ``what`` says what the
    file should be (e.g. "a checkpoint written by probgen.save").
    """
    import os
    import stat

    if not isinstance(path, (str, os.PathLike)) or isinstance(path, bytes):
        raise TypeError(f"{name} must be a file path (str or pathlib.Path), got "
                        f"{type(path).__name__}")
    text = os.fspath(path)
    if not text or not str(text).strip():
        raise ValueError(f"{name} is empty; pass the path of {what}")
    if "\x00" in str(text):
        raise ValueError(f"{name} {str(text)!r} contains a NUL byte, which no file name can hold")
    try:
        info = os.stat(text)
    except FileNotFoundError:
        raise FileNotFoundError(f"{name} {text}: no such file; pass the path of {what}") from None
    except (OSError, ValueError) as error:
        raise ValueError(f"{name} {text} cannot be read ({getattr(error, 'strerror', None) or error})"
                         f"; pass the path of {what}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ValueError(f"{name} {text} is a folder; pass {what} (a file inside it)")
    if not stat.S_ISREG(info.st_mode):
        kind = ("a pipe (FIFO)" if stat.S_ISFIFO(info.st_mode) else
                "a socket" if stat.S_ISSOCK(info.st_mode) else "a device")
        raise ValueError(f"{name} {text} is {kind}, not a regular file (probgen reads a file "
                         f"whole, and this one would block or never end); pass {what} saved "
                         "on disk")
    limit = max_file_bytes() if max_bytes is None else max_bytes
    if info.st_size > limit:
        raise ValueError(f"{name} {text} is {_human(info.st_size)}, over the {_human(limit)} "
                         f"limit for {what}; is it the right file? (PROBGEN_MAX_FILE_BYTES "
                         "raises the limit)")
    return Path(text)


def max_parameter_bytes() -> int:
    """The most memory a constructor may allocate for parameters (env PROBGEN_MAX_PARAMETER_BYTES,
    default 4 GiB): beyond it a size is almost surely a typo or a crafted file."""
    import os

    try:
        return int(float(os.environ.get("PROBGEN_MAX_PARAMETER_BYTES", 4 * 2**30)))
    except ValueError:
        return 4 * 2**30


def _human(num_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if num_bytes < 1024 or unit == "PiB":
            return f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.1f} PiB"


def check_memory(what: str, num_elements: int, *, element_bytes: int = 4, hint: str = "") -> None:
    """Refuse to allocate ``num_elements`` parameters when they exceed ``max_parameter_bytes()``,
    stating the memory they would take, before anything is allocated."""
    need = int(num_elements) * element_bytes
    limit = max_parameter_bytes()
    if need > limit:
        raise ValueError(f"{what} would allocate {_human(need)} of parameters ({int(num_elements):,} "
                         f"values), over the {_human(limit)} limit; {hint + '; ' if hint else ''}"
                         "or raise the limit with PROBGEN_MAX_PARAMETER_BYTES")


def _check_numpy_dtype(x: np.ndarray, name: str) -> None:
    if x.dtype == object:
        raise TypeError(f"{name} is a numpy array of Python objects (ragged rows or None?); "
                        "pad it to a rectangular array of numbers first (see probgen.data.sequences)")
    if x.dtype.kind in "USV":
        raise TypeError(f"{name} holds {'text' if x.dtype.kind in 'US' else 'structured records'} "
                        f"(numpy dtype {x.dtype}), not numbers; convert it to a numeric array "
                        "(e.g. np.asarray(x, dtype=float)) or encode categories as integers")
    if x.dtype.kind in "mM":
        raise TypeError(f"{name} holds dates/times (numpy dtype {x.dtype}), not numbers; convert "
                        "them to numbers first (e.g. x.astype('int64'))")


def _to_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        _check_numpy_dtype(x, name)
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, (list, tuple)):
        try:
            array = np.asarray(x)
        except (ValueError, TypeError) as error:
            raise TypeError(f"{name} could not be made into a tensor ({str(error).split('.')[0]}); "
                            "rows of different lengths need padding (see probgen.data.sequences)"
                            ) from None
        _check_numpy_dtype(array, name)
        return torch.as_tensor(array)
    raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")


def _first_bad_row(bad: torch.Tensor) -> tuple[int, int]:
    rows = bad.reshape(bad.shape[0], -1).any(-1) if bad.dim() > 0 else bad.reshape(1)
    index = torch.nonzero(rows).flatten()
    return int(index.numel()), int(index[0]) if index.numel() else -1


def _check_tensor_kind(x: torch.Tensor, name: str) -> torch.Tensor:
    """Refuse meta and complex tensors; booleans become the default float dtype."""
    if x.device.type == "meta":
        raise ValueError(f"{name} is on the meta device and holds no values; pass real data")
    if x.dtype == torch.bool:
        x = x.to(torch.get_default_dtype())
    if x.is_complex():
        raise TypeError(f"{name} is complex ({x.dtype}); probgen models real or discrete data")
    return x


def _check_shape(x: torch.Tensor, name: str, *, min_rank: int, max_rank: int | None,
                 allow_empty: bool, event_shape: Sequence[int] | None) -> None:
    """Rank within [min_rank, max_rank], at least one example, and the expected event shape."""
    if x.dim() < min_rank:
        raise ValueError(f"{name} must have at least {min_rank} dimension(s) (examples first), "
                         f"got shape {tuple(x.shape)}; for one example use x[None]")
    if max_rank is not None and x.dim() > max_rank:
        raise ValueError(f"{name} must have at most {max_rank} dimensions, got shape {tuple(x.shape)}")
    if x.dim() > 0 and x.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); pass at least one example")
    if event_shape is not None and tuple(x.shape[1:]) != tuple(event_shape):
        raise ValueError(f"{name} has examples of shape {tuple(x.shape[1:])} but the model expects "
                         f"{tuple(event_shape)}; pass data with the features the model was fitted on")


def _is_exactly_binary(x: torch.Tensor, support: str) -> bool:
    """Fast pass for float binary data: x equals its rounding clamped to [0, 1].

    Σ|difference| = 0 (a sum of non-negative terms: no NaN, no Inf) means finite, whole and 0/1
    at once, so the later checks can be skipped (fit checks every transformed mini-batch).
    """
    return (support == "binary" and x.is_floating_point()
            and bool(x.round().clamp_(0, 1).sub_(x).abs_().sum() == 0))


def _check_finite_values(x: torch.Tensor, name: str) -> None:
    """No NaN or Inf; a finite sum rules both out at once (a sum that overflows takes the exact check)."""
    if bool(torch.isfinite(x.sum())):
        return
    bad = ~torch.isfinite(x)
    if bad.any():
        count, first = _first_bad_row(bad)
        what = "NaN" if torch.isnan(x).any() else "Inf"
        raise ValueError(f"{name} has {what} in {count} row(s) (first: row {first}); "
                         "drop or impute them before fitting or evaluating")


def _check_discrete_values(x: torch.Tensor, name: str, support: str) -> None:
    """Whole numbers for discrete supports, and 0/1 for ``"binary"`` (data not already found binary)."""
    if support in ("binary", "count", "categorical") and x.is_floating_point() \
            and not torch.equal(x, torch.round(x)):
        raise ValueError(f"{name} must hold whole numbers for a {support} likelihood but has "
                         "fractional values; binarize or round it (see probgen.data.transforms)")
    if support == "binary" and not ((x == 0) | (x == 1)).all():
        raise ValueError(f"{name} must be binary (0/1) for a Bernoulli likelihood but has values "
                         f"in [{float(x.min()):g}, {float(x.max()):g}]; binarize it first "
                         "(probgen.data.transforms.binarize)")


def _check_range(x: torch.Tensor, name: str, support: str, num_categories: int | None) -> None:
    """Values inside the support: >= 0, < num_categories, > 0 or in [0, 1] as it requires."""
    if support in ("count", "categorical", "nonnegative") and (x < 0).any():
        raise ValueError(f"{name} has negative values (min {float(x.min()):g}) but the "
                         f"{support} likelihood needs values >= 0")
    if support == "categorical":
        if num_categories is None:
            raise ValueError("support='categorical' needs num_categories")
        if (x >= num_categories).any():
            raise ValueError(f"{name} has category {int(x.max())} but the model has "
                             f"{num_categories} categories (0..{num_categories - 1})")
    if support == "positive" and (x <= 0).any():
        raise ValueError(f"{name} must be > 0 but has min {float(x.min()):g}")
    if support == "unit_interval" and ((x < 0) | (x > 1)).any():
        raise ValueError(f"{name} must lie in [0, 1] but spans [{float(x.min()):g}, "
                         f"{float(x.max()):g}]; rescale it (e.g. x / 255)")


def validate_data(
    x: Any,
    *,
    name: str = "data",
    support: str = "real",
    num_categories: int | None = None,
    event_shape: Sequence[int] | None = None,
    min_rank: int = 1,
    max_rank: int | None = None,
    allow_empty: bool = False,
    float_dtype: torch.dtype | None = None,
    finite: bool = True,
) -> torch.Tensor:
    """Check ``x`` and return it as a tensor; raise ValueError/TypeError naming problem and fix.

    Args:
        support: what values are allowed (one of ``SUPPORTS``).
        num_categories: for ``support="categorical"``: values must lie in ``0..num_categories-1``.
        event_shape: the trailing shape each example must have (e.g. ``(784,)``).
        float_dtype: when given, real-valued data are cast to it (integers are kept for counts).

    Example:
        >>> validate_data(torch.ones(3, 2)).shape
        torch.Size([3, 2])
    """
    if support not in SUPPORTS:
        raise ValueError(f"unknown support {support!r}; choose one of {SUPPORTS}")
    x = _check_tensor_kind(_to_tensor(x, name), name)
    _check_shape(x, name, min_rank=min_rank, max_rank=max_rank, allow_empty=allow_empty,
                 event_shape=event_shape)
    binary = _is_exactly_binary(x, support)
    if x.is_floating_point() and finite and not binary:
        _check_finite_values(x, name)
    if not binary:
        _check_discrete_values(x, name, support)
    _check_range(x, name, support, num_categories)
    if float_dtype is not None and (x.is_floating_point() or support in ("real", "positive",
                                                                           "unit_interval")):
        x = x.to(float_dtype)
    return x


def as_batch(data: Any, *, name: str = "data", model_device: torch.device | None = None,
             finite: bool = True) -> tuple[torch.Tensor, ...]:
    """Normalize ``data`` (a tensor or a tuple of tensors sharing the first dim) to a tuple.

    Every tensor is checked for emptiness and NaN/Inf (``finite=False``: left to a model that
    checks its own padding); their first dimensions must agree, since probgen slices them
    together when it mini-batches or chunks.
    """
    if isinstance(data, dict):
        raise TypeError(f"{name} must be a tensor or a tuple of tensors, not a dict; pass "
                        "the values in the order your model's arguments take them")
    parts = tuple(data) if isinstance(data, (tuple, list)) and not _is_numeric_list(data) else (data,)
    if not parts:
        raise ValueError(f"{name} is an empty tuple; pass at least one tensor")
    for part in parts:
        if model_device is not None and isinstance(part, torch.Tensor) and part.device != model_device:
            raise ValueError(f"{name} is on {part.device} but the model is on {model_device}; "
                             f"move one of them (x.to('{model_device}') or pass device=...)")
    tensors = tuple(validate_data(p, name=f"{name}[{i}]" if len(parts) > 1 else name,
                                  finite=finite)
                    for i, p in enumerate(parts))
    sizes = {t.shape[0] for t in tensors}
    if len(sizes) > 1:
        shapes = ", ".join(str(tuple(t.shape)) for t in tensors)
        raise ValueError(f"the tensors in {name} must share their first (example) dimension, got "
                         f"shapes {shapes}; per-example side data needs one row per example")
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise ValueError(f"the tensors in {name} are on different devices {sorted(map(str, devices))}; "
                         "move them to one device (or pass device=... to probgen)")
    return tensors


def _is_numeric_list(data: Any) -> bool:
    return isinstance(data, list) and len(data) > 0 and not isinstance(
        data[0], (torch.Tensor, np.ndarray))


def check_device(data: tuple[torch.Tensor, ...], module: torch.nn.Module | None) -> None:
    """Raise if data and a model's parameters are on different devices."""
    if module is None:
        return
    params = list(module.parameters())
    if not params or not data:
        return
    if params[0].device != data[0].device:
        raise ValueError(f"data is on {data[0].device} but the model's parameters are on "
                         f"{params[0].device}; pass device='{params[0].device}' or move the data "
                         f"with .to('{params[0].device}')")
