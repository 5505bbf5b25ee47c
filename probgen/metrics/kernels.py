"""Kernels on feature vectors for MMD² and the Vendi score: RBF, KID's polynomial, cosine."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch

from probgen.core.validate import check_finite, check_size
from probgen.metrics.features import as_features
from probgen.metrics.pairwise import squared_distances

__all__ = ["Kernel", "RBF", "Polynomial", "Cosine", "median_bandwidth"]

MEDIAN_SAMPLES = 1000  # points the median heuristic looks at (a seeded subsample beyond this)


class Kernel:
    """A positive-definite kernel k(x, y) on feature vectors of shape ``(n, d)``.

    A kernel declares what it offers: ``unit_diagonal`` (k(x, x) = 1, a similarity, as the Vendi
    score needs) and ``has_feature_map`` (an explicit finite feature map, so a Gram matrix's
    eigenvalues come from a ``d × d`` matrix). Settings that depend on the data (a median
    bandwidth, γ = 1/d) are fixed by :meth:`fitted` before any block is computed.
    """

    name: ClassVar[str] = "kernel"
    unit_diagonal: ClassVar[bool] = False
    has_feature_map: ClassVar[bool] = False

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The Gram block k(x_i, y_j), shape ``(len(x), len(y))``."""
        raise NotImplementedError

    def diag(self, x: torch.Tensor) -> torch.Tensor:
        """k(x_i, x_i), shape ``(len(x),)``."""
        raise NotImplementedError

    def fitted(self, **samples: torch.Tensor) -> Kernel:
        """This kernel with its data-dependent settings fixed from the named sample sets."""
        return self

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x) with k(x, y) = φ(x)·φ(y), shape ``(len(x), features)`` (``has_feature_map``)."""
        raise NotImplementedError(f"{type(self).__name__} has no explicit feature map")

    def settings(self) -> dict[str, Any]:
        """The kernel's name and settings, for a result's ``settings``."""
        return {"kernel": self.name}


def median_bandwidth(samples: torch.Tensor, *, max_samples: int = MEDIAN_SAMPLES,
                     seed: int = 0) -> float:
    r"""Median heuristic ℓ = median_{i<j} ||x_i - x_j|| (Gretton et al., 2012), over a seeded
    subsample of ``max_samples`` rows; the median of the non-zero distances when over half
    coincide, and 1 when all points do.

    Example:
        >>> median_bandwidth(torch.tensor([[0.0], [1.0], [3.0]]))
        2.0
    """
    samples = _as_samples(samples)
    max_samples = check_size("max_samples", max_samples, minimum=2)
    if len(samples) > max_samples:
        generator = torch.Generator().manual_seed(seed)
        samples = samples[torch.randperm(len(samples), generator=generator)[:max_samples]
                          .to(samples.device)]
    upper = torch.triu_indices(len(samples), len(samples), offset=1, device=samples.device)
    distances = squared_distances(samples, samples)[upper[0], upper[1]].sqrt()
    median = float(distances.quantile(0.5)) if distances.numel() else 0.0  # numpy's median
    if median > 0:
        return median
    nonzero = distances[distances > 0]
    return float(nonzero.quantile(0.5)) if nonzero.numel() else 1.0


def _as_samples(samples: Any) -> torch.Tensor:
    return samples if isinstance(samples, torch.Tensor) and samples.dim() == 2 else as_features(
        samples, name="samples")


MAX_DEGREE = 64  # (γ x·y + c)^p overflows float64 for any |γ x·y + c| > 2**16 past this


@dataclass(frozen=True)
class RBF(Kernel):
    r"""Gaussian kernel k(x, y) = exp(-||x - y||² / (2ℓ²)).

    Arguments:
        bandwidth: ℓ; ``None`` fixes it by the median heuristic on the pooled samples of each
            call (:func:`median_bandwidth`), recorded in the result's settings. Pass one ℓ to
            compare several models under the same kernel.

    Example:
        >>> RBF(1.0)(torch.zeros(1, 2), torch.ones(1, 2))
        tensor([[0.3679]])
    """

    bandwidth: float | None = None
    name: ClassVar[str] = "rbf"
    unit_diagonal: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.bandwidth is not None:
            object.__setattr__(self, "bandwidth",
                               check_finite("RBF bandwidth", self.bandwidth, positive=True))

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        bandwidth = self.bandwidth or median_bandwidth(torch.cat([x, y]))
        return torch.exp(-squared_distances(x, y) / (2.0 * bandwidth**2))

    def diag(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_ones(len(x))

    def fitted(self, **samples: torch.Tensor) -> RBF:
        if self.bandwidth is not None:
            return self
        return replace(self, bandwidth=median_bandwidth(torch.cat(list(samples.values()))))

    def settings(self) -> dict[str, Any]:
        return {"kernel": self.name, "bandwidth": self.bandwidth}


@dataclass(frozen=True)
class Polynomial(Kernel):
    r"""Polynomial kernel k(x, y) = (γ x·y + c)^p; KID's with p = 3, γ = 1/d, c = 1
    (Bińkowski et al., 2018).

    Arguments:
        degree: p.
        gamma: γ; ``None``: 1/d for d features.
        coef0: c.

    Example:
        >>> Polynomial()(torch.ones(1, 2), torch.ones(1, 2))
        tensor([[8.]])
    """

    degree: int = 3
    gamma: float | None = None
    coef0: float = 1.0
    name: ClassVar[str] = "polynomial"

    def __post_init__(self) -> None:
        object.__setattr__(self, "degree", check_size(
            "Polynomial degree", self.degree, maximum=MAX_DEGREE,
            fix="KID uses degree 3; a higher power overflows float64 on typical features"))
        if self.gamma is not None:
            object.__setattr__(self, "gamma",
                               check_finite("Polynomial gamma", self.gamma, positive=True))
        object.__setattr__(self, "coef0",
                           check_finite("Polynomial coef0", self.coef0, nonnegative=True))

    def _gamma(self, x: torch.Tensor) -> float:
        return self.gamma if self.gamma is not None else 1.0 / x.shape[-1]

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self._gamma(x) * x @ y.T + self.coef0) ** self.degree

    def diag(self, x: torch.Tensor) -> torch.Tensor:
        return (self._gamma(x) * (x * x).sum(-1) + self.coef0) ** self.degree

    def fitted(self, **samples: torch.Tensor) -> Polynomial:
        if self.gamma is not None:
            return self
        return replace(self, gamma=1.0 / next(iter(samples.values())).shape[-1])

    def settings(self) -> dict[str, Any]:
        return {"kernel": self.name, "degree": self.degree, "gamma": self.gamma,
                "coef0": self.coef0}


@dataclass(frozen=True)
class Cosine(Kernel):
    r"""Cosine similarity k(x, y) = x·y / (||x|| ||y||); needs non-zero feature vectors.

    Example:
        >>> Cosine()(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]))
        tensor([[0.7071]])
    """

    name: ClassVar[str] = "cosine"
    unit_diagonal: ClassVar[bool] = True
    has_feature_map: ClassVar[bool] = True

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x) @ self.feature_map(y).T

    def diag(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_ones(len(x))

    def fitted(self, **samples: torch.Tensor) -> Cosine:
        for name, x in samples.items():
            zero = torch.linalg.vector_norm(x, dim=-1) == 0
            if zero.any():
                raise ValueError(
                    f"{name} has {int(zero.sum())} all-zero sample(s) (first: row "
                    f"{int(torch.nonzero(zero)[0])}), which have no direction for the cosine "
                    "similarity; drop them, or use kernel=RBF() (defined for every vector)")
        return self
