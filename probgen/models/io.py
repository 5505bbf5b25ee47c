"""probgen.save / probgen.load: a bundled model (class, config, parameters, guide) in one file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from pyro import poutine
from pyro.infer import autoguide as autoguides

from probgen.core.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    atomic_save,
    load_checkpoint,
    param_store_state,
    restore_param_store,
)
from probgen.core.model import GenerativeModel
from probgen.core.version import __version__
from probgen.models.registry import get_model_class

__all__ = ["save", "load"]


def save(model: Any, path: str | os.PathLike) -> Path:
    """Save a bundled model (class, config, parameters) and any guide parameters fit created.

    Raw Pyro programs keep their parameters in Pyro's param store: save those with
    ``probgen.core.checkpoint.atomic_save({"format": "probgen-params", **param_store_state()}, path)``
    or by passing ``checkpoint=`` to :func:`probgen.fit`.
    """
    if not isinstance(model, GenerativeModel):
        raise TypeError(f"probgen.save takes a bundled GenerativeModel, got {type(model).__name__}; "
                        "for your own Pyro program use probgen.fit(..., checkpoint=path), which "
                        "saves the param store")
    if not model.registry_name:
        raise TypeError(f"{type(model).__name__} is not registered; decorate it with "
                        "@probgen.models.register_model('name') so it can be rebuilt on load")
    module_state = {k: v for k, v in model.state_dict().items() if not k.startswith("autoguide.")}
    autoguide = getattr(model, "autoguide", None)
    state = {
        "format": "probgen-model", "format_version": FORMAT_VERSION, "probgen_version": __version__,
        "model": model.registry_name, "config": dict(model.config), "state_dict": module_state,
        "autoguide": type(autoguide).__name__ if autoguide is not None else None,
        "guide_params": param_store_state(exclude_prefix=model.pyro_name + "$$$")
        if autoguide is not None else None,
        "autoguide_example": list(getattr(model, "autoguide_example", ()))
        if autoguide is not None else None,
    }
    return atomic_save(state, path)


def load(path: str | os.PathLike, *, map_location: str | torch.device | None = None) -> Any:
    """Rebuild a model saved with :func:`save`: same class, config, parameters (and guide)."""
    state = load_checkpoint(path)
    if state["format"] != "probgen-model":
        raise CheckpointError(f"{path} holds a {state['format']!r} checkpoint, not a saved model; "
                              "resume it with probgen.fit(..., checkpoint=path, resume=True)")
    cls = get_model_class(state["model"])
    try:
        model = cls(**state["config"])
    except TypeError as error:
        raise CheckpointError(f"the saved config does not fit {cls.__name__} ({error}); it was "
                              f"written by probgen {state.get('probgen_version')}") from None
    missing, unexpected = model.load_state_dict(state["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"saved parameters do not match {cls.__name__}: missing {missing}, "
                              f"unexpected {unexpected}")
    if state.get("autoguide"):
        restore_param_store(state["guide_params"])
        model.autoguide = getattr(autoguides, state["autoguide"])(model.model)
        example = tuple(state["autoguide_example"] or ())
        model.autoguide_example = example
        if example:
            with torch.no_grad():  # builds the guide's shapes; values come from the store
                poutine.block(model.autoguide)(*example)
    if map_location is not None:
        model.to(map_location)
    return model
