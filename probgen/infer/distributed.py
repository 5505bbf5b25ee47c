"""Data-parallel SVI and one-chain-per-process MCMC over torch.distributed (torchrun, gloo/NCCL)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyro
import torch
import torch.distributed as dist
from pyro import poutine

from probgen.core.validate import as_batch
from probgen.infer import mcmc

__all__ = ["DataParallel", "launch_torchrun", "run_mcmc_distributed", "is_torchrun"]


def is_torchrun() -> bool:
    """True inside a process started by ``torchrun`` (``WORLD_SIZE`` is in the environment)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def _init_process_group() -> None:
    if dist.is_initialized():
        return
    # One group serves both CPU (gloo) and CUDA (NCCL) tensors when a GPU is present.
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)


@dataclass(frozen=True)
class DataParallel:
    r"""This process's place in a data-parallel SVI run, and the collectives :func:`fit` needs.

    Every rank holds the whole data set and the same seeded permutation; rank r takes examples
    ``r, r + W, r + 2W, ...`` of each global mini-batch of B (DistributedSampler's split) and
    scales the data plate by N·W/B, so the mean over ranks of the gradients is exactly the
    single-process gradient on the global batch, even when W does not divide B.

    Fields:
        rank: this process's index in [0, world_size).
        world_size: number of processes W (1 when not launched by torchrun).
        local_rank: index on this machine (which GPU ``device="cuda"`` maps to).
    """

    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_environment(cls) -> DataParallel:
        """Join the process group torchrun set up (or a world of one, with a warning)."""
        if not dist.is_initialized() and not is_torchrun():
            warnings.warn("distributed=True but this process was not started by torchrun (no "
                          "WORLD_SIZE/RANK in the environment); training in one process. Launch "
                          "with `torchrun --nproc-per-node N script.py` to use N processes",
                          stacklevel=3)
            return cls(0, 1, 0)
        _init_process_group()
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints and shows progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1 and dist.is_initialized()

    def device_for(self, device: str | torch.device | None) -> str | torch.device | None:
        """``"cuda"`` without an index means this rank's GPU, ``cuda:LOCAL_RANK``."""
        if device is not None and torch.device(device).type == "cuda" \
                and torch.device(device).index is None:
            device = torch.device("cuda", self.local_rank % max(1, torch.cuda.device_count()))
        if device is not None and torch.device(device).type == "cuda":
            torch.cuda.set_device(torch.device(device))
        return device

    def check_batch_size(self, size: int, batch_size: int) -> None:
        """Every global batch (the last, partial one too) must give each rank an example."""
        smallest = size % batch_size or batch_size
        if smallest < self.world_size:
            raise ValueError(
                f"a global batch of {smallest} example(s) cannot be split over {self.world_size} "
                f"processes (N={size}, batch_size={batch_size}); use a batch_size of at least "
                f"{self.world_size} whose remainder N % batch_size is 0 or at least "
                f"{self.world_size}")

    def broadcast_seed(self, seed: int) -> int:
        """Rank 0's seed on every rank (so all ranks draw the same permutations)."""
        if not self.active:
            return seed
        value = torch.tensor([seed], dtype=torch.int64)
        dist.broadcast(value, src=0)
        return int(value.item())

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's examples of a global batch: ``index[rank::world_size]``."""
        return index[self.rank::self.world_size]

    def plate_scale(self, size: int, global_count: int) -> float:
        """Data-plate scale N·W/B: the mean over ranks then weighs every example by N/B."""
        return size * self.world_size / global_count

    def prepare(self, guide: Callable, first: tuple[torch.Tensor, ...], bundled: Any,
                seed: int, start_step: int, resumed: bool) -> None:
        """Create every parameter, copy rank 0's values to all ranks, then give each rank its
        own sampling stream (the shuffling stream is shared: it is seeded per epoch)."""
        if not self.active:
            return
        with torch.no_grad(), poutine.block():
            poutine.trace(guide).get_trace(*first)
        tensors: dict[int, torch.Tensor] = {}
        store = pyro.get_param_store()
        for name in sorted(store.keys()):
            tensors.setdefault(id(store._params[name]), store._params[name])
        if bundled is not None:
            for tensor in list(bundled.parameters()) + list(bundled.buffers()):
                tensors.setdefault(id(tensor), tensor)
        with torch.no_grad():
            for tensor in tensors.values():
                dist.broadcast(tensor.data, src=0)
        if not resumed:
            pyro.set_rng_seed(seed + self.rank)
        elif self.rank > 0:  # the checkpoint holds rank 0's stream; others branch off it
            pyro.set_rng_seed(seed + self.rank + 1_000_003 * start_step)

    def average_gradients_(self, params: dict[str, torch.Tensor], loss: float) -> float:
        """All-reduce (mean) every parameter's gradient in place; return the mean loss.

        One flat buffer per (device, dtype), so a step costs one or two collectives. The loss
        rides in a float64 buffer, so every rank sees the same (single-process) loss and takes
        the same decisions (divergence, early stopping).
        """
        if not self.active:
            return loss
        ordered = [params[name] for name in sorted(params)]
        buckets: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
        for param in ordered:
            buckets.setdefault((param.device, param.dtype), []).append(param)
        loss_key = (ordered[0].device if ordered else torch.device("cpu"), torch.float64)
        buckets.setdefault(loss_key, [])
        mean_loss = loss
        for (device, dtype), members in buckets.items():
            pieces = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in members]
            if (device, dtype) == loss_key:
                pieces.append(torch.tensor([loss], dtype=dtype, device=device))
            flat = torch.cat(pieces)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= self.world_size
            offset = 0
            for param in members:
                count = param.numel()
                value = flat[offset:offset + count].view_as(param)
                if param.grad is None:
                    param.grad = value.clone()
                else:
                    param.grad.copy_(value)
                offset += count
            if (device, dtype) == loss_key:
                mean_loss = float(flat[-1])
        return mean_loss

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def _strip_nproc(argv: Sequence[str]) -> list[str]:
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--nproc", "--nproc-per-node"):
            skip = True
            continue
        if arg.startswith(("--nproc=", "--nproc-per-node=")):
            continue
        kept.append(arg)
    return kept


