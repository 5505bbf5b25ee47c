"""SVI, the default training method: one ELBO gradient step per mini-batch on any Pyro program."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pyro
import pyro.optim
import pyro.poutine.util
import torch
from pyro import poutine
from pyro.infer import (
    ELBO,
    RenyiELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceMeanField_ELBO,
    config_enumerate,
)
from pyro.infer.autoguide import AutoNormal

from probgen.core.model import GenerativeModel
from probgen.core.program import DataPlateScale, ProgramInfo, inspect_program
from probgen.core.support import check_observed_support
from probgen.infer.method import TrainingMethod, TrainingSetup
from probgen.infer.objectives import IWAE, AnnealedELBO

__all__ = ["SVI", "make_loss", "auto_guide", "AUTO_GUIDE_PREFIX"]

LOSSES = {"trace": Trace_ELBO, "trace_enum": TraceEnum_ELBO, "mean_field": TraceMeanField_ELBO,
          "iwae": IWAE}
AUTO_GUIDE_PREFIX = "AutoNormal."
_FUSED = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


def make_loss(loss: Any, info: ProgramInfo, num_particles: int, *, kl_warmup_steps: int = 0,
              free_bits: float = 0.0) -> ELBO:
    """``loss=`` as an ELBO: given, named (``"iwae"``: the IWAE-k bound with k =
    ``num_particles``), or TraceEnum_ELBO when discrete latents are summed out; with KL warm-up
    or free bits, the :class:`AnnealedELBO`."""
    if kl_warmup_steps or free_bits:
        if loss is not None and not isinstance(loss, AnnealedELBO):
            raise ValueError(f"kl_warmup_epochs= and free_bits= shape the ELBO; they do not "
                             f"combine with loss={loss!r} (fit with the ELBO first, then "
                             "fine-tune with loss='iwae' in a second fit)")
        if info.discrete_latents:
            raise ValueError(f"kl_warmup_epochs= and free_bits= need a guide that samples every "
                             f"latent; discrete latents {sorted(info.discrete_latents)} are "
                             "summed out, which the annealed ELBO does not do")
        return AnnealedELBO(kl_warmup_steps, free_bits, num_particles=num_particles)
    if isinstance(loss, ELBO):
        return loss
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)} or pass an ELBO")
        if loss == "iwae":
            if num_particles < 2:
                raise ValueError("loss='iwae' needs num_particles=k >= 2 importance samples "
                                 "(k=1 is the ELBO); e.g. num_particles=50")
            if info.discrete_latents:
                raise ValueError(f"loss='iwae' samples every latent from the guide; discrete "
                                 f"latents {sorted(info.discrete_latents)} are summed out by "
                                 "enumeration, which IWAE does not do")
            return IWAE(num_particles, max_plate_nesting=max(1, info.max_plate_nesting))
        cls = LOSSES[loss]
    elif loss is None:
        cls = TraceEnum_ELBO if info.discrete_latents else Trace_ELBO
    else:
        raise TypeError(f"loss must be None, a name or a pyro.infer.ELBO, got {type(loss).__name__}")
    return cls(num_particles=num_particles, vectorize_particles=num_particles > 1,
               max_plate_nesting=info.max_plate_nesting)


def auto_guide(program: Callable, info: ProgramInfo, full_batch: bool) -> Callable:
    """Empty guide if every latent is enumerable, else a fresh AutoNormal over the continuous ones."""
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
    store = pyro.get_param_store()
    for name in list(store.keys()):  # an AutoNormal picks up stale values of its names
        if name.startswith(AUTO_GUIDE_PREFIX) and name.rsplit(".", 1)[-1] in info.continuous_latents:
            del store[name]
    hidden = set(info.discrete_latents)
    return AutoNormal(poutine.block(program, hide_fn=lambda msg: msg["name"] in hidden))


def _optimizer_args(optim: Any) -> dict[str, Any] | None:
    """Adam options for the fast path (a float or dict ``optim=``, its rate checked by fit),
    else None (a pyro.optim)."""
    if optim is None:
        return {"lr": 1e-2}
    if isinstance(optim, (int, float)) and not isinstance(optim, bool):
        return {"lr": float(optim)}
    if isinstance(optim, dict):
        known = [k for k in inspect.signature(torch.optim.Adam).parameters if k != "params"]
        unknown = sorted(map(str, set(optim) - set(known)))
        if unknown:
            raise ValueError(f"optim has unknown Adam options {unknown}; Adam takes {known} "
                             "(e.g. optim={'lr': 0.01})")
        return dict(optim)
    if isinstance(optim, pyro.optim.PyroOptim):
        return None
    raise TypeError(f"optim must be a learning rate, a dict of Adam options or a pyro.optim "
                    f"optimizer or scheduler, got {type(optim).__name__}")


class _TorchAdam:
    """One torch Adam over every parameter, fused where torch allows: what Pyro's per-tensor
    Adam computes, with one kernel per step. Parameters join in name order as they appear."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args
        self.optimizer: torch.optim.Optimizer | None = None
        self.names: list[str] = []
        self.pending: dict | None = None
        self.lr: float | None = None  # a schedule's rate for this step (None: args["lr"])

    def __call__(self, params: dict[str, torch.Tensor]) -> None:
        new = sorted(name for name in params if name not in set(self.names))
        if self.optimizer is None and not new:
            raise ValueError(
                "the training step gave no parameter a gradient: the program and guide have no "
                "trainable parameters, or they build their nn.Modules anew in every call (Pyro "
                "then keeps the first call's parameters under the pyro.module name and the new "
                "modules never train). Create the modules once, outside the program, and "
                "register them with pyro.module(name, module)")
        if new:
            tensors = [params[n] for n in new]
            if self.optimizer is None:
                args = dict(self.args)
                if "fused" not in args and "foreach" not in args and all(
                        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors):
                    args["fused"] = True
                self.optimizer = torch.optim.Adam(tensors, **args)
            else:
                self.optimizer.add_param_group({"params": tensors})
            self.names += new
            if self.pending is not None and self.pending["names"] == self.names:
                self._load(self.pending["state_dict"])
                self.pending = None
        if self.lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr
        self.optimizer.step()

    def _load(self, state_dict: dict) -> None:
        """Moments from the checkpoint, hyper-parameters (lr, betas, ...) from this run."""
        groups = [{k: v for k, v in group.items() if k != "params"}
                  for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state_dict)
        for group, hyper in zip(self.optimizer.param_groups, groups):
            group.update(hyper)

    def state_dict(self) -> dict:
        return {"kind": "torch", "names": list(self.names),
                "state_dict": self.optimizer.state_dict() if self.optimizer else None}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") == "torch" and state.get("state_dict") is not None:
            self.pending = state  # loaded once the same parameters are seen


