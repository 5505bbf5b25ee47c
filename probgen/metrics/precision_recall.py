"""Improved precision and recall: k-NN manifolds of real and generated features."""

from __future__ import annotations

from typing import Any

import torch

from probgen.core.validate import check_size
from probgen.metrics.features import as_features, check_count, check_pair, check_pairwise_cost
from probgen.metrics.pairwise import inside_any_ball, kth_neighbour_squared_radii
from probgen.metrics.result import MetricResult

__all__ = ["precision", "recall", "precision_recall"]


def _coverage(reference: torch.Tensor, queries: torch.Tensor, k: int) -> float:
    """Fraction of ``queries`` inside the k-NN manifold ∪_j B(r_j, NN_k(r_j)) of ``reference``."""
    squared_radii = kth_neighbour_squared_radii(reference, k)
    return float(inside_any_ball(queries, reference, squared_radii).double().mean())


def _prepared(real: Any, generated: Any, k: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    k = check_size("k", k)
    real, generated = as_features(real, name="real"), as_features(generated, name="generated")
    check_pair(real, generated)
    why = f"a k-NN manifold with k={k} (k + 1 points)"
    check_count(real, k + 1, name="real", why=why)
    check_count(generated, k + 1, name="generated", why=why)
    total = len(real) + len(generated)
    check_pairwise_cost(total, total, real.shape[1], what="the k-NN manifolds")
    return real, generated, k


def _result(name: str, value: float, real: torch.Tensor, generated: torch.Tensor,
            k: int) -> MetricResult:
    return MetricResult(name, value, None, {"k": k, "num_real": len(real),
                                           "num_generated": len(generated)},
                        higher_is_better=True)


def precision(real: Any, generated: Any, *, k: int = 3) -> MetricResult:
    r"""Improved precision: (1/M) Σ_j 1[g_j ∈ ∪_i B(r_i, NN_k(r_i))] (Kynkäänniemi et al., 2019).

    The fraction of generated samples inside the real manifold: the union of balls around each
    real sample with radius its distance to its k-th nearest real neighbour (Euclidean, balls
    closed). Fidelity: low precision means samples off the data.

    Arguments:
        real: ``(n, d)`` features (or ``(n, *image_shape)`` raw pixels, flattened).
        generated: ``(m, d)`` features from the same extractor.
        k: the neighbour defining each radius (3 in the paper).

    Returns:
        ``MetricResult("precision", value in [0, 1], stderr=None, settings)``.

    Example:
        >>> x = torch.randn(100, 2)
        >>> precision(x, x).value
        1.0
    """
    real, generated, k = _prepared(real, generated, k)
    return _result("precision", _coverage(real, generated, k), real, generated, k)


def recall(real: Any, generated: Any, *, k: int = 3) -> MetricResult:
    r"""Improved recall: (1/N) Σ_i 1[r_i ∈ ∪_j B(g_j, NN_k(g_j))] (Kynkäänniemi et al., 2019).

    The fraction of real samples inside the generated manifold (as :func:`precision` with the
    roles swapped). Coverage: low recall means modes of the data the model does not produce.

    Example:
        >>> x = torch.randn(100, 2)
        >>> recall(x, x + 100).value
        0.0
    """
    real, generated, k = _prepared(real, generated, k)
    return _result("recall", _coverage(generated, real, k), real, generated, k)


def precision_recall(real: Any, generated: Any, *, k: int = 3
                     ) -> tuple[MetricResult, MetricResult]:
    r"""``(precision(real, generated), recall(real, generated))`` with the same k
    (Kynkäänniemi et al., 2019), checking the inputs once.

    Example:
        >>> p, r = precision_recall(torch.randn(50, 3), torch.randn(60, 3))
        >>> p.name, r.settings["k"]
        ('precision', 3)
    """
    real, generated, k = _prepared(real, generated, k)
    return (_result("precision", _coverage(real, generated, k), real, generated, k),
            _result("recall", _coverage(generated, real, k), real, generated, k))
