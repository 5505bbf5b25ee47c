"""Names -> bundled families, for ``probgen.load`` and the CLI; filled by each family's decorator."""

from __future__ import annotations

import importlib

from probgen.core.arguments import checked_constructor
from probgen.core.model import GenerativeModel

__all__ = ["MODEL_REGISTRY", "register_model", "get_model_class", "import_families", "FAMILIES"]

MODEL_REGISTRY: dict[str, type[GenerativeModel]] = {}

FAMILIES = ("mixture", "hmm", "vae", "flow", "ebm", "diffusion", "latent_diffusion",
            "hierarchical", "flow_vae", "autoregressive", "flow_matching", "vqvae")


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
    """Import every bundled family so each registers itself."""
    for family in FAMILIES:
        importlib.import_module(f"probgen.models.{family}")


def get_model_class(name: str) -> type[GenerativeModel]:
    """The bundled model class registered under ``name`` (e.g. ``"gmm"``, ``"vae"``)."""
    if name not in MODEL_REGISTRY:
        import_families()
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {name!r}; bundled models: {', '.join(sorted(MODEL_REGISTRY))}")
    return MODEL_REGISTRY[name]
