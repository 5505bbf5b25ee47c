"""probgen.fit: the one trainer. Batching, schedules, validation, rollback, resume, checkpoints and
callbacks around a training method (SVI by default; a family's EM, Baum-Welch, CD, ...)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from probgen.core.checkpoint import (
    CheckpointError,
    atomic_save,
    load_checkpoint,
    param_store_state,
    restore_param_store,
    rng_state,
    set_rng_state,
)
from probgen.core.model import GenerativeModel
from probgen.core.validate import as_batch
from probgen.core.version import __version__
from probgen.infer.method import TrainingMethod, TrainingSetup
from probgen.infer.svi import SVI

__all__ = ["fit", "FitResult", "FitState", "TrainingDiverged", "GENERIC_METHODS"]

ROLLBACK_EVERY = 10  # steps between in-memory snapshots that divergence rolls back to
GENERIC_METHODS: dict[str, type[TrainingMethod]] = {"svi": SVI}


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


@dataclass(frozen=True)
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

    @property
    def history(self) -> list[float]:
        """Loss per example per step (``losses / N``)."""
        return [value / self.num_examples for value in self.losses] if self.num_examples else []

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """Constrained parameter values from Pyro's param store."""
        store = pyro.get_param_store()
        return {name: store[name].detach().clone() for name in store.keys()}


# --- data ------------------------------------------------------------------------------------
def _positive_int(name: str, value: Any, *, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class _Batches:
    """The training data as mini-batches: a tensor (or tuple) shuffled per epoch with a seeded
    permutation, or a ``Dataset``/``DataLoader``/iterable of batches with ``num_examples``."""

    def __init__(self, data: Any, batch_size: int | None, num_examples: int | None,
                 shuffle: bool, prepare: Callable[[tuple], tuple]) -> None:
        self.prepare = prepare
        self.loader: Iterable | None = None
        if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, Iterable):
            data = torch.utils.data.DataLoader(data, batch_size=batch_size or len(data),
                                               shuffle=shuffle)
        if _is_loader(data):
            self.loader = data
            size = num_examples if num_examples is not None else _dataset_size(data)
            if size is None:
                raise TypeError("data is an iterable of batches with no dataset to count: pass "
                                "num_examples=N (the training-set size), so that mini-batch "
                                "sites are scaled by N/B")
            _positive_int("num_examples", size, allow_none=False)
            self.tensors: tuple[torch.Tensor, ...] = self.prepare(_as_tuple(next(iter(data))))
            self.size = int(size)
            self.batch_size = int(self.tensors[0].shape[0])
            self.steps_per_epoch = len(data) if hasattr(data, "__len__") else max(
                1, math.ceil(self.size / self.batch_size))
        else:
            self.tensors = self.prepare(as_batch(data))
            self.size = int(self.tensors[0].shape[0])
            _positive_int("batch_size", batch_size)
            if batch_size is not None and batch_size > self.size:
                raise ValueError(f"batch_size={batch_size} exceeds the {self.size} examples in "
                                 "data; use batch_size=None to fit on all of them at once")
            self.batch_size = batch_size or self.size
            self.steps_per_epoch = math.ceil(self.size / self.batch_size)
        self.shuffle = shuffle
        self.first = tuple(t[:self.batch_size] for t in self.tensors)

    def epochs(self, start_step: int, seed: int) -> Iterator[tuple[int, int, tuple]]:
        """(step, epoch, batch) from ``start_step`` on, forever."""
        step = start_step
        epoch, position = divmod(start_step, self.steps_per_epoch)
        generator = torch.Generator()
        while True:
            if self.loader is not None:
                batches: Iterable = (self.prepare(_as_tuple(b)) for b in self.loader)
            elif self.batch_size == self.size:
                batches = [self.tensors]
            else:
                order = (torch.randperm(self.size, generator=generator.manual_seed(seed + epoch))
                         if self.shuffle else torch.arange(self.size))
                order = order.to(self.tensors[0].device)
                batches = (tuple(t[order[i:i + self.batch_size]] for t in self.tensors)
                           for i in range(0, self.size, self.batch_size))
            for index, batch in enumerate(batches):
                if index < position:
                    continue
                yield step, epoch, batch
                step += 1
            epoch, position = epoch + 1, 0


