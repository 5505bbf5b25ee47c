"""Samplers for energy-based models, vectorised over chains: Langevin, MALA, HMC, replay buffer."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["Energy", "ReplayBuffer", "hmc_step", "langevin_sample", "mala_sample", "mala_step"]

Energy = Callable[[torch.Tensor], torch.Tensor]


# --- samplers (vectorised over chains: x has shape (chains, D)) ---------------------------------
def _energy_and_grad(energy: Energy, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        value = energy(x)
        (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad.detach()


def langevin_sample(energy: Energy, x: torch.Tensor, *, num_steps: int, step_size: float,
                    noise_scale: float | None = None, grad_clip: float | None = None
                    ) -> torch.Tensor:
    r"""Unadjusted Langevin dynamics x ← x - ε ∇E(x) + η ξ, η = √(2ε) by default (SGLD; Welling & Teh, 2011)."""
    noise = math.sqrt(2 * step_size) if noise_scale is None else noise_scale
    for _ in range(num_steps):
        _, grad = _energy_and_grad(energy, x)
        if grad_clip is not None:
            grad = grad.clamp(-grad_clip, grad_clip)
        x = x.detach() - step_size * grad + noise * torch.randn_like(x)
    return x.detach()


def mala_step(energy: Energy, x: torch.Tensor, step_size: float
              ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One Metropolis-adjusted Langevin step: x' = x - (ε²/2)∇E(x) + ε ξ, accepted w.p. min(1, α) (Roberts & Tweedie, 1996).

    Returns the new states and a boolean ``(chains,)`` acceptance mask.
    """
    energy_x, grad_x = _energy_and_grad(energy, x)
    drift = 0.5 * step_size**2
    proposal = x.detach() - drift * grad_x + step_size * torch.randn_like(x)
    energy_p, grad_p = _energy_and_grad(energy, proposal)
    log_q_forward = -((proposal - x + drift * grad_x) ** 2).sum(-1) / (2 * step_size**2)
    log_q_backward = -((x - proposal + drift * grad_p) ** 2).sum(-1) / (2 * step_size**2)
    log_accept = energy_x - energy_p + log_q_backward - log_q_forward
    accepted = torch.log(torch.rand_like(log_accept)) < log_accept
    return torch.where(accepted[..., None], proposal, x.detach()), accepted


def mala_sample(energy: Energy, x: torch.Tensor, *, num_steps: int, step_size: float
                ) -> torch.Tensor:
    """``num_steps`` MALA steps on every chain of ``x`` (leaves exp(-E) invariant)."""
    for _ in range(num_steps):
        x, _ = mala_step(energy, x, step_size)
    return x


def hmc_step(energy: Energy, x: torch.Tensor, step_size: float, num_leapfrog: int = 10
             ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One HMC transition per chain: leapfrog on H = E(x) + |p|²/2, then a Metropolis test (Neal, 2011)."""
    x0 = x.detach()
    momentum = torch.randn_like(x0)
    energy0, grad = _energy_and_grad(energy, x0)
    hamiltonian0 = energy0 + 0.5 * (momentum**2).sum(-1)
    position, p = x0, momentum - 0.5 * step_size * grad
    for step in range(num_leapfrog):
        position = position + step_size * p
        energy_new, grad = _energy_and_grad(energy, position)
        if step < num_leapfrog - 1:
            p = p - step_size * grad
    p = p - 0.5 * step_size * grad
    log_accept = hamiltonian0 - (energy_new + 0.5 * (p**2).sum(-1))
    accepted = torch.log(torch.rand_like(log_accept)) < torch.nan_to_num(log_accept, nan=-math.inf)
    return torch.where(accepted[..., None], position, x0), accepted


class ReplayBuffer:
    r"""A buffer of past negative samples; chains restart from it w.p. 1 - ``reinit_prob`` (Du & Mordatch, 2019).

    Arguments:
        capacity: the most samples kept (oldest overwritten first).
        sample_init: ``sample_init(n)`` draws n fresh chain starts.
        reinit_prob: the chance a chain restarts from ``sample_init`` instead of the buffer.
    """

    def __init__(self, capacity: int, sample_init: Callable[[int], torch.Tensor], *,
                 reinit_prob: float = 0.05) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        if not 0.0 <= reinit_prob <= 1.0:
            raise ValueError(f"reinit_prob must lie in [0, 1], got {reinit_prob}")
        self.capacity, self.sample_init, self.reinit_prob = capacity, sample_init, reinit_prob
        self.samples: torch.Tensor | None = None
        self._next = 0

    def __len__(self) -> int:
        return 0 if self.samples is None else self.samples.shape[0]

    def draw(self, num: int) -> torch.Tensor:
        """``num`` chain starts: buffer entries, or fresh ones where a restart is drawn."""
        fresh = self.sample_init(num)
        if len(self) == 0:
            return fresh
        picks = self.samples[torch.randint(len(self), (num,), device=self.samples.device)]
        restart = torch.rand(num, device=fresh.device) < self.reinit_prob
        return torch.where(restart[:, None], fresh, picks)

    def push(self, x: torch.Tensor) -> None:
        x = x.detach()
        if self.samples is None:
            self.samples = x[: self.capacity].clone()
            self._next = self.samples.shape[0] % self.capacity
            return
        if len(self) < self.capacity:
            self.samples = torch.cat([self.samples, x])[: self.capacity]
            self._next = len(self) % self.capacity
            return
        index = (self._next + torch.arange(x.shape[0], device=x.device)) % self.capacity
        self.samples[index] = x[: self.capacity]
        self._next = int(index[-1] + 1) % self.capacity

    def state_dict(self) -> dict:
        """The stored samples and the next slot to overwrite (for checkpoints)."""
        return {"samples": self.samples, "next": self._next}

    def load_state_dict(self, state: dict) -> None:
        self.samples, self._next = state["samples"], int(state["next"])
