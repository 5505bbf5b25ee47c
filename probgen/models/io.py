"""probgen.save / probgen.load: a bundled model, or a fit of your own program, in one file."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import autoguide as autoguides
from pyro.infer.autoguide import AutoGuide
from torch import nn

from probgen.core.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    atomic_save,
    check_output_path,
    load_checkpoint,
    param_store_state,
    restore_param_store,
)
from probgen.core.devices import check_device
from probgen.core.model import GenerativeModel
from probgen.core.params import (
    example_from_rows,
    load_into_module,
    param_trace,
    stale_module_parameters,
)
from probgen.core.validate import check_memory
from probgen.core.version import __version__
from probgen.infer.result import FitResult
from probgen.models.registry import get_model_class

__all__ = ["save", "load"]


def _check_path_type(path: Any, caller: str) -> None:
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{caller} path must be a file name (str or pathlib.Path), got "
                        f"{type(path).__name__}")


def save(obj: Any, path: str | os.PathLike) -> Path:
    """Save a fitted model to one file, written atomically.

    ``obj`` is a bundled :class:`GenerativeModel` (class, config, parameters and any guide
    parameters fit created), or the :class:`FitResult` of :func:`probgen.fit` on your own
    program: then the param store, the guide's module state (or its autoguide class) and the
    run's settings; reload it with ``probgen.load(path, model=program)``.
    """
    _check_path_type(path, "probgen.save")
    check_output_path("probgen.save path", path)
    if Path(path).is_dir():
        raise ValueError(f"probgen.save path {os.fspath(path)!r} is a folder; pass a file inside "
                         "it, such as 'folder/model.pt'")
    if isinstance(obj, FitResult) and isinstance(obj.model, GenerativeModel):
        obj = obj.model
    if isinstance(obj, FitResult):
        return atomic_save(_program_state(obj), path)
    if not isinstance(obj, GenerativeModel):
        raise TypeError(f"probgen.save takes a bundled GenerativeModel or the FitResult of "
                        f"probgen.fit, got {type(obj).__name__}")
    model = obj
    if not model.registry_name:
        raise TypeError(f"{type(model).__name__} is not registered; decorate it with "
                        "@probgen.models.register_model('name') so it can be rebuilt on load")
    module_state = {k: v for k, v in model.state_dict().items() if not k.startswith("autoguide.")}
    autoguide = model.autoguide
    state = {
        "format": "probgen-model", "format_version": FORMAT_VERSION, "probgen_version": __version__,
        "model": model.registry_name, "config": dict(model.config), "state_dict": module_state,
        "autoguide": type(autoguide).__name__ if autoguide is not None else None,
        "guide_params": param_store_state(exclude_prefix=model.pyro_name + "$$$")
        if autoguide is not None else None,
        "autoguide_example": list(model.autoguide_example)
        if autoguide is not None else None,
    }
    return atomic_save(state, path)


def _program_state(result: FitResult) -> dict[str, Any]:
    guide = result.guide
    autoguide = type(guide).__name__ if isinstance(guide, AutoGuide) else None
    module_state = None
    if isinstance(guide, nn.Module) and autoguide is None:
        module_state = {k: v.detach().cpu() for k, v in guide.state_dict().items()}
    model_state = None
    if isinstance(result.model, nn.Module):
        model_state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
    return {
        "format": "probgen-program", "format_version": FORMAT_VERSION,
        "probgen_version": __version__, "param_store": param_store_state(),
        "autoguide": autoguide, "guide_state": module_state, "model_state": model_state,
        "losses": torch.tensor(result.losses, dtype=torch.float64),
        "num_steps": result.num_steps, "method": result.method, "settings": dict(result.settings),
        "num_examples": result.num_examples,
    }


def _load_program(state: dict[str, Any], path: Any, model: Callable | None,
                  guide: Callable | None, map_location: Any = None) -> FitResult:
    """A program's fit (a ``probgen-program`` file or a fit checkpoint) back into the store."""
    run = state.get("run") if isinstance(state.get("run"), dict) else {}
    if state["format"] == "probgen-fit" and state.get("model_config") is not None:
        family = run.get("model", "a bundled model")
        config = state["model_config"]
        described = (f"{family}({_config_text(config)})" if isinstance(config, dict)
                     else str(family))
        raise TypeError(f"{path} is a fit checkpoint of the bundled model {described}, not of a "
                        f"Pyro program: resume it with probgen.fit({family}(...), data, "
                        "checkpoint=path, resume=True), or probgen.load the model.pt that run "
                        "saved")
    if model is None or isinstance(model, GenerativeModel) and state["format"] == "probgen-program":
        raise TypeError(f"{path} holds the parameters of your own Pyro program; pass it: "
                        "probgen.load(path, model=program, guide=guide)")
    if "param_store" not in state:
        raise CheckpointError(f"{path} is a damaged or crafted {state['format']} file: it has no "
                              "'param_store'; save the fit again")
    settings = state.get("settings") or state.get("run") or {}
    if not isinstance(settings, dict):
        raise CheckpointError(f"{path}: its settings are {type(settings).__name__}, not a dict; "
                              "the file is damaged or crafted")
    name = state.get("autoguide")
    if guide is None and name:
        autoguide_class = _autoguide_class(name, path)
    restore_param_store(state["param_store"])
    if isinstance(model, nn.Module) and state.get("model_state") is not None:
        model.load_state_dict(state["model_state"])
    if guide is None and name:
        hidden = set(settings.get("discrete_latents") or ())
        guide = autoguide_class(poutine.block(model, hide_fn=lambda msg: msg["name"] in hidden))
    if guide is None:
        guide = _empty_guide
    if isinstance(guide, nn.Module) and not isinstance(guide, AutoGuide) and state.get(
            "guide_state") is not None:
        guide.load_state_dict(state["guide_state"])
    settings = dict(settings)
    example = example_from_rows(settings.get("example"))
    with torch.random.fork_rng():  # the traces below draw; the caller's stream stays as it was
        _load_into_modules(model, guide, example, state["param_store"], path, map_location)
        _set_up_autoguide(guide, example, int(settings.get("batch_size") or 1))
    losses = [float(v) for v in state.get("losses", [])]
    return FitResult(model, guide, losses, int(state.get("num_steps", state.get("step", 0))),
                     0.0, method=str(state.get("method", settings.get("method", "svi"))),
                     num_examples=int(state.get("num_examples", settings.get("size", 0))),
                     settings=settings)


