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
from pyro.infer.autoguide import AutoDelta, AutoGuide, AutoGuideList, AutoNormal

from probgen.core.program import ProgramInfo

__all__ = ["RefitSettings", "holds_training_examples", "local_guide_class", "refit_local_guide"]


@dataclass(frozen=True)
class RefitSettings:
    """How local variational parameters are fitted for held-out examples."""

    num_steps: int = 1000
    lr: float = 0.02
    seed: int = 0

    def as_dict(self, guide: Callable | None) -> dict:
        return {"guide": local_guide_class(guide).__name__, "num_steps": self.num_steps,
                "lr": self.lr, "seed": self.seed, "model_parameters": "frozen"}


def holds_training_examples(guide: Callable | None, info: ProgramInfo) -> bool:
    """An autoguide over a program with per-example latents: one parameter per training example,
    which cannot score other examples (Pyro's AutoNormal, AutoDelta, AutoDiagonalNormal, ...)."""
    local = set(info.continuous_latents) - set(info.global_latents)
    return (isinstance(guide, AutoGuide) and not isinstance(guide, AutoGuideList)
            and bool(local))


def local_guide_class(guide: Callable | None) -> type[AutoGuide]:
    """The autoguide class refit on held-out rows: the trained guide's, except that a point mass
    (``AutoDelta``) or no guide gets an ``AutoNormal``: an importance proposal needs a density."""
    if isinstance(guide, AutoGuide) and not isinstance(guide, AutoDelta):
        return type(guide)
    return AutoNormal


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
def refit_local_guide(program: Callable, guide: Callable | None, batch: tuple[torch.Tensor, ...],
                      info: ProgramInfo, settings: RefitSettings) -> Iterator[AutoGuide]:
    """A fresh autoguide (:func:`local_guide_class` of ``guide``) fitted to ``batch`` by SVI with
    the model's parameters frozen (hidden from the optimizer), valid inside the ``with`` block
    only: the param store, the trained guide's parameters included, is restored when it exits.

    ``program`` may fix its global latents (observed sites are left out of the fresh guide): a
    program that sets them to a random posterior draw at each call fits q(z_i | x_i) to the
    posterior average of p(z_i | x_i, θ)."""
    hidden = set(info.discrete_latents)
    prototype = poutine.block(program, hide_fn=lambda msg: msg["name"] in hidden)
    guide_class = local_guide_class(guide)
    prefix = f"{guide_class.__name__}."
    store = pyro.get_param_store()
    with _scratch_param_store([n for n in store.keys() if n.startswith(prefix)]):
        fresh = guide_class(prototype)
        frozen_model = poutine.block(program, hide_types=["param"])
        loss = Trace_ELBO()
        if hidden:  # discrete latents the guide leaves out are summed out
            frozen_model = config_enumerate(frozen_model, default="parallel")
            loss = TraceEnum_ELBO(max_plate_nesting=info.max_plate_nesting)
        # the program was validated when inspected; per-step checks would only slow the refit
        with torch.random.fork_rng(devices=[]), torch.enable_grad(), \
                pyro.validation_enabled(False):
            pyro.set_rng_seed(settings.seed)
            svi = SVI(frozen_model, fresh, pyro.optim.Adam({"lr": settings.lr}), loss)
            for _ in range(settings.num_steps):
                svi.step(*batch)
        yield fresh
