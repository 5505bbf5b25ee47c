"""LogLikelihood: the one way a likelihood leaves probgen."""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from probgen.core.checkpoint import atomic_write_text

__all__ = ["KINDS", "DATA_SPACES", "MAX_MAGNITUDE", "LogLikelihood", "data_fingerprint"]

Kind = Literal["exact", "lower_bound", "estimate"]
DataSpace = Literal["discrete", "continuous", "dequantized"]
KINDS: tuple[str, ...] = ("exact", "lower_bound", "estimate")
DATA_SPACES: tuple[str, ...] = ("discrete", "continuous", "dequantized")
MAX_MAGNITUDE = 1e300  # nats; beyond it the mean and stderr of float64 values overflow


_MAX_JSON_BYTES = 2**30  # 1 GiB: ~50 million per-example values


def _json_scalar(value: Any) -> Any:
    """JSON for NumPy and torch scalars found in settings."""
    if isinstance(value, (np.generic, torch.Tensor)) and getattr(value, "ndim", 0) == 0:
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def data_fingerprint(*tensors: torch.Tensor) -> str:
    """A short hash of held-out data, so results on different data are never paired.

    Hashed at float32 precision, so the same data cast to a model's dtype keeps its fingerprint.
    """
    digest = hashlib.sha1()
    for tensor in tensors:
        array = tensor.detach().to("cpu", torch.float32).contiguous().numpy()
        digest.update(str(tuple(array.shape)).encode())
        digest.update(array)  # the buffer itself: the bytes tobytes() would copy
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
        raw = torch.as_tensor(self.per_example).detach()
        if raw.is_complex():
            raise TypeError("per_example is complex; log-likelihoods are real numbers (a complex "
                            "value usually means a log of a negative number upstream)")
        if sum(size > 1 for size in raw.shape) > 1:
            raise ValueError(f"per_example must hold one value per example, shape (n,), got shape "
                             f"{tuple(raw.shape)}; sum the per-dimension terms of each example first")
        values = raw.to("cpu", torch.float64).reshape(-1)
        object.__setattr__(self, "per_example", values)
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.data_space not in DATA_SPACES:
            raise ValueError(f"data_space must be one of {DATA_SPACES}, got {self.data_space!r}")
        if not isinstance(self.estimator, str) or not self.estimator:
            raise TypeError(f"estimator must be the estimator's name as a string (e.g. 'iwae'), "
                            f"got {self.estimator!r}")
        if not isinstance(self.settings, dict):
            raise TypeError(f"settings must be a dict of the estimator's settings, got "
                            f"{type(self.settings).__name__}")
        if values.numel() == 0:
            raise ValueError("a LogLikelihood needs at least one example")
        num_dims = self.num_dims
        if isinstance(num_dims, (bool, np.bool_)) or not isinstance(num_dims, (int, float, np.number)) \
                or not math.isfinite(float(num_dims)) or not float(num_dims) > 0:
            raise ValueError(f"num_dims must be a positive number, got {num_dims!r}")
        object.__setattr__(self, "num_dims", int(num_dims) if float(num_dims).is_integer()
                           else float(num_dims))
        stderr = self.estimator_stderr
        if isinstance(stderr, (bool, np.bool_)) or not isinstance(stderr, (int, float, np.number)) \
                or not math.isfinite(float(stderr)) or float(stderr) < 0:
            raise ValueError(f"estimator_stderr must be finite and >= 0, got {stderr!r}")
        object.__setattr__(self, "estimator_stderr", float(stderr))
        if torch.isnan(values).any():
            raise ValueError("per-example log-likelihoods contain NaN; the estimator failed")
        huge = torch.isfinite(values) & (values.abs() > MAX_MAGNITUDE)
        if huge.any():
            row = int(torch.nonzero(huge)[0])
            raise ValueError(f"per-example log-likelihood {float(values[row]):.3g} (row {row}) is "
                             f"beyond ±{MAX_MAGNITUDE:g} nats, where the mean and stderr overflow; "
                             "the estimator or model is broken (a scale near 0 or Inf?), or the "
                             "values are not in nats")
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
        strangers = [type(p).__name__ for p in parts if not isinstance(p, LogLikelihood)]
        if strangers:
            raise TypeError(f"concat joins LogLikelihood results, got {', '.join(strangers)}")
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
            "num_dims": self.num_dims, "data_space": self.data_space,
            "data_id": self.data_id, "num_examples": self.num_examples,
            "mean": self.mean, "stderr": self.stderr, "nll": self.nll,
            "bits_per_dim": self.bits_per_dim, "estimator_stderr": self.estimator_stderr,
        }
        if per_example:
            out["per_example"] = self.per_example.tolist()
        return out

    def to_json(self, path: str | os.PathLike | None = None, **kwargs: Any) -> str:
        """The result as JSON text (written atomically to ``path`` when given)."""
        try:
            text = json.dumps(self.to_dict(**kwargs), indent=1, default=_json_scalar)
        except TypeError as error:
            raise TypeError(f"settings of this LogLikelihood cannot be written as JSON ({error}); "
                            "keep settings to numbers, strings, lists and dicts") from None
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogLikelihood:
        """Rebuild a result from :meth:`to_dict` output; a foreign dict gets one clear error."""
        if not isinstance(data, dict):
            raise ValueError(f"a LogLikelihood record is a JSON object, got {type(data).__name__}; "
                             "pass a file written by LogLikelihood.to_json")
        if "per_example" not in data:
            raise ValueError("this dict has no per_example values; save with per_example=True")
        missing = [key for key in ("kind", "estimator", "num_dims", "data_space") if key not in data]
        if missing:
            raise ValueError(f"this is not a LogLikelihood record: it lacks {', '.join(missing)}; "
                             "pass a file written by LogLikelihood.to_json")
        values = data["per_example"]
        if not isinstance(values, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError("per_example must be a list of numbers; the file is damaged or "
                             "foreign — re-run the evaluation")
        settings = data.get("settings", {})
        if not isinstance(settings, dict):
            raise ValueError(f"settings must be a JSON object, got {type(settings).__name__}")
        try:
            return cls(torch.tensor(values, dtype=torch.float64), kind=data["kind"],
                       estimator=data["estimator"], num_dims=data["num_dims"],
                       data_space=data["data_space"], settings=dict(settings),
                       data_id=data.get("data_id"),
                       estimator_stderr=data.get("estimator_stderr", 0.0))
        except TypeError as error:
            raise ValueError(f"this LogLikelihood record is damaged: {error}") from None

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> LogLikelihood:
        """Read a result written by :meth:`to_json`."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a file path, got {type(path).__name__}")
        target = Path(path)
        if not target.exists():
            raise FileNotFoundError(f"{path}: no such file; pass the path of a JSON file written "
                                    "by LogLikelihood.to_json (or `probgen evaluate --out`)")
        if not target.is_file():
            raise ValueError(f"{path} is not a regular file (a directory, pipe or device); pass "
                             "a JSON file written by LogLikelihood.to_json")
        if target.stat().st_size > _MAX_JSON_BYTES:
            raise ValueError(f"{path} is {target.stat().st_size:,} bytes, more than a "
                             f"LogLikelihood file of {_MAX_JSON_BYTES:,} bytes; is it the right file?")
        try:
            data = json.loads(target.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
            raise ValueError(f"{path} is not a LogLikelihood JSON file ({error}); pass a file "
                             "written by LogLikelihood.to_json") from None
        return cls.from_dict(data)

    def __repr__(self) -> str:
        return (f"LogLikelihood(mean={self.mean:.4f} ± {self.stderr:.4f} nats, {self.label}, "
                f"n={self.num_examples}, {self.data_space}, {self.bits_per_dim:.4f} bits/dim)")
