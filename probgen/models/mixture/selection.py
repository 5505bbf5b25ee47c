"""Choosing the number of mixture components: held-out exact log-likelihood and BIC."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from probgen.core.result import LogLikelihood
from probgen.evaluate.api import evaluate
from probgen.infer.fit import fit
from probgen.models.mixture.model import GaussianMixture, GaussianMixturePrior

__all__ = ["ModelSelection", "heldout_log_likelihood", "select_num_components"]


def heldout_log_likelihood(model: GaussianMixture, x: Tensor) -> LogLikelihood:
    """Exact held-out log-likelihood as a LogLikelihood (``probgen.evaluate``, estimator exact)."""
    return evaluate(model, x, estimator="exact")


@dataclass(frozen=True)
class ModelSelection:
    """Held-out exact log-likelihoods and training BICs over K; pass ``heldout`` to compare."""

    heldout: dict[str, LogLikelihood]
    bic: dict[str, float]
    models: dict[str, GaussianMixture]

    @property
    def best_by_heldout(self) -> str:
        """The name with the highest held-out mean log-likelihood."""
        return max(self.heldout, key=lambda name: self.heldout[name].mean)

    @property
    def best_by_bic(self) -> str:
        """The name with the lowest BIC."""
        return min(self.bic, key=self.bic.__getitem__)


def select_num_components(train: Tensor, test: Tensor, candidates: tuple[int, ...] = (1, 2, 3, 4),
                          *, covariance: str = "full", prior: GaussianMixturePrior | None = None,
                          num_steps: int = 200, seed: int = 0,
                          reg_covar: float = 1e-6) -> ModelSelection:
    """Fit a GMM by EM (``probgen.fit(..., method="em")``, at most ``num_steps`` iterations)
    for each K in ``candidates``; score on ``test`` (exact) and by BIC.

    Example:
        >>> x = torch.randn(200, 2, dtype=torch.float64)
        >>> sel = select_num_components(x[:150], x[150:], (1, 2))
        >>> sorted(sel.heldout)
        ['gmm-full-K1', 'gmm-full-K2']
    """
    heldout, bic, models = {}, {}, {}
    for num_components in candidates:
        name = f"gmm-{covariance}-K{num_components}"
        model = GaussianMixture(num_components, train.shape[1], covariance, reg_covar)
        model = model.to(device=train.device, dtype=train.dtype)
        fit(model, train, method="em", num_steps=num_steps, prior=prior, seed=seed, progress=False)
        heldout[name] = heldout_log_likelihood(model, test)
        bic[name] = model.bic(train)
        models[name] = model
    return ModelSelection(heldout, bic, models)
