"""SVI that evaluates a family's bound in plain torch where the family can write it: the generic
SVI's optimizer, parameter names, checkpoints and fallback, without Pyro's trace per step."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from probgen.core.model import GenerativeModel
from probgen.infer.method import TrainingSetup
from probgen.infer.objectives import IWAE
from probgen.infer.svi import SVI

__all__ = ["LeanSVI", "Objective", "keeps_program", "plain_options"]

Objective = Callable[..., torch.Tensor]


def keeps_program(model: GenerativeModel, family: type, names: Sequence[str]) -> bool:
    """``model`` runs ``family``'s own ``names`` (no subclass override, no instance attribute):
    what a plain-torch objective written for ``family`` assumes of the program."""
    return not any(name in vars(model) or getattr(type(model), name) is not getattr(family, name)
                   for name in names)


def plain_options(setup: TrainingSetup) -> bool:
    """The run asks for nothing beyond a named bound: no user guide, ``pyro.infer.ELBO``
    object, KL warm-up, free bits or data parallelism (those take Pyro's generic path)."""
    return (setup.guide is None and setup.parallel is None and not setup.kl_warmup_steps
            and not setup.free_bits and (setup.loss is None or isinstance(setup.loss, str)))


class LeanSVI(SVI):
    r"""SVI whose step maximizes ``objective(*batch)`` (the bound summed over the mini-batch,
    times N/B) by backpropagation alone, when :meth:`lean_objective` gives one.

    A family subclasses it, declares it as its ``"svi"`` method and returns from
    :meth:`lean_objective` the same bound Pyro's ELBO would compute on the same random draws;
    the step then takes the same Adam step on the same parameters (by the param store's names,
    so checkpoints and resumes are interchangeable with :class:`~probgen.infer.svi.SVI`).
    Where it returns None, every call goes to the generic SVI.
    """

    def __init__(self, setup: TrainingSetup) -> None:
        super().__init__(setup)
        self.objective = self.lean_objective()
        if self.objective is not None:
            model = setup.model
            self.params = {f"{model.pyro_name}$$${name}": value
                           for name, value in model.named_parameters() if value.requires_grad}
            # in the store's order (a checkpoint's averages follow it), without other models'
            own = {id(value) for value in self.params.values()}
            self._tensors = [value for value in super().tensors() if id(value) in own]

    def lean_objective(self) -> Objective | None:
        """``objective(*batch)``, the bound summed over examples, or None (the generic path)."""
        return None

    def step(self, batch: tuple[torch.Tensor, ...], scale: float) -> float:
        if self.objective is None:
            return super().step(batch, scale)
        loss = self.objective(*batch) * -scale
        loss.backward()
        value = loss.item()
        if math.isfinite(value):
            self.optimizer(self.params)
        for parameter in self.params.values():
            parameter.grad = None
        return value

    def tensors(self) -> list[torch.Tensor]:
        return super().tensors() if self.objective is None else list(self._tensors)

    def validation_loss(self, batch: tuple[torch.Tensor, ...]) -> float:
        if self.objective is None:
            return super().validation_loss(batch)
        size = len(batch[0])
        chunk = self.elbo.chunk if isinstance(self.elbo, IWAE) else size
        with torch.no_grad():  # in IWAE's chunks, so the draws are the generic path's
            total = sum(float(self.objective(*(t[i:i + chunk] for t in batch)))
                        for i in range(0, size, chunk))
        return -total / size
