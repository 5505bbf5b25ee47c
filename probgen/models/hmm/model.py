r"""Hidden Markov models: a Pyro program with enumerated states, and batched exact fast paths."""

from __future__ import annotations

from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.ops.indexing import Vindex
from torch import nn

from probgen.core.model import GenerativeModel
from probgen.core.result import LogLikelihood, data_fingerprint
from probgen.core.validate import check_memory, check_size
from probgen.data.sequences import lengths_to_mask, validate_sequences
from probgen.models.hmm.emissions import Emission, choose_emission
from probgen.models.hmm.forward_backward import (
    forward_backward,
    forward_log_likelihood,
    single_thread_if_small,
    state_major_forward,
    state_major_forward_backward,
    viterbi,
)
from probgen.models.hmm.state_major import EmissionBlocks
from probgen.models.registry import register_model

__all__ = ["HMM", "EMISSIONS", "forward_log_likelihood", "forward_backward", "viterbi",
           "evaluate_forward", "single_thread_if_small"]

EMISSIONS = ("categorical", "bernoulli", "gaussian")


# --- the model ---------------------------------------------------------------------------------
@register_model("hmm")
class HMM(GenerativeModel):
    r"""Hidden Markov model p(x, z) = π_{z_1} Π_t A_{z_{t-1} z_t} Π_t p(x_t | z_t) (Rabiner, 1989).

    Emissions: ``"categorical"`` (steps are integers in ``0..num_categories-1``), ``"bernoulli"``
    (steps are 0/1 vectors of ``num_features``, e.g. 88-key piano rolls) or ``"gaussian"``
    (real vectors, ``covariance="diag"`` or ``"full"``). A batch is ``(sequences, lengths)``:
    sequences padded to ``(batch, time, ...)`` and lengths ``(batch,)``; padded steps are
    unobserved (only the observation sites are masked, never the states).

    Fit it with ``probgen.fit(hmm, (sequences, lengths))``: Baum-Welch EM by default
    (:class:`~probgen.models.hmm.baum_welch.BaumWelch`), or ``method="svi"`` for gradient steps
    on the enumerated program.

    Example:
        >>> hmm = HMM(num_states=3, emission="gaussian", num_features=2)
        >>> x = hmm.sample(4, length=10)
        >>> hmm.log_prob(x, torch.tensor([10, 7, 5, 3])).shape
        torch.Size([4])
    """

    checks_padding: ClassVar[bool] = True  # padding may hold anything (NaN, -1)
    has_exact_log_prob: ClassVar[bool] = True
    has_guide: ClassVar[bool] = True  # every latent is enumerated: the empty guide is exact
    default_method: ClassVar[str] = "baum_welch"  # probgen.fit(hmm, data): Baum-Welch EM
    data_size_argument: ClassVar[str | None] = "num_features"  # filled by from_data, the CLI

    def __init__(self, num_states: int, emission: str = "gaussian", *, num_features: int | None = None,
                 num_categories: int | None = None, covariance: str = "diag") -> None:
        if isinstance(num_states, bool) or not isinstance(num_states, int) or num_states < 1:
            raise ValueError(f"num_states must be a positive integer, got {num_states!r}")
        if emission not in EMISSIONS:
            raise ValueError(f"emission must be one of {EMISSIONS}, got {emission!r}")
        if emission == "categorical":
            if num_categories is None or num_categories is False or (
                    isinstance(num_categories, (int, float)) and num_categories < 2):
                raise ValueError("a categorical HMM needs num_categories >= 2")
            num_categories = check_size("num_categories", num_categories, minimum=2)
            config: dict[str, Any] = {"num_categories": num_categories}
            size = width = num_categories
        else:
            if num_features is None or num_features is False or (
                    isinstance(num_features, (int, float)) and num_features < 1):
                raise ValueError(f"a {emission} HMM needs num_features (the size of one step)")
            num_features = check_size("num_features", num_features)
            config = {"num_features": num_features}
            size = width = num_features
        if emission == "gaussian":
            if covariance not in ("diag", "full"):
                raise ValueError(f"covariance must be 'diag' or 'full', got {covariance!r}")
            config["covariance"] = covariance
            if covariance == "full":
                width = 2 * num_features * num_features
        check_memory(f"HMM({num_states}, {emission!r})",
                     num_states + num_states * num_states + num_states * width,
                     hint="use fewer states or features")
        super().__init__(num_states=num_states, emission=emission, **config)
        self.num_states, self.emission = num_states, emission
        # the emission's maths (likelihoods, M-step, data-driven start), chosen once here
        self.emission_impl: Emission = choose_emission(emission, covariance, num_states, size)
        self.initial_logits = nn.Parameter(torch.zeros(num_states))
        self.transition_logits = nn.Parameter(0.1 * torch.randn(num_states, num_states))
        self.emission_impl.create_parameters(self)

    # --- capabilities, from the config -------------------------------------------------------------
    @property
    def data_space(self) -> str:  # type: ignore[override]
        """``"continuous"`` for Gaussian emissions, else ``"discrete"``."""
        return self.emission_impl.data_space

    @property
    def support(self) -> str:  # type: ignore[override]
        """``"categorical"``, ``"binary"`` (Bernoulli) or ``"real"`` (Gaussian) steps."""
        return self.emission_impl.support

    # --- parameters in probability space ---------------------------------------------------------
    @property
    def log_initial(self) -> torch.Tensor:
        """``(S,)`` log π."""
        return torch.log_softmax(self.initial_logits, -1)

    @property
    def log_transition(self) -> torch.Tensor:
        """``(S, S)`` log A, rows "from", columns "to"."""
        return torch.log_softmax(self.transition_logits, -1)

    @property
    def scale_tril(self) -> torch.Tensor:
        """``(S, D, D)`` Cholesky factors of the covariances (``covariance="full"``)."""
        raw = self.scale_tril_raw
        return raw.tril(-1) + torch.diag_embed(raw.diagonal(dim1=-2, dim2=-1).exp())

    def emission_params(self) -> tuple[torch.Tensor, ...]:
        """Emission parameters, each with the states first."""
        return self.emission_impl.params(self)

    def emission_distribution(self, *params: torch.Tensor) -> dist.Distribution:
        """p(x_t | z_t) for indexed parameters (default: all states, batch shape ``(S,)``)."""
        return self.emission_impl.distribution(*(params or self.emission_params()))

    def emission_log_prob(self, sequences: torch.Tensor) -> torch.Tensor:
        """``(B, T, S)`` log p(x_t | z_t = s) for a padded batch."""
        return self.emission_impl.log_prob_matrix(self, sequences)

    def fill_padding(self, sequences: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``sequences`` with padded steps (``mask`` False) set to 0, a value in every support."""
        if bool(mask.all()):
            return sequences
        return sequences.masked_fill(~self.emission_impl.step_mask(mask), 0)

    def state_emission_blocks(self, sequences: torch.Tensor) -> EmissionBlocks:
        """log p(x_t | z_t = s) of a padded batch ``(B, T, ...)`` (valid values in the padding, see
        :meth:`fill_padding`) by blocks of time steps, ``(start, stop) -> (S, stop - start, B)``:
        states first, for the state-major passes, which then never hold all of them. The
        parameters are read once, here; a block is one or two products over its steps."""
        return self.emission_impl.blocks(self, sequences)

    def step_statistics(self, sequences: torch.Tensor) -> torch.Tensor:
        """What Baum-Welch's M-step averages, per step of a padded batch ``(B, T, ...)`` (valid
        padding), as rows ``t B + b`` (the order of the state-major posteriors): categorical, the
        category ``(T B,)``; Bernoulli and full Gaussian, ``x`` ``(T B, D)``; diagonal Gaussian,
        ``[x², x]`` ``(T B, 2D)``."""
        return self.emission_impl.step_statistics(sequences.transpose(0, 1))  # (T, B, ...) view

    @torch.no_grad()
    def set_parameters(self, *, initial_probs: torch.Tensor | None = None,
                       transition_probs: torch.Tensor | None = None,
                       emission_probs: torch.Tensor | None = None, means: torch.Tensor | None = None,
                       variances: torch.Tensor | None = None,
                       covariances: torch.Tensor | None = None) -> HMM:
        """Set parameters from probabilities/moments (for EM and for copying other tools' fits)."""
        def log(p: torch.Tensor) -> torch.Tensor:
            p = torch.as_tensor(p, dtype=self.initial_logits.dtype, device=self.initial_logits.device)
            return p.clamp_min(torch.finfo(p.dtype).tiny).log()

        if initial_probs is not None:
            self.initial_logits.copy_(log(initial_probs))
        if transition_probs is not None:
            self.transition_logits.copy_(log(transition_probs))
        if emission_probs is not None:
            probs = log(emission_probs).exp()
            self.emission_logits.copy_(self.emission_impl.logits_from_probs(probs))
        if means is not None:
            self.means.copy_(torch.as_tensor(means))
        if variances is not None:
            self.log_scales.copy_(0.5 * log(variances))
        if covariances is not None:
            tril = torch.linalg.cholesky(torch.as_tensor(covariances, dtype=self.means.dtype))
            self.scale_tril_raw.copy_(tril.tril(-1) + torch.diag_embed(
                tril.diagonal(dim1=-2, dim2=-1).log()))
        return self

    # --- data ------------------------------------------------------------------------------------
    def step_shape(self) -> tuple[int, ...]:
        return self.emission_impl.step_shape()

    def validate_batch(self, sequences: Any, lengths: Any = None, *,
                       name: str = "sequences") -> tuple[torch.Tensor, torch.Tensor]:
        """Check a padded batch against this model; return ``(sequences, lengths)``."""
        sequences, lengths = validate_sequences(
            sequences, lengths, name=name, support=self.support, feature_shape=self.step_shape(),
            num_categories=self.config.get("num_categories"))
        device = self.device
        if sequences.device != device:
            raise ValueError(f"{name} is on {sequences.device} but the model is on {device}; "
                             f"move one of them (x.to('{device}') or model.to('{sequences.device}'))")
        return self.emission_impl.cast(sequences, self.dtype), lengths

    def num_dims(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> int:
        """Observed values per sequence: mean length × values per step (padded length if no lengths)."""
        per_step = int(torch.Size(self.step_shape()).numel())
        steps = x.shape[1] if lengths is None else float(lengths.double().mean())
        return max(1, int(round(steps * per_step)))

    # --- exact fast paths --------------------------------------------------------------------------
    def log_prob(self, sequences: torch.Tensor, lengths: torch.Tensor | None = None, *,
                 parallel: bool | None = None) -> torch.Tensor:
        """Exact ``(B,)`` log p(x_b) by the forward algorithm: differentiable under autograd,
        else the blocked state-major scaled pass (:mod:`probgen.models.hmm.state_major`)."""
        sequences, lengths = self.validate_batch(sequences, lengths)
        mask = lengths_to_mask(lengths, sequences.shape[1])
        if parallel is None:
            parallel = sequences.is_cuda
        with single_thread_if_small(mask.numel() * self.num_states, mask.device):
            if not parallel and not torch.is_grad_enabled():  # the state-major scaled pass
                if bool((lengths == sequences.shape[1]).all()):  # nothing padded: no mask work
                    blocks, mask = self.state_emission_blocks(sequences), None
                else:
                    blocks = self.state_emission_blocks(self.fill_padding(sequences, mask))
                return state_major_forward(self.log_initial, self.log_transition, blocks, mask,
                                           time=sequences.shape[1])
            return forward_log_likelihood(self.log_initial, self.log_transition,
                                          self.emission_log_prob(sequences), mask, parallel=parallel)

    def posterior(self, sequences: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T, S)`` p(z_t = s | x) by forward-backward (zero at padded steps)."""
        sequences, lengths = self.validate_batch(sequences, lengths)
        mask = lengths_to_mask(lengths, sequences.shape[1])
        with torch.no_grad(), single_thread_if_small(mask.numel() * self.num_states, mask.device):
            blocks = self.state_emission_blocks(self.fill_padding(sequences, mask))
            posteriors = state_major_forward_backward(
                self.log_initial, self.log_transition, blocks, mask, time=sequences.shape[1])[1]
        return posteriors.permute(2, 1, 0).contiguous()  # (B, T, S)

    @torch.no_grad()
    def viterbi(self, sequences: torch.Tensor,
                lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Most probable paths ``(B, T)`` (-1 at padding) and their log p(z*, x) ``(B,)``."""
        sequences, lengths = self.validate_batch(sequences, lengths)
        mask = lengths_to_mask(lengths, sequences.shape[1])
        with single_thread_if_small(mask.numel() * self.num_states, mask.device):
            return viterbi(self.log_initial, self.log_transition, self.emission_log_prob(sequences),
                           mask)

    @torch.no_grad()
    def sample(self, num_samples: int, length: int = 100, *,
               return_states: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Draw ``num_samples`` sequences of ``length`` steps: ``(n, length, ...)`` (and states)."""
        state = dist.Categorical(logits=self.log_initial).sample((num_samples,))
        states = [state]
        transition = self.log_transition
        for _ in range(1, length):
            state = dist.Categorical(logits=transition[state]).sample()
            states.append(state)
        states_tensor = torch.stack(states, 1)  # (n, length)
        sequences = self.emission_distribution(
            *(p[states_tensor] for p in self.emission_params())).sample()
        return (sequences, states_tensor) if return_states else sequences

    # --- the Pyro program --------------------------------------------------------------------------
    def model(self, sequences: torch.Tensor, lengths: torch.Tensor | None = None) -> None:
        """States enumerated under ``pyro.markov``; padded steps mask the observation only."""
        pyro.module(self.pyro_name, self)
        batch, time = sequences.shape[:2]
        if lengths is None:
            lengths = torch.full((batch,), time, dtype=torch.long, device=sequences.device)
        mask = lengths_to_mask(lengths, time)
        log_transition, params = self.log_transition, self.emission_params()
        with pyro.plate("sequences", batch, dim=-1):
            state = None
            for t in pyro.markov(range(time)):
                logits = self.log_initial if t == 0 else Vindex(log_transition)[state]
                state = pyro.sample(f"state_{t}", dist.Categorical(logits=logits),
                                    infer={"enumerate": "parallel"})
                with poutine.mask(mask=mask[:, t]):
                    pyro.sample(f"obs_{t}", self.emission_distribution(*(p[state] for p in params)),
                                obs=sequences[:, t])

    def default_loss(self):
        return pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)


@HMM.estimator("forward", options=("parallel",))
def evaluate_forward(model: HMM, batch: tuple[torch.Tensor, ...], *,
                     parallel: bool | None = None, **options: Any) -> LogLikelihood:
    """Exact per-sequence log-likelihood by the forward algorithm, as a LogLikelihood."""
    if options:
        raise TypeError(f"evaluate_forward got unknown options {sorted(options)}")
    sequences, lengths = model.validate_batch(*batch)
    with torch.no_grad():
        per_sequence = model.log_prob(sequences, lengths, parallel=parallel)
    num_steps = int(lengths.sum())
    step_size = max(1, int(torch.Size(sequences.shape[2:]).numel()))
    return LogLikelihood(
        per_sequence, kind="exact", estimator="forward", data_space=model.data_space,
        num_dims=max(1, round(num_steps * step_size / len(lengths))),
        settings={"num_steps": num_steps,
                  "log_likelihood_per_step": float(per_sequence.sum()) / num_steps},
        data_id=data_fingerprint(sequences, lengths))
