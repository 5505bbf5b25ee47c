r"""The estimators every program has, declared as records: exact, ELBO, IWAE-k, predictive.

Each record names its function ``function(context) -> LogLikelihood`` (an
:class:`~probgen.evaluate.context.EvaluationContext`) and the :func:`probgen.evaluate` arguments it
reads; none takes further keywords. :func:`resolve` turns ``estimator="auto"`` (and an explicit
name the program's facts redirect) into the name of the one to run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from probgen.core.chunks import data_plate_pieces
from probgen.core.program import ProgramInfo
from probgen.core.result import LogLikelihood, data_fingerprint
from probgen.evaluate.context import EvaluationContext
from probgen.evaluate.exact import exact_log_prob
from probgen.evaluate.importance import importance_bound
from probgen.evaluate.predictive import (
    bootstrap_stderr,
    held_out_log_likelihoods,
    locals_sum_out,
    lppd,
    posterior_draws,
)
from probgen.evaluate.refit import RefitSettings, holds_training_examples, refit_local_guide

__all__ = ["BuiltinEstimator", "BUILTIN_ESTIMATORS", "resolve", "exact", "elbo", "iwae",
           "predictive"]

MEMORY_BUDGET = 2**22  # particles × examples evaluated in one vectorized pass


@dataclass(frozen=True)
class BuiltinEstimator:
    """A built-in estimator: ``function(context) -> LogLikelihood``; ``reads`` are the
    :func:`probgen.evaluate` arguments it uses, ``options`` the further keywords it takes."""

    name: str
    function: Callable[[EvaluationContext], LogLikelihood]
    reads: tuple[str, ...]
    options: tuple[str, ...] = ()

    def run(self, context: EvaluationContext, options: dict[str, Any]) -> LogLikelihood:
        """Refuse keywords it does not take, fill in the data space, then score."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise TypeError(f"unexpected options for estimator {self.name!r}: {unknown}")
        return self.function(context.with_data_space())


def resolve(requested: str, info: ProgramInfo | None = None, *, guide: Callable | None = None,
            posterior: Any = None, default: str | None = None) -> str:
    """The estimator ``requested`` runs. ``"auto"`` is a bundled model's ``default`` (decided
    before inspection, with ``info`` None: a family's estimator needs no trace), else
    ``"predictive"`` with ``posterior`` draws or global latents, ``"exact"`` when every latent is
    enumerable or absent, ``"iwae"`` with a guide. ``posterior`` (or global latents under
    ``"exact"``) makes any name ``"predictive"``; ELBO/IWAE with global latents is refused."""
    if requested == "auto" and default is not None:
        return default
    if info is None:
        return requested
    if requested == "predictive" or posterior is not None or (
            requested in ("auto", "exact") and info.global_latents):
        return "predictive"
    if info.global_latents and requested in ("elbo", "iwae"):
        raise ValueError(f"the model has global latents {list(info.global_latents)}, shared by "
                         f"every example: a per-example {requested} bound does not apply; score "
                         "held-out rows by their predictive density with estimator='predictive' "
                         "(or 'auto'), passing guide= and/or posterior=")
    if requested != "auto":
        return requested
    if info.exact_applies:
        return "exact"
    if guide is not None:
        return "iwae"
    raise ValueError("the model has continuous latents and no guide was given: pass "
                     "guide=... (e.g. the guide returned by probgen.fit) for an IWAE bound")


def _pieces(batch: tuple[torch.Tensor, ...], info: ProgramInfo, chunk: int
            ) -> Iterator[tuple[tuple[torch.Tensor, ...], Callable, int]]:
    return data_plate_pieces(batch, info.subsample_size, info.data_plate, chunk)


def _refit_settings(refit_steps: Any, seed: int | None) -> RefitSettings:
    if isinstance(refit_steps, bool) or not isinstance(refit_steps, int) or refit_steps <= 0:
        raise ValueError(f"refit_steps must be a positive integer, got {refit_steps!r}")
    return RefitSettings(num_steps=refit_steps, seed=0 if seed is None else seed)


