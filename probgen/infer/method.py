"""TrainingMethod: one way to take a training step. ``probgen.fit`` owns the loop around it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

__all__ = ["TrainingMethod", "TrainingSetup", "same_data", "GRADIENT_DIVERGENCE_HINT",
           "CLOSED_FORM_DIVERGENCE_HINT"]

# The likely causes a TrainingDiverged names, by kind of method (a family may declare its own).
GRADIENT_DIVERGENCE_HINT = (
    "a learning rate too high (resume with optim=1e-3: the moments are kept, the new rate "
    "applies), a scale parameter without a positive constraint, unnormalized data, or a guide "
    "proposing values outside the model's support")
CLOSED_FORM_DIVERGENCE_HINT = (
    "a component (or state) collapsed onto constant data, so a variance or probability reached "
    "0 or 1: use float64 (model.double()), or add reg_covar/smoothing; unnormalized data, or "
    "more components than distinct rows, do the same")


@dataclass(frozen=True)
class TrainingSetup:
    """What :func:`probgen.fit` hands a training method when it builds it (by keyword)."""

    model: Any  # the Pyro program, or the bundled GenerativeModel, as passed to fit
    program: Callable  # program(*batch): model.model for a bundled model
    guide: Callable | None  # the guide the user passed (None: the method chooses)
    example: tuple[torch.Tensor, ...]  # the first mini-batch, for tracing shapes
    num_examples: int  # N, the training set's size (mini-batch sites are scaled by N/B)
    batch_size: int  # B, examples per step
    optim: Any = None  # fit's optim=: a learning rate, Adam options, a pyro.optim, or None
    loss: Any = None  # fit's loss=
    num_particles: int = 1  # particles per ELBO estimate
    data_plate: str | None = None  # the plate over examples (None: found by inspection)
    options: dict[str, Any] = field(default_factory=dict)  # the method's own fit(**options)
    parallel: Any = None  # the data-parallel group of a torchrun launch (distributed=True)
    data: tuple[torch.Tensor, ...] | None = None  # the training tensors (None: a DataLoader)
    lr_schedule: Any = None  # fit's lr_schedule= / final_lr= over the run's steps
    kl_warmup_steps: int = 0  # fit's KL warm-up in steps, for methods that optimise an ELBO
    free_bits: float = 0.0  # fit's free bits, nats per latent dimension (an ELBO's methods)


class TrainingMethod:
    r"""A strategy ``probgen.fit`` runs: build once, then ``step`` once per mini-batch.

    ``fit`` owns everything around the step (batching, transforms, validation and early
    stopping, rollback on divergence, checkpoints, resume, callbacks, progress) so every method
    gets them with the same vocabulary and returns the same ``FitResult``.

    Class attributes:
        full_batch: each step needs all the data (EM, Baum-Welch); ``fit`` refuses
            ``batch_size`` for such methods.
        uses_optim: the method takes ``optim=`` (and Pyro LR schedulers); a method that does
            not (closed-form updates) refuses one.
        options: the keyword options ``fit(**options)`` may pass to this method.
        title: the method's name in error messages (default: the class name).
        elbo_options: the fit keywords of an ELBO trained by a gradient method that the
            method takes (SVI: ``guide``, ``loss``, ``num_particles``, ``lr_schedule``,
            ``kl_warmup_epochs``, ``free_bits``); one it does not declare is refused when set.
        divergence_hint: the likely causes ``TrainingDiverged`` names when the loss becomes
            non-finite (default: a learning rate too high for a method that ``uses_optim``, a
            collapsed component for closed-form updates); a family declares its own.
    """

    full_batch: ClassVar[bool] = False
    uses_optim: ClassVar[bool] = True
    options: ClassVar[tuple[str, ...]] = ()
    title: ClassVar[str] = ""
    elbo_options: ClassVar[tuple[str, ...]] = ()
    divergence_hint: ClassVar[str | None] = None

    @classmethod
    def divergence_causes(cls) -> str:
        """The likely causes of a non-finite loss under this method, for ``TrainingDiverged``."""
        if cls.divergence_hint:
            return cls.divergence_hint
        return GRADIENT_DIVERGENCE_HINT if cls.uses_optim else CLOSED_FORM_DIVERGENCE_HINT

    def __init__(self, setup: TrainingSetup) -> None:
        title = self.title or type(self).__name__
        if self.full_batch and (setup.batch_size != setup.num_examples
                                or setup.parallel is not None):
            raise ValueError(f"{title} needs all the data at every step: pass it as tensors "
                             "(sequences padded, with their lengths), not batches from a "
                             "DataLoader, and without distributed=True")
        if not self.uses_optim and setup.optim is not None:
            raise TypeError(f"{title} has closed-form updates and takes no optim=; leave it None")
        given = {"guide": setup.guide is not None, "loss": setup.loss is not None,
                 "num_particles": setup.num_particles != 1,
                 "lr_schedule": setup.lr_schedule is not None,
                 "kl_warmup_epochs": bool(setup.kl_warmup_steps), "free_bits": bool(setup.free_bits)}
        refused = [f"{name}=" for name, set_ in given.items() if set_ and name not in self.elbo_options]
        if refused:
            raise TypeError(f"{title} does not take {', '.join(refused)} (options of an ELBO "
                            "trained by SVI); leave them unset")
        self.setup = setup
        self.converged = False

    @property
    def guide(self) -> Callable:
        """The guide the fitted model is evaluated with (an empty guide when none is needed)."""
        return lambda *args, **kwargs: None

    def run_settings(self) -> dict[str, Any]:
        """What the method adds to the run's settings (plain data: checkpoint, FitResult)."""
        return {}

    def check_data(self, tensors: tuple[torch.Tensor, ...]) -> None:
        """Check a raw program's training data before the first step (default: nothing)."""

    def step(self, batch: tuple[torch.Tensor, ...], scale: float) -> float:
        """One update on ``batch`` whose data-plate sites count ``scale`` = N/B times; returns
        the loss for the whole data set in nats (a negative ELBO or log-likelihood estimate)."""
        raise NotImplementedError

    def tensors(self) -> list[torch.Tensor]:
        """The tensors this method updates in place: snapshotted for rollback on divergence."""
        raise NotImplementedError

    def validation_loss(self, batch: tuple[torch.Tensor, ...]) -> float:
        """The training objective on held-out ``batch``, per example (nats; lower is better)."""
        raise NotImplementedError

    def end_epoch(self, metric: float | None) -> None:
        """Called once per epoch (or per step with ``scheduler_every="step"``): LR schedules."""

    def begin_step(self, step: int) -> None:
        """Called before the step with 0-based index ``step`` (schedules that follow the step)."""

    def end_step(self) -> None:
        """Called after every step, before callbacks see it."""

    def finish(self) -> None:
        """Called once when the loop ends, however it ends."""

    def state_dict(self) -> dict[str, Any]:
        """Optimizer (or other) state a resume needs, as tensors and plain data."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` on resume; hyper-parameters come from this run's
        settings (a new learning rate applies), moments from the checkpoint."""


def same_data(x: torch.Tensor, source: torch.Tensor) -> bool:
    """``x`` views the very memory of ``source`` (which is kept alive, so no new tensor can take
    its place) the same way: fit's full batch, or its first-batch slice of it. Full-batch methods
    use it to reuse statistics of the data they were built on (a transform makes new data)."""
    return x is source or (x.data_ptr() == source.data_ptr() and x.shape == source.shape
                           and x.stride() == source.stride() and x.dtype == source.dtype
                           and x.device == source.device)
