r"""Held-out log predictive density for programs with global latents (Gelman et al.'s lppd).

lppd_i = log (1/S) Σ_s p(x_i | θ_s), θ_s drawn from a posterior (MCMC draws, a dict of draws,
or a guide). Local latents z_i given θ_s are summed out exactly, or importance-sampled:
p̂(x_i | θ_s) = (1/k) Σ_k p(x_i, z_k | θ_s) / q(z_k | x_i), z_k ~ q, with q an amortized guide or
an autoguide over z refit on the held-out rows. log p̂ is a lower bound on log p(x_i | θ_s) in
expectation (Burda et al., 2016) that tightens with k; log (1/S) Σ_s p̂ is a consistent
estimate of log p(x_i | D) (kind ``"estimate"``; ``"lower_bound"`` of log p(x_i | θ̂) for one
draw).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoCallable, AutoDelta, AutoGuideList
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from probgen.core.chunks import data_plate_pieces
from probgen.core.params import scratch_param_store
from probgen.core.program import ProgramInfo
from probgen.evaluate.exact import exact_log_prob
from probgen.evaluate.importance import iwae_with_stderr
from probgen.evaluate.refit import RefitSettings, holds_training_examples, refit_local_guide

__all__ = ["FixSites", "PosteriorDraw", "posterior_draws", "check_posterior_sites", "local_program_info", "locals_sum_out",
           "draw_log_likelihoods", "held_out_log_likelihoods", "lppd", "bootstrap_stderr"]

DEFAULT_DRAWS = 100  # draws from a guide that is not a point mass
_BOOTSTRAP = 200  # resamples of the draws for the Monte Carlo stderr


class FixSites(Messenger):
    """Set the named sample sites to given values; they contribute nothing to the density
    (masked), so the trace scores p(x, z_local | θ) rather than p(x, z_local, θ)."""

    def __init__(self, values: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.values = values

    def _pyro_sample(self, msg: dict) -> None:
        if msg["name"] in self.values:
            msg["value"] = self.values[msg["name"]]
            msg["is_observed"] = True
            msg["mask"] = False


class PosteriorDraw(FixSites):
    """:class:`FixSites` with one of ``draws`` (``{site: (S, *shape)}``), picked uniformly at
    random each time the program runs: SVI on it fits a local guide to the posterior average
    of p(z_i | x_i, θ)."""

    def __init__(self, draws: dict[str, torch.Tensor]) -> None:
        super().__init__({})
        self.draws = draws
        self.num_draws = int(next(iter(draws.values())).shape[0])

    def __enter__(self) -> PosteriorDraw:
        index = int(torch.randint(self.num_draws, ()))
        self.values = {name: value[index] for name, value in self.draws.items()}
        return super().__enter__()


def _from_inference_data(posterior: Any) -> dict[str, torch.Tensor]:
    group = posterior.posterior
    draws = {}
    for name, array in group.data_vars.items():
        values = torch.as_tensor(array.values)  # (chain, draw, *shape)
        draws[name] = values.reshape(-1, *values.shape[2:])
    return draws


def check_posterior_sites(program: Callable, batch: tuple[torch.Tensor, ...],
                          draws: dict[str, torch.Tensor], global_latents: tuple[str, ...]) -> None:
    """Each key of ``draws`` names a latent site of ``program`` (not a ``pyro.param``, not an
    observed site), and each global site's draws have its shape after the draw dimension:
    checked on one trace of the program, before any draw is scored."""
    try:
        with scratch_param_store(), poutine.block(), torch.no_grad():
            trace = poutine.trace(program).get_trace(*batch)
    except Exception:  # noqa: BLE001 - scoring the draws reports it in the user's terms
        return
    latent = [name for name, site in trace.nodes.items() if site["type"] == "sample"
              and not site["is_observed"] and not site_is_subsample(site)]
    for name, value in draws.items():
        site = trace.nodes.get(name)
        if site is not None and site["type"] == "param":
            raise ValueError(f"posterior[{name!r}]: '{name}' is a pyro.param, not a latent site; "
                             "posterior draws are for sites sampled with pyro.sample (the "
                             f"program's latent sites are {latent}); drop '{name}'")
        if name not in latent:
            observed = site is not None and site["type"] == "sample"
            raise ValueError(f"posterior has no {'latent ' if observed else ''}site {name!r}"
                             f"{' (it is observed)' if observed else ''}; the program's latent "
                             f"sites are {latent}")
        if name in global_latents:
            shape = tuple(site["value"].shape)
            if tuple(value.shape[1:]) != shape:
                count = int(value.shape[0])
                raise ValueError(f"posterior[{name!r}] has draws of shape {tuple(value.shape)}; "
                                 f"site {name!r} has shape {shape}: pass {(count, *shape)} (the "
                                 "draw dimension first)")


def _on_batch(posterior: dict, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    """The draws as tensors on the batch's device, floats in its float dtype (float64 MCMC
    draws score a float32 program)."""
    floats = next((t.dtype for t in batch if t.is_floating_point()), None)
    return {name: torch.as_tensor(value).to(
        device=batch[0].device if batch else None,
        dtype=floats if torch.as_tensor(value).is_floating_point() else None)
        for name, value in posterior.items()}


def _check_draw_values(draws: dict[str, torch.Tensor]) -> None:
    """Each site's draws have a draw dimension, at least one draw, and finite values."""
    for name, value in draws.items():
        if value.dim() == 0:
            raise ValueError(f"posterior[{name!r}] is a scalar; posterior draws need the draw "
                             f"dimension first, e.g. {{{name!r}: value[None]}} for one draw")
        if value.shape[0] == 0:
            raise ValueError(f"posterior[{name!r}] holds zero draws (shape "
                             f"{tuple(value.shape)}); pass at least one draw")
        if value.is_floating_point() and not torch.isfinite(value).all():
            what = "NaN" if torch.isnan(value).any() else "Inf"
            raise ValueError(f"posterior[{name!r}] has {what} draws; drop the non-finite "
                             "draws (a diverged chain?) before evaluating")


