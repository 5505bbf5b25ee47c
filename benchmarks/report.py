"""Render benchmarks/results/*.json into docs/benchmarks.md: one short section per file.

Each section is a one-line description of what was measured, the machine it ran on, and one
small table (seven columns at most) of the figures a reader compares; everything else stays in
the JSON file, which the section names. Rows differ between files and between old and new runs,
so every cell tolerates a missing key.

It also draws two charts into docs/img/ (speed ratios against the peers, and the MNIST NLL of
probgen's rows beside the published ones) and puts the hand-written headlines (HEADLINES) above
the tables.

Usage: python -m benchmarks.report  (run after benchmarks; `make bench` does it last).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "docs" / "benchmarks.md"
CHARTS = ROOT / "docs" / "img"
SPEED_CHART, MNIST_CHART = "bench_speed.png", "bench_mnist.png"
CURVES_CHART = "bench_hierarchical_curves.png"  # also saved beside the results

Row = dict[str, Any]
Column = tuple[str, Callable[[Row], Any]]

PROTOCOL = """\
## Benchmark protocol (MNIST likelihood rows)

The MNIST likelihood sections (`mnist_vae`, `hierarchical_mnist`) follow one protocol:

- the last 10,000 training images are the validation split;
- model selection, early stopping and every goal use validation only;
- test numbers are IWAE-5000 on all 10,000 test images, once per final model;
- every row records architecture, parameters, epochs, train_seconds, model_selection and
  num_test;
- each published row is cited by paper and table and set beside a probgen row of the same
  architecture (784-200-200-50 for Burda et al. 2016); larger probgen networks may appear as
  their own rows, labelled.

