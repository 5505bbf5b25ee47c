r"""HMM emissions p(x_t | z_t): one class per kind, chosen once from ``HMM(emission=...)``.

An emission holds no parameters: they stay on the :class:`~probgen.models.hmm.HMM` (its
``state_dict`` names are the saved files' names) and every method reads them from ``model``.
Each class gathers what its kind needs: the parameters' creation, the log-likelihood matrix
(batch-major and in state-major blocks), Baum-Welch's step statistics and M-step, the
data-driven start, and the data's support.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import pyro.distributions as dist
import torch
from torch import nn

if TYPE_CHECKING:
    from probgen.models.hmm.model import HMM

__all__ = ["Emission", "CategoricalEmission", "BernoulliEmission", "DiagonalGaussianEmission",
           "FullGaussianEmission", "EMISSION_CLASSES", "choose_emission"]

Block = Callable[[int, int], torch.Tensor]  # (start, stop) -> (S, stop - start, B)


class Emission:
    """One emission kind: ``size`` values per step (categories, or features)."""

    support: ClassVar[str] = "real"  # a validate_data support
    data_space: ClassVar[str] = "continuous"

    def __init__(self, num_states: int, size: int) -> None:
        self.num_states, self.size = num_states, size

    # --- parameters ------------------------------------------------------------------------
    def create_parameters(self, model: HMM) -> None:
        """Register the emission parameters on ``model`` (drawn after the transition logits)."""
        raise NotImplementedError

    def params(self, model: HMM) -> tuple[torch.Tensor, ...]:
        """Emission parameters, each with the states first."""
        raise NotImplementedError

    def distribution(self, *params: torch.Tensor) -> dist.Distribution:
        """p(x_t | z_t) for (indexed) parameters."""
        raise NotImplementedError

    def logits_from_probs(self, probs: torch.Tensor) -> torch.Tensor:
        """``emission_logits`` for ``set_parameters(emission_probs=...)``."""
        raise AttributeError(f"{type(self).__name__} has no emission_probs; set means and "
                             "variances or covariances")

    # --- data ------------------------------------------------------------------------------
    def step_shape(self) -> tuple[int, ...]:
        """The shape of one step."""
        return (self.size,)

    def step_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """A ``(B, T)`` mask broadcast over one step's values."""
        return mask[..., None]

    def cast(self, sequences: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
        """Validated sequences in the type the likelihood reads."""
        return sequences.to(dtype)

    # --- likelihoods -----------------------------------------------------------------------
    def log_prob_matrix(self, model: HMM, sequences: torch.Tensor) -> torch.Tensor:
        """``(B, T, S)`` log p(x_t | z_t = s) for a padded batch."""
        return self.distribution(*self.params(model)).log_prob(sequences[:, :, None])

    def blocks(self, model: HMM, sequences: torch.Tensor) -> Block:
        """log p(x_t | z_t = s) by blocks of steps, states first (see ``state_emission_blocks``)."""
        distribution = self.distribution(*self.params(model))

        def block(start: int, stop: int) -> torch.Tensor:
            steps = sequences[:, start:stop].transpose(0, 1)[:, :, None]  # (n, B, 1, D)
            return distribution.log_prob(steps).permute(2, 0, 1)  # (S, n, B)

        return block

    # --- Baum-Welch ------------------------------------------------------------------------
    def step_statistics(self, steps: torch.Tensor) -> torch.Tensor:
        """What the M-step averages per step, from time-major ``steps`` ``(T, B, ...)``."""
        return steps.reshape(-1, steps.shape[-1])

    def m_step(self, posteriors: torch.Tensor, features: torch.Tensor, state_totals: torch.Tensor,
               *, pseudocount: float, variance_prior: float,
               probability_floor: float) -> dict[str, torch.Tensor]:
        """The closed-form emission updates (``set_parameters`` keywords) from expected counts."""
        raise NotImplementedError

    def initial_updates(self, values: torch.Tensor, picks: torch.Tensor,
                        generator: torch.Generator, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
        """A data-driven start (``set_parameters`` keywords) from the observed steps."""
        raise NotImplementedError


def _columns(sequences: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Steps ``start:stop`` as columns ``(D, n B)``, column ``t B + b``."""
    return sequences[:, start:stop].permute(2, 1, 0).reshape(sequences.shape[-1], -1)


class LogitsEmission(Emission):
    """An emission parameterised by one logit table ``(num_states, size)``."""

    def create_parameters(self, model: HMM) -> None:
        model.emission_logits = nn.Parameter(torch.randn(self.num_states, self.size))

    def params(self, model: HMM) -> tuple[torch.Tensor, ...]:
        return (model.emission_logits,)


class CategoricalEmission(LogitsEmission):
    """Integer steps in ``0..size-1``: p(x_t = c | z_t = s) = softmax(logits_s)_c."""

    support: ClassVar[str] = "categorical"
    data_space: ClassVar[str] = "discrete"

    def distribution(self, *params: torch.Tensor) -> dist.Distribution:
        return dist.Categorical(logits=params[0])

    def logits_from_probs(self, probs: torch.Tensor) -> torch.Tensor:
        return probs.log()

    def step_shape(self) -> tuple[int, ...]:
        return ()

    def step_mask(self, mask: torch.Tensor) -> torch.Tensor:
        return mask

    def cast(self, sequences: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
        return sequences.long()

    def log_prob_matrix(self, model: HMM, sequences: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(model.emission_logits, -1).T[sequences.long()]

    def blocks(self, model: HMM, sequences: torch.Tensor) -> Block:
        num_states, batch = self.num_states, sequences.shape[0]
        log_probs = torch.log_softmax(model.emission_logits, -1)  # (S, C)

        def block(start: int, stop: int) -> torch.Tensor:
            categories = sequences[:, start:stop].T.reshape(-1).long()  # (n B,)
            return log_probs.index_select(1, categories).view(num_states, -1, batch)

        return block

    def step_statistics(self, steps: torch.Tensor) -> torch.Tensor:
        return steps.reshape(-1).long()

    def m_step(self, posteriors: torch.Tensor, features: torch.Tensor, state_totals: torch.Tensor,
               *, pseudocount: float, variance_prior: float,
               probability_floor: float) -> dict[str, torch.Tensor]:
        counts = posteriors.new_zeros(self.num_states, self.size)
        counts = counts.index_add_(1, features, posteriors) + pseudocount  # (S, C)
        return {"emission_probs": counts / counts.sum(-1, keepdim=True)}

    def initial_updates(self, values: torch.Tensor, picks: torch.Tensor,
                        generator: torch.Generator, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
        counts = torch.bincount(values, minlength=self.size).to(dtype) + 1
        jitter = torch.rand(self.num_states, counts.numel(), generator=generator, dtype=dtype)
        probs = counts.cpu() * (0.5 + jitter)
        return {"emission_probs": probs / probs.sum(-1, keepdim=True)}


class BernoulliEmission(LogitsEmission):
    """0/1 vectors of ``size`` features: p(x_td = 1 | z_t = s) = σ(logits_sd)."""

    support: ClassVar[str] = "binary"
    data_space: ClassVar[str] = "discrete"

    def distribution(self, *params: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=params[0]).to_event(1)

    def logits_from_probs(self, probs: torch.Tensor) -> torch.Tensor:
        return probs.log() - (-probs).log1p()

    def log_prob_matrix(self, model: HMM, sequences: torch.Tensor) -> torch.Tensor:
        logits = model.emission_logits  # two matmuls instead of a (B, T, S, D) broadcast
        return sequences @ nn.functional.logsigmoid(logits).T + \
            (1 - sequences) @ nn.functional.logsigmoid(-logits).T

    def blocks(self, model: HMM, sequences: torch.Tensor) -> Block:
        num_states, batch = self.num_states, sequences.shape[0]
        log_on = nn.functional.logsigmoid(model.emission_logits)  # (S, D)
        log_off = nn.functional.logsigmoid(-model.emission_logits)

        def block(start: int, stop: int) -> torch.Tensor:
            steps = _columns(sequences, start, stop)
            return (log_on @ steps).addmm_(log_off, 1 - steps).view(num_states, -1, batch)

        return block

    def m_step(self, posteriors: torch.Tensor, features: torch.Tensor, state_totals: torch.Tensor,
               *, pseudocount: float, variance_prior: float,
               probability_floor: float) -> dict[str, torch.Tensor]:
        on = posteriors @ features + pseudocount  # (S, D)
        probs = on / (state_totals[:, None] + 2 * pseudocount).clamp_min(1e-300)
        return {"emission_probs": probs.clamp(probability_floor, 1 - probability_floor)}

    def initial_updates(self, values: torch.Tensor, picks: torch.Tensor,
                        generator: torch.Generator, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
        mean = values.mean(0).cpu()
        probs = 0.5 * mean + 0.5 * values[picks].cpu()  # pull towards one observed step each
        return {"emission_probs": probs.clamp(1e-3, 1 - 1e-3)}


class DiagonalGaussianEmission(Emission):
    """Real vectors: p(x_t | z_t = s) = N(x_t; μ_s, diag σ_s²)."""

    def create_parameters(self, model: HMM) -> None:
        model.means = nn.Parameter(torch.randn(self.num_states, self.size))
        model.log_scales = nn.Parameter(torch.zeros(self.num_states, self.size))

    def params(self, model: HMM) -> tuple[torch.Tensor, ...]:
        return model.means, model.log_scales.exp()

    def distribution(self, *params: torch.Tensor) -> dist.Distribution:
        return dist.Normal(params[0], params[1]).to_event(1)

    def log_prob_matrix(self, model: HMM, sequences: torch.Tensor) -> torch.Tensor:
        if sequences.dtype != torch.float64:
            return super().log_prob_matrix(model, sequences)
        # Σ_d (x - μ)²/σ² expanded into three matmuls; cancellation is harmless in float64
        precision = torch.exp(-2 * model.log_scales)  # (S, D)
        weight = torch.cat([-0.5 * precision, model.means * precision], -1).T  # (2D, S)
        bias = -0.5 * (model.means**2 * precision).sum(-1) - model.log_scales.sum(-1) \
            - 0.5 * model.means.shape[-1] * math.log(2 * math.pi)  # (S,)
        return torch.cat([sequences**2, sequences], -1) @ weight + bias  # (B, T, S)

    def blocks(self, model: HMM, sequences: torch.Tensor) -> Block:
        if sequences.dtype != torch.float64:
            return super().blocks(model, sequences)
        num_states, batch = self.num_states, sequences.shape[0]
        # Σ_d (x - μ)²/σ² expanded into two products; cancellation is harmless in float64
        precision = torch.exp(-2 * model.log_scales)  # (S, D)
        linear, quadratic = model.means * precision, -0.5 * precision
        bias = (-0.5 * (model.means**2 * precision).sum(-1) - model.log_scales.sum(-1)
                - 0.5 * model.means.shape[-1] * math.log(2 * math.pi))[:, None]  # (S, 1)

        def block(start: int, stop: int) -> torch.Tensor:
            steps = _columns(sequences, start, stop)
            flat = (linear @ steps).addmm_(quadratic, steps * steps).add_(bias)  # (S, n B)
            return flat.view(num_states, -1, batch)

        return block

    def step_statistics(self, steps: torch.Tensor) -> torch.Tensor:
        """``[x², x]`` ``(T B, 2D)``."""
        num_features = steps.shape[-1]
        statistics = steps.new_empty(*steps.shape[:2], 2 * num_features)  # (T, B, 2D)
        torch.mul(steps, steps, out=statistics[..., :num_features])  # in place: no cat copies
        statistics[..., num_features:] = steps
        return statistics.view(-1, 2 * num_features)

    def m_step(self, posteriors: torch.Tensor, features: torch.Tensor, state_totals: torch.Tensor,
               *, pseudocount: float, variance_prior: float,
               probability_floor: float) -> dict[str, torch.Tensor]:
        totals = state_totals[:, None].clamp_min(1e-300)
        moments = posteriors @ features  # (S, 2D): [Σ γ x², Σ γ x]
        squares, sums = moments.chunk(2, -1)
        means = sums / totals
        # Σ γ (x - μ)² written with moments, as hmmlearn's M-step (covars_weight=1)
        variances = (variance_prior + squares - 2 * means * sums + means**2 * totals) / totals
        return {"means": means, "variances": variances}

    def initial_updates(self, values: torch.Tensor, picks: torch.Tensor,
                        generator: torch.Generator, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
        variances = values.var(0).clamp_min(1e-6)
        return {"means": values[picks], "variances": variances.expand(self.num_states, -1)}


class FullGaussianEmission(Emission):
    """Real vectors: p(x_t | z_t = s) = N(x_t; μ_s, L_s L_sᵀ), L_s lower-triangular."""

    def create_parameters(self, model: HMM) -> None:
        model.means = nn.Parameter(torch.randn(self.num_states, self.size))
        # lower triangle of the Cholesky factor, log of its diagonal on the diagonal
        model.scale_tril_raw = nn.Parameter(torch.zeros(self.num_states, self.size, self.size))

    def params(self, model: HMM) -> tuple[torch.Tensor, ...]:
        return model.means, model.scale_tril

    def distribution(self, *params: torch.Tensor) -> dist.Distribution:
        return dist.MultivariateNormal(params[0], scale_tril=params[1])

    def m_step(self, posteriors: torch.Tensor, features: torch.Tensor, state_totals: torch.Tensor,
               *, pseudocount: float, variance_prior: float,
               probability_floor: float) -> dict[str, torch.Tensor]:
        totals = state_totals[:, None].clamp_min(1e-300)
        means = posteriors @ features / totals  # (S, D)
        centred = features[:, None, :] - means  # (N, S, D)
        scatter = torch.einsum("sn,nsd,nse->sde", posteriors, centred, centred)
        eye = torch.eye(features.shape[-1], dtype=features.dtype, device=features.device)
        return {"means": means, "covariances": (scatter + variance_prior * eye) / totals[..., None]}

    def initial_updates(self, values: torch.Tensor, picks: torch.Tensor,
                        generator: torch.Generator, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
        variances = values.var(0).clamp_min(1e-6)
        return {"means": values[picks],
                "covariances": torch.diag_embed(variances.expand(self.num_states, -1))}


# the class for each (emission, covariance) of HMM(...); covariance matters for Gaussians only
EMISSION_CLASSES: dict[tuple[str, str | None], type[Emission]] = {
    ("categorical", None): CategoricalEmission,
    ("bernoulli", None): BernoulliEmission,
    ("gaussian", "diag"): DiagonalGaussianEmission,
    ("gaussian", "full"): FullGaussianEmission,
}


def choose_emission(emission: str, covariance: str | None, num_states: int, size: int) -> Emission:
    """The emission for ``HMM(emission=..., covariance=...)`` (both already checked)."""
    return EMISSION_CLASSES[emission, covariance if emission == "gaussian" else None](num_states, size)
