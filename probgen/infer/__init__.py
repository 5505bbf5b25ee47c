"""Inference runners: SVI (fit), EM fast paths, MCMC, contrastive training."""

from probgen.infer.program import ProgramInfo, inspect_program
from probgen.infer.svi import FitResult, FitState, TrainingDiverged, fit

__all__ = ["fit", "FitResult", "FitState", "TrainingDiverged", "ProgramInfo", "inspect_program"]
