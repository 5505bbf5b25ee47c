r"""Amortized flow posteriors q(z | h(x)): IAF or NSF conditioned on an encoder's output."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import zuko
from torch import Tensor, nn

from probgen.distributions.flow import Flow, FlowDistribution

__all__ = ["AmortizedFlowPosterior"]

_KINDS = {"iaf": "maf", "nsf": "nsf"}


class AmortizedFlowPosterior(nn.Module):
    r"""q(z | h): a conditional flow whose every transformation sees the context h = encoder(x).

    ``kind="iaf"`` is the inverse autoregressive flow of Kingma et al. (2016):
    z_i = μ_i(ε_{<i}, h) + σ_i(ε_{<i}, h) ε_i, ε ~ N(0, I), stacked ``transforms`` times with
    alternating orders; ``kind="nsf"`` uses monotonic rational-quadratic splines
    (Durkan et al., 2019) in the same inverted, sample-in-one-pass direction. Scoring the
    posterior's own samples (ELBO, IWAE) is one pass; scoring other points inverts the flow.

    Arguments:
        latent_dim: size of z.
        context_dim: size of the encoder output h.
        kind: ``"iaf"`` or ``"nsf"``.
        options: passed to :class:`~probgen.distributions.flow.Flow` (``backend``, ``bins``).

    Example:
        >>> import torch
        >>> posterior = AmortizedFlowPosterior(2, 8, kind="iaf")
        >>> q = posterior(torch.randn(5, 8))
        >>> q.batch_shape, q.event_shape
        (torch.Size([5]), torch.Size([2]))
    """

    def __init__(self, latent_dim: int, context_dim: int, kind: str = "iaf", *,
                 transforms: int = 3, hidden: Sequence[int] = (64, 64), **options: Any) -> None:
        super().__init__()
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {tuple(_KINDS)}, got {kind!r}")
        if int(context_dim) < 1:
            raise ValueError(f"context_dim must be >= 1 (the encoder's output size), got {context_dim}")
        self.latent_dim, self.context_dim, self.kind = int(latent_dim), int(context_dim), kind
        self.flow = Flow(self.latent_dim, self.context_dim, kind=_KINDS[kind], inverse=True,
                         transforms=transforms, hidden=hidden, **options)

    def forward(self, context: Tensor, base: tuple[Tensor, Tensor] | None = None
                ) -> FlowDistribution:
        """q(z | context), batch shape ``context.shape[:-1]``, event shape ``(latent_dim,)``.

        ``base=(loc, scale)``: the flow starts from N(loc, diag(scale²)) instead of N(0, I), i.e.
        z_0 = loc + scale ⊙ ε and the flow's steps act on z_0 (Kingma et al.'s IAF: the encoder's
        Gaussian, then the autoregressive steps), so an untrained flow is the encoder's Gaussian.
        """
        q = self.flow(context)
        if base is None:
            return q
        if not isinstance(q.dist, zuko.distributions.NormalizingFlow):
            raise ValueError("a Gaussian base needs the zuko backend")
        loc, scale = base
        return FlowDistribution(zuko.distributions.NormalizingFlow(
            q.dist.transform, zuko.distributions.DiagNormal(loc, scale)))
