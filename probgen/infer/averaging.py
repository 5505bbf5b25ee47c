"""Polyak (exponential moving) averaging of the parameters a training method updates."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from probgen.core.checkpoint import CheckpointError

__all__ = ["ParameterAverage"]


class ParameterAverage:
    r"""θ̄_t = d_t θ̄_{t−1} + (1 − d_t) θ_t with d_t = min(decay, (1 + t) / (10 + t)).

    The ramp d_t lets early averages forget the initialization (a short run is not dragged back
    to its starting point). ``fit(ema_decay=d)`` updates it after every finite step; validation,
    best-epoch selection and the returned parameters use θ̄, training goes on from θ.
    """

    def __init__(self, decay: float) -> None:
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1:
            raise ValueError(f"ema_decay must be a number in (0, 1), e.g. 0.999, got {decay!r}")
        self.decay = float(decay)
        self.updates = 0
        self.targets: list[torch.Tensor] = []
        self.shadow: list[torch.Tensor] = []
        self._loaded: list[torch.Tensor] | None = None

    def _track(self, tensors: list[torch.Tensor]) -> None:
        """Follow ``tensors``: a parameter seen before keeps its average, a new one starts at its
        value (Pyro creates a program's parameters during its first step)."""
        if self._loaded is not None:  # a resumed run: the saved averages, in the same order
            shapes = [tuple(t.shape) for t in tensors]
            if shapes != [tuple(s.shape) for s in self._loaded]:
                raise CheckpointError("the checkpoint's parameter averages do not match this "
                                      "run's parameters; resume with the same model and guide")
            self.targets = list(tensors)
            self.shadow = [s.to(t.device, t.dtype) for s, t in zip(self._loaded, tensors)]
            self._loaded = None
            return
        known = {id(t): s for t, s in zip(self.targets, self.shadow)}
        self.targets = list(tensors)
        self.shadow = [known[id(t)] if id(t) in known else t.detach().clone() for t in tensors]

    def _sync(self, tensors: list[torch.Tensor]) -> None:
        if self._loaded is not None or [id(t) for t in tensors] != [id(t) for t in self.targets]:
            self._track(tensors)

    def update(self, tensors: list[torch.Tensor]) -> None:
        """One step of the average, after a finite training step."""
        self._sync(tensors)
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            torch._foreach_lerp_(self.shadow, [t.detach() for t in self.targets], 1.0 - decay)
        self.updates += 1

    def _swap(self) -> None:
        with torch.no_grad():
            for target, average in zip(self.targets, self.shadow):
                held = target.detach().clone()
                target.copy_(average)
                average.copy_(held)

    @contextmanager
    def applied(self, tensors: list[torch.Tensor]) -> Iterator[None]:
        """The averages in place of the parameters inside the block, the parameters after."""
        self._sync(tensors)
        self._swap()
        try:
            yield
        finally:
            self._swap()

    def apply(self, tensors: list[torch.Tensor]) -> None:
        """Put the averages in place of the parameters for good (the end of a fit)."""
        self._sync(tensors)
        with torch.no_grad():
            for target, average in zip(self.targets, self.shadow):
                target.copy_(average)

    def state_dict(self) -> dict[str, Any]:
        shadow = self.shadow if self._loaded is None else self._loaded
        return {"decay": self.decay, "updates": self.updates,
                "shadow": [s.detach().cpu().clone() for s in shadow]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self._loaded = list(state["shadow"])
        self.targets, self.shadow = [], []
