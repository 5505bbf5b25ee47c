"""Journey (a): a Pyro program written from scratch, fitted with probgen.fit, scored with evaluate.

A zero-inflated Poisson regression: each count is a structural zero with probability pi, else
Poisson(exp(a + b * covariate)). The zero/non-zero indicator is a discrete latent that probgen
sums out exactly, so the held-out log-likelihood is exact.
"""

import argparse

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

import probgen


def model(counts: torch.Tensor, covariate: torch.Tensor) -> None:
    intercept = pyro.param("intercept", torch.tensor(0.0))
    slope = pyro.param("slope", torch.tensor(0.0))
    zero_prob = pyro.param("zero_prob", torch.tensor(0.5), constraint=constraints.unit_interval)
    with pyro.plate("data", len(counts)):  # sized from the arguments: probgen mini-batches
        structural_zero = pyro.sample("structural_zero", dist.Bernoulli(zero_prob))
        rate = torch.exp(intercept + slope * covariate) * (1 - structural_zero) + 1e-8
        pyro.sample("counts", dist.Poisson(rate), obs=counts)


def simulate(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    covariate = torch.randn(n, generator=generator)
    rate = torch.exp(0.5 + 0.8 * covariate)
    counts = torch.poisson(rate, generator=generator)
    counts[torch.rand(n, generator=generator) < 0.3] = 0.0
    return counts, covariate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="seconds-long run")
    args = parser.parse_args()
    if args.smoke:
        args.n, args.steps, args.batch_size = 600, 100, 128
    counts, covariate = simulate(args.n, torch.Generator().manual_seed(args.seed))
    split = int(0.8 * args.n)
    train = (counts[:split].to(args.device), covariate[:split].to(args.device))
    test = (counts[split:].to(args.device), covariate[split:].to(args.device))

    result = probgen.fit(model, train, num_steps=args.steps, batch_size=args.batch_size,
                         optim=0.05, seed=args.seed, device=args.device)
    print(f"fitted in {result.seconds:.1f}s: intercept={pyro.param('intercept').item():.3f} "
          f"(true 0.5), slope={pyro.param('slope').item():.3f} (true 0.8), "
          f"zero_prob={pyro.param('zero_prob').item():.3f} (true 0.3)")
    ll = probgen.evaluate(model, test)
    print(ll)


if __name__ == "__main__":
    main()
