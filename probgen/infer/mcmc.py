"""NUTS/HMC for any Pyro program, returned as arviz InferenceData with pointwise log-likelihoods."""

from __future__ import annotations

import inspect
import re
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.distributions.util import is_identically_zero
from pyro.infer import Predictive, config_enumerate
from pyro.infer.mcmc import HMC, MCMC, NUTS
from pyro.ops.contract import contract_to_tensor
from pyro.poutine.subsample_messenger import _Subsample

from probgen.core.model import GenerativeModel
from probgen.core.program import trace_on_data
from probgen.core.validate import as_batch, check_size

__all__ = ["run_mcmc", "loo_compare", "pointwise_log_likelihood", "max_plate_nesting_of"]

_DRAWS = "_mcmc_draws"


def _program(model: Any) -> Callable:
    if isinstance(model, GenerativeModel):
        return model.model
    if not callable(model):
        raise TypeError(f"model must be a Pyro program (a callable) or a GenerativeModel, "
                        f"got {type(model).__name__}")
    return model


def _sample_sites(trace) -> list[tuple[str, dict]]:
    return [(name, site) for name, site in trace.nodes.items()
            if site["type"] == "sample" and not isinstance(site["fn"], _Subsample)]


def max_plate_nesting_of(model: Callable, batch: tuple[torch.Tensor, ...]) -> int:
    """How many plate dimensions the program uses (traced once, discrete sites sampled)."""
    with poutine.block():
        trace = poutine.trace(model).get_trace(*batch)
    dims = [-frame.dim for _, site in _sample_sites(trace)
            for frame in site["cond_indep_stack"] if frame.vectorized]
    return max(dims, default=0)


def _find_data_plate(trace, observed: list[str], num_examples: int | None,
                     data_plate: str | None) -> str:
    frames = [{f.name: f for f in trace.nodes[name]["cond_indep_stack"] if f.vectorized}
              for name in observed]
    if data_plate is not None:
        if not frames or any(data_plate not in f for f in frames):
            raise ValueError(f"no observed site lies in a plate named {data_plate!r}; pass "
                             f"data_plate= one of the plates around the observations: "
                             f"{sorted(set().union(*frames))}")
        return data_plate
    shared = set.intersection(*(set(f) for f in frames)) if frames else set()
    candidates = [name for name in shared
                  if num_examples is None or frames[0][name].size == num_examples]
    if len(candidates) != 1:
        raise ValueError(f"could not tell which plate runs over the data examples (candidates: "
                         f"{sorted(candidates) or sorted(shared)}); pass data_plate='<name>'")
    return candidates[0]


def _unpack(value: torch.Tensor, symbols: list[str]) -> torch.Tensor:
    """Packed tensor (dims named by ``value._pyro_dims``) -> tensor with dims in ``symbols``."""
    dims = getattr(value, "_pyro_dims", "")
    for symbol in symbols:  # a dim the factors never mentioned is constant along it
        if symbol not in dims:
            value, dims = value.unsqueeze(-1), dims + symbol
    return value.permute([dims.index(s) for s in symbols])


