"""probgen.evaluate: labelled log-likelihoods (exact, ELBO, IWAE-k, AIS, ...) for any program."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from probgen.core.chunks import data_plate_pieces
from probgen.core.devices import check_device
from probgen.core.dtypes import cast_floats, floats_to_default_dtype, program_dtype
from probgen.core.loaders import as_tuple, batch_iterable
from probgen.core.model import Estimator, GenerativeModel, check_numpy_range
from probgen.core.params import scratch_param_store
from probgen.core.program import inspect_program
from probgen.core.result import LogLikelihood, data_fingerprint
from probgen.core.support import check_observed_support
from probgen.core.validate import as_batch, check_num_samples, check_seed, is_number
from probgen.data.transforms import evaluate_dequantized
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

__all__ = ["evaluate", "estimator_names", "GENERIC_ESTIMATORS"]

_GENERIC = ("exact", "elbo", "iwae")
_PASSED = ("k", "batch_size", "seed")  # evaluate's own arguments, passed on when declared
_MEMORY_BUDGET = 2**22  # particles × examples evaluated in one vectorized pass
# Estimators that need no family: declared like a family's (name, callable, options).
GENERIC_ESTIMATORS: dict[str, Estimator] = {
    "dequantized": Estimator("dequantized", evaluate_dequantized,
                             ("num_levels", "num_samples", "k", "dequantizer", "seed")),
}


def _declared(model: Any) -> dict[str, Estimator]:
    """Estimators for ``model``: the generic ones, then the family's (which take precedence)."""
    family = model.estimators() if isinstance(model, GenerativeModel) else {}
    return {**GENERIC_ESTIMATORS, **family}


def estimator_names(model: Any) -> tuple[str, ...]:
    """The ``estimator=`` names :func:`evaluate` takes for ``model``."""
    return ("auto",) + _GENERIC + ("predictive",) + tuple(
        e for e in _declared(model) if e not in _GENERIC)


def _count(name: str, value: Any) -> int | None:
    """``value`` as a positive Python int (NumPy integers accepted); None passes."""
    if value is None:
        return None
    if isinstance(value, (float, np.floating)) or not is_number(value) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_particles(k: int, batch: tuple[torch.Tensor, ...]) -> None:
    """Each example's k particles copy it: refuse a k whose particles for one example cannot
    fit in memory (evaluation chunks examples and particles, but would never finish)."""
    check_num_samples("k", k, per_sample=max(int(batch[0][0].numel()), 1),
                      fix="use at most {largest} particles (IWAE-5000 is the usual ceiling)")


def _run_declared(declared: Estimator, model, batch, k, batch_size, seed, options) -> LogLikelihood:
    unknown = sorted(set(options) - set(declared.options))
    if unknown:
        raise TypeError(f"estimator {declared.name!r} takes the options {list(declared.options)}, "
                        f"not {unknown}")
    passed = dict(options)
    for name, value in (("k", k), ("batch_size", batch_size), ("seed", seed)):
        if value is None:
            continue
        if name not in declared.options:
            if name == "k":
                raise ValueError(f"estimator {declared.name!r} takes no k; its options are "
                                 f"{list(declared.options)}")
            continue
        passed[name] = value
    return declared.function(model, batch, **passed)


def _infer_data_space(model: Callable, batch: tuple[torch.Tensor, ...], info) -> str:
    from pyro import poutine

    with scratch_param_store(), poutine.block(), torch.no_grad():
        trace = poutine.trace(model).get_trace(*batch)
    discrete = [trace.nodes[n]["fn"].support.is_discrete for n in info.observed]
    return "discrete" if all(discrete) else "continuous"


