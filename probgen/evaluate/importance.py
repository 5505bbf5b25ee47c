"""ELBO and IWAE-k lower bounds on log p(x) for any model/guide pair, per example."""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import torch
from pyro import poutine
from pyro.infer import config_enumerate
from pyro.poutine.util import site_is_subsample

from probgen.core.program import ProgramInfo, find_data_frame
from probgen.evaluate.exact import log_density_per_example

__all__ = ["log_importance_weights", "importance_bound", "iwae_with_stderr"]

_PARTICLES = "_probgen_particles"


def log_importance_weights(model: Callable, guide: Callable, batch: tuple[torch.Tensor, ...],
                           info: ProgramInfo, num_particles: int, *,
                           masked_latents: str = "refuse") -> torch.Tensor:
    r"""log w_k = log p(x, z_k) - log q(z_k | x), z_k ~ q; shape ``(num_particles, batch)``.

    Particles are a plate outside every model plate (one vectorized pass, no Python loop);
    discrete latents the guide does not sample are summed out exactly in p(x, z_k).
    """
    dim = -info.max_plate_nesting - 1

    def vectorize(fn: Callable) -> Callable:
        def vectorized(*args):
            with pyro.plate(_PARTICLES, num_particles, dim=dim):
                return fn(*args)
        return vectorized

    guide_trace = poutine.trace(vectorize(guide)).get_trace(*batch)
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site):
            if all(f.name != info.data_plate for f in site["cond_indep_stack"]):
                raise ValueError(
                    f"guide site '{name}' is global (outside the data plate '{info.data_plate}'): "
                    "per-example importance weights need a guide over per-example latents only; "
                    "score a model with global latents by its predictive density "
                    "(estimator='predictive', with posterior= draws or the guide probgen.fit "
                    "built: its global sites are fixed to each draw)")
    model_enum = poutine.enum(config_enumerate(vectorize(model), default="parallel"),
                              first_available_dim=dim - 1)
    model_trace = poutine.trace(poutine.replay(model_enum, trace=guide_trace)).get_trace(*batch)
    find_data_frame(model_trace, info.data_plate, int(batch[0].shape[0]))
    missing = [n for n in info.continuous_latents if n not in guide_trace.nodes]
    if missing:
        raise ValueError(f"the guide does not sample the model's continuous latents {missing}")
    log_p = log_density_per_example(model_trace, [_PARTICLES, info.data_plate],
                                    masked_latents=masked_latents)
    has_latents = any(site["type"] == "sample" and not site_is_subsample(site)
                      for site in guide_trace.nodes.values())
    if not has_latents:  # nothing to propose: the weight is the joint itself
        return log_p
    log_q = log_density_per_example(guide_trace, [_PARTICLES, info.data_plate],
                                    masked_latents="ignore")
    return log_p - log_q


def _accumulate(model: Callable, guide: Callable, batch: tuple[torch.Tensor, ...],
                info: ProgramInfo, *, estimator: str, k: int, particle_chunk: int,
                masked_latents: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(Σ_k log w_k for the ELBO, else log Σ_k w_k; log Σ_k w_k² for IWAE), chunk by chunk."""
    running, squares = None, None
    done = 0
    while done < k:
        size = min(particle_chunk, k - done)
        log_w = log_importance_weights(model, guide, batch, info, size,
                                       masked_latents=masked_latents)  # (size, batch)
        if estimator == "elbo":
            chunk = log_w.sum(0)
            running = chunk if running is None else running + chunk
        else:
            chunk, square = torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0)
            running = chunk if running is None else torch.logaddexp(running, chunk)
            squares = square if squares is None else torch.logaddexp(squares, square)
        done += size
    assert running is not None
    return running, squares


def importance_bound(model: Callable, guide: Callable, batch: tuple[torch.Tensor, ...],
                     info: ProgramInfo, *, estimator: str, k: int, particle_chunk: int,
                     masked_latents: str = "refuse") -> torch.Tensor:
    r"""Per-example bound, chunked over particles so memory is O(particle_chunk · batch).

    ELBO: (1/k) Σ_k log w_k.  IWAE-k: log (1/k) Σ_k w_k (Burda et al., 2016). Both are lower
    bounds on log p(x) in expectation; IWAE-k increases with k toward log p(x).
    """
    running, _ = _accumulate(model, guide, batch, info, estimator=estimator, k=k,
                             particle_chunk=particle_chunk, masked_latents=masked_latents)
    return running / k if estimator == "elbo" else running - math.log(k)


def iwae_with_stderr(model: Callable, guide: Callable, batch: tuple[torch.Tensor, ...],
                     info: ProgramInfo, *, k: int, particle_chunk: int,
                     masked_latents: str = "refuse") -> tuple[torch.Tensor, torch.Tensor]:
    r"""IWAE-k per example and its Monte Carlo stderr by the delta method:
    sqrt(Σ_k w_k² / (Σ_k w_k)² - 1/k) = sqrt(1/ESS - 1/k) (Kong, 1992); both ``(batch,)``."""
    running, squares = _accumulate(model, guide, batch, info, estimator="iwae", k=k,
                                   particle_chunk=particle_chunk, masked_latents=masked_latents)
    assert squares is not None
    relative_variance = torch.exp(squares - 2 * running) - 1 / k  # 1/ESS - 1/k
    return running - math.log(k), relative_variance.clamp(min=0).sqrt()
