"""One table of several models' LogLikelihoods on the same held-out data, with paired differences."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from probgen.core.result import LogLikelihood
from probgen.metrics.result import MetricResult

__all__ = ["ComparisonRow", "ComparisonTable", "compare"]

# What compare(metrics=...) takes per model: {metric name: number or MetricResult}, or a list of
# MetricResults (named by their .name).
ModelMetrics = Mapping[str, float | MetricResult] | Sequence[MetricResult]


@dataclass(frozen=True)
class ComparisonRow:
    """One model's line: its result, its paired difference to the best model (nats), and the
    sample-quality metrics given for it (``{}`` when none were)."""

    name: str
    result: LogLikelihood
    rank: int
    diff_to_best: float
    diff_stderr: float
    metrics: dict[str, MetricResult] = field(default_factory=dict)


@dataclass(frozen=True)
class ComparisonTable:
    """Rows sorted best first; ``notes`` say what makes numbers comparable or not;
    ``metric_names`` are the sample-quality columns beside the likelihoods (``()``: none)."""

    rows: tuple[ComparisonRow, ...]
    data_space: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    metric_names: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for r in self.rows:
            row = {"name": r.name, "rank": r.rank, "diff_to_best": r.diff_to_best,
                   "diff_stderr": r.diff_stderr, **r.result.to_dict(per_example=False)}
            if self.metric_names:
                row["metrics"] = {name: metric.to_dict() for name, metric in r.metrics.items()}
            rows.append(row)
        table = {"data_space": self.data_space, "notes": list(self.notes), "rows": rows}
        if self.metric_names:
            table["metric_names"] = list(self.metric_names)
        return table

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def __str__(self) -> str:
        header = ["rank", "model", "log-lik (nats)", "± stderr", "kind", "estimator",
                  "bits/dim", "Δ vs best", "± Δ stderr"]
        header += [_metric_header(name, self.rows) for name in self.metric_names]
        body = []
        for r in self.rows:
            res = r.result
            est = res.estimator + "".join(f" {k}={v}" for k, v in sorted(res.settings.items()))
            body.append([str(r.rank), r.name, f"{res.mean:.4f}", f"{res.stderr:.4f}", res.kind,
                         est, f"{res.bits_per_dim:.4f}", f"{r.diff_to_best:.4f}",
                         f"{r.diff_stderr:.4f}"]
                        + [r.metrics[name].formatted() if name in r.metrics else "-"
                           for name in self.metric_names])
        widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(header)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def plot(self, path: str | None = None):
        """Comparison chart: means with error bars, coloured by kind (see probgen.plots)."""
        from probgen.plots import plot_comparison

        return plot_comparison(self, path)


def _metric_header(name: str, rows: Sequence[ComparisonRow]) -> str:
    """The metric's name, with ↑ or ↓ when its results say which direction is better."""
    better = {r.metrics[name].higher_is_better for r in rows if name in r.metrics}
    return name + {frozenset({True}): " ↑", frozenset({False}): " ↓"}.get(frozenset(better), "")


def _as_metric(model: str, name: Any, value: Any) -> MetricResult:
    where = f"metrics[{model!r}][{name!r}]"
    if not isinstance(name, str) or not name:
        raise TypeError(f"metrics[{model!r}] has a metric named {name!r}; name metrics with "
                        "non-empty strings such as 'fid'")
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, MetricResult):
        metric = value
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        metric = MetricResult(name, float(value))
    else:
        raise TypeError(f"{where} is a {type(value).__name__}; pass a number or a "
                        "probgen.metrics.MetricResult")
    if not math.isfinite(metric.value):
        raise ValueError(f"{where} is {metric.value}; leave the model out of metrics= if it has "
                         "no value (its cells then show '-')")
    return metric


