r"""Normalizing flows from zuko or nflows behind one interface, as Pyro distributions."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import zuko
from pyro.contrib.zuko import ZukoToPyro
from torch import Size, Tensor, nn
from torch.distributions import Distribution, constraints

__all__ = ["BACKENDS", "BASES", "Flow", "FlowDistribution", "NflowsDistribution", "flow_kinds"]

BACKENDS: tuple[str, ...] = ("zuko", "nflows")
BASES: tuple[str, ...] = ("normal", "diag_normal", "student_t")

# zuko flow classes by kind; every one takes (features, context, **kwargs).
_ZUKO_KINDS: dict[str, type[nn.Module]] = {
    "maf": zuko.flows.MAF,
    "nsf": zuko.flows.NSF,
    "realnvp": zuko.flows.RealNVP,
    "nice": zuko.flows.NICE,
    "naf": zuko.flows.NAF,
    "unaf": zuko.flows.UNAF,
    "sospf": zuko.flows.SOSPF,
    "bpf": zuko.flows.BPF,
    "cnf": zuko.flows.CNF,
}
_NFLOWS_KINDS: tuple[str, ...] = ("maf", "nsf", "realnvp")


def flow_kinds(backend: str = "zuko") -> tuple[str, ...]:
    """The flow kinds ``Flow(kind=...)`` builds for a backend."""
    _check_backend(backend)
    return tuple(_ZUKO_KINDS) if backend == "zuko" else _NFLOWS_KINDS


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown flow backend {backend!r}; choose one of {BACKENDS}")


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    # nflows' base distributions draw noise with torch.randn in the default dtype.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class NflowsDistribution(Distribution):
    r"""An ``nflows.flows.Flow`` with a context as a ``torch`` distribution with batch shapes.

    nflows works on ``(n, features)`` inputs with ``(n, context)`` contexts; this class
    flattens and broadcasts leading dimensions so shapes follow ``torch.distributions``.

    Arguments:
        net: an ``nflows.flows.base.Flow``.
        features: the number of features (the event size).
        context: a context of shape ``(*batch_shape, C)`` or None.
        batch_shape: defaults to ``context.shape[:-1]`` (``()`` without context).
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, net: nn.Module, features: int, context: Tensor | None = None,
                 batch_shape: Size | None = None) -> None:
        self.net, self.context = net, context
        if batch_shape is None:
            batch_shape = context.shape[:-1] if context is not None else Size()
        super().__init__(Size(batch_shape), Size([features]), validate_args=False)

    def _flat_context(self, shape: Size) -> Tensor | None:
        if self.context is None:
            return None
        return self.context.expand(*shape, self.context.shape[-1]).reshape(-1, self.context.shape[-1])

    def log_prob(self, x: Tensor) -> Tensor:
        shape = torch.broadcast_shapes(x.shape[:-1], self.batch_shape)
        flat_x = x.expand(*shape, x.shape[-1]).reshape(-1, x.shape[-1])  # (n, D)
        return self.net.log_prob(flat_x, context=self._flat_context(shape)).reshape(shape)

    def rsample_and_log_prob(self, sample_shape: Size = Size()) -> tuple[Tensor, Tensor]:
        sample_shape = Size(sample_shape)
        shape = sample_shape + self.batch_shape
        dtype = next(self.net.parameters()).dtype
        with _default_dtype(dtype):
            if self.context is None:
                x, log_prob = self.net.sample_and_log_prob(max(shape.numel(), 1))
            else:
                # nflows returns (contexts, samples, D) for a (contexts, C) context.
                context = self._flat_context(self.batch_shape)
                x, log_prob = self.net.sample_and_log_prob(max(sample_shape.numel(), 1), context)
                x, log_prob = x.transpose(0, 1), log_prob.transpose(0, 1)
        return x.reshape(*shape, -1), log_prob.reshape(shape)

    def rsample(self, sample_shape: Size = Size()) -> Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def expand(self, batch_shape: Size, _instance: Any = None) -> NflowsDistribution:
        return NflowsDistribution(self.net, self.event_shape[0], self.context, Size(batch_shape))


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


class _StudentTBase(nn.Module):
    """A lazy Student-t base with learnable degrees of freedom (Jaini et al., 2020)."""

    def __init__(self, features: int, df: float = 5.0) -> None:
        super().__init__()
        self.log_df = nn.Parameter(torch.full((features,), math.log(df)))
        self.register_buffer("loc", torch.zeros(features))

    def forward(self, context: Tensor | None = None) -> Distribution:
        df = self.log_df.exp()
        return torch.distributions.Independent(
            torch.distributions.StudentT(df, self.loc, torch.ones_like(self.loc)), 1)


def _zuko_base(base: str, features: int) -> nn.Module:
    if base == "diag_normal":
        return zuko.lazy.UnconditionalDistribution(
            zuko.distributions.DiagNormal, torch.zeros(features), torch.ones(features))
    return _StudentTBase(features)


