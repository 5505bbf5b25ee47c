"""SVI that evaluates a family's bound in plain torch where the family can write it: the generic
SVI's optimizer, parameter names, checkpoints and fallback, without Pyro's trace per step."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch

from probgen.core.model import GenerativeModel
from probgen.infer.method import TrainingSetup
from probgen.infer.objectives import IWAE, AnnealedELBO
from probgen.infer.svi import SVI

__all__ = ["LeanSVI", "Objective", "keeps_program", "plain_options", "compiled"]

Objective = Callable[..., torch.Tensor]


def keeps_program(model: GenerativeModel, family: type, names: Sequence[str]) -> bool:
    """``model`` runs ``family``'s own ``names`` (no subclass override, no instance attribute):
    what a plain-torch objective written for ``family`` assumes of the program."""
    return not any(name in vars(model) or getattr(type(model), name) is not getattr(family, name)
                   for name in names)


def plain_options(setup: TrainingSetup, *, annealing: bool = False) -> bool:
    """The run asks for nothing beyond a named bound: no user guide or ``pyro.infer.ELBO``
    object, and no KL warm-up or free bits unless ``annealing`` (the
    family's objective takes ``beta`` and ``free_bits``); the rest takes Pyro's generic path."""
    return (setup.guide is None
            and (annealing or not (setup.kl_warmup_steps or setup.free_bits))
            and (setup.loss is None or isinstance(setup.loss, str)))


def compiled(objective: Objective) -> Objective:
    """``torch.compile(objective)``, or ``objective`` itself (one warning) where no compiler is
    present or the first call fails to compile: eager execution, the same values."""
    try:
        # fallback_random: the same random draws as eager execution (and as the generic path)
        candidate = torch.compile(objective, dynamic=False, options={"fallback_random": True})
    except Exception as error:  # no dynamo on this platform / build
        warnings.warn(f"compile=True: torch.compile is unavailable ({error}); running eagerly",
                      RuntimeWarning, stacklevel=3)
        return objective
    state = {"function": candidate}

    def run(*args: torch.Tensor, **kwargs: float) -> torch.Tensor:
        try:
            return state["function"](*args, **kwargs)
        except Exception as error:
            if state["function"] is objective:
                raise
            warnings.warn(f"compile=True: compilation failed ({type(error).__name__}: {error}); "
                          "running eagerly", RuntimeWarning, stacklevel=2)
            state["function"] = objective
            return objective(*args, **kwargs)
    return run


class LeanSVI(SVI):
    r"""SVI whose step maximizes ``objective(*batch)`` (the bound summed over the mini-batch,
    times N/B) by backpropagation alone, when :meth:`lean_objective` gives one.

    A family subclasses it, declares it as its ``"svi"`` method and returns from
    :meth:`lean_objective` the same bound Pyro's ELBO would compute on the same random draws;
    the step then takes the same Adam step on the same parameters (by the param store's names,
    so checkpoints and resumes are interchangeable with :class:`~probgen.infer.svi.SVI`).
    Where it returns None, every call goes to the generic SVI.

    Under an annealed ELBO (fit's KL warm-up and free bits: the generic path's
    :class:`~probgen.infer.objectives.AnnealedELBO`) the objective is called with keywords
    ``beta`` and ``free_bits`` (:meth:`kl_terms`), once per particle as in the generic loop.
    Option ``compile``: the objective runs through ``torch.compile`` (eagerly, after one
    warning, where that fails).
    """

    options = (*SVI.options, "compile")

    def __init__(self, setup: TrainingSetup) -> None:
        super().__init__(setup)
        self.objective = self.lean_objective()
        if self.objective is not None and setup.options.get("compile", False):
            self.objective = compiled(self.objective)
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

    def kl_terms(self, training: bool) -> tuple[float, float]:
        """(β, free-bits floor λ) of the bound: the annealed ELBO's at this step in training
        (``begin_step`` set it), (1, 0) in validation and without annealing."""
        if training and isinstance(self.elbo, AnnealedELBO):
            return self.elbo.beta(), self.elbo.free_bits
        return 1.0, 0.0

    def bound(self, batch: tuple[torch.Tensor, ...], training: bool) -> torch.Tensor:
        """The objective at this step's (β, λ); the annealed ELBO's particles one call each."""
        if not isinstance(self.elbo, AnnealedELBO):
            return self.objective(*batch)
        beta, free_bits = self.kl_terms(training)
        particles = self.elbo.num_particles
        total = sum(self.objective(*batch, beta=beta, free_bits=free_bits)
                    for _ in range(particles))
        return total if particles == 1 else total / particles

    def step(self, batch: tuple[torch.Tensor, ...], scale: float) -> float:
        if self.objective is None:
            return super().step(batch, scale)
        loss = self.bound(batch, True) * -scale
        loss.backward()
        value = loss.item()
        if self.parallel is not None:  # the mean of the ranks' gradients and losses
            value = self.parallel.average_gradients_(self.params, value)
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
            total = sum(float(self.bound(tuple(t[i:i + chunk] for t in batch), False))
                        for i in range(0, size, chunk))
        return -total / size
