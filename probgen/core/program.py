"""What a Pyro program looks like from outside: its data plate, latent sites and plate nesting."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

__all__ = ["ProgramInfo", "inspect_program", "trace_on_data", "DataPlateScale", "find_data_frame", "ForceSubsample"]


@dataclass(frozen=True)
class ProgramInfo:
    """Sites of a model program, read off one trace of it on a batch.

    Fields:
        data_plate: name of the plate over examples (the first data dimension).
        batch_size: the number of examples in the traced batch.
        observed: observed site names; continuous_latents / discrete_latents: latent site names.
        enumerable: discrete latents with finite support (can be summed out exactly).
        global_latents: latent sites outside the data plate.
        max_plate_nesting: the deepest plate nesting (for TraceEnum_ELBO and particle plates).
    """

    data_plate: str | None
    batch_size: int
    observed: tuple[str, ...]
    continuous_latents: tuple[str, ...]
    discrete_latents: tuple[str, ...]
    enumerable: tuple[str, ...]
    global_latents: tuple[str, ...]
    max_plate_nesting: int
    bound_sites: tuple[str, ...] = ()  # sites whose log_prob is only a bound (diffusion VLB)
    subsample_size: int | None = None  # the data plate subsamples itself (Pyro's subsample_size)

    @property
    def latents(self) -> tuple[str, ...]:
        return self.continuous_latents + self.discrete_latents

    @property
    def exact_applies(self) -> bool:
        """True when every latent is a finite-support discrete site inside the data plate."""
        return (not self.continuous_latents
                and set(self.discrete_latents) == set(self.enumerable)
                and not self.global_latents and not self.bound_sites)


def _shapes(batch: tuple[torch.Tensor, ...]) -> str:
    return ", ".join(str(tuple(t.shape)) for t in batch) or "no arguments"


def trace_on_data(model: Callable, batch: tuple[torch.Tensor, ...]):
    """``model(*batch)`` traced once; a failure inside the program (a shape mismatch, most
    often) is re-raised as a ValueError that names the data's shape, chained to the original."""
    try:
        with poutine.block(), torch.no_grad():
            trace = poutine.trace(model).get_trace(*batch)
    except NotImplementedError:
        raise  # a family that says it has no program, and why
    except (RuntimeError, ValueError, IndexError) as error:
        if not batch:
            raise
        raise _failed_on(batch, error) from error
    try:  # shapes that only clash when scored (an observation of the wrong width)
        cuda = sorted({t.device.index or 0 for t in batch if t.is_cuda})
        with torch.no_grad(), torch.random.fork_rng(devices=cuda):  # leave the seeded stream
            trace.compute_log_prob()
    except NotImplementedError:
        raise
    except (RuntimeError, IndexError, ValueError) as error:
        cause = str(error.__cause__ or error).split("\n")[0]
        if not batch or (isinstance(error, ValueError) and (
                "support" in cause or not re.search(r"broadcast|shape|size", cause, re.I))):
            # values outside a support and the like: the caller's own checks say which
            if isinstance(error, ValueError):
                return trace
            raise
        raise _failed_on(batch, error) from error
    return trace


def _failed_on(batch: tuple[torch.Tensor, ...], error: BaseException) -> ValueError:
    example = tuple(batch[0].shape[1:])
    return ValueError(
        f"the program failed on the data passed: data has examples of shape {example} "
        f"(batch shapes {_shapes(batch)}); check that the data has the features and shape "
        f"the program expects ({type(error).__name__}: {error})")


def _plates(site: dict) -> list:
    return [f for f in site["cond_indep_stack"] if f.vectorized]


@dataclass
class _SiteCensus:
    """The sample sites of one trace sorted by kind, and the plates of size n around observations."""

    size: int  # examples in the traced batch
    observed: list[str] = field(default_factory=list)
    continuous: list[str] = field(default_factory=list)
    discrete: list[str] = field(default_factory=list)
    enumerable: list[str] = field(default_factory=list)
    bound: list[str] = field(default_factory=list)
    nesting: int = 0
    candidates: dict[str, int] = field(default_factory=dict)  # plate -> observed sites inside
    subsampled: dict[str, int] = field(default_factory=dict)  # plate -> its subsample size
    sizes_seen: dict[str, int] = field(default_factory=dict)  # plate -> full size

    def add_observed(self, name: str, frames: list) -> None:
        self.observed.append(name)
        for f in frames:
            full = f.full_size if f.full_size is not None else f.size
            self.sizes_seen[f.name] = full
            if full == self.size:
                self.candidates[f.name] = self.candidates.get(f.name, 0) + 1
                if f.size != full:
                    self.subsampled[f.name] = f.size

    def add_latent(self, name: str, fn: object) -> None:
        if getattr(fn, "has_enumerate_support", False) or fn.support.is_discrete:
            self.discrete.append(name)
            if fn.has_enumerate_support:
                self.enumerable.append(name)
        else:
            self.continuous.append(name)