class _PyroOptim:
    """A user's ``pyro.optim`` optimizer or LR scheduler, used through Pyro's public API."""

    def __init__(self, optim: pyro.optim.PyroOptim) -> None:
        self.optim = optim

    def __call__(self, params: dict[str, torch.Tensor]) -> None:
        self.optim(params.values())

    def state_dict(self) -> dict:
        return {"kind": "pyro", "state": self.optim.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Moments from the checkpoint; a plain optimizer's hyper-parameters (lr, betas, ...)
        from this run's ``optim_args``, so a resume with a new rate uses it. A scheduler's
        state (its place in the schedule) resumes as saved."""
        if state.get("kind") != "pyro":
            return
        saved = state["state"]
        args = self.optim.pt_optim_args
        if isinstance(args, dict) and not isinstance(self.optim, pyro.optim.PyroLRScheduler):
            saved = {name: {**value, "param_groups": [{**group, **args}
                                                       for group in value["param_groups"]]}
                     for name, value in saved.items()}
        self.optim.set_state(saved)


def _one_per_tensor(named: Any) -> dict[str, torch.Tensor]:
    """``(name, tensor)`` pairs, the first name of each tensor (a module's parameter can appear
    under two names). Over the store's tensors with a gradient (fit clears them before the first
    step), they are the parameters this step used: what Pyro's SVI finds by tracing."""
    params, seen = {}, set()
    for name, value in named:
        if id(value) not in seen:
            seen.add(id(value))
            params[name] = value
    return params


