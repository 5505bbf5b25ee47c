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

from probgen.core.validate import check_regular_file

__all__ = [
    "atomic_save", "atomic_write_text", "load_checkpoint", "param_store_state",
    "restore_param_store", "rng_state", "set_rng_state", "CheckpointError", "FORMAT_VERSION",
    "check_output_path",
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


def check_output_path(name: str, path: Any) -> Path:
    """``path`` as a Path a file can be written to: a str or PathLike, no NUL byte, and no
    existing file standing where one of its folders must be (checked before anything runs)."""
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)) or isinstance(
            path, bytes):
        raise TypeError(f"{name} must be a file path (str or pathlib.Path), got "
                        f"{type(path).__name__}")
    text = os.fspath(path)
    if not str(text).strip():
        raise ValueError(f"{name} is empty; pass a file name such as 'model.pt'")
    if "\x00" in str(text):
        raise ValueError(f"{name} {str(text)!r} contains a NUL byte, which no file name can hold; "
                         "pass a path without it")
    folder = Path(text).parent
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{name} {text}: {parent} is a file, not a folder, so nothing "
                                 f"can be written inside it; pass a path in a folder (e.g. "
                                 f"{parent.with_suffix('')}_run/{Path(text).name})")
            break
    return Path(text)


def _atomic_write(path: str | os.PathLike, write) -> Path:
    path = check_output_path("path", path)
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
    try:  # stat only: a FIFO would block the read forever, /dev/zero never end
        path = check_regular_file("checkpoint", path, what="a checkpoint written by probgen.save "
                                  "or probgen.fit")
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint at {path}") from None
    except ValueError as error:
        raise CheckpointError(str(error)) from None
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


_BOUNDED = {"interval": 2, "half_open_interval": 2, "greater_than": 1, "greater_than_eq": 1,
            "less_than": 1}  # constraint specs with bounds, and how many numbers each takes


def _decode_constraint(spec: Any) -> Any:
    """A constraint from its spec, read through an allow-list: a name of a constraint object
    in torch's or Pyro's ``constraints``, ``{"independent": spec, "ndims": int}``, or one of
    ``_BOUNDED`` with finite numbers; anything else is a CheckpointError."""
    if spec is None:
        return None
    if isinstance(spec, str):
        named = _named_constraints()
        if spec not in named:
            raise CheckpointError(f"unknown constraint {spec[:60]!r}; a probgen file names one "
                                  "of torch's or Pyro's constraints")
        return named[spec]
    if isinstance(spec, dict) and set(spec) == {"independent", "ndims"}:
        ndims = spec["ndims"]
        if isinstance(ndims, bool) or not isinstance(ndims, int) or not 0 <= ndims <= 64:
            raise CheckpointError(f"malformed constraint spec: ndims {ndims!r} is not a small "
                                  "non-negative integer")
        return constraints.independent(_decode_constraint(spec["independent"]), ndims)
    if isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in _BOUNDED:
        kind, bounds = next(iter(spec.items()))
        bounds = bounds if isinstance(bounds, (list, tuple)) else [bounds]
        if len(bounds) != _BOUNDED[kind] or not all(
                isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds):
            raise CheckpointError(f"malformed constraint spec {kind}: {bounds!r}; it takes "
                                  f"{_BOUNDED[kind]} number(s)")
        return getattr(constraints, kind)(*(float(b) for b in bounds))
    raise CheckpointError(f"unknown constraint spec {str(spec)[:100]}; a probgen file holds a "
                          "constraint name, an independent or a bounded spec")


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
    if not isinstance(state, dict) or not isinstance(state.get("params"), dict) \
            or not isinstance(state.get("constraints", {}), dict):
        raise CheckpointError("the saved parameters are not {'params': {name: tensor}, "
                              "'constraints': {name: spec}}; the file is damaged or crafted")
    store = pyro.get_param_store()
    for name, value in state["params"].items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"saved parameter {str(name)[:60]!r} is not a named tensor; "
                                  "the file is damaged or crafted")
        if name in store._params:
            target = store._params[name]
            if target.shape != value.shape:
                raise CheckpointError(f"parameter '{name}' has shape {tuple(target.shape)} but the "
                                      f"checkpoint holds {tuple(value.shape)}; the model's "
                                      "configuration differs from the one that wrote it")
            with torch.no_grad():
                target.copy_(value.to(target.device, target.dtype))
            continue
        try:
            constraint = _decode_constraint(state.get("constraints", {}).get(name))
        except CheckpointError as error:
            raise CheckpointError(f"parameter '{name}': {error}; the file is damaged or "
                                  "crafted") from None
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