Rows measured before the protocol are kept, not hidden: their *status* cell says
**pre-protocol** and why (no validation split, so the last epoch was kept; or a test subset
instead of all 10,000 images).
"""

# ----------------------------------------------------------------------------- formatting


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


def fixed(digits: int) -> Callable[[Any], str]:
    def fmt(value: Any) -> str:
        x = _num(value)
        return text(value) if x is None else f"{x:,.{digits}f}"
    return fmt


def sig(value: Any, digits: int = 3) -> str:
    x = _num(value)
    if x is None:
        return text(value)
    if x == 0 or 1e-3 <= abs(x) < 1e6:
        return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:,.0f}"
    return f"{x:.1e}"


def count(value: Any) -> str:
    x = _num(value)
    return text(value) if x is None else f"{x:,.0f}"


def duration(value: Any) -> str:
    x = _num(value)
    if x is None:
        return text(value)
    if x < 1:
        return f"{x:.2g} s"
    if x < 120:
        return f"{x:.3g} s"
    if x < 7200:
        return f"{x / 60:.0f} min"
    return f"{x / 3600:.1f} h"


def ratio(value: Any) -> str:
    x = _num(value)
    return text(value) if x is None else f"{x:.2f}×"


def text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, (dict, list)):
        value = json.dumps(value)
        value = value if len(value) <= 40 else value[:37] + "..."
    return str(value).replace("|", "/").replace("\n", " ")


def key(name: str, fmt: Callable[[Any], str] = text) -> Callable[[Row], str]:
    return lambda row: fmt(row.get(name))


def first(*names: str, fmt: Callable[[Any], str] = text) -> Callable[[Row], str]:
    def get(row: Row) -> str:
        for name in names:
            if row.get(name) is not None:
                return fmt(row[name])
        return ""
    return get


def markdown_table(rows: list[Row], columns: list[Column]) -> str:
    cells = [[text(getter(row)) for _, getter in columns] for row in rows]
    keep = [i for i in range(len(columns)) if any(line[i] for line in cells)]
    if not keep:
        return "(no figures in these rows)"
    head = [columns[i][0] for i in keep]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(line[i] for i in keep) + " |" for line in cells]
    return "\n".join(lines)


# ------------------------------------------------------------------------ shared cells


def estimator_kind(row: Row) -> str:
    """'IWAE-5000', 'ELBO (bound)', 'exact', ... from estimator / k / kind."""
    estimator = str(row.get("estimator") or "")
    k = _num(row.get("k"))
    settings = row.get("estimator_settings")
    if k is None and isinstance(settings, dict):
        k = _num(settings.get("k"))
    if estimator == "iwae":
        return f"IWAE-{k:.0f}" if k is not None else "IWAE"
    if estimator == "elbo":
        return "ELBO (bound)"
    kind = str(row.get("kind") or "").replace("_", " ")
    if estimator and estimator not in ("exact", kind):
        kind = f"{kind} ({estimator.replace('_', ' ')})" if kind else estimator
    if k is not None and k > 1:
        kind += f", k={k:.0f}"
    return kind


def machine_line(rows: Iterable[Row]) -> str:
    machines = [row.get("machine") for row in rows]
    strings = sorted({m for m in machines if isinstance(m, str)})
    dicts = [m for m in machines if isinstance(m, dict)]
    if not dicts:
        return "; ".join(strings) or "not recorded"

    def values(name: str) -> list[str]:
        return sorted({str(m[name]) for m in dicts if m.get(name) not in (None, "")})

    parts = []
    for name, label in (("cpu", ""), ("gpu", "GPU "), ("cores", "cores: "),
                        ("torch_threads", "torch threads: "), ("torch", "torch ")):
        found = values(name)
        if found:
            parts.append(label + " / ".join(found))
    dates = values("date")
    if dates:
        parts.append(f"run {dates[0]}" if len(dates) == 1 else f"runs {dates[0]} to {dates[-1]}")
    if len(dicts) < len(machines):
        parts.append("some rows (published) record no machine")
    return ", ".join(parts + strings)


def settings_of(rows: list[Row]) -> Row:
    for row in rows:
        if isinstance(row.get("settings"), dict):
            return row["settings"]
    return {}


# ------------------------------------------------------------------ the MNIST protocol

REQUIRED = ("architecture", "parameters", "epochs", "train_seconds", "model_selection",
            "num_test")
# Published rows that record no architecture, matched on (model substring, source substring).
PUBLISHED_ARCHITECTURE = [("1 stochastic layer", "Burda", "784-200-200-50 tanh (paper)")]
REFERENCE_ARCHITECTURE = "784-200-200-50"


def is_published(row: Row) -> bool:
    return bool(row.get("source")) and not str(row.get("model", "")).startswith("probgen")


def architecture(row: Row) -> str:
    if row.get("architecture"):
        return str(row["architecture"])
    if is_published(row):
        for model_part, source_part, arch in PUBLISHED_ARCHITECTURE:
            if model_part in str(row.get("model", "")) and source_part in str(row["source"]):
                return arch
        return ""
    config = row.get("config")
    if isinstance(config, dict):  # older rows kept only the model's config
        dims = config.get("latent_dims") or config.get("latent_dim")
        hidden = config.get("hidden_features")
        act = config.get("activation") or ""
        post = f", {config['posterior']} posterior" if config.get("posterior") else ""
        return f"hidden {hidden}, latent {dims} {act}{post}".strip()
    return ""


def _group(row: Row) -> tuple:
    return (row.get("model"), row.get("binarization"), row.get("epochs"),
            row.get("train_seconds"))


def protocol_status(rows: list[Row]) -> dict[tuple, str]:
    """For each model (rows grouped by model, data and training), its status cell."""
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        groups.setdefault(_group(row), []).append(row)
    reference = [_num(r.get("parameters")) for r in rows
                 if str(r.get("architecture", "")).startswith(REFERENCE_ARCHITECTURE)]
    reference_params = min((p for p in reference if p is not None), default=None)
    status = {}
    for group, members in groups.items():
        if all(is_published(r) for r in members):
            source = str(members[0]["source"])
            cited = re.search(r"\b(19|20)\d\d\b", source) and re.search(r"\bTable\b", source)
            status[group] = (f"published: {source}" if cited else
                             f"published, no paper and table cited ({source})")
            continue
        # the hybrid's valid bound is the IWAE over (z, its diffusion trajectory)
        iwae = [r for r in members if r.get("estimator") in ("iwae", "diffusion_iwae")]
        test = max(iwae, key=lambda r: _num(r.get("k")) or 0) if iwae else members[-1]
        reasons = []
        selection = str(test.get("model_selection") or "")
        kept_last = "restore_best" in selection  # selected on validation; the bug kept the last
        if not kept_last and ("validation" not in selection
                              or re.search(r"no validation|last epoch", selection)):
            reasons.append("no validation split (last epoch kept)" if selection
                           else "model selection not recorded")
        if not iwae:
            reasons.append("no IWAE test row")
        elif _num(test.get("k")) != 5000:
            reasons.append(f"IWAE-{count(test.get('k'))}")
        num_test = _num(test.get("num_test"))
        if iwae and num_test != 10000:
            reasons.append(f"{count(num_test)} test images" if num_test is not None
                           else "test size not recorded")
        missing = [name for name in REQUIRED[:4] if test.get(name) is None]
        if missing:
            reasons.append("no " + ", ".join(missing))
        label = "pre-protocol: " + "; ".join(reasons) if reasons else "protocol"
        if kept_last:
            label += ("; the last epoch's parameters, not the validation-best ones (the "
                      "restore_best bug fixed 2026-11-29; see model_selection)")
        params = _num(test.get("parameters"))
        if (reference_params and params and params > reference_params
                and not str(test.get("architecture", "")).startswith(REFERENCE_ARCHITECTURE)):
            label += "; larger network than the papers'"
        status[group] = label
    return status


def architecture_budget(row: Row) -> str:
    parts = [architecture(row)]
    params = _num(row.get("parameters"))
    if params:
        parts.append(f"{params / 1e6:.2f}M params" if params >= 1e6
                     else f"{params / 1e3:.0f}k params")
    epochs = _num(row.get("epochs"))
    if epochs:
        parts.append(f"{epochs:,.4g} epochs")
    seconds = _num(row.get("train_seconds"))
    if seconds:
        parts.append(duration(seconds))
    return ", ".join(p for p in parts if p)


def mnist_rows(rows: list[Row]) -> list[Row]:
    """Order rows by binarization, then architecture, so published rows sit beside probgen's;
    a model's rows stay together, its IWAE (test) row first, then its ELBO row."""
    order: dict[Any, int] = {}
    arch_order: dict[str, int] = {}
    group_order: dict[tuple, int] = {}
    for row in rows:
        order.setdefault(row.get("binarization"), len(order))
        arch = architecture(row).split(" ")[0]
        if arch:
            arch_order.setdefault(arch, len(arch_order))
        group_order.setdefault(_group(row), len(group_order))
    return sorted(rows, key=lambda r: (
        order[r.get("binarization")],
        arch_order.get(architecture(r).split(" ")[0], len(arch_order)),
        group_order[_group(r)], r.get("estimator") != "iwae"))