def _check_guide_sites(info: ProgramInfo, guide_trace: poutine.Trace) -> None:
    """A guide must sample every latent the model cannot sum out, and nothing else: Pyro only
    warns, then samples the missing ones from the prior and trains on a wrong ELBO."""
    sampled = {name for name, site in guide_trace.nodes.items()
               if site["type"] == "sample" and not site["is_observed"]
               and not poutine.util.site_is_subsample(site)
               and not site["infer"].get("is_auxiliary")}  # AutoContinuous's joint latent
    needed = set(info.continuous_latents) | (set(info.discrete_latents) - set(info.enumerable))
    missing, extra = sorted(needed - sampled), sorted(sampled - set(info.latents))
    if missing:
        raise ValueError(f"the guide does not sample the model's latent site(s) {missing} (it "
                         f"samples {sorted(sampled) or 'nothing'}); the ELBO would be wrong. "
                         "Name the guide's sample sites exactly as the model's")
    if extra:
        raise ValueError(f"the guide samples {extra}, which the model does not have (the "
                         f"model's latents: {sorted(info.latents) or 'none'}); rename or remove "
                         "them")


def _renamed(optim_state: dict, old: str, new: str) -> dict:
    def rename(name: str) -> str:
        return new + name[len(old):] if name.startswith(old) else name

    if optim_state.get("kind") == "torch":
        return {**optim_state, "names": [rename(n) for n in optim_state["names"]]}
    if optim_state.get("kind") == "pyro":
        return {**optim_state, "state": {rename(k): v for k, v in optim_state["state"].items()}}
    return optim_state


