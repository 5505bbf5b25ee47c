"""probgen.fit: the one trainer. Batching, schedules, validation, rollback, resume, checkpoints and
callbacks around a training method (SVI by default; a family's EM, Baum-Welch, CD, ...)."""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch

from probgen.core import scoring
from probgen.core.checkpoint import check_output_path
from probgen.core.devices import check_device
from probgen.core.dtypes import cast_floats, floats_to_default_dtype, program_dtype
from probgen.core.model import GenerativeModel, check_numpy_range
from probgen.core.params import (
    drop_parameter,
    example_rows,
    load_into_module,
    param_trace,
    stale_module_parameters,
)
from probgen.core.result import data_fingerprint
from probgen.core.validate import (
    as_batch,
    check_finite,
    check_num_samples,
    check_option,
    check_seed,
    check_size,
    is_number,
)
from probgen.infer.averaging import ParameterAverage
from probgen.infer.batches import Batches, positive_int
from probgen.infer.loop import ROLLBACK_EVERY, Loop, Run
from probgen.infer.method import TrainingMethod, TrainingSetup
from probgen.infer.result import FitResult, FitState, TrainingDiverged
from probgen.infer.schedules import LRSchedule
from probgen.infer.svi import SVI

__all__ = ["fit", "FitResult", "FitState", "TrainingDiverged", "GENERIC_METHODS", "ROLLBACK_EVERY",
           "MAX_STEPS"]

GENERIC_METHODS: dict[str, type[TrainingMethod]] = {"svi": SVI}
MAX_STEPS = 10**9  # more steps than any run finishes: a larger count is a typo


def _choose_method(model: Any, bundled: GenerativeModel | None,
                   method: str | type[TrainingMethod] | None) -> tuple[str, type]:
    declared = dict(GENERIC_METHODS, **(bundled.methods() if bundled is not None else {}))
    if isinstance(method, type) and issubclass(method, TrainingMethod):
        return method.__name__.lower(), method
    name = method or (bundled.default_method if bundled is not None else "svi")
    if name not in declared:
        raise ValueError(f"unknown method {name!r} for {type(model).__name__}; choose one of "
                         f"{sorted(declared)}")
    return name, declared[name]


def _prepare_data(bundled: GenerativeModel | None, program: Callable, device: Any, *,
                  model_checks: bool = True) -> Callable[[Any], tuple]:
    """Checks and converts every batch: NumPy/lists to tensors, floats to the program's
    parameter dtype (found once), the device, then a bundled model's own validation (unless
    ``model_checks=False``: a ``transform`` runs first and the model checks what it makes)."""
    found: dict[str, torch.dtype | None] = {}

    def prepare(batch: Any) -> tuple:
        check_numpy_range(batch)
        batch = as_batch(floats_to_default_dtype(batch),
                         finite=bundled is None or not bundled.checks_padding)
        if device is not None:
            batch = tuple(t.to(device) for t in batch)
        if bundled is not None:
            if model_checks:
                return tuple(bundled.validate_batch(*batch))
            return cast_floats(batch, bundled.dtype)
        if "dtype" not in found:
            found["dtype"] = program_dtype(program, batch)
        return cast_floats(batch, found["dtype"])
    return prepare


def _fresh_parameters(program: Callable, guide: Callable | None, example: tuple, *,
                      keep_values: bool) -> list[str] | None:
    """Make this run's parameters its own, so one seed gives one result: a trace of ``program``
    (and ``guide``) on a scratch store names what the run reuses; plain ``pyro.param`` values of
    an earlier run are dropped, and so is an entry an earlier network left under a name this
    run's ``pyro.module`` registers a new network with (the new one trains). Module parameters
    the store holds are the model's and stay. With ``keep_values`` (``warm_start``, ``resume``)
    values stay, and a new network takes the stored ones. Returns the parameter names, which a
    resume compares with the checkpoint's (None when the trace failed)."""
    try:
        trace = param_trace(program, guide, example)
    except Exception:  # noqa: BLE001 - the first real trace reports it in the user's terms
        return None
    names = sorted(str(name) for name in trace.nodes)
    for name, parameter in stale_module_parameters(trace).items():
        if keep_values:
            load_into_module(name, parameter)
        else:
            drop_parameter(name)
    if keep_values:
        return names
    store = pyro.get_param_store()
    for name in trace.nodes:
        if name in store.keys() and not isinstance(store._params[name], torch.nn.Parameter):
            drop_parameter(name)
    return names


