"""Denoiser networks for diffusion models: a Fourier time embedding and a residual MLP ε-network."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["FourierTimeEmbedding", "GaussianResidualDenoiser", "MLPDenoiser"]


class FourierTimeEmbedding(nn.Module):
    r"""Embeds t ∈ [0, 1] as [sin(2π f_k t), cos(2π f_k t)], f_k geometric in [1, max_frequency].

    (Vaswani et al., 2017; Ho et al., 2020.) Input ``(...)``, output ``(..., features)``.

    Example:
        >>> FourierTimeEmbedding(16)(torch.rand(3, 5)).shape
        torch.Size([3, 5, 16])
    """

    def __init__(self, features: int = 32, max_frequency: float = 1000.0) -> None:
        super().__init__()
        if features < 2 or features % 2:
            raise ValueError(f"features must be an even integer >= 2, got {features}")
        half = features // 2
        frequencies = torch.exp(torch.linspace(0.0, math.log(max_frequency), half))
        self.register_buffer("frequencies", 2 * math.pi * frequencies)

    def forward(self, t: Tensor) -> Tensor:
        angles = t.unsqueeze(-1) * self.frequencies.to(t.dtype)  # (..., features / 2)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class _ResidualBlock(nn.Module):
    def __init__(self, features: int, time_features: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(features)
        self.time = nn.Linear(time_features, features)
        self.linear1 = nn.Linear(features, features)
        self.linear2 = nn.Linear(features, features)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, time: Tensor) -> Tensor:
        update = self.linear1(self.act(self.norm(h))) + self.time(time)
        return h + self.linear2(self.act(update))


class MLPDenoiser(nn.Module):
    r"""ε̂(z_t, t): a residual MLP on vectors ``(..., features)`` with times ``(...)``.

    The output layer starts at zero, so an untrained denoiser predicts ε̂ = 0 and the diffusion
    loss starts finite and well scaled.

    Arguments:
        features: size of z.
        hidden_features: width of each residual block (all equal) — its length is the depth.
        time_features: size of the Fourier time embedding.

    Example:
        >>> net = MLPDenoiser(4, hidden_features=(32, 32))
        >>> net(torch.randn(10, 4), torch.rand(10)).shape
        torch.Size([10, 4])
    """

    def __init__(self, features: int, hidden_features: Sequence[int] = (128, 128, 128),
                 time_features: int = 32) -> None:
        super().__init__()
        widths = list(map(int, hidden_features))
        if not widths or any(w != widths[0] for w in widths) or widths[0] <= 0:
            raise ValueError(f"hidden_features must be equal positive widths, got {widths}")
        width = widths[0]
        self.embed = FourierTimeEmbedding(time_features)
        self.time_mlp = nn.Sequential(nn.Linear(time_features, width), nn.SiLU())
        self.input = nn.Linear(int(features), width)
        self.blocks = nn.ModuleList(_ResidualBlock(width, width) for _ in widths)
        self.output = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, int(features)))
        nn.init.zeros_(self.output[-1].weight)
        nn.init.zeros_(self.output[-1].bias)

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=z.dtype, device=z.device).expand(z.shape[:-1])
        time = self.time_mlp(self.embed(t))  # (..., width)
        h = self.input(z)
        for block in self.blocks:
            h = block(h, time)
        return self.output(h)


class GaussianResidualDenoiser(nn.Module):
    r"""ε̂(z_t, t) = σ_t z_t + net(z_t, t): the N(0, I)-optimal denoiser plus a learned residual.

    For z ~ N(0, I), E[ε | z_t] = σ_t z_t, so with ``net`` = 0 (an untrained
    :class:`MLPDenoiser` outputs 0) the diffusion prior starts as N(0, I) and its VLB as
    log N(z; 0, I) up to the endpoint gaps; training only moves it away where the data say so
    (LSGM's mixed score, Vahdat et al., 2021). The schedule is a plain reference, not a
    submodule, so its parameters keep one name.

    Example:
        >>> from probgen.diffusion.schedules import CosineSchedule
        >>> net = GaussianResidualDenoiser(MLPDenoiser(3, (8,)), CosineSchedule())
        >>> z, t = torch.randn(4, 3), torch.rand(4)
        >>> torch.allclose(net(z, t), CosineSchedule().alpha_sigma(t)[1].unsqueeze(-1) * z)
        True
    """

    def __init__(self, net: nn.Module, schedule: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.__dict__["schedule"] = schedule  # shared with the owner, not registered twice

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=z.dtype, device=z.device).expand(z.shape[:-1])
        _, sigma = self.schedule.alpha_sigma(t)
        return sigma.unsqueeze(-1) * z + self.net(z, t)
