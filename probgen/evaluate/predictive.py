"""Held-out log predictive density for programs with global latents (Gelman et al.'s lppd).

lppd_i = log (1/S) Σ_s p(x_i | θ_s), θ_s drawn from a posterior (MCMC draws, a dict of draws,
or a guide); local latents given θ_s are summed out exactly or bounded by IWAE-k.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from pyro import poutine
from pyro.infer.autoguide import AutoDelta
from pyro.poutine.messenger import Messenger

from probgen.core.program import ProgramInfo
from probgen.evaluate.exact import exact_log_prob
from probgen.evaluate.importance import importance_bound

__all__ = ["FixSites", "posterior_draws", "draw_log_likelihoods", "lppd", "bootstrap_stderr"]

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


def _from_inference_data(posterior: Any) -> dict[str, torch.Tensor]:
    group = posterior.posterior
    draws = {}
    for name, array in group.data_vars.items():
        values = torch.as_tensor(array.values)  # (chain, draw, *shape)
        draws[name] = values.reshape(-1, *values.shape[2:])
    return draws


def posterior_draws(posterior: Any, guide: Callable | None, batch: tuple[torch.Tensor, ...],
                    global_latents: tuple[str, ...], num_draws: int | None
                    ) -> tuple[dict[str, torch.Tensor], str, bool]:
    """(draws as {site: (S, *shape)}, a description, whether the posterior is a point mass)."""
    if posterior is not None:
        if hasattr(posterior, "posterior"):  # arviz InferenceData from run_mcmc
            posterior = _from_inference_data(posterior)
        if not isinstance(posterior, dict) or not posterior:
            raise TypeError("posterior must be a dict {site: draws with the draw dimension first} "
                            "or the InferenceData returned by probgen.infer.mcmc.run_mcmc")
        draws = {name: torch.as_tensor(value) for name, value in posterior.items()}
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
    if guide is None:
        raise ValueError(f"the model has global latents {list(global_latents)}: pass guide= "
                         "(e.g. the guide probgen.fit returned) or posterior= (MCMC draws)")
    point_mass = isinstance(guide, AutoDelta)
    count = 1 if point_mass else (num_draws or DEFAULT_DRAWS)
    collected: dict[str, list[torch.Tensor]] = {name: [] for name in global_latents}
    with torch.no_grad(), poutine.block():
        for _ in range(count):
            trace = poutine.trace(guide).get_trace(*batch)
            for name in global_latents:
                if name not in trace.nodes:
                    raise ValueError(f"the guide does not sample the global latent '{name}'")
                collected[name].append(trace.nodes[name]["value"].detach())
    draws = {name: torch.stack(values) for name, values in collected.items()}
    described = f"{type(guide).__name__} guide, {'point mass' if point_mass else f'{count} draws'}"
    return draws, described, point_mass


def draw_log_likelihoods(model: Callable, guide: Callable | None,
                         batch: tuple[torch.Tensor, ...], info: ProgramInfo,
                         draws: dict[str, torch.Tensor], *, k: int,
                         particle_chunk: int) -> tuple[torch.Tensor, str]:
    """log p(x_i | θ_s), shape ``(draws, examples)``, and how the local latents were scored
    (``"exact"``: summed out; ``"iwae"``: an IWAE-k bound with the guide)."""
    fixed = tuple(draws)
    local = dataclasses.replace(
        info, continuous_latents=tuple(n for n in info.continuous_latents if n not in fixed),
        discrete_latents=tuple(n for n in info.discrete_latents if n not in fixed),
        enumerable=tuple(n for n in info.enumerable if n not in fixed), global_latents=())
    unfixed_globals = sorted(set(info.global_latents) - set(fixed))
    if unfixed_globals:
        raise ValueError(f"global latents {unfixed_globals} have no posterior draws")
    exact_locals = not local.continuous_latents and set(local.discrete_latents) <= set(
        local.enumerable)
    if not exact_locals and guide is None:
        raise ValueError(f"local latents {list(local.latents)} cannot be summed out: pass a guide "
                         "for them (its global sites are fixed to the posterior draws)")
    num_draws = int(next(iter(draws.values())).shape[0])
    rows = []
    for s in range(num_draws):  # each pass is vectorized over the examples (and particles)
        values = {name: value[s] for name, value in draws.items()}
        fixed_model = FixSites(values)(model)
        if exact_locals:
            rows.append(exact_log_prob(fixed_model, batch, local))
        else:
            rows.append(importance_bound(fixed_model, FixSites(values)(guide), batch, local,
                                         estimator="iwae", k=k, particle_chunk=particle_chunk))
    return torch.stack(rows), "exact" if exact_locals else "iwae"  # (draws, examples)


def lppd(log_lik: torch.Tensor) -> torch.Tensor:
    """log (1/S) Σ_s p(x_i | θ_s) from ``(draws, examples)`` log-likelihoods."""
    return torch.logsumexp(log_lik, 0) - math.log(log_lik.shape[0])


def bootstrap_stderr(log_lik: torch.Tensor) -> float:
    """Stderr of the mean lppd due to the finite number of draws (resampling the draws)."""
    num_draws = log_lik.shape[0]
    if num_draws == 1:
        return 0.0
    generator = torch.Generator().manual_seed(0)
    index = torch.randint(num_draws, (_BOOTSTRAP, num_draws), generator=generator)
    resampled = log_lik.cpu()[index]  # (bootstrap, draws, examples)
    means = (torch.logsumexp(resampled, 1) - math.log(num_draws)).mean(-1)
    return float(means.std())
