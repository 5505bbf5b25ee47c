"""Bayesian HMM (Dirichlet transitions, Normal emission means) fitted with NUTS, states enumerated.

Simulates sequences from a 2-state Gaussian HMM, fits 2- and 3-state Bayesian HMMs and compares
them by PSIS-LOO over sequences.

    python examples/mcmc_hmm.py
    python examples/mcmc_hmm.py --smoke
"""

from __future__ import annotations

import argparse
import warnings

import arviz as az
import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

from probgen.infer.mcmc import loo_compare, run_mcmc


def bayesian_hmm(x: torch.Tensor, num_states: int = 2) -> None:
    """x: ``(sequences, time)``. Rows of the transition matrix ~ Dirichlet, means ~ Normal."""
    concentration = x.new_ones(num_states, num_states) + 4 * torch.eye(num_states, dtype=x.dtype)
    transition = pyro.sample("transition", dist.Dirichlet(concentration).to_event(1))
    locs = pyro.sample("locs", dist.Normal(x.new_zeros(num_states), 3.0).to_event(1))
    scale = pyro.sample("scale", dist.LogNormal(x.new_zeros(()), 1.0))
    with pyro.plate("sequences", x.shape[0]):
        state = pyro.sample("state_0", dist.Categorical(x.new_ones(num_states) / num_states))
        pyro.sample("x_0", dist.Normal(Vindex(locs)[..., state], scale), obs=x[:, 0])
        for t in pyro.markov(range(1, x.shape[1])):
            state = pyro.sample(f"state_{t}", dist.Categorical(Vindex(transition)[..., state, :]))
            pyro.sample(f"x_{t}", dist.Normal(Vindex(locs)[..., state], scale), obs=x[:, t])


def simulate(num_sequences: int, length: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    transition = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    locs = torch.tensor([-1.5, 1.5])
    states = torch.zeros(num_sequences, length, dtype=torch.long)
    states[:, 0] = torch.randint(2, (num_sequences,), generator=generator)
    for t in range(1, length):
        states[:, t] = torch.multinomial(transition[states[:, t - 1]], 1, generator=generator)[:, 0]
    noise = torch.randn(num_sequences, length, generator=generator)
    return (locs[states] + 0.7 * noise).double()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="seconds-long run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--states", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--num-sequences", type=int, default=20)
    parser.add_argument("--length", type=int, default=25)
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--num-chains", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.smoke:
        args.num_sequences, args.length, args.num_samples, args.warmup_steps = 4, 6, 10, 10
        args.num_chains = 1

    x = simulate(args.num_sequences, args.length, args.seed).to(args.device)
    fits = {}
    for k in args.states:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            idata = run_mcmc(lambda data, k=k: bayesian_hmm(data, k), x,
                             num_samples=args.num_samples, warmup_steps=args.warmup_steps,
                             num_chains=args.num_chains, seed=args.seed,
                             progress=not args.smoke, max_tree_depth=4 if args.smoke else 6)
        for warning in caught:
            print(f"K={k}: {warning.message}")
        fits[f"hmm K={k}"] = idata
        print(f"\nK={k}: {idata.posterior.attrs['sampling_seconds']:.1f} s sampling")
        print(az.summary(idata, var_names=["locs", "scale"], kind="stats"))
    print("\nPSIS-LOO (higher elpd_loo is better):")
    print(loo_compare(fits)[["rank", "elpd_loo", "se", "p_loo", "elpd_diff", "dse"]])


if __name__ == "__main__":
    main()
