"""A minimal mini-batch SVI loop for diffusion programs (Trace_ELBO, Adam), used by demos and tests.

``probgen.fit`` is the general trainer; this loop exists so the diffusion family trains with
plain Pyro, with no dependency on the rest of probgen.
"""

from __future__ import annotations

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam
from torch import Tensor

__all__ = ["train"]


def train(model, data: Tensor | tuple[Tensor, ...], *, num_steps: int = 1000,
          batch_size: int | None = 128, lr: float = 1e-3, clip_norm: float = 10.0,
          seed: int | None = None, guide=None) -> list[float]:
    """Fit ``model.model``/``model.guide`` by SVI on random mini-batches; returns per-step losses
    (the negative objective per example, in nats when the objective is a bound).

    Mini-batch sites in the ``"data"`` plate are rescaled by N/B, so the loss is that of the
    whole data set; the returned values are divided by N.
    """
    batch = data if isinstance(data, tuple) else (data,)
    n = batch[0].shape[0]
    if seed is not None:
        torch.manual_seed(seed)
    size = min(batch_size or n, n)
    optim = ClippedAdam({"lr": lr, "clip_norm": clip_norm})
    svi = SVI(model.model, guide or model.guide, optim, loss=Trace_ELBO())
    model.train()
    losses = []
    for _ in range(int(num_steps)):
        index = torch.randint(0, n, (size,), device=batch[0].device)
        with pyro.poutine.scale(scale=n / size):
            loss = svi.step(*(part[index] for part in batch))
        losses.append(loss / n)
    model.eval()
    return losses