def _load_into_modules(model: Callable, guide: Callable, example: tuple | None,
                       saved: dict[str, Any], path: Any, map_location: Any) -> None:
    """Put the restored store values into the ``nn.Module``s that ``model`` and ``guide``
    register with ``pyro.module`` (or as ``PyroModule`` parameters): built anew in this process,
    they hold fresh weights the store's loaded tensors never reach (Pyro's ``pyro.module``
    keeps the store's tensor and leaves the module alone). One trace of each on the saved
    example rows finds them (on a scratch store: the trace creates nothing). An autoguide is
    not traced: its parameters follow the store by themselves, and its first call fixes its
    shapes, which must be the data's, not the example's."""
    registered = [name for name in saved.get("params", {}) if "$$$" in name]
    if not registered:
        return
    if example is None:
        warnings.warn(f"{path} holds no example rows (written by an older probgen), so "
                      f"probgen.load cannot trace the program to put the saved weights "
                      f"{registered[:3]} into your nn.Modules; they keep their own. Fit and "
                      "save again, or register them with pyro.module(name, net, "
                      "update_module_params=True)", stacklevel=3)
        return
    devices = [map_location] if map_location is not None else ["cpu"] + (
        ["cuda"] if torch.cuda.is_available() else [])
    failures = []
    for program in (model, guide):
        if isinstance(program, AutoGuide) or program is _empty_guide:
            continue
        for device in devices:
            try:
                trace = param_trace(program, None, tuple(t.to(device) for t in example))
                break
            except Exception as error:  # noqa: BLE001 - reported below, if nothing claims them
                failures.append(f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
        else:
            continue
        for name, parameter in stale_module_parameters(trace).items():
            try:
                load_into_module(name, parameter)
            except ValueError as error:
                raise CheckpointError(f"{path}: {error}") from None
    store = pyro.get_param_store()
    unclaimed = [name for name in registered if name in store.keys()
                 and not isinstance(store._params[name], nn.Parameter)]
    if unclaimed:
        reason = f" (running it on the saved example rows failed: {failures[0]})" if failures else ""
        warnings.warn(f"the saved weights {unclaimed[:3]} are in the param store but no "
                      f"nn.Module that the model and guide register with pyro.module took "
                      f"them{reason}; pass probgen.load the model and guide that were fitted",
                      stacklevel=3)


def _set_up_autoguide(guide: Callable, example: tuple | None, rows: int) -> None:
    """Build an autoguide now, as fit built it (on its first batch, ``rows`` examples), rather
    than in its first call: that call draws from torch's RNG (the prototype trace, the initial
    values), so a seeded ``evaluate`` after ``load`` would draw other posterior samples than
    the same call before the save, and on held-out rows it would size per-example latents by
    them, not by the training set the saved values belong to. The example rows, repeated to
    ``rows``, give the shapes; the values come from the store."""
    if not isinstance(guide, AutoGuide) or guide.prototype_trace is not None or example is None:
        return
    index = torch.arange(max(rows, 1)) % len(example[0])
    try:
        with torch.no_grad(), poutine.block():
            guide(*(t[index] for t in example))
    except Exception:  # noqa: BLE001 - the guide then builds itself on first use, as before
        guide.prototype_trace = None


def _autoguide_class(name: Any, path: Any) -> type[AutoGuide]:
    """The autoguide class a file names, read through an allow-list: a class in
    ``pyro.infer.autoguide.__all__`` deriving from ``AutoGuide`` (never any other attribute)."""
    allowed = {key for key in autoguides.__all__ if isinstance(getattr(autoguides, key, None), type)
               and issubclass(getattr(autoguides, key), AutoGuide)
               and key not in ("AutoGuide", "AutoGuideList")}
    if not isinstance(name, str) or name not in allowed:
        raise CheckpointError(f"{path} names the autoguide {str(name)[:60]!r}, which is not one of "
                              f"Pyro's autoguides ({', '.join(sorted(allowed))}); the file is "
                              "damaged or crafted")
    return getattr(autoguides, name)


def _empty_guide(*args: Any, **kwargs: Any) -> None:
    return None


def _config_text(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in config.items())[:200]


def _checked_model_state(state: dict[str, Any], path: Any) -> tuple[type, dict, dict]:
    """The class, config and state_dict of a ``probgen-model`` file, their types checked."""
    for key, kind in (("model", str), ("config", dict), ("state_dict", dict)):
        if not isinstance(state.get(key), kind):
            raise CheckpointError(f"{path} is a damaged or crafted model file: '{key}' is "
                                  f"{type(state.get(key)).__name__}, not {kind.__name__}; save the "
                                  "model again with probgen.save")
    try:
        cls = get_model_class(state["model"])
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None
    config = state["config"]
    if not all(isinstance(k, str) for k in config):
        raise CheckpointError(f"{path}: the saved config has non-string keys; it was crafted")
    saved = state["state_dict"]
    for name, value in saved.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: state_dict entry {name!r} is not a named tensor; the "
                                  "file is damaged or crafted")
    return cls, config, saved