def _is_loader(data: Any) -> bool:
    return isinstance(data, torch.utils.data.DataLoader) or (
        isinstance(data, Iterable) and not isinstance(data, (torch.Tensor, tuple, list, dict,
                                                             str, bytes))
        and not hasattr(data, "__array__"))


def _dataset_size(loader: Any) -> int | None:
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None


def _as_tuple(batch: Any) -> tuple:
    return tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)


# --- snapshots, checkpoints ------------------------------------------------------------------
def _model_state(bundled: GenerativeModel | None) -> dict[str, Any]:
    return {"param_store": param_store_state(),
            "model_state": bundled.state_dict() if bundled is not None else None}


def _restore(state: dict[str, Any], bundled: GenerativeModel | None) -> None:
    if bundled is not None and state.get("model_state") is not None:
        bundled.load_state_dict(state["model_state"])
    restore_param_store(state["param_store"])


@dataclass
class _Run:
    """The mutable state of one fit: what a checkpoint holds and what the loop updates."""

    method: TrainingMethod
    bundled: GenerativeModel | None
    settings: dict[str, Any]
    losses: list[float] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)
    best: tuple[float, int, dict] | None = None  # (loss, step, parameters)
    stale: int = 0  # validations since the best one

    def checkpoint_state(self, step: int) -> dict[str, Any]:
        return {
            "format": "probgen-fit", "format_version": 2, "probgen_version": __version__,
            "step": step, "losses": torch.tensor(self.losses[:step], dtype=torch.float64),
            **_model_state(self.bundled), "method": self.method.state_dict(), "rng": rng_state(),
            "model_config": dict(self.bundled.config) if self.bundled is not None else None,
            "run": self.settings,
            "validation": [[int(s), float(v)] for s, v in self.validation if s <= step],
            "best": None if self.best is None else {"loss": self.best[0], "step": self.best[1],
                                                    **self.best[2]},
        }

    def load(self, path: Path, example: tuple) -> int:
        state = load_checkpoint(path)
        if state["format"] != "probgen-fit":
            raise CheckpointError(f"{path} is a {state['format']!r} file, not a fit checkpoint")
        for key in ("size", "batch_size", "method"):
            if state["run"].get(key) != self.settings[key]:
                raise CheckpointError(f"checkpoint was written with {key}={state['run'].get(key)!r} "
                                      f"but this run has {key}={self.settings[key]!r}; resume with "
                                      "the same data and settings")
        self.settings["seed"] = int(state["run"]["seed"])
        _restore(state, self.bundled)
        self.method.load_state_dict(state.get("method") or {})
        set_rng_state(state["rng"])
        self.losses = [float(v) for v in state["losses"]]
        self.validation = [(int(s), float(v)) for s, v in state.get("validation") or []]
        best = state.get("best")
        if best is not None:
            self.best = (float(best["loss"]), int(best["step"]),
                         {"param_store": best["param_store"], "model_state": best["model_state"]})
        return int(state["step"])


