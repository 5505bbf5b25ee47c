"""MetricResult: the one way a sample-quality number leaves probgen.metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from probgen.core.validate import is_number

__all__ = ["MetricResult"]


@dataclass(frozen=True)
class MetricResult:
    r"""A sample-quality metric of generated samples against real ones, labelled with its settings.

    Fields:
        name: the metric, as the function that computed it: ``"precision"``, ``"recall"``,
            ``"mmd2"``, ``"vendi"`` or ``"fid"`` (or a user's name, see :func:`probgen.compare`).
        value: the estimate.
        stderr: its standard error, when the estimator has one (``mmd2``: a jackknife), else
            ``None``. It covers the sampling noise of the finite sets, not a bias.
        settings: what the number depends on (``k``, the kernel and its bandwidth, the numbers
            of real and generated samples, ...): two results compare only when these agree.
        higher_is_better: ``True`` for precision, recall and Vendi; ``False`` for distances
            (MMD², FID); ``None`` when unknown (a plain number given to ``compare``).

    Example:
        >>> MetricResult("mmd2", 0.0123, 0.001, {"kernel": "rbf"}, higher_is_better=False)
        MetricResult(mmd2 = 0.0123 ± 0.001, kernel=rbf)
    """

    name: str
    value: float
    stderr: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    higher_is_better: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a metric needs a non-empty name, got {self.name!r}")
        if not is_number(self.value):
            raise TypeError(f"metric {self.name!r} has a value of type {type(self.value).__name__}; "
                            "pass a number (float(tensor) for a tensor)")
        object.__setattr__(self, "value", float(self.value))
        if self.stderr is not None:
            if not is_number(self.stderr):
                raise TypeError(f"metric {self.name!r} has a stderr of type "
                                f"{type(self.stderr).__name__}; pass a number or None")
            stderr = float(self.stderr)
            if not (math.isfinite(stderr) and stderr >= 0):
                raise ValueError(f"metric {self.name!r} has stderr {stderr}; it must be finite "
                                 "and >= 0, or None when there is none")
            object.__setattr__(self, "stderr", stderr)

    def __float__(self) -> float:
        return self.value

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "stderr": self.stderr,
                "settings": dict(self.settings), "higher_is_better": self.higher_is_better}

    def formatted(self, digits: int = 4) -> str:
        """``"0.0123 ± 0.0010"`` (or the value alone when there is no stderr)."""
        text = f"{self.value:.{digits}g}"
        return text if self.stderr is None else f"{text} ± {self.stderr:.{digits}g}"

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v:.4g}" if isinstance(v, float) else f", {k}={v}"
                        for k, v in self.settings.items() if not isinstance(v, (dict, list, tuple)))
        return f"MetricResult({self.name} = {self.formatted()}{extra})"
