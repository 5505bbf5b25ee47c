"""Mixtures: Gaussian and Bernoulli programs, their EM training methods (``probgen.fit(model,
x)``) and model selection."""

from probgen.models.mixture.bernoulli import BernoulliEM, BernoulliMixture, BernoulliMixturePrior
from probgen.models.mixture.em import EM, ComponentCollapseWarning, initial_parameters
from probgen.models.mixture.model import *  # noqa: F403
from probgen.models.mixture.model import __all__ as _model_all
from probgen.models.mixture.selection import (
    ModelSelection,
    heldout_log_likelihood,
    select_num_components,
)

__all__ = list(_model_all) + ["EM", "ComponentCollapseWarning", "initial_parameters",
                              "ModelSelection", "heldout_log_likelihood", "select_num_components",
                              "BernoulliMixture", "BernoulliMixturePrior", "BernoulliEM"]
