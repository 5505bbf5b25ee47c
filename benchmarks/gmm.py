"""GMM EM speed: probgen's vectorized EM vs scikit-learn and pomegranate, same data and start.

probgen runs ``probgen.fit(gmm, x, method="em")``: the timing includes the trainer around EM.

Full covariance, N=100,000, D=16, K=16, 50 iterations by default. Every tool starts from the
same k-means++ parameters and runs exactly ``--iters`` EM iterations (tolerance disabled); the
final mean log-likelihood of each tool's parameters is computed by one exact float64 function
(probgen's GaussianMixture.log_prob), so the likelihood column is comparable across tools.
Every tool runs in this process on one thread; ``seconds`` is CPU (process) time, which a
shared machine's load inflates far less than wall time (``wall_seconds``, also kept).

    python benchmarks/gmm.py            # full run (about a minute on 2 cores)
    python benchmarks/gmm.py --smoke    # seconds
    python benchmarks/gmm.py --device cuda
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import probgen  # noqa: E402
from benchmarks._common import print_table, write_results  # noqa: E402
from probgen.models.mixture import GaussianMixture, initial_parameters  # noqa: E402


def timed(fn):
    """CPU (process) seconds, wall seconds and the result of one run."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, out


def simulate(num_examples: int, num_features: int, num_components: int, seed: int) -> torch.Tensor:
    """Data from a random full-covariance mixture with overlapping, unequal components."""
    generator = torch.Generator().manual_seed(seed)
    locs = 3.0 * torch.randn(num_components, num_features, generator=generator, dtype=torch.float64)
    factors = torch.randn(num_components, num_features, num_features, generator=generator,
                          dtype=torch.float64) / num_features**0.5
    covariances = factors @ factors.transpose(-1, -2) + 0.1 * torch.eye(num_features,
                                                                         dtype=torch.float64)
    weights = torch.distributions.Dirichlet(torch.full((num_components,), 5.0, dtype=torch.float64))
    truth = GaussianMixture(num_components, num_features).double()
    torch.manual_seed(seed)
    truth.set_parameters(weights.sample(), locs, covariances)
    return truth.sample(num_examples)


