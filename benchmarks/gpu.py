"""GPU benchmark: GMM EM, HMM EM/forward, a VAE SVI epoch on MNIST and IWAE-5000, vs CPU peers.

Runs every section on one CUDA device and, in the same process on the same data, the CPU peer
(scikit-learn for GMM EM, hmmlearn for HMM EM and scoring); the CPU figures probgen measured
earlier (benchmarks/results/{gmm,hmm,mnist_vae}.json) are read and quoted beside them.
Targets on one H100: GMM EM >= 100x scikit-learn, a VAE epoch on MNIST < 2 s.
Writes benchmarks/results/gpu-{gmm,hmm,vae}.json.

    python benchmarks/gpu.py                      # needs CUDA; prints a message and exits 0 otherwise
    python benchmarks/gpu.py --sections gmm vae   # some sections only
    python benchmarks/gpu.py --allow-cpu          # no CUDA: --smoke sizes on the CPU (tests the script)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import probgen

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, print_table, timed, write_results  # noqa: E402
from probgen.core.paths import data_dirs  # noqa: E402

SECTIONS = ("gmm", "hmm", "vae")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_record(name: str, **match) -> dict | None:
    """The first row of results/NAME.json (a CPU run) whose fields equal ``match``."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    for row in json.loads(path.read_text()):
        if all(row.get(key) == value for key, value in match.items()):
            return row
    return None


# --- GMM EM -------------------------------------------------------------------------------
def bench_gmm(args, device: torch.device) -> list[dict]:
    from benchmarks.gmm import mean_log_likelihood, simulate
    from probgen.models.mixture import GaussianMixture
    from probgen.models.mixture.em import initial_parameters

    n, d, k, iters = args.gmm_examples, args.gmm_features, args.gmm_components, args.gmm_iters
    x = simulate(n, d, k, args.seed)  # float64 on the CPU
    init = initial_parameters(x, k, covariance="full", init="kmeans++", seed=args.seed)
    rows = []
    for dtype in (torch.float32, torch.float64):
        model = GaussianMixture(k, d, "full", args.reg_covar).to(device=device, dtype=dtype)
        data = x.to(device=device, dtype=dtype)

        def run(model=model, data=data):
            model.set_parameters(init["weights"], init["locs"], init["covariances"])
            probgen.fit(model, data, method="em", num_steps=iters, tol=0.0, init="model",
                        progress=False)
            synchronize(device)
            return model

        run()  # warm-up: CUDA context, kernels, allocator
        seconds, model = timed(run, repeat=args.repeat)
        params = {key: v.to("cpu", torch.float64) for key, v in model.parameters_dict().items()}
        rows.append({"tool": f"probgen EM {str(dtype)[6:]}", "device": str(device),
                     "seconds": seconds, "mean_log_likelihood": mean_log_likelihood(x, params)})
    if not args.no_peers:
        from benchmarks.gmm import run_sklearn

        peer_args = argparse.Namespace(components=k, iters=iters, reg_covar=args.reg_covar,
                                       repeat=1)
        seconds, params = run_sklearn(x, init, peer_args)
        rows.append({"tool": "scikit-learn GaussianMixture", "device": "cpu", "seconds": seconds,
                     "mean_log_likelihood": mean_log_likelihood(x, params)})
    earlier = {"probgen EM float64": cpu_record("gmm", tool="probgen EM float64"),
               "scikit-learn GaussianMixture": cpu_record("gmm", tool="scikit-learn GaussianMixture")}
    sklearn = next((r["seconds"] for r in rows if r["tool"].startswith("scikit")), None)
    for row in rows:
        row["speedup_vs_sklearn"] = sklearn / row["seconds"] if sklearn else None
        for label, record in earlier.items():
            if record is not None and record.get("settings", {}).get("examples") == n:
                row[f"speedup_vs_recorded_cpu_{label.split()[0]}"] = record["seconds"] / row["seconds"]
    return rows


