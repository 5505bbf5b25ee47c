"""Shared benchmark helpers: machine record, timing, table printing, JSON results."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, threads, GPU, library versions."""
    import numpy
    import pyro
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__,
        "pyro": pyro.__version__, "numpy": numpy.__version__, "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def timed(fn: Callable[[], Any], *, repeat: int = 1) -> tuple[float, Any]:
    """Best wall time over ``repeat`` runs, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Print rows as an aligned text table (also returned, for READMEs)."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    widths = [max(len(c), *(len(cell(r.get(c))) for r in rows)) for c in columns]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths)),
             "-|-".join("-" * w for w in widths)]
    lines += [" | ".join(cell(r.get(c)).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    text = "\n".join(lines)
    print(text)
    return text


def write_results(name: str, rows: list[dict[str, Any]], *, results_dir: str | Path | None = None,
                  **settings: Any) -> Path:
    """Write ``rows`` (one dict per tool/model) to ``results_dir``/NAME.json (default
    benchmarks/results) as a JSON list.

    Each row carries the machine it ran on and the benchmark's settings, so a row read alone
    still says what it measured.
    """
    directory = Path(results_dir) if results_dir is not None else RESULTS
    directory.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    for row in rows:
        row.setdefault("machine", machine)
        row.setdefault("settings", settings)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(rows, indent=1, default=str))
    print(f"wrote {path}")
    return path
