"""Bundled model programs, one file per family; each registers itself by name."""

from probgen.models.base import MODEL_REGISTRY, GenerativeModel, get_model_class, register_model

__all__ = ["GenerativeModel", "MODEL_REGISTRY", "get_model_class", "register_model"]