# --- validation --------------------------------------------------------------------------------
def _validation_loss(run: _Run, batch: tuple, estimator: str | None, seed: int) -> float:
    """The held-out loss per example, on a fixed random stream that leaves training's untouched."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        pyro.set_rng_seed(seed)
        was_training = run.bundled.training if run.bundled is not None else False
        if run.bundled is not None:
            run.bundled.eval()
        try:
            if estimator is None:
                return run.method.validation_loss(batch)
            from probgen.evaluate.api import evaluate  # generic evaluate: same layer as fit

            model = run.bundled if run.bundled is not None else run.method.setup.program
            return -evaluate(model, batch, guide=run.method.guide, estimator=estimator,
                             seed=seed).mean
        finally:
            if run.bundled is not None and was_training:
                run.bundled.train()


def _after_validation(run: _Run, step: int, value: float, patience: int | None) -> bool:
    """Record a validation loss; True when patience has run out."""
    run.validation.append((step, value))
    if run.best is None or value < run.best[0]:
        run.best, run.stale = (value, step, _model_state(run.bundled)), 0
        return False
    run.stale += 1
    return patience is not None and run.stale >= patience


# --- the method --------------------------------------------------------------------------------
def _choose_method(model: Any, method: str | type[TrainingMethod] | None) -> tuple[str, type]:
    bundled = model if isinstance(model, GenerativeModel) else None
    declared = dict(GENERIC_METHODS, **(bundled.methods() if bundled is not None else {}))
    if isinstance(method, type) and issubclass(method, TrainingMethod):
        return method.__name__.lower(), method
    name = method or (bundled.default_method if bundled is not None else "svi")
    if name not in declared:
        raise ValueError(f"unknown method {name!r} for {type(model).__name__}; choose one of "
                         f"{sorted(declared)}")
    return name, declared[name]


def _prepare_data(bundled: GenerativeModel | None, device: Any) -> Callable[[tuple], tuple]:
    def prepare(batch: tuple) -> tuple:
        batch = as_batch(batch)
        if device is not None:
            batch = tuple(t.to(device) for t in batch)
        return tuple(bundled.validate_batch(*batch)) if bundled is not None else batch
    return prepare


def _fresh_parameters(program: Callable, guide: Callable | None, example: tuple) -> None:
    """Drop the plain ``pyro.param`` values this program (and guide) would reuse from an earlier
    run, so one seed gives one result; module parameters (``nn.Parameter``) are the model's."""
    from pyro import poutine

    store = pyro.get_param_store()
    with poutine.block(), torch.no_grad(), poutine.trace(param_only=True) as capture:
        program(*example)
        if guide is not None:
            guide(*example)
    for name in capture.trace.nodes:
        if name in store.keys() and not isinstance(store._params[name], torch.nn.Parameter):
            del store[name]


def _diverged(loss: float, step: int, last_good: int, checkpoint: Any) -> str:
    return (f"loss became {loss} at step {step}; parameters were rolled back to step {last_good} "
            f"(snapshots are kept every {ROLLBACK_EVERY} steps, at a finite loss)"
            f"{f' (saved to {checkpoint})' if checkpoint else ''}. Likely causes: a learning rate "
            "too high (resume with optim=1e-3: the moments are kept, the new rate applies), a "
            "scale parameter without a positive constraint, unnormalized data, or a guide "
            "proposing values outside the model's support")


class _Rollback:
    """Copies of the method's tensors at the last step whose loss was finite, taken every
    ``ROLLBACK_EVERY`` steps: copied before the step, kept once its loss proves finite."""

    def __init__(self, step: int) -> None:
        self.targets: list[torch.Tensor] = []
        self.good: list[torch.Tensor] = []
        self.pending: list[torch.Tensor] | None = None
        self.step = self.pending_step = step

    def before(self, method: TrainingMethod, step: int, start: int) -> None:
        targets = method.tensors()
        if [id(t) for t in targets] != [id(t) for t in self.targets]:  # new parameters
            self.targets, self.pending = targets, [t.detach().clone() for t in targets]
        elif (step - start) % ROLLBACK_EVERY == 0:  # a copy per step would cost ~5%
            self.pending = [t.detach().clone() for t in targets]
        else:
            return
        self.pending_step = step

    def finite(self) -> None:
        if self.pending is not None:
            self.good, self.pending, self.step = self.pending, None, self.pending_step

    def restore(self) -> None:
        with torch.no_grad():
            for target, value in zip(self.targets, self.good):
                target.copy_(value)


