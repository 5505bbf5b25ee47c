"""How training scores held-out data by name, filled in by ``probgen.evaluate`` on import.

``probgen.fit`` resolves ``validation_estimator="exact"`` (or ``"iwae"``, ...) here, so the
trainer never imports the evaluation package that itself trains (a held-out refit uses fit).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["Scorer", "register", "estimator_names", "scorer"]

# (model, batch, guide, estimator, seed) -> log p(x_n) estimate per example
Scorer = Callable[[Any, tuple, Callable, str, int], torch.Tensor]

_registered: dict[str, Callable] = {}


def register(names: Callable[[Any], tuple[str, ...]], score: Scorer) -> None:
    """Install the estimator names a model takes (``names(model)``) and the scorer behind them."""
    _registered.update(names=names, score=score)


def _get(key: str) -> Callable:
    if key not in _registered:
        raise RuntimeError("no estimators registered: import probgen (probgen.evaluate fills "
                           "them in) before asking for validation_estimator=")
    return _registered[key]


def estimator_names(model: Any) -> tuple[str, ...]:
    """The ``estimator=`` names held-out data of ``model`` can be scored with."""
    return tuple(_get("names")(model))


def scorer() -> Scorer:
    """The registered scorer: ``score(model, batch, guide, estimator, seed)`` per example."""
    return _get("score")