def _given_draws(posterior: Any, batch: tuple[torch.Tensor, ...],
                 global_latents: tuple[str, ...], num_draws: int | None,
                 program: Callable | None) -> tuple[dict[str, torch.Tensor], str, bool]:
    """:func:`posterior_draws` for draws the caller passed (a dict or InferenceData)."""
    if hasattr(posterior, "posterior"):  # arviz InferenceData from run_mcmc
        posterior = _from_inference_data(posterior)
    if not isinstance(posterior, dict) or not posterior:
        raise TypeError("posterior must be a dict {site: draws with the draw dimension first} "
                        "or the InferenceData returned by probgen.infer.mcmc.run_mcmc")
    draws = _on_batch(posterior, batch)
    _check_draw_values(draws)
    if program is not None:
        check_posterior_sites(program, batch, draws, global_latents)
    sizes = {int(value.shape[0]) for value in draws.values()}
    if len(sizes) != 1:
        raise ValueError(f"posterior draws disagree on their number: {sorted(sizes)} per site")
    missing = sorted(set(global_latents) - set(draws))
    if missing:
        raise ValueError(f"posterior holds no draws of the global latents {missing}")
    if num_draws is not None:
        draws = {name: value[:num_draws] for name, value in draws.items()}
    count = next(iter(sizes)) if num_draws is None else min(num_draws, next(iter(sizes)))
    return draws, f"{count} posterior draws", count == 1


