r"""Noise schedules of variance-preserving diffusion, written as log-SNR curves λ(t) on t ∈ [0, 1].

Every schedule gives λ(t) = log(α_t² / σ_t²), decreasing in t, with α_t² = sigmoid(λ) and
σ_t² = sigmoid(-λ) so that α_t² + σ_t² = 1 (Kingma et al., 2021, "Variational Diffusion Models").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "NoiseSchedule",
    "LinearSchedule",
    "CosineSchedule",
    "LearnedSchedule",
    "make_schedule",
    "SCHEDULES",
]


class NoiseSchedule(nn.Module):
    r"""Base class: subclasses implement ``logsnr(t)``; α, σ and derivatives follow from it.

    ``logsnr_max`` = λ(0) sets the noise of the least-noisy latent z_0 (σ_0/α_0 = exp(-λ_max/2));
    ``logsnr_min`` = λ(1) sets how close q(z_1 | x) is to the N(0, I) prior.
    """

    def logsnr(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        r"""α_t = sqrt(sigmoid(λ_t)), σ_t = sqrt(sigmoid(-λ_t))."""
        logsnr = self.logsnr(t)
        return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()

    def logsnr_and_derivative(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """λ(t) and dλ/dt (by autograd, so every schedule gets it for free; dλ/dt < 0)."""
        with torch.enable_grad():
            t = torch.as_tensor(t).detach().requires_grad_(True)
            logsnr = self.logsnr(t)
            (derivative,) = torch.autograd.grad(logsnr.sum(), t, create_graph=torch.is_grad_enabled())
        if not torch.is_grad_enabled():
            logsnr = logsnr.detach()
        return logsnr, derivative

    @torch.no_grad()
    def time_of(self, logsnr: Tensor) -> Tensor:
        """The inverse t(λ) (bisection on the monotone λ(t); subclasses may give it in closed form)."""
        low, high = torch.zeros_like(logsnr), torch.ones_like(logsnr)
        for _ in range(60):
            middle = (low + high) / 2
            above = self.logsnr(middle) > logsnr
            low, high = torch.where(above, middle, low), torch.where(above, high, middle)
        return (low + high) / 2

    def endpoints(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """λ(0) and λ(1) as scalars of the dtype/device of ``like``."""
        ends = self.logsnr(torch.tensor([0.0, 1.0], dtype=like.dtype, device=like.device))
        return ends[0], ends[1]


def _check_range(logsnr_min: float, logsnr_max: float) -> None:
    if not logsnr_min < logsnr_max:
        raise ValueError(f"need logsnr_min < logsnr_max, got {logsnr_min} and {logsnr_max}")


class LinearSchedule(NoiseSchedule):
    r"""DDPM's linear β schedule in continuous time: α_t² = exp(-∫_0^t β), β linear in t.

    With ∫_0^t β(s) ds = β_0 t + (β_1 - β_0) t²/2, λ(t) = -log(expm1(∫_0^t β)); β_0 and β_1 are
    chosen so that λ(0) = logsnr_max and λ(1) = logsnr_min (Ho et al., 2020; Song et al., 2021).
    """

    def __init__(self, logsnr_min: float = -10.0, logsnr_max: float = 10.0) -> None:
        super().__init__()
        _check_range(logsnr_min, logsnr_max)
        self.logsnr_min, self.logsnr_max = float(logsnr_min), float(logsnr_max)
        # ∫β at t=0 and t=1 from λ = -log(expm1(∫β))  =>  ∫β = log1p(exp(-λ)).
        self.start = math.log1p(math.exp(-logsnr_max))
        self.end = math.log1p(math.exp(-logsnr_min))

    def logsnr(self, t: Tensor) -> Tensor:
        # Quadratic in t between the two ends with slope ratio beta_1 / beta_0 = 200 (DDPM's
        # 1e-4 .. 2e-2), written as integral = start + b0 t + (b1 - b0) t^2 / 2.
        span = self.end - self.start
        b0 = 2 * span / 201.0
        b1 = 200 * b0
        integral = self.start + b0 * t + (b1 - b0) * t**2 / 2
        return -torch.log(torch.expm1(integral))

    @torch.no_grad()
    def time_of(self, logsnr: Tensor) -> Tensor:
        b0 = 2 * (self.end - self.start) / 201.0
        half_curvature = 199 * b0 / 2
        excess = torch.nn.functional.softplus(-logsnr) - self.start  # integral - start
        return (-b0 + torch.sqrt(b0**2 + 4 * half_curvature * excess)) / (2 * half_curvature)


class CosineSchedule(NoiseSchedule):
    r"""Cosine schedule: λ(t) = -2 log tan(a t + b), clipped to [logsnr_min, logsnr_max].

    (Nichol & Dhariwal, 2021; the log-SNR form of Kingma et al., 2021.)
    """

    def __init__(self, logsnr_min: float = -10.0, logsnr_max: float = 10.0) -> None:
        super().__init__()
        _check_range(logsnr_min, logsnr_max)
        self.logsnr_min, self.logsnr_max = float(logsnr_min), float(logsnr_max)
        self.b = math.atan(math.exp(-0.5 * logsnr_max))
        self.a = math.atan(math.exp(-0.5 * logsnr_min)) - self.b

    def logsnr(self, t: Tensor) -> Tensor:
        return -2 * torch.log(torch.tan(self.a * t + self.b))

    @torch.no_grad()
    def time_of(self, logsnr: Tensor) -> Tensor:
        return (torch.atan(torch.exp(-0.5 * logsnr)) - self.b) / self.a


class _PositiveLinear(nn.Linear):
    """A linear layer with weights softplus(w) > 0, so the map is increasing."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, F.softplus(self.weight), self.bias)


