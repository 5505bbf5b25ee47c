"""Multi-layer perceptrons that act on the last dimension and keep any leading batch shape."""

from __future__ import annotations

from collections.abc import Sequence

import torch  # noqa: F401  (the doctest uses it)
from torch import nn

__all__ = ["MLP", "activation"]

_ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "silu": nn.SiLU, "gelu": nn.GELU,
                "softplus": nn.Softplus, "leaky_relu": nn.LeakyReLU}


def activation(name: str) -> nn.Module:
    """An activation module by name (``relu``, ``elu``, ``tanh``, ``silu``, ``gelu``, ...)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


class MLP(nn.Sequential):
    r"""A fully connected network ``in_features -> hidden... -> out_features``.

    Acts on the last dimension, so inputs of shape ``(*batch, in_features)`` give outputs of shape
    ``(*batch, out_features)`` (particles and data points can share the leading dimensions).

    Arguments:
        in_features: input size.
        out_features: output size (no activation after the last layer).
        hidden_features: sizes of the hidden layers.
        activation: the name of the hidden activation.

    Example:
        >>> net = MLP(3, 2, hidden_features=(16, 16))
        >>> net(torch.randn(5, 7, 3)).shape
        torch.Size([5, 7, 2])
    """

    def __init__(self, in_features: int, out_features: int, hidden_features: Sequence[int] = (64, 64),
                 activation: str = "relu") -> None:
        sizes = [int(in_features), *map(int, hidden_features), int(out_features)]
        if any(size <= 0 for size in sizes):
            raise ValueError(f"layer sizes must be positive, got {sizes}")
        layers: list[nn.Module] = []
        for i, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(size_in, size_out))
            if i < len(sizes) - 2:
                layers.append(_activation(activation))
        super().__init__(*layers)
        self.in_features, self.out_features = sizes[0], sizes[-1]


# The MLP's argument named ``activation`` shadows the function inside __init__.
_activation = activation
