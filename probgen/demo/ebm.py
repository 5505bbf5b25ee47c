"""``probgen demo``: an RBM on binarized digits, trained by PCD and scored by AIS."""

from __future__ import annotations

import torch

from probgen.core.result import LogLikelihood
from probgen.demo.registry import DemoData, DemoEntry, register_demo
from probgen.infer.fit import fit
from probgen.models.ebm import RBM
from probgen.models.ebm.ais import evaluate_ais

__all__ = ["demo_entries"]


@register_demo(order=50)
def demo_entries(smoke: bool) -> list[DemoEntry]:
    """An RBM on binarized digits, trained by PCD (``probgen.fit(..., method="pcd")``) and scored
    by AIS (kind estimate)."""

    def run(data: DemoData, out_dir: str) -> LogLikelihood:
        train = data.train[0].to(torch.float32)
        rbm = RBM(train.shape[1], 16 if smoke else 64, seed=0)
        fit(rbm, train, method="pcd", epochs=3 if smoke else 60, batch_size=64, optim=0.05,
            seed=0, progress=False)
        return evaluate_ais(rbm, data.test, num_chains=32 if smoke else 200,
                            num_betas=300 if smoke else 5000, seed=0)

    return [DemoEntry(dataset="digits", name="rbm (cd, ais)", run=run)]
