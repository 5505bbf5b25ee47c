"""The training loop behind probgen.fit: step, roll back, validate, schedule, checkpoint."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
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
from probgen.core.version import __version__
from probgen.infer.averaging import ParameterAverage
from probgen.infer.batches import Batches
from probgen.infer.method import TrainingMethod
from probgen.infer.result import FitResult, FitState, TrainingDiverged

__all__ = ["Loop", "Run", "restore_state", "ROLLBACK_EVERY"]

ROLLBACK_EVERY = 10  # steps between in-memory snapshots that divergence rolls back to


# --- snapshots, checkpoints ------------------------------------------------------------------
def _model_state(bundled: GenerativeModel | None) -> dict[str, Any]:
    """A snapshot: copies, not views (a state_dict shares storage with the parameters, which
    the optimizer goes on updating in place)."""
    model_state = None
    if bundled is not None:
        model_state = {name: value.detach().clone() for name, value in bundled.state_dict().items()}
    return {"param_store": param_store_state(), "model_state": model_state}


def restore_state(state: dict[str, Any], bundled: GenerativeModel | None) -> None:
    """Parameters back from a snapshot: a bundled model's modules from its state_dict (their
    param-store names carry a per-process instance number), everything else from the store."""
    store_state = state["param_store"]
    if bundled is not None and state.get("model_state") is not None:
        bundled.load_state_dict(state["model_state"])
        kept = {name for name in store_state["params"] if "$$$" not in name}
        store_state = {"params": {n: store_state["params"][n] for n in kept},
                       "constraints": {n: store_state["constraints"].get(n) for n in kept}}
    restore_param_store(store_state)


@dataclass
class Run:
    """The mutable state of one fit: what a checkpoint holds and what the loop updates."""

    method: TrainingMethod
    bundled: GenerativeModel | None
    settings: dict[str, Any]
    losses: list[float] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)
    best: tuple[float, int, dict] | None = None  # (loss, step, parameters)
    stale: int = 0  # validations since the best one
    average: ParameterAverage | None = None  # fit(ema_decay=...): validated and returned
    # The last step's parameters once the model holds others (the best, or the averages):
    # what a resume continues from, kept apart from the parameters fit returns.
    training_state: dict[str, Any] | None = None
    seed_given: bool = False  # fit(seed=...) was passed: a resume must match it
    # Wall and CPU seconds of the earlier calls of this run (to their last checkpoint), and
    # this call's start: a checkpoint and the result carry the run's total across resumes.
    earlier_seconds: tuple[float, float] | None = (0.0, 0.0)
    call_started: tuple[float, float] = field(
        default_factory=lambda: (time.perf_counter(), time.process_time()))

    def elapsed(self) -> tuple[float, float] | None:
        """(wall, CPU) seconds of the whole run so far; None when an earlier call's
        checkpoint did not record its time."""
        if self.earlier_seconds is None:
            return None
        return (self.earlier_seconds[0] + time.perf_counter() - self.call_started[0],
                self.earlier_seconds[1] + time.process_time() - self.call_started[1])

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
            "average": None if self.average is None else self.average.state_dict(),
            "training_state": self.training_state,
            "elapsed": self.elapsed(),
        }

    def load(self, path: Path, example: tuple) -> int:
        state = load_checkpoint(path)
        if state["format"] != "probgen-fit":
            raise CheckpointError(f"{path} is a {state['format']!r} file, not a fit checkpoint")
        saved_model = state["run"].get("model", "program" if state.get("model_config") is None
                                        else "a bundled model")
        if saved_model != self.settings["model"]:
            raise CheckpointError(f"{path} was written by a fit of {saved_model}, not of "
                                  f"{self.settings['model']}; resume with the same model, or "
                                  "start a new run without resume=True")
        self._check_same_run(path, state)
        self.settings["seed"] = int(state["run"]["seed"])
        # Training goes on from the last step's parameters; the top level holds what the fit
        # returned (the best, or the averages), and is both in files written before the split.
        restore_state(state.get("training_state") or state, self.bundled)
        self.method.load_state_dict(state.get("method") or {})
        set_rng_state(state["rng"])
        self.losses = [float(v) for v in state["losses"]]
        self.validation = [(int(s), float(v)) for s, v in state.get("validation") or []]
        elapsed = state.get("elapsed")  # absent from files written before it was recorded
        self.earlier_seconds = (float(elapsed[0]), float(elapsed[1])) if elapsed else None
        best = state.get("best")
        if best is not None:
            self.best = (float(best["loss"]), int(best["step"]),
                         {"param_store": best["param_store"], "model_state": best["model_state"]})
            self.stale = sum(1 for s, _ in self.validation if s > self.best[1])
        if self.average is not None and state.get("average") is not None:
            self.average.load_state_dict(state["average"])
        return int(state["step"])

    def _check_same_run(self, path: Path, state: dict[str, Any]) -> None:
        """Refuse a resume that would continue another run: other data or batches, another
        method or objective (loss, particles), program (parameter names), model configuration,
        or an explicitly different seed. A new learning rate is allowed."""
        saved = state["run"]
        config = state.get("model_config")
        if self.bundled is not None and isinstance(config, dict):
            ours, theirs = _plain(dict(self.bundled.config)), _plain(config)
            changed = sorted(key for key in set(ours) | set(theirs)
                             if ours.get(key) != theirs.get(key))
            if changed:
                differences = ", ".join(f"{key}={theirs.get(key)!r} in the checkpoint, "
                                        f"{ours.get(key)!r} now" for key in changed)
                raise CheckpointError(
                    f"{path} was written by a {self.settings['model']} of another configuration "
                    f"({differences}); resume with the model it was written by, or start a "
                    "new run without resume=True")
        theirs_names, ours_names = saved.get("parameters"), self.settings.get("parameters")
        if theirs_names is not None and ours_names is not None \
                and sorted(theirs_names) != sorted(ours_names):
            missing = sorted(set(ours_names) - set(theirs_names))
            extra = sorted(set(theirs_names) - set(ours_names))
            raise CheckpointError(
                f"{path} was written by another program: its parameters are "
                f"{sorted(theirs_names)}, this program's {sorted(ours_names)} (not in the "
                f"checkpoint: {missing}; not in this program: {extra}); resume with the program "
                "(and guide) it was written by, or start a new run without resume=True")
        fixes = {"size": "the same data", "batch_size": "the same batch_size",
                 "method": "the same method", "num_particles": "the same objective (loss, "
                 "num_particles)", "loss": "the same objective (loss, num_particles)"}
        for key, fix in fixes.items():
            if key == "loss" and key not in saved:
                continue  # written before the objective was recorded
            if saved.get(key) != self.settings.get(key):
                raise CheckpointError(f"checkpoint {path} was written with {key}="
                                      f"{saved.get(key)!r} but this run has {key}="
                                      f"{self.settings.get(key)!r}; resume with {fix} (a new "
                                      "learning rate is allowed), or start a new run without "
                                      "resume=True")
        if "data_id" in saved and saved.get("data_id") != self.settings["data_id"]:
            raise CheckpointError(f"{path} was written on other data (a different fingerprint, "
                                  "same size); resume with the data it was trained on, or start "
                                  "a new run without resume=True")
        if self.seed_given and int(saved["seed"]) != int(self.settings["seed"]):
            raise CheckpointError(f"checkpoint {path} was written with seed={int(saved['seed'])} "
                                  f"but this run passes seed={self.settings['seed']}; resume with "
                                  "the same seed (or leave seed unset to take the checkpoint's)")

    def averaged(self) -> Any:
        """A block in which the parameters are their averages (nothing changes without one)."""
        return (self.average.applied(self.method.tensors()) if self.average is not None
                else contextlib.nullcontext())


def _plain(value: Any) -> Any:
    """A config as plain data for comparison: tuples as lists, dicts and lists recursively."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