def _log_likelihood_chunk(model: Callable, chunk: dict[str, torch.Tensor],
                          batch: tuple[torch.Tensor, ...], max_plate_nesting: int,
                          observed: list[str], data_plate: str,
                          batch_ndims: dict[str, int], vectorize: bool) -> torch.Tensor:
    """Per-draw, per-example log p(x_n | θ_s) with enumerated latents summed out: ``(S, N)``.

    ``vectorize=False`` evaluates a single draw (``S = 1``) with the program as written.
    """
    num_draws = next(iter(chunk.values())).shape[0]
    if vectorize:
        # Draws go in a plate left of the model's plates; enumeration left of that.
        conditioned = {name: value.reshape(num_draws,
                                           *[1] * (max_plate_nesting - batch_ndims[name]),
                                           *value.shape[1:])
                       for name, value in chunk.items()}

        def program(*args):
            with pyro.plate(_DRAWS, num_draws, dim=-max_plate_nesting - 1):
                return model(*args)

        first_enum_dim = -max_plate_nesting - 2
    else:
        conditioned = {name: value[0] for name, value in chunk.items()}
        program, first_enum_dim = model, -max_plate_nesting - 1
    program = poutine.enum(config_enumerate(poutine.condition(program, data=conditioned)),
                           first_available_dim=first_enum_dim)
    with poutine.block():
        trace = poutine.trace(program).get_trace(*batch)
    trace.compute_log_prob()
    trace.pack_tensors()
    plate_to_symbol = trace.plate_to_symbol
    factors: OrderedDict = OrderedDict()
    for name, site in _sample_sites(trace):
        enumerated = site["infer"].get("_enumerate_dim") is not None
        if name in observed or enumerated:
            log_prob = site["packed"]["log_prob"]
            if is_identically_zero(log_prob):
                continue
            ordinal = frozenset(plate_to_symbol[f.name] for f in site["cond_indep_stack"]
                                if f.vectorized)
            factors.setdefault(ordinal, []).append(log_prob)
    sum_dims = set(trace.symbol_to_dim) - set(plate_to_symbol.values())
    target = ([plate_to_symbol[_DRAWS]] if vectorize else []) + [plate_to_symbol[data_plate]]
    result = _unpack(contract_to_tensor(factors, sum_dims, target_ordinal=frozenset(target)),
                     target)
    return result if vectorize else result[None]


def _vectorizes(model, samples, batch, evaluate) -> bool:
    """Whether evaluating draws in a batch plate agrees with evaluating them one at a time.

    Programs that index parameters by enumerated values without ``Vindex`` (or reuse a plate
    dimension for an indexed parameter) are not batchable over draws; those fall back to a
    loop over draws.
    """
    probe = {name: value[:2] for name, value in samples.items()}
    one_by_one = torch.cat([evaluate({n: v[i:i + 1] for n, v in probe.items()}, False)
                            for i in range(next(iter(probe.values())).shape[0])])
    try:
        together = evaluate(probe, True)
    except (RuntimeError, ValueError, IndexError):
        return False
    return together.shape == one_by_one.shape and torch.allclose(together, one_by_one,
                                                                 rtol=1e-5, atol=1e-6)


def pointwise_log_likelihood(model: Callable, samples: dict[str, torch.Tensor],
                             batch: tuple[torch.Tensor, ...] = (), *,
                             max_plate_nesting: int | None = None, data_plate: str | None = None,
                             chunk_size: int = 256) -> tuple[str, torch.Tensor]:
    r"""log p(x_n | θ_s) = log Σ_z p(x_n, z | θ_s) for each draw θ_s and example n.

    ``samples`` maps latent site names to ``(S, *site_shape)`` draws; discrete latents absent
    from it are enumerated and summed out exactly (variable elimination over the plates, as
    Pyro's ``TraceEnum_ELBO`` does). Draws are vectorised in chunks of ``chunk_size``.
    Returns the name of the observation (the observed site, or the data plate when several
    sites are observed) and a ``(S, N)`` tensor.
    """
    model = _program(model)
    if max_plate_nesting is None:
        max_plate_nesting = max_plate_nesting_of(model, batch)
    first = {name: value[0] for name, value in samples.items()}
    with poutine.block():
        prototype = poutine.trace(poutine.condition(model, data=first)).get_trace(*batch)
    sites = _sample_sites(prototype)
    observed = [name for name, site in sites if site["is_observed"] and name not in samples
                and not site["infer"].get("_deterministic")]
    if not observed:
        raise ValueError("the program has no observed sites, so there is no likelihood to "
                         "evaluate; pass the data the program conditions on")
    num_examples = batch[0].shape[0] if batch else None
    data_plate = _find_data_plate(prototype, observed, num_examples, data_plate)
    batch_ndims = {name: len(site["fn"].batch_shape) for name, site in sites if name in samples}
    num_draws = next(iter(samples.values())).shape[0]

    def evaluate(chunk, vectorize):
        with torch.no_grad():
            return _log_likelihood_chunk(model, chunk, batch, max_plate_nesting, observed,
                                         data_plate, batch_ndims, vectorize)

    step = chunk_size if _vectorizes(model, samples, batch, evaluate) else 1
    pieces = [evaluate({name: value[start:start + step] for name, value in samples.items()},
                       step > 1)
              for start in range(0, num_draws, step)]
    return observation_name(observed), torch.cat(pieces)


