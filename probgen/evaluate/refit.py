"""Held-out bounds with per-example (non-amortized) guides: fit fresh local variational
parameters for the test examples, every model parameter frozen, then bound log p(x) with them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoDelta, AutoGuide, AutoGuideList, AutoNormal

from probgen.core.program import ProgramInfo
from probgen.infer.fit import fit

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


def _hidden_from_training(msg: dict) -> bool:
    """Model parameters (frozen) and fixed sites (masked: nothing in the ELBO) are not the
    refit's business."""
    return msg["type"] == "param" or (msg["type"] == "sample" and msg.get("is_observed")
                                      and msg.get("mask") is False)


@contextmanager
def _frozen(program: Callable, batch: tuple[torch.Tensor, ...]) -> Iterator[None]:
    """The parameters ``program`` uses take no gradient inside the block (fit trains the rest)."""
    with torch.no_grad():
        trace = poutine.trace(program, param_only=True).get_trace(*batch)
    values = {id(site["value"].unconstrained()): site["value"].unconstrained()
              for site in trace.nodes.values()}
    trainable = [value for value in values.values() if value.requires_grad]
    for value in trainable:
        value.requires_grad_(False)
    try:
        yield
    finally:
        for value in trainable:
            value.requires_grad_(True)


@contextmanager
def refit_local_guide(program: Callable, guide: Callable | None, batch: tuple[torch.Tensor, ...],
                      info: ProgramInfo, settings: RefitSettings) -> Iterator[AutoGuide]:
    """A fresh autoguide (:func:`local_guide_class` of ``guide``) fitted to ``batch`` by
    :func:`probgen.fit` (SVI, full batch, Adam) with the model's parameters frozen, valid inside
    the ``with`` block only: the param store, the trained guide's parameters included, is
    restored when it exits.

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
        # the program was validated when inspected; per-step checks would only slow the refit
        with torch.random.fork_rng(devices=[]), torch.enable_grad(), _frozen(program, batch), \
                pyro.validation_enabled(False):
            fit(poutine.block(program, hide_fn=_hidden_from_training), batch, guide=fresh,
                num_steps=settings.num_steps, optim=settings.lr,
                seed=settings.seed, shuffle=False, warm_start=True, progress=False)
        yield fresh
