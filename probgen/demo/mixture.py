"""``probgen demo``: full-covariance Gaussian mixtures on iris, fitted by MAP EM."""

from __future__ import annotations

from probgen.core.result import LogLikelihood
from probgen.demo.registry import DemoData, DemoEntry, register_demo
from probgen.infer.fit import fit
from probgen.models.mixture import GaussianMixture, GaussianMixturePrior, heldout_log_likelihood

__all__ = ["demo_entries"]


@register_demo(order=10)
def demo_entries(smoke: bool) -> list[DemoEntry]:
    """Full-covariance GMMs, K = 1..4, fitted by MAP EM (``probgen.fit(..., method="em")``).

    The conjugate prior (:class:`GaussianMixturePrior`, Fraley & Raftery defaults) keeps
    components with a handful of points from collapsing on 120 examples.
    """

    def runner(num_components: int):
        def run(data: DemoData, out_dir: str) -> LogLikelihood:
            train, test = data.train[0].double(), data.test[0].double()
            model = GaussianMixture(num_components, train.shape[1], "full").double()
            fit(model, train, method="em", num_steps=30 if smoke else 300,
                prior=GaussianMixturePrior(), seed=0, progress=False)
            return heldout_log_likelihood(model, test)

        return run

    return [DemoEntry("iris", f"gmm-full-K{k} (MAP EM)", runner(k)) for k in (1, 2, 3, 4)]
