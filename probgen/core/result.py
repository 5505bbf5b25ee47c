"""LogLikelihood: the one way a likelihood leaves probgen."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from probgen.core.checkpoint import atomic_write_text

__all__ = ["KINDS", "DATA_SPACES", "LogLikelihood", "data_fingerprint"]

Kind = Literal["exact", "lower_bound", "estimate"]
DataSpace = Literal["discrete", "continuous", "dequantized"]
KINDS: tuple[str, ...] = ("exact", "lower_bound", "estimate")
DATA_SPACES: tuple[str, ...] = ("discrete", "continuous", "dequantized")


def data_fingerprint(*tensors: torch.Tensor) -> str:
    """A short hash of held-out data, so results on different data are never paired.

    Hashed at float32 precision, so the same data cast to a model's dtype keeps its fingerprint.
    """
    digest = hashlib.sha1()
    for tensor in tensors:
        array = tensor.detach().to("cpu", torch.float32).contiguous().numpy()
        digest.update(str(tuple(array.shape)).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class LogLikelihood:
    r"""Per-example log-likelihoods in nats, labelled with what they are.

    Fields:
        per_example: ``(n,)`` float64 tensor (CPU) of log p(x_i) values or bounds, in nats.
        kind: ``"exact"``, ``"lower_bound"`` (ELBO, IWAE-k, diffusion VLB) or ``"estimate"``
            (AIS, unbiased-in-p but not a bound on log p).
        estimator: the estimator's name, e.g. ``"exact"``, ``"elbo"``, ``"iwae"``, ``"ais"``.
        settings: the estimator's settings, e.g. ``{"k": 5000}``.
        num_dims: data dimensions per example, for bits/dim (the mean over examples for
            ragged data: bits/dim = -Σ log p / (Σ dims · ln 2)).
        data_space: ``"discrete"`` (a probability mass), ``"continuous"`` (a density) or
            ``"dequantized"`` (a density of dequantized discrete data: a lower bound on the
            discrete log-mass, Theis et al. 2016).
        data_id: fingerprint of the evaluated data (see :func:`data_fingerprint`), if known.
        estimator_stderr: Monte Carlo standard error of the mean from the estimator itself
            (e.g. AIS over chains), added in quadrature to the across-data stderr.

    Example:
        >>> ll = LogLikelihood(torch.tensor([-1.0, -3.0]), kind="exact", estimator="exact",
        ...                    num_dims=2, data_space="continuous")
        >>> round(ll.mean, 3), round(ll.stderr, 3)
        (-2.0, 1.0)
    """

    per_example: torch.Tensor
    kind: Kind
    estimator: str
    num_dims: float
    data_space: DataSpace
    settings: dict[str, Any] = field(default_factory=dict)
    data_id: str | None = None
    estimator_stderr: float = 0.0

    def __post_init__(self) -> None:
        values = torch.as_tensor(self.per_example).detach().to("cpu", torch.float64).reshape(-1)
        object.__setattr__(self, "per_example", values)
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.data_space not in DATA_SPACES:
            raise ValueError(f"data_space must be one of {DATA_SPACES}, got {self.data_space!r}")
        if values.numel() == 0:
            raise ValueError("a LogLikelihood needs at least one example")
        if not (isinstance(self.num_dims, (int, float)) and math.isfinite(self.num_dims)
                and self.num_dims > 0):
            raise ValueError(f"num_dims must be a positive number, got {self.num_dims}")
        if self.estimator_stderr < 0 or not math.isfinite(self.estimator_stderr):
            raise ValueError(f"estimator_stderr must be finite and >= 0, got {self.estimator_stderr}")
        if torch.isnan(values).any():
            raise ValueError("per-example log-likelihoods contain NaN; the estimator failed")
        if (values == float("inf")).any():
            row = int(torch.nonzero(values == float("inf"))[0])
            raise ValueError(f"per-example log-likelihood is +inf (first: row {row}): a degenerate "
                             "density (a scale collapsed to zero on that point); fix the model, "
                             "e.g. bound its scales away from zero")

    @property
    def num_examples(self) -> int:
        return self.per_example.numel()

    @property
    def mean(self) -> float:
        """Mean log-likelihood per example, in nats."""
        return float(self.per_example.mean())

    @property
    def stderr(self) -> float:
        r"""Standard error of the mean: sqrt(s²/n + estimator_stderr²), s² the sample variance."""
        n = self.num_examples
        across = float(self.per_example.std(unbiased=True)) / math.sqrt(n) if n > 1 else 0.0
        return math.sqrt(across**2 + self.estimator_stderr**2)

    @property
    def nll(self) -> float:
        """Mean negative log-likelihood in nats (the number papers tabulate)."""
        return -self.mean

    @property
    def bits_per_dim(self) -> float:
        r"""-mean / (num_dims · ln 2)."""
        return -self.mean / (self.num_dims * math.log(2.0))

    @property
    def bits_per_dim_stderr(self) -> float:
        return self.stderr / (self.num_dims * math.log(2.0))

    @property
    def label(self) -> str:
        """e.g. ``"lower_bound (iwae, k=5000)"``."""
        extra = ", ".join(f"{k}={v}" for k, v in sorted(self.settings.items()))
        return f"{self.kind} ({self.estimator}{', ' + extra if extra else ''})"

    def shifted(self, offset: torch.Tensor | float, *, data_space: DataSpace | None = None,
                kind: Kind | None = None) -> LogLikelihood:
        """Add a per-example (or scalar) log-Jacobian or constant, e.g. a change of data space."""
        offset = torch.as_tensor(offset, dtype=torch.float64).expand_as(self.per_example)
        return LogLikelihood(
            self.per_example + offset, kind=kind or self.kind, estimator=self.estimator,
            num_dims=self.num_dims, data_space=data_space or self.data_space,
            settings=dict(self.settings), data_id=self.data_id,
            estimator_stderr=self.estimator_stderr,
        )

    @classmethod
    def concat(cls, parts: list[LogLikelihood]) -> LogLikelihood:
        """Join results on disjoint chunks of data evaluated with the same estimator."""
        if not parts:
            raise ValueError("concat needs at least one LogLikelihood")
        first = parts[0]
        for part in parts[1:]:
            same = (part.kind, part.estimator, part.num_dims, part.data_space, part.settings)
            if same != (first.kind, first.estimator, first.num_dims, first.data_space, first.settings):
                raise ValueError("can only concat results of the same kind, estimator, settings and space")
        counts = torch.tensor([p.num_examples for p in parts], dtype=torch.float64)
        total = counts.sum()
        # Estimator errors of the chunk means combine as errors of a weighted mean.
        est = float(torch.sqrt(((counts / total) ** 2 * torch.tensor(
            [p.estimator_stderr**2 for p in parts], dtype=torch.float64)).sum()))
        return cls(torch.cat([p.per_example for p in parts]), kind=first.kind,
                   estimator=first.estimator, num_dims=first.num_dims,
                   data_space=first.data_space, settings=dict(first.settings),
                   data_id=None, estimator_stderr=est)

    def to_dict(self, *, per_example: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind, "estimator": self.estimator, "settings": dict(self.settings),
            "num_dims": int(self.num_dims), "data_space": self.data_space,
            "data_id": self.data_id, "num_examples": self.num_examples,
            "mean": self.mean, "stderr": self.stderr, "nll": self.nll,
            "bits_per_dim": self.bits_per_dim, "estimator_stderr": self.estimator_stderr,
        }
        if per_example:
            out["per_example"] = self.per_example.tolist()
        return out

    def to_json(self, path: str | None = None, **kwargs: Any) -> str:
        text = json.dumps(self.to_dict(**kwargs), indent=1)
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogLikelihood:
        if "per_example" not in data:
            raise ValueError("this dict has no per_example values; save with per_example=True")
        return cls(torch.tensor(data["per_example"], dtype=torch.float64), kind=data["kind"],
                   estimator=data["estimator"], num_dims=int(data["num_dims"]),
                   data_space=data["data_space"], settings=dict(data.get("settings", {})),
                   data_id=data.get("data_id"),
                   estimator_stderr=float(data.get("estimator_stderr", 0.0)))

    @classmethod
    def from_json(cls, path: str) -> LogLikelihood:
        with open(path) as f:
            try:
                data = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise ValueError(f"{path} is not a LogLikelihood JSON file ({error}); pass a file "
                                 "written by LogLikelihood.to_json") from None
        return cls.from_dict(data)

    def __repr__(self) -> str:
        return (f"LogLikelihood(mean={self.mean:.4f} ± {self.stderr:.4f} nats, {self.label}, "
                f"n={self.num_examples}, {self.data_space}, {self.bits_per_dim:.4f} bits/dim)")
