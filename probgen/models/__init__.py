"""Bundled model programs, one file per family; each registers itself by name."""

from probgen.core.model import GenerativeModel
from probgen.models.classifier import GenerativeClassifier
from probgen.models.registry import MODEL_REGISTRY, get_model_class, register_model

__all__ = ["GenerativeClassifier", "GenerativeModel", "MODEL_REGISTRY", "get_model_class",
           "register_model"]