def fit(
    model: Callable | GenerativeModel,
    data: Any,
    *,
    # data: what each step sees
    batch_size: int | None = None, num_examples: int | None = None, shuffle: bool = True,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    data_plate: str | None = None,
    # objective: what a step optimizes (loss .. free_bits: SVI's ELBO)
    method: str | type[TrainingMethod] | None = None, guide: Callable | None = None,
    loss: Any = None, num_particles: int = 1, kl_warmup_epochs: float | None = None,
    free_bits: float = 0.0,
    # optimizer: how long, how fast
    num_steps: int | None = None, epochs: int | None = None, optim: Any = None,
    lr_schedule: str | None = None, final_lr: float | None = None,
    scheduler_every: str = "epoch", ema_decay: float | None = None,
    # validation: held-out scores, early stopping
    validation: Any = None, validate_every: int | None = None,
    validation_estimator: str | Callable | None = None, patience: int | None = None,
    restore_best: bool = True,
    # checkpointing
    checkpoint: str | Path | None = None, checkpoint_every: int | None = None,
    resume: bool | str = False, warm_start: bool = False,
    # runtime
    seed: int | None = None, device: str | torch.device | None = None,
    threads: int | None = None, distributed: bool = False, progress: bool | None = None,
    callbacks: Sequence[Callable[[FitState], bool | None]] = (),
    **options: Any,
) -> FitResult:
    r"""Fit any Pyro program (or a bundled model) to ``data``; every family, every method.

    SVI maximizes Σ_n E_q[log p(x_n, z) − log q(z | x_n)] with mini-batches scaled by N/B on the
    data plate; a family's own method (``method="em"``, ``"baum_welch"``, ``"cd"``, ...) runs
    inside the same loop with the same arguments and result. Counts may be NumPy integers.

    Args (in groups: data, objective, optimizer, validation, checkpointing, runtime):
        model: ``model(*batch)``, a Pyro program with a plate over the first data dimension
            sized from its arguments, or a bundled :class:`GenerativeModel`.
        data: a tensor (or NumPy array), a tuple of tensors sharing the first dimension (side
            data such as lengths or labels), a ``torch.utils.data.Dataset``, or a
            ``DataLoader``/iterable of batches (then ``num_examples`` = N if it has no dataset);
            ``batch_size``: examples per step (default: all), in a new order every epoch unless
            ``shuffle=False``; ``data_plate``: the plate over examples (default: found by
            inspecting the program).
        transform: applied to each mini-batch's data tensor before the step (dynamic
            binarization, dequantization noise); it draws from torch's RNG, which fit seeds
            and checkpoints, so a resumed run repeats it.
        method: ``"svi"`` or a method the family declares (default: its ``default_method``);
            ``options``: the method's own (e.g. ``tol`` for EM, ``k`` for CD).
        guide, loss, num_particles: SVI's q (default: the model's, or an AutoNormal) and
            objective: a ``pyro.infer.ELBO``, or ``"trace"``, ``"mean_field"``,
            ``"trace_enum"``, or ``"iwae"`` (IWAE-k, k = ``num_particles``); with ``lr_schedule``,
            ``kl_warmup_epochs``, ``free_bits``: SVI's ``elbo_options``, other methods refuse them.
        kl_warmup_epochs, free_bits: the ELBO's KL term weighted by β rising linearly from 0 to
            1 over this many epochs, and floored at ``free_bits`` nats per latent dimension and
            example, per latent site; training only (validation reports the true ELBO).
        num_steps, epochs: how long (default 1000 steps, at most ``MAX_STEPS`` = 10**9).
        optim: learning rate (a finite positive number), Adam options dict, or a ``pyro.optim``
            optimizer or LR scheduler (stepped once per epoch, or per step with
            ``scheduler_every="step"``; ``ReduceLROnPlateau`` gets the validation loss).
        lr_schedule, final_lr: ``"cosine"``, ``"linear"`` or ``"exponential"`` from ``optim``'s
            rate to ``final_lr`` (default: 1/100 of it) over the run's steps, set every step.
        ema_decay: keep θ̄_t = d θ̄_{t−1} + (1 − d) θ_t (Polyak averaging; d ramps up as
            (1 + t)/(10 + t) early on); validation, ``restore_best`` and the returned
            parameters use θ̄, training steps θ. Typical d: 0.999 (a horizon of ~1000 steps).
        validation: held-out data scored every ``validate_every`` steps (default: once per
            epoch) with the method's own loss per example, or ``-evaluate(...).mean`` with
            ``validation_estimator`` (an estimator's name, or ``score(model, batch, guide)``
            giving log-likelihoods per example); ``patience`` validations without improvement
            stop the run; ``restore_best`` puts back the best-scoring parameters at the end.
        checkpoint: file written atomically every ``checkpoint_every`` steps and at the end;
            ``resume=True`` continues from it (a new ``optim`` learning rate applies; another
            program, model configuration, method, objective, batch size or explicit ``seed`` is
            refused, naming what differs).
        seed: seeds every random stream; parameters that ``pyro.param`` creates start fresh
            unless ``warm_start=True`` (a bundled model's modules keep their values; a network
            registered with ``pyro.module`` under an earlier run's name then starts from it).
        threads: torch's CPU threads during the run, restored after (default: as they are).
        distributed: data-parallel over the processes of a torchrun launch.
        progress: a progress bar on stderr; None (default) shows it only when stderr is a
            terminal, True always. ``callbacks``: called with a :class:`FitState` after every
            step; return True to stop.

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
    _check_callables(guide, transform, callbacks)
    # Python ints before anything is stored: a NumPy integer in a checkpoint's settings makes
    # it unloadable with weights_only=True.
    num_steps, epochs = _steps("num_steps", num_steps), _steps("epochs", epochs)
    batch_size, checkpoint_every, patience, validate_every = (
        positive_int(name, value, numpy=True) for name, value in (
            ("batch_size", batch_size), ("checkpoint_every", checkpoint_every),
            ("patience", patience), ("validate_every", validate_every)))
    num_particles = positive_int("num_particles", num_particles, allow_none=False, numpy=True)
    seed, threads = check_seed(seed), _threads(threads)
    optim = _checked_optim(optim)
    final_lr = None if final_lr is None else check_finite("final_lr", final_lr, nonnegative=True)
    free_bits = check_finite("free_bits", free_bits, nonnegative=True)
    kl_warmup_epochs = (None if kl_warmup_epochs is None else
                        check_finite("kl_warmup_epochs", kl_warmup_epochs, nonnegative=True))
    ema_decay = _ema_decay(ema_decay)
    shuffle, restore_best, warm_start = (_flag(flag, value) for flag, value in (
        ("shuffle", shuffle), ("restore_best", restore_best), ("warm_start", warm_start)))
    if progress is not None:
        progress = _flag("progress", progress, none="None (a bar only on a terminal)")
    score = _validation_score(model, validation_estimator)
    _check_checkpoint(checkpoint)
    device = check_device(device)
    name, method_class = _choose_method(model, bundled, method)
    parallel = _parallel(distributed)
    device = parallel.device_for(device) if parallel is not None else device
    if device is not None and bundled is not None:
        bundled.to(device)
    prepare = _prepare_data(bundled, program, device)
    batches = Batches(data, batch_size, num_examples, shuffle, prepare if transform is None else
                      _prepare_data(bundled, program, device, model_checks=False))
    total_steps = _total_steps(num_steps, epochs, batches.steps_per_epoch, method_class, batch_size)
    _check_options(method_class, options, scheduler_every)
    _check_particles(num_particles, batches)
    if lr_schedule is None and final_lr is not None:
        raise ValueError("final_lr= needs lr_schedule= ('cosine', 'linear' or 'exponential')")
    schedule = LRSchedule(lr_schedule, final_lr, total_steps) if lr_schedule is not None else None
    average = _average(ema_decay, method_class)
    held_out = prepare(as_batch(validation, name="validation")) if validation is not None else None
    seed_given = seed is not None
    with _num_threads(threads):
        seed = _seed(seed, parallel)
        if bundled is not None:
            bundled.train()
        parameter_names = None
        if bundled is None:  # a bundled model owns its modules
            parameter_names = _fresh_parameters(program, guide, batches.first,
                                                keep_values=bool(warm_start or resume))
        setup = TrainingSetup(
            model=model, program=program, guide=guide, example=batches.first,
            num_examples=batches.size, batch_size=batches.batch_size, optim=optim, loss=loss,
            num_particles=num_particles, data_plate=data_plate, options=dict(options),
            parallel=parallel, data=batches.tensors if batches.loader is None else None,
            lr_schedule=schedule, free_bits=float(free_bits),
            kl_warmup_steps=_warmup_steps(kl_warmup_epochs, batches.steps_per_epoch))
        run = _start_run(method_class(setup), name, batches, seed, check_support=transform is None,
                         fingerprint=checkpoint is not None)
        run.settings.update(loss=_describe_loss(loss), ema_decay=ema_decay, threads=threads)
        if parameter_names is not None:
            run.settings["parameters"] = parameter_names
        run.seed_given, run.average = seed_given, average
        pyro.set_rng_seed(seed)  # training's stream starts at the seed, whatever setup drew
        start = run.load(Path(checkpoint), batches.first) if _resuming(resume, checkpoint) else 0
        if parallel is not None:
            parallel.check_batch_size(batches.size, batches.batch_size)
            parallel.prepare(run.method.guide, batches.first, bundled, run.settings["seed"],
                             start, resumed=start > 0)
        loop = Loop(run, batches, total_steps=total_steps, start=start, transform=transform,
                    held_out=held_out, validate_every=validate_every, score=score,
                    patience=patience, scheduler_every=scheduler_every, checkpoint=checkpoint,
                    checkpoint_every=checkpoint_every, callbacks=callbacks, parallel=parallel,
                    show=_show_progress(progress) and (parallel is None or parallel.is_main))
        try:
            stopped = loop.run_steps()
        finally:
            run.method.finish()
            loop.lock.release()
        loop.leave_parameters(restore_best)  # the best (or averages); the checkpoint keeps both
    return loop.result(model, name, started, stopped)


# --- the pieces fit is made of -----------------------------------------------------------------
def _unpack_model(model: Any) -> tuple[GenerativeModel | None, Callable]:
    bundled = model if isinstance(model, GenerativeModel) else None
    program = bundled.model if bundled is not None else model
    if not callable(program):
        raise TypeError(f"model must be a Pyro program (a callable) or a GenerativeModel, got "
                        f"{type(model).__name__}")
    return bundled, program


def _check_callables(guide: Any, transform: Any, callbacks: Any) -> None:
    for name, value, kind in (("guide", guide, "a Pyro program (a callable) or None"),
                              ("transform", transform, "a callable applied to each batch (or None)")):
        if value is not None and not callable(value):
            raise TypeError(f"{name} must be {kind}, got {type(value).__name__}")
    if callable(callbacks) or isinstance(callbacks, str) or not isinstance(callbacks, Sequence):
        raise TypeError(f"callbacks must be a list of callables, got {type(callbacks).__name__}")
    for i, callback in enumerate(callbacks):
        if not callable(callback):
            raise TypeError(f"callbacks[{i}] must be a callable taking a FitState, got "
                            f"{type(callback).__name__}")


def _check_checkpoint(checkpoint: str | Path | None) -> None:
    if checkpoint is not None:
        check_output_path("checkpoint", checkpoint)
        if Path(checkpoint).is_dir():
            raise ValueError(f"checkpoint={str(checkpoint)!r} is a folder; pass a file path "
                             "inside it, e.g. checkpoint='run/fit.pt'")


def _validation_score(model: Any, estimator: Any) -> Callable | None:
    """``validation_estimator`` as ``score(model, batch, guide, seed=) -> log p per example``:
    a name the estimators registered in :mod:`probgen.core.scoring` take, or a callable
    ``score(model, batch, guide)``; None: the method's own validation loss."""
    if estimator is None:
        return None
    if callable(estimator):
        return lambda model, batch, guide, seed: estimator(model, batch, guide)
    name = check_option("validation_estimator", estimator, scoring.estimator_names(model))
    return functools.partial(scoring.scorer(), estimator=name)


