"""What probgen.fit returns and reports: FitResult, FitState, TrainingDiverged."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch

__all__ = ["FitResult", "FitState", "TrainingDiverged"]


class TrainingDiverged(FloatingPointError):
    """The loss became non-finite; ``.result`` holds the last good parameters' FitResult."""

    def __init__(self, message: str, step: int, result: FitResult) -> None:
        super().__init__(message)
        self.step = step
        self.result = result


@dataclass(frozen=True)
class FitState:
    """What a callback sees after each step. Return True from the callback to stop early."""

    step: int
    epoch: int
    loss: float
    losses: list[float]
    validation: list[tuple[int, float]] = field(default_factory=list)


@dataclass(frozen=True, repr=False)
class FitResult:
    """The outcome of :func:`fit`, whatever the method.

    Fields:
        model: the model program (or bundled model) that was fitted.
        guide: the guide to evaluate it with (built for you when ``guide=None``).
        losses: loss per step, nats for the whole training set (a negative ELBO, or a negative
            log-likelihood for EM-type methods); ``losses[i] / N`` is per example.
        num_steps: steps taken in total (including steps before a resume).
        seconds: wall time of this call.
        method: the training method's name (``"svi"``, ``"em"``, ...).
        converged: the method reached its own stopping rule (EM tolerance).
        stopped_early: a callback or early stopping (patience) ended the run.
        validation: ``(step, loss per example)`` for each validation pass (lower is better).
        best_step: the step whose parameters scored best on validation (restored when
            ``restore_best``), else None.
        num_examples: N, the training-set size.
        settings: the run's settings (batch size, seed, ...).
        run_seconds, run_cpu_seconds: wall and CPU time of the whole run, every call of it
            (resumes included; an interrupted call counts to its last checkpoint). None when
            an earlier call's checkpoint did not record them.
    """

    model: Callable
    guide: Callable
    losses: list[float]
    num_steps: int
    seconds: float
    method: str = "svi"
    converged: bool = False
    stopped_early: bool = False
    validation: list[tuple[int, float]] = field(default_factory=list)
    best_step: int | None = None
    num_examples: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    run_seconds: float | None = None
    run_cpu_seconds: float | None = None

    def __repr__(self) -> str:
        """One line: method, steps, final loss per example, best validation, time (not every
        loss: those are in ``losses``)."""
        parts = [f"method={self.method!r}", f"num_steps={self.num_steps}"]
        if self.losses:
            per_example = (f" ({self.losses[-1] / self.num_examples:.4g} per example)"
                           if self.num_examples else "")
            parts.append(f"final_loss={self.losses[-1]:.6g}{per_example}")
        if self.validation:
            best = min(self.validation, key=lambda entry: entry[1])
            parts.append(f"best_validation={best[1]:.4g} at step {best[0]}")
        if self.converged:
            parts.append("converged")
        if self.stopped_early:
            parts.append("stopped_early")
        parts.append(f"seconds={self.seconds:.3g}")
        return f"FitResult({', '.join(parts)})"

    @property
    def history(self) -> list[float]:
        """Loss per example per step (``losses / N``)."""
        return [value / self.num_examples for value in self.losses] if self.num_examples else []

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """Constrained parameter values from Pyro's param store."""
        store = pyro.get_param_store()
        return {name: store[name].detach().clone() for name in store.keys()}