def fit(
    model: Callable | GenerativeModel,
    data: Any,
    *,
    guide: Callable | None = None,
    method: str | type[TrainingMethod] | None = None,
    num_steps: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    num_examples: int | None = None,
    shuffle: bool = True,
    optim: Any = None,
    scheduler_every: str = "epoch",
    loss: Any = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    validation: Any = None,
    validate_every: int | None = None,
    validation_estimator: str | None = None,
    patience: int | None = None,
    restore_best: bool = True,
    device: str | torch.device | None = None,
    seed: int | None = None,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    warm_start: bool = False,
    callbacks: Sequence[Callable[[FitState], bool | None]] = (),
    num_particles: int = 1,
    data_plate: str | None = None,
    distributed: bool = False,
    **options: Any,
) -> FitResult:
    r"""Fit any Pyro program (or a bundled model) to ``data``; every family, every method.

    SVI maximizes Σ_n E_q[log p(x_n, z) − log q(z | x_n)] with mini-batches scaled by N/B on the
    data plate; a family's own method (``method="em"``, ``"baum_welch"``, ``"cd"``, ...) runs
    inside the same loop with the same arguments and result.

    Args:
        model: ``model(*batch)``, a Pyro program with a plate over the first data dimension
            sized from its arguments, or a bundled :class:`GenerativeModel`.
        data: a tensor (or NumPy array), a tuple of tensors sharing the first dimension (side
            data such as lengths or labels), a ``torch.utils.data.Dataset``, or a
            ``DataLoader``/iterable of batches (then ``num_examples`` = N if it has no dataset).
        method: the training method: ``"svi"`` or one the family declares (default: the
            family's ``default_method``).
        num_steps, epochs: how long (default 1000 steps); ``batch_size``: examples per step.
        optim: learning rate, Adam options dict, or a ``pyro.optim`` optimizer or LR scheduler
            (``pyro.optim.ExponentialLR(...)``, stepped once per epoch, or per step with
            ``scheduler_every="step"``; ``ReduceLROnPlateau`` gets the validation loss).
        transform: applied to each mini-batch's data tensor before the step (dynamic
            binarization, dequantization noise); it draws from torch's RNG, which fit seeds
            and checkpoints, so a resumed run repeats it.
        validation: held-out data scored every ``validate_every`` steps (default: once per
            epoch) with the method's own loss per example, or ``-evaluate(...).mean`` with
            ``validation_estimator``; ``patience`` validations without improvement stop the
            run; ``restore_best`` puts back the best-scoring parameters at the end.
        seed: seeds every random stream; parameters that ``pyro.param`` creates start fresh
            unless ``warm_start=True`` (a bundled model's modules keep their values).
        checkpoint: file written atomically every ``checkpoint_every`` steps and at the end;
            ``resume=True`` continues from it (a new ``optim`` learning rate applies).
        callbacks: called with a :class:`FitState` after every step; return True to stop.
        distributed: data-parallel over the processes of a torchrun launch.
        options: the method's own options (e.g. ``tol`` for EM, ``k`` for CD).

    Raises:
        TrainingDiverged: the loss became non-finite; parameters are rolled back to the latest
            snapshot (every ``ROLLBACK_EVERY`` = 10 steps, at a finite loss) and saved to
            ``checkpoint`` when given.

    Example:
        >>> def model(x):
        ...     loc = pyro.param("loc", torch.tensor(0.0))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("x", pyro.distributions.Normal(loc, 1.0), obs=x)
        >>> result = fit(model, torch.full((10,), 3.0), num_steps=300, optim=0.1, progress=False)
        >>> round(float(pyro.param("loc")), 1)
        3.0
    """
    started = time.perf_counter()
    bundled, program = _unpack_model(model)
    name, method_class = _choose_method(model, method)
    parallel = _parallel(distributed)
    device = parallel.device_for(device) if parallel is not None else device
    if device is not None and bundled is not None:
        bundled.to(device)
    batches = _Batches(data, batch_size, num_examples, shuffle, _prepare_data(bundled, device))
    total_steps = _total_steps(num_steps, epochs, batches.steps_per_epoch, method_class, batch_size)
    _check_options(method_class, options, scheduler_every, patience, validate_every, num_particles)
    held_out = _prepare_data(bundled, device)(as_batch(validation, name="validation")) \
        if validation is not None else None
    seed = _seed(seed, parallel)
    if bundled is not None:
        bundled.train()
    if not (warm_start or resume):
        _fresh_parameters(program, guide, batches.first)
    setup = TrainingSetup(model, program, guide, batches.first, batches.size, batches.batch_size,
                          optim, loss, num_particles, data_plate, dict(options), parallel)
    run = _Run(method_class(setup), bundled, {"size": batches.size, "batch_size":
               batches.batch_size, "seed": seed, "method": name, "num_particles": num_particles})
    pyro.set_rng_seed(seed)  # training's stream starts at the seed, whatever setup drew
    start = run.load(Path(checkpoint), batches.first) if _resuming(resume, checkpoint) else 0
    if parallel is not None:
        parallel.check_batch_size(batches.size, batches.batch_size)
        parallel.prepare(run.method.guide, batches.first, bundled, run.settings["seed"], start,
                         resumed=start > 0)
    loop = _Loop(run, batches, total_steps, start, transform, held_out, validate_every,
                 validation_estimator, patience, scheduler_every, checkpoint,
                 checkpoint_every, callbacks, progress and (parallel is None or parallel.is_main),
                 parallel)
    try:
        stopped = loop.run_steps()
    finally:
        run.method.finish()
    if restore_best and run.best is not None and run.best[1] != len(run.losses):
        _restore(run.best[2], bundled)
        loop.save(len(run.losses))
    return loop.result(model, name, started, stopped)


