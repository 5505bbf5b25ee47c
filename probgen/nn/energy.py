"""Energy networks: x -> a scalar energy per example (no probability here)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["EnergyMLP"]


class EnergyMLP(nn.Module):
    r"""An MLP energy E_θ(x): R^D -> R with smooth (SiLU) activations, for Langevin/HMC sampling.

    Smooth activations keep ∇_x E continuous, which Langevin dynamics and HMC need
    (Du & Mordatch, 2019, use Swish for the same reason).

    Arguments:
        num_features: D, the size of one (flattened) example.
        hidden_sizes: widths of the hidden layers.
        spectral_norm: wrap the linear layers in spectral normalisation (keeps E Lipschitz,
            which stabilises contrastive training).

    Example:
        >>> net = EnergyMLP(2, hidden_sizes=(16, 16))
        >>> net(torch.randn(5, 2)).shape
        torch.Size([5])
    """

    def __init__(self, num_features: int, hidden_sizes: Sequence[int] = (64, 64), *,
                 spectral_norm: bool = False) -> None:
        super().__init__()
        if num_features <= 0:
            raise ValueError(f"num_features must be positive, got {num_features}")
        sizes = [num_features, *hidden_sizes]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            linear = nn.Linear(n_in, n_out)
            layers += [nn.utils.parametrizations.spectral_norm(linear) if spectral_norm else linear,
                       nn.SiLU()]
        layers.append(nn.Linear(sizes[-1], 1))
        self.net = nn.Sequential(*layers)
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Energies of ``x`` with shape ``(*batch, D)``; returns shape ``(*batch,)``."""
        if x.shape[-1] != self.num_features:
            raise ValueError(f"EnergyMLP expects {self.num_features} features per example, "
                             f"got shape {tuple(x.shape)}")
        return self.net(x).squeeze(-1)
