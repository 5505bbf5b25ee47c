"""What the MNIST benchmarks share: where the data are, and the training loop."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pyro
import torch

import probgen
from probgen.core.checkpoint import atomic_save


def shared_data() -> Path | None:
    """The folder of the shared data sets ($PROBGEN_SHARED_DATA, or ../shared/data), if present."""
    for candidate in (os.environ.get("PROBGEN_SHARED_DATA"),
                      Path(probgen.__file__).parents[2] / "shared" / "data", "/work/shared/data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def model_budgets(models: str, minutes: str | None) -> tuple[list[str], list[float | None]]:
    """``--models a,b`` and ``--minutes 6,5`` as (names, minutes per model or None)."""
    names = models.split(",")
    budgets = [float(m) for m in minutes.split(",")] if minutes else [None] * len(names)
    if len(budgets) != len(names):
        raise SystemExit("--minutes needs one budget per model")
    return names, budgets


def train(vae: torch.nn.Module, loss: pyro.infer.ELBO, x_train: torch.Tensor, binarize, *,
          epochs: int, minutes: float | None, batch_size: int, lr: float, seed: int,
          final_lr: float | None = None, checkpoint: Path | None = None,
          checkpoint_every: int = 50) -> tuple[float, float, list]:
    """Fused torch Adam on the ELBO's gradients, each batch binarized afresh when ``binarize``
    is given; returns (epochs done, seconds, mean loss per example for each epoch).

    With ``minutes``, the first epoch's time fixes how many epochs fit the budget; the learning
    rate then decays from ``lr`` to ``final_lr`` on a cosine over those epochs. With
    ``checkpoint``, the state_dict is saved there (atomically) every ``checkpoint_every`` epochs
    and at the end.
    """
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr, fused=True)
    generator = torch.Generator().manual_seed(seed)
    n = len(x_train)
    steps_per_epoch = math.ceil(n / batch_size)
    started, steps, history = time.perf_counter(), 0, []
    planned = epochs
    vae.train()
    for epoch in range(epochs):
        if epoch >= planned:
            break
        order = torch.randperm(n, generator=generator).to(x_train.device)
        total, seen = 0.0, 0
        for start in range(0, n, batch_size):
            batch = x_train[order[start:start + batch_size]]
            batch = binarize(batch) if binarize is not None else batch
            optimizer.zero_grad()
            total += loss.loss_and_grads(vae.model, vae.guide, batch)  # backward() inside
            optimizer.step()
            seen += len(batch)
            steps += 1
        history.append(total / seen)  # mean loss per example seen this epoch
        elapsed = time.perf_counter() - started
        if minutes is not None and epoch == 0:
            planned = min(epochs, max(1, int(60 * minutes / elapsed)))
            print(f"epoch 1 took {elapsed:.1f} s: training {planned} epochs", flush=True)
        if final_lr is not None and planned > 1:
            progress = min(1.0, (epoch + 1) / (planned - 1))
            for group in optimizer.param_groups:
                group["lr"] = final_lr + 0.5 * (lr - final_lr) * (1 + math.cos(math.pi * progress))
        if checkpoint is not None and (epoch + 1) % checkpoint_every == 0:
            atomic_save(vae.state_dict(), checkpoint)
        if (epoch + 1) % 25 == 0:
            print(f"epoch {epoch + 1}/{planned}: loss {history[-1]:.2f}, {elapsed:.0f} s",
                  flush=True)
    if checkpoint is not None:
        atomic_save(vae.state_dict(), checkpoint)
    return steps / steps_per_epoch, time.perf_counter() - started, history