def observation_name(observed: list[str]) -> str:
    """The name arviz's ``log_likelihood`` and ``observed_data`` share: the observed site, or
    the stem of per-step sites (``y_0 … y_T`` → ``y``), else the sites joined with ``+``."""
    if len(observed) == 1:
        return observed[0]
    stems = {re.sub(r"_\d+$", "", name) for name in observed}
    return stems.pop() if len(stems) == 1 else "+".join(observed)


def _warn_on_diagnostics(idata, num_chains: int, rhat_threshold: float, min_ess: float) -> None:
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ess = az.ess(idata, method="bulk")
        rhat = az.rhat(idata) if num_chains > 1 else None
    low_ess = sorted(name for name in ess.data_vars if float(ess[name].min()) < min_ess)
    if low_ess:
        warnings.warn(f"bulk effective sample size below {min_ess} for {', '.join(low_ess)}; "
                      "run more samples or warmup steps before trusting these estimates",
                      stacklevel=3)
    if rhat is not None:
        high = sorted(name for name in rhat.data_vars if float(rhat[name].max()) > rhat_threshold)
        if high:
            warnings.warn(f"r_hat above {rhat_threshold} for {', '.join(high)}: the chains "
                          "disagree; run longer or reparameterise", stacklevel=3)


def run_mcmc(model: Any, data: Any = None, *, kernel: str = "nuts", num_samples: int = 1000,
             warmup_steps: int | None = None, num_chains: int = 1, seed: int | None = None,
             progress: bool = True, max_plate_nesting: int | None = None,
             data_plate: str | None = None, parallel: bool = False,
             log_likelihood: bool = True, rhat_threshold: float = 1.01, min_ess: float = 100,
             chunk_size: int = 256, **kernel_options: Any):
    r"""Sample a Pyro program's posterior with NUTS or HMC; return arviz ``InferenceData``.

    Discrete latents are enumerated (summed out) during sampling and in the pointwise
    log-likelihood, so ``az.loo``/``az.waic``/``az.compare`` work on mixture and HMM
    programs. ``data`` is a tensor or tuple of tensors passed as ``model(*data)``; the plate
    over examples is found by its size (or named by ``data_plate``). Chains run one after
    another with seeds ``seed, seed+1, ...``; ``parallel=True`` uses Pyro's multiprocess
    chains. Warns (naming the variables) when bulk ESS < ``min_ess`` or r_hat > ``rhat_threshold``.

    Groups: ``posterior`` (chain, draw, ...), ``log_likelihood`` (chain, draw, example),
    ``observed_data``, ``sample_stats`` (``diverging``); ``posterior.attrs["sampling_seconds"]``.
    """
    import arviz as az

    kernel_class = _kernel_class(kernel, num_samples, num_chains, warmup_steps, kernel_options)
    program = _program(model)
    batch = as_batch(data) if data is not None else ()
    warmup_steps = num_samples if warmup_steps is None else warmup_steps
    if seed is not None:
        pyro.set_rng_seed(seed)
    _check_has_latents(program, batch, data_given=data is not None)
    if max_plate_nesting is None:
        if seed is not None:
            pyro.set_rng_seed(seed)
        max_plate_nesting = max_plate_nesting_of(program, batch)

    def make_kernel():
        return kernel_class(program, max_plate_nesting=max_plate_nesting, **kernel_options)

    start = time.perf_counter()
    grouped, diverging = _sample_chains(make_kernel, batch, num_samples=num_samples,
                                        warmup_steps=warmup_steps, num_chains=num_chains,
                                        seed=seed, progress=progress, parallel=parallel)
    sampling_seconds = time.perf_counter() - start

    posterior = {name: value.detach().cpu().numpy() for name, value in grouped.items()}
    posterior.update(_deterministic_sites(program, grouped, batch, num_chains, num_samples))
    diverging_array = np.zeros((num_chains, num_samples), dtype=bool)
    for chain, indices in enumerate(diverging):
        diverging_array[chain, list(indices)] = True
    groups: dict[str, Any] = {"posterior": posterior,
                              "sample_stats": {"diverging": diverging_array}}
    if log_likelihood:
        flat = {name: value.reshape(num_chains * num_samples, *value.shape[2:])
                for name, value in grouped.items()}
        name, pointwise = pointwise_log_likelihood(program, flat, batch,
                                                   max_plate_nesting=max_plate_nesting,
                                                   data_plate=data_plate, chunk_size=chunk_size)
        groups["log_likelihood"] = {name: pointwise.reshape(num_chains, num_samples, -1)
                                    .cpu().numpy()}
        if len(batch) == 1:
            groups["observed_data"] = {name: batch[0].detach().cpu().numpy()}
    idata = az.from_dict(**groups)
    idata.posterior.attrs["sampling_seconds"] = sampling_seconds
    idata.posterior.attrs["kernel"] = kernel
    _warn_on_diagnostics(idata, num_chains, rhat_threshold, min_ess)
    return idata


