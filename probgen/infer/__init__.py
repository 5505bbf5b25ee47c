"""Generic runners for any Pyro program: fit (SVI and declared methods), MCMC, data parallelism."""

from probgen.infer import fit  # the module, callable as the function (see fit._CallableModule)
from probgen.infer.fit import FitResult, FitState, TrainingDiverged
from probgen.infer.method import TrainingMethod, TrainingSetup

__all__ = ["fit", "FitResult", "FitState", "TrainingDiverged", "TrainingMethod", "TrainingSetup"]
