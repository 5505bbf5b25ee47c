r"""Dequantizers: noise proposals q(u | x) on the unit cube, the guides of the dequantization bound.

For discrete x ∈ {0, …, K-1}^D a dequantizer draws u ∈ [0, 1)^D and returns y = (x + u) / K
with log q(u | x); :func:`probgen.evaluate.dequantized.dequantized_log_likelihood` turns the
draws into the bound log P(x) ≥ E_q[ log p(y) - D log K - log q(u | x) ] (Ho et al., 2019).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probgen.distributions.flow import Flow

__all__ = ["UniformDequantizer", "VariationalDequantizer"]


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