# --- validation --------------------------------------------------------------------------------
def _validation_loss(run: Run, batch: tuple, score: Callable | None, seed: int) -> float:
    """The held-out loss per example (the method's own, or −mean of fit's ``score(model, batch,
    guide, seed=)``) on a fixed random stream that leaves training's untouched."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        pyro.set_rng_seed(seed)
        was_training = run.bundled.training if run.bundled is not None else False
        if run.bundled is not None:
            run.bundled.eval()
        try:
            if score is None:
                return run.method.validation_loss(batch)
            model = run.bundled if run.bundled is not None else run.method.setup.program
            return -float(score(model, batch, run.method.guide, seed=seed).mean())
        finally:
            if run.bundled is not None and was_training:
                run.bundled.train()


def _after_validation(run: Run, step: int, value: float, patience: int | None) -> bool:
    """Record a validation loss; True when patience has run out."""
    run.validation.append((step, value))
    if run.best is None or value < run.best[0]:
        run.best, run.stale = (value, step, _model_state(run.bundled)), 0
        return False
    run.stale += 1
    return patience is not None and run.stale >= patience


def _diverged(loss: float, step: int, last_good: int, checkpoint: Any,
              method: TrainingMethod) -> str:
    return (f"loss became {loss} at step {step}; parameters were rolled back to step {last_good} "
            f"(snapshots are kept every {ROLLBACK_EVERY} steps, at a finite loss)"
            f"{f' (saved to {checkpoint})' if checkpoint else ''}. Likely causes: "
            f"{type(method).divergence_causes()}")


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


class WriterLock:
    """One writer per checkpoint: ``<checkpoint>.lock`` holds the writing process's pid and its
    start time. A lock left by a process that no longer runs, or whose pid a later, unrelated
    process now has (another start time), is taken over, with the temp files its killed writes
    left behind."""

    def __init__(self, checkpoint: str | Path | None) -> None:
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.held = False

    @property
    def path(self) -> Path:
        return self.checkpoint.with_name(self.checkpoint.name + ".lock")

    def acquire(self) -> None:
        if self.checkpoint is None or self.held:
            return
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner, started = self._owner()
                if owner is not None and owner != os.getpid() and _running(owner, started):
                    raise CheckpointError(
                        f"another process (pid {owner}) holds the lock file {self.path} of "
                        f"{self.checkpoint}: wait for it to finish, or write this run to another "
                        "checkpoint path; if no fit is writing it (the pid now belongs to an "
                        f"unrelated process), delete the lock: rm '{self.path}'") from None
                self.path.unlink(missing_ok=True)  # a dead writer's lock
                continue
            with os.fdopen(descriptor, "w") as handle:
                started = _start_time(os.getpid())
                handle.write(f"{os.getpid()}{f' {started}' if started is not None else ''}")
            self.held = True
            for orphan in self.checkpoint.parent.glob(f".{self.checkpoint.name}.*.tmp"):
                orphan.unlink(missing_ok=True)  # only the lock holder writes temp files
            return
        raise CheckpointError(f"could not lock {self.checkpoint} ({self.path} keeps changing)")

    def _owner(self) -> tuple[int | None, int | None]:
        """The pid in the lock file and, when recorded, that process's start time."""
        try:
            fields = self.path.read_text().split()
            pid = int(fields[0]) if fields else None
            return pid or None, int(fields[1]) if len(fields) > 1 else None
        except (OSError, ValueError):
            return None, None

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _start_time(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux's /proc), else None:
    with the pid, it names one process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _running(pid: int, started: int | None = None) -> bool:
    """Whether the process that wrote a lock still runs: ``pid`` is alive and, when the lock
    recorded a start time, it is the same process (not a later one given the same pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if started is not None:
        now = _start_time(pid)
        return now is None or now == started
    return True


class Loop:
    """The training loop: step, guard, validate, schedule, checkpoint, report."""

    def __init__(self, run: Run, batches: Batches, *, total_steps: int, start: int,
                 transform: Callable | None, held_out: tuple | None, validate_every: int | None,
                 score: Callable | None, patience: int | None, scheduler_every: str,
                 checkpoint: str | Path | None, checkpoint_every: int | None,
                 callbacks: Sequence[Callable], show: bool, parallel: Any) -> None:
        if start > total_steps:
            raise CheckpointError(f"the checkpoint is at step {start} but num_steps={total_steps}; "
                                  "pass at least as many steps as were already taken")
        self.run, self.batches, self.total, self.start = run, batches, total_steps, start
        self.transform, self.held_out, self.score = transform, held_out, score
        self.validate_every = validate_every or batches.steps_per_epoch
        self.patience, self.scheduler_every, self.callbacks = patience, scheduler_every, callbacks
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every or max(1, total_steps // 10)
        self.show, self.parallel = show, parallel
        self.rollback = _Rollback(start)
        self.lock = WriterLock(checkpoint if parallel is None or parallel.is_main else None)
        self.lock.acquire()

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
            if self.run.bundled is not None:  # the model checks what the transform made
                batch = tuple(self.run.bundled.validate_batch(*batch))
        scale = (self.batches.size / global_count if self.parallel is None
                 else self.parallel.plate_scale(self.batches.size, global_count))
        return batch, scale

    def _step(self, step: int, batch: tuple) -> float:
        batch, scale = self._batch(batch)
        self.rollback.before(self.run.method, step, self.start)
        self.run.method.begin_step(step)
        first = step == self.start  # data were checked at the boundary; Pyro checks step one
        with pyro.validation_enabled(first and pyro.infer.util.is_validation_enabled()):
            loss = self.run.method.step(batch, scale)
        if not math.isfinite(loss):
            self.rollback.restore()
            self.save(self.rollback.step)
            raise TrainingDiverged(_diverged(loss, step, self.rollback.step, self.checkpoint,
                                             self.run.method),
                                   step, self.result(self.run.method.setup.model,
                                                     self.run.settings["method"], None, False))
        self.rollback.finite()
        if self.run.average is not None:
            self.run.average.update(self.run.method.tensors())
        self.run.losses.append(loss)
        return loss

    def _end_of_period(self, step: int, epoch_end: bool) -> bool:
        """Validation, schedules and checkpoints after ``step``; True to stop (patience)."""
        done, stop = step + 1, False
        metric = None
        if self.held_out is not None and (done % self.validate_every == 0 or done == self.total):
            with self.run.averaged():  # the averages are validated, and kept when best
                metric = _validation_loss(self.run, self.held_out, self.score,
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
            for step, epoch, batch in self.batches.epochs(self.start, self.run.settings["seed"],
                                                         self.total):
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
                stop = any(callback(state) for callback in self.callbacks) or stop
                if stop or self.run.method.converged:
                    self.save(step + 1)
                    return stop
            return False
        finally:
            bar.close()
            if self.run.bundled is not None:  # dropout, batch norm: what the user scores
                self.run.bundled.eval()  # is the evaluation-mode model, however the loop ends

    def leave_parameters(self, restore_best: bool) -> None:
        """The parameters fit returns: the best validated ones (``restore_best``), else the
        averages (``ema_decay``), else the last step's. When they are not the last step's, the
        checkpoint is written again with both: the returned ones, and the training state that
        a resume continues from."""
        run = self.run
        best = run.best if restore_best else None
        if best is None and run.average is None:
            return
        if best is not None and best[1] == len(run.losses) and run.average is None:
            return  # the best is the last step
        run.training_state = _model_state(run.bundled)
        if best is not None:
            restore_state(best[2], run.bundled)  # with averaging, the best averages
        else:
            run.average.apply(run.method.tensors())
        self.save(len(run.losses))

    def result(self, model: Any, name: str, started: float | None, stopped: bool) -> FitResult:
        best, elapsed = self.run.best, self.run.elapsed()
        return FitResult(
            model, self.run.method.guide, self.run.losses, len(self.run.losses),
            time.perf_counter() - started if started is not None else 0.0, name,
            self.run.method.converged, stopped, list(self.run.validation),
            best[1] if best is not None else None, self.batches.size, dict(self.run.settings),
            *(elapsed if elapsed is not None else (None, None)))
