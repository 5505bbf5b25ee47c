"""What a built-in estimator reads: the program, the batch, evaluate's settings, the program's facts."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pyro import poutine

from probgen.core.model import GenerativeModel
from probgen.core.params import scratch_param_store
from probgen.core.program import ProgramInfo, inspect_program
from probgen.core.support import check_observed_support

__all__ = ["EvaluateSettings", "EvaluationContext", "prepare_context"]


@dataclass(frozen=True)
class EvaluateSettings:
    """:func:`probgen.evaluate`'s own arguments, checked (``masked`` is "allow" or "refuse")."""

    k: int | None = None
    batch_size: int | None = None
    data_space: str | None = None
    num_dims: int | None = None
    data_plate: str | None = None
    seed: int | None = None
    fast: bool = True
    progress: bool = False
    posterior: Any = None
    num_draws: int | None = None
    refit_steps: Any = 1000
    masked: str = "refuse"


@dataclass(frozen=True)
class EvaluationContext:
    """One batch to score with a built-in estimator.

    Fields:
        model: the bundled :class:`GenerativeModel`, or the program itself.
        program: the Pyro program ``program(*batch)``.
        batch: the examples; probe: the rows the program was inspected on (a prefix of batch).
        info: the program's sites, read off one trace on ``probe``.
        guide: the proposal q(z | x): the one given, else a bundled model's own.
        requested: the ``estimator=`` name asked for (``"exact"`` may be scored as predictive).
        settings: evaluate's arguments, with ``num_dims`` filled in.
    """

    model: Any
    program: Callable
    batch: tuple[torch.Tensor, ...]
    probe: tuple[torch.Tensor, ...]
    info: ProgramInfo
    guide: Callable | None
    requested: str
    settings: EvaluateSettings

    @property
    def bundled(self) -> bool:
        return isinstance(self.model, GenerativeModel)

    @property
    def num_examples(self) -> int:
        return int(self.batch[0].shape[0])

    def with_data_space(self) -> EvaluationContext:
        """This context with ``settings.data_space`` filled in (a bundled model's, else inferred
        from the observed sites' supports on one trace)."""
        if self.settings.data_space is not None:
            return self
        space = self.model.data_space if self.bundled else _infer_data_space(
            self.program, self.probe, self.info)
        return dataclasses.replace(self, settings=dataclasses.replace(self.settings,
                                                                      data_space=space))


def _infer_data_space(model: Callable, batch: tuple[torch.Tensor, ...], info: ProgramInfo) -> str:
    with scratch_param_store(), poutine.block(), torch.no_grad():
        trace = poutine.trace(model).get_trace(*batch)
    discrete = [trace.nodes[n]["fn"].support.is_discrete for n in info.observed]
    return "discrete" if all(discrete) else "continuous"


def _own_guide(model: Any, guide: Callable | None) -> Callable | None:
    """``guide``, else a bundled model's own guide, else the guide fit built for it."""
    if guide is not None or not isinstance(model, GenerativeModel):
        return guide
    if model.has_guide:
        return model.guide
    return model.autoguide  # the guide fit built (saved and loaded with it); None if none


def _inspected(program: Callable, batch: tuple[torch.Tensor, ...], data_plate: str | None
               ) -> tuple[ProgramInfo, tuple[torch.Tensor, ...]]:
    """The program's facts and the rows they were read on: the first two rows, else every row
    (e.g. a plate with subsample_size larger than two); a subsampling plate keeps every row."""
    n = int(batch[0].shape[0])
    probe = tuple(t[: min(n, 2)] for t in batch) if n > 1 else batch
    with scratch_param_store():  # a parameter initialised from the probe's rows must not stay
        try:
            info = inspect_program(program, probe, data_plate=data_plate)
        except (ValueError, RuntimeError):
            if len(probe[0]) == n:
                raise
            probe = batch
            info = inspect_program(program, probe, data_plate=data_plate)
    return info, batch if info.subsample_size is not None else probe


def prepare_context(model: Any, batch: tuple[torch.Tensor, ...], guide: Callable | None,
                    requested: str, settings: EvaluateSettings) -> EvaluationContext:
    """Inspect the program on a probe of ``batch``; for a program (not bundled), check the
    observed values' supports and count the values per example when ``num_dims`` is not given."""
    bundled = isinstance(model, GenerativeModel)
    program = model.model if bundled else model
    info, probe = _inspected(program, batch, settings.data_plate)
    if not bundled:  # a bundled model checked its data in validate_batch
        observed = check_observed_support(program, batch, info.data_plate)
        if settings.num_dims is None:  # unmasked values per example: ragged count true lengths
            ragged = observed > 0 and info.subsample_size is None
            num_dims = observed if ragged else int(batch[0][0].numel())
            settings = dataclasses.replace(settings, num_dims=num_dims)
    return EvaluationContext(model=model, program=program, batch=batch, probe=probe, info=info,
                             guide=_own_guide(model, guide), requested=requested,
                             settings=settings)
