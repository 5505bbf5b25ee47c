"""Names -> bundled families, for ``probgen.load`` and the CLI; filled by each family's decorator."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from probgen.core.arguments import checked_constructor
from probgen.core.model import GenerativeModel

__all__ = ["MODEL_REGISTRY", "register_model", "get_model_class", "import_families", "FAMILIES",
           "HELPER_MODULES"]

MODEL_REGISTRY: dict[str, type[GenerativeModel]] = {}

# modules of probgen.models that hold no family (every other module registers one or more)
HELPER_MODULES = frozenset({"classifier", "io", "lean_svi", "registry", "standardized",
                            "vae_loss"})


def _family_modules() -> tuple[str, ...]:
    """The family modules and packages under ``probgen/models``, found on disk."""
    found = pkgutil.iter_modules([str(Path(__file__).parent)])
    return tuple(sorted(module.name for module in found
                        if module.name not in HELPER_MODULES and not module.name.startswith("_")))


FAMILIES: tuple[str, ...] = _family_modules()  # e.g. "mixture", "hmm", "vae"


def register_model(name: str):
    """Class decorator: make a bundled model loadable by name (``probgen.load``, the CLI)."""

    def decorate(cls: type[GenerativeModel]) -> type[GenerativeModel]:
        if name in MODEL_REGISTRY and MODEL_REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered")
        cls.registry_name = name
        MODEL_REGISTRY[name] = checked_constructor(cls)
        return cls

    return decorate


def import_families() -> None:
    """Import every bundled family (each module in :data:`FAMILIES`) so each registers itself."""
    for family in FAMILIES:
        importlib.import_module(f"probgen.models.{family}")


def get_model_class(name: str) -> type[GenerativeModel]:
    """The bundled model class registered under ``name`` (e.g. ``"gmm"``, ``"vae"``)."""
    if name not in MODEL_REGISTRY:
        import_families()
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {name!r}; bundled models: {', '.join(sorted(MODEL_REGISTRY))}")
    return MODEL_REGISTRY[name]
