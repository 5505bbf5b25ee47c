"""Velocity networks v(x, t) for flow matching and other continuous normalizing flows."""

from __future__ import annotations

from collections.abc import Sequence

from probgen.nn.denoiser import FourierTimeEmbedding, MLPDenoiser

__all__ = ["MLPVelocity"]


class MLPVelocity(MLPDenoiser):
    r"""v(x, t): the residual MLP of :class:`~probgen.nn.denoiser.MLPDenoiser` with a
    low-frequency time embedding (frequencies up to ``max_frequency`` per unit time).

    An ODE solver steps over t, so a velocity that oscillates fast in t costs steps: diffusion's
    embedding (up to 1000 cycles) made an adaptive solver take thousands of steps on a trained
    flow-matching field; a few cycles over [0, 1] are enough for its smooth t-dependence.
    The output layer starts at zero (v = 0: the flow starts as the identity).

    Example:
        >>> import torch
        >>> net = MLPVelocity(4, hidden_features=(32, 32))
        >>> net(torch.randn(10, 4), torch.rand(10)).shape
        torch.Size([10, 4])
    """

    def __init__(self, features: int, hidden_features: Sequence[int] = (128, 128, 128),
                 time_features: int = 32, max_frequency: float = 8.0) -> None:
        super().__init__(features, hidden_features, time_features)
        self.embed = FourierTimeEmbedding(time_features, max_frequency)
