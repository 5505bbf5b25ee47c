"""probgen demo: fit every family's demo models on bundled data, one compare table per data set."""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict

import torch

from probgen.core.result import LogLikelihood
from probgen.data.bundled import load_dataset, train_test_split
from probgen.demo.registry import DemoData, DemoEntry, DemoUnavailable, entries_functions
from probgen.evaluate.compare import compare

__all__ = ["DATASETS", "collect_entries", "run_demo"]


def _iris(smoke: bool) -> DemoData:
    data = load_dataset("iris").data
    train_index, test_index = train_test_split(len(data), 0.2, seed=0)
    train = data[train_index]
    mean, std = train.mean(0), train.std(0)
    return DemoData("iris", ((train - mean) / std,), ((data[test_index] - mean) / std,),
                    "iris 150×4, standardized with training statistics, 120/30 split")


def _digits(smoke: bool) -> DemoData:
    data = (load_dataset("digits").data >= 8).to(torch.float64)
    train_index, test_index = train_test_split(len(data), 0.2, seed=0)
    if smoke:
        train_index = train_index[:400]
    return DemoData("digits", (data[train_index],), (data[test_index],),
                    "8×8 digits binarized at 8/16, 1437/360 split (64 binary pixels)")


DATASETS = {"iris": _iris, "digits": _digits}


def collect_entries(smoke: bool, skipped: list[str] | None = None) -> list[DemoEntry]:
    """Every family's demo entries (:func:`~probgen.demo.registry.register_demo`), in their
    declared order; a family that cannot run here (:class:`DemoUnavailable`) is left out, its
    reason appended to ``skipped``."""
    entries: list[DemoEntry] = []
    for entries_function in entries_functions():
        try:
            entries.extend(entries_function(smoke))
        except DemoUnavailable as reason:
            if skipped is not None:
                skipped.append(str(reason))
    return entries


def run_demo(out_dir: str = "runs/demo", *, smoke: bool = False, only: str | None = None) -> dict:
    """Fit all demo entries, print one compare table per data set, write JSON and plots."""
    from probgen.plots import plot_comparison

    os.makedirs(out_dir, exist_ok=True)
    groups: dict[str, list[DemoEntry]] = defaultdict(list)
    skipped: list[str] = []
    for entry in collect_entries(smoke, skipped):
        if only is None or only == entry.dataset:
            groups[entry.dataset].append(entry)
    for reason in skipped:
        print(f"skipped {reason}")
    summary = {}
    for dataset, entries in groups.items():
        loader = entries[0].load or DATASETS[dataset]
        data = loader(smoke)
        print(f"\n== {data.name}: {data.description}")
        results: dict[str, LogLikelihood] = {}
        for entry in entries:
            started = time.perf_counter()
            torch.manual_seed(0)
            results[entry.name] = entry.run(data, out_dir)
            print(f"  fitted {entry.name} in {time.perf_counter() - started:.1f}s: "
                  f"{results[entry.name].mean:.3f} nats ({results[entry.name].kind})")
        table = compare(results)
        print(table)
        summary[dataset] = table.to_dict()
        plot_comparison(table, os.path.join(out_dir, f"{dataset}_comparison.png"),
                        title=f"{data.name}: held-out log-likelihood")
    with open(os.path.join(out_dir, "demo.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"\nwrote {out_dir}/demo.json (every table, per-example values included)")
    for dataset in summary:
        print(f"picture: {os.path.join(out_dir, dataset + '_comparison.png')}: each family's "
              f"held-out log-likelihood on {dataset} and its paired difference to the best")
    print("more pictures of every family: docs/gallery.md")
    return summary