def _threads(threads: Any) -> int | None:
    """``threads`` as a Python int in [1, 4 × the CPU count] (NumPy integers too), or None."""
    limit = 4 * (os.cpu_count() or 1)
    if threads is not None and (not isinstance(threads, (int, np.integer)) or isinstance(
            threads, bool) or not 1 <= threads <= limit):
        raise ValueError(f"threads must be a whole number from 1 to {limit} (4 × this machine's "
                         f"{os.cpu_count()} CPUs) or None, got {threads!r}; e.g. threads=4")
    return None if threads is None else int(threads)


@contextlib.contextmanager
def _num_threads(threads: int | None) -> Any:
    """torch's CPU threads set to ``threads`` for the block (None: left as they are)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _parallel(distributed: bool) -> Any:
    if not distributed:
        return None
    from probgen.infer.distributed import DataParallel  # torch.distributed: only when asked

    return DataParallel.from_environment()


def _total_steps(num_steps: int | None, epochs: int | None, steps_per_epoch: int,
                 method_class: type[TrainingMethod], batch_size: int | None) -> int:
    if num_steps is not None and epochs is not None:
        raise ValueError("pass num_steps or epochs, not both")
    if method_class.full_batch and batch_size is not None:
        raise ValueError(f"method {method_class.__name__} takes all the data at every step; "
                         "leave batch_size=None")
    total = num_steps if num_steps is not None else (epochs or 0) * steps_per_epoch or 1000
    if total > MAX_STEPS:
        raise ValueError(f"epochs={epochs:,} make {total:,} steps ({steps_per_epoch:,} per epoch), "
                         f"over the limit of {MAX_STEPS:,}; pass fewer epochs")
    return total


def _steps(name: str, value: Any) -> int | None:
    """``num_steps``/``epochs`` as a Python int (NumPy integers too), at most ``MAX_STEPS``."""
    if value is None:
        return None
    positive_int(name, value, numpy=True)
    return check_size(name, value, maximum=MAX_STEPS,
                      fix=f"pass the number you mean, e.g. {name}=10_000")


def _learning_rate(name: str, value: Any, example: str) -> float:
    if not is_number(value) or not math.isfinite(float(value)) or not float(value) > 0:
        raise ValueError(f"learning rate must be a finite positive number, got "
                         f"{float(value) if is_number(value) else repr(value)} ({name}); pass "
                         f"e.g. {example}")
    return float(value)


def _checked_optim(optim: Any) -> Any:
    """A learning rate (Python or NumPy number) as a finite positive float, a dict of Adam
    options with its ``lr`` checked the same way; anything else is the method's to check."""
    if is_number(optim):
        return _learning_rate("optim", optim, "optim=1e-3")
    if isinstance(optim, dict) and "lr" in optim:
        return {**optim, "lr": _learning_rate("optim['lr']", optim["lr"], "optim={'lr': 1e-3}")}
    return optim