def _guide_globals(guide: Callable, batch: tuple[torch.Tensor, ...],
                   global_latents: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """One draw of the global latents from ``guide`` run on the held-out rows."""
    try:
        trace = poutine.trace(guide).get_trace(*batch)
    except (RuntimeError, ValueError, IndexError) as error:
        raise ValueError(
            f"guide= failed on the {len(batch[0])} held-out rows while drawing the global "
            f"latents {list(global_latents)} ({str(error).splitlines()[0]}); pass "
            f"posterior= (draws of {list(global_latents)}, e.g. from MCMC) with a guide "
            "for the local latents, or the guide probgen.fit built over every latent"
        ) from error
    for name in global_latents:
        if name not in trace.nodes:
            raise ValueError(
                f"guide= samples no draws of the global latent '{name}' (it guides "
                f"{sorted(n for n, s in trace.nodes.items() if s['type'] == 'sample')}):"
                f" pass posterior= (draws of {list(global_latents)}, e.g. from MCMC) "
                "with it, or the guide probgen.fit built over every latent")
    return {name: trace.nodes[name]["value"].detach() for name in global_latents}


def _guide_draws(guide: Callable, batch: tuple[torch.Tensor, ...],
                 global_latents: tuple[str, ...], num_draws: int | None
                 ) -> tuple[dict[str, torch.Tensor], str, bool]:
    """:func:`posterior_draws` from a guide: one draw of an AutoDelta (a point mass), else
    ``num_draws`` (default :data:`DEFAULT_DRAWS`)."""
    point_mass = isinstance(guide, AutoDelta)
    count = 1 if point_mass else (num_draws or DEFAULT_DRAWS)
    with torch.no_grad(), poutine.block():
        collected = [_guide_globals(guide, batch, global_latents) for _ in range(count)]
    draws = {name: torch.stack([one[name] for one in collected]) for name in global_latents}
    described = f"{type(guide).__name__} guide, {'point mass' if point_mass else f'{count} draws'}"
    return draws, described, point_mass


def posterior_draws(posterior: Any, guide: Callable | None, batch: tuple[torch.Tensor, ...],
                    global_latents: tuple[str, ...], num_draws: int | None,
                    program: Callable | None = None
                    ) -> tuple[dict[str, torch.Tensor], str, bool]:
    """(draws as {site: (S, *shape)}, a description, whether the posterior is a point mass);
    given ``program``, the draws' sites and shapes are checked against one trace of it."""
    if posterior is not None:
        return _given_draws(posterior, batch, global_latents, num_draws, program)
    if not global_latents:
        raise ValueError("estimator='predictive' averages over posterior draws of global latents "
                         "(sampled outside the data plate) and the model has none: use "
                         "estimator='auto' (exact, or an IWAE bound with guide=)")
    if guide is None:
        raise ValueError(f"the model has global latents {list(global_latents)}: pass guide= "
                         "(e.g. the guide probgen.fit returned) or posterior= (MCMC draws)")
    return _guide_draws(guide, batch, global_latents, num_draws)


def local_program_info(info: ProgramInfo, fixed: tuple[str, ...]) -> ProgramInfo:
    """``info`` once the sites ``fixed`` hold posterior draws: what is left are local latents."""
    unfixed_globals = sorted(set(info.global_latents) - set(fixed))
    if unfixed_globals:
        raise ValueError(f"global latents {unfixed_globals} have no posterior draws")
    return dataclasses.replace(
        info, continuous_latents=tuple(n for n in info.continuous_latents if n not in fixed),
        discrete_latents=tuple(n for n in info.discrete_latents if n not in fixed),
        enumerable=tuple(n for n in info.enumerable if n not in fixed), global_latents=())


def locals_sum_out(info: ProgramInfo, fixed: tuple[str, ...]) -> bool:
    """Whether the latents left once ``fixed`` hold draws are all enumerable (summed out)."""
    local = local_program_info(info, fixed)
    return not local.continuous_latents and set(local.discrete_latents) <= set(local.enumerable)


def draw_log_likelihoods(model: Callable, guide: Callable | None,
                         batch: tuple[torch.Tensor, ...], info: ProgramInfo,
                         draws: dict[str, torch.Tensor], *, k: int,
                         particle_chunk: int) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    r"""log p(x_i | θ_s), shape ``(draws, examples)``, its Monte Carlo stderr (same shape; None
    when exact) and how the local latents were scored:
    ``"exact"`` (summed out) or ``"iwae"``: log (1/k) Σ_k p(x_i, z_k | θ_s) / q(z_k | x_i),
    z_k ~ q with the global sites of ``guide`` fixed to θ_s; a lower bound on log p(x_i | θ_s)
    in expectation (Burda et al., 2016).

    A Python loop over draws (each pass vectorized over examples and particles): programs index
    their global latents without a draw dimension (``z @ W.T``), so draws cannot be a plate."""
    local = local_program_info(info, tuple(draws))
    exact_locals = locals_sum_out(info, tuple(draws))
    if not exact_locals and guide is None:
        raise ValueError(f"local latents {list(local.latents)} cannot be summed out: pass a guide "
                         "for them (its global sites are fixed to the posterior draws)")
    num_draws = int(next(iter(draws.values())).shape[0])
    rows, stderrs = [], []
    for s in range(num_draws):
        values = {name: value[s] for name, value in draws.items()}
        fixed_model = FixSites(values)(model)
        if exact_locals:
            rows.append(exact_log_prob(fixed_model, batch, local))
        else:
            row, stderr = iwae_with_stderr(fixed_model, FixSites(values)(guide), batch, local,
                                           k=k, particle_chunk=particle_chunk)
            rows.append(row)
            stderrs.append(stderr)
    if exact_locals:
        return torch.stack(rows), None, "exact"
    return torch.stack(rows), torch.stack(stderrs), "iwae"  # (draws, examples)


@contextmanager
def _new_parameters() -> Iterator[list[str]]:
    """Collect the names of parameters created in the block, and remove them from the store."""
    store = pyro.get_param_store()
    before = set(store.keys())
    created: list[str] = []
    try:
        yield created
    finally:
        created.extend(sorted(name for name in store.keys() if name not in before))
        for name in created:
            del store[name]


def _chunks(batch: tuple[torch.Tensor, ...], chunk: int) -> Iterator[tuple[torch.Tensor, ...]]:
    for start in range(0, len(batch[0]), chunk):
        yield tuple(t[start:start + chunk] for t in batch)


def _sampled_sites(guide: Callable, batch: tuple[torch.Tensor, ...], data_plate: str | None,
                   fixed: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """(global, per-example) latent sites ``guide`` samples on ``batch``, ``fixed`` set aside."""
    with poutine.block(), torch.no_grad():
        trace = poutine.trace(FixSites(fixed)(guide)).get_trace(*batch)
    global_sites, local_sites = [], []
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        inside = any(frame.name == data_plate for frame in site["cond_indep_stack"])
        (local_sites if inside else global_sites).append(name)
    return global_sites, local_sites


class _GuideParts:
    """The parts of an ``AutoGuideList`` that propose the local latents, run in turn."""

    def __init__(self, parts: list[Callable]) -> None:
        self.parts = parts
        self.__name__ = " + ".join(type(part).__name__ for part in parts)

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        result: dict = {}
        for part in self.parts:
            result.update(part(*args, **kwargs) or {})
        return result


def _local_proposal(guide: Callable | None, batch: tuple[torch.Tensor, ...], info: ProgramInfo,
                    draws: dict[str, torch.Tensor]) -> tuple[Callable | None, bool]:
    """(the proposal for the local latents, whether it must be refit on ``batch``). An
    ``AutoGuideList`` loses its parts over global sites only (they gave the draws); an autoguide
    over per-example latents, or none, is refit; an amortized guide is used as it is."""
    if guide is None or holds_training_examples(guide, info):
        return guide, True
    if not isinstance(guide, AutoGuideList):
        return guide, False
    first = {name: value[0] for name, value in draws.items()}
    with _new_parameters():  # an unfitted part is caught by _check_proposal, not here
        kept = [part for part in guide
                if _sampled_sites(part, batch, info.data_plate, first)[1]]  # with local sites
    refit = [part for part in kept if not isinstance(part, AutoCallable)]
    if refit and len(refit) < len(kept):
        raise ValueError(
            f"guide= mixes autoguides over per-example latents ({[type(p).__name__ for p in refit]}"
            ") with amortized parts: pass the amortized part as guide= with posterior= draws, "
            "or an AutoGuideList whose per-example parts are all autoguides (refit on the "
            "held-out rows)")
    if refit:
        return refit[0], True
    return _GuideParts(kept), False


def _check_proposal(guide: Callable, batch: tuple[torch.Tensor, ...], info: ProgramInfo,
                    draws: dict[str, torch.Tensor]) -> None:
    """Refuse a user-written local guide that was never fitted (it creates its parameters when
    first called), that cannot take the held-out rows (one parameter per training example), or
    that samples global sites the posterior draws do not fix."""
    first = {name: value[0] for name, value in draws.items()}
    with _new_parameters() as created:
        try:
            global_sites, _ = _sampled_sites(guide, batch, info.data_plate, first)
        except (RuntimeError, ValueError, IndexError) as error:
            raise ValueError(
                f"guide= failed on the {len(batch[0])} held-out rows "
                f"({str(error).splitlines()[0]}): a guide with one parameter per training "
                "example cannot propose latents for new rows; pass an autoguide (evaluate "
                "refits it on the held-out rows for refit_steps), an amortized guide "
                "q(z | x), or no guide") from error
    if created:
        raise ValueError(
            f"guide= created the parameters {created} when called: it was never fitted, and an "
            "unfitted proposal gives a meaningless held-out number; fit it first "
            "(probgen.fit(model, train, guide=guide)), or pass an autoguide or no guide: "
            "evaluate then fits one to the held-out rows (refit_steps)")
    if global_sites:
        raise ValueError(
            f"guide= samples the global site(s) {global_sites} besides the posterior draws of "
            f"{sorted(draws)}: as the proposal for the local latents pass a guide over them only "
            "(its sites named like the model's global latents are set to each draw), an "
            "AutoGuideList, or no guide (an AutoNormal is refit on the held-out rows)")


def _user_stacklevel() -> int:
    """The stacklevel of the first frame outside probgen, for warnings.warn from the caller."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _warn_if_poor(stderr: torch.Tensor, k: int, advice: str) -> None:
    """Warn when the local importance weights collapse: ESS = 1/(stderr² + 1/k) (Kong, 1992)
    below min(10, k/2) in most draws leaves a row's IWAE term far below log p(x_i | θ_s)."""
    ess = 1 / (stderr.double() ** 2 + 1 / k)  # (draws, examples)
    poor = ess.median(0).values < min(10.0, k / 2)
    if poor.any():
        rows = poor.nonzero().flatten().tolist()
        warnings.warn(
            f"{len(rows)} of {poor.numel()} held-out rows (first: row {rows[0]}) got an effective "
            f"sample size below {min(10.0, k / 2):g} of k={k} local particles in most posterior "
            "draws: the proposal for the local latents misses their posterior, so these values "
            f"sit below log p(x_i | D) by an unknown amount; {advice}", stacklevel=_user_stacklevel())


def held_out_log_likelihoods(model: Callable, guide: Callable | None,
                             batch: tuple[torch.Tensor, ...], info: ProgramInfo,
                             draws: dict[str, torch.Tensor], *, k: int, chunk: int,
                             memory_budget: int, refit: RefitSettings
                             ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    r"""log p(x_i | θ_s) for every draw θ_s, shape ``(draws, examples)``, its Monte Carlo stderr
    (None when exact) and settings saying how.

    Local latents are summed out when enumerable; otherwise each p(x_i | θ_s) =
    ∫ p(x_i, z_i | θ_s) dz_i is importance-sampled with ``k`` particles from a local proposal:
    ``guide`` if it can propose for new rows (amortized, fitted), else a fresh autoguide over the
    local sites fitted to ``batch`` (``refit``) with θ drawn from ``draws`` at each step.
    """
    if locals_sum_out(info, tuple(draws)):
        rows = [draw_log_likelihoods(wrap(model), None, piece, info, draws, k=k,
                                     particle_chunk=1)[0][:, :keep]
                for piece, wrap, keep in data_plate_pieces(batch, info.subsample_size,
                                                           info.data_plate, chunk)]
        return torch.cat(rows, 1), None, {"local_latents": "exact"}  # (draws, examples)
    if info.subsample_size is not None:
        raise ValueError(f"the data plate {info.data_plate!r} subsamples itself "
                         f"(subsample_size={info.subsample_size}) and the local latents "
                         f"{list(local_program_info(info, tuple(draws)).latents)} are continuous: "
                         "importance sampling them needs every held-out row at once; build "
                         "the plate without subsample_size for evaluation (e.g. "
                         "subsample_size=None when the data are small)")
    proposal, needs_refit = _local_proposal(guide, batch, info, draws)
    settings: dict[str, Any] = {"local_latents": "iwae", "k": k}
    if needs_refit:
        settings["refit"] = {**refit.as_dict(proposal), "global_latents": "posterior draws"}
        settings["proposal"] = f"{settings['refit']['guide']} refit on the held-out rows"
        particle_chunk = max(1, min(k, memory_budget // (64 * len(batch[0]))))
        with refit_local_guide(PosteriorDraw(draws)(model), proposal, batch, info,
                               refit) as fresh:
            log_lik, stderr, _ = draw_log_likelihoods(
                model, fresh, batch, info, draws, k=k, particle_chunk=particle_chunk)  # one chunk
        assert stderr is not None
        _warn_if_poor(stderr, k, f"raise refit_steps (now {refit.num_steps}) or k")
        return log_lik, stderr, settings
    assert proposal is not None
    _check_proposal(proposal, batch, info, draws)
    settings["proposal"] = getattr(proposal, "__name__", type(proposal).__name__)
    parts, stderrs = [], []
    for piece in _chunks(batch, chunk):
        values, stderr, _ = draw_log_likelihoods(
            model, proposal, piece, info, draws, k=k,
            particle_chunk=max(1, min(k, memory_budget // (64 * len(piece[0])))))
        assert stderr is not None
        parts.append(values)
        stderrs.append(stderr)
    stderr = torch.cat(stderrs, 1)
    _warn_if_poor(stderr, k, "raise k, train the guide further, or pass no guide (an "
                             "autoguide is then refit on the held-out rows)")
    return torch.cat(parts, 1), stderr, settings  # (draws, examples) each


def lppd(log_lik: torch.Tensor) -> torch.Tensor:
    """log (1/S) Σ_s p(x_i | θ_s) from ``(draws, examples)`` log-likelihoods."""
    return torch.logsumexp(log_lik, 0) - math.log(log_lik.shape[0])


def bootstrap_stderr(log_lik: torch.Tensor, local_stderr: torch.Tensor | None = None) -> float:
    """Stderr of the mean lppd due to the finite number of draws (resampling the draws; each
    draw's row carries its own local particles, so their noise is counted too). For one draw,
    the local particles' stderr ``(1, examples)`` alone (independent across examples)."""
    num_draws = log_lik.shape[0]
    if num_draws == 1:
        if local_stderr is None:
            return 0.0
        return float(local_stderr.double().pow(2).sum().sqrt() / local_stderr.shape[-1])
    generator = torch.Generator().manual_seed(0)
    index = torch.randint(num_draws, (_BOOTSTRAP, num_draws), generator=generator)
    resampled = log_lik.cpu()[index]  # (bootstrap, draws, examples)
    means = (torch.logsumexp(resampled, 1) - math.log(num_draws)).mean(-1)
    return float(means.std())