def mnist_table(rows: list[Row]) -> str:
    status = protocol_status(rows)
    ordered = mnist_rows(rows)
    # The second and later rows of one model leave its model, budget and status cells empty.
    repeat = {id(row) for before, row in zip(ordered, ordered[1:]) if _group(before) == _group(row)}

    def once(getter: Callable[[Row], Any]) -> Callable[[Row], Any]:
        return lambda r: "" if id(r) in repeat else getter(r)

    columns: list[Column] = [
        ("model", once(key("model"))),
        ("architecture, budget", once(architecture_budget)),
        ("kind", lambda r: ", ".join(p for p in (estimator_kind(r), text(r.get("binarization")))
                                     if p)),
        ("NLL (nats)", key("nll_nats", fixed(2))),
        ("±", key("stderr", fixed(2))),
        ("test images", key("num_test", count)),
        ("status", once(lambda r: status.get(_group(r), ""))),
    ]
    if any(row.get("paired_difference_nats") is not None for row in ordered):
        columns.insert(5, ("paired Δ NLL vs baseline (nats)", paired_difference))
    return markdown_table(ordered, columns)


def paired_difference(row: Row) -> str:
    """NLL(row) − NLL(baseline) over the same test images, ± its standard error."""
    value = _num(row.get("paired_difference_nats"))
    if value is None:
        return ""
    baseline = short_label(str(row.get("paired_with", "")))
    return f"{value:+.2f} ± {_num(row.get('paired_difference_stderr')) or 0:.2f} vs {baseline}"


def pre_protocol_summary(files: dict[str, list[Row]]) -> str:
    lines = []
    for stem in ("mnist_vae", "hierarchical_mnist"):
        rows = files.get(stem)
        if not rows:
            continue
        status = protocol_status(rows)
        models = {g: s for g, s in status.items() if not s.startswith("published")}
        old = [g[0] for g, s in models.items() if s.startswith("pre-protocol")]
        lines.append(f"- `{stem}`: {len(old)} of {len(models)} probgen models pre-protocol"
                     + (f" ({', '.join(str(m) for m in old)})" if old else "") + ".")
    if not lines:
        return ""
    return "Where the rows stand now:\n\n" + "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- the sections


@dataclass
class Part:
    """One table: the rows it takes, its columns, and an optional caption above it."""
    columns: list[Column]
    take: Callable[[Row], bool] = lambda row: True
    caption: str | Callable[[list[Row]], str] = ""
    render: Callable[[list[Row]], str] | None = None


@dataclass
class Section:
    title: str
    parts: list[Part]
    problem: Callable[[Row], str] = lambda settings: ""
    notes: list[Callable[[list[Row]], str]] = field(default_factory=list)


def is_binary_task(row: Row) -> bool:
    return "binarized" in str(row.get("task", "")) or row.get("data_space") == "discrete"


def positive_log_likelihood(rows: list[Row]) -> str:
    bad = [r for r in rows if is_binary_task(r) and (_num(r.get("nats")) or 0) > 0]
    if not bad:
        return ""
    names = ", ".join(f"*{r.get('model')}* ({fixed(2)(r.get('nats'))} nats)" for r in bad)
    return (f"Check: {names} is above 0 nats, which no probability of binary data can reach; "
            "treat that estimate as unreliable.")


def setup(rows: list[Row], name: str) -> str:
    """': <the setting>.' from the part's own rows (settings differ between runs)."""
    found = [r["settings"].get(name) for r in rows if isinstance(r.get("settings"), dict)]
    found = [text(v) for v in found if v]
    return f": {found[-1]}." if found else "."


def loglik(row: Row) -> str:
    kind = estimator_kind(row)
    if kind == "reference" and row.get("note"):
        return f"published: {text(row['note'])}"
    return kind