def torchrun_command(argv: Sequence[str], nproc: int, *,
                     torchrun_args: Sequence[str] = ()) -> list[str]:
    """The command :func:`launch_torchrun` runs (single machine, ``--standalone`` rendezvous)."""
    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc <= 0:
        raise ValueError(f"nproc must be a positive number of processes, got {nproc!r}")
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    launcher += list(torchrun_args) or ["--standalone"]
    return launcher + ["-m", "probgen.cli", *_strip_nproc(argv)]


def launch_torchrun(argv: list[str], nproc: int, *, torchrun_args: Sequence[str] = ()) -> int:
    """Run ``python -m torch.distributed.run --nproc-per-node N -m probgen.cli ARGV``.

    ``argv`` is the command line after ``probgen`` (e.g. ``["vae", "--data", "mnist",
    "--nproc", "4"]``); ``--nproc`` is dropped. ``torchrun_args`` replaces ``--standalone``
    (e.g. ``["--nnodes=2", "--rdzv-backend=c10d", "--rdzv-endpoint=host:29400"]``).
    Returns torchrun's exit status.
    """
    return subprocess.call(torchrun_command(argv, nproc, torchrun_args=torchrun_args))


def run_mcmc_distributed(model: Any, data: Any = None, *, num_samples: int = 1000,
                         warmup_steps: int | None = None, seed: int = 0, kernel: str = "nuts",
                         device: str | torch.device | None = None, progress: bool = True,
                         rhat_threshold: float = 1.01, min_ess: float = 100, **options: Any):
    r"""One MCMC chain per process (rank r seeded ``seed + r``), gathered into one InferenceData.

    Call it from every rank of a torchrun launch: each rank runs
    :func:`probgen.infer.mcmc.run_mcmc` for one chain (on ``cuda:LOCAL_RANK`` with
    ``device="cuda"``), the chains are all-gathered and concatenated along ``chain``, and every
    rank returns the same ``arviz.InferenceData`` (chain r from rank r; ``log_likelihood`` and
    ``sample_stats`` included). Convergence warnings (r_hat, ESS) are issued once, on rank 0,
    over all chains. Without torchrun it runs one chain in this process.

    Args:
        model: a Pyro program or bundled model, run as ``model(*data)``.
        data: a tensor or tuple of tensors (moved to ``device``).
        options: passed to ``run_mcmc`` (``max_plate_nesting``, ``data_plate``, kernel options).

    Example::

        idata = run_mcmc_distributed(model, x, num_samples=500, warmup_steps=500)
        # torchrun --nproc-per-node 4 script.py -> idata.posterior.sizes["chain"] == 4
    """
    import arviz as az  # heavy: only when MCMC runs

    if kernel not in ("nuts", "hmc"):
        raise ValueError(f"kernel must be 'nuts' or 'hmc', got {kernel!r}")
    context = DataParallel.from_environment() if (dist.is_initialized() or is_torchrun()) \
        else DataParallel(0, 1, 0)
    device = context.device_for(device)
    if data is not None and device is not None:
        data = tuple(t.to(device) for t in as_batch(data))
    chain = mcmc.run_mcmc(model, data, kernel=kernel, num_samples=num_samples,
                          warmup_steps=warmup_steps, num_chains=1, seed=seed + context.rank,
                          progress=progress and context.is_main, rhat_threshold=math.inf,
                          min_ess=0, **options)
    chains = [chain]
    if context.active:
        chains = [None] * context.world_size
        dist.all_gather_object(chains, chain)
    idata = chains[0] if len(chains) == 1 else az.concat(*chains, dim="chain")
    idata.posterior.attrs["sampling_seconds"] = max(
        float(c.posterior.attrs.get("sampling_seconds", 0.0)) for c in chains)
    idata.posterior.attrs["processes"] = len(chains)
    if context.is_main:
        mcmc._warn_on_diagnostics(idata, len(chains), rhat_threshold, min_ess)
    return idata
