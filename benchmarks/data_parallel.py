"""Data-parallel speed-up of ``probgen.fit`` on MNIST VAEs: one process vs ``torchrun
--nproc_per_node=W`` (``fit(distributed=True)``), the same global batch, epochs and model.

Runs ``benchmarks.hierarchical_mnist --train-only`` in subprocesses (one thread each, so W
processes use W cores) and reads the training seconds each reports; the machine must be otherwise
idle for the ratio to mean anything. Results: ``--out``/data_parallel.json.

    python -m benchmarks.data_parallel [--models vae,ladder] [--epochs 3] [--nproc 2] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._common import RESULTS, print_table, write_results

COLUMNS = ["model", "processes", "threads_each", "epochs", "train_seconds", "seconds_per_epoch",
           "speed_up"]


def run(command: list[str], name: str) -> float:
    """Training seconds that ``hierarchical_mnist`` printed for ``name``."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    found = re.findall(rf"^{name}: (\{{.*\}})$", done.stdout, flags=re.M)
    if not found:
        raise SystemExit(f"no timing for {name} in:\n{done.stdout[-2000:]}")
    return float(json.loads(found[-1])["train_seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="vae,ladder")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny data and networks")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models.split(","):
            common = ["--models", name, "--epochs", str(args.epochs), "--train-only",
                      "--threads", "1", "--save-dir", scratch] + (["--smoke"] if args.smoke
                                                                  else [])
            single = run([sys.executable, "-m", "benchmarks.hierarchical_mnist", *common], name)
            parallel = run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                            f"--nproc_per_node={args.nproc}", "-m",
                            "benchmarks.hierarchical_mnist", *common, "--distributed"], name)
            epochs = 1 if args.smoke else args.epochs
            for processes, seconds in ((1, single), (args.nproc, parallel)):
                rows.append({"model": name, "processes": processes, "threads_each": 1,
                             "epochs": epochs, "train_seconds": round(seconds, 1),
                             "seconds_per_epoch": round(seconds / epochs, 2),
                             "speed_up": round(single / seconds, 2),
                             "batch_size": "100 (global)", "trainer": "probgen.fit"})
    print_table(rows, COLUMNS)
    if not args.smoke:
        write_results("data_parallel", rows, results_dir=Path(args.out), epochs=args.epochs,
                      nproc=args.nproc, note="one torch thread per process; machine otherwise "
                                             "idle; fit(distributed=True) under torchrun, gloo")


if __name__ == "__main__":
    main()