# --- HMM EM and forward -------------------------------------------------------------------
def bench_hmm(args, device: torch.device) -> list[dict]:
    from benchmarks.hmm import make_data, run_hmmlearn, run_probgen

    hmm_args = argparse.Namespace(states=8, features=4, sequences=args.hmm_sequences,
                                  length=args.hmm_length, iterations=args.hmm_iters,
                                  covars_prior=1e-2, seed=args.seed)
    sequences, start = make_data(hmm_args, np.random.default_rng(args.seed))
    run_probgen(sequences, start, argparse.Namespace(**{**vars(hmm_args), "iterations": 1}),
                device)  # warm-up
    hmm, em_seconds, em = run_probgen(sequences, start, hmm_args, device)
    synchronize(device)
    x = sequences.to(device)

    def score() -> float:
        with torch.no_grad():
            value = hmm.log_prob(x).sum()
        synchronize(device)
        return float(value)

    score()
    score_seconds, score_value = timed(score, repeat=args.repeat)
    rows = [{"tool": "probgen", "task": "em", "device": str(device), "seconds": em_seconds,
             "log_likelihood": em.final_log_likelihood},
            {"tool": "probgen", "task": "score", "device": str(device), "seconds": score_seconds,
             "log_likelihood": score_value}]
    if not args.no_peers:
        learn, hl_seconds, flat, lengths = run_hmmlearn(sequences, start, hmm_args)
        hl_score_seconds, hl_score = timed(lambda: float(learn.score(flat, lengths)),
                                           repeat=args.repeat)
        rows += [{"tool": "hmmlearn", "task": "em", "device": "cpu", "seconds": hl_seconds,
                  "log_likelihood": float(learn.score(flat, lengths))},
                 {"tool": "hmmlearn", "task": "score", "device": "cpu",
                  "seconds": hl_score_seconds, "log_likelihood": hl_score}]
    for row in rows:
        peer = next((r for r in rows if r["tool"] == "hmmlearn" and r["task"] == row["task"]), None)
        row["speedup_vs_hmmlearn"] = peer["seconds"] / row["seconds"] if peer else None
        record = cpu_record("hmm", tool="probgen", task=row["task"],
                            sequences=hmm_args.sequences, length=hmm_args.length)
        if record is not None:
            row["speedup_vs_recorded_cpu_probgen"] = record["seconds"] / row["seconds"]
    return rows


