"""Input conversion at the boundary: NumPy arrays and lists become tensors, floating data take the
program's parameter dtype (torch's default dtype before any parameter exists); integers stay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pyro import poutine

from probgen.core.params import scratch_param_store

__all__ = ["floats_to_default_dtype", "parameter_dtype", "program_dtype", "cast_floats"]


def _convert(part: Any) -> Any:
    if isinstance(part, np.ndarray) and np.issubdtype(part.dtype, np.floating):
        return torch.as_tensor(part, dtype=torch.get_default_dtype())
    if isinstance(part, list) and part and not isinstance(part[0], (torch.Tensor, np.ndarray)):
        try:
            array = np.asarray(part)
        except (ValueError, TypeError):  # ragged rows: validate_data says how to fix them
            return part
        if np.issubdtype(array.dtype, np.floating):
            return torch.as_tensor(array, dtype=torch.get_default_dtype())
    return part


def floats_to_default_dtype(data: Any) -> Any:
    """Floating NumPy arrays and lists (float64 by NumPy's default) as tensors of torch's default
    dtype; tensors, integer arrays and everything else unchanged (checked later)."""
    if isinstance(data, tuple) or (isinstance(data, list) and data
                                   and isinstance(data[0], (torch.Tensor, np.ndarray))):
        return tuple(_convert(part) for part in data)
    return _convert(data)


def parameter_dtype(program: Callable, batch: tuple[torch.Tensor, ...]) -> torch.dtype | None:
    """The floating dtype of the parameters ``program`` uses, when they share one (None: no
    floating parameters, several dtypes, or the program cannot run on ``batch`` yet).

    A probe on two rows, then (if the program cannot run on two, e.g. it initialises K
    cluster centres from K data rows) on all of ``batch``; either runs on a scratch param
    store, so a parameter initialised from the probe's rows is not left behind."""
    size = int(batch[0].shape[0]) if batch else 0
    trace = None
    for rows in (2, size) if size > 2 else (size,):
        try:
            with scratch_param_store(), poutine.block(), torch.no_grad():
                trace = poutine.trace(program, param_only=True).get_trace(
                    *(t[:rows] for t in batch))
            break
        except Exception:  # noqa: BLE001 - any failure here is reported by the real run
            continue
    if trace is None:
        return None
    dtypes = {site["value"].dtype for site in trace.nodes.values()
              if site["type"] == "param" and site["value"].is_floating_point()}
    return dtypes.pop() if len(dtypes) == 1 else None


def cast_floats(batch: tuple[torch.Tensor, ...], dtype: torch.dtype | None
                ) -> tuple[torch.Tensor, ...]:
    """Floating tensors of ``batch`` as ``dtype`` (unchanged when None); integers stay integers."""
    if dtype is None:
        return batch
    return tuple(t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t for t in batch)


def program_dtype(program: Callable, batch: tuple[torch.Tensor, ...]) -> torch.dtype | None:
    """The dtype floating data should have for ``program``: its parameters' dtype, found by
    running it on the data as given, else on the data in torch's default dtype; None when the
    program has no floating parameters (the data keep their dtype)."""
    for candidate in (None, torch.get_default_dtype()):
        found = parameter_dtype(program, cast_floats(batch, candidate))
        if found is not None:
            return found
    return None
