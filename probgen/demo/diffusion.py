"""``probgen demo``: a small continuous-time diffusion density on standardized iris (its VLB,
a lower bound)."""

from __future__ import annotations

import pyro
import torch

from probgen.core.result import LogLikelihood
from probgen.demo.registry import DemoData, DemoEntry, register_demo
from probgen.evaluate.api import evaluate
from probgen.infer.fit import fit
from probgen.models.diffusion import DiffusionDensity

__all__ = ["demo_entries"]


@register_demo(order=60)
def demo_entries(smoke: bool) -> list[DemoEntry]:
    def run(data: DemoData, out_dir: str) -> LogLikelihood:
        torch.manual_seed(0)
        train_x = data.train[0].to(torch.float32)
        model = DiffusionDensity(features=train_x.shape[-1], hidden_features=(64, 64))
        fit(model, train_x, num_steps=40 if smoke else 2000, batch_size=120, seed=0,
            optim=pyro.optim.ClippedAdam({"lr": 3e-3, "clip_norm": 10.0}), progress=False)
        return evaluate(model, data.test[0].to(torch.float32), estimator="vlb",
                        num_samples=8 if smoke else 64, seed=0)

    return [DemoEntry(dataset="iris", name="diffusion (VLB)", run=run)]
