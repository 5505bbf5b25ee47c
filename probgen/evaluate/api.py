"""probgen.evaluate: labelled log-likelihoods (exact, ELBO, IWAE-k, AIS, ...) for any program."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pyro
import torch

from probgen.core.devices import check_device
from probgen.core.dtypes import cast_floats, floats_to_default_dtype, program_dtype
from probgen.core.loaders import as_tuple, batch_iterable
from probgen.core.model import Estimator, GenerativeModel, check_numpy_range
from probgen.core.result import LogLikelihood
from probgen.core.validate import as_batch, check_num_samples, check_seed, is_number
from probgen.evaluate.builtin import BUILTIN_ESTIMATORS, resolve
from probgen.evaluate.context import EvaluateSettings, prepare_context
from probgen.evaluate.dequantized import evaluate_dequantized

__all__ = ["evaluate", "estimator_names", "GENERIC_ESTIMATORS"]

# Estimators that need no family: declared like a family's (name, callable, options); the
# built-in ones (exact, elbo, iwae, predictive) are records of probgen.evaluate.builtin.
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
    return ("auto",) + tuple(BUILTIN_ESTIMATORS) + tuple(
        e for e in _declared(model) if e not in BUILTIN_ESTIMATORS)


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


def _check_programs(model: Any, guide: Any) -> None:
    """``model`` is a program or a :class:`GenerativeModel`; ``guide`` a program or None."""
    if not isinstance(model, GenerativeModel) and not callable(model):
        raise TypeError(f"model must be a Pyro program (a callable) or a GenerativeModel, got "
                        f"{type(model).__name__}")
    if guide is not None and not callable(guide):
        raise TypeError(f"guide must be a Pyro program (a callable) or None, got "
                        f"{type(guide).__name__}")


def _particles(k: Any) -> int | None:
    """``k`` as a positive Python int (NumPy integers accepted); None passes."""
    if k is not None and (isinstance(k, (float, np.floating)) or not is_number(k) or k <= 0):
        raise ValueError(f"k must be a positive integer number of particles, got {k!r}")
    return None if k is None else int(k)


def _model_batch(model: Any, data: Any, device: torch.device | None, estimator: str
                 ) -> tuple[torch.Tensor, ...]:
    """``data`` as the batch the model scores: checked, on ``device`` (a bundled model moved
    there too), validated by a bundled model, else cast to the program's float dtype."""
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
        return model.validate_batch(*batch)
    if not bundled:
        return cast_floats(batch, program_dtype(model, batch))
    return batch


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
    _check_programs(model, guide)
    device = check_device(device)
    seed = check_seed(seed)
    k = _particles(k)
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
    batch = _model_batch(model, data, device, estimator)
    if seed is not None:
        pyro.set_rng_seed(seed)
    if k is not None:
        _check_particles(k, batch)
    if num_draws is not None:  # one log-likelihood per draw and example
        check_num_samples("num_draws", num_draws, per_sample=int(batch[0].shape[0]),
                          element_bytes=8,
                          fix="use at most {largest} draws (a few hundred is the usual)")
    if num_dims is None and bundled:
        num_dims = model.num_dims(*batch)
    settings = EvaluateSettings(
        k=k, batch_size=batch_size, data_space=data_space, num_dims=num_dims,
        data_plate=data_plate, seed=seed, fast=fast, progress=progress, posterior=posterior,
        num_draws=num_draws, refit_steps=refit_steps,
        masked="allow" if allow_masked_latents else "refuse")
    was_training = model.training if bundled else False
    if bundled:
        model.eval()
    try:
        with torch.no_grad():
            return _evaluate(model, batch, guide, estimator, settings, options)
    finally:
        if bundled and was_training:
            model.train()


def _evaluate(model, batch: tuple[torch.Tensor, ...], guide: Callable | None, estimator: str,
              settings: EvaluateSettings, options: dict[str, Any]) -> LogLikelihood:
    """Resolve a bundled model's default, run a declared estimator as it is, else inspect the
    program, resolve "auto" over its facts, and run that built-in estimator."""
    default = model.default_estimator if isinstance(model, GenerativeModel) else None
    name = resolve(estimator, default=default)
    declared = _declared(model)
    if name in declared:
        return _run_declared(declared[name], model, batch, settings.k, settings.batch_size,
                             settings.seed, options)
    context = prepare_context(model, batch, guide, name, settings)
    name = resolve(name, context.info, guide=context.guide, posterior=settings.posterior)
    return BUILTIN_ESTIMATORS[name].run(context, options)


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
