"""Diffusion models: noise schedules, likelihood bounds, samplers and the probability-flow ODE."""

from probgen.diffusion.losses import (
    diffusion_loss,
    prior_kl,
    reconstruction_log_prob,
    simple_loss,
    vlb,
    vlb_terms,
)
from probgen.diffusion.ode import ode_encode, ode_log_prob, ode_sample, velocity
from probgen.diffusion.optimal import GaussianMixtureDenoiser, gaussian_ancestral_marginal
from probgen.diffusion.samplers import ancestral_sample, ddim_sample, sample_loop
from probgen.diffusion.schedules import (
    SCHEDULES,
    CosineSchedule,
    LearnedSchedule,
    LinearSchedule,
    NoiseSchedule,
    make_schedule,
)

__all__ = [
    "SCHEDULES",
    "CosineSchedule",
    "GaussianMixtureDenoiser",
    "LearnedSchedule",
    "LinearSchedule",
    "NoiseSchedule",
    "ancestral_sample",
    "ddim_sample",
    "gaussian_ancestral_marginal",
    "diffusion_loss",
    "make_schedule",
    "ode_encode",
    "ode_log_prob",
    "ode_sample",
    "prior_kl",
    "reconstruction_log_prob",
    "sample_loop",
    "simple_loss",
    "velocity",
    "vlb",
    "vlb_terms",
]