def _check_shapes_before_allocating(cls: type, config: dict[str, Any], saved: dict[str, Any],
                                    path: Any) -> None:
    """Build the model on the meta device (no memory) and compare its parameter shapes with the
    file's before the real constructor allocates them: a crafted config such as
    ``num_components=10**6`` is refused here, with the memory it would have taken."""
    try:
        with torch.device("meta"):
            shadow = cls(**config)
        expected = shadow.state_dict()
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: the saved config does not fit {cls.__name__} ({error}); "
                              "the file is damaged or crafted") from None
    except Exception:  # a constructor that cannot run on meta: the real one checks itself
        return
    numel = sum(t.numel() for t in expected.values())
    try:
        check_memory(f"{path}: {cls.__name__}({_config_text(config)})", numel,
                     hint="the file is damaged or crafted")
    except ValueError as error:
        raise CheckpointError(str(error)) from None
    for name, value in saved.items():
        if name in expected and tuple(expected[name].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{path}: parameter '{name}' has shape {tuple(value.shape)} in the file but "
                f"{cls.__name__}({_config_text(config)}) needs {tuple(expected[name].shape)}; the "
                "config and the parameters disagree (damaged or crafted file)")


def _build_model(cls: type, config: dict, state: dict, path: Any) -> Any:
    """``cls(**config)``, a config it refuses reported as a damaged or foreign file."""
    try:
        return cls(**config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: the saved config does not fit {cls.__name__} ({error}); "
                              f"it was written by probgen {state.get('probgen_version')} or "
                              "crafted") from None