def _metric_columns(metrics: Mapping[str, ModelMetrics], names: Sequence[str]
                    ) -> tuple[dict[str, dict[str, MetricResult]], tuple[str, ...], list[str]]:
    """Checked metrics per model, the column names (first model's order) and notes."""
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a dict {{model name: {{metric: value}}}}, got "
                        f"{type(metrics).__name__}")
    unknown = [model for model in metrics if model not in names]
    if unknown:
        raise ValueError(f"metrics names model(s) {', '.join(map(repr, unknown))} that are not "
                         f"among the compared results ({', '.join(map(repr, names))}); use the "
                         "names of the results")
    by_model: dict[str, dict[str, MetricResult]] = {}
    for model, given in metrics.items():
        if isinstance(given, Mapping):
            items = list(given.items())
        elif isinstance(given, Sequence) and not isinstance(given, str) and all(
                isinstance(m, MetricResult) for m in given):
            items = [(m.name, m) for m in given]
            repeated = sorted({n for n, _ in items if [k for k, _ in items].count(n) > 1})
            if repeated:
                raise ValueError(f"metrics[{model!r}] lists {', '.join(repeated)} more than once; "
                                 "give each metric once (or a dict naming each column)")
        else:
            raise TypeError(f"metrics[{model!r}] must be a dict {{metric: value}} or a list of "
                            f"MetricResults, got {type(given).__name__}")
        by_model[model] = {name: _as_metric(model, name, value) for name, value in items}
    if not by_model:
        return {}, (), []
    columns = tuple(next(iter(by_model.values())))
    for model, given in by_model.items():
        if set(given) != set(columns):
            first = next(iter(by_model))
            missing, extra = sorted(set(columns) - set(given)), sorted(set(given) - set(columns))
            detail = "; ".join([f"missing {', '.join(missing)}"] * bool(missing)
                               + [f"extra {', '.join(extra)}"] * bool(extra))
            raise ValueError(f"metrics[{model!r}] has different metrics from metrics[{first!r}] "
                             f"({detail}); give every model the same metrics, so each column "
                             "compares like with like")
    notes = []
    for name in columns:
        settings = [by_model[model][name].settings for model in by_model
                    if by_model[model][name].settings]
        if any(s != settings[0] for s in settings):
            notes.append(f"{name} was computed with different settings across models (e.g. "
                         "kernel bandwidth, k, or sample counts): its values are not directly "
                         "comparable")
    return by_model, columns, notes


def _space_of(results: dict[str, LogLikelihood]) -> tuple[str, list[str]]:
    spaces = {r.data_space for r in results.values()}
    notes: list[str] = []
    if spaces == {"discrete", "dequantized"}:
        notes.append("dequantized densities are lower bounds on the discrete log-mass "
                     "(Theis et al., 2016), so they are ranked as lower bounds in discrete space")
        return "discrete", notes
    if len(spaces) > 1:
        by_space = {s: sorted(n for n, r in results.items() if r.data_space == s) for s in spaces}
        detail = "; ".join(f"{s}: {', '.join(names)}" for s, names in sorted(by_space.items()))
        raise ValueError(
            "cannot rank a probability mass against a probability density: the results are in "
            f"different data spaces ({detail}). Log-masses (discrete data) and log-densities "
            "(continuous data) are different quantities; evaluate every model in one space, or "
            "dequantize the discrete data (probgen.data.transforms) so a density gives a lower "
            "bound on the discrete log-likelihood")
    return spaces.pop(), notes