SECTIONS: dict[str, Section] = {
    "mnist_vae": Section(
        "MNIST VAE (one stochastic layer)",
        [Part([], render=mnist_table)],
        problem=lambda s: (f"goal: {s['goal']}" if s.get("goal") else ""),
    ),
    "hierarchical_mnist": Section(
        "MNIST hierarchical and flow-posterior VAEs",
        [Part([], render=mnist_table)],
        problem=lambda s: (f"goal: {s['goal']}" if s.get("goal") else ""),
    ),
    "diffusion": Section(
        "Diffusion and latent diffusion",
        [Part([("task", key("task")), ("model", key("model")), ("kind", estimator_kind),
               ("log-lik (nats)", key("nats", fixed(2))), ("±", key("stderr", fixed(2))),
               ("bits/dim", key("bits_per_dim", fixed(3))), ("test images", key("num_test", count)),
               ("train", key("train_s", duration))],
              take=lambda r: r.get("nats") is not None or r.get("bits_per_dim") is not None,
              caption="Test log-likelihood (higher is better); train 0 s = the row above's "
                      "network scored another way."),
         Part([("task", key("task")), ("sampler", key("model")),
               ("samples", key("num_samples", count)), ("seconds", key("seconds", sig)),
               ("ms/step", key("ms_per_step", sig))],
              take=lambda r: r.get("nats") is None and r.get("bits_per_dim") is None,
              caption="Sampling time.")],
        notes=[positive_log_likelihood],
    ),
    "sample_metrics": Section(
        "Likelihood, classification and sample quality on 8×8 digits",
        [Part([("model", key("model")), ("kind", estimator_kind),
               ("log-lik (nats)", key("nats", fixed(2))), ("±", key("stderr", fixed(2))),
               ("class. accuracy", key("classifier_accuracy", fixed(3)))],
              caption="One data set, every family: held-out log-likelihood (higher is better, "
                      "with its kind) and test accuracy of the generative classifier built "
                      "from the family (one model per digit)."),
         Part([("model", key("model")),
               ("precision", key("precision", fixed(3))), ("recall", key("recall", fixed(3))),
               ("MMD²", key("mmd2", sig)), ("± MMD²", key("mmd2_stderr", sig)),
               ("Vendi", key("vendi", fixed(2))), ("FID (pixels)", key("fid", fixed(3)))],
              caption="The same models' samples: metrics of 1000 samples against the test "
                      "images (precision/recall, Vendi: higher is better; MMD², FID: lower).")],
    ),
    "classifier": Section(
        "Generative classifiers",
        [Part([("task", key("task")), ("model", key("model")),
               ("accuracy", key("accuracy", fixed(3))), ("±", key("accuracy_stderr", fixed(3))),
               ("log p(x, y) (nats)", key("nats", fixed(2))), ("±", key("stderr", fixed(2))),
               ("kind", estimator_kind), ("train", key("train_s", duration))],
              caption="Test accuracy and held-out log p(x, y) (higher is better; discriminative "
                      "rows have no log p(x, y)).")],
    ),
    "autoregressive_mnist": Section(
        "Autoregressive models (MADE, PixelCNN) on binarized MNIST",
        [Part([("model", key("model")), ("architecture", key("architecture")),
               ("kind", estimator_kind), ("NLL (nats)", key("nll_nats", fixed(2))),
               ("±", key("stderr", fixed(2))), ("test images", key("num_test", count)),
               ("budget", lambda r: ", ".join(part for part in (
                   f"{sig(r['epochs'])} epochs" if _num(r.get("epochs")) else "",
                   duration(r["train_seconds"]) if _num(r.get("train_seconds")) else "")
                   if part))],
              caption="Exact test NLL (lower is better) on Larochelle & Murray's static "
                      "binarization; validation on their 10,000-image valid split (each "
                      "row's model selection is in the JSON file).")],
    ),
    "flows": Section(
        "Normalizing flows",
        [Part([("flow", key("kind")), ("implementation", key("implementation")),
               ("ms/step", key("ms_per_step", sig)),
               ("ratio to raw zuko", key("ratio_vs_raw_zuko", ratio)),
               ("µs/call, batch 1", key("us_per_call_batch1", sig))],
              take=lambda r: r.get("part") == "overhead",
              caption=lambda rows: "Wrapper overhead: one Adam training step, process CPU "
                                   "time" + setup(rows, "overhead_setup")),
         Part([("dataset", key("dataset")), ("model", key("model")), ("kind", loglik),
               ("log-lik (nats)", key("mean_ll", fixed(2))), ("±", key("stderr", fixed(2))),
               ("bits/dim", key("bits_per_dim", fixed(3))),
               ("train", key("train_seconds", duration))],
              take=lambda r: r.get("part") != "overhead",
              caption=lambda rows: "Density estimation, test log-likelihood (higher is "
                                   "better)" + setup(rows, "density_setup"))],
    ),
    "gmm": Section(
        "Gaussian mixture EM speed",
        [Part([("tool", key("tool")), ("seconds", key("seconds", sig)),
               ("s/iteration", key("seconds_per_iter", sig)),
               ("ratio to probgen float64", key("seconds_ratio_to_probgen_float64", ratio)),
               ("mean log-lik", key("mean_log_likelihood", fixed(4))),
               ("Δ log-lik vs probgen", key("log_likelihood_minus_probgen_float64", sig))])],
        problem=lambda s: ", ".join(p for p in (
            f"N={count(s['examples'])}" if s.get("examples") else "",
            f"D={s['features']}" if s.get("features") else "",
            f"K={s['components']}" if s.get("components") else "",
            f"{s['iters']} iterations" if s.get("iters") else "") if p),
    ),
    "hmm": Section(
        "Gaussian HMM EM and scoring speed",
        [Part([("task", key("task")), ("tool", key("tool")), ("seconds", key("seconds", sig)),
               ("speedup vs hmmlearn", key("speedup_vs_hmmlearn", ratio)),
               ("log-likelihood", key("log_likelihood", fixed(1))),
               ("rel. diff vs hmmlearn", key("rel_diff_vs_hmmlearn", sig))])],
        problem=lambda s: ", ".join(p for p in (
            f"{s['states']} states" if s.get("states") else "",
            f"{s['features']}-D emissions" if s.get("features") else "",
            f"{s['sequences']} sequences × {s['length']} steps" if s.get("sequences") else "",
            f"{s['iterations']} EM iterations" if s.get("iterations") else "") if p),
    ),
    "jsb_hmm": Section(
        "Bernoulli HMMs on JSB chorales",
        [Part([("model", key("model")),
               ("iterations", lambda r: count(r.get("iterations")) + (
                   " (not converged)" if r.get("converged") is False else "")),
               ("fit", key("fit_seconds", duration)),
               ("valid nats/step", key("valid_ll_per_step", fixed(3))),
               ("test nats/step", key("test_ll_per_step", fixed(3))),
               ("test nats/chorale", key("test_ll_per_sequence", fixed(1))),
               ("±", key("test_ll_per_sequence_stderr", fixed(1)))],
              caption="Exact test log-likelihood (higher is better).")],
    ),
    "mcmc": Section(
        "NUTS effective samples per second",
        [Part([("tool", key("tool")), ("output", key("output")), ("seconds", key("seconds", sig)),
               ("min bulk ESS", key("min_bulk_ess", fixed(1))),
               ("ESS/s", key("ess_per_second", sig)),
               ("ratio vs pyro", key("ratio_vs_pyro", ratio))])],
        problem=lambda s: ", ".join(p for p in (
            text(s.get("data")), f"K={s['num_components']}" if s.get("num_components") else "",
            f"{s['num_samples']} samples after {s.get('warmup_steps')} warm-up"
            if s.get("num_samples") else "") if p),
    ),
    "rbm": Section(
        "RBM on binarized MNIST",
        [Part([("model", key("model")), ("source", key("source")), ("kind", key("kind")),
               ("test log-lik (nats)", key("test_ll", fixed(2))),
               ("±", key("test_ll_stderr", fixed(2))),
               ("train", lambda r: duration(_num(r.get("train_minutes")) * 60)
                if _num(r.get("train_minutes")) else "")])],
        problem=lambda s: text(s.get("data")),
    ),
    "data_parallel": Section(
        "Data-parallel fit over CPU processes",
        [Part([("model", key("model")), ("processes", key("processes")),
               ("epochs", key("epochs")), ("train s", key("train_seconds", sig)),
               ("s/epoch", key("seconds_per_epoch", sig)), ("speed-up", key("speed_up", ratio))])],
        problem=lambda s: text(s.get("note")),
    ),
    "svi_overhead": Section(
        "SVI step overhead vs hand-written PyTorch",
        [Part([("variant", key("variant")), ("CPU ms/step", key("cpu_ms", sig)),
               ("ratio to raw PyTorch", key("cpu_ratio", ratio)),
               ("p10 ratio", key("cpu_p10_ratio", ratio)), ("wall ms/step", key("wall_ms", sig))])],
        problem=lambda s: ", ".join(p for p in (
            f"VAE hidden {s['hidden']}, latent {s['latent']}" if s.get("hidden") else "",
            f"batch {s['batch_size']}" if s.get("batch_size") else "",
            text(s.get("timing"))) if p),
    ),
}

