"""Learning-rate schedules that ``probgen.fit`` applies step by step (``lr_schedule=``,
``final_lr=``): a function of the step, so a resumed run continues the schedule exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LRSchedule", "SCHEDULES"]

SCHEDULES = ("constant", "cosine", "linear", "exponential")


@dataclass(frozen=True)
class LRSchedule:
    r"""η_t from η_0 (``optim``'s rate) to η_end (``final_lr``) over steps t = 0 … T−1.

    cosine: η_end + (η_0 − η_end)(1 + cos(π t / (T−1))) / 2; linear: η_0 + (η_end − η_0) t/(T−1);
    exponential: η_0 (η_end/η_0)^{t/(T−1)}; constant: η_0.
    """

    kind: str
    final_lr: float | None
    total_steps: int

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.kind!r}; choose one of {SCHEDULES}")
        if self.final_lr is not None and not (isinstance(self.final_lr, (int, float))
                                              and not isinstance(self.final_lr, bool)
                                              and self.final_lr >= 0):
            raise ValueError(f"final_lr must be a learning rate >= 0, got {self.final_lr!r}")
        if self.kind == "exponential" and self.final_lr == 0:
            raise ValueError("an exponential schedule cannot reach final_lr=0; pass a positive "
                             "final_lr (e.g. 1e-5) or lr_schedule='cosine'")

    def lr(self, step: int, initial: float) -> float:
        """η_t at 0-based ``step`` (the last rate after T−1 steps)."""
        end = initial / 100 if self.final_lr is None else float(self.final_lr)
        progress = min(1.0, step / max(1, self.total_steps - 1))
        if self.kind == "cosine":
            return end + (initial - end) * (1 + math.cos(math.pi * progress)) / 2
        if self.kind == "linear":
            return initial + (end - initial) * progress
        if self.kind == "exponential":
            return initial * (end / initial) ** progress
        return initial
