r"""Normalizing flows from zuko or nflows behind one interface, as Pyro distributions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pyro.contrib.zuko import ZukoToPyro
from torch import Size, Tensor, nn
from torch.distributions import Distribution, constraints

from probgen.distributions.flow_backends import (
    BACKENDS,
    FlowBackend,
    NflowsDistribution,
    backend_of,
    choose_backend,
)

__all__ = ["BACKENDS", "BASES", "Flow", "FlowDistribution", "NflowsDistribution", "flow_kinds"]

BASES: tuple[str, ...] = ("normal", "diag_normal", "student_t")


def flow_kinds(backend: str = "zuko") -> tuple[str, ...]:
    """The flow kinds ``Flow(kind=...)`` builds for a backend."""
    return choose_backend(backend).kinds


class FlowDistribution(ZukoToPyro):
    r"""A normalizing flow as a Pyro distribution: p(x) = p_Z(f(x)) |det ∂f(x)/∂x| (Tabak, 2013).

    Built on :class:`pyro.contrib.zuko.ZukoToPyro`: a sample drawn through ``rsample`` (or by a
    ``pyro.sample`` site) keeps the log-density computed on the way, so scoring one's own
    samples (ELBO, IWAE) never runs the expensive inverse pass. Shapes: ``batch_shape`` is the
    context's leading shape (or what ``expand`` gave), ``event_shape`` is ``(features,)``.

    Arguments:
        dist: a ``torch`` distribution with ``rsample_and_log_prob`` (zuko's
            ``NormalizingFlow`` or :class:`NflowsDistribution`). Build it with :class:`Flow`.

    Example:
        >>> d = Flow(3, kind="maf")()
        >>> x = d.rsample((5,))
        >>> d.log_prob(x).shape
        torch.Size([5])
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.real_vector
    _validate_args = False

    def __init__(self, dist: Distribution) -> None:
        super().__init__(dist)

    def rsample(self, sample_shape: Size = Size()) -> Tensor:
        return self(Size(sample_shape))

    def sample(self, sample_shape: Size = Size()) -> Tensor:
        with torch.no_grad():
            if hasattr(self.dist, "rsample_and_log_prob"):
                return self.dist.rsample_and_log_prob(Size(sample_shape))[0]
            return self.dist.sample(Size(sample_shape))

    def log_prob(self, x: Tensor) -> Tensor:
        if x in self.cache:
            return self.cache[x]
        shape = torch.broadcast_shapes(x.shape[:-1], self.batch_shape)
        if shape != x.shape[:-1]:  # zuko needs x and the context to broadcast
            x = x.expand(*shape, x.shape[-1])
        return self.dist.log_prob(x)

    def expand(self, batch_shape: Size, _instance: Any = None) -> FlowDistribution:
        return FlowDistribution(self.dist.expand(Size(batch_shape)))

    def __repr__(self) -> str:
        return (f"FlowDistribution(batch_shape={tuple(self.batch_shape)}, "
                f"event_shape={tuple(self.event_shape)})")


class Flow(nn.Module):
    r"""A normalizing flow network; ``flow(context)`` returns a :class:`FlowDistribution`.

    Parameters live here (an ``nn.Module``), probability in the returned distribution, as in
    zuko. ``backend="zuko"`` (default) builds ``zuko.flows.<KIND>``; ``backend="nflows"`` builds
    the nflows flow of the same architecture (MADE/coupling nets of ``hidden`` widths).

    References:
        | Normalizing Flows for Probabilistic Modeling and Inference (Papamakarios et al., 2021)

    Arguments:
        features: the event size D.
        context: the number of context features C (0: unconditional).
        backend: ``"zuko"`` or ``"nflows"``.
        kind: see :func:`flow_kinds` (zuko: maf, nsf, realnvp, nice, naf, unaf, sospf, bpf,
            cnf; nflows: maf, nsf, realnvp).
        transforms: the number of transformations (ignored by ``cnf``).
        hidden: hidden widths of each transformation's network.
        base: ``"normal"`` (fixed standard normal), ``"diag_normal"`` (learnable loc and
            scale) or ``"student_t"`` (learnable degrees of freedom; zuko only).
        inverse: swap the directions, so sampling is the fast pass (IAF: Kingma et al., 2016).
        network: an existing zuko ``LazyDistribution`` or nflows ``Flow`` to wrap instead.
        options: passed to the backend's constructor (e.g. ``bins=16``, ``passes=2``).

    Example:
        >>> flow = Flow(2, context=3, kind="nsf")
        >>> d = flow(torch.randn(4, 3))
        >>> d.batch_shape, d.event_shape
        (torch.Size([4]), torch.Size([2]))
    """

    def __init__(self, features: int, context: int = 0, *, backend: str = "zuko",
                 kind: str = "nsf", transforms: int = 3, hidden: Sequence[int] = (64, 64),
                 base: str = "normal", inverse: bool = False, network: nn.Module | None = None,
                 **options: Any) -> None:
        super().__init__()
        if int(features) < 1:
            raise ValueError(f"features must be a positive integer, got {features}")
        if base not in BASES:
            raise ValueError(f"unknown base {base!r}; choose one of {BASES}")
        self.features, self.context_features = int(features), int(context)
        if network is not None:
            backend, kind = backend_of(network), "custom"
        self.backend_impl: FlowBackend = choose_backend(backend)  # the library, chosen once
        self.backend, self.kind = backend, kind
        if network is None:
            network = self.backend_impl.build(kind, self.features, self.context_features,
                                              int(transforms), tuple(hidden), dict(options))
        self.network = network
        if base != "normal":
            self.backend_impl.use_base(self.network, base, self.features)
        if inverse:
            self.backend_impl.invert(self.network)

    def _check_context(self, context: Tensor | None) -> None:
        if self.context_features and context is None:
            raise ValueError(f"this flow is conditional on {self.context_features} context "
                             f"features; call flow(context) with context of shape (..., "
                             f"{self.context_features})")
        if context is not None:
            if not self.context_features:
                raise ValueError("this flow is unconditional (context=0) but got a context; "
                                 "build it with Flow(features, context=C) to condition on one")
            if context.shape[-1] != self.context_features:
                raise ValueError(f"context has {context.shape[-1]} features (shape "
                                 f"{tuple(context.shape)}) but the flow expects "
                                 f"{self.context_features}")

    def forward(self, context: Tensor | None = None) -> FlowDistribution:
        """The distribution p(x | context); batch shape ``context.shape[:-1]``."""
        self._check_context(context)
        return FlowDistribution(self.backend_impl.distribution(self.network, self.features, context))

    def transform(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""The map to the base space and its log-Jacobian: z = f(x), log |det ∂f(x)/∂x|."""
        self._check_context(context)
        return self.backend_impl.transform(self.network, x, context)

    def base_log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """log p_Z(z), the base density the flow maps onto."""
        self._check_context(context)
        return self.backend_impl.base_log_prob(self.network, z, context)

    def extra_repr(self) -> str:
        return (f"features={self.features}, context={self.context_features}, "
                f"backend={self.backend!r}, kind={self.kind!r}")