def compare(results: dict[str, LogLikelihood] | Sequence[LogLikelihood], *,
            allow_different_data: bool = False,
            metrics: Mapping[str, ModelMetrics] | None = None) -> ComparisonTable:
    r"""Rank models by mean log-likelihood on the same held-out data, with paired differences.

    Δ_i = mean_n (ll_best[n] - ll_i[n]); its stderr is std_n(ll_best - ll_i)/√N, the paired
    standard error (the same test points, so per-example noise cancels), plus the estimators'
    own Monte Carlo errors in quadrature.

    ``metrics`` adds sample-quality columns beside the likelihoods, without changing the
    ranking: ``{model name: {metric name: number or MetricResult}}`` or ``{model name: [
    MetricResult, ...]}`` (from :mod:`probgen.metrics`). Every model given must have the same
    metric names; a compared model left out shows ``-``. A likelihood and a sample metric can
    disagree (Theis et al., 2016): the table shows both, it does not combine them.

    Example:
        >>> a = LogLikelihood(torch.tensor([-1.0, -2.0]), kind="exact", estimator="exact",
        ...                   num_dims=1, data_space="continuous")
        >>> b = LogLikelihood(torch.tensor([-1.5, -2.0]), kind="exact", estimator="exact",
        ...                   num_dims=1, data_space="continuous")
        >>> compare({"a": a, "b": b}).rows[1].diff_to_best
        0.25
    """
    if isinstance(results, Sequence) and not isinstance(results, str):
        results = {f"model {i + 1}": result for i, result in enumerate(results)}
    if not isinstance(results, dict):
        raise TypeError(f"compare takes a dict {{name: LogLikelihood}} or a list of them, got "
                        f"{type(results).__name__}")
    if not results:
        raise ValueError("compare needs at least one named LogLikelihood")
    for name, result in results.items():
        if not isinstance(result, LogLikelihood):
            raise TypeError(f"results[{name!r}] is a {type(result).__name__}, not a LogLikelihood "
                            "(get one from probgen.evaluate)")
    for name, result in results.items():
        impossible = ~torch.isfinite(result.per_example)
        if impossible.any():
            raise ValueError(
                f"results[{name!r}] gives {int(impossible.sum())} example(s) zero probability "
                f"(log-likelihood -inf; first: row {int(torch.nonzero(impossible)[0])}), so its "
                "mean cannot be ranked: check those rows (values far outside the training range, "
                "e.g. 1e30?) or the model's support")
    space, notes = _space_of(results)
    by_model, metric_names, metric_notes = _metric_columns(
        {} if metrics is None else metrics, list(results))
    sizes = {r.num_examples for r in results.values()}
    if len(sizes) > 1:
        raise ValueError(f"results cover different numbers of examples {sorted(sizes)}; compare "
                         "models on the same held-out data")
    ids = {r.data_id for r in results.values() if r.data_id is not None}
    if len(ids) > 1 and not allow_different_data:
        raise ValueError("results were computed on different data (their data fingerprints "
                         "differ); evaluate every model on the same held-out tensor")
    dims = {r.num_dims for r in results.values()}
    if len(dims) > 1:
        notes.append(f"models report different num_dims {sorted(dims)}: bits/dim are not comparable")
    kinds = {r.kind for r in results.values()}
    if kinds != {"exact"}:
        notes.append("lower bounds understate a model's log-likelihood and estimates may err either "
                     "way: a bound above another model's exact value is decisive, the reverse is not")
    if "estimate" in kinds:
        notes.append("an estimate is not a bound, and its ± covers only its Monte Carlo noise, not "
                     "its bias: AIS's test log-likelihood is biased high (optimistic) when its "
                     "schedule is short, by far more than its stderr when few chains carry the "
                     "weight (see its ess setting); RAISE (estimator='raise') errs low on data "
                     "like the model's samples but is no bound (it bounds the annealed model), "
                     "and a large gap between the two means neither is accurate yet")
    ordered = sorted(results.items(), key=lambda item: item[1].mean, reverse=True)
    best = ordered[0][1]
    rows = []
    for rank, (name, result) in enumerate(ordered, start=1):
        diff = best.per_example - result.per_example
        n = diff.numel()
        spread = float(diff.std(unbiased=True)) / math.sqrt(n) if n > 1 else 0.0
        own = 0.0 if result is best else result.estimator_stderr**2 + best.estimator_stderr**2
        rows.append(ComparisonRow(name, result, rank, float(diff.mean()), math.sqrt(spread**2 + own),
                                  by_model.get(name, {})))
    return ComparisonTable(tuple(rows), space, tuple(notes + metric_notes), metric_names)