def _ema_decay(ema_decay: Any) -> float | None:
    """``ema_decay`` as a float in (0, 1) (NumPy scalars too); NaN, Inf, booleans refused."""
    if ema_decay is None:
        return None
    if not is_number(ema_decay) or not 0 < float(ema_decay) < 1:
        raise ValueError(f"ema_decay must be a number in (0, 1), got {ema_decay!r}; e.g. "
                         "ema_decay=0.999 (an average over about the last 1000 steps)")
    return float(ema_decay)


def _flag(name: str, value: Any, *, none: str = "") -> bool:
    """``value`` as a bool: True/False (NumPy booleans too); a string or a number is refused."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    choices = f"True, False or {none}" if none else "True or False"
    raise ValueError(f"{name} must be {choices}, got {value!r}")


def _describe_loss(loss: Any) -> str | None:
    """The objective as plain data for the run's settings: what a resume must match."""
    return loss if loss is None or isinstance(loss, str) else type(loss).__name__


def _check_particles(num_particles: int, batches: Batches) -> None:
    """Each particle copies the batch: ``num_particles × batch × values`` must fit in memory."""
    per_particle = batches.batch_size * max(int(batches.tensors[0][0].numel()), 1)
    check_num_samples("num_particles", num_particles, per_sample=per_particle,
                      fix="each particle copies the batch: use at most {largest} particles or a "
                          "smaller batch_size")


