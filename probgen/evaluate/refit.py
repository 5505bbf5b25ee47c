"""Held-out bounds with per-example (non-amortized) guides: fit fresh local variational
parameters for the test examples, every model parameter frozen, then bound log p(x) with them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyro
import pyro.optim
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, config_enumerate
from pyro.infer.autoguide import AutoGuide, AutoGuideList

from probgen.core.program import ProgramInfo

__all__ = ["RefitSettings", "holds_training_examples", "refit_local_guide"]


@dataclass(frozen=True)
class RefitSettings:
    """How local variational parameters are fitted for held-out examples."""

    num_steps: int = 1000
    lr: float = 0.02
    seed: int = 0

    def as_dict(self, guide: Callable) -> dict:
        return {"guide": type(guide).__name__, "num_steps": self.num_steps, "lr": self.lr,
                "seed": self.seed, "model_parameters": "frozen"}


def holds_training_examples(guide: Callable | None, info: ProgramInfo) -> bool:
    """An autoguide over a program with per-example latents: one parameter per training example,
    which cannot score other examples (Pyro's AutoNormal, AutoDelta, AutoDiagonalNormal, ...)."""
    local = set(info.continuous_latents) - set(info.global_latents)
    return (isinstance(guide, AutoGuide) and not isinstance(guide, AutoGuideList)
            and bool(local))


@contextmanager
def _scratch_param_store(names: list[str]) -> Iterator[None]:
    """Hide ``names`` from the param store while the block runs; restore the store after."""
    store = pyro.get_param_store()
    saved = store.get_state()
    try:
        for name in names:
            if name in store:
                del store[name]
        yield
    finally:
        store.set_state(saved)


@contextmanager
def refit_local_guide(program: Callable, guide: AutoGuide, batch: tuple[torch.Tensor, ...],
                      info: ProgramInfo, settings: RefitSettings) -> Iterator[AutoGuide]:
    """A fresh guide of ``guide``'s class fitted to ``batch`` by SVI with the model's parameters
    frozen (hidden from the optimizer), valid inside the ``with`` block only: the trained guide's
    parameters are restored when it exits."""
    hidden = set(info.discrete_latents)
    prototype = poutine.block(program, hide_fn=lambda msg: msg["name"] in hidden)
    prefix = f"{type(guide).__name__}."
    store = pyro.get_param_store()
    with _scratch_param_store([n for n in store.keys() if n.startswith(prefix)]):
        fresh = type(guide)(prototype)
        frozen_model = poutine.block(program, hide_types=["param"])
        loss = Trace_ELBO()
        if hidden:  # discrete latents the guide leaves out are summed out
            frozen_model = config_enumerate(frozen_model, default="parallel")
            loss = TraceEnum_ELBO(max_plate_nesting=info.max_plate_nesting)
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            pyro.set_rng_seed(settings.seed)
            svi = SVI(frozen_model, fresh, pyro.optim.Adam({"lr": settings.lr}), loss)
            for _ in range(settings.num_steps):
                svi.step(*batch)
        yield fresh
