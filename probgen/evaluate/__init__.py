"""probgen.evaluate: labelled log-likelihoods (exact, ELBO, IWAE-k, ...) for any program.

The package is also the function: ``probgen.evaluate(model, x)`` calls
:func:`probgen.evaluate.api.evaluate`, while ``probgen.evaluate.api``,
``from probgen.evaluate import compare`` and the other submodules stay reachable (a plain
``from probgen.evaluate import evaluate`` in ``probgen/__init__.py`` would hide them).
"""

import inspect
import sys
import types
from typing import Any

import torch

from probgen.core import scoring
from probgen.core.result import LogLikelihood
from probgen.evaluate.api import estimator_names, evaluate
from probgen.evaluate.compare import ComparisonTable, compare

__all__ = ["evaluate", "LogLikelihood", "compare", "ComparisonTable"]


def _score(model: Any, batch: tuple, guide: Any, estimator: str, seed: int) -> torch.Tensor:
    """Held-out log-likelihoods per example for fit's ``validation_estimator=``."""
    return evaluate(model, batch, guide=guide, estimator=estimator, seed=seed).per_example


scoring.register(estimator_names, _score)  # how probgen.fit validates without importing us


class _CallableModule(types.ModuleType):
    """This package, callable as :func:`evaluate` (same arguments, same result)."""

    def __call__(self, *args: Any, **kwargs: Any) -> LogLikelihood:
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
__signature__ = inspect.signature(evaluate)  # what help() and inspect show for the call
