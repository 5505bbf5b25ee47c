r"""The dequantization bound on log P(x) for discrete data under a density model.

For any density p on [0, 1)^D and any noise proposal q(u | x) on the unit cube
(:mod:`probgen.guides.dequantizer`),

    log P(x) ≥ E_q[ log p((x + u) / K) - D log K - log q(u | x) ]   (Theis et al., 2016; Ho et al., 2019)

where P(x) = ∫ p((x + u)/K) K^{-D} du is the probability mass the density puts on the bin of x.
The ``- D log K`` term moves the density from the [0, 1)^D scale to the [0, K)^D scale, where bins
have unit volume; bits/dim are reported there: -(ll_[0,1) - D log K) / (D ln 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from probgen.core.chunks import eval_mode
from probgen.core.result import LogLikelihood, data_fingerprint
from probgen.data.transforms import check_levels
from probgen.guides.dequantizer import UniformDequantizer

__all__ = ["bits_per_dim_dequantized", "dequantized_log_likelihood", "evaluate_dequantized"]


def dequantized_log_likelihood(
    log_density: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    num_levels: int,
    dequantizer: nn.Module | None = None,
    num_samples: int = 1,
    chunk_size: int = 64,
    generator: torch.Generator | None = None,
) -> LogLikelihood:
    r"""Lower bound on log P(x): log (1/k) Σ_j p((x + u_j)/K) K^{-D} / q(u_j | x), u_j ~ q.

    Arguments:
        log_density: y ↦ log p(y), per-example log-density of data scaled to [0, 1)^D.
        x: discrete data in {0, …, K-1}, shape ``(n, D)``.
        num_levels: K (256 for 8-bit data, 17 for sklearn's digits).
        dequantizer: :class:`~probgen.guides.dequantizer.UniformDequantizer` (default) or
            :class:`~probgen.guides.dequantizer.VariationalDequantizer`.
        num_samples: k noise draws per example; k > 1 tightens the bound (importance weighting).

    Returns:
        A ``LogLikelihood`` with ``kind="lower_bound"``, ``data_space="dequantized"``, in nats
        on the [0, K)^D scale, so ``.bits_per_dim`` is the standard figure.
    """
    x = check_levels(x, num_levels)
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    dequantizer = dequantizer if dequantizer is not None else UniformDequantizer(num_levels)
    if dequantizer.num_levels != num_levels:
        raise ValueError(f"the dequantizer has {dequantizer.num_levels} levels, not {num_levels}")
    num_dims = int(torch.Size(x.shape[1:]).numel())
    log_weights = []
    with torch.no_grad():
        for start in range(0, num_samples, chunk_size):  # chunks of particles, vectorized inside
            count = min(chunk_size, num_samples - start)
            y, log_q = dequantizer.sample_and_log_prob(x, count, generator=generator)
            log_p = log_density(y.reshape(-1, *x.shape[1:])).reshape(count, x.shape[0])
            log_weights.append(log_p - log_q)  # (count, n)
    log_weights = torch.cat(log_weights)  # (num_samples, n)
    per_example = torch.logsumexp(log_weights, 0) - math.log(num_samples)
    per_example = per_example - num_dims * math.log(num_levels)
    return LogLikelihood(per_example, kind="lower_bound", estimator=dequantizer.name,
                         num_dims=num_dims, data_space="dequantized",
                         settings={"num_levels": int(num_levels), "num_samples": int(num_samples)},
                         data_id=data_fingerprint(x))


def bits_per_dim_dequantized(mean_log_density: float, num_dims: int, num_levels: int) -> float:
    r"""-(ll - D log K) / (D ln 2) for a mean log-density ll of data scaled to [0, 1)^D."""
    return -(mean_log_density - num_dims * math.log(num_levels)) / (num_dims * math.log(2.0))


def evaluate_dequantized(model: nn.Module, batch: tuple[Tensor, ...], *, num_levels: int,
                         num_samples: int = 1, k: int | None = None,
                         dequantizer: nn.Module | None = None, seed: int | None = None,
                         **_: object) -> LogLikelihood:
    r"""Estimator ``"dequantized"``: the dequantization bound for a model with exact ``log_prob``.

    ``model.log_prob`` takes data scaled to [0, 1)^D (e.g. ``FlowModel(domain="unit_interval")``);
    ``batch[0]`` holds the discrete data in {0, …, K-1}; ``k`` (alias of ``num_samples``) noise
    draws per example.
    """
    if k is not None:
        num_samples = int(k)
    if not getattr(model, "has_exact_log_prob", False):
        raise ValueError(f"{type(model).__name__} has no exact log_prob; the dequantization "
                         "bound needs a density model (e.g. probgen.models.flow.FlowModel)")
    generator = None
    if seed is not None:
        generator = torch.Generator(device=batch[0].device).manual_seed(int(seed))
    x = batch[0]
    dtype = getattr(model, "dtype", None)
    if dtype is not None:
        x = x.to(dtype)
    with eval_mode(model):
        return dequantized_log_likelihood(model.log_prob, x, num_levels=num_levels,
                                          dequantizer=dequantizer, num_samples=num_samples,
                                          generator=generator)