LABELS = ("model", "tool", "variant", "implementation", "task", "name")
FIGURES = ("nll_nats", "nats", "mean_ll", "test_ll", "log_likelihood", "bits_per_dim", "stderr",
           "seconds", "ms_per_step", "cpu_ms", "num_test")


def generic_section(stem: str, rows: list[Row]) -> Section:
    """Unknown files: a label column and the first familiar figures, seven columns at most."""
    present = {k for row in rows for k in row}
    columns: list[Column] = [(name, key(name)) for name in LABELS if name in present][:2]
    for name in FIGURES:
        if name in present:
            columns.append((name.replace("_", " "), key(name, sig)))
    for name in sorted(present):
        if re.search(r"ratio|speedup", name):
            columns.append((name.replace("_", " "), key(name, ratio)))
    return Section(stem, [Part(columns[:7])])


def describe(stem: str) -> str:
    """The first sentence of the benchmark script's docstring (benchmarks/<stem>.py)."""
    for name in (stem, stem.split("-")[0]):
        script = ROOT / "benchmarks" / f"{name}.py"
        try:
            doc = ast.get_docstring(ast.parse(script.read_text())) or ""
        except (OSError, SyntaxError):
            continue
        paragraph = " ".join(doc.split("\n\n")[0].split())
        if paragraph:
            return paragraph
    return ""


def load(path: Path) -> list[Row] | str:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return f"could not be read when this page was generated ({type(error).__name__})"
    rows = data if isinstance(data, list) else (data.get("results", [data])
                                               if isinstance(data, dict) else [])
    return [row for row in rows if isinstance(row, dict) and row]