def _kernel_class(kernel: str, num_samples: Any, num_chains: Any, warmup_steps: Any,
                  kernel_options: dict[str, Any]) -> type:
    """run_mcmc's arguments checked; the kernel's class (NUTS or HMC)."""
    if kernel not in ("nuts", "hmc"):
        raise ValueError(f"kernel must be 'nuts' or 'hmc', got {kernel!r}")
    for name, value in (("num_samples", num_samples), ("num_chains", num_chains)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if num_samples < 1 or num_chains < 1:
        raise ValueError(f"num_samples and num_chains must be >= 1, got {num_samples} and {num_chains}")
    if num_samples < 4:
        raise ValueError(f"num_samples={num_samples} is too few: the convergence diagnostics "
                         "(split r_hat, ESS) need at least 4 draws per chain; pass num_samples >= 4")
    if warmup_steps is not None:
        check_size("warmup_steps", warmup_steps, minimum=0)
    kernel_class = NUTS if kernel == "nuts" else HMC
    takes = sorted(set(inspect.signature(kernel_class).parameters) - {"model", "potential_fn",
                                                                      "max_plate_nesting"})
    unknown = sorted(set(kernel_options) - set(takes))
    if unknown:
        raise TypeError(f"unknown kernel options {unknown} for kernel={kernel!r}; the {kernel} "
                        f"kernel takes {takes}")
    return kernel_class


def _check_has_latents(program: Callable, batch: tuple, *, data_given: bool) -> None:
    """The program runs on ``batch`` and has a latent sample site for MCMC to sample."""
    try:
        prototype = trace_on_data(program, batch)
    except TypeError as error:
        if data_given:
            raise
        raise TypeError(f"run_mcmc(model, data=None) ran the program without arguments and it "
                        f"failed ({error}); pass the data the program takes as data=...") from error
    if not any(site["type"] == "sample" and not site["is_observed"]
               for _, site in _sample_sites(prototype)):
        raise ValueError("the program has no latent sample sites (every pyro.sample is observed): "
                         "there is no posterior for MCMC to sample; put priors on its parameters "
                         "with pyro.sample, or fit it with probgen.fit")


def _sample_chains(make_kernel: Callable, batch: tuple, *, num_samples: int, warmup_steps: int,
                   num_chains: int, seed: int | None, progress: bool, parallel: bool
                   ) -> tuple[dict[str, torch.Tensor], list]:
    """Draws grouped by chain (chain, draw, ...) and each chain's divergent draw indices: chains
    one after another seeded ``seed + chain``, or Pyro's multiprocess chains (``parallel``)."""
    if parallel and num_chains > 1:
        if seed is not None:
            pyro.set_rng_seed(seed)
        mcmc = MCMC(make_kernel(), num_samples=num_samples, warmup_steps=warmup_steps,
                    num_chains=num_chains, disable_progbar=not progress)
        mcmc.run(*batch)
        divergences = mcmc.diagnostics().get("divergences", {})
        return (mcmc.get_samples(group_by_chain=True),
                [divergences.get(f"chain {c}", []) for c in range(num_chains)])
    per_chain, diverging = [], []
    for chain in range(num_chains):
        if seed is not None:
            pyro.set_rng_seed(seed + chain)
        mcmc = MCMC(make_kernel(), num_samples=num_samples, warmup_steps=warmup_steps,
                    disable_progbar=not progress)
        mcmc.run(*batch)
        per_chain.append(mcmc.get_samples())
        diverging.append(mcmc.diagnostics().get("divergences", {}).get("chain 0", []))
    return {name: torch.stack([s[name] for s in per_chain]) for name in per_chain[0]}, diverging


def _deterministic_sites(program: Callable, grouped: dict[str, torch.Tensor],
                         batch: tuple[torch.Tensor, ...], num_chains: int, num_samples: int
                         ) -> dict[str, np.ndarray]:
    """``pyro.deterministic`` sites recomputed at every draw (MCMC keeps only sample sites)."""
    first = {name: value[0, 0] for name, value in grouped.items()}
    with poutine.block(), torch.no_grad():
        prototype = poutine.trace(poutine.condition(program, data=first)).get_trace(*batch)
    names = [name for name, site in prototype.nodes.items()
             if site["type"] == "sample" and site["infer"].get("_deterministic")]
    if not names:
        return {}
    flat = {name: value.reshape(num_chains * num_samples, *value.shape[2:])
            for name, value in grouped.items()}
    with torch.no_grad():
        values = Predictive(program, posterior_samples=flat, return_sites=names)(*batch)
    shapes = {name: prototype.nodes[name]["value"].shape for name in names}
    return {name: values[name].reshape(num_chains, num_samples, *shapes[name])
            .detach().cpu().numpy() for name in names}


def loo_compare(fits: dict[str, Any], *, pareto_k_threshold: float = 0.7):
    r"""PSIS-LOO of each fit and arviz's comparison table (rank, elpd_loo, se, elpd_diff, dse, ...).

    elpd_loo = Σ_n log p(x_n | x_{-n}), estimated from the posterior draws' pointwise
    log-likelihoods by Pareto-smoothed importance sampling (Vehtari et al., 2017). Instead of
    arviz's anonymous warning, warns naming each fit with examples whose Pareto k exceeds
    ``pareto_k_threshold`` (their LOO terms are unreliable: refit without them, or use K-fold).
    """
    import arviz as az

    if not fits:
        raise ValueError("loo_compare needs at least one fit, got an empty dict")
    loos = {}
    for name, idata in fits.items():
        if "log_likelihood" not in idata.groups():
            raise ValueError(f"fit {name!r} has no log_likelihood group; run_mcmc(..., "
                             "log_likelihood=True) stores it")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # re-said below, with the fit's name
            loos[name] = az.loo(idata, pointwise=True)
        bad = int((loos[name].pareto_k.values > pareto_k_threshold).sum())
        if bad:
            warnings.warn(f"{name}: {bad} of {loos[name].n_data_points} examples have Pareto k > "
                          f"{pareto_k_threshold}; their PSIS-LOO terms are unreliable", stacklevel=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.compare(loos)
