"""Observed values checked against each observed site's support at the boundary, also for
distributions built with ``validate_args=False``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

__all__ = ["check_observed_support"]

_CHUNK = 4096  # rows traced at once


def check_observed_support(program: Callable, batch: tuple[torch.Tensor, ...],
                           data_plate: str | None) -> float:
    """Raise ValueError naming the observed site, the bad value and its row, if any observed
    value lies outside its distribution's support; return the observed (unmasked) values per
    example, the true number of dimensions of ragged data."""
    size, observed = int(batch[0].shape[0]), 0.0
    for start in range(0, size, _CHUNK):
        piece = tuple(t[start:start + _CHUNK] for t in batch)
        with poutine.block(), torch.no_grad():
            trace = poutine.trace(program).get_trace(*piece)
        for name, site in trace.nodes.items():
            if site["type"] == "sample" and site["is_observed"] and not site_is_subsample(site):
                _check_site(name, site, data_plate, start)
                observed += _count_observed(site)
    return observed / size


def _count_observed(site: dict) -> float:
    fn, value = site["fn"], site["value"]
    event = value.shape[value.dim() - fn.event_dim:] if fn.event_dim else ()
    per_entry = float(torch.Size(event).numel())
    batch_shape = value.shape[:value.dim() - fn.event_dim]
    mask = site["mask"]
    if mask is None or mask is True:
        return per_entry * float(torch.Size(batch_shape).numel())
    if mask is False:
        return 0.0
    return per_entry * float(torch.as_tensor(mask, dtype=torch.bool).expand(batch_shape).sum())


def _check_site(name: str, site: dict, data_plate: str | None, offset: int) -> None:
    try:
        support = site["fn"].support
        inside = support.check(site["value"])
    except (NotImplementedError, RuntimeError, TypeError):
        return  # a support torch cannot check elementwise
    inside = torch.as_tensor(inside, dtype=torch.bool)
    mask = site["mask"]
    if mask is not None and mask is not True:  # masked-out values are not data
        inside, mask = torch.broadcast_tensors(inside, torch.as_tensor(mask, dtype=torch.bool))
        inside = inside | ~mask
    if bool(inside.all()):
        return
    outside = ~inside
    frame = next((f for f in site["cond_indep_stack"] if f.name == data_plate), None)
    row = "?"
    if frame is not None and outside.dim() >= -frame.dim:
        per_row = outside.movedim(frame.dim, 0).reshape(outside.shape[frame.dim], -1).any(-1)
        row = str(offset + int(torch.nonzero(per_row)[0]))
    first = tuple(int(i) for i in torch.nonzero(outside)[0])
    event_dims = site["fn"].event_dim
    value = site["value"][first] if len(first) <= site["value"].dim() - event_dims else None
    shown = value.tolist() if isinstance(value, torch.Tensor) and value.numel() <= 8 else value
    raise ValueError(
        f"observed site '{name}' has a value outside its support ({support}) in row {row}: "
        f"{shown if shown is not None else 'see that row'}; {int(outside.sum())} such value(s) in "
        "all. Fix the data (or the distribution) — Pyro skips this check for distributions "
        "built with validate_args=False")
