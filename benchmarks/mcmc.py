"""NUTS effective samples per second on a Bayesian GMM: probgen.run_mcmc vs plain Pyro MCMC.

Both run the same program (iris, standardized, K=3, assignments enumerated) with the same seed,
so they draw the same samples; the difference is probgen's overhead (pointwise
log-likelihoods with enumeration, arviz conversion, diagnostics).

    python -m benchmarks.mcmc
    python -m benchmarks.mcmc --smoke
"""

from __future__ import annotations

import argparse
import warnings

import arviz as az
import pyro
import pyro.distributions as dist
import torch
from pyro.infer.mcmc import MCMC, NUTS
from pyro.ops.indexing import Vindex

from benchmarks._common import print_table, timed, write_results
from probgen.data.bundled import load_dataset
from probgen.infer.mcmc import run_mcmc


def bayesian_gmm(x: torch.Tensor, num_components: int = 3) -> None:
    weights = pyro.sample("weights", dist.Dirichlet(x.new_ones(num_components)))
    locs = pyro.sample("locs", dist.Normal(x.new_zeros(num_components, x.shape[1]), 2.0).to_event(2))
    scales = pyro.sample("scales", dist.LogNormal(x.new_zeros(num_components, x.shape[1]), 1.0)
                         .to_event(2))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(Vindex(locs)[..., z, :], Vindex(scales)[..., z, :])
                    .to_event(1), obs=x)


def min_bulk_ess(posterior: dict) -> float:
    ess = az.ess(az.from_dict(posterior=posterior), method="bulk")
    return min(float(ess[name].min()) for name in ess.data_vars)


def run_pyro(x, args):
    pyro.set_rng_seed(args.seed)
    mcmc = MCMC(NUTS(bayesian_gmm, max_plate_nesting=1, max_tree_depth=args.max_tree_depth),
                num_samples=args.num_samples, warmup_steps=args.warmup_steps,
                disable_progbar=True)
    mcmc.run(x)
    return {k: v.unsqueeze(0).numpy() for k, v in mcmc.get_samples().items()}


def run_probgen(x, args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = run_mcmc(bayesian_gmm, x, num_samples=args.num_samples,
                         warmup_steps=args.warmup_steps, seed=args.seed, progress=False,
                         max_plate_nesting=1, max_tree_depth=args.max_tree_depth)
    return {k: idata.posterior[k].values for k in idata.posterior.data_vars}, idata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--max-tree-depth", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.smoke:
        args.num_samples, args.warmup_steps, args.max_tree_depth = 10, 10, 3

    x = torch.as_tensor(load_dataset("iris").data, dtype=torch.float64, device=args.device)
    x = (x - x.mean(0)) / x.std(0)
    if args.smoke:
        x = x[::5]

    pyro_seconds, pyro_posterior = timed(lambda: run_pyro(x, args), repeat=args.repeat)
    probgen_seconds, (probgen_posterior, idata) = timed(lambda: run_probgen(x, args),
                                                        repeat=args.repeat)
    same_draws = all(abs(pyro_posterior[k] - probgen_posterior[k]).max() < 1e-8
                     for k in pyro_posterior)
    sampling = idata.posterior.attrs["sampling_seconds"]
    rows = []
    for name, seconds, posterior, extra in [
        ("pyro MCMC (NUTS)", pyro_seconds, pyro_posterior, "samples only"),
        ("probgen run_mcmc (NUTS)", probgen_seconds, probgen_posterior,
         "samples + pointwise log-lik + arviz + diagnostics"),
    ]:
        ess = min_bulk_ess(posterior)
        rows.append({"tool": name, "output": extra, "seconds": seconds, "min_bulk_ess": ess,
                     "ess_per_second": ess / seconds})
    rows[1]["sampling_seconds"] = sampling
    rows[1]["overhead_seconds"] = probgen_seconds - sampling
    rows[1]["ratio_vs_pyro"] = rows[1]["ess_per_second"] / rows[0]["ess_per_second"]
    rows[1]["same_draws_as_pyro"] = same_draws
    print_table(rows, ["tool", "seconds", "min_bulk_ess", "ess_per_second", "ratio_vs_pyro",
                       "overhead_seconds"])
    print(f"identical draws: {same_draws}")
    if not args.smoke:
        write_results("mcmc", rows, num_samples=args.num_samples, warmup_steps=args.warmup_steps,
                      max_tree_depth=args.max_tree_depth, repeat=args.repeat, seed=args.seed,
                      device=args.device, data="iris standardized (150 x 4)", num_components=3,
                      chains=1, threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