# --- the pieces fit is made of -----------------------------------------------------------------
def _unpack_model(model: Any) -> tuple[GenerativeModel | None, Callable]:
    bundled = model if isinstance(model, GenerativeModel) else None
    program = bundled.model if bundled is not None else model
    if not callable(program):
        raise TypeError(f"model must be a Pyro program (a callable) or a GenerativeModel, got "
                        f"{type(model).__name__}")
    return bundled, program


def _parallel(distributed: bool) -> Any:
    if not distributed:
        return None
    from probgen.infer.distributed import DataParallel  # torch.distributed: only when asked

    return DataParallel.from_environment()


def _total_steps(num_steps: int | None, epochs: int | None, steps_per_epoch: int,
                 method_class: type[TrainingMethod], batch_size: int | None) -> int:
    if num_steps is not None and epochs is not None:
        raise ValueError("pass num_steps or epochs, not both")
    _positive_int("num_steps", num_steps)
    _positive_int("epochs", epochs)
    if method_class.full_batch and batch_size is not None:
        raise ValueError(f"method {method_class.__name__} takes all the data at every step; "
                         "leave batch_size=None")
    return num_steps if num_steps is not None else (epochs or 0) * steps_per_epoch or 1000


def _check_options(method_class: type[TrainingMethod], options: dict, scheduler_every: str,
                   patience: int | None, validate_every: int | None, num_particles: int) -> None:
    unknown = sorted(set(options) - set(method_class.options))
    if unknown:
        raise TypeError(f"unexpected options {unknown} for method {method_class.__name__}; it "
                        f"takes {list(method_class.options) or 'none'}")
    if scheduler_every not in ("epoch", "step"):
        raise ValueError(f"scheduler_every must be 'epoch' or 'step', got {scheduler_every!r}")
    _positive_int("patience", patience)
    _positive_int("validate_every", validate_every)
    _positive_int("num_particles", num_particles, allow_none=False)


def _seed(seed: int | None, parallel: Any) -> int:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not 0 <= seed < 2**32):
        raise ValueError(f"seed must be an integer in 0 .. 2**32 - 1, got {seed!r}")
    base = int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
    if parallel is not None:
        base = parallel.broadcast_seed(base)
    pyro.set_rng_seed(base)
    return base


def _resuming(resume: bool, checkpoint: str | Path | None) -> bool:
    if not resume:
        return False
    if checkpoint is None:
        raise ValueError("resume=True needs checkpoint=PATH")
    return Path(checkpoint).exists()


