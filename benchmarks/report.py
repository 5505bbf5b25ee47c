"""Render benchmarks/results/*.json into docs/benchmarks.md: one short section per file.

Each section is a one-line description of what was measured, the machine it ran on, and one
small table (seven columns at most) of the figures a reader compares; everything else stays in
the JSON file, which the section names. Rows differ between files and between old and new runs,
so every cell tolerates a missing key.

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
    return markdown_table(ordered, columns)


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
               ("class. accuracy", key("classifier_accuracy", fixed(3))),
               ("precision", key("precision", fixed(3))), ("recall", key("recall", fixed(3))),
               ("MMD²", key("mmd2", sig)), ("± MMD²", key("mmd2_stderr", sig)),
               ("Vendi", key("vendi", fixed(2))), ("FID (pixels)", key("fid", fixed(3)))],
              caption="One data set, every family: held-out log-likelihood (higher is better, "
                      "with its kind), test accuracy of the generative classifier built from "
                      "the family (one model per digit), and sample metrics of 1000 samples "
                      "against the test images (precision/recall, Vendi: higher; MMD², FID: "
                      "lower).")],
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
               ("epochs", key("epochs", sig)), ("train", key("train_seconds", duration)),
               ("selection", key("model_selection"))],
              caption="Exact test NLL (lower is better) on Larochelle & Murray's static "
                      "binarization; validation on their 10,000-image valid split.")],
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


def render(results: Path = RESULTS) -> str:
    files = {path.stem: load(path) for path in sorted(results.glob("*.json"))}
    parts = ["# Benchmark results", "",
             "Generated by `python -m benchmarks.report` from `benchmarks/results/*.json`. Each "
             "section says what was measured and on which machine, and shows the figures to "
             "compare; every other field (settings, per-epoch losses, timings of each round, "
             "configs) is in the JSON file the section names.", "",
             PROTOCOL]
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
    OUT.write_text(render())
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
