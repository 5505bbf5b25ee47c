r"""Data transforms: binarize, dequantize (uniform and variational), logit, with their Jacobians.

Dequantization turns discrete data x ∈ {0, …, K-1}^D into continuous y = (x + u) / K with
u ∈ [0, 1)^D. For any density p on [0, 1)^D and any noise density q(u | x) on the unit cube,

    log P(x) ≥ E_q[ log p((x + u) / K) - D log K - log q(u | x) ]   (Theis et al., 2016; Ho et al., 2019)

where P(x) = ∫ p((x + u)/K) K^{-D} du is the probability mass the density puts on the bin of x.
The ``- D log K`` term moves the density from the [0, 1)^D scale to the [0, K)^D scale, where bins
have unit volume; bits/dim are reported there: -(ll_[0,1) - D log K) / (D ln 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Transform, constraints

from probgen.core.chunks import eval_mode
from probgen.core.result import LogLikelihood, data_fingerprint
from probgen.core.validate import check_finite, check_size, validate_data
from probgen.distributions.flow import Flow

__all__ = [
    "LogitTransform",
    "UniformDequantizer",
    "VariationalDequantizer",
    "binarize",
    "bits_per_dim_dequantized",
    "dequantized_log_likelihood",
    "evaluate_dequantized",
    "logit_transform",
    "uniform_dequantize",
]


def binarize(x: Tensor, *, threshold: float = 0.5, dynamic: bool = False,
             generator: torch.Generator | None = None) -> Tensor:
    r"""Binarize intensities in [0, 1]: static x > threshold, or dynamic b ~ Bernoulli(x).

    Dynamic binarization (Salakhutdinov & Murray, 2008) draws a fresh binary image per call;
    pass a seeded ``generator`` for reproducible draws.

    Example:
        >>> binarize(torch.tensor([[0.2, 0.7]]))
        tensor([[0., 1.]])
    """
    threshold = check_finite("threshold", threshold)
    x = validate_data(x, name="x", support="unit_interval")
    x = x.to(torch.get_default_dtype()) if not x.is_floating_point() else x
    if dynamic:
        return torch.bernoulli(x, generator=generator)
    return (x > threshold).to(x.dtype)


def _check_levels(x: Tensor, num_levels: int) -> Tensor:
    if isinstance(num_levels, (int, np.integer)) and not isinstance(num_levels, (bool, np.bool_)) \
            and num_levels < 2:
        raise ValueError(f"num_levels must be >= 2 (e.g. 256 for 8-bit data), got {num_levels}")
    num_levels = check_size("num_levels", num_levels, minimum=2)
    x = validate_data(x, name="x", support="categorical", num_categories=num_levels)
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def uniform_dequantize(x: Tensor, num_levels: int, *, generator: torch.Generator | None = None,
                       scale: bool = True) -> Tensor:
    r"""y = (x + u) / K with u ~ U[0, 1)^D (``scale=False``: x + u, in [0, K)^D).

    Example:
        >>> y = uniform_dequantize(torch.tensor([[0, 3]]), 4)
        >>> bool(((y * 4).floor() == torch.tensor([[0., 3.]])).all())
        True
    """
    x = _check_levels(x, num_levels)
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    y = x + noise
    return y / num_levels if scale else y


class LogitTransform(Transform):
    r"""z = logit(α + (1 - 2α) y) on y ∈ [0, 1]; log |dz/dy| = log(1-2α) - log s - log(1-s).

    The α margin keeps the logit finite at y = 0 (Dinh et al., 2016 use α = 0.05 for images).
    Use ``LogitTransform(α).inv`` in a ``TransformedDistribution`` to move a flow on ℝ^D to a
    density on [0, 1]^D.
    """

    domain = constraints.unit_interval
    codomain = constraints.real
    bijective = True
    sign = +1

    def __init__(self, alpha: float = 1e-6, cache_size: int = 0) -> None:
        if not 0 <= alpha < 0.5:
            raise ValueError(f"alpha must lie in [0, 0.5), got {alpha}")
        super().__init__(cache_size=cache_size)
        self.alpha = float(alpha)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LogitTransform) and other.alpha == self.alpha

    def _squeeze(self, y: Tensor) -> Tensor:
        return self.alpha + (1 - 2 * self.alpha) * y

    def _call(self, y: Tensor) -> Tensor:
        s = self._squeeze(y)
        return torch.log(s) - torch.log1p(-s)

    def _inverse(self, z: Tensor) -> Tensor:
        return (torch.sigmoid(z) - self.alpha) / (1 - 2 * self.alpha)

    def log_abs_det_jacobian(self, y: Tensor, z: Tensor) -> Tensor:
        s = self._squeeze(y)
        return math.log1p(-2 * self.alpha) - torch.log(s) - torch.log1p(-s)

    def with_cache(self, cache_size: int = 1) -> LogitTransform:
        return self if self._cache_size == cache_size else LogitTransform(self.alpha, cache_size)


def logit_transform(y: Tensor, alpha: float = 1e-6) -> tuple[Tensor, Tensor]:
    r"""z = logit(α + (1-2α) y) and the per-example log |det ∂z/∂y| (summed over features)."""
    transform = LogitTransform(alpha)
    z = transform(y)
    log_det = transform.log_abs_det_jacobian(y, z).reshape(y.shape[0], -1).sum(-1)
    return z, log_det


class UniformDequantizer(nn.Module):
    r"""q(u | x) = U[0, 1)^D: the plain dequantization bound (Theis et al., 2016)."""

    name = "uniform_dequantization"

    def __init__(self, num_levels: int) -> None:
        super().__init__()
        self.num_levels = int(num_levels)

    def sample_and_log_prob(self, x: Tensor, num_samples: int = 1,
                            generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """y = (x + u)/K of shape ``(num_samples, *x.shape)`` and log q(u | x), ``(num_samples, n)``."""
        noise = torch.rand((num_samples, *x.shape), generator=generator, dtype=x.dtype,
                           device=x.device)
        return (x + noise) / self.num_levels, x.new_zeros(num_samples, x.shape[0])


class VariationalDequantizer(nn.Module):
    r"""q(u | x): a conditional flow squashed to the unit cube, u = σ(v), v ~ q(v | x) (Ho et al., 2019).

    log q(u | x) = log q(v | x) - Σ_d log σ'(v_d), with log σ'(v) = -softplus(-v) - softplus(v).
    The flow is conditioned on the scaled data 2x/(K-1) - 1; coupling flows (``realnvp``, or
    ``nsf`` with ``passes=2``) keep sampling fast.

    Arguments:
        features: D, the number of data dimensions (data of shape ``(n, D)``).
        num_levels: K, the number of discrete levels.
        flow_options: passed to :class:`probgen.distributions.flow.Flow`.
    """

    name = "variational_dequantization"

    def __init__(self, features: int, num_levels: int, *, kind: str = "realnvp",
                 transforms: int = 4, hidden: tuple[int, ...] = (64, 64),
                 **flow_options: object) -> None:
        super().__init__()
        self.num_levels = int(num_levels)
        self.flow = Flow(features, features, kind=kind, transforms=transforms, hidden=hidden,
                         **flow_options)

    def _context(self, x: Tensor) -> Tensor:
        return 2 * x / (self.num_levels - 1) - 1

    @staticmethod
    def _log_sigmoid_derivative(v: Tensor) -> Tensor:
        return -(F.softplus(-v) + F.softplus(v)).sum(-1)

    def sample_and_log_prob(self, x: Tensor, num_samples: int = 1,
                            generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """y = (x + u)/K of shape ``(num_samples, n, D)`` and log q(u | x), ``(num_samples, n)``."""
        noise_dist = self.flow(self._context(x))
        v = noise_dist.rsample((num_samples,))  # (num_samples, n, D)
        log_q = noise_dist.log_prob(v) - self._log_sigmoid_derivative(v)
        return (x + torch.sigmoid(v)) / self.num_levels, log_q

    def log_prob(self, u: Tensor, x: Tensor) -> Tensor:
        """log q(u | x) for noise u ∈ (0, 1)^D, shape ``u.shape[:-1]``."""
        v = torch.logit(u)
        return self.flow(self._context(x)).log_prob(v) - self._log_sigmoid_derivative(v)


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
        dequantizer: :class:`UniformDequantizer` (default) or :class:`VariationalDequantizer`.
        num_samples: k noise draws per example; k > 1 tightens the bound (importance weighting).

    Returns:
        A ``LogLikelihood`` with ``kind="lower_bound"``, ``data_space="dequantized"``, in nats
        on the [0, K)^D scale, so ``.bits_per_dim`` is the standard figure.
    """
    x = _check_levels(x, num_levels)
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
