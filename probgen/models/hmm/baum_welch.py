"""Baum-Welch EM for :class:`probgen.models.hmm.HMM`: batched forward-backward, closed-form M-step."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from probgen.data.sequences import lengths_to_mask
from probgen.models.hmm.forward_backward import (
    forward_backward,
    forward_log_likelihood,
    single_thread_if_small,
)
from probgen.models.hmm.model import HMM

__all__ = ["BaumWelchResult", "baum_welch", "initialize_from_data"]


@dataclass(frozen=True)
class BaumWelchResult:
    """What a Baum-Welch run did.

    Fields:
        log_likelihoods: total log p(data) (nats, summed over sequences) at the parameters that
            entered each iteration (computed by its E-step; nondecreasing without priors).
        final_log_likelihood: total log p(data) at the returned parameters.
        num_iterations: iterations run; converged: whether ``tol`` stopped the run.
        seconds: wall time; num_steps: observed time steps in the data.
    """

    log_likelihoods: list[float] = field(default_factory=list)
    final_log_likelihood: float = float("nan")
    num_iterations: int = 0
    converged: bool = False
    seconds: float = 0.0
    num_steps: int = 0


def _sufficient_statistics(model: HMM, sequences: torch.Tensor, mask: torch.Tensor):
    log_emission = model.emission_log_prob(sequences)
    log_likelihood, posteriors, transition_counts = forward_backward(
        model.log_initial, model.log_transition, log_emission, mask)
    observed = posteriors[mask]  # (num_steps, S)
    return log_likelihood.sum(), posteriors[:, 0], transition_counts, observed, sequences[mask]


@torch.no_grad()
def _m_step(model: HMM, initial_counts, transition_counts, posteriors, values, *,
            pseudocount: float, variance_prior: float, probability_floor: float) -> None:
    state_totals = posteriors.sum(0)  # (S,)
    initial = initial_counts + pseudocount
    transition = transition_counts + pseudocount
    updates: dict[str, torch.Tensor] = {
        "initial_probs": initial / initial.sum(),
        "transition_probs": transition / transition.sum(-1, keepdim=True).clamp_min(1e-300),
    }
    if model.emission == "categorical":
        one_hot = torch.nn.functional.one_hot(values, model.config["num_categories"])
        counts = posteriors.T @ one_hot.to(posteriors.dtype) + pseudocount  # (S, C)
        updates["emission_probs"] = counts / counts.sum(-1, keepdim=True)
    elif model.emission == "bernoulli":
        on = posteriors.T @ values + pseudocount  # (S, D)
        probs = on / (state_totals[:, None] + 2 * pseudocount).clamp_min(1e-300)
        updates["emission_probs"] = probs.clamp(probability_floor, 1 - probability_floor)
    else:
        totals = state_totals[:, None].clamp_min(1e-300)
        sums = posteriors.T @ values  # (S, D)
        means = sums / totals
        updates["means"] = means
        if model.config["covariance"] == "diag":
            # Σ γ (x - μ)² written with moments, as hmmlearn's M-step (covars_weight=1)
            squares = posteriors.T @ values**2 - 2 * means * sums + means**2 * totals
            updates["variances"] = (variance_prior + squares) / totals
        else:
            centred = values[:, None, :] - means  # (N, S, D)
            scatter = torch.einsum("ns,nsd,nse->sde", posteriors, centred, centred)
            eye = torch.eye(values.shape[-1], dtype=values.dtype, device=values.device)
            updates["covariances"] = (scatter + variance_prior * eye) / totals[..., None]
    model.set_parameters(**updates)


def baum_welch(
    model: HMM,
    sequences: torch.Tensor,
    lengths: torch.Tensor | None = None,
    *,
    num_iterations: int = 100,
    tol: float | None = 1e-6,
    pseudocount: float = 0.0,
    variance_prior: float = 1e-6,
    probability_floor: float = 1e-10,
    callback: Callable[[int, float], Any] | None = None,
) -> BaumWelchResult:
    r"""Fit ``model`` in place by EM: θ ← argmax_θ E_{p(z | x, θ_old)} log p(x, z | θ) (Baum, 1970).

    Each iteration runs one batched forward-backward pass over the padded batch (no loop over
    sequences) and the closed-form M-step.

    Arguments:
        sequences, lengths: a padded batch ``(B, T, ...)`` and its lengths ``(B,)``.
        tol: stop when the log-likelihood per observed step improves by less than this
            (``None``: run all ``num_iterations``).
        pseudocount: added to initial, transition and categorical/Bernoulli counts (a
            Dirichlet/Beta prior; 0 is maximum likelihood).
        variance_prior: added to each state's summed squared deviations (hmmlearn's
            ``covars_prior``; keeps a state from collapsing onto one point).
        probability_floor: Bernoulli probabilities are clipped to [floor, 1 - floor].
        callback: called as ``callback(iteration, log_likelihood)`` after each E-step.

    Example:
        >>> hmm = HMM(2, "gaussian", num_features=1)
        >>> x = hmm.sample(5, length=20)
        >>> baum_welch(hmm, x, num_iterations=3, tol=None).num_iterations
        3
    """
    sequences, lengths = model.validate_batch(sequences, lengths)
    mask = lengths_to_mask(lengths, sequences.shape[1])
    num_steps = int(lengths.sum())
    history: list[float] = []
    converged = False
    start = time.perf_counter()
    work = sequences.shape[0] * sequences.shape[1] * model.num_states
    with torch.no_grad(), single_thread_if_small(work, sequences.device):
        for iteration in range(num_iterations):
            total, initial_counts, transition_counts, posteriors, values = _sufficient_statistics(
                model, sequences, mask)
            history.append(float(total))
            if callback is not None:
                callback(iteration, history[-1])
            if not torch.isfinite(total):
                raise FloatingPointError(f"Baum-Welch iteration {iteration}: log-likelihood is "
                                         f"{float(total)}; some data is impossible under the "
                                         "current parameters (raise pseudocount or variance_prior)")
            if tol is not None and len(history) > 1 and (history[-1] - history[-2]) / num_steps < tol:
                converged = True
                break
            _m_step(model, initial_counts.sum(0), transition_counts, posteriors, values,
                    pseudocount=pseudocount, variance_prior=variance_prior,
                    probability_floor=probability_floor)
        final = forward_log_likelihood(model.log_initial, model.log_transition,
                                       model.emission_log_prob(sequences), mask).sum()
    return BaumWelchResult(history, float(final), len(history), converged,
                           time.perf_counter() - start, num_steps)


def _kmeans_plus_plus(values: torch.Tensor, num_states: int, generator: torch.Generator,
                      max_candidates: int = 10_000) -> torch.Tensor:
    """Indices of ``num_states`` observed steps spread out by k-means++ seeding (Arthur and
    Vassilvitskii, 2007): each next pick with probability ∝ squared distance to the nearest."""
    candidates = torch.randperm(values.shape[0], generator=generator)[:max_candidates]
    points = values[candidates.to(values.device)].reshape(len(candidates), -1).double().cpu()
    chosen = [int(torch.randint(len(candidates), (1,), generator=generator))]
    nearest = ((points - points[chosen[0]]) ** 2).sum(-1)  # (candidates,)
    for _ in range(1, num_states):  # a loop over states, not data
        if float(nearest.sum()) > 0:
            pick = int(torch.multinomial(nearest / nearest.sum(), 1, generator=generator))
        else:  # fewer distinct steps than states: repeat one
            pick = int(torch.randint(len(candidates), (1,), generator=generator))
        chosen.append(pick)
        nearest = torch.minimum(nearest, ((points - points[pick]) ** 2).sum(-1))
    return candidates[chosen]


@torch.no_grad()
def initialize_from_data(model: HMM, sequences: torch.Tensor, lengths: torch.Tensor | None = None,
                         *, seed: int = 0) -> HMM:
    """A data-driven start for EM: near-uniform π and A, emissions centred on observed steps
    picked by k-means++ seeding (Gaussian and Bernoulli) or jittered data frequencies."""
    sequences, lengths = model.validate_batch(sequences, lengths)
    values = sequences[lengths_to_mask(lengths, sequences.shape[1])]  # (N, ...)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    num_states, dtype = model.num_states, model.dtype
    picks = _kmeans_plus_plus(values, num_states, generator).to(values.device)
    noise = torch.rand(num_states, num_states, generator=generator, dtype=dtype).to(values.device)
    updates: dict[str, torch.Tensor] = {
        "initial_probs": torch.full((num_states,), 1.0 / num_states, dtype=dtype),
        "transition_probs": (1 + noise) / (1 + noise).sum(-1, keepdim=True),
    }
    if model.emission == "categorical":
        counts = torch.bincount(values, minlength=model.config["num_categories"]).to(dtype) + 1
        jitter = torch.rand(num_states, counts.numel(), generator=generator, dtype=dtype)
        probs = counts.cpu() * (0.5 + jitter)
        updates["emission_probs"] = probs / probs.sum(-1, keepdim=True)
    elif model.emission == "bernoulli":
        mean = values.mean(0).cpu()
        probs = 0.5 * mean + 0.5 * values[picks].cpu()  # pull towards one observed step each
        updates["emission_probs"] = probs.clamp(1e-3, 1 - 1e-3)
    else:
        updates["means"] = values[picks]
        variances = values.var(0).clamp_min(1e-6)
        if model.config["covariance"] == "diag":
            updates["variances"] = variances.expand(num_states, -1)
        else:
            updates["covariances"] = torch.diag_embed(variances.expand(num_states, -1))
    return model.set_parameters(**{k: v.to(values.device) for k, v in updates.items()})