def exact(context: EvaluationContext) -> LogLikelihood:
    r"""log p(x_i) = log Σ_z p(x_i, z): a bundled model's closed form (``fast``), else by
    enumerating the discrete latents."""
    info, settings, program = context.info, context.settings, context.program
    data_id = data_fingerprint(*context.batch)
    if info.bound_sites:
        raise ValueError(f"sites {list(info.bound_sites)} have a log_prob that is only a bound "
                         "(log_prob_is_bound, e.g. a diffusion prior's VLB); use estimator='elbo' "
                         "or the family's own estimator ('vlb', 'diffusion_elbo')")
    use_fast = context.bundled and settings.fast and context.model.has_exact_log_prob
    if not use_fast and not info.exact_applies:
        exact_log_prob(program, context.probe, info, masked_latents=settings.masked)  # says why not
    parts = []
    for piece, wrap, keep in tqdm(list(_pieces(context.batch, info, settings.batch_size or 4096)),
                                  disable=not settings.progress, desc="exact"):
        values = (context.model.log_prob(*piece) if use_fast
                  else exact_log_prob(wrap(program), piece, info, masked_latents=settings.masked))
        parts.append(values[:keep])
    return LogLikelihood(torch.cat(parts), kind="exact", estimator="exact",
                         num_dims=settings.num_dims, data_space=settings.data_space,
                         settings={} if use_fast else {"method": "enumeration"}, data_id=data_id)