def section(stem: str, rows: list[Row]) -> list[str]:
    spec = SECTIONS.get(stem) or generic_section(stem, rows)
    out = [f"## {spec.title}", ""]
    about = describe(stem)
    if about:
        out += [about, ""]
    try:
        problem = spec.problem(settings_of(rows))
    except (KeyError, TypeError, ValueError):
        problem = ""
    facts = [f"Machine: {machine_line(rows)}."]
    if problem:
        facts.append(f"Setup: {problem}.")
    facts.append(f"Every field of every row: `benchmarks/results/{stem}.json`.")
    out += [" ".join(facts), ""]
    for part in spec.parts:
        taken = [row for row in rows if part.take(row)]
        if not taken:
            continue
        caption = part.caption(taken) if callable(part.caption) else part.caption
        if caption:
            out += [caption, ""]
        out += [part.render(taken) if part.render else markdown_table(taken, part.columns), ""]
    for note in spec.notes:
        line = note(rows)
        if line:
            out += [line, ""]
    return out


# ------------------------------------------------------------------------- headlines

HEADLINES = """\
## Headlines

Measured on the development machine (AMD EPYC, 2 cores shared with other jobs, load average
15–24 during these runs), so every tool was pinned to one thread and run in one process on the
same data. The sections below have the tables; this is what they say.

**Speed against the peers.** Gaussian mixture EM (N=100,000, D=16, K=16, full covariance, 50
iterations, the same data and k-means++ start for all) runs 5.4× faster than scikit-learn's
`GaussianMixture` and 10.9× faster than pomegranate, to the same log-likelihood (−23.02447958).
HMM Baum–Welch (8 states, 4-D Gaussian, 200 sequences × 500 steps, 20 iterations) is 13.6×
faster than hmmlearn to the same log-likelihood, and scoring 7.1×. A training step through
probgen's `Flow` costs 0.97× (MAF) and 1.02× (NSF) of the raw zuko step; a `probgen.fit` step on
a 784-400-20 VAE costs 1.12× a hand-written PyTorch step (Pyro's own `SVI`: 1.34×). NUTS through
`run_mcmc` draws the same samples as Pyro's `MCMC` with the same seed; its extras (pointwise
log-likelihoods, arviz, diagnostics) cost 0.7 s of a 12-minute run.

**Likelihoods on binarized MNIST** (trained with `probgen.fit` on the first 50,000 training
images, model selection on the last 10,000, test NLL in nats on all 10,000 test images, lower is
better; probgen rows on one CPU thread):

- VAE 784-200-200-50 tanh, ELBO training, dynamic binarization: IWAE-5000 **88.17 ± 0.24**
  after 410 epochs (62 min), against 86.76 published (Burda et al. 2016, Table 1) after 3280
  epochs on all 60,000 images. IWAE-50 fine-tuning of the same model (21 epochs): **87.09 ±
  0.23** against 84.78 for IWAE k=50 trained from scratch.
- MADE, one hidden layer, one ordering (784-8000-784, direct connections, AdaGrad 0.01 as in the
  authors' code, static binarization), exact: 88.62 ± 0.23 after 30 epochs; with hidden dropout
  0.2 and parameter averaging (`fit(ema_decay=0.999)`), **88.23 ± 0.23**, which **matches** the
  published 88.40 (Germain et al. 2015, Table 6): the difference is within one standard error.
  The paper does not use dropout or averaging, and its table does not state the width; see
  [autoregressive models](models/autoregressive.md).
- Gated PixelCNN (31k parameters, 3 epochs on CPU): 93.55 ± 0.21, a budget row beside the
  published 81.30 of a far larger network (van den Oord et al. 2016, Table 4).
- At equal size and budget (100 epochs, 784-200-200-[z 50] SiLU, KL warm-up, cosine lr): plain
  VAE 89.19 ± 0.24, flow (IAF) posterior 88.66 ± 0.24 (0.53 nats better), ladder VAE 91.79 ±
  0.28 (its top layer collapses to 2 of 25 active units), latent-diffusion hybrid 99.57 ± 1.36
  (IWAE-32 over z and its 1000-step trajectory, 500 test images). None of the richer rows reaches
  the 84.0 goal yet: the published rows trained 1000–3280 epochs, 4–15 CPU hours per model at
  13–17 s per epoch, GPU jobs whose commands [GPUs](gpu.md) lists.
- RBM, 500 hidden units, CD-1, one epoch: AIS estimate −127.3 ± 0.4 (10,000 temperatures × 100
  chains, effective sample size 61). It is not comparable to Salakhutdinov & Murray's −125.53
  (longer training and AIS schedule), and a short AIS schedule biases the test log-likelihood
  *high*; `estimator="raise"` gives a lower bound on the annealed model beside it.

**Elsewhere.** Dequantized 8×8 digits: NSF 1.96 bits/dim (lower bound, k=64) against 2.42 for a
per-pixel categorical; diffusion 2.78 bits/dim (continuous VLB) beside a 10-component GMM at 2.65
(exact). Latent diffusion on binarized MNIST at equal steps: the diffusion prior's IWAE-32 over
z and its whole trajectory, −90.35, against the plain VAE's −92.57 on the same 500 test images.
Generative classifiers: probgen's naive Bayes equals scikit-learn's `BernoulliNB` (accuracy
0.8437), a Bernoulli mixture with K=80 per class reaches 0.9531 ± 0.0021 against 0.9148 ± 0.0028
for logistic regression. On 8×8 digits MADE has the better exact likelihood than a 20-component
Bernoulli mixture (−17.86 vs −18.56 nats) but the lower sample precision (0.655 vs 0.733):
likelihood and sample quality can disagree (Theis et al., 2016). Data-parallel `fit` over the 2
CPU cores is slower for these small networks (0.70–0.75×). Rows measured before the protocol
(no validation split, test subsets) are kept and marked **pre-protocol** below.
"""

