"""What the Gaussian and Bernoulli mixtures share: exact log p(x) from the per-component joint,
and the frame of their EM training methods."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from probgen.core.model import GenerativeModel
from probgen.infer.method import TrainingMethod, TrainingSetup, same_data

__all__ = ["FiniteMixture", "MixtureEM"]


class FiniteMixture(GenerativeModel):
    r"""A mixture p(x) = Σ_k π_k p(x | θ_k) with π = softmax(``logits``), exact log p(x) and EM
    as its default method; a family gives ``_component_log_probs``."""

    has_exact_log_prob = True
    default_method = "em"

    @property
    def weights(self) -> Tensor:
        """Mixture weights π, shape ``(K,)``."""
        return torch.softmax(self.logits, dim=-1)

    def _component_log_probs(self, x: Tensor) -> Tensor:
        """log π_k + log p(x_n | θ_k), shape ``(N, K)``."""
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log p(x_n) = logsumexp_k [log π_k + log p(x_n | θ_k)], shape ``(N,)``."""
        x = self.validate(x)
        return torch.logsumexp(self._component_log_probs(x), dim=-1)

    def responsibilities(self, x: Tensor) -> Tensor:
        """Posterior assignment probabilities p(z_n = k | x_n), shape ``(N, K)``."""
        x = self.validate(x)
        return torch.softmax(self._component_log_probs(x), dim=-1)


class MixtureEM(TrainingMethod):
    """EM for a :class:`FiniteMixture` on all the data: checks the options, then each step is an
    M-step and an E-step. A family gives ``_use_data``, ``_m_step``, ``_e_step`` (which sets
    ``objective``) and ``_write_model``."""

    full_batch = True
    title = "EM"
    uses_optim = False
    options = ("tol", "init", "prior", "dtype")
    family: ClassVar[type[FiniteMixture]]  # the model class the method fits
    prior_type: ClassVar[type]  # the prior class of MAP EM
    inits: ClassVar[tuple[str, ...]]  # the ``init`` options, the default first
    init_choices: ClassVar[str]  # ``inits`` as the unknown-init error lists them

    source: Tensor  # the data the E-step last ran on
    num_examples: int
    objective: float  # log-likelihood (plus log-prior under MAP) at the current iterate

    def __init__(self, setup: TrainingSetup) -> None:
        super().__init__(setup)
        model = setup.model
        if not isinstance(model, self.family):
            raise TypeError(f"method 'em' fits a {self.family.__name__}, got {type(model).__name__}")
        options = {"tol": 1e-6, "init": self.inits[0], "prior": None, "dtype": None,
                   **setup.options}
        init, prior = options["init"], options["prior"]
        if init not in self.inits:
            raise ValueError(f"unknown init {init!r}; choose {self.init_choices}")
        if prior is not None and not isinstance(prior, self.prior_type):
            raise TypeError(f"prior must be a {self.prior_type.__name__} or None, got "
                            f"{type(prior).__name__}")
        self.model, self.tol, self.prior, self.init = model, float(options["tol"]), prior, init
        self.dtype = options["dtype"] or model.dtype or torch.get_default_dtype()
        num_examples = setup.example[0].shape[0]
        if model.num_components > num_examples:
            raise ValueError(f"num_components={model.num_components} exceeds the {num_examples} "
                             "examples")

    def _use_data(self, x: Tensor) -> None:
        """Take ``x`` as the training data and run the E-step on it."""
        raise NotImplementedError

    def _m_step(self) -> None:
        """Update the iterate from the current responsibilities."""
        raise NotImplementedError

    def _e_step(self) -> None:
        """Responsibilities, log-likelihood and objective at the current iterate."""
        raise NotImplementedError

    def _write_model(self) -> None:
        """Copy the iterate into the model's parameters."""
        raise NotImplementedError

    # --- the TrainingMethod protocol -----------------------------------------------------------
    def step(self, batch: tuple[Tensor, ...], scale: float) -> float:
        if not same_data(batch[0], self.source):  # a transform made new data: E-step on it
            self._use_data(batch[0])
        previous = self.objective / self.num_examples
        self._m_step()
        self._e_step()
        self._write_model()
        if abs(self.objective / self.num_examples - previous) < self.tol:
            self.converged = True
        return -self.objective

    def validation_loss(self, batch: tuple[Tensor, ...]) -> float:
        with torch.no_grad():
            return -float(self.model.log_prob(batch[0]).mean())
