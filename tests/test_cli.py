"""The command line: fit -> evaluate -> compare -> sample, one-line errors, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from probgen.core.checkpoint import load_checkpoint
from probgen.cli import main

FIT = ["fit", "gmm", "--data", "iris", "--standardize", "--set", "num_components=2",
       "--set", "covariance=\"diag\"", "--seed", "0", "--quiet"]


def run_cli(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "probgen.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_fit_evaluate_compare_sample(tmp_path, capsys):
    out = tmp_path / "gmm"
    assert main(FIT + ["--steps", "40", "--out", str(out)]) == 0
    for name in ("model.pt", "checkpoint.pt", "fit.json", "training_curve.png"):
        assert (out / name).exists()
    test_json = tmp_path / "test.json"
    assert main(["evaluate", str(out), "--data", "iris", "--standardize", "--split", "test",
                 "--out", str(test_json)]) == 0
    result = json.loads(test_json.read_text())
    assert result["kind"] == "exact" and result["num_examples"] == 30
    assert main(["compare", str(test_json), str(test_json), "--names", "a", "b",
                 "--plot", str(tmp_path / "c.png")]) == 0
    assert "Δ vs best" in capsys.readouterr().out
    assert main(["sample", str(out), "-n", "5", "--out", str(tmp_path / "s.pt")]) == 0
    assert torch.load(tmp_path / "s.pt", weights_only=True).shape == (5, 4)


@pytest.mark.parametrize("args,match", [
    (["fit", "no_such_model", "--data", "iris"], "unknown model"),
    (["fit", "gmm", "--data", "/nonexistent.npy"], "neither a bundled data set"),
    (["fit", "gmm", "--data", "iris", "--set", "num_components=2", "--batch-size", "0"],
     "batch_size"),
    (["fit", "gmm", "--data", "iris", "--set", "num_components=0"], "num_components"),
    (["evaluate", "/nonexistent_run", "--data", "iris"], "no checkpoint"),
    (["compare", "/nonexistent.json"], "no result file"),
])
def test_bad_command_lines_exit_2_with_one_line(args, match, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("probgen: error:") and len(err.splitlines()) == 1
    assert __import__("re").search(match, err), err


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    common = FIT + ["--steps", "300", "--checkpoint-every", "10"]
    reference = run_cli(*common, "--out", str(tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr
    killed_dir = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "probgen.cli", *common, "--out",
                                str(killed_dir)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    checkpoint = killed_dir / "checkpoint.pt"
    deadline = time.time() + 200
    while time.time() < deadline and process.poll() is None:
        if checkpoint.exists() and load_checkpoint(checkpoint)["step"] >= 30:
            break
        time.sleep(0.05)
    if process.poll() is not None:
        pytest.skip("the run finished before it could be killed (machine too fast)")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    step_at_kill = load_checkpoint(checkpoint)["step"]  # never half-written: it loads
    assert 0 < step_at_kill < 300
    resumed = run_cli(*common, "--out", str(killed_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(killed_dir / "model.pt", weights_only=True)["state_dict"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-5)