# ---------------------------------------------------------------------------- charts


def speed_ratios(files: dict[str, list[Row]]) -> list[tuple[str, float]]:
    """(label, peer's time / probgen's time) for each peer: above 1, probgen is faster."""
    found: list[tuple[str, float]] = []
    for row in files.get("gmm", []):
        value = _num(row.get("seconds_ratio_to_probgen_float64"))
        if value and not str(row.get("tool", "")).startswith("probgen"):
            found.append((f"GMM EM: {row['tool']}", value))
    hmm = {(r.get("task"), r.get("tool")): _num(r.get("seconds")) for r in files.get("hmm", [])}
    for task in ("em", "score"):
        ours = hmm.get((task, "probgen"))
        for (other_task, tool), seconds in hmm.items():
            if other_task == task and tool != "probgen" and ours and seconds:
                found.append((f"HMM {'EM' if task == 'em' else 'scoring'}: {tool}",
                              seconds / ours))
    # mcmc.json is left out: run_mcmc draws the very samples Pyro's MCMC draws, so its time
    # ratio (one run each on a loaded machine) measures the machine, not probgen.
    for row in files.get("flows", []):
        value = _num(row.get("ratio_vs_raw_zuko"))
        if value and row.get("implementation") == "probgen Flow (zuko)":
            found.append((f"flow step ({row.get('kind')}): raw zuko", 1 / value))
    svi = {r.get("variant"): _num(r.get("cpu_ratio")) for r in files.get("svi_overhead", [])}
    ours = svi.get("probgen_fit")
    for variant, label in (("raw_pytorch", "raw PyTorch"), ("svi_trace_elbo", "Pyro SVI")):
        if ours and svi.get(variant):
            found.append((f"VAE step: {label}", svi[variant] / ours))
    return found


SHORT_LABELS = [  # long model names shortened for the chart's axis, applied in order
    ("probgen MADE, 1 mask, 8000 hidden, direct, random order", "probgen MADE 784-8000-784"),
    ("probgen MADE, 1 mask", "probgen MADE 784-2000-784"), (", adagrad 0.01", ", AdaGrad"),
    (", dropout 0.2", " + dropout"), (", EMA 0.999", " + EMA"),
    ("(iwae k=50, fine-tuning the 410-epoch ELBO row)", "200-200, + IWAE-50 fine-tuning"),
    ("probgen VAE (vae)", "probgen VAE 200-200, 410 epochs"), (", 100 epochs", ", 100 ep."),
    ("probgen ", "probgen: "),
]


def short_label(model: str) -> str:
    for long, short in SHORT_LABELS:
        model = model.replace(long, short)
    return model if len(model) <= 56 else model[:55] + "…"


def mnist_points(files: dict[str, list[Row]]) -> list[tuple[str, float, float | None, bool]]:
    """(label, NLL, stderr or None, published?) for the MNIST rows on the full protocol:
    probgen's IWAE-5000 or exact rows on all 10,000 test images, and the published rows."""
    points: list[tuple[str, float, float | None, bool]] = []
    for stem in ("mnist_vae", "hierarchical_mnist", "autoregressive_mnist"):
        rows = files.get(stem, [])
        status = protocol_status(rows) if stem != "autoregressive_mnist" else {}
        for row in rows:
            nll = _num(row.get("nll_nats"))
            if nll is None:
                continue
            label = short_label(str(row.get("model", "")))
            if is_published(row):
                if all(p[0] != label for p in points):
                    points.append((label, nll, None, True))
                continue
            full = _num(row.get("num_test")) == 10000
            if stem == "autoregressive_mnist":
                keep = full and row.get("estimator") == "exact"
            else:
                keep = (full and row.get("estimator") == "iwae" and _num(row.get("k")) == 5000
                        and status.get(_group(row), "").startswith("protocol"))
            if keep:
                points.append((label, nll, _num(row.get("stderr")), False))
    return points


