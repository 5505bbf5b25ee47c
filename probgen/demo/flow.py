"""``probgen demo``: NSF and MAF flows on iris, exact log-likelihoods beside the GMMs."""

from __future__ import annotations

from collections.abc import Callable

from probgen.core.result import LogLikelihood
from probgen.data.bundled import train_test_split
from probgen.demo.registry import DemoData, DemoEntry, register_demo
from probgen.evaluate.api import evaluate
from probgen.infer.fit import fit
from probgen.models.flow import FlowModel

__all__ = ["demo_entries"]


@register_demo(order=20)
def demo_entries(smoke: bool) -> list[DemoEntry]:
    """NSF and MAF on iris, early-stopped on a validation fifth of the training rows.

    Iris is recorded to 0.1 cm, so its 120 training rows repeat values on a lattice; trained to
    convergence, a flow piles density onto those rows (MAF: train −0.57, test −13.09 ± 4.59
    nats after 600 steps; one test row at −119). Validation every 10 steps, patience 10, with
    the best parameters restored, stops before that (MAF −4.79, NSF −2.62 on the same split).
    """

    def runner(kind: str) -> Callable[[DemoData, str], LogLikelihood]:
        def run(data: DemoData, out_dir: str) -> LogLikelihood:
            train, test = data.train[0].double(), data.test[0].double()
            fit_index, validation_index = train_test_split(len(train), 0.2, seed=0)
            model = FlowModel(train.shape[1], kind=kind, transforms=2, hidden=(32, 32)).double()
            fit(model, train[fit_index], validation=train[validation_index],
                validate_every=10, patience=10, num_steps=30 if smoke else 1000, optim=5e-3,
                seed=0, progress=False)
            return evaluate(model, test, estimator="exact")

        return run

    return [DemoEntry("iris", f"flow-{kind} (SVI, exact)", runner(kind)) for kind in ("nsf", "maf")]
