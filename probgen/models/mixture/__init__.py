"""Gaussian mixtures: the program, its EM training method and model selection."""

from probgen.models.mixture.model import *  # noqa: F403
from probgen.models.mixture.model import __all__ as _model_all

__all__ = list(_model_all)