def _first_float_dtype(tensors: Any) -> torch.dtype | None:
    return next((v.dtype for v in tensors if torch.is_tensor(v) and v.is_floating_point()), None)


def _load_module_state(model: Any, saved: dict, config: dict, path: Any) -> None:
    """Saved parameters into ``model``, in the saved float dtype; every key must match."""
    cls = type(model)
    saved_dtype = _first_float_dtype(saved.values())
    built_dtype = _first_float_dtype(model.state_dict().values())
    if saved_dtype is not None and built_dtype not in (None, saved_dtype):
        model.to(saved_dtype)  # a float64 model comes back float64, not rounded to float32
    try:
        missing, unexpected = model.load_state_dict(saved, strict=False)
    except RuntimeError as error:  # size mismatches
        first = str(error).strip().splitlines()
        detail = next((line.strip() for line in first if "size mismatch" in line), first[0])
        raise CheckpointError(f"{path}: saved parameters do not fit {cls.__name__}"
                              f"({_config_text(config)}): {detail[:300]}") from None
    if missing or unexpected:
        raise CheckpointError(f"{path}: saved parameters do not match {cls.__name__}: missing "
                              f"{missing}, unexpected {unexpected}")


def _restore_model_autoguide(model: Any, state: dict, path: Any) -> None:
    """A bundled model's autoguide rebuilt by class, its parameters back in the param store."""
    autoguide_class = _autoguide_class(state["autoguide"], path)
    example = state.get("autoguide_example") or ()
    if not isinstance(state.get("guide_params"), dict) or not isinstance(
            example, (list, tuple)) or not all(isinstance(t, torch.Tensor) for t in example):
        raise CheckpointError(f"{path} names the autoguide {state['autoguide']} but its "
                              "'guide_params' or 'autoguide_example' are missing or not "
                              "tensors; the file is damaged or crafted")
    restore_param_store(state["guide_params"])
    model.autoguide = autoguide_class(model.model)
    example = tuple(example)
    model.autoguide_example = example
    if example:
        with torch.no_grad():  # builds the guide's shapes; values come from the store
            poutine.block(model.autoguide)(*example)


def load(path: str | os.PathLike, *, model: Callable | None = None, guide: Callable | None = None,
         map_location: str | torch.device | None = None) -> Any:
    """Rebuild what :func:`save` wrote.

    A bundled model comes back whole (same class, config, parameters and guide). Your own
    program's fit (``probgen.save(fit_result, path)``, or a ``fit(checkpoint=...)`` file) is
    restored into Pyro's param store for ``model`` (and ``guide``: your module, or the autoguide
    rebuilt by class), and into the ``nn.Module``s they register with ``pyro.module`` (found by
    tracing them once on two example rows saved with the fit), and returned as a
    :class:`FitResult` whose ``model``/``guide`` evaluate exactly as before the save.
    """
    _check_path_type(path, "probgen.load")
    if map_location is not None:
        check_device(map_location, name="map_location")
    state = load_checkpoint(path)
    if state["format"] in ("probgen-program", "probgen-fit") and not isinstance(
            model, GenerativeModel):
        return _load_program(state, path, model, guide, map_location)
    if state["format"] != "probgen-model":
        raise CheckpointError(f"{path} holds a {state['format']!r} checkpoint, not a saved model; "
                              "resume it with probgen.fit(..., checkpoint=path, resume=True)")
    cls, config, saved = _checked_model_state(state, path)
    config = {**cls.saved_config_defaults, **config}
    _check_shapes_before_allocating(cls, config, saved, path)
    model = _build_model(cls, config, state, path)
    _load_module_state(model, saved, config, path)
    if state.get("autoguide"):
        _restore_model_autoguide(model, state, path)
    if map_location is not None:
        model.to(map_location)
    return model.eval()  # as fit leaves it: dropout off, log_prob deterministic
