"""Pyro's param store around a user's program: probe runs that leave nothing behind, and saved
values put into the ``nn.Module``s a program registers with ``pyro.module``.

``pyro.module(name, net)`` registers ``net``'s parameters only when the store lacks ``name``;
otherwise the store keeps its own tensor and ``net`` goes on using its own (Pyro's
``update_module_params=False``). A store loaded from a file, or left by an earlier run's
network, then holds values the program never uses. These helpers find such names by tracing
the program once, and either put the store's values into the module or drop the stale entry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.distributions import constraints

__all__ = ["scratch_param_store", "param_trace", "stale_module_parameters",
           "load_into_module", "drop_parameter", "example_rows", "example_from_rows"]

_DTYPES = ("float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64",
           "uint8", "bool")


@contextmanager
def scratch_param_store() -> Iterator[None]:
    """A block whose changes to the param store vanish on exit: entries it creates are dropped,
    entries it replaced or deleted come back. For probe runs of a program (its dtype, its
    sites), which must not leave a parameter initialised from the probe's rows behind. Values
    are not copied: run the probe under ``torch.no_grad()``."""
    store = pyro.get_param_store()
    params, specs, names = dict(store._params), dict(store._constraints), dict(store._param_to_name)
    try:
        yield
    finally:
        for kept, saved in ((store._params, params), (store._constraints, specs),
                            (store._param_to_name, names)):
            kept.clear()
            kept.update(saved)


def param_trace(program: Callable, guide: Callable | None, example: tuple) -> poutine.Trace:
    """The ``pyro.param`` sites of one run of ``program`` (then ``guide``) on ``example``, run
    on a scratch store: the run creates nothing."""
    with scratch_param_store(), poutine.block(), torch.no_grad(), \
            poutine.trace(param_only=True) as capture:
        program(*example)
        if guide is not None:
            guide(*example)
    return capture.trace


def stale_module_parameters(trace: poutine.Trace) -> dict[str, torch.nn.Parameter]:
    """``{name: parameter}`` for each module parameter registered in ``trace`` (by
    ``pyro.module`` or a ``PyroModule``) under a name whose store entry is another tensor: the
    module does not use what the store holds, and training would not reach the module."""
    store = pyro.get_param_store()
    stale = {}
    for name, site in trace.nodes.items():
        args = site["args"]
        if (len(args) > 1 and isinstance(args[1], torch.nn.Parameter) and name in store.keys()
                and store._params[name] is not args[1]
                and isinstance(store._constraints[name], type(constraints.real))):
            stale[name] = args[1]
    return stale


def load_into_module(name: str, parameter: torch.nn.Parameter) -> None:
    """Copy the store's value of ``name`` into the module's ``parameter`` (in place, in its own
    dtype and device), then make the store hold ``parameter`` itself, as a first
    ``pyro.module`` call would have: from then on training and saving reach the module."""
    store = pyro.get_param_store()
    stored = store._params[name]
    if stored.shape != parameter.shape:
        raise ValueError(f"parameter '{name}' has shape {tuple(stored.shape)} in the param store "
                         f"but the module registered under that name has "
                         f"{tuple(parameter.shape)}; build the module with the architecture it "
                         "was saved with, or register the new one under another name")
    with torch.no_grad():
        parameter.copy_(stored.detach().to(parameter.device, parameter.dtype))
    store._param_to_name.pop(stored, None)
    store._params[name] = parameter
    store._param_to_name[parameter] = name


def drop_parameter(name: str) -> None:
    """Remove ``name`` from the param store (its next ``pyro.param`` call creates it anew)."""
    store = pyro.get_param_store()
    if name in store.keys():
        del store[name]


def example_rows(batch: tuple[torch.Tensor, ...], rows: int = 2) -> list[dict[str, Any]]:
    """The first ``rows`` examples of ``batch`` as plain data (dtype name and nested lists, so
    a fit's settings stay printable, comparable and JSON-ready): what :func:`probgen.load`
    traces a program on to find the modules it registers."""
    return [{"dtype": str(t.dtype).removeprefix("torch."),
             "values": t[:rows].detach().cpu().tolist()} for t in batch]


def example_from_rows(rows: Any) -> tuple[torch.Tensor, ...] | None:
    """:func:`example_rows` back as tensors; None when absent or not of that form."""
    if not isinstance(rows, list) or not rows:
        return None
    tensors = []
    for part in rows:
        if not (isinstance(part, dict) and part.get("dtype") in _DTYPES
                and isinstance(part.get("values"), list)):
            return None
        try:
            tensors.append(torch.tensor(part["values"], dtype=getattr(torch, part["dtype"])))
        except (TypeError, ValueError, RuntimeError):
            return None
    return tuple(tensors)
