r"""The flow libraries behind :class:`~probgen.distributions.flow.Flow`: one class per backend.

A backend builds a network of a kind, swaps its base and direction, and reads it as a
``torch`` distribution, a map to the base space (z = f(x), log |det ∂f(x)/∂x|) and a base
density. :class:`~probgen.distributions.flow.Flow` chooses its backend once, from
``backend=`` (:func:`choose_backend`), and calls it; nothing else switches on the name.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import torch
import zuko
from torch import Size, Tensor, nn
from torch.distributions import Distribution, constraints

__all__ = ["BACKENDS", "FLOW_BACKENDS", "FlowBackend", "NflowsBackend", "NflowsDistribution",
           "ZukoBackend", "backend_of", "choose_backend"]

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


class FlowBackend:
    """A flow library: what :class:`~probgen.distributions.flow.Flow` asks of it."""

    name: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]] = ()  # the kinds ``build`` makes

    def build(self, kind: str, features: int, context: int, transforms: int,
              hidden: Sequence[int], options: dict[str, Any]) -> nn.Module:
        """A new network of ``kind`` (``options`` go to the library's constructor)."""
        raise NotImplementedError

    def use_base(self, network: nn.Module, base: str, features: int) -> None:
        """Replace the standard normal base by ``base`` (``"diag_normal"``, ``"student_t"``)."""
        raise NotImplementedError

    def invert(self, network: nn.Module) -> None:
        """Swap the network's directions (sampling becomes the fast pass)."""
        raise NotImplementedError

    def distribution(self, network: nn.Module, features: int, context: Tensor | None) -> Distribution:
        """p(x | context) with ``rsample_and_log_prob``; batch shape ``context.shape[:-1]``."""
        raise NotImplementedError

    def transform(self, network: nn.Module, x: Tensor,
                  context: Tensor | None) -> tuple[Tensor, Tensor]:
        r"""z = f(x) and log |det ∂f(x)/∂x|."""
        raise NotImplementedError

    def base_log_prob(self, network: nn.Module, z: Tensor, context: Tensor | None) -> Tensor:
        """log p_Z(z)."""
        raise NotImplementedError


class ZukoBackend(FlowBackend):
    """zuko (``zuko.flows.<KIND>``, lazy distributions called with the context)."""

    name: ClassVar[str] = "zuko"
    kinds: ClassVar[tuple[str, ...]] = tuple(_ZUKO_KINDS)

    def build(self, kind: str, features: int, context: int, transforms: int,
              hidden: Sequence[int], options: dict[str, Any]) -> nn.Module:
        if kind not in _ZUKO_KINDS:
            raise ValueError(f"unknown zuko flow kind {kind!r}; choose one of {tuple(_ZUKO_KINDS)}")
        kwargs: dict[str, Any] = {"hidden_features": tuple(hidden), **options}
        if kind != "cnf":
            kwargs.setdefault("transforms", transforms)
        return _ZUKO_KINDS[kind](features, context, **kwargs)

    def use_base(self, network: nn.Module, base: str, features: int) -> None:
        if base == "diag_normal":
            network.base = zuko.lazy.UnconditionalDistribution(
                zuko.distributions.DiagNormal, torch.zeros(features), torch.ones(features))
        else:
            network.base = _StudentTBase(features)

    def invert(self, network: nn.Module) -> None:
        network.transform = network.transform.inv

    def distribution(self, network: nn.Module, features: int, context: Tensor | None) -> Distribution:
        return network(context)

    def transform(self, network: nn.Module, x: Tensor,
                  context: Tensor | None) -> tuple[Tensor, Tensor]:
        dist = network(context)
        z, ladj = dist.transform.call_and_ladj(x)
        if dist.reinterpreted:
            ladj = ladj.flatten(-dist.reinterpreted).sum(-1)
        return z, ladj

    def base_log_prob(self, network: nn.Module, z: Tensor, context: Tensor | None) -> Tensor:
        return network(context).base.log_prob(z)


class NflowsBackend(FlowBackend):
    """nflows (an ``nflows.flows.Flow`` of MADE/coupling nets, read through
    :class:`NflowsDistribution`)."""

    name: ClassVar[str] = "nflows"
    kinds: ClassVar[tuple[str, ...]] = _NFLOWS_KINDS

    def build(self, kind: str, features: int, context: int, transforms: int,
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

    def use_base(self, network: nn.Module, base: str, features: int) -> None:
        if base == "student_t":
            raise ValueError("base='student_t' needs backend='zuko'")
        from nflows.distributions import DiagonalNormal

        network._distribution = DiagonalNormal([features])

    def invert(self, network: nn.Module) -> None:
        from nflows.transforms import InverseTransform

        network._transform = InverseTransform(network._transform)

    def distribution(self, network: nn.Module, features: int, context: Tensor | None) -> Distribution:
        return NflowsDistribution(network, features, context)

    def transform(self, network: nn.Module, x: Tensor,
                  context: Tensor | None) -> tuple[Tensor, Tensor]:
        shape = x.shape[:-1]
        flat_context = None if context is None else context.expand(
            *shape, context.shape[-1]).reshape(-1, context.shape[-1])
        embedded = None if flat_context is None else network._embedding_net(flat_context)
        z, ladj = network._transform(x.reshape(-1, x.shape[-1]), context=embedded)
        return z.reshape(x.shape), ladj.reshape(shape)

    def base_log_prob(self, network: nn.Module, z: Tensor, context: Tensor | None) -> Tensor:
        shape = z.shape[:-1]
        flat_context = None if context is None else network._embedding_net(
            context.expand(*shape, context.shape[-1]).reshape(-1, context.shape[-1]))
        return network._distribution.log_prob(
            z.reshape(-1, z.shape[-1]), context=flat_context).reshape(shape)


FLOW_BACKENDS: dict[str, type[FlowBackend]] = {"zuko": ZukoBackend, "nflows": NflowsBackend}
BACKENDS: tuple[str, ...] = tuple(FLOW_BACKENDS)


def choose_backend(backend: str) -> FlowBackend:
    """The backend named ``backend`` (``"zuko"`` or ``"nflows"``)."""
    if backend not in FLOW_BACKENDS:
        raise ValueError(f"unknown flow backend {backend!r}; choose one of {BACKENDS}")
    return FLOW_BACKENDS[backend]()


def backend_of(network: nn.Module) -> str:
    """The name of the backend an existing network comes from."""
    return "nflows" if type(network).__module__.startswith("nflows") else "zuko"
