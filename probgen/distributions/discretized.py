"""Discretized logistic and Gaussian distributions over the bins {0, ..., num_bins - 1} (8-bit data)."""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all

__all__ = ["DiscretizedLogistic", "DiscretizedNormal"]


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -log 2 (Mächler, 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


class _Discretized(TorchDistribution):
    r"""A continuous distribution on [-1, 1] binned into ``num_bins`` integer values.

    Bin ``k`` has centre ``c_k = 2k / (num_bins - 1) - 1`` and half-width ``1 / (num_bins - 1)``;
    the first and last bins extend to -inf and +inf, so the masses sum to one.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_enumerate_support = False

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, num_bins: int = 256,
                 validate_args: bool | None = None) -> None:
        if int(num_bins) < 2:
            raise ValueError(f"num_bins must be at least 2, got {num_bins}")
        self.loc, self.scale = broadcast_all(loc, scale)
        self.num_bins = int(num_bins)
        super().__init__(self.loc.shape, torch.Size(), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self) -> constraints.Constraint:
        return constraints.integer_interval(0, self.num_bins - 1)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc, new.scale = self.loc.expand(batch_shape), self.scale.expand(batch_shape)
        new.num_bins = self.num_bins
        super(_Discretized, new).__init__(batch_shape, torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _standardized_edges(self, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        centre = 2.0 * value / (self.num_bins - 1) - 1.0
        half_width = 1.0 / (self.num_bins - 1)
        upper = (centre + half_width - self.loc) / self.scale
        lower = (centre - half_width - self.loc) / self.scale
        return upper, lower

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        value = value.to(self.loc.dtype)
        upper, lower = self._standardized_edges(value)
        log_mass = self._log_bin_mass(upper, lower)
        log_first = self._log_cdf(upper)  # bin 0: (-inf, upper]
        log_last = self._log_cdf(-lower)  # last bin: [lower, inf) (symmetric base)
        log_mass = torch.where(value <= 0, log_first, log_mass)
        return torch.where(value >= self.num_bins - 1, log_last, log_mass)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            shape = self._extended_shape(sample_shape)
            continuous = self.loc.expand(shape) + self.scale.expand(shape) * self._base_sample(shape)
            bins = torch.round((continuous + 1.0) * (self.num_bins - 1) / 2.0)
            return bins.clamp(0, self.num_bins - 1)

    @property
    def mean(self) -> torch.Tensor:
        raise NotImplementedError("the mean of a discretized distribution has no closed form here; "
                                  "estimate it from samples")

    # --- the base distribution (standardized, symmetric about 0) ------------------------------
    def _log_cdf(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _log_bin_mass(self, upper: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _base_sample(self, shape: torch.Size) -> torch.Tensor:
        raise NotImplementedError


class DiscretizedLogistic(_Discretized):
    r"""Logistic(loc, scale) on [-1, 1] binned into integers {0, ..., num_bins - 1}.

    P(k) = σ((c_k + h - loc) / s) - σ((c_k - h - loc) / s), c_k = 2k/(B-1) - 1, h = 1/(B-1), with
    open outer bins (Salimans et al., 2017, PixelCNN++). Computed as
    log σ(a) + log σ(-b) + log(1 - e^{b-a}), stable for any scale.

    Arguments:
        loc: location on the [-1, 1] scale (pixel 0 -> -1, pixel B-1 -> 1).
        scale: logistic scale on the same scale.
        num_bins: number of values (256 for 8-bit data).

    Example:
        >>> d = DiscretizedLogistic(torch.zeros(3), torch.ones(3) * 0.1)
        >>> bins = torch.arange(256.0)[:, None]
        >>> torch.allclose(d.log_prob(bins).exp().sum(0), torch.ones(3))
        True
    """

    def _log_cdf(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.logsigmoid(x)

    def _log_bin_mass(self, upper: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
        # σ(a) - σ(b) = σ(a) σ(-b) (1 - e^{b - a})
        logsigmoid = torch.nn.functional.logsigmoid
        return logsigmoid(upper) + logsigmoid(-lower) + _log1mexp(lower - upper)

    def _base_sample(self, shape: torch.Size) -> torch.Tensor:
        eps = torch.finfo(self.loc.dtype).tiny
        uniform = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(eps, 1 - eps)
        return torch.log(uniform) - torch.log1p(-uniform)


class DiscretizedNormal(_Discretized):
    r"""Normal(loc, scale) on [-1, 1] binned into integers {0, ..., num_bins - 1}.

    P(k) = Φ((c_k + h - loc) / s) - Φ((c_k - h - loc) / s) with open outer bins; the difference is
    taken on the tail where both terms are small (Φ(a) - Φ(b) = Φ(-b) - Φ(-a)), in log space.

    Example:
        >>> d = DiscretizedNormal(torch.zeros(2), torch.ones(2) * 0.2, num_bins=16)
        >>> torch.allclose(d.log_prob(torch.arange(16.0)[:, None]).exp().sum(0), torch.ones(2))
        True
    """

    def _log_cdf(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.log_ndtr(x)

    def _log_bin_mass(self, upper: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
        # Reflect bins right of 0 so both edges sit on the left tail, where log Φ is accurate.
        flip = (upper + lower) > 0
        high = torch.where(flip, -lower, upper)
        low = torch.where(flip, -upper, lower)
        log_high, log_low = torch.special.log_ndtr(high), torch.special.log_ndtr(low)
        width = high - low
        # Bins much narrower than the scale: the midpoint rule (relative error ~ width² / 24)
        # beats the cancellation error (~ eps / width) of the difference below (24 eps)^(1/3).
        narrow = width < (24 * torch.finfo(width.dtype).eps) ** (1 / 3)
        log_gap = torch.where(narrow, torch.full_like(width, -1.0), log_low - log_high)
        exact = log_high + _log1mexp(log_gap)
        midpoint = -0.5 * (0.5 * (high + low)) ** 2 - 0.5 * math.log(2 * math.pi) + torch.log(width)
        return torch.where(narrow, midpoint, exact)

    def _base_sample(self, shape: torch.Size) -> torch.Tensor:
        return torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