class _Loop:
    """The training loop: step, guard, validate, schedule, checkpoint, report."""

    def __init__(self, run: _Run, batches: _Batches, total_steps: int, start: int,
                 transform: Callable | None, held_out: tuple | None, validate_every: int | None,
                 validation_estimator: str | None, patience: int | None, scheduler_every: str,
                 checkpoint: str | Path | None, checkpoint_every: int | None,
                 callbacks: Sequence[Callable], show: bool, parallel: Any) -> None:
        if start > total_steps:
            raise CheckpointError(f"the checkpoint is at step {start} but num_steps={total_steps}; "
                                  "pass at least as many steps as were already taken")
        self.run, self.batches, self.total, self.start = run, batches, total_steps, start
        self.transform, self.held_out, self.estimator = transform, held_out, validation_estimator
        self.validate_every = validate_every or batches.steps_per_epoch
        self.patience, self.scheduler_every, self.callbacks = patience, scheduler_every, callbacks
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every or max(1, total_steps // 10)
        self.show, self.parallel = show, parallel
        self.rollback = _Rollback(start)

    def save(self, step: int) -> None:
        if self.checkpoint is not None and (self.parallel is None or self.parallel.is_main):
            atomic_save(self.run.checkpoint_state(step), self.checkpoint)
        if self.checkpoint is not None and self.parallel is not None:
            self.parallel.barrier()  # the file exists on return, on every rank

    def _batch(self, batch: tuple) -> tuple[tuple, float]:
        """This step's batch (sharded, transformed) and its data-plate scale N/B."""
        global_count = int(batch[0].shape[0])
        if self.parallel is not None:  # this rank's slice of the global batch
            batch = tuple(self.parallel.shard(t) for t in batch)
        if self.transform is not None:
            batch = (self.transform(batch[0]),) + tuple(batch[1:])
        scale = (self.batches.size / global_count if self.parallel is None
                 else self.parallel.plate_scale(self.batches.size, global_count))
        return batch, scale

    def _step(self, step: int, batch: tuple) -> float:
        batch, scale = self._batch(batch)
        self.rollback.before(self.run.method, step, self.start)
        first = step == self.start  # data were checked at the boundary; Pyro checks step one
        with pyro.validation_enabled(first and pyro.infer.util.is_validation_enabled()):
            loss = self.run.method.step(batch, scale)
        if not math.isfinite(loss):
            self.rollback.restore()
            self.save(self.rollback.step)
            raise TrainingDiverged(_diverged(loss, step, self.rollback.step, self.checkpoint),
                                   step, self.result(self.run.method.setup.model,
                                                     self.run.settings["method"], None, False))
        self.rollback.finite()
        self.run.losses.append(loss)
        return loss

    def _end_of_period(self, step: int, epoch_end: bool) -> bool:
        """Validation, schedules and checkpoints after ``step``; True to stop (patience)."""
        done, stop = step + 1, False
        metric = None
        if self.held_out is not None and (done % self.validate_every == 0 or done == self.total):
            metric = _validation_loss(self.run, self.held_out, self.estimator,
                                      self.run.settings["seed"] + 1)
            stop = _after_validation(self.run, done, metric, self.patience)
        if self.scheduler_every == "step" or epoch_end:
            if metric is None and self.run.validation:
                metric = self.run.validation[-1][1]
            self.run.method.end_epoch(metric)
        if done % self.checkpoint_every == 0 or done == self.total:
            self.save(done)
        return stop

    def run_steps(self) -> bool:
        bar = tqdm(total=self.total, initial=self.start, disable=not self.show, desc="fit",
                   leave=False, dynamic_ncols=True)
        try:
            for step, epoch, batch in self.batches.epochs(self.start, self.run.settings["seed"]):
                if step >= self.total:
                    return False
                loss = self._step(step, batch)
                self.run.method.end_step()
                bar.update(1)
                if self.show and step % 10 == 0:
                    bar.set_postfix(loss=f"{loss:.4g}", epoch=epoch)
                epoch_end = (step + 1) % self.batches.steps_per_epoch == 0
                stop = self._end_of_period(step, epoch_end)
                state = FitState(step, epoch, loss, self.run.losses, self.run.validation)
                if any(callback(state) for callback in self.callbacks) or stop:
                    self.save(step + 1)
                    return True
                if self.run.method.converged:
                    self.save(step + 1)
                    return False
            return False
        finally:
            bar.close()


    def result(self, model: Any, name: str, started: float | None, stopped: bool) -> FitResult:
        best = self.run.best
        return FitResult(
            model, self.run.method.guide, self.run.losses, len(self.run.losses),
            time.perf_counter() - started if started is not None else 0.0, name,
            self.run.method.converged, stopped, list(self.run.validation),
            best[1] if best is not None else None, self.batches.size, dict(self.run.settings))
