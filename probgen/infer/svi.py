"""probgen.fit: SVI on any Pyro program, with mini-batches, checkpoints and divergence guards."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import pyro.optim
import torch
from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO, config_enumerate
from pyro.infer.autoguide import AutoNormal
from tqdm.auto import tqdm

from probgen.checkpoint import (
    CheckpointError,
    atomic_save,
    load_checkpoint,
    param_store_state,
    restore_param_store,
    rng_state,
    set_rng_state,
)
from probgen.data.validate import as_batch
from probgen.infer.program import DataPlateScale, ProgramInfo, inspect_program
from probgen.models.base import GenerativeModel

__all__ = ["fit", "FitResult", "FitState", "TrainingDiverged"]

ROLLBACK_EVERY = 10  # steps between in-memory snapshots that divergence rolls back to
_LOSSES = {"trace": Trace_ELBO, "trace_enum": TraceEnum_ELBO, "mean_field": TraceMeanField_ELBO}


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


@dataclass(frozen=True)
class FitResult:
    """The outcome of :func:`fit`.

    Fields:
        model: the model program (or bundled model) that was fitted.
        guide: the guide used (the one built for you when ``guide=None``).
        losses: loss per step (negative ELBO estimate for the full data set, in nats).
        num_steps: steps taken in total (including steps before a resume).
        seconds: wall time of this call.
        stopped_early: a callback asked to stop.
        info: the program's sites as probgen read them.
    """

    model: Callable
    guide: Callable
    losses: list[float]
    num_steps: int
    seconds: float
    stopped_early: bool = False
    info: ProgramInfo | None = field(default=None, repr=False)

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """Constrained parameter values from Pyro's param store."""
        store = pyro.get_param_store()
        return {name: store[name].detach().clone() for name in store.keys()}


def _make_optim(optim: Any) -> pyro.optim.PyroOptim:
    if optim is None:
        return pyro.optim.Adam({"lr": 1e-2})
    if isinstance(optim, (int, float)) and not isinstance(optim, bool):
        if optim <= 0:
            raise ValueError(f"learning rate must be > 0, got {optim}")
        return pyro.optim.Adam({"lr": float(optim)})
    if isinstance(optim, dict):
        return pyro.optim.Adam(dict(optim))
    if isinstance(optim, pyro.optim.PyroOptim):
        return optim
    raise TypeError(f"optim must be a learning rate, a dict of Adam options or a pyro.optim "
                    f"optimizer, got {type(optim).__name__}")


_FUSED = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


def _fusable(constructor: Any, args: dict, params: Any) -> bool:
    """Whether torch's fused kernel applies: Adam/AdamW/SGD, no foreach/fused choice made,
    real floating parameters on CPU or CUDA (one kernel for all tensors instead of ~10 ops each).
    """
    return (constructor in _FUSED and "fused" not in args and "foreach" not in args
            and not args.get("differentiable", False)
            and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params))


class _Optimizer:
    """One torch optimizer over every parameter (the fast path), else Pyro's per-parameter ones.

    Pyro's optimizers keep one torch optimizer per tensor; stepping a single optimizer over all
    of them (parameters in name order, so checkpoints line up) is the same algorithm with less
    Python per step, and Adam/AdamW/SGD use torch's fused kernel (``fused=True``) where it
    applies. Per-parameter options (a callable ``optim_args``) or gradient clipping use
    Pyro's optimizer unchanged.
    """

    def __init__(self, pyro_optim: pyro.optim.PyroOptim) -> None:
        self.pyro_optim = pyro_optim
        self.single = (not callable(pyro_optim.pt_optim_args)
                       and getattr(pyro_optim, "pt_clip_args", None) in (None, {}))
        self.torch_optim: torch.optim.Optimizer | None = None
        self.names: list[str] = []
        self.pending_state: dict | None = None

    def step(self, params: dict[str, torch.Tensor]) -> None:
        if not self.single:
            self.pyro_optim(set(params.values()))
            for p in params.values():
                p.grad = None
            return
        new = sorted(name for name in params if name not in set(self.names))
        if new:
            if self.torch_optim is None:
                args = dict(self.pyro_optim.pt_optim_args)
                if _fusable(self.pyro_optim.pt_optim_constructor, args, params.values()):
                    args["fused"] = True
                self.torch_optim = self.pyro_optim.pt_optim_constructor(
                    [params[n] for n in new], **args)
            else:
                self.torch_optim.add_param_group({"params": [params[n] for n in new]})
            self.names += new
            if self.pending_state is not None and self.pending_state["names"] == self.names:
                self.torch_optim.load_state_dict(self.pending_state["state_dict"])
                self.pending_state = None
        self.torch_optim.step()
        for p in params.values():
            p.grad = None

    def get_state(self) -> dict:
        if not self.single:
            return {"kind": "pyro", "state": self.pyro_optim.get_state()}
        state = self.torch_optim.state_dict() if self.torch_optim is not None else None
        return {"kind": "single", "names": list(self.names), "state_dict": state}

    def set_state(self, state: dict) -> None:
        if state.get("kind") == "pyro":
            self.pyro_optim.set_state(state["state"])
        elif state.get("state_dict") is not None:
            self.pending_state = state  # loaded once the same parameters are seen