class SVI(TrainingMethod):
    r"""Stochastic variational inference: maximize Σ_n E_q[log p(x_n, z) − log q(z | x_n)] with
    mini-batches scaled by N/B on the data plate only (Hoffman et al., 2013), or the IWAE bound
    (``loss="iwae"``), or the ELBO with KL warm-up and free bits (fit's ``kl_warmup_epochs``,
    ``free_bits``), at a learning rate that may follow fit's ``lr_schedule``.

    Uses TraceEnum_ELBO when discrete latents are summed out, the model's own guide, or an
    AutoNormal (an empty guide when every latent is enumerable) when none is given.
    """

    elbo_options = ("guide", "loss", "num_particles", "lr_schedule", "kl_warmup_epochs",
                    "free_bits")

    def __init__(self, setup: TrainingSetup) -> None:
        super().__init__(setup)
        bundled = setup.model if isinstance(setup.model, GenerativeModel) else None
        self.info = inspect_program(setup.program, setup.example, data_plate=setup.data_plate)
        guide = setup.guide
        if guide is None and bundled is not None and bundled.has_guide:
            guide = bundled.guide
        elif guide is None and bundled is not None and bundled.autoguide is not None:
            guide = bundled.autoguide
        if guide is None:
            guide = auto_guide(setup.program, self.info, full_batch=setup.batch_size ==
                               setup.num_examples and setup.parallel is None)
            if bundled is not None and isinstance(guide, torch.nn.Module):
                bundled.autoguide = guide
                # one example row lets probgen.load rebuild the guide's shapes without the data
                bundled.autoguide_example = tuple(t[:1].detach().cpu() for t in setup.example)
        self._guide = guide
        self.loss_program = (config_enumerate(setup.program, default="parallel")
                             if self.info.discrete_latents else setup.program)
        annealed = bool(setup.kl_warmup_steps or setup.free_bits)  # replaces a default loss
        loss = (setup.loss if setup.loss is not None or bundled is None or annealed
                else bundled.default_loss())
        self.elbo = make_loss(loss, self.info, setup.num_particles,
                              kl_warmup_steps=setup.kl_warmup_steps, free_bits=setup.free_bits)
        args = _optimizer_args(setup.optim)
        if args is None and setup.lr_schedule is not None:
            raise ValueError("lr_schedule= works with optim= a learning rate or Adam options; "
                             "a pyro.optim optimizer or scheduler brings its own schedule")
        self.optimizer = _TorchAdam(args) if args is not None else _PyroOptim(setup.optim)
        self.initial_lr = float(args.get("lr", 1e-3)) if args is not None else None
        self.is_scheduler = isinstance(setup.optim, pyro.optim.PyroLRScheduler)
        self.store = pyro.get_param_store()
        self.params: dict[str, torch.Tensor] = {}
        self.parallel = setup.parallel
        with torch.no_grad(), poutine.block():  # create the guide's parameters now
            guide_trace = poutine.trace(self._guide).get_trace(*setup.example)
        if setup.guide is not None:
            _check_guide_sites(self.info, guide_trace)
        for _, value in self.store.named_parameters():
            value.grad = None  # a gradient after a step then means this program used it

    @property
    def guide(self) -> Callable:
        return self._guide

    def run_settings(self) -> dict[str, Any]:
        return {"discrete_latents": list(self.info.discrete_latents)}  # probgen.load's autoguide

    def check_data(self, tensors: tuple[torch.Tensor, ...]) -> None:
        check_observed_support(self.setup.program, tensors, self.info.data_plate)

    def begin_step(self, step: int) -> None:
        """The step's KL weight (annealed ELBO) and learning rate (``lr_schedule``)."""
        if isinstance(self.elbo, AnnealedELBO):
            self.elbo.step = step
        if self.setup.lr_schedule is not None:
            self.optimizer.lr = self.setup.lr_schedule.lr(step, self.initial_lr)

    def _scaled(self, fn: Callable, factor: float) -> Callable:
        return fn if factor == 1.0 else DataPlateScale(self.info.data_plate, factor)(fn)

    def step(self, batch: tuple[torch.Tensor, ...], scale: float) -> float:
        # IWAE/Rényi bounds take a log-mean-exp over particles per example: N/B must multiply
        # the bound after it, not each particle's log-weight inside it
        after = scale if isinstance(self.elbo, RenyiELBO) and scale != 1.0 else 1.0
        inside = scale / after
        model, guide = self._scaled(self.loss_program, inside), self._scaled(self._guide, inside)
        if self.parallel is None:
            loss = float(self.elbo.loss_and_grads(model, guide, *batch))
            self.params = _one_per_tensor((name, value) for name, value
                                          in self.store.named_parameters() if value.grad is not None)
        else:  # every rank reduces the same parameters, with or without a gradient
            with poutine.trace(param_only=True) as capture:
                loss = float(self.elbo.loss_and_grads(model, guide, *batch))
            self.params = _one_per_tensor((site["name"], site["value"].unconstrained())
                                          for site in capture.trace.nodes.values())
            loss = self.parallel.average_gradients_(self.params, loss)
        if after != 1.0:
            loss *= after
            for value in self.params.values():
                value.grad.mul_(after)
        if loss == loss and abs(loss) != float("inf"):
            self.optimizer(self.params)
        for value in self.params.values():
            value.grad = None
        return loss

    def tensors(self) -> list[torch.Tensor]:
        return list(_one_per_tensor(self.store.named_parameters()).values())

    def validation_loss(self, batch: tuple[torch.Tensor, ...]) -> float:
        return float(self.elbo.loss(self.loss_program, self._guide, *batch)) / len(batch[0])

    def end_epoch(self, metric: float | None) -> None:
        if not self.is_scheduler:
            return
        plateau = any(isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau)
                      for s in self.setup.optim.optim_objs.values())
        if plateau:
            if metric is not None:
                self.setup.optim.step(metric)
        else:
            self.setup.optim.step()

    def state_dict(self) -> dict[str, Any]:
        bundled = self.setup.model if isinstance(self.setup.model, GenerativeModel) else None
        return {"optim": self.optimizer.state_dict(),
                "prefix": bundled.pyro_name + "$$$" if bundled is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The optimizer's state, its parameter names moved to this model instance's prefix
        (a bundled model's names carry a per-process instance number)."""
        bundled = self.setup.model if isinstance(self.setup.model, GenerativeModel) else None
        old, new = state.get("prefix"), bundled.pyro_name + "$$$" if bundled is not None else None
        optim = state["optim"]
        if old and new and old != new:
            optim = _renamed(optim, old, new)
        self.optimizer.load_state_dict(optim)
