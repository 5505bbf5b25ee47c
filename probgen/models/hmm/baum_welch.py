"""Baum-Welch EM for :class:`probgen.models.hmm.HMM` as a ``probgen.fit`` method: batched
forward-backward, closed-form M-step."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from probgen.data.sequences import lengths_to_mask
from probgen.infer.method import TrainingMethod, TrainingSetup, same_data
from probgen.models.hmm.forward_backward import single_thread_if_small, state_major_forward_backward
from probgen.models.hmm.model import HMM
from probgen.models.hmm.state_major import Workspace

__all__ = ["BaumWelch", "initialize_from_data"]


@torch.no_grad()
def _m_step(model: HMM, initial_counts, transition_counts, posteriors, features, *,
            pseudocount: float, variance_prior: float, probability_floor: float) -> None:
    """Closed-form M-step from expected counts: ``posteriors`` (S, N) over the N = T B steps in
    time-major order (zero at padded steps), ``features`` their :meth:`HMM.step_statistics`."""
    initial = initial_counts + pseudocount
    transition = transition_counts + pseudocount
    updates: dict[str, torch.Tensor] = {
        "initial_probs": initial / initial.sum(),
        "transition_probs": transition / transition.sum(-1, keepdim=True).clamp_min(1e-300),
    }
    state_totals = posteriors.sum(1)  # (S,)
    updates.update(model.emission_impl.m_step(
        posteriors, features, state_totals, pseudocount=pseudocount,
        variance_prior=variance_prior, probability_floor=probability_floor))
    model.set_parameters(**updates)


@HMM.training_method("baum_welch")
class BaumWelch(TrainingMethod):
    r"""Baum-Welch EM for an :class:`~probgen.models.hmm.HMM` (Baum, 1970), run by
    ``probgen.fit(hmm, (sequences, lengths), method="baum_welch")`` (the HMM's default method):
    θ ← argmax_θ E_{p(z | x, θ_old)} log p(x, z | θ).

    Each step is one EM iteration: the closed-form M-step from the previous E-step's expected
    counts, then one batched forward-backward pass over the padded batch (no loop over
    sequences) at the new parameters. ``losses[i]`` is −log p(data) (nats, summed over
    sequences) at the parameters after step ``i``: nonincreasing without priors, and the last
    one is the returned model's. ``num_steps`` counts EM iterations. Padded steps are
    unobserved (masked out of every count).

    Options (``probgen.fit(..., method="baum_welch", **options)``):
        tol: converged when the log-likelihood per observed time step improves by less than
            this (default 1e-6; ``None`` runs all ``num_steps``).
        init: ``"model"`` (default: start from the model's parameters) or ``"kmeans"``
            (:func:`initialize_from_data`, seeded from the RNG ``fit`` seeds).
        pseudocount: added to initial, transition and categorical/Bernoulli counts (a
            Dirichlet/Beta prior; 0 is maximum likelihood).
        variance_prior: added to each state's summed squared deviations (hmmlearn's
            ``covars_prior``; keeps a state from collapsing onto one point).
        probability_floor: Bernoulli probabilities are clipped to [floor, 1 - floor].

    Example:
        >>> import probgen
        >>> hmm = HMM(2, "gaussian", num_features=1)
        >>> x = hmm.sample(5, length=20)
        >>> probgen.fit(hmm, x, num_steps=3, tol=None, progress=False).num_steps
        3
    """

    full_batch = True
    title = "Baum-Welch"
    uses_optim = False
    options = ("tol", "init", "pseudocount", "variance_prior", "probability_floor")

    def __init__(self, setup: TrainingSetup) -> None:
        super().__init__(setup)
        model = setup.model
        if not isinstance(model, HMM):
            raise TypeError(f"method 'baum_welch' fits an HMM, got {type(model).__name__}")
        options = {"tol": 1e-6, "init": "model", "pseudocount": 0.0, "variance_prior": 1e-6,
                   "probability_floor": 1e-10, **setup.options}
        if options["init"] not in ("model", "kmeans"):
            raise ValueError(f"init must be 'model' or 'kmeans', got {options['init']!r}")
        self.model = model
        self.tol = None if options["tol"] is None else float(options["tol"])
        self.m_step_options = {key: float(options[key]) for key in
                               ("pseudocount", "variance_prior", "probability_floor")}
        if options["init"] == "kmeans":
            seed = int(torch.randint(2**31 - 1, ()).item())
            initialize_from_data(model, *setup.example, seed=seed)
        self._use_data(setup.example)
        if not math.isfinite(self.log_likelihood):
            raise FloatingPointError(f"Baum-Welch: log-likelihood {self.log_likelihood} at the "
                                     "initial parameters; some data is impossible under them")

    def _use_data(self, batch: tuple[torch.Tensor, ...]) -> None:
        sequences, lengths = self.model.validate_batch(*batch)
        self.source = batch[0]
        self.mask = lengths_to_mask(lengths, sequences.shape[1])  # (B, T)
        self.device, self.time = sequences.device, sequences.shape[1]
        self.workspace = Workspace()  # the (S, T, B) buffers every E-step reuses
        self.sequences = self.model.fill_padding(sequences, self.mask)
        self.features = self.model.step_statistics(self.sequences)  # (T B, ...), once
        self.num_observed = int(lengths.sum())
        self.work = sequences.shape[0] * sequences.shape[1] * self.model.num_states
        self._e_step()

    def _e_step(self) -> None:
        """One state-major forward-backward pass at the model's parameters: the expected counts
        (initial (S,), transition (S, S), per-step posteriors (S, T B)) and log p(data)."""
        model = self.model
        with torch.no_grad(), single_thread_if_small(self.work, self.device):
            log_likelihood, posteriors, transition_counts = state_major_forward_backward(
                model.log_initial, model.log_transition, model.state_emission_blocks(self.sequences),
                self.mask, time=self.time, workspace=self.workspace)
            self.statistics = (posteriors[:, 0].sum(-1), transition_counts,
                               posteriors.reshape(model.num_states, -1))
            self.log_likelihood = float(log_likelihood.sum())

    def step(self, batch: tuple[torch.Tensor, ...], scale: float) -> float:
        if not same_data(batch[0], self.source):  # a transform made new data: E-step on it
            self._use_data(batch)
        previous = self.log_likelihood
        initial_counts, transition_counts, posteriors = self.statistics
        with torch.no_grad(), single_thread_if_small(self.work, self.device):
            _m_step(self.model, initial_counts, transition_counts, posteriors, self.features,
                    **self.m_step_options)
        self._e_step()
        if not math.isfinite(self.log_likelihood):
            warnings.warn(f"Baum-Welch: log-likelihood {self.log_likelihood} after an "
                          "M-step; some data is impossible under the new parameters (raise "
                          "pseudocount or variance_prior)", RuntimeWarning, stacklevel=2)
        elif self.tol is not None and (self.log_likelihood - previous) / self.num_observed < self.tol:
            self.converged = True
        return -self.log_likelihood

    def tensors(self) -> list[torch.Tensor]:
        return list(self.model.parameters())

    def validation_loss(self, batch: tuple[torch.Tensor, ...]) -> float:
        with torch.no_grad():
            return -float(self.model.log_prob(*batch).mean())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._e_step()  # at the parameters fit restored from the checkpoint


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
    updates.update(model.emission_impl.initial_updates(values, picks, generator, dtype))
    return model.set_parameters(**{k: v.to(values.device) for k, v in updates.items()})
