"""Worker for tests/test_distributed.py: run by `torchrun --nproc-per-node 2 distributed_worker.py OUT`.

Each rank runs the same program: distributed SVI (mini-batch and full-batch), a fit that stops
half way with a checkpoint written by rank 0 and a fresh fit that resumes it, and one MCMC chain
per rank. Rank r writes OUT/rank{r}.pt; rank 0 also writes OUT/mcmc.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
import torch.distributed as torch_dist
from torch.distributions import constraints

import probgen
from probgen.infer.distributed import run_mcmc_distributed

NUM_EXAMPLES, BATCH_SIZE, NUM_STEPS, SEED = 301, 61, 24, 3
seen: list[torch.Tensor] = []


def make_data() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    z = torch.bernoulli(torch.full((NUM_EXAMPLES,), 0.3, dtype=torch.float64), generator=generator)
    return torch.randn(NUM_EXAMPLES, dtype=torch.float64, generator=generator) + 4.0 * z + 0.5


def model(x: torch.Tensor) -> None:
    """Two-component mixture: enumerated assignments, parameters, and a global latent shift
    whose prior must be counted once (not once per rank)."""
    seen.append(x.detach().clone())
    weights = pyro.param("weights", torch.tensor([0.5, 0.5], dtype=torch.float64),
                         constraint=constraints.simplex)
    locs = pyro.param("locs", torch.tensor([-1.0, 1.0], dtype=torch.float64))
    shift = pyro.sample("shift", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[z] + shift, 1.0), obs=x)


def guide(x: torch.Tensor) -> None:
    """MAP guide for the shift: the ELBO gradient is deterministic, so ranks must match exactly."""
    pyro.sample("shift", dist.Delta(pyro.param("shift_map", torch.tensor(0.0, dtype=torch.float64))))


def run_fit(x: torch.Tensor, **options) -> dict:
    pyro.clear_param_store()
    seen.clear()
    result = probgen.fit(model, x, guide=guide, optim=0.05, seed=SEED, progress=True,
                         distributed=True, **options)
    return {"losses": torch.tensor(result.losses, dtype=torch.float64),
            "params": {name: value for name, value in result.params.items()},
            "batches": list(seen)}


def fit_bundled(x: torch.Tensor, init_seed: int, distributed: bool = True) -> dict:
    from probgen.models.mixture import GaussianMixture

    pyro.clear_param_store()
    torch.manual_seed(init_seed)
    gmm = GaussianMixture(2, 1, "diag").double()
    result = probgen.fit(gmm, x[:, None], method="svi", num_steps=5, batch_size=BATCH_SIZE, optim=0.05,
                         seed=SEED, progress=False, distributed=distributed)
    return {"losses": torch.tensor(result.losses, dtype=torch.float64),
            "params": {k: v.detach().clone() for k, v in gmm.state_dict().items()}}


def mcmc_model(x: torch.Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 10.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(mu, 1.0), obs=x)


def main(out: Path) -> None:
    x = make_data()
    results = {
        "minibatch": run_fit(x, batch_size=BATCH_SIZE, num_steps=NUM_STEPS),
        "full": run_fit(x, num_steps=10),
        "first_half": run_fit(x, batch_size=BATCH_SIZE, num_steps=NUM_STEPS // 2,
                              checkpoint=out / "fit.pt"),
    }
    # A fresh start from rank 0's checkpoint: empty param store, different torch RNG state.
    torch.manual_seed(12345)
    results["resumed"] = run_fit(x, batch_size=BATCH_SIZE, num_steps=NUM_STEPS,
                                 checkpoint=out / "fit.pt", resume=True)
    rank = torch_dist.get_rank()
    results["world_size"] = torch_dist.get_world_size()
    # A bundled model whose initial parameters differ by rank: rank 0's are broadcast.
    results["bundled"] = fit_bundled(x, init_seed=100 + rank)
    torch.save(results, out / f"rank{rank}.pt")

    mcmc_x = torch.linspace(-1.0, 3.0, 20, dtype=torch.float64)
    idata = run_mcmc_distributed(mcmc_model, mcmc_x, num_samples=40, warmup_steps=30, seed=7,
                                 progress=False, min_ess=0)
    if rank == 0:
        torch.save({"mu": torch.as_tensor(idata.posterior["mu"].values),
                    "chains": list(idata.posterior["chain"].values.tolist()),
                    "diverging": torch.as_tensor(idata.sample_stats["diverging"].values),
                    "log_likelihood": torch.as_tensor(idata.log_likelihood["x"].values)},
                   out / "mcmc.pt")
    torch_dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
