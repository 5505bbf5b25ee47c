"""Bernoulli HMMs on JSB chorales (88-key piano rolls): test log-likelihood per step and per chorale.

Each HMM is fitted by Baum-Welch on the training chorales (same initialization rule, seed 0);
the log-likelihoods are exact (forward algorithm). One state is the independent-Bernoulli-per-key
baseline.

    python benchmarks/jsb_hmm.py            # states 1, 8, 16, 32, 64, 128
    python benchmarks/jsb_hmm.py --smoke    # seconds
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import print_table, timed, write_results  # noqa: E402
from probgen.data.jsb import load_jsb_chorales  # noqa: E402
from probgen.infer import fit as probgen_fit  # noqa: E402
from probgen.models.hmm import HMM, evaluate_forward, initialize_from_data  # noqa: E402


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--states", default="1,8,16,32,64,128")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--tol", type=float, default=1e-5, help="per-step improvement to stop at")
    parser.add_argument("--pseudocount", type=float, default=0.1)
    parser.add_argument("--resolution", default="quarter")
    parser.add_argument("--root", default=None, help="folder holding the JSON file")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_jsb_chorales(args.resolution, root=args.root)
    splits = {"train": data.train, "valid": data.valid, "test": data.test}
    states = [int(s) for s in args.states.split(",")]
    if args.smoke:
        splits = {name: split[:20] for name, split in splits.items()}
        states, args.iterations = [1, 4], 5
    device = torch.device(args.device)
    splits = {name: split.to(device) for name, split in splits.items()}
    rows = []
    for num_states in states:
        hmm = HMM(num_states, "bernoulli", num_features=88).double().to(device)
        initialize_from_data(hmm, *splits["train"].as_tuple(), seed=args.seed)
        seconds, fit = timed(lambda hmm=hmm: probgen_fit(
            hmm, splits["train"].as_tuple(), method="baum_welch", num_steps=args.iterations,
            tol=args.tol, pseudocount=args.pseudocount, seed=args.seed, progress=False))
        row = {"model": f"hmm-{num_states}", "states": num_states, "fit_seconds": seconds,
               "iterations": fit.num_steps, "converged": fit.converged}
        for name, split in splits.items():
            result = evaluate_forward(hmm, split.as_tuple())
            row[f"{name}_ll_per_step"] = result.settings["log_likelihood_per_step"]
            row[f"{name}_ll_per_sequence"] = result.mean
            if name == "test":
                row["test_ll_per_sequence_stderr"] = result.stderr
                row["test_kind"] = result.kind
                row["test_num_steps"] = result.settings["num_steps"]
        rows.append(row)
        print(f"{row['model']}: test {row['test_ll_per_step']:.4f} nats/step "
              f"({fit.num_steps} iterations, {seconds:.1f} s)", flush=True)
    print_table(rows, ["model", "iterations", "fit_seconds", "train_ll_per_step",
                       "valid_ll_per_step", "test_ll_per_step", "test_ll_per_sequence",
                       "test_ll_per_sequence_stderr"])
    if not args.smoke:
        write_results("jsb_hmm", rows, load_average_1min=os.getloadavg()[0], **vars(args))
    return rows


if __name__ == "__main__":
    main()
