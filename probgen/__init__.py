"""probgen: fit any Pyro program, score it with a labelled log-likelihood, compare families."""

# probgen.evaluate is the package, callable as its function: probgen.evaluate(model, x) scores,
# probgen.evaluate.api and probgen.evaluate.compare stay reachable
from probgen import data, evaluate, metrics, models
from probgen.core.result import LogLikelihood
from probgen.core.version import __version__
from probgen.evaluate import compare
from probgen.infer import FitResult, FitState, TrainingDiverged, fit
from probgen.models.io import load, save

__all__ = [
    "__version__", "fit", "evaluate", "compare", "save", "load", "LogLikelihood", "FitResult",
    "FitState", "TrainingDiverged", "data", "metrics", "models",
]
