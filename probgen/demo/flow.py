"""``probgen demo``: NSF and MAF flows on iris, exact log-likelihoods beside the GMMs."""

from __future__ import annotations

from collections.abc import Callable

from probgen.core.result import LogLikelihood
from probgen.demo.registry import DemoData, DemoEntry
from probgen.evaluate.api import evaluate
from probgen.infer.fit import fit
from probgen.models.flow import FlowModel

__all__ = ["demo_entries"]


def demo_entries(smoke: bool) -> list[DemoEntry]:
    def runner(kind: str) -> Callable[[DemoData, str], LogLikelihood]:
        def run(data: DemoData, out_dir: str) -> LogLikelihood:
            train, test = data.train[0].double(), data.test[0].double()
            model = FlowModel(train.shape[1], kind=kind, transforms=2, hidden=(32, 32)).double()
            fit(model, train, num_steps=30 if smoke else 600, optim=5e-3, seed=0,
                progress=False)
            return evaluate(model, test, estimator="exact")

        return run

    return [DemoEntry("iris", f"flow-{kind} (SVI, exact)", runner(kind)) for kind in ("nsf", "maf")]
