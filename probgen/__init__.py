"""probgen: fit any Pyro program, score it with a labelled log-likelihood, compare families."""

__version__ = "0.1.0"

from probgen import data, models  # noqa: E402
from probgen.checkpoint import load, save  # noqa: E402
from probgen.evaluate import LogLikelihood, compare, evaluate  # noqa: E402
from probgen.infer import FitResult, TrainingDiverged, fit  # noqa: E402

__all__ = [
    "__version__", "fit", "evaluate", "compare", "save", "load", "LogLikelihood", "FitResult",
    "TrainingDiverged", "data", "models",
]
