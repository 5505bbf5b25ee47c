"""The one place that checks data at probgen's boundary: shape, dtype, NaN/Inf, support, emptiness."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["SUPPORTS", "as_batch", "validate_data", "check_device", "check_size",
           "check_finite", "check_memory", "max_parameter_bytes", "check_device_name",
           "check_seed"]

SUPPORTS = ("real", "positive", "nonnegative", "unit_interval", "binary", "count", "categorical")


def check_size(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; refuses booleans, fractions (2.7), NaN and strings.

    An integral float (``3.0``, as JSON may give) is accepted and returned as ``3``.
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
    return number


def check_device_name(name: str, device: Any) -> Any:
    """``device`` unchanged when torch can parse it (None passes); else a ValueError."""
    if device is None or isinstance(device, torch.device):
        return device
    try:
        torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{name}={device!r} is not a device; use 'cpu', 'cuda', 'cuda:1' or "
                         "'mps'") from None
    return device


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
    """``value`` as a finite float (and > 0 or >= 0 when asked); refuses NaN, Inf and booleans."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
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
    x = _to_tensor(x, name)
    if x.device.type == "meta":
        raise ValueError(f"{name} is on the meta device and holds no values; pass real data")
    if x.dtype == torch.bool:
        x = x.to(torch.get_default_dtype())
    if x.is_complex():
        raise TypeError(f"{name} is complex ({x.dtype}); probgen models real or discrete data")
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
    if x.is_floating_point() and finite:
        bad = ~torch.isfinite(x)
        if bad.any():
            count, first = _first_bad_row(bad)
            what = "NaN" if torch.isnan(x).any() else "Inf"
            raise ValueError(f"{name} has {what} in {count} row(s) (first: row {first}); "
                             "drop or impute them before fitting or evaluating")
    discrete = support in ("binary", "count", "categorical")
    if discrete and x.is_floating_point() and not torch.equal(x, torch.round(x)):
        raise ValueError(f"{name} must hold whole numbers for a {support} likelihood but has "
                         "fractional values; binarize or round it (see probgen.data.transforms)")
    if support == "binary" and not ((x == 0) | (x == 1)).all():
        raise ValueError(f"{name} must be binary (0/1) for a Bernoulli likelihood but has values "
                         f"in [{float(x.min()):g}, {float(x.max()):g}]; binarize it first "
                         "(probgen.data.transforms.binarize)")
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