class LearnedSchedule(NoiseSchedule):
    r"""VDM's learned schedule: λ(t) = -γ(t), γ a monotone network rescaled to [γ_0, γ_1].

    γ(t) = γ_0 + (γ_1 - γ_0) (ĝ(t) - ĝ(0)) / (ĝ(1) - ĝ(0)), ĝ(t) = l_1(t) + l_3(sigmoid(l_2(l_1(t))))
    with positive weights, and learnable ends γ_0 = -logsnr_max, γ_1 = γ_0 + softplus(·)
    (Kingma et al., 2021, appendix). The ends move the VLB; the interior shape only changes the
    variance of the continuous-time loss estimate, which this implementation does not minimize.
    """

    def __init__(self, logsnr_min: float = -10.0, logsnr_max: float = 10.0,
                 hidden_features: int = 64) -> None:
        super().__init__()
        _check_range(logsnr_min, logsnr_max)
        self.gamma_0 = nn.Parameter(torch.tensor(-float(logsnr_max)))
        span = float(logsnr_max - logsnr_min)
        self.gamma_span = nn.Parameter(torch.tensor(span + math.log(-math.expm1(-span))))
        self.l1 = _PositiveLinear(1, 1)
        self.l2 = _PositiveLinear(1, hidden_features)
        self.l3 = _PositiveLinear(hidden_features, 1, bias=False)

    def _raw(self, t: Tensor) -> Tensor:
        h = self.l1(t.unsqueeze(-1))
        return (h + self.l3(torch.sigmoid(self.l2(h)))).squeeze(-1)

    def logsnr(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=self.gamma_0.dtype, device=self.gamma_0.device)
        ends = self._raw(torch.tensor([0.0, 1.0], dtype=t.dtype, device=t.device))
        shape = (self._raw(t) - ends[0]) / (ends[1] - ends[0])
        gamma = self.gamma_0 + F.softplus(self.gamma_span) * shape
        return -gamma


SCHEDULES: dict[str, type[NoiseSchedule]] = {
    "linear": LinearSchedule, "cosine": CosineSchedule, "learned": LearnedSchedule,
}


def make_schedule(name: str, logsnr_min: float = -10.0, logsnr_max: float = 10.0) -> NoiseSchedule:
    """A schedule by name: ``"linear"``, ``"cosine"`` or ``"learned"``."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    return SCHEDULES[name](logsnr_min=logsnr_min, logsnr_max=logsnr_max)