# --- VAE: one SVI epoch on MNIST, then IWAE-k ---------------------------------------------
def mnist_like(args) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Binarized MNIST (train, test) from the data folders; else random bits of its shape."""
    from probgen.data.mnist import load_binarized_mnist

    for folder in data_dirs("binarized_mnist"):  # $PROBGEN_DATA, the cache, ../shared/data
        if folder.is_dir():
            try:
                return (load_binarized_mnist("train", path=folder, download=False).float(),
                        load_binarized_mnist("test", path=folder, download=False).float(),
                        "binarized MNIST (static)")
            except (OSError, ValueError, RuntimeError):
                continue
    generator = torch.Generator().manual_seed(args.seed)
    train = torch.bernoulli(torch.full((50_000, 784), 0.13), generator=generator)
    test = torch.bernoulli(torch.full((10_000, 784), 0.13), generator=generator)
    return train, test, "synthetic bits of MNIST's shape (MNIST not found; timing only)"


def bench_vae(args, device: torch.device) -> list[dict]:
    import pyro

    import probgen
    from probgen.models.vae import VAE

    train, test, source = mnist_like(args)
    train, test = train[:args.vae_examples].to(device), test[:args.iwae_examples].to(device)
    pyro.set_rng_seed(args.seed)
    vae = VAE((784,), latent_dim=50, hidden_features=(200, 200), activation="tanh",
              likelihood="bernoulli").to(device)
    probgen.fit(vae, train[:args.vae_batch * 2], num_steps=2, batch_size=args.vae_batch,
                optim=1e-3, seed=args.seed, progress=False)  # warm-up
    synchronize(device)
    started = time.perf_counter()
    result = probgen.fit(vae, train, epochs=1, batch_size=args.vae_batch, optim=1e-3,
                         seed=args.seed, progress=False)
    synchronize(device)
    epoch_seconds = time.perf_counter() - started
    rows = [{"task": "vae svi epoch (probgen.fit)", "device": str(device),
             "seconds": epoch_seconds, "examples": len(train), "batch_size": args.vae_batch,
             "steps": result.num_steps, "ms_per_step": 1000 * epoch_seconds / result.num_steps,
             "final_loss_per_example": result.losses[-1] / len(train), "data": source}]
    probgen.evaluate(vae, test[:2], estimator="iwae", k=10, seed=args.seed)  # warm-up
    synchronize(device)
    started = time.perf_counter()
    iwae = probgen.evaluate(vae, test, estimator="iwae", k=args.iwae_k,
                            batch_size=args.iwae_batch, seed=args.seed)
    synchronize(device)
    iwae_seconds = time.perf_counter() - started
    rows.append({"task": f"iwae-{args.iwae_k} evaluation", "device": str(device),
                 "seconds": iwae_seconds, "examples": len(test),
                 "ms_per_example": 1000 * iwae_seconds / len(test), "nll_nats": iwae.nll,
                 "note": "after one training epoch: a timing, not a likelihood result",
                 "data": source})
    record = cpu_record("mnist_vae", estimator="iwae", k=args.iwae_k)
    if record is not None and record.get("eval_seconds") and record.get("num_test"):
        cpu_ms = 1000 * record["eval_seconds"] / record["num_test"]
        rows[-1]["speedup_vs_recorded_cpu_probgen_per_example"] = cpu_ms / rows[-1]["ms_per_example"]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="without CUDA, run --smoke sizes on the CPU (to test this script)")
    parser.add_argument("--smoke", action="store_true", help="seconds-long sizes")
    parser.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--no-peers", action="store_true", help="skip scikit-learn / hmmlearn")
    parser.add_argument("--write", action="store_true", help="write JSON even for --smoke")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the peers")
    parser.add_argument("--gmm-examples", type=int, default=100_000)
    parser.add_argument("--gmm-features", type=int, default=16)
    parser.add_argument("--gmm-components", type=int, default=16)
    parser.add_argument("--gmm-iters", type=int, default=50)
    parser.add_argument("--reg-covar", type=float, default=1e-6)
    parser.add_argument("--hmm-sequences", type=int, default=200)
    parser.add_argument("--hmm-length", type=int, default=500)
    parser.add_argument("--hmm-iters", type=int, default=20)
    parser.add_argument("--vae-examples", type=int, default=60_000)
    parser.add_argument("--vae-batch", type=int, default=100)
    parser.add_argument("--iwae-k", type=int, default=5000)
    parser.add_argument("--iwae-examples", type=int, default=10_000)
    parser.add_argument("--iwae-batch", type=int, default=20, help="test images per IWAE chunk")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        if not args.allow_cpu:
            print("benchmarks/gpu.py: CUDA is not available on this machine, nothing to measure. "
                  "Run it on a GPU machine, or pass --allow-cpu to test the script on the CPU "
                  "with --smoke sizes.")
            return 0
        device, args.smoke = torch.device("cpu"), True
    if args.smoke:
        args.gmm_examples, args.gmm_features, args.gmm_components, args.gmm_iters = 2000, 4, 3, 5
        args.hmm_sequences, args.hmm_length, args.hmm_iters = 10, 50, 2
        args.vae_examples, args.iwae_k, args.iwae_examples, args.iwae_batch = 1000, 20, 8, 8
        args.repeat = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = {k: v for k, v in vars(args).items() if k not in ("sections",)}
    print(f"device: {device}" + (f" ({torch.cuda.get_device_name(device)})"
                                 if device.type == "cuda" else ""), flush=True)
    benches = {"gmm": (bench_gmm, ["tool", "device", "seconds", "mean_log_likelihood",
                                   "speedup_vs_sklearn", "speedup_vs_recorded_cpu_probgen"]),
               "hmm": (bench_hmm, ["tool", "task", "device", "seconds", "log_likelihood",
                                   "speedup_vs_hmmlearn", "speedup_vs_recorded_cpu_probgen"]),
               "vae": (bench_vae, ["task", "device", "seconds", "steps", "ms_per_step",
                                   "ms_per_example", "nll_nats", "data"])}
    for name in args.sections:
        run, columns = benches[name]
        print(f"\n== {name}", flush=True)
        rows = run(args, device)
        print_table(rows, columns)
        if not args.smoke or args.write:
            write_results(f"gpu-{name}" + ("-smoke" if args.smoke else ""), rows, **settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
