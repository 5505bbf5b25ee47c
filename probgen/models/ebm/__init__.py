"""Energy-based models: RBMs and neural EBMs, contrastive training methods, AIS estimators."""

from probgen.models.ebm.model import *  # noqa: F403
from probgen.models.ebm.model import __all__ as _model_all
from probgen.models.ebm import ais  # noqa: F401  (declares the AIS and exact estimators)

__all__ = list(_model_all)