def _build_zuko(kind: str, features: int, context: int, transforms: int,
                hidden: Sequence[int], options: dict[str, Any]) -> nn.Module:
    if kind not in _ZUKO_KINDS:
        raise ValueError(f"unknown zuko flow kind {kind!r}; choose one of {tuple(_ZUKO_KINDS)}")
    kwargs: dict[str, Any] = {"hidden_features": tuple(hidden), **options}
    if kind != "cnf":
        kwargs.setdefault("transforms", transforms)
    return _ZUKO_KINDS[kind](features, context, **kwargs)


def _build_nflows(kind: str, features: int, context: int, transforms: int,
                  hidden: Sequence[int], options: dict[str, Any]) -> nn.Module:
    from nflows import distributions, flows
    from nflows import nn as nflows_nn
    from nflows import transforms as nft

    if kind not in _NFLOWS_KINDS:
        raise ValueError(f"unknown nflows flow kind {kind!r}; choose one of {_NFLOWS_KINDS} "
                         f"(or backend='zuko' for {tuple(_ZUKO_KINDS)})")
    if len(set(hidden)) != 1:
        raise ValueError(f"nflows networks have equal hidden widths; got hidden={tuple(hidden)}; "
                         "pass e.g. hidden=(128, 128) or use backend='zuko'")
    width, depth = int(hidden[0]), len(hidden)
    context_features = context or None
    layers: list[nn.Module] = []
    for i in range(transforms):
        if kind == "maf":
            layers += [nft.ReversePermutation(features), nft.MaskedAffineAutoregressiveTransform(
                features, width, context_features=context_features, num_blocks=depth - 1,
                use_residual_blocks=False, **options)]
        elif kind == "nsf":
            options = {"num_bins": 8, "tails": "linear", "tail_bound": 5.0, **options}
            layers += [nft.ReversePermutation(features),
                       nft.MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                           features, width, context_features=context_features,
                           num_blocks=depth - 1, use_residual_blocks=False, **options)]
        else:  # realnvp: affine coupling on alternating halves
            mask = (torch.arange(features) % 2 == i % 2).int() * 2 - 1

            def make_net(in_features: int, out_features: int) -> nn.Module:
                return nflows_nn.nets.ResidualNet(in_features, out_features, width,
                                                  context_features=context_features,
                                                  num_blocks=max(depth - 1, 1))

            layers.append(nft.AffineCouplingTransform(mask, make_net, **options))
    return flows.Flow(nft.CompositeTransform(layers), distributions.StandardNormal([features]))


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
            backend = "nflows" if type(network).__module__.startswith("nflows") else "zuko"
            kind = "custom"
        _check_backend(backend)
        self.backend, self.kind = backend, kind
        if network is None:
            build = _build_zuko if backend == "zuko" else _build_nflows
            network = build(kind, self.features, self.context_features, int(transforms),
                            tuple(hidden), dict(options))
        self.network = network
        if base != "normal":
            if backend == "nflows":
                if base == "student_t":
                    raise ValueError("base='student_t' needs backend='zuko'")
                from nflows.distributions import DiagonalNormal

                self.network._distribution = DiagonalNormal([self.features])
            else:
                self.network.base = _zuko_base(base, self.features)
        if inverse:
            if backend == "zuko":
                self.network.transform = self.network.transform.inv
            else:
                from nflows.transforms import InverseTransform

                self.network._transform = InverseTransform(self.network._transform)

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
        if self.backend == "zuko":
            return FlowDistribution(self.network(context))
        return FlowDistribution(NflowsDistribution(self.network, self.features, context))

    def transform(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""The map to the base space and its log-Jacobian: z = f(x), log |det ∂f(x)/∂x|."""
        self._check_context(context)
        if self.backend == "zuko":
            dist = self.network(context)
            z, ladj = dist.transform.call_and_ladj(x)
            if dist.reinterpreted:
                ladj = ladj.flatten(-dist.reinterpreted).sum(-1)
            return z, ladj
        shape = x.shape[:-1]
        flat_context = None if context is None else context.expand(
            *shape, context.shape[-1]).reshape(-1, context.shape[-1])
        embedded = None if flat_context is None else self.network._embedding_net(flat_context)
        z, ladj = self.network._transform(x.reshape(-1, x.shape[-1]), context=embedded)
        return z.reshape(x.shape), ladj.reshape(shape)

    def base_log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """log p_Z(z), the base density the flow maps onto."""
        self._check_context(context)
        if self.backend == "zuko":
            return self.network(context).base.log_prob(z)
        shape = z.shape[:-1]
        flat_context = None if context is None else self.network._embedding_net(
            context.expand(*shape, context.shape[-1]).reshape(-1, context.shape[-1]))
        return self.network._distribution.log_prob(
            z.reshape(-1, z.shape[-1]), context=flat_context).reshape(shape)

    def extra_repr(self) -> str:
        return (f"features={self.features}, context={self.context_features}, "
                f"backend={self.backend!r}, kind={self.kind!r}")