def evaluate(
    model: Callable | GenerativeModel,
    data: Any,
    *,
    guide: Callable | None = None,
    estimator: str = "auto",
    k: int | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    data_space: str | None = None,
    num_dims: int | None = None,
    data_plate: str | None = None,
    seed: int | None = None,
    fast: bool = True,
    progress: bool = False,
    posterior: Any = None,
    num_draws: int | None = None,
    refit_steps: int = 1000,
    allow_masked_latents: bool = False,
    **options: Any,
) -> LogLikelihood:
    r"""Per-example log-likelihood of held-out ``data`` under ``model``, labelled by kind.

    Args:
        model: a Pyro program ``model(*batch)`` with a data plate over the first dimension, or
            a bundled :class:`GenerativeModel`.
        data: a tensor or a tuple of tensors sharing the first (example) dimension, or (as
            :func:`probgen.fit` takes it) a ``Dataset``, ``DataLoader`` or iterable of batches:
            each batch is scored as given (with ``seed``, each from the same seed) and the
            per-example values joined in order.
        guide: for ``"elbo"``/``"iwae"``: the proposal q(z | x) (a bundled model's own guide
            by default).
        estimator: ``"auto"`` (exact when every latent is enumerable or absent; the held-out
            predictive density when the program has global latents; else the model's default,
            else IWAE), ``"exact"``, ``"elbo"``, ``"iwae"``, ``"predictive"``, or an estimator
            the family declares (``"ais"``, ``"vlb"``, ``"prob_flow_ode"``, ...).
        posterior: draws of the global latents, ``{site: (S, *shape)}`` or the InferenceData
            of ``run_mcmc``: the score is lppd_i = log (1/S) Σ_s p(x_i | θ_s) (``"estimate"``;
            ``"exact"`` for one draw). Without it, a guide's global sites are drawn
            ``num_draws`` times (default 100; once for an ``AutoDelta`` point mass). Continuous
            local latents z_i are importance-sampled inside the average, p(x_i | θ_s) ≈
            (1/k) Σ_k p(x_i, z_k | θ_s) / q(z_k | x_i), from ``guide`` when it is amortized,
            else from an autoguide over z refit on ``data`` (``refit_steps``); with one draw
            that is a ``"lower_bound"``.
        refit_steps: a guide with one parameter per *training* example (an autoguide over
            per-example latents) cannot score new examples: evaluate fits a fresh guide of the
            same class (an ``AutoNormal`` for an ``AutoDelta``) over the local latents to
            ``data`` for this many SVI steps (seeded, model parameters frozen, global latents
            set to a random posterior draw at each step), then bounds log p(x) with it; the
            result's settings record it.
        allow_masked_latents: accept a program that masks an enumerated latent (each masked
            entry then adds log(number of states)); by default that is refused.
        k: particles for ELBO (default 1) and IWAE (default 1000).
        batch_size: examples per vectorized chunk (memory bound).
        fast: use a bundled model's closed-form ``log_prob`` for ``"exact"``.

    Returns:
        :class:`LogLikelihood` with per-example nats, kind and settings.

    Example:
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("x", pyro.distributions.Normal(0.0, 1.0), obs=x)
        >>> evaluate(model, torch.zeros(3)).kind
        'exact'
    """
    bundled = isinstance(model, GenerativeModel)
    if not bundled and not callable(model):
        raise TypeError(f"model must be a Pyro program (a callable) or a GenerativeModel, got "
                        f"{type(model).__name__}")
    if guide is not None and not callable(guide):
        raise TypeError(f"guide must be a Pyro program (a callable) or None, got "
                        f"{type(guide).__name__}")
    device = check_device(device)
    seed = check_seed(seed)
    if k is not None and (isinstance(k, (float, np.floating)) or not is_number(k) or k <= 0):
        raise ValueError(f"k must be a positive integer number of particles, got {k!r}")
    k = None if k is None else int(k)  # NumPy integers accepted, stored as Python ints
    batch_size, num_draws = _count("batch_size", batch_size), _count("num_draws", num_draws)
    known = estimator_names(model)
    if estimator not in known:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {known}")
    batches = batch_iterable(data, batch_size)
    if batches is not None:  # as fit takes it: batch by batch, each with the same settings
        return _joined([evaluate(
            model, as_tuple(part), guide=guide, estimator=estimator, k=k, batch_size=batch_size,
            device=device, data_space=data_space, num_dims=num_dims, data_plate=data_plate,
            seed=seed, fast=fast, progress=progress, posterior=posterior, num_draws=num_draws,
            refit_steps=refit_steps, allow_masked_latents=allow_masked_latents, **options)
            for part in batches])
    bundled = isinstance(model, GenerativeModel)
    check_numpy_range(data)
    batch = as_batch(floats_to_default_dtype(data),
                     model_device=model.device if bundled and device is None else None,
                     finite=not (bundled and model.checks_padding))
    if device is not None:
        batch = tuple(t.to(device) for t in batch)
        if bundled:
            model.to(device)
    if bundled and estimator != "dequantized":  # it takes discrete data for a density model
        batch = model.validate_batch(*batch)
    elif not bundled:
        batch = cast_floats(batch, program_dtype(model, batch))
    if seed is not None:
        pyro.set_rng_seed(seed)
    n = int(batch[0].shape[0])
    if k is not None:
        _check_particles(k, batch)
    if num_draws is not None:  # one log-likelihood per draw and example
        check_num_samples("num_draws", num_draws, per_sample=n, element_bytes=8,
                          fix="use at most {largest} draws (a few hundred is the usual)")
    if num_dims is None and bundled:
        num_dims = model.num_dims(*batch)
    was_training = model.training if bundled else False
    if bundled:
        model.eval()
    try:
        with torch.no_grad():
            return _evaluate(model, batch, guide, estimator, k, batch_size, data_space, num_dims,
                             data_plate, fast, progress, n, seed, posterior, num_draws,
                             refit_steps, "allow" if allow_masked_latents else "refuse", options)
    finally:
        if bundled and was_training:
            model.train()


