"""Energy-based models: RBMs and neural EBMs, contrastive training methods (``probgen.fit``:
``"cd"``, ``"pcd"``, ``"contrastive"``), AIS estimators."""

from probgen.models.ebm import ais, reverse_ais  # noqa: F401  (declare the estimators)
from probgen.models.ebm.contrastive import CD, PCD, Contrastive
from probgen.models.ebm.model import *  # noqa: F403
from probgen.models.ebm.model import __all__ as _model_all

__all__ = list(_model_all) + ["CD", "PCD", "Contrastive"]
