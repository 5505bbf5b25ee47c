"""Data-parallel SVI and one-chain-per-process MCMC over torch.distributed (torchrun, gloo/NCCL),
and :func:`fit_in_processes`: data-parallel ``fit`` on this machine's cores without torchrun."""

from __future__ import annotations

import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pyro
import torch
import torch.distributed as dist
from pyro import poutine

from probgen.core.validate import as_batch
from probgen.infer import mcmc

__all__ = ["DataParallel", "launch_torchrun", "run_mcmc_distributed", "is_torchrun",
           "fit_in_processes"]


def is_torchrun() -> bool:
    """True inside a process started by ``torchrun`` (``WORLD_SIZE`` is in the environment)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def _init_process_group() -> None:
    if dist.is_initialized():
        return
    # One group serves both CPU (gloo) and CUDA (NCCL) tensors when a GPU is present.
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)


class SharedMemoryReducer:
    r"""The mean over the W processes of one machine of a flat tensor, through shared memory:
    x̄ = (1/W) Σ_r x_r, summed in rank order, so every rank gets the same bits.

    Rank r concatenates its tensors into row r of a file-backed ``(W, n)`` buffer (one per dtype and
    size, in ``folder``, double-buffered), all ranks meet at ``barrier`` once, and each sums the
    rows itself: a few memory passes over the gradient instead of gloo's TCP round trip.
    :func:`fit_in_processes` makes one before it forks; every rank then holds the same.
    """

    def __init__(self, world_size: int, folder: str, barrier: Any, timeout: float) -> None:
        self.world_size, self.folder, self.barrier = world_size, folder, barrier
        self.timeout = timeout
        self.buffers: dict[tuple[str, int, int], torch.Tensor] = {}
        self.sums: dict[tuple[torch.dtype, int], torch.Tensor] = {}
        self.calls = 0

    def _rows(self, dtype: torch.dtype, count: int) -> torch.Tensor:
        # calls alternate between two buffers: a rank writes buffer k again only after every
        # rank passed the next call's barrier, that is, after all read buffer k
        key = (str(dtype).removeprefix("torch."), count, self.calls % 2)
        if key not in self.buffers:
            path = os.path.join(self.folder, "-".join(map(str, key)))
            size = self.world_size * count
            with open(path, "ab"):
                pass
            os.truncate(path, size * torch.empty((), dtype=dtype).element_size())
            self.buffers[key] = torch.from_file(path, shared=True, size=size,
                                                dtype=dtype).view(self.world_size, count)
        return self.buffers[key]

    def mean(self, pieces: list[torch.Tensor], rank: int) -> torch.Tensor:
        """The mean over the ranks of ``torch.cat(pieces)`` (flat CPU tensors of one dtype), in a
        buffer the next call with the same dtype and size reuses."""
        count = sum(piece.numel() for piece in pieces)
        rows = self._rows(pieces[0].dtype, count)
        self.calls += 1
        torch.cat(pieces, out=rows[rank])
        try:
            self.barrier.wait(self.timeout)
        except threading.BrokenBarrierError:
            raise RuntimeError("data-parallel training: another process failed or did not "
                               f"reach the gradient average within {self.timeout} s") from None
        if (rows.dtype, count) not in self.sums:
            self.sums[rows.dtype, count] = torch.empty(count, dtype=rows.dtype)
        flat = self.sums[rows.dtype, count]
        torch.add(rows[0], rows[1], out=flat)
        for row in rows[2:]:
            flat.add_(row)
        return flat.div_(self.world_size)

    def abort(self) -> None:
        """Release every rank waiting in :meth:`mean` (with an error): this one has failed."""
        self.barrier.abort()


_SHARED_REDUCER: SharedMemoryReducer | None = None  # set by fit_in_processes before it forks


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
        reducer: averages CPU gradients through shared memory (:func:`fit_in_processes`);
            None: ``all_reduce`` of the process group.
    """

    rank: int
    world_size: int
    local_rank: int
    reducer: SharedMemoryReducer | None = None

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
        world_size = dist.get_world_size()
        reducer = _SHARED_REDUCER
        if reducer is not None and reducer.world_size != world_size:
            reducer = None
        return cls(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", 0)), reducer)

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

        One flat buffer per (device, dtype), so a step costs one or two collectives (through
        shared memory with a ``reducer``, for CPU tensors). The loss
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
            if self.reducer is not None and device.type == "cpu":
                flat = self.reducer.mean(pieces, self.rank)
            else:
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


def _join_group(store: str, rank: int, nproc: int, timeout: float) -> None:
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=nproc,
                            timeout=timedelta(seconds=timeout))