def _check_options(method_class: type[TrainingMethod], options: dict, scheduler_every: str
                   ) -> None:
    unknown = sorted(set(options) - set(method_class.options))
    if unknown:
        raise TypeError(f"unexpected options {unknown} for method {method_class.__name__}; it "
                        f"takes {list(method_class.options) or 'none'}")
    if scheduler_every not in ("epoch", "step"):
        raise ValueError(f"scheduler_every must be 'epoch' or 'step', got {scheduler_every!r}")


def _start_run(method: TrainingMethod, name: str, batches: Batches, seed: int, *,
               check_support: bool, fingerprint: bool) -> Run:
    """The run's settings (what a resume must match) and the last boundary check. The data's
    fingerprint is taken for a run with a checkpoint, the one reader (a resume checks it): a
    SHA-1 over every training byte costs ~5% of a one-epoch MNIST VAE fit."""
    bundled = method.setup.model if isinstance(method.setup.model, GenerativeModel) else None
    settings = {"size": batches.size, "batch_size": batches.batch_size, "seed": seed,
                "method": name, "num_particles": method.setup.num_particles,
                "data_id": (data_fingerprint(*batches.tensors)
                            if batches.loader is None and fingerprint else None),
                "model": type(bundled).__name__ if bundled is not None else "program"}
    settings.update(method.run_settings())
    if bundled is None and check_support:  # a bundled model checks in validate_batch
        method.check_data(batches.tensors)
    if bundled is None:  # probgen.load traces the program on them to refill its nn.Modules
        settings["example"] = example_rows(batches.first)
    return Run(method, bundled, settings)


