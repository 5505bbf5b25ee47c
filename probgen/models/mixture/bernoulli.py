"""Bernoulli mixtures for binary data: the enumerated Pyro program, exact log p(x) and EM."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.nn.functional import softplus

from probgen.core.validate import check_memory, check_size
from probgen.infer.method import TrainingSetup
from probgen.models.mixture.base import FiniteMixture, MixtureEM
from probgen.models.registry import register_model

__all__ = ["BernoulliMixture", "BernoulliMixturePrior", "BernoulliEM"]

MIN_PROB = 1e-10  # maximum-likelihood EM keeps every probability in [MIN_PROB, 1 - MIN_PROB]
INITS = ("random_points", "random", "model")


@register_model("bernoulli_mixture")
class BernoulliMixture(FiniteMixture):
    r"""Mixture of independent Bernoullis p(x) = Σ_k π_k Π_d μ_kd^x_d (1 - μ_kd)^(1 - x_d)
    (Bishop, 2006, §9.3.3); one component is the independent-Bernoulli (naive Bayes) model.

    The Pyro program samples an assignment per example (enumerated in parallel, so
    ``TraceEnum_ELBO`` and ``probgen.evaluate`` give the exact marginal) and observes the
    ``(D,)`` bits under that component. Fit it with ``probgen.fit(model, x)``: EM by default
    (:class:`BernoulliEM`, options ``tol``, ``init``, ``prior``, ``dtype``), or ``method="svi"``.

    Parameters (unconstrained): ``logits`` ``(K,)`` of the weights π and ``feature_logits``
    ``(K, D)`` of the probabilities μ.

    Arguments:
        num_components: K.
        features: D, bits per example.

    Example:
        >>> model = BernoulliMixture(3, 8).double()
        >>> model.log_prob(torch.zeros(5, 8, dtype=torch.float64)).shape
        torch.Size([5])
    """

    data_space = "discrete"
    support = "binary"
    data_size_argument = "features"  # filled from the data by from_data and the CLI

    def __init__(self, num_components: int, features: int) -> None:
        num_components = check_size("num_components", num_components)
        features = check_size("features", features)
        check_memory(f"BernoulliMixture({num_components}, {features})",
                     num_components * (features + 1), hint="use fewer components or features")
        super().__init__(num_components=num_components, features=features)
        self.num_components, self.features = num_components, features
        self.logits = nn.Parameter(torch.zeros(num_components))
        # Small random logits so that components differ; EM re-initializes from data.
        self.feature_logits = nn.Parameter(0.1 * torch.randn(num_components, features))

    # --- parameters ----------------------------------------------------------------------
    @property
    def probs(self) -> Tensor:
        """Bernoulli probabilities μ, shape ``(K, D)``."""
        return torch.sigmoid(self.feature_logits)

    def parameters_dict(self) -> dict[str, Tensor]:
        """``weights`` ``(K,)`` and ``probs`` ``(K, D)``, detached."""
        return {"weights": self.weights.detach(), "probs": self.probs.detach()}

    @torch.no_grad()
    def set_parameters(self, weights: Tensor, probs: Tensor) -> BernoulliMixture:
        """Set π ``(K,)`` (positive, summing to 1) and μ ``(K, D)`` (strictly inside (0, 1))."""
        weights = torch.as_tensor(weights, dtype=self.logits.dtype, device=self.logits.device)
        probs = torch.as_tensor(probs, dtype=self.logits.dtype, device=self.logits.device)
        shapes = ((self.num_components,), (self.num_components, self.features))
        if (tuple(weights.shape), tuple(probs.shape)) != shapes:
            raise ValueError(f"weights and probs must have shapes {shapes[0]} and {shapes[1]}, "
                             f"got {tuple(weights.shape)} and {tuple(probs.shape)}")
        if not (weights > 0).all() or abs(float(weights.sum()) - 1) > 1e-6:
            raise ValueError("weights must be positive and sum to 1")
        if not ((probs > 0) & (probs < 1)).all():
            raise ValueError("probs must lie strictly between 0 and 1 (log 0 would make some "
                             "binary vectors impossible); smooth them, e.g. (counts + 1) / (n + 2)")
        self.logits.copy_(weights.log())
        self.feature_logits.copy_(torch.logit(probs))
        return self

    def num_parameters(self) -> int:
        """Free parameters: (K - 1) + K·D."""
        return self.num_components - 1 + self.num_components * self.features

    def event_shape(self) -> tuple[int, ...]:
        return (self.features,)

    # --- the Pyro program ----------------------------------------------------------------
    def model(self, x: Tensor) -> None:
        """z_n ~ Categorical(π) (enumerated), x_nd | z_n ~ Bernoulli(μ_{z_n d}), in a plate."""
        pyro.module(self.pyro_name, self)
        with pyro.plate("data", x.shape[0]):
            assignment = pyro.sample("assignment", dist.Categorical(logits=self.logits),
                                     infer={"enumerate": "parallel"})
            # Valid by construction (logits); data are checked once at the boundary.
            likelihood = dist.Bernoulli(logits=self.feature_logits[assignment],
                                        validate_args=False).to_event(1)
            pyro.sample("obs", likelihood, obs=x)

    # --- exact fast paths ----------------------------------------------------------------
    def _component_log_probs(self, x: Tensor) -> Tensor:
        r"""log π_k + Σ_d log Bernoulli(x_nd | μ_kd) = x·ℓ_k - Σ_d softplus(ℓ_kd) + log π_k,
        shape ``(N, K)``: one matmul."""
        log_normalizer = softplus(self.feature_logits).sum(-1)  # (K,)
        return x @ self.feature_logits.T - log_normalizer + torch.log_softmax(self.logits, -1)

    @torch.no_grad()
    def sample(self, num_samples: int) -> Tensor:
        """Ancestral samples: z ~ Categorical(π), x ~ Bernoulli(μ_z); ``(n, D)``."""
        assignment = torch.multinomial(self.weights, num_samples, replacement=True)  # (n,)
        return torch.bernoulli(self.probs[assignment])


# --- the conjugate prior for MAP EM ----------------------------------------------------------
@dataclass(frozen=True)
class BernoulliMixturePrior:
    r"""Conjugate prior for MAP EM: π ~ Dir(α), μ_kd ~ Beta(a, b). The M-step takes the modes
    μ_kd = (S_kd + a - 1) / (N_k + a + b - 2) and π_k = (N_k + α - 1) / (N + K(α - 1)), so
    a, b > 1 keep every probability off 0 and 1. The default a = b = 2 is Laplace smoothing,
    (S_kd + 1) / (N_k + 2): with one component, scikit-learn's ``BernoulliNB(alpha=1)``.

    Arguments:
        weight_concentration: α >= 1 (1: flat, the maximum-likelihood weights).
        concentration1: a >= 1 (a - 1 pseudo-counts of ones).
        concentration0: b >= 1 (b - 1 pseudo-counts of zeros).
    """

    weight_concentration: float = 1.0
    concentration1: float = 2.0
    concentration0: float = 2.0

    def __post_init__(self) -> None:
        for name in ("weight_concentration", "concentration1", "concentration0"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 1:
                raise ValueError(f"{name} must be a number >= 1 for a MAP estimate to exist, got "
                                 f"{value!r}")

    def log_prob(self, weights: Tensor, probs: Tensor) -> Tensor:
        """log Dir(π | α) + Σ_kd log Beta(μ_kd | a, b)."""
        alpha = weights.new_tensor(float(self.weight_concentration))
        num_components = weights.shape[-1]
        log_dirichlet = (torch.lgamma(num_components * alpha) - num_components * torch.lgamma(alpha)
                         + torch.xlogy(alpha - 1, weights).sum())
        a, b = probs.new_tensor(float(self.concentration1)), probs.new_tensor(float(self.concentration0))
        log_beta = (torch.xlogy(a - 1, probs) + torch.xlogy(b - 1, 1 - probs)
                    - (torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)))
        return log_dirichlet + log_beta.sum()


# --- the EM training method ------------------------------------------------------------------
@BernoulliMixture.training_method("em")
class BernoulliEM(MixtureEM):
    r"""EM for a :class:`BernoulliMixture` (Dempster et al., 1977), run by
    ``probgen.fit(model, x)`` (the mixture's default method).

    Each step is one iteration: the M-step from the previous responsibilities, then the E-step
    at the new parameters, log π_k p(x | μ_k) = x·ℓ_k + c_k, one (K, D) @ (D, N) product, whose
    log-likelihood is the step's loss. Maximum likelihood keeps each μ_kd in
    [1e-10, 1 - 1e-10] (the exact M-step over that box, so EM stays monotone); a
    :class:`BernoulliMixturePrior` gives MAP estimates that never reach 0 or 1.

    Losses: ``losses[i]`` is the negative log-likelihood of the training set (minus the
    log-prior under MAP) after step ``i``; ``num_steps`` bounds the iterations.

    Options (``probgen.fit(..., method="em", **options)``):
        tol: converged when the objective per example changes by less than this (default 1e-6).
        init: ``"random_points"`` (default: μ_k halfway between K distinct random examples and
            the data mean), ``"random"`` (Dirichlet(1) responsibilities, then an M-step) or
            ``"model"`` (the model's current parameters); drawn from the RNG ``fit`` seeds.
        prior: a :class:`BernoulliMixturePrior` for MAP EM (None: maximum likelihood).
        dtype: compute in this dtype (e.g. float64 for a float32 model).

    Example:
        >>> import probgen
        >>> x = torch.bernoulli(torch.full((200, 6), 0.3))
        >>> result = probgen.fit(BernoulliMixture(2, 6), x, num_steps=20, seed=0, progress=False)
        >>> result.method, result.losses[-1] <= result.losses[0]
        ('em', True)
    """

    family = BernoulliMixture
    prior_type = BernoulliMixturePrior
    inits = INITS
    init_choices = f"one of {INITS}"

    def __init__(self, setup: TrainingSetup) -> None:
        super().__init__(setup)
        x = setup.example[0].to(self.dtype)
        self.iteration = 0
        self.log_weights, self.logits = self._initial(x, self.init)
        self._use_data(setup.example[0])
        self._write_model()

    def _initial(self, x: Tensor, init: str) -> tuple[Tensor, Tensor]:
        num_components = self.model.num_components
        if init == "model":
            params = self.model.parameters_dict()
            return (params["weights"].to(self.dtype).log(),
                    self.model.feature_logits.detach().to(self.dtype).clone())
        if init == "random":
            responsibilities = torch.distributions.Dirichlet(
                x.new_ones(num_components)).sample((x.shape[0],)).T  # (K, N)
            return self._maximize(responsibilities, x)
        index = torch.randperm(x.shape[0], device=x.device)[:num_components]
        probs = (0.5 * (x[index] + x.mean(0))).clamp(0.05, 0.95)  # (K, D)
        log_weights = x.new_full((num_components,), -math.log(num_components))
        return log_weights, torch.logit(probs)

    # --- the two halves ------------------------------------------------------------------------
    def _use_data(self, x: Tensor) -> None:
        self.source = x
        self.x = x.to(self.dtype)  # (N, D)
        self.num_examples = x.shape[0]
        self._e_step()

    @torch.no_grad()
    def _e_step(self) -> None:
        """Responsibilities ``(K, N)``, the log-likelihood and the objective."""
        const = self.log_weights - softplus(self.logits).sum(-1)  # (K,)
        log_joint = torch.addmm(const[:, None], self.logits, self.x.T)  # (K, N)
        log_marginal = torch.logsumexp(log_joint, dim=0)  # (N,)
        self.responsibilities = (log_joint - log_marginal).exp()
        self.log_likelihood = float(log_marginal.sum())
        self.objective = self.log_likelihood
        if self.prior is not None:
            self.objective += float(self.prior.log_prob(self.log_weights.exp(),
                                                        torch.sigmoid(self.logits)))

    @torch.no_grad()
    def _maximize(self, responsibilities: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """Closed-form (MAP) log-weights ``(K,)`` and logits ``(K, D)``: one (K, N) @ (N, D)."""
        num_examples, num_components = x.shape[0], responsibilities.shape[0]
        counts = responsibilities.sum(1)  # (K,)
        ones = responsibilities @ x  # (K, D): expected counts of x_d = 1
        tiny = torch.finfo(x.dtype).tiny
        if self.prior is None:
            weights = counts / num_examples
            probs = ones / counts.clamp_min(tiny)[:, None]
        else:
            alpha = self.prior.weight_concentration
            a, b = self.prior.concentration1, self.prior.concentration0
            weights = (counts + alpha - 1) / (num_examples + num_components * (alpha - 1))
            probs = (ones + a - 1) / (counts[:, None] + a + b - 2).clamp_min(tiny)
        probs = probs.clamp(MIN_PROB, 1 - MIN_PROB)
        return weights.clamp_min(tiny).log(), torch.logit(probs)

    @torch.no_grad()
    def _m_step(self) -> None:
        log_weights, logits = self._maximize(self.responsibilities, self.x)
        # An empty component keeps its probabilities (0/0); its weight goes to ~0.
        empty = self.responsibilities.sum(1) < 1e-10 * self.num_examples
        if self.prior is None:
            logits = torch.where(empty[:, None], self.logits, logits)
        self.log_weights.copy_(log_weights)
        self.logits.copy_(logits)
        self.iteration += 1

    def _write_model(self) -> None:
        with torch.no_grad():
            self.model.logits.copy_(self.log_weights)
            self.model.feature_logits.copy_(self.logits)

    # --- the TrainingMethod protocol -----------------------------------------------------------
    def tensors(self) -> list[Tensor]:
        return [*self.model.parameters(), self.log_weights, self.logits]

    def state_dict(self) -> dict[str, Any]:
        return {"log_weights": self.log_weights.clone(), "logits": self.logits.clone(),
                "iteration": self.iteration}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.log_weights.copy_(state["log_weights"])
        self.logits.copy_(state["logits"])
        self.iteration = int(state["iteration"])
        self._e_step()