def _fit_worker(rank: int, nproc: int, store: str, timeout: float, model: Any, data: Any,
                options: dict[str, Any], errors: Any) -> None:
    """Rank ``rank`` of :func:`fit_in_processes` (a forked child): one thread, the same fit."""
    from probgen.infer.fit import fit

    try:
        torch.set_num_threads(1)
        _join_group(store, rank, nproc, timeout)
        fit(model, data, distributed=True, **options)
    except BaseException:  # noqa: BLE001 - reported by rank 0, in the caller
        if _SHARED_REDUCER is not None:
            _SHARED_REDUCER.abort()
        errors.put(f"rank {rank}:\n{traceback.format_exc()}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def fit_in_processes(model: Any, data: Any, *, nproc: int = 2, timeout: float = 600.0,
                     **options: Any) -> Any:
    r"""``probgen.fit(model, data, **options)`` data-parallel over ``nproc`` processes of this
    machine, one torch thread each, without torchrun: the fastest way to train on every core.

    This process is rank 0; ``nproc - 1`` forked copies of it (they inherit ``model`` and
    ``data``, nothing is pickled or re-imported) join a gloo group on a file in a scratch folder,
    and every rank runs ``fit(..., distributed=True)``: each global mini-batch of B is split
    ``B/W`` per process and the gradients are averaged (one all-reduce per step), so a run takes
    the single-process run's steps on the same global batches. Rank 0 keeps the trained
    parameters, writes the checkpoint and shows progress; its :class:`FitResult` is returned.
    Needs the ``fork`` start method (Linux; use ``torchrun`` elsewhere). ``nproc=1`` is a plain
    ``fit`` call. ``timeout``: seconds any rank waits for the others in one collective.

    Example::

        result = fit_in_processes(VAE((784,)), x, nproc=2, epochs=10, batch_size=100)
    """
    from probgen.infer.fit import fit

    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc <= 0:
        raise ValueError(f"nproc must be a positive number of processes, got {nproc!r}")
    if "distributed" in options:
        raise TypeError("fit_in_processes sets distributed=True itself; leave it out")
    if nproc == 1:
        return fit(model, data, **options)
    if "fork" not in multiprocessing.get_all_start_methods():
        raise RuntimeError("fit_in_processes needs the fork start method (Linux); launch with "
                           "`torchrun --nproc-per-node N` and fit(..., distributed=True) instead")
    if dist.is_initialized():
        raise RuntimeError("a torch.distributed process group is already running in this "
                           "process; call fit(..., distributed=True) directly")
    global _SHARED_REDUCER
    context = multiprocessing.get_context("fork")
    errors = context.SimpleQueue()
    previous = torch.get_num_threads()
    shared = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="probgen-dp-", dir=shared) as scratch:
        store = f"file://{os.path.join(scratch, 'group')}"
        _SHARED_REDUCER = reducer = SharedMemoryReducer(nproc, scratch, context.Barrier(nproc),
                                                        timeout)
        workers = [context.Process(target=_fit_worker, daemon=True, args=(
            rank, nproc, store, timeout, model, data, options, errors))
            for rank in range(1, nproc)]
        try:
            for worker in workers:
                worker.start()
            torch.set_num_threads(1)
            _join_group(store, 0, nproc, timeout)
            result = fit(model, data, distributed=True, **options)
        except BaseException as error:
            reducer.abort()
            _stop(workers, min(timeout, 30.0))
            if not errors.empty():  # a worker's failure may be the cause of rank 0's
                error.add_note(errors.get())
            raise
        finally:
            _SHARED_REDUCER = None
            torch.set_num_threads(previous)
        _stop(workers, timeout)
    if not errors.empty():
        raise RuntimeError(f"fit_in_processes: a worker failed after rank 0 finished\n"
                           f"{errors.get()}")
    return result


def _stop(workers: list[Any], timeout: float) -> None:
    """Leave the group (a rank still waiting in a collective then fails fast) and join."""
    if dist.is_initialized():
        dist.destroy_process_group()
    for worker in workers:
        worker.join(timeout)
        if worker.is_alive():
            worker.terminate()
            worker.join()


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