def _average(ema_decay: float | None,
             method_class: type[TrainingMethod]) -> ParameterAverage | None:
    if ema_decay is None:
        return None
    if not method_class.uses_optim:
        raise TypeError(f"{method_class.__name__} has closed-form updates; ema_decay= averages "
                        "the parameters of a gradient method (leave it None)")
    return ParameterAverage(ema_decay)


def _warmup_steps(kl_warmup_epochs: float | None, steps_per_epoch: int) -> int:
    """``kl_warmup_epochs`` (checked finite and >= 0 by fit) in steps."""
    return max(1, round(kl_warmup_epochs * steps_per_epoch)) if kl_warmup_epochs else 0


def _show_progress(progress: bool | None) -> bool:
    """``progress=None``: a bar only when stderr (tqdm's stream) is a terminal, not in logs."""
    return sys.stderr.isatty() if progress is None else bool(progress)


def _seed(seed: int | None, parallel: Any) -> int:
    """The run's seed (checked by fit), or one drawn at random."""
    base = int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
    if parallel is not None:
        base = parallel.broadcast_seed(base)
    pyro.set_rng_seed(base)
    return base


def _resuming(resume: bool | str, checkpoint: str | Path | None) -> bool:
    """``resume=True``: the checkpoint must exist; ``resume="if_exists"``: continue when it does,
    start fresh when it does not (a job that restarts itself)."""
    if resume is False or isinstance(resume, np.bool_) and not resume:
        return False
    if not (resume is True or isinstance(resume, np.bool_) or resume == "if_exists"):
        raise ValueError(f"resume must be True, False or 'if_exists', got {resume!r}")
    if checkpoint is None:
        raise ValueError("resume=True needs checkpoint=PATH")
    if not Path(checkpoint).exists():
        if resume == "if_exists":
            return False
        raise FileNotFoundError(f"resume=True but there is no checkpoint at {checkpoint}; start "
                                "a new run without resume=True (or pass resume='if_exists')")
    return True


class _CallableModule(types.ModuleType):
    """This module, callable as :func:`fit`: ``probgen.fit(...)`` and ``probgen.infer.fit(...)``
    train, while ``import probgen.infer.fit`` and ``probgen.infer.fit.TrainingDiverged`` still
    reach the module (a function of the same name would hide it)."""

    def __call__(self, *args: Any, **kwargs: Any) -> FitResult:
        return fit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
__signature__ = inspect.signature(fit)  # what help() and inspect show for the call