def _params_with_grads(store: pyro.params.param_store.ParamStoreDict) -> dict[str, torch.Tensor]:
    """The param store's (unconstrained) tensors that this step gave a gradient, one per tensor.

    What Pyro's SVI finds by tracing every ``pyro.param`` site, without the trace: fit clears
    the store's gradients before its first step, so a gradient means this program used it.
    """
    params, seen = {}, set()
    for name, value in store.named_parameters():
        if value.grad is not None and id(value) not in seen:
            seen.add(id(value))
            params[name] = value
    return params


def _traced_params(trace: poutine.Trace) -> dict[str, torch.Tensor]:
    """Every param site of a param-only trace, unconstrained, one per tensor."""
    params, seen = {}, set()
    for site in trace.nodes.values():
        value = site["value"].unconstrained()
        if id(value) not in seen:  # a module's parameter can appear under two names
            seen.add(id(value))
            params[site["name"]] = value
    return params


def _make_loss(loss: Any, info: ProgramInfo, enumerated: bool, num_particles: int) -> ELBO:
    if isinstance(loss, ELBO):
        return loss
    if isinstance(loss, str):
        if loss not in _LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(_LOSSES)} or pass an ELBO")
        cls = _LOSSES[loss]
    elif loss is None:
        cls = TraceEnum_ELBO if enumerated else Trace_ELBO
    else:
        raise TypeError(f"loss must be None, a name or a pyro.infer.ELBO, got {type(loss).__name__}")
    return cls(num_particles=num_particles, vectorize_particles=num_particles > 1,
               max_plate_nesting=info.max_plate_nesting)


def _auto_guide(model: Callable, info: ProgramInfo, full_batch: bool) -> Callable:
    """Empty guide if every latent is enumerable, else AutoNormal over the continuous ones."""
    if info.exact_applies:
        return lambda *args, **kwargs: None
    not_enumerable = sorted(set(info.discrete_latents) - set(info.enumerable))
    if not_enumerable:
        raise ValueError(f"discrete latents {not_enumerable} cannot be enumerated and AutoNormal "
                         "cannot sample them; write a guide for them")
    local = sorted(set(info.continuous_latents) - set(info.global_latents))
    if local and not full_batch:
        raise ValueError(f"latents {local} are per-example and you asked for mini-batches: an "
                         "AutoNormal guide holds one parameter per training example, which "
                         "mini-batching misaligns. Write an amortized guide (an encoder) or fit "
                         "full-batch (batch_size=None)")
    hidden = set(info.discrete_latents)
    return AutoNormal(poutine.block(model, hide_fn=lambda msg: msg["name"] in hidden))


def _checkpoint_state(step: int, losses: list[float], optim: pyro.optim.PyroOptim,
                      bundled: GenerativeModel | None, run_config: dict) -> dict[str, Any]:
    from probgen import __version__

    return {
        "format": "probgen-fit", "format_version": 1, "probgen_version": __version__,
        "step": step, "losses": torch.tensor(losses, dtype=torch.float64),
        "param_store": param_store_state(), "optim": optim.get_state(), "rng": rng_state(),
        "model_state": bundled.state_dict() if bundled is not None else None,
        "model_config": dict(bundled.config) if bundled is not None else None,
        "run": run_config,
    }


