"""Exact partition functions of RBMs by enumerating the narrower layer (below model.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["binary_states", "exact_log_partition", "exact_partition_layer"]


def binary_states(num_units: int, start: int = 0, stop: int | None = None, *,
                  dtype: torch.dtype = torch.float32, device: Any = None) -> torch.Tensor:
    """The binary vectors numbered ``start..stop-1`` (bit i = unit i), shape ``(stop-start, n)``."""
    stop = 2**num_units if stop is None else stop
    index = torch.arange(start, stop, device=device)
    bits = torch.arange(num_units, device=device)
    return ((index[:, None] >> bits) & 1).to(dtype)


def exact_partition_layer(rbm) -> tuple[int, Callable[[torch.Tensor], torch.Tensor]] | None:
    """The layer exact log Z enumerates, as ``(num_units, log_term)``, or None when both layers
    are wider than ``rbm.max_exact_units`` (visible units are enumerable only when binary)."""
    limit = rbm.max_exact_units
    num_hidden, num_visible = rbm.num_hidden, rbm.num_visible
    can_enumerate_visible = rbm.data_space == "discrete" and num_visible <= limit
    if num_hidden <= limit and (num_hidden <= num_visible or not can_enumerate_visible):
        return num_hidden, rbm.log_marginal_hidden
    if can_enumerate_visible:
        return num_visible, (lambda v: -rbm.free_energy(v))
    return None


def exact_log_partition(rbm, *, chunk_size: int = 2**14) -> torch.Tensor:
    r"""Exact log Z of an RBM: log Σ_h exp(log_marginal_hidden(h)) over all 2^H hidden states.

    For a Bernoulli RBM with a narrower visible layer, enumerates v instead:
    log Z = log Σ_v exp(-F(v)). Chunked over states; differentiable in the parameters.
    Raises ValueError when both layers are wider than ``rbm.max_exact_units`` (20).
    """
    layer = exact_partition_layer(rbm)
    if layer is None:
        raise ValueError(f"exact log Z needs a layer of at most {rbm.max_exact_units} units to "
                         f"enumerate, but this {type(rbm).__name__} has {rbm.num_visible} visible "
                         f"and {rbm.num_hidden} hidden units; use the AIS estimate "
                         "(ais_log_partition / estimator='ais')")
    num_units, log_term = layer
    weight = rbm.weight
    chunk_log_z = [
        torch.logsumexp(log_term(binary_states(num_units, start, min(start + chunk_size, 2**num_units),
                                               dtype=weight.dtype, device=weight.device)), 0)
        for start in range(0, 2**num_units, chunk_size)
    ]
    return torch.logsumexp(torch.stack(chunk_log_z), 0)
