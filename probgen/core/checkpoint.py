"""Checkpoints: atomic writes (temp file + fsync + rename), weights_only loads, param store and RNG
state as plain data."""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from torch.distributions import constraints

__all__ = [
    "atomic_save", "atomic_write_text", "load_checkpoint", "param_store_state",
    "restore_param_store", "rng_state", "set_rng_state", "CheckpointError", "FORMAT_VERSION",
]

FORMAT_VERSION = 2


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded safely or does not match what loads it."""


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: str | os.PathLike, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; files follow the umask like others
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_save(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``."""
    return _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return _atomic_write(path, lambda f: f.write(text.encode()))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load with ``torch.load(weights_only=True)``: tensors and plain containers only."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain data "
            f"(weights_only load failed: {str(error).splitlines()[0]}). probgen checkpoints never "
            "need that; a file that does may run code when unpickled") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a folder, not a checkpoint file; pass the file inside "
                              "it (e.g. model.pt)") from None
    except (RuntimeError, EOFError, IndexError, KeyError, ValueError, TypeError, AttributeError,
            UnicodeDecodeError, OverflowError, MemoryError, OSError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or not written by "
                              f"torch.save: {type(error).__name__}: {first[:200]}); write it "
                              "again with probgen.save or probgen fit") from None
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointError(f"{path} is not a probgen checkpoint (no 'format' entry)")
    if not isinstance(state["format"], str):
        raise CheckpointError(f"{path} is not a probgen checkpoint ('format' is "
                              f"{type(state['format']).__name__}, not a name)")
    version = state.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{path} has a malformed format_version {version!r}; it was not "
                              "written by probgen")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer probgen (format "
                              f"{state['format_version']} > {FORMAT_VERSION}); upgrade probgen")
    return state


# --- constraints as plain data ----------------------------------------------------------
def _named_constraints() -> dict[str, Any]:
    from pyro.distributions import constraints as pyro_constraints

    named = {}
    for module in (constraints, pyro_constraints):
        for name in dir(module):
            value = getattr(module, name)
            if isinstance(value, constraints.Constraint):
                named.setdefault(name, value)
    return named


def _encode_constraint(constraint: Any) -> Any:
    for name, value in _named_constraints().items():
        if constraint is value:
            return name
    if isinstance(constraint, constraints.independent):
        return {"independent": _encode_constraint(constraint.base_constraint),
                "ndims": constraint.reinterpreted_batch_ndims}
    for kind in ("interval", "half_open_interval"):
        if type(constraint) is getattr(constraints, f"_{kind.title().replace('_', '')}", None):
            return {kind: [float(constraint.lower_bound), float(constraint.upper_bound)]}
    if type(constraint).__name__ == "_GreaterThan":
        return {"greater_than": float(constraint.lower_bound)}
    if type(constraint).__name__ == "_GreaterThanEq":
        return {"greater_than_eq": float(constraint.lower_bound)}
    if type(constraint).__name__ == "_LessThan":
        return {"less_than": float(constraint.upper_bound)}
    return None  # unknown: the program must create the parameter before it is restored


def _decode_constraint(spec: Any) -> Any:
    if spec is None:
        return None
    if isinstance(spec, str):
        return _named_constraints()[spec]
    if "independent" in spec:
        return constraints.independent(_decode_constraint(spec["independent"]), spec["ndims"])
    if "interval" in spec:
        return constraints.interval(*spec["interval"])
    if "half_open_interval" in spec:
        return constraints.half_open_interval(*spec["half_open_interval"])
    if "greater_than" in spec:
        return constraints.greater_than(spec["greater_than"])
    if "greater_than_eq" in spec:
        return constraints.greater_than_eq(spec["greater_than_eq"])
    if "less_than" in spec:
        return constraints.less_than(spec["less_than"])
    raise CheckpointError(f"unknown constraint spec {spec!r}")


def param_store_state(exclude_prefix: str | None = None) -> dict[str, Any]:
    """The param store as plain data: unconstrained values and constraint specs."""
    store = pyro.get_param_store()
    params, specs = {}, {}
    for name in store.keys():
        if exclude_prefix and name.startswith(exclude_prefix):
            continue
        params[name] = store._params[name].detach().clone().cpu()
        specs[name] = _encode_constraint(store._constraints[name])
    return {"params": params, "constraints": specs}


def restore_param_store(state: dict[str, Any]) -> None:
    """Copy saved values into existing parameters in place (modules keep their references);
    create missing ones from their constraint spec."""
    store = pyro.get_param_store()
    for name, value in state["params"].items():
        if name in store._params:
            target = store._params[name]
            if target.shape != value.shape:
                raise CheckpointError(f"parameter '{name}' has shape {tuple(target.shape)} but the "
                                      f"checkpoint holds {tuple(value.shape)}; the model's "
                                      "configuration differs from the one that wrote it")
            with torch.no_grad():
                target.copy_(value.to(target.device, target.dtype))
            continue
        constraint = _decode_constraint(state["constraints"].get(name))
        if constraint is None:
            raise CheckpointError(f"parameter '{name}' has a constraint probgen cannot rebuild; "
                                  "run the program once before restoring")
        unconstrained = value.clone().requires_grad_(True)
        store._params[name] = unconstrained
        store._constraints[name] = constraint
        store._param_to_name[unconstrained] = name


# --- random number generators ----------------------------------------------------------
def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                      int(np_state[2]), int(np_state[3]), float(np_state[4])]}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
