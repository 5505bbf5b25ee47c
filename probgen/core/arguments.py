"""Constructor arguments of bundled families, checked against their annotations before building.

A family's ``__init__`` annotations already say what each argument is (``int``, ``float``,
``Sequence[int]``, ``bool``, ``str``, optionally ``| None``); :func:`checked_constructor` reads
them once and refuses what no annotation allows (``2.5`` layers, ``"3"`` features, ``NaN`` scales,
``True`` as a size), converts NumPy scalars to Python numbers, caps sizes that would take hours
or terabytes, and turns an allocation failure into a message naming the sizes.
"""

from __future__ import annotations

import functools
import inspect
import math
import random
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from probgen.core.validate import check_memory, is_number

__all__ = ["checked_constructor", "DEFAULT_SIZE_LIMIT", "BLOCK_COUNT_LIMIT"]

DEFAULT_SIZE_LIMIT = 2**24  # a width, a feature count or a step count beyond 16.7 million
BLOCK_COUNT_LIMIT = 1024  # repeated blocks (flow transforms, masks, layers) built in a loop

_depth = threading.local()


def _integer(owner: str, name: str, value: Any, minimum: int, maximum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not is_number(value) or (
            isinstance(value, (float, np.floating)) and not (math.isfinite(value)
                                                             and float(value).is_integer())):
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}; "
                         f"pass e.g. {name}={max(minimum, 2)}")
    number = int(value)
    if number < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {number}")
    if number > maximum:
        raise ValueError(f"{owner}: {name}={number:,} is over the largest allowed, {maximum:,} "
                         f"(sizes past it take hours or terabytes); pass a smaller {name}")
    return number


def _real(owner: str, name: str, value: Any) -> float:
    if not is_number(value) or not math.isfinite(float(value)):
        raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}")
    return float(value)


def _sequence(owner: str, name: str, value: Any, element: Callable[[Any], Any]) -> Any:
    if isinstance(value, torch.Tensor | np.ndarray):
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ValueError(f"{owner}: {name} must be a list or tuple, got {value!r}; pass e.g. "
                         f"{name}=(64, 64)")
    return type(value)(element(item) for item in value)


def _checker(owner: str, name: str, annotation: str, minimum: int, maximum: int
             ) -> Callable[[Any], Any] | None:
    """The check for one annotation, or None when the annotation is not one we read."""
    text = annotation.replace(" ", "")
    optional = False
    for suffix in ("|None", "None|"):
        if suffix in text:
            text, optional = text.replace(suffix, ""), True
    integer = functools.partial(_integer, owner, name, minimum=minimum, maximum=maximum)
    real = functools.partial(_real, owner, name)
    checks: dict[str, Callable[[Any], Any]] = {
        "int": integer,
        "float": real,
        "bool": lambda v: _boolean(owner, name, v),
        "str": lambda v: _string(owner, name, v),
        "Sequence[int]": lambda v: _sequence(owner, name, v, integer),
        "tuple[int,...]|list[int]": lambda v: _sequence(owner, name, v, integer),
        "tuple[int,...]": lambda v: _sequence(owner, name, v, integer),
        "Sequence[float]": lambda v: _sequence(owner, name, v, real),
        "float|Sequence[float]": lambda v: real(v) if is_number(v) else _sequence(
            owner, name, v, real),
        "Sequence[int|Sequence[int]]": lambda v: _sequence(
            owner, name, v, lambda item: integer(item) if is_number(item) or isinstance(
                item, (bool, np.bool_, str)) else _sequence(owner, name, item, integer)),
    }
    check = checks.get(text)
    if check is None:
        return None
    return (lambda v: None if v is None else check(v)) if optional else check


def _boolean(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{owner}: {name} must be True or False, got {value!r}")
    return bool(value)


def _string(owner: str, name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{owner}: {name} must be a string, got {value!r}")
    return value


def _annotation_text(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _allocation_failed(error: RuntimeError) -> bool:
    text = str(error).lower()
    return "allocate" in text or "out of memory" in text or "not enough memory" in text


def _check_parameter_memory(cls: type, init: Callable, bound: inspect.BoundArguments) -> None:
    """Build the model once on the meta device (no memory) and refuse it when its parameters
    and buffers would exceed ``max_parameter_bytes()``; a constructor that cannot run on meta
    is not estimated."""
    shell = cls.__new__(cls)
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        with torch.device("meta"):
            init(shell, *bound.args[1:], **bound.kwargs)
        tensors = list(shell.parameters()) + list(shell.buffers())
    except Exception:  # noqa: BLE001 - an estimate only; the real build reports real errors
        return
    finally:  # the estimate must not move any random stream the real build draws from
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
    num_elements = sum(t.numel() for t in tensors)
    element_bytes = max((t.element_size() for t in tensors), default=4)
    given = ", ".join(f"{k}={v!r}" for k, v in list(bound.arguments.items())[1:])
    check_memory(f"{cls.__name__}({given})", num_elements, element_bytes=element_bytes,
                 hint="pass smaller sizes")


def checked_constructor(cls: type) -> type:
    """Wrap ``cls.__init__`` (its own or inherited) so its arguments are checked by annotation.

    Limits: ``cls.argument_minimums`` (default 1 for sizes; e.g. ``seed`` 0) and
    ``cls.argument_limits`` (default :data:`DEFAULT_SIZE_LIMIT`) by argument name.
    """
    init = cls.__init__  # its own, or the one it inherits from an unregistered base
    if getattr(init, "_arguments_checked", False):
        return cls
    signature = inspect.signature(init)

    @functools.wraps(init)
    def checked_init(self: Any, *args: Any, **kwargs: Any) -> None:
        if getattr(_depth, "value", 0):  # a subclass's constructor already checked them
            init(self, *args, **kwargs)
            return
        owner = type(self).__name__
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as error:
            raise TypeError(f"{owner}: {error}") from None
        minimums = getattr(type(self), "argument_minimums", {})
        limits = getattr(type(self), "argument_limits", {})
        for name, value in list(bound.arguments.items())[1:]:
            parameter = signature.parameters[name]
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            if parameter.annotation is inspect.Parameter.empty:
                continue
            check = _checker(owner, name, _annotation_text(parameter.annotation),
                             minimums.get(name, 1), limits.get(name, DEFAULT_SIZE_LIMIT))
            if check is not None:
                bound.arguments[name] = check(value)
        _depth.value = getattr(_depth, "value", 0) + 1
        try:
            _check_parameter_memory(type(self), init, bound)
            init(*bound.args, **bound.kwargs)
        except RuntimeError as error:
            if not _allocation_failed(error):
                raise
            given = ", ".join(f"{k}={v!r}" for k, v in list(bound.arguments.items())[1:])
            raise ValueError(f"{owner}({given}) needs more memory than this machine can give "
                             f"({str(error).splitlines()[0][:120]}); pass smaller sizes") from None
        finally:
            _depth.value -= 1

    checked_init._arguments_checked = True  # type: ignore[attr-defined]
    cls.__init__ = checked_init
    return cls