def _evaluate(model, batch, guide, estimator, k, batch_size, data_space, num_dims, data_plate,
              fast, progress, n, seed, posterior, num_draws, refit_steps, masked, options
              ) -> LogLikelihood:
    bundled = isinstance(model, GenerativeModel)
    program = model.model if bundled else model
    if guide is None and bundled and model.has_guide:
        guide = model.guide
    elif guide is None and bundled and getattr(model, "autoguide", None) is not None:
        guide = model.autoguide  # the guide fit built for it (saved and loaded with it)
    probe = tuple(t[: min(n, 2)] for t in batch) if n > 1 else batch
    if estimator == "auto" and bundled and model.default_estimator is not None:
        estimator = model.default_estimator
    declared = _declared(model)
    if estimator in declared:
        return _run_declared(declared[estimator], model, batch, k, batch_size, seed, options)
    with scratch_param_store():  # a parameter initialised from the probe's rows must not stay
        try:
            info = inspect_program(program, probe, data_plate=data_plate)
        except (ValueError, RuntimeError):
            if len(probe[0]) == n:
                raise
            probe = batch  # e.g. a plate with subsample_size larger than the probe
            info = inspect_program(program, probe, data_plate=data_plate)
    if info.subsample_size is not None:
        probe = batch
    if not bundled:  # a bundled model checked its data in validate_batch
        observed = check_observed_support(program, batch, info.data_plate)
        if num_dims is None:  # unmasked values per example: ragged data count true lengths
            ragged = observed > 0 and info.subsample_size is None
            num_dims = observed if ragged else int(batch[0][0].numel())
    if estimator == "predictive" or posterior is not None or (
            estimator in ("auto", "exact") and info.global_latents):
        if options:
            raise TypeError(f"unexpected options for estimator 'predictive': {sorted(options)}")
        if data_space is None:
            data_space = model.data_space if bundled else _infer_data_space(program, probe, info)
        return _predictive(program, guide, batch, info, estimator, posterior, num_draws, k,
                           batch_size, data_space, num_dims, seed, refit_steps)
    if info.global_latents and estimator in ("elbo", "iwae"):
        raise ValueError(f"the model has global latents {list(info.global_latents)}, shared by "
                         f"every example: a per-example {estimator} bound does not apply; score "
                         "held-out rows by their predictive density with estimator='predictive' "
                         "(or 'auto'), passing guide= and/or posterior=")
    if estimator == "auto":
        if info.exact_applies:
            estimator = "exact"
        elif guide is not None:
            estimator = "iwae"
        else:
            raise ValueError("the model has continuous latents and no guide was given: pass "
                             "guide=... (e.g. the guide returned by probgen.fit) for an IWAE bound")
    if options:
        raise TypeError(f"unexpected options for estimator {estimator!r}: {sorted(options)}")
    if data_space is None:
        data_space = model.data_space if bundled else _infer_data_space(program, probe, info)
    data_id = data_fingerprint(*batch)
    if estimator == "exact" and info.bound_sites:
        raise ValueError(f"sites {list(info.bound_sites)} have a log_prob that is only a bound "
                         "(log_prob_is_bound, e.g. a diffusion prior's VLB); use estimator='elbo' "
                         "or the family's own estimator ('vlb', 'diffusion_elbo')")
    if estimator == "exact":
        use_fast = bundled and fast and model.has_exact_log_prob
        if not use_fast:
            assert info is not None
            if not info.exact_applies:
                exact_log_prob(program, probe, info, masked_latents=masked)  # says why not
        parts = []
        for piece, wrap, keep in tqdm(list(_pieces(batch, info, batch_size or 4096)),
                                      disable=not progress, desc="exact"):
            values = (model.log_prob(*piece) if use_fast
                      else exact_log_prob(wrap(program), piece, info, masked_latents=masked))
            parts.append(values[:keep])
        return LogLikelihood(torch.cat(parts), kind="exact", estimator="exact", num_dims=num_dims,
                             data_space=data_space, settings={} if use_fast else
                             {"method": "enumeration"}, data_id=data_id)
    if guide is None:
        raise ValueError(f"estimator {estimator!r} needs a guide q(z | x); pass guide=...")
    k = k or (1 if estimator == "elbo" else 1000)
    settings: dict[str, Any] = {"k": k}
    if holds_training_examples(guide, info):
        refit = _refit_settings(refit_steps, seed)
        settings["refit"] = refit.as_dict(guide)
        with refit_local_guide(program, guide, batch, info, refit) as fresh:  # one chunk
            particle_chunk = max(1, min(k, _MEMORY_BUDGET // (64 * n)))
            parts = [importance_bound(program, fresh, batch, info, estimator=estimator, k=k,
                                      particle_chunk=particle_chunk, masked_latents=masked)]
    else:
        chunk = batch_size or max(1, min(n, _MEMORY_BUDGET // (64 * min(k, 64))))
        particle_chunk = max(1, min(k, _MEMORY_BUDGET // (64 * (info.subsample_size or chunk))))
        parts = []
        for piece, wrap, keep in tqdm(list(_pieces(batch, info, chunk)), disable=not progress,
                                      desc=estimator):
            values = importance_bound(wrap(program), wrap(guide), piece, info,
                                      estimator=estimator, k=k, particle_chunk=particle_chunk,
                                      masked_latents=masked)
            parts.append(values[:keep])
    per_example = torch.cat(parts)
    if not torch.isfinite(per_example).all():
        bad = int((~torch.isfinite(per_example)).sum())
        raise FloatingPointError(f"{bad} example(s) got a non-finite bound; the guide may put "
                                 "mass where the model has none (check supports and scales)")
    # A stochastic bound inside IWAE's log-mean-exp is no longer a bound (Jensen goes the wrong
    # way); the ELBO of a bound stays a bound.
    kind = "estimate" if info.bound_sites and estimator == "iwae" else "lower_bound"
    return LogLikelihood(per_example, kind=kind, estimator=estimator, num_dims=num_dims,
                         data_space=data_space, settings=settings, data_id=data_id)


def _joined(parts: list[LogLikelihood]) -> LogLikelihood:
    """Per-batch results as one: values in order, num_dims averaged over examples (ragged
    batches differ), a fingerprint of the batches' fingerprints in order."""
    if not parts:
        raise ValueError("data is an empty Dataset or DataLoader: it yielded no batch to score")
    counts = [part.num_examples for part in parts]
    num_dims = sum(part.num_dims * count for part, count in zip(parts, counts)) / sum(counts)
    ids = [part.data_id for part in parts]
    joined = LogLikelihood.concat([replace(part, num_dims=num_dims) for part in parts])
    data_id = None if None in ids else hashlib.sha1(",".join(ids).encode()).hexdigest()[:16]
    return replace(joined, data_id=data_id)


def _pieces(batch: tuple[torch.Tensor, ...], info, chunk: int
            ) -> Iterator[tuple[tuple[torch.Tensor, ...], Callable, int]]:
    return data_plate_pieces(batch, info.subsample_size, info.data_plate, chunk)


def _refit_settings(refit_steps: Any, seed: int | None) -> RefitSettings:
    if isinstance(refit_steps, bool) or not isinstance(refit_steps, int) or refit_steps <= 0:
        raise ValueError(f"refit_steps must be a positive integer, got {refit_steps!r}")
    return RefitSettings(num_steps=refit_steps, seed=0 if seed is None else seed)


def _predictive(program, guide, batch, info, estimator, posterior, num_draws, k, batch_size,
                data_space, num_dims, seed, refit_steps) -> LogLikelihood:
    r"""lppd_i = log (1/S) Σ_s p(x_i | θ_s) over posterior draws θ_s of the global latents, with
    p(x_i | θ_s) summed over enumerable locals (exact) or importance-sampled with k particles
    (per draw an IWAE-k lower bound; the log-mean over draws is an estimate)."""
    if num_draws is not None and (isinstance(num_draws, bool) or not isinstance(num_draws, int)
                                  or num_draws <= 0):
        raise ValueError(f"num_draws must be a positive integer, got {num_draws!r}")
    refit = _refit_settings(refit_steps, seed)
    if seed is not None:
        pyro.set_rng_seed(seed)  # the guide's draws: the seed's first ones
    draws, described, point_mass = posterior_draws(posterior, guide, batch, info.global_latents,
                                                   num_draws, program)
    summed = locals_sum_out(info, tuple(draws))
    exact = point_mass and summed and not info.bound_sites
    bound = point_mass and not summed and not info.bound_sites  # IWAE-k on log p(x | θ̂)
    if estimator == "exact" and not exact:
        raise ValueError(f"the model has global latents {list(info.global_latents)} and "
                         + ("continuous local latents, importance-sampled: its held-out score "
                            "is a lower bound; use estimator='predictive' (or 'auto')" if bound
                            else f"the posterior is not a point mass ({described}): its held-out "
                            "score is an estimate; use estimator='predictive' (or 'auto'), or an "
                            "AutoDelta guide for the exact likelihood at a point estimate"))
    k = k or 1000
    chunk = batch_size or max(1, min(len(batch[0]), _MEMORY_BUDGET // (64 * min(k, 64))))
    log_lik, local_stderr, local = held_out_log_likelihoods(
        program, guide, batch, info, draws, k=k, chunk=chunk, memory_budget=_MEMORY_BUDGET,
        refit=refit)  # (draws, examples)
    per_example = lppd(log_lik)
    settings = {"posterior": described, "num_draws": int(log_lik.shape[0]), **local}
    kind = "exact" if exact else "lower_bound" if bound else "estimate"
    return LogLikelihood(per_example, kind=kind, estimator="predictive", num_dims=num_dims,
                         data_space=data_space, settings=settings, data_id=data_fingerprint(*batch),
                         estimator_stderr=bootstrap_stderr(log_lik, local_stderr))
