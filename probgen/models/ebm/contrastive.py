"""Contrastive training of energy-based models: CD-k / PCD for RBMs, Langevin/HMC for neural EBMs."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from probgen.core.validate import validate_data

__all__ = [
    "ContrastiveResult",
    "ReplayBuffer",
    "hmc_step",
    "langevin_sample",
    "mala_sample",
    "mala_step",
    "train_cd",
    "train_ebm",
]

Energy = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ContrastiveResult:
    r"""What a contrastive training run did.

    Fields:
        losses: per step, the contrastive surrogate mean E(x⁺) - mean E(x⁻) (free energies for
            RBMs); its gradient is the CD / maximum-likelihood gradient estimate.
        reconstruction_errors: per step, mean squared error of one Gibbs reconstruction (RBMs)
            or the mean energy of the negatives (neural EBMs).
        model: the trained model.
        num_steps: parameter updates made.
        seconds: wall time.
        settings: the training settings.
    """

    losses: list[float]
    reconstruction_errors: list[float]
    model: torch.nn.Module
    num_steps: int
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)


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


# --- training loops --------------------------------------------------------------------------------
@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device):
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _batches(num_examples: int, batch_size: int, num_steps: int, device: torch.device):
    """Indices of ``num_steps`` mini-batches, reshuffled every pass over the data."""
    step = 0
    while step < num_steps:
        order = torch.randperm(num_examples, device=device)
        for start in range(0, num_examples - batch_size + 1, batch_size):
            if step == num_steps:
                return
            yield order[start:start + batch_size]
            step += 1


def _num_steps(num_examples: int, batch_size: int, num_steps: int | None, epochs: int | None) -> int:
    if (num_steps is None) == (epochs is None):
        raise ValueError("pass exactly one of num_steps and epochs")
    if epochs is not None:
        return max(1, epochs * (num_examples // batch_size))
    return int(num_steps)


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, leave=False)


def train_cd(rbm, data: Any, *, k: int = 1, persistent: bool = False, num_steps: int | None = None,
             epochs: int | None = None, batch_size: int = 100, lr: float = 0.05,
             momentum: float = 0.5, weight_decay: float = 2e-4, num_chains: int | None = None,
             seed: int | None = None, progress: bool = True,
             callbacks: Sequence[Callable[[int, float], Any]] = ()) -> ContrastiveResult:
    r"""Train an RBM by contrastive divergence: ∇θ ≈ ∇θ [mean F(v_data) - mean F(v⁻)] (Hinton, 2002).

    v⁻ is ``k`` block-Gibbs sweeps from the mini-batch (CD-k) or, with ``persistent=True``,
    from ``num_chains`` chains kept across updates (PCD; Tieleman, 2008). SGD with momentum
    and L2 weight decay; the base-rate model AIS anneals from is set from ``data`` first.
    ``callbacks`` are called as ``callback(step, loss)`` after every update.
    """
    x = validate_data(data[0] if isinstance(data, tuple) else data, name="data",
                      support="binary" if rbm.data_space == "discrete" else "real",
                      event_shape=rbm.event_shape())
    weight = rbm.weight
    x = x.to(device=weight.device, dtype=weight.dtype)
    if k < 1:
        raise ValueError(f"k (Gibbs sweeps per update) must be >= 1, got {k}")
    batch_size = min(batch_size, x.shape[0])
    total = _num_steps(x.shape[0], batch_size, num_steps, epochs)
    rbm.train()
    rbm.set_base_rate(x)
    optimizer = torch.optim.SGD(rbm.parameters(), lr=lr, momentum=momentum,
                                weight_decay=weight_decay)
    losses, errors = [], []
    start = time.perf_counter()
    with _seeded(seed, weight.device), _progress(total, progress, "cd") as bar:
        chains = rbm.init_chains(num_chains or batch_size) if persistent else None
        for step, index in enumerate(_batches(x.shape[0], batch_size, total, weight.device)):
            positive = x[index]  # (batch, V)
            with torch.no_grad():
                start_state = chains if persistent else positive
                negative = rbm.gibbs(start_state, k)
                if persistent:
                    chains = negative
                recon = rbm.sample_visible(rbm.sample_hidden(positive))
            loss = rbm.free_energy(positive).mean() - rbm.free_energy(negative).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            errors.append(float(((recon - positive) ** 2).mean()))
            for callback in callbacks:
                callback(step, losses[-1])
            bar.update()
    rbm.eval()
    settings = {"k": k, "persistent": persistent, "num_steps": total, "batch_size": batch_size,
                "lr": lr, "momentum": momentum, "weight_decay": weight_decay}
    return ContrastiveResult(losses, errors, rbm, total, time.perf_counter() - start, settings)


def train_ebm(ebm, data: Any, *, sampler: str = "langevin", num_steps: int | None = None,
              epochs: int | None = None, batch_size: int = 128, lr: float = 1e-3,
              sampler_steps: int = 20, step_size: float = 0.01, noise_scale: float | None = None,
              num_leapfrog: int = 5, buffer_size: int = 10000, reinit_prob: float = 0.05,
              energy_reg: float = 0.1, seed: int | None = None, progress: bool = True,
              callbacks: Sequence[Callable[[int, float], Any]] = ()) -> ContrastiveResult:
    r"""Train a neural EBM: ∇θ [mean E(x⁺) - mean E(x⁻) + α (mean E(x⁺)² + mean E(x⁻)²)] (Du & Mordatch, 2019).

    Negatives x⁻ come from ``sampler_steps`` of Langevin dynamics (``sampler="langevin"``,
    step ``step_size``, noise ``noise_scale`` = √(2·step) by default) or HMC transitions
    (``"hmc"``, ``num_leapfrog`` leapfrog steps of size ``step_size``), started from a replay
    buffer. Adam; the Gaussian base (chain restarts, AIS) is set from ``data`` first.
    """
    if sampler not in ("langevin", "hmc"):
        raise ValueError(f"sampler must be 'langevin' or 'hmc', got {sampler!r}")
    x = ebm.validate(data[0] if isinstance(data, tuple) else data)
    param = next(ebm.parameters())
    x = x.to(device=param.device, dtype=param.dtype)
    batch_size = min(batch_size, x.shape[0])
    total = _num_steps(x.shape[0], batch_size, num_steps, epochs)
    ebm.train()
    ebm.set_base_rate(x)
    base = ebm.base_distribution()
    buffer = ReplayBuffer(buffer_size, lambda n: base.sample((n,)), reinit_prob=reinit_prob)
    optimizer = torch.optim.Adam(ebm.parameters(), lr=lr)
    losses, negative_energies = [], []
    start = time.perf_counter()
    with _seeded(seed, param.device), _progress(total, progress, f"ebm ({sampler})") as bar:
        for step, index in enumerate(_batches(x.shape[0], batch_size, total, param.device)):
            positive = x[index]
            negative = buffer.draw(batch_size)
            if sampler == "langevin":
                negative = langevin_sample(ebm.energy, negative, num_steps=sampler_steps,
                                           step_size=step_size, noise_scale=noise_scale)
            else:
                for _ in range(sampler_steps):
                    negative, _ = hmc_step(ebm.energy, negative, step_size, num_leapfrog)
            buffer.push(negative)
            energy_pos, energy_neg = ebm.energy(positive), ebm.energy(negative)
            contrast = energy_pos.mean() - energy_neg.mean()
            loss = contrast + energy_reg * ((energy_pos**2).mean() + (energy_neg**2).mean())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(contrast.detach()))
            negative_energies.append(float(energy_neg.detach().mean()))
            for callback in callbacks:
                callback(step, losses[-1])
            bar.update()
    ebm.eval()
    settings = {"sampler": sampler, "num_steps": total, "batch_size": batch_size, "lr": lr,
                "sampler_steps": sampler_steps, "step_size": step_size,
                "buffer_size": buffer_size, "reinit_prob": reinit_prob, "energy_reg": energy_reg}
    return ContrastiveResult(losses, negative_energies, ebm, total, time.perf_counter() - start,
                             settings)