def run_probgen(x, init, args, dtype, device):
    model = GaussianMixture(args.components, x.shape[1], "full", args.reg_covar)
    model = model.to(device=device, dtype=dtype)
    model.set_parameters(init["weights"], init["locs"], init["covariances"])
    data = x.to(device=device, dtype=dtype)

    def fit():
        model.set_parameters(init["weights"], init["locs"], init["covariances"])
        probgen.fit(model, data, method="em", num_steps=args.iters, tol=0.0, init="model",
                    progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return model

    seconds, wall, model = timed(fit)
    params = {k: v.to("cpu", torch.float64) for k, v in model.parameters_dict().items()}
    return (seconds, wall), params


def run_sklearn(x, init, args):
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    precisions = torch.linalg.inv(init["covariances"]).numpy()
    data = x.numpy()

    def fit():
        gmm = SkGaussianMixture(args.components, covariance_type="full", tol=0.0,
                                max_iter=args.iters, reg_covar=args.reg_covar, n_init=1,
                                weights_init=init["weights"].numpy(), means_init=init["locs"].numpy(),
                                precisions_init=precisions)
        return gmm.fit(data)

    seconds, wall, gmm = timed(fit)
    assert gmm.n_iter_ == args.iters, gmm.n_iter_
    return (seconds, wall), {"weights": torch.tensor(gmm.weights_), "locs": torch.tensor(gmm.means_),
                     "covariances": torch.tensor(gmm.covariances_)}


def run_pomegranate(x, init, args):
    from pomegranate.distributions import Normal
    from pomegranate.gmm import GeneralMixtureModel

    def fit():
        components = [Normal(means=init["locs"][k].clone(), covs=init["covariances"][k].clone(),
                             covariance_type="full") for k in range(args.components)]
        gmm = GeneralMixtureModel(components, priors=init["weights"].clone(), max_iter=args.iters,
                                  tol=-float("inf"))
        return gmm.fit(x)

    seconds, wall, gmm = timed(fit)
    return (seconds, wall), {"weights": gmm.priors.detach().double(),
                     "locs": torch.stack([d.means.detach() for d in gmm.distributions]).double(),
                     "covariances": torch.stack([d.covs.detach() for d in gmm.distributions]).double()}


def mean_log_likelihood(x: torch.Tensor, params: dict[str, torch.Tensor]) -> float:
    model = GaussianMixture(params["weights"].numel(), x.shape[1], "full").double()
    model.set_parameters(params["weights"], params["locs"], params["covariances"])
    with torch.no_grad():
        return float(model.log_prob(x).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--components", type=int, default=16)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--reg-covar", type=float, default=1e-6)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads for every tool (1: fair on a shared machine)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds; best CPU time is reported")
    parser.add_argument("--slow-repeat", type=int, default=1,
                        help="rounds for pomegranate (about 50x slower than probgen here)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip", nargs="*", default=[], help="tools to skip: sklearn pomegranate")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds-long")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.smoke:
        args.examples, args.features, args.components, args.iters, args.repeat = 2000, 4, 3, 5, 1
    # Import every peer first (importing pomegranate resets torch's thread count, and sklearn
    # and scipy load their own BLAS and OpenMP pools), then give every pool the same count.
    import pomegranate.gmm  # noqa: F401
    import sklearn.mixture  # noqa: F401
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(args.threads)
    torch.set_num_threads(args.threads)
    pools = [(pool["internal_api"], pool["num_threads"]) for pool in threadpool_info()]
    print(f"thread pools: torch {torch.get_num_threads()}, {pools}")
    device = torch.device(args.device)

    x = simulate(args.examples, args.features, args.components, args.seed)  # float64, CPU
    init = initial_parameters(x, args.components, covariance="full", init="kmeans++", seed=args.seed)
    start_ll = mean_log_likelihood(x, init)

    runs = [("probgen EM float64", lambda: run_probgen(x, init, args, torch.float64, device)),
            ("probgen EM float32", lambda: run_probgen(x, init, args, torch.float32, device))]
    if "sklearn" not in args.skip:
        runs.append(("scikit-learn GaussianMixture", lambda: run_sklearn(x, init, args)))
    if "pomegranate" not in args.skip:
        runs.append(("pomegranate GeneralMixtureModel", lambda: run_pomegranate(x, init, args)))
    # Rounds, each running every tool once, so that load changes on a shared machine hit all
    # tools alike; each tool's best round is reported (all rounds are kept in the JSON).
    times: dict[str, list[float]] = {tool: [] for tool, _ in runs}
    walls: dict[str, list[float]] = {tool: [] for tool, _ in runs}
    results = {}
    for round_index in range(args.repeat):
        for tool, run in runs:
            if tool.startswith("pomegranate") and round_index >= args.slow_repeat:
                continue
            torch.set_num_threads(args.threads)
            (seconds, wall), results[tool] = run()
            times[tool].append(seconds)
            walls[tool].append(wall)
            print(f"round {round_index}: {tool}: {seconds:.3f} s CPU, {wall:.3f} s wall",
                  flush=True)
    rows = []
    for tool, _ in runs:
        seconds = min(times[tool])
        rows.append({"tool": tool, "device": str(device) if tool.startswith("probgen") else "cpu",
                     "seconds": seconds, "seconds_per_iter": seconds / args.iters,
                     "wall_seconds": min(walls[tool]), "all_seconds": times[tool],
                     "all_wall_seconds": walls[tool],
                     "mean_log_likelihood": mean_log_likelihood(x, results[tool])})
    reference = rows[0]
    for row in rows:
        row["seconds_ratio_to_probgen_float64"] = row["seconds"] / reference["seconds"]
        row["wall_ratio_to_probgen_float64"] = row["wall_seconds"] / reference["wall_seconds"]
        row["log_likelihood_minus_probgen_float64"] = (row["mean_log_likelihood"]
                                                      - reference["mean_log_likelihood"])
    load = os.getloadavg()[0]
    print(f"\nN={args.examples} D={args.features} K={args.components} full covariance, "
          f"{args.iters} EM iterations, {args.threads} threads; start mean LL {start_ll:.4f}; "
          f"load average {load:.1f} on {os.cpu_count()} cores")
    print_table(rows, ["tool", "device", "seconds", "wall_seconds", "seconds_per_iter",
                       "mean_log_likelihood", "seconds_ratio_to_probgen_float64",
                       "wall_ratio_to_probgen_float64", "log_likelihood_minus_probgen_float64"])
    if not args.smoke:
        write_results("gmm", rows, examples=args.examples, features=args.features,
                      components=args.components, iters=args.iters, reg_covar=args.reg_covar,
                      threads=args.threads, thread_pools=pools, rounds=args.repeat,
                      start_mean_log_likelihood=start_ll, load_average_1min=load,
                      timing="seconds: CPU (process) time, best round; wall_seconds: best wall "
                             "time; one thread per tool, one process",
                      init="kmeans++ (probgen.models.mixture.em.initial_parameters, shared by all tools)",
                      numpy_version=np.__version__)


if __name__ == "__main__":
    main()
