"""Multi-layer perceptrons that act on the last dimension and keep any leading batch shape."""

from __future__ import annotations

from collections.abc import Sequence

import torch  # noqa: F401  (the doctest uses it)
from torch import nn

__all__ = ["MLP", "activation", "NORMALIZATIONS", "hidden_layer"]

NORMALIZATIONS = (None, "layer")

_ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "silu": nn.SiLU, "gelu": nn.GELU,
                "softplus": nn.Softplus, "leaky_relu": nn.LeakyReLU}


def activation(name: str) -> nn.Module:
    """An activation module by name (``relu``, ``elu``, ``tanh``, ``silu``, ``gelu``, ...)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def hidden_layer(size_in: int, size_out: int, act: str,
                 normalization: str | None = None) -> list[nn.Module]:
    """Linear, then layer normalization (``normalization="layer"``: per example, so the same
    in training and evaluation), then the activation."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    norm = [nn.LayerNorm(size_out)] if normalization == "layer" else []
    return [nn.Linear(size_in, size_out), *norm, activation(act)]


class MLP(nn.Sequential):
    r"""A fully connected network ``in_features -> hidden... -> out_features``.

    Acts on the last dimension, so inputs of shape ``(*batch, in_features)`` give outputs of shape
    ``(*batch, out_features)`` (particles and data points can share the leading dimensions).

    Arguments:
        in_features: input size.
        out_features: output size (no activation after the last layer).
        hidden_features: sizes of the hidden layers.
        activation: the name of the hidden activation.
        normalization: None, or ``"layer"``: layer normalization before each hidden activation
            (a per-example stand-in for batch normalization).

    Example:
        >>> net = MLP(3, 2, hidden_features=(16, 16))
        >>> net(torch.randn(5, 7, 3)).shape
        torch.Size([5, 7, 2])
    """

    def __init__(self, in_features: int, out_features: int, hidden_features: Sequence[int] = (64, 64),
                 activation: str = "relu", normalization: str | None = None) -> None:
        sizes = [int(in_features), *map(int, hidden_features), int(out_features)]
        if any(size <= 0 for size in sizes):
            raise ValueError(f"layer sizes must be positive, got {sizes}")
        layers: list[nn.Module] = []
        for size_in, size_out in zip(sizes[:-2], sizes[1:-1]):
            layers += hidden_layer(size_in, size_out, activation, normalization)
        layers.append(nn.Linear(sizes[-2], sizes[-1]))
        super().__init__(*layers)
        self.in_features, self.out_features = sizes[0], sizes[-1]