def _refit_bound(context: EvaluationContext, refit: RefitSettings, estimator: str, k: int
                 ) -> torch.Tensor:
    """The bound with a local guide refit on the held-out rows (one chunk of them)."""
    n = context.num_examples
    with refit_local_guide(context.program, context.guide, context.batch, context.info,
                           refit) as fresh:
        particle_chunk = max(1, min(k, MEMORY_BUDGET // (64 * n)))
        return importance_bound(context.program, fresh, context.batch, context.info,
                                estimator=estimator, k=k, particle_chunk=particle_chunk,
                                masked_latents=context.settings.masked)


def _chunked_bound(context: EvaluationContext, estimator: str, k: int) -> torch.Tensor:
    """The bound with the guide as given, chunk by chunk of examples and particles."""
    info, settings = context.info, context.settings
    chunk = settings.batch_size or max(1, min(context.num_examples,
                                              MEMORY_BUDGET // (64 * min(k, 64))))
    particle_chunk = max(1, min(k, MEMORY_BUDGET // (64 * (info.subsample_size or chunk))))
    parts = []
    for piece, wrap, keep in tqdm(list(_pieces(context.batch, info, chunk)),
                                  disable=not settings.progress, desc=estimator):
        values = importance_bound(wrap(context.program), wrap(context.guide), piece, info,
                                  estimator=estimator, k=k, particle_chunk=particle_chunk,
                                  masked_latents=settings.masked)
        parts.append(values[:keep])
    return torch.cat(parts)


def _bound(context: EvaluationContext, estimator: str) -> LogLikelihood:
    r"""ELBO = E_q[log p(x, z) − log q(z | x)] (k particles averaged) or IWAE-k =
    E[log (1/k) Σ_k p(x, z_k) / q(z_k | x)], per example."""
    info, settings = context.info, context.settings
    data_id = data_fingerprint(*context.batch)
    if context.guide is None:
        raise ValueError(f"estimator {estimator!r} needs a guide q(z | x); pass guide=...")
    k = settings.k or (1 if estimator == "elbo" else 1000)
    labels: dict[str, Any] = {"k": k}
    if holds_training_examples(context.guide, info):
        refit = _refit_settings(settings.refit_steps, settings.seed)
        labels["refit"] = refit.as_dict(context.guide)
        per_example = _refit_bound(context, refit, estimator, k)
    else:
        per_example = _chunked_bound(context, estimator, k)
    if not torch.isfinite(per_example).all():
        bad = int((~torch.isfinite(per_example)).sum())
        raise FloatingPointError(f"{bad} example(s) got a non-finite bound; the guide may put "
                                 "mass where the model has none (check supports and scales)")
    # A stochastic bound inside IWAE's log-mean-exp is no longer a bound (Jensen goes the wrong
    # way); the ELBO of a bound stays a bound.
    kind = "estimate" if info.bound_sites and estimator == "iwae" else "lower_bound"
    return LogLikelihood(per_example, kind=kind, estimator=estimator, num_dims=settings.num_dims,
                         data_space=settings.data_space, settings=labels, data_id=data_id)


def elbo(context: EvaluationContext) -> LogLikelihood:
    """The per-example ELBO with the guide (k particles, default 1): a lower bound."""
    return _bound(context, "elbo")


def iwae(context: EvaluationContext) -> LogLikelihood:
    """The per-example IWAE-k bound with the guide (default k = 1000): a lower bound."""
    return _bound(context, "iwae")


def _exact_refused(info: ProgramInfo, bound: bool, described: str) -> ValueError:
    return ValueError(f"the model has global latents {list(info.global_latents)} and "
                      + ("continuous local latents, importance-sampled: its held-out score "
                         "is a lower bound; use estimator='predictive' (or 'auto')" if bound
                         else f"the posterior is not a point mass ({described}): its held-out "
                         "score is an estimate; use estimator='predictive' (or 'auto'), or an "
                         "AutoDelta guide for the exact likelihood at a point estimate"))


def predictive(context: EvaluationContext) -> LogLikelihood:
    r"""lppd_i = log (1/S) Σ_s p(x_i | θ_s) over posterior draws θ_s of the global latents, with
    p(x_i | θ_s) summed over enumerable locals (exact) or importance-sampled with k particles
    (per draw an IWAE-k lower bound; the log-mean over draws is an estimate)."""
    info, settings, batch = context.info, context.settings, context.batch
    num_draws = settings.num_draws
    if num_draws is not None and (isinstance(num_draws, bool) or not isinstance(num_draws, int)
                                  or num_draws <= 0):
        raise ValueError(f"num_draws must be a positive integer, got {num_draws!r}")
    refit = _refit_settings(settings.refit_steps, settings.seed)
    if settings.seed is not None:
        pyro.set_rng_seed(settings.seed)  # the guide's draws: the seed's first ones
    draws, described, point_mass = posterior_draws(settings.posterior, context.guide, batch,
                                                   info.global_latents, num_draws, context.program)
    summed = locals_sum_out(info, tuple(draws))
    exact_score = point_mass and summed and not info.bound_sites
    bound = point_mass and not summed and not info.bound_sites  # IWAE-k on log p(x | θ̂)
    if context.requested == "exact" and not exact_score:
        raise _exact_refused(info, bound, described)
    k = settings.k or 1000
    chunk = settings.batch_size or max(1, min(len(batch[0]), MEMORY_BUDGET // (64 * min(k, 64))))
    log_lik, local_stderr, local = held_out_log_likelihoods(
        context.program, context.guide, batch, info, draws, k=k, chunk=chunk,
        memory_budget=MEMORY_BUDGET, refit=refit)  # (draws, examples)
    labels = {"posterior": described, "num_draws": int(log_lik.shape[0]), **local}
    kind = "exact" if exact_score else "lower_bound" if bound else "estimate"
    return LogLikelihood(lppd(log_lik), kind=kind, estimator="predictive",
                         num_dims=settings.num_dims, data_space=settings.data_space,
                         settings=labels, data_id=data_fingerprint(*batch),
                         estimator_stderr=bootstrap_stderr(log_lik, local_stderr))


_BOUND_READS = ("guide", "k", "batch_size", "seed", "refit_steps", "progress",
                "allow_masked_latents")
BUILTIN_ESTIMATORS: dict[str, BuiltinEstimator] = {
    "exact": BuiltinEstimator("exact", exact, ("batch_size", "fast", "progress",
                                               "allow_masked_latents")),
    "elbo": BuiltinEstimator("elbo", elbo, _BOUND_READS),
    "iwae": BuiltinEstimator("iwae", iwae, _BOUND_READS),
    "predictive": BuiltinEstimator("predictive", predictive,
                                   ("guide", "posterior", "num_draws", "k", "batch_size", "seed",
                                    "refit_steps")),
}
