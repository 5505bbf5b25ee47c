"""probgen.evaluate: labelled log-likelihoods (exact, ELBO, IWAE-k, ...) for any program."""

from probgen.core.result import LogLikelihood
from probgen.evaluate.api import evaluate
from probgen.evaluate.compare import ComparisonTable, compare

__all__ = ["evaluate", "LogLikelihood", "compare", "ComparisonTable"]