def draw_charts(files: dict[str, list[Row]], out: Path = CHARTS) -> list[str]:
    """Write the two charts into ``out``; returns the file names written."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    speeds = speed_ratios(files)
    if speeds:
        figure, axis = plt.subplots(figsize=(7, 0.32 * len(speeds) + 1.2))
        labels, values = zip(*speeds)
        colours = ["#1b7837" if v >= 1 else "#999999" for v in values]
        axis.barh(range(len(values)), values, color=colours)
        axis.set_xscale("log")
        axis.axvline(1.0, color="black", lw=0.8)
        axis.set_yticks(range(len(values)), labels, fontsize=8)
        axis.invert_yaxis()
        for i, value in enumerate(values):
            axis.text(value * 1.05, i, f"{value:.2f}×", va="center", fontsize=8)
        axis.set_xlim(0.3, max(values) * 3)
        axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}×"))
        axis.set_xlabel("peer's time / probgen's time (log scale; > 1: probgen faster)")
        written.append(_save(figure, out / SPEED_CHART))
    points = mnist_points(files)
    if points:
        figure, axis = plt.subplots(figsize=(7.5, 0.26 * len(points) + 1.2))
        for i, (_label, nll, stderr, published) in enumerate(points):
            if published:
                axis.plot(nll, i, "s", mfc="white", mec="black", ms=5)
            else:
                axis.errorbar(nll, i, xerr=2 * (stderr or 0), fmt="o", color="#2166ac",
                              capsize=2, ms=4)
        axis.set_yticks(range(len(points)), [p[0] for p in points], fontsize=7)
        axis.invert_yaxis()
        axis.set_xlabel("test NLL on binarized MNIST (nats, lower is better)")
        handles = [plt.Line2D([], [], marker="o", ls="", color="#2166ac",
                              label="probgen (±2 stderr, all 10,000 test images)"),
                   plt.Line2D([], [], marker="s", ls="", mfc="white", mec="black",
                              label="published")]
        axis.legend(handles=handles, fontsize=7, loc="lower right")
        axis.grid(axis="x", alpha=0.3)
        written.append(_save(figure, out / MNIST_CHART))
    curves = training_curves(files.get("hierarchical_mnist", []))
    if curves:
        beside = [RESULTS / CURVES_CHART] if out == CHARTS else []  # the results' own copy
        written += draw_curves(curves, [out / CURVES_CHART, *beside])
    return written


def training_curves(rows: list[Row]) -> dict[str, list[float]]:
    """Validation loss per epoch (−ELBO per example, nats) of each model trained for the longest
    budget in ``rows`` (one curve per model; its ELBO and IWAE rows share it)."""
    trained = [row for row in rows if row.get("validation_loss_per_epoch") and not is_published(row)]
    longest = max((_num(row.get("epochs")) or 0 for row in trained), default=0)
    return {short_label(str(row["model"])): [float(v) for v in row["validation_loss_per_epoch"]]
            for row in trained if (_num(row.get("epochs")) or 0) == longest}


def draw_curves(curves: dict[str, list[float]], paths: Iterable[Path]) -> list[str]:
    """Validation −ELBO against epoch, one line per model, into each of ``paths``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for path in paths:
        figure, axis = plt.subplots(figsize=(7, 4))
        for label, values in curves.items():
            axis.plot(range(1, len(values) + 1), values, lw=1.2, label=label)
        lowest = min(min(values) for values in curves.values())
        axis.set_ylim(lowest - 2, lowest + 25)
        axis.set_xlabel("epoch")
        axis.set_ylabel("validation −ELBO per image (nats, lower is better)")
        axis.set_title("Binarized MNIST, last 10,000 training images held out")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
        path.parent.mkdir(parents=True, exist_ok=True)
        written.append(_save(figure, path))
    return written


def _save(figure, path: Path) -> str:
    """80 dpi, 256 colours, optimized: a committed PNG of a few tens of KB."""
    import io

    import matplotlib.pyplot as plt
    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    buffer.seek(0)
    Image.open(buffer).convert("RGB").quantize(colors=256).save(path, optimize=True)
    return path.name


CHARTS_TEXT = f"""\
## Charts

![Speed against the peers](img/{SPEED_CHART})

*Speed against the peers, from `gmm`, `hmm`, `flows` and `svi_overhead` below: each bar is the
peer's time divided by probgen's on the same task, so a bar past 1 means probgen is faster.*

![MNIST test NLL beside the published rows](img/{MNIST_CHART})

*Test NLL on binarized MNIST: probgen's rows on the full protocol (IWAE-5000 or exact, all
10,000 test images; bars ±2 stderr) beside the published rows (squares), from `mnist_vae`,
`hierarchical_mnist` and `autoregressive_mnist` below. Architectures and budgets differ between
rows; the tables say how.*
"""


def render(results: Path = RESULTS) -> str:
    files = {path.stem: load(path) for path in sorted(results.glob("*.json"))}
    parts = ["# Benchmark results", "",
             "Generated by `python -m benchmarks.report` from `benchmarks/results/*.json`. Each "
             "section says what was measured and on which machine, and shows the figures to "
             "compare; every other field (settings, per-epoch losses, timings of each round, "
             "configs) is in the JSON file the section names.", "",
             HEADLINES, CHARTS_TEXT, PROTOCOL]
    summary = pre_protocol_summary({k: v for k, v in files.items() if isinstance(v, list)})
    if summary:
        parts += [summary]
    known = [stem for stem in SECTIONS if stem in files]
    for stem in known + [stem for stem in files if stem not in SECTIONS]:
        rows = files[stem]
        if isinstance(rows, str):
            parts += [f"## {stem}", "", f"`benchmarks/results/{stem}.json` {rows}.", ""]
        elif rows:
            parts += section(stem, rows)
    return "\n".join(parts).rstrip() + "\n"


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    files = {path.stem: load(path) for path in sorted(RESULTS.glob("*.json"))}
    charts = draw_charts({k: v for k, v in files.items() if isinstance(v, list)})
    OUT.write_text(render())
    print(f"wrote {OUT} and {', '.join(f'docs/img/{name}' for name in charts)}")


if __name__ == "__main__":
    main()
