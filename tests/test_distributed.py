"""Distributed SVI under torchrun (2 gloo processes) against single-process SVI; rank-0
checkpoints resume; one MCMC chain per process gathered into one InferenceData."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch

import probgen
from probgen.infer.distributed import DataParallel, run_mcmc_distributed, torchrun_command

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import distributed_worker as worker  # noqa: E402


@pytest.fixture(scope="module")
def torchrun_results(tmp_path_factory) -> dict:
    """Launch the worker once with torchrun --nproc-per-node 2 (gloo, localhost, free port)."""
    out = tmp_path_factory.mktemp("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0",
               "--log-dir", str(out / "logs"), "--redirects", "2",  # stderr per rank
               str(HERE / "distributed_worker.py"), str(out)]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    logs = {rank: "".join(path.read_text(errors="replace")
                          for path in (out / "logs").rglob(f"{rank}/stderr.log")) for rank in (0, 1)}
    if completed.returncode != 0:
        pytest.fail(f"torchrun failed ({completed.returncode}):\n{completed.stderr[-3000:]}\n"
                    f"rank 0:\n{logs[0][-3000:]}\nrank 1:\n{logs[1][-3000:]}")
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]
    return {"ranks": ranks, "mcmc": torch.load(out / "mcmc.pt", weights_only=False),
            "logs": logs, "out": out}


def single_process(**options) -> dict:
    pyro.clear_param_store()
    worker.seen.clear()
    result = probgen.fit(worker.model, worker.make_data(), guide=worker.guide, optim=0.05,
                         seed=worker.SEED, progress=False, **options)
    return {"losses": torch.tensor(result.losses, dtype=torch.float64), "params": result.params}


def assert_same_run(run: dict, reference: dict, tol: float = 1e-9) -> None:
    torch.testing.assert_close(run["losses"], reference["losses"], rtol=tol, atol=tol)
    assert set(run["params"]) == set(reference["params"])
    for name, value in reference["params"].items():
        torch.testing.assert_close(run["params"][name], value, rtol=1e-8, atol=tol)


@pytest.mark.parametrize("case,options", [
    ("minibatch", {"batch_size": worker.BATCH_SIZE, "num_steps": worker.NUM_STEPS}),
    ("full", {"num_steps": 10}),
])
def test_distributed_svi_matches_single_process(torchrun_results, case, options):
    """Same seed and global batch: the mean of the two ranks' gradients is the single-process
    gradient (61 examples split 31/30, so the N·W/B scale matters), losses and parameters agree,
    and both ranks end with identical parameters."""
    reference = single_process(**options)
    assert reference["losses"][-1] < reference["losses"][0] - 50  # it actually trained
    rank0, rank1 = (r[case] for r in torchrun_results["ranks"])
    assert_same_run(rank0, reference)
    assert_same_run(rank1, reference)


def test_bundled_model_starts_from_rank0_parameters(torchrun_results):
    """Ranks built the GMM with different seeds (100, 101); rank 0's start is broadcast, so both
    end where one process started from seed 100 ends."""
    reference = worker.fit_bundled(worker.make_data(), init_seed=100, distributed=False)
    for ranks in torchrun_results["ranks"]:
        assert_same_run(ranks["bundled"], reference)


def test_each_rank_sees_its_own_slice_of_the_global_batch(torchrun_results):
    x = worker.make_data()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(worker.SEED))
    global_batch = x[order[:worker.BATCH_SIZE]]
    # The first call of the model with a local batch (31 or 30 examples) is step 0.
    # (2-row calls are fit's probes of the program: dtype and shapes)
    firsts = [next(b for b in r["minibatch"]["batches"] if 2 < len(b) < worker.BATCH_SIZE)
              for r in torchrun_results["ranks"]]
    assert [len(b) for b in firsts] == [31, 30]
    torch.testing.assert_close(firsts[0], global_batch[0::2])
    torch.testing.assert_close(firsts[1], global_batch[1::2])
    full = [next(b for b in r["full"]["batches"] if 2 < len(b) < len(x))
            for r in torchrun_results["ranks"]]
    assert [len(b) for b in full] == [151, 150]


def test_checkpoint_written_by_rank0_resumes(torchrun_results):
    """Half a run with a checkpoint (written by rank 0 only), then a fresh fit with resume=True
    on both ranks: it ends where the uninterrupted run ends."""
    out = torchrun_results["out"]
    assert (out / "fit.pt").exists()
    assert not list(out.glob(".fit.pt.*.tmp"))
    state = probgen.core.checkpoint.load_checkpoint(out / "fit.pt")
    assert int(state["step"]) == worker.NUM_STEPS
    for ranks in torchrun_results["ranks"]:
        assert len(ranks["first_half"]["losses"]) == worker.NUM_STEPS // 2
        assert_same_run(ranks["resumed"], ranks["minibatch"])


def test_only_rank0_shows_progress(torchrun_results):
    # Four fits ran on each rank with progress=True; bars come from rank 0 only.
    logs = torchrun_results["logs"]
    assert f"/{worker.NUM_STEPS} [" in logs[0] and "/10 [" in logs[0]
    assert "fit:" not in logs[1] and "it/s" not in logs[1]


def test_mcmc_one_chain_per_process(torchrun_results):
    mcmc = torchrun_results["mcmc"]
    assert mcmc["chains"] == [0, 1]
    mu = mcmc["mu"]
    assert mu.shape == (2, 40)
    assert not torch.equal(mu[0], mu[1])  # chains were seeded differently
    x = torch.linspace(-1.0, 3.0, 20, dtype=torch.float64)
    precision = len(x) + 1 / 100.0
    exact_mean, exact_sd = float(x.sum()) / precision, precision ** -0.5
    # 80 draws (autocorrelated; take an effective size of 20): 5 standard errors.
    assert abs(float(mu.mean()) - exact_mean) < 5 * exact_sd / math.sqrt(20)
    assert mcmc["diverging"].shape == (2, 40)
    # Pointwise log-likelihood of chain r's draws: log N(x_i | mu, 1), per example.
    x_grid = x[None, None, :]
    expected = -0.5 * (x_grid - mu[..., None]) ** 2 - 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(mcmc["log_likelihood"], expected)


def test_single_process_fallbacks_and_errors():
    x = worker.make_data()
    with pytest.warns(UserWarning, match="not started by torchrun"):
        result = probgen.fit(worker.model, x, guide=worker.guide, num_steps=3, seed=0, distributed=True,
                                 progress=False)
    assert len(result.losses) == 3
    with pytest.raises(ValueError, match="cannot be split over 4 processes"):
        DataParallel(0, 4, 0).check_batch_size(301, 99)  # last batch has 4 examples: fine
        DataParallel(0, 4, 0).check_batch_size(301, 3)  # last batch has 1 example
    DataParallel(0, 4, 0).check_batch_size(300, 100)
    idata = run_mcmc_distributed(worker.mcmc_model, torch.zeros(5, dtype=torch.float64),
                                 num_samples=5, warmup_steps=5, progress=False, min_ess=0)
    assert idata.posterior["mu"].shape == (1, 5)
    with pytest.raises(ValueError, match="kernel"):
        run_mcmc_distributed(worker.mcmc_model, torch.zeros(5), kernel="gibbs")


def test_launch_command_drops_nproc():
    command = torchrun_command(["fit", "gmm", "--nproc", "4", "--steps", "10", "--nproc=2"], 4)
    assert command[1:4] == ["-m", "torch.distributed.run", "--nproc-per-node=4"]
    assert command[4] == "--standalone"
    assert command[5:] == ["-m", "probgen.cli", "fit", "gmm", "--steps", "10"]
    multi = torchrun_command(["fit", "vae"], 8, torchrun_args=["--nnodes=2",
                                                                "--rdzv-endpoint=h:29400"])
    assert "--standalone" not in multi and "--nnodes=2" in multi
    with pytest.raises(ValueError, match="nproc"):
        torchrun_command(["fit"], 0)
