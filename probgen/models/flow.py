r"""Flow density model: a Pyro program with no latents and an exact log-likelihood."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor
from torch.distributions import AffineTransform

from probgen.core.model import GenerativeModel
from probgen.core.validate import check_size
from probgen.data.transforms import LogitTransform
from probgen.distributions.flow import Flow
from probgen.models.registry import register_model

__all__ = ["FlowModel"]

DOMAINS = ("real", "unit_interval")


@register_model("flow")
class FlowModel(GenerativeModel):
    r"""x ~ p(x) = p_Z(f(x)) |det ∂f/∂x|: a normalizing flow as a density model (Papamakarios et al., 2021).

    The program is ``pyro.sample("x", flow_distribution, obs=x)`` under a data plate, so
    :func:`probgen.fit` maximizes the exact log-likelihood and :func:`probgen.evaluate` scores
    it exactly (``has_exact_log_prob``).

    Arguments:
        features: D, the number of data dimensions (data of shape ``(n, D)``).
        kind, backend, transforms, hidden, base, options: see
            :class:`probgen.distributions.flow.Flow`.
        domain: ``"real"``, or ``"unit_interval"`` for data in [0, 1]^D (e.g. dequantized
            pixels): the flow then models logit(α + (1-2α) x) and the Jacobian is included.
        logit_alpha: α for ``domain="unit_interval"``.
        loc, scale: a fixed standardization x ↦ (x - loc) / scale applied before the flow
            (Jacobian included); :meth:`standardized` computes them from data.

    Example:
        >>> model = FlowModel(2, kind="maf", transforms=2)
        >>> model.log_prob(torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    has_exact_log_prob = True
    data_space = "continuous"
    data_size_argument = "features"  # filled from the data by from_data and the CLI

    def __init__(self, features: int, *, kind: str = "nsf", backend: str = "zuko",
                 transforms: int = 3, hidden: Sequence[int] = (64, 64), base: str = "normal",
                 domain: str = "real", logit_alpha: float = 1e-6,
                 loc: Sequence[float] | None = None, scale: Sequence[float] | None = None,
                 **options: Any) -> None:
        features = check_size("features", features)
        transforms = check_size("transforms", transforms)
        if domain not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
        if not 0.0 < logit_alpha < 0.5:
            raise ValueError(f"logit_alpha must be in (0, 0.5) (the logit transform squeezes the "
                             f"data into [alpha, 1 - alpha]), got {logit_alpha}; e.g. 1e-6")
        if scale is not None and any(v <= 0 for v in scale):
            raise ValueError(f"scale holds the data's standard deviations and must be positive, "
                             f"got {list(scale)}; a constant feature needs scale 1")
        if domain == "unit_interval" and (loc is not None or scale is not None):
            raise ValueError("loc/scale standardize real data; with domain='unit_interval' the "
                             "logit transform already maps the data to the real line")
        super().__init__(features=int(features), kind=kind, backend=backend,
                         transforms=int(transforms), hidden=[int(h) for h in hidden], base=base,
                         domain=domain, logit_alpha=float(logit_alpha),
                         loc=None if loc is None else [float(v) for v in loc],
                         scale=None if scale is None else [float(v) for v in scale], **options)
        self.features, self.domain = int(features), domain
        self.flow = Flow(self.features, backend=backend, kind=kind, transforms=transforms,
                         hidden=hidden, base=base, **options)
        self.register_buffer("loc", None if loc is None else torch.tensor(loc, dtype=torch.float32))
        self.register_buffer("scale",
                             None if scale is None else torch.tensor(scale, dtype=torch.float32))
        for name, value in (("loc", self.loc), ("scale", self.scale)):
            if value is not None and value.shape != (self.features,):
                raise ValueError(f"{name} has {value.numel()} values but the model has "
                                 f"{self.features} features")
        if self.scale is not None and (self.scale <= 0).any():
            raise ValueError("scale must be positive")

    @property
    def support(self) -> str:
        """``"unit_interval"`` with ``domain="unit_interval"``, else ``"real"``."""
        return "unit_interval" if self.config["domain"] == "unit_interval" else "real"

    @classmethod
    def standardized(cls, data: Tensor, **kwargs: Any) -> FlowModel:
        """A model whose fixed standardization is the data's per-feature mean and std."""
        data = torch.as_tensor(data, dtype=torch.float64)
        std = data.std(0).clamp_min(1e-12)
        return cls(data.shape[1], loc=data.mean(0).tolist(), scale=std.tolist(), **kwargs)

    def event_shape(self) -> tuple[int, ...]:
        return (self.features,)

    def distribution(self) -> dist.TorchDistribution:
        """p(x): the flow, moved to data space by the logit or standardization transform."""
        flow_dist = self.flow()
        if self.domain == "unit_interval":
            return dist.TransformedDistribution(flow_dist,
                                                [LogitTransform(self.config["logit_alpha"]).inv])
        if self.loc is not None or self.scale is not None:
            loc = self.loc if self.loc is not None else torch.zeros_like(self.scale)
            scale = self.scale if self.scale is not None else torch.ones_like(self.loc)
            return dist.TransformedDistribution(flow_dist, [AffineTransform(loc, scale, 1)])
        return flow_dist

    def model(self, x: Tensor) -> None:
        pyro.module(self.pyro_name, self)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", self.distribution(), obs=x)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log p(x) per example, shape ``(n,)``."""
        return self.distribution().log_prob(x)

    def sample(self, num_samples: int) -> Tensor:
        """Draw ``(num_samples, D)`` examples.

        With ``domain="unit_interval"`` and α > 0 the density on [0, 1]^D holds the flow's mass
        inside [logit α, logit(1-α)]^D only (so its likelihoods stay honest lower values); the
        few draws outside are clamped to the boundary.
        """
        with torch.no_grad():
            samples = self.distribution().sample((num_samples,))
        return samples.clamp(0, 1) if self.domain == "unit_interval" else samples