def _census(trace, size: int) -> _SiteCensus:
    """Sort every sample site of ``trace`` (auxiliary observations left out of ``observed``)."""
    census = _SiteCensus(size)
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        frames = _plates(site)
        census.nesting = max([census.nesting] + [-f.dim for f in frames])
        if getattr(site["fn"], "log_prob_is_bound", False):
            census.bound.append(name)
        if not site["is_observed"]:
            census.add_latent(name, site["fn"])
        elif not (name.startswith("_") and site["infer"].get("is_auxiliary")):
            census.add_observed(name, frames)
    return census


def _choose_data_plate(census: _SiteCensus, data_plate: str | None) -> str:
    """The named plate, else the size-n plate holding the most observed sites (then a "data" name)."""
    if not census.observed:
        raise ValueError("the model has no observed sites: pass the data as obs=... to "
                         "pyro.sample inside a pyro.plate over the examples")
    candidates = census.candidates
    if data_plate is None and candidates:
        data_plate = max(candidates, key=lambda n: (candidates[n], "data" in n.lower()))
    if data_plate is None:
        seen = ", ".join(f"'{k}' (size {v})" for k, v in census.sizes_seen.items()) or "none"
        raise ValueError(
            f"no plate of size {census.size} (the number of examples passed in) holds the observed "
            f"sites; plates seen: {seen}. Put the observations in "
            "`with pyro.plate('data', len(x)):` sized from the model's arguments (a program "
            "that closes over full-size data misaligns when probgen mini-batches or chunks)")
    return data_plate


def _outside(trace, names: list[str], data_plate: str) -> list[str]:
    """The sites among ``names`` that no frame of ``data_plate`` encloses."""
    return [name for name in names
            if all(f.name != data_plate for f in _plates(trace.nodes[name]))]


def inspect_program(model: Callable, batch: tuple[torch.Tensor, ...], *,
                    data_plate: str | None = None) -> ProgramInfo:
    """Trace ``model(*batch)`` once and describe it; raise if it has no usable data plate.

    The data plate is the plate of size ``len(batch[0])`` that holds the observed sites (or the
    plate named ``data_plate``). Programs must size that plate from their arguments, because
    probgen mini-batches and chunks the data it passes in.
    """
    size = int(batch[0].shape[0])
    trace = trace_on_data(model, batch)
    census = _census(trace, size)
    data_plate = _choose_data_plate(census, data_plate)
    global_latents = _outside(trace, census.continuous + census.discrete, data_plate)
    stray = _outside(trace, census.observed, data_plate)
    if stray:
        raise ValueError(f"observed site '{stray[0]}' is outside the data plate '{data_plate}'; "
                         "every observation must sit inside the plate over examples")
    return ProgramInfo(data_plate, size, tuple(census.observed), tuple(census.continuous),
                       tuple(census.discrete), tuple(census.enumerable), tuple(global_latents),
                       census.nesting, tuple(census.bound), census.subsampled.get(data_plate))


def find_data_frame(trace, data_plate: str, expected_size: int):
    """The data plate's frame in a trace, checked against the batch size actually passed."""
    for site in trace.nodes.values():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        for f in _plates(site):
            if f.name == data_plate:
                if expected_size not in (f.size, f.full_size):
                    raise ValueError(
                        f"plate '{data_plate}' has size {f.size} but the batch passed to the "
                        f"model has {expected_size} examples; size the plate from the model's "
                        "arguments (len(x)), not from data it closes over")
                return f
    raise ValueError(f"plate '{data_plate}' did not appear in this trace of the model")


class DataPlateScale(Messenger):
    """Scale every site inside the data plate by N/B, so a mini-batch ELBO estimates the full one.

    Unlike ``poutine.scale``, global sites (priors on shared latents) keep scale 1.
    """

    def __init__(self, data_plate: str, factor: float) -> None:
        super().__init__()
        self.data_plate = data_plate
        self.factor = factor

    def _process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and any(f.name == self.data_plate
                                           for f in msg["cond_indep_stack"]):
            msg["scale"] = self.factor * msg["scale"]


class ForceSubsample(Messenger):
    """Make the subsampled plate ``name`` draw exactly ``indices``: a program that mini-batches
    itself (``pyro.plate(..., subsample_size=B)``) is then scored on chosen rows."""

    def __init__(self, name: str, indices: torch.Tensor) -> None:
        super().__init__()
        self.name = name
        self.indices = indices

    def _pyro_sample(self, msg: dict) -> None:
        if msg["name"] == self.name and type(msg["fn"]).__name__ == "_Subsample":
            msg["value"] = self.indices