def fit(
    model: Callable | GenerativeModel,
    data: Any,
    *,
    guide: Callable | None = None,
    num_steps: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    optim: Any = None,
    loss: Any = None,
    device: str | torch.device | None = None,
    seed: int | None = None,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    callbacks: Sequence[Callable[[FitState], bool | None]] = (),
    num_particles: int = 1,
    data_plate: str | None = None,
    distributed: bool = False,
) -> FitResult:
    r"""Fit any Pyro model/guide pair (or a bundled model) to ``data`` by SVI.

    Maximizes the ELBO Σ_n E_q[log p(x_n, z) - log q(z | x_n)] with mini-batches scaled by N/B
    on the data plate only. Picks TraceEnum_ELBO when discrete latents are summed out, and an
    empty guide (all latents enumerable) or AutoNormal when ``guide=None``.

    Args:
        model: ``model(*batch)``, a Pyro program with a plate over the first data dimension
            sized from its arguments, or a :class:`GenerativeModel`.
        data: a tensor, or a tuple of tensors sharing the first dimension (side data such as
            lengths or labels); each mini-batch is ``tuple(t[idx] for t in data)``.
        num_steps: optimization steps (default 1000 unless ``epochs`` is given).
        epochs: passes over the data, instead of ``num_steps``.
        batch_size: examples per step (default: all).
        optim: learning rate, Adam options dict, or a ``pyro.optim`` optimizer (default Adam 1e-2).
        loss: a ``pyro.infer.ELBO``, ``"trace"``, ``"trace_enum"``, ``"mean_field"`` or None.
        checkpoint: file written atomically every ``checkpoint_every`` steps and at the end;
            with ``resume=True`` training continues from it.
        callbacks: called with a :class:`FitState` after every step; return True to stop.
        distributed: data-parallel over the processes of a torchrun launch: each rank takes
            its slice of every global batch and gradients are averaged, so the result matches
            one process on the same global batch (see :mod:`probgen.infer.distributed`).

    Raises:
        TrainingDiverged: the loss became non-finite; parameters are rolled back to the latest
            snapshot (taken every ``ROLLBACK_EVERY`` = 10 steps, at a finite loss) and saved to
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
    bundled = model if isinstance(model, GenerativeModel) else None
    program = bundled.model if bundled is not None else model
    if not callable(program):
        raise TypeError(f"model must be a Pyro program (a callable) or a GenerativeModel, got "
                        f"{type(model).__name__}")
    batch_all = as_batch(data, model_device=bundled.device if bundled is not None and device is None
                         else None)
    parallel = None
    if distributed:
        from probgen.infer.distributed import DataParallel

        parallel = DataParallel.from_environment()
        device = parallel.device_for(device)
    if device is not None:
        batch_all = tuple(t.to(device) for t in batch_all)
        if bundled is not None:
            bundled.to(device)
    if bundled is not None:
        batch_all = tuple(bundled.validate_batch(*batch_all))
        bundled.train()
    size = int(batch_all[0].shape[0])
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size <= 0):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if batch_size is not None and batch_size > size:
        raise ValueError(f"batch_size={batch_size} exceeds the {size} examples in data; use "
                         "batch_size=None to fit on all of them at once")
    if num_steps is not None and epochs is not None:
        raise ValueError("pass num_steps or epochs, not both")
    for name, value in (("num_steps", num_steps), ("epochs", epochs), ("num_particles", num_particles)):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    batch_size = batch_size or size
    if parallel is not None:
        parallel.check_batch_size(size, batch_size)
    steps_per_epoch = math.ceil(size / batch_size)
    total_steps = num_steps if num_steps is not None else (epochs or 0) * steps_per_epoch or 1000
    base_seed = int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
    if parallel is not None:
        base_seed = parallel.broadcast_seed(base_seed)
    pyro.set_rng_seed(base_seed)

    first = tuple(t[:batch_size] for t in batch_all)
    info = inspect_program(program, first, data_plate=data_plate)
    if guide is None and bundled is not None and bundled.has_guide:
        guide = bundled.guide
    elif guide is None and bundled is not None and getattr(bundled, "autoguide", None) is not None:
        guide = bundled.autoguide
    if guide is None:
        guide = _auto_guide(program, info, full_batch=batch_size == size and parallel is None)
        if bundled is not None and isinstance(guide, torch.nn.Module):
            bundled.autoguide = guide
            # one example row lets probgen.load rebuild the guide's shapes without the data
            bundled.autoguide_example = tuple(t[:1].detach().cpu() for t in first)
    enumerated = bool(info.discrete_latents)
    loss_model = config_enumerate(program, default="parallel") if info.discrete_latents else program
    if loss is None and bundled is not None:
        loss = bundled.default_loss()
    elbo = _make_loss(loss, info, enumerated, num_particles)
    pyro_optim = _Optimizer(_make_optim(optim))
    run_config = {"size": size, "batch_size": batch_size, "seed": base_seed,
                  "num_particles": num_particles}

    def scaled(fn: Callable, factor: float) -> Callable:
        if factor == 1.0:
            return fn
        return DataPlateScale(info.data_plate, factor)(fn)

    losses: list[float] = []
    start_step = 0
    if resume:
        if checkpoint is None:
            raise ValueError("resume=True needs checkpoint=PATH")
        if Path(checkpoint).exists():
            state = load_checkpoint(checkpoint)
            if state["format"] != "probgen-fit":
                raise CheckpointError(f"{checkpoint} is a {state['format']!r} file, not a fit checkpoint")
            saved = state["run"]
            for key in ("size", "batch_size"):
                if saved[key] != run_config[key]:
                    raise CheckpointError(f"checkpoint was written with {key}={saved[key]} but this "
                                          f"run has {key}={run_config[key]}; resume with the same data "
                                          "and settings")
            base_seed = run_config["seed"] = int(saved["seed"])
            with torch.no_grad():  # create the guide's parameters before restoring them
                poutine.trace(guide).get_trace(*first)
            if bundled is not None and state["model_state"] is not None:
                bundled.load_state_dict(state["model_state"])
            restore_param_store(state["param_store"])
            pyro_optim.set_state(state["optim"])
            set_rng_state(state["rng"])
            losses = [float(v) for v in state["losses"]]
            start_step = int(state["step"])
    checkpoint_every = checkpoint_every or max(1, total_steps // 10)
    if parallel is not None:
        parallel.prepare(guide, first, bundled, base_seed, start_step, resumed=start_step > 0)
        whole_shard = tuple(parallel.shard(t) for t in batch_all)

    snapshot_names: list[str] = []  # parameters at last_good_step, whose loss was finite
    snapshot_targets: list[torch.Tensor] = []
    snapshot: list[torch.Tensor] = []
    last_good_step = start_step
    validate_first_step_only = pyro.infer.util.is_validation_enabled()
    store = pyro.get_param_store()
    for _, value in store.named_parameters():
        value.grad = None  # a gradient after a step then means this program used the parameter
    stopped_early = False

    def result() -> FitResult:
        return FitResult(model, guide, losses, len(losses), time.perf_counter() - started,
                         stopped_early, info)

    def save(step: int) -> None:
        if checkpoint is not None and (parallel is None or parallel.is_main):
            atomic_save(_checkpoint_state(step, losses[:step], pyro_optim, bundled, run_config),
                        checkpoint)
        if checkpoint is not None and parallel is not None:
            parallel.barrier()  # the file exists on return, on every rank

    show = progress and (parallel is None or parallel.is_main)
    bar = tqdm(range(start_step, total_steps), disable=not show, desc="fit", leave=False,
               dynamic_ncols=True)
    generator = torch.Generator()
    for step in bar:
        epoch, position = divmod(step, steps_per_epoch)
        if batch_size == size:
            batch = batch_all if parallel is None else whole_shard
            global_count = size
        else:
            order = torch.randperm(size, generator=generator.manual_seed(base_seed + epoch))
            index = order[position * batch_size:(position + 1) * batch_size]
            global_count = len(index)
            if parallel is not None:
                index = parallel.shard(index)
            index = index.to(batch_all[0].device)
            batch = tuple(t[index] for t in batch_all)
        factor = (size / int(batch[0].shape[0]) if parallel is None
                  else parallel.plate_scale(size, global_count))
        # Data were validated at the boundary; Pyro's per-site checks run on the first step.
        with pyro.validation_enabled(validate_first_step_only and step == start_step):
            if parallel is None:
                loss_value = elbo.loss_and_grads(scaled(loss_model, factor), scaled(guide, factor),
                                                 *batch)
                params = _params_with_grads(store)
            else:  # every rank reduces the same parameters, with or without a gradient
                with poutine.trace(param_only=True) as param_capture:
                    loss_value = elbo.loss_and_grads(scaled(loss_model, factor),
                                                     scaled(guide, factor), *batch)
                params = _traced_params(param_capture.trace)
        loss_value = float(loss_value)
        if parallel is not None:  # mean of rank gradients = the single-process gradient
            loss_value = parallel.average_gradients_(params, loss_value)
        if not math.isfinite(loss_value):
            for value in params.values():
                value.grad = None
            with torch.no_grad():
                for target, value in zip(snapshot_targets, snapshot):
                    target.copy_(value)
            save(last_good_step)
            raise TrainingDiverged(
                f"loss became {loss_value} at step {step}; parameters were rolled back to step "
                f"{last_good_step} (snapshots are kept every {ROLLBACK_EVERY} steps, at a finite "
                "loss)"
                f"{f' (saved to {checkpoint})' if checkpoint else ''}. Likely causes: a learning "
                "rate too high (try optim=1e-3), a scale parameter without a positive constraint, "
                "unnormalized data, or a guide proposing values outside the model's support",
                step, result())
        names = list(params)
        if names != snapshot_names:  # new parameters: a fresh snapshot, now
            snapshot_names, snapshot_targets = names, [value.detach() for value in params.values()]
            snapshot = [value.clone() for value in snapshot_targets]
            last_good_step = step
        elif (step - start_step) % ROLLBACK_EVERY == 0:  # a copy per step would cost ~5%
            torch._foreach_copy_(snapshot, snapshot_targets)
            last_good_step = step
        pyro_optim.step(params)
        losses.append(loss_value)
        if show and step % 10 == 0:
            bar.set_postfix(loss=f"{loss_value:.4g}", epoch=epoch)
        if any(callback(FitState(step, epoch, loss_value, losses)) for callback in callbacks):
            stopped_early = True
            save(step + 1)
            break
        if (step + 1) % checkpoint_every == 0 or step + 1 == total_steps:
            save(step + 1)
    bar.close()
    return result()
