"""``probgen demo``: a small flow-matching model on standardized iris, scored by its ODE
log-likelihood (the exact divergence at d = 4: exact up to the solver tolerance)."""

from __future__ import annotations

import pyro
import torch

from probgen.core.result import LogLikelihood
from probgen.demo.registry import DemoData, DemoEntry, register_demo
from probgen.evaluate.api import evaluate
from probgen.infer.fit import fit
from probgen.models.flow_matching import FlowMatching

__all__ = ["demo_entries"]


@register_demo(order=70)
def demo_entries(smoke: bool) -> list[DemoEntry]:
    def run(data: DemoData, out_dir: str) -> LogLikelihood:
        torch.manual_seed(0)
        train_x = data.train[0].to(torch.float32)
        steps = 40 if smoke else 2000
        model = FlowMatching(train_x.shape[-1], hidden_features=(64, 64), time_features=16)
        fit(model, train_x, num_steps=steps, batch_size=120, seed=0, progress=False,
            optim=pyro.optim.ClippedAdam({"lr": 3e-3, "clip_norm": 10.0,
                                          "lrd": 0.05 ** (1 / steps)}))
        tolerance = 1e-3 if smoke else 1e-5
        return evaluate(model, data.test[0].to(torch.float32), atol=tolerance, rtol=tolerance)

    return [DemoEntry(dataset="iris", name="flow matching (ODE)", run=run)]
