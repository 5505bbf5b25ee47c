"""Bayesian Gaussian mixture fitted with NUTS (assignments enumerated), compared by PSIS-LOO.

    python examples/mcmc_gmm.py                  # iris, K = 2 and 3, 2 chains
    python examples/mcmc_gmm.py --smoke
"""

from __future__ import annotations

import argparse
import warnings

import arviz as az
import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

from probgen.data.bundled import load_dataset
from probgen.infer.mcmc import loo_compare, run_mcmc


def bayesian_gmm(x: torch.Tensor, num_components: int = 3) -> None:
    """Dirichlet weights, Normal means, LogNormal scales; z_n ~ Cat(weights) summed out by NUTS."""
    num_features = x.shape[-1]
    weights = pyro.sample("weights", dist.Dirichlet(x.new_ones(num_components)))
    # .to_event keeps the component axis out of the plates, so log-likelihoods vectorise over draws
    locs = pyro.sample("locs", dist.Normal(x.new_zeros(num_components, num_features), 2.0)
                       .to_event(2))
    scales = pyro.sample("scales", dist.LogNormal(x.new_zeros(num_components, num_features), 1.0)
                         .to_event(2))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(Vindex(locs)[..., z, :], Vindex(scales)[..., z, :])
                    .to_event(1), obs=x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="seconds-long run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--components", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--num-samples", type=int, default=300)
    parser.add_argument("--warmup-steps", type=int, default=300)
    parser.add_argument("--num-chains", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.smoke:
        args.num_samples, args.warmup_steps, args.num_chains = 10, 10, 1

    data = load_dataset("iris").data
    x = torch.as_tensor(data, dtype=torch.float64, device=args.device)
    x = (x - x.mean(0)) / x.std(0)
    if args.smoke:
        x = x[::5]

    fits = {}
    for k in args.components:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fits[f"gmm K={k}"] = run_mcmc(
                lambda data, k=k: bayesian_gmm(data, k), x, num_samples=args.num_samples,
                warmup_steps=args.warmup_steps, num_chains=args.num_chains, seed=args.seed,
                progress=not args.smoke, max_tree_depth=4 if args.smoke else 6)
        for warning in caught:
            print(f"K={k}: {warning.message}")
        idata = fits[f"gmm K={k}"]
        print(f"\nK={k}: {idata.posterior.attrs['sampling_seconds']:.1f} s sampling, "
              f"{int(idata.sample_stats['diverging'].sum())} divergences")
        print(az.summary(idata, var_names=["weights"], kind="stats"))
    print("\nPSIS-LOO (higher elpd_loo is better):")
    print(loo_compare(fits)[["rank", "elpd_loo", "se", "p_loo", "elpd_diff", "dse"]])


if __name__ == "__main__":
    main()
