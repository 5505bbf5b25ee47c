"""Generic runners for any Pyro program: fit (SVI and declared methods), MCMC, data parallelism."""

from probgen.infer.fit import FitResult, FitState, TrainingDiverged, fit
from probgen.infer.method import TrainingMethod, TrainingSetup

__all__ = ["fit", "FitResult", "FitState", "TrainingDiverged", "TrainingMethod", "TrainingSetup"]
