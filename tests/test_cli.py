"""The command line: fit -> evaluate -> compare -> sample, one-line errors, kill and resume."""

import json
import multiprocessing
import os
import signal

import pytest
import torch

from probgen.cli import main
from probgen.core.checkpoint import load_checkpoint

FIT = ["fit", "gmm", "--data", "iris", "--standardize", "--set", "num_components=2",
       "--set", "covariance=\"diag\"", "--seed", "0", "--quiet"]


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


def _die_mid_checkpoint(argv: list[str]) -> None:
    """In a forked child: the CLI, with torch.save writing part of the step-40 checkpoint and
    then SIGKILLing this process. Deterministic: no race with a timer, never skipped."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 40:
            f.write(b"half a checkpoint")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)

    torch.save = save
    main(argv)


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    """SIGKILL while a checkpoint is half-written: the previous checkpoint still loads, and
    resuming from it ends where the uninterrupted run ends. The killed run is a forked child
    (no new interpreter to start); the others run in this process."""
    common = FIT + ["--method", "svi", "--steps", "80", "--checkpoint-every", "10"]
    assert main(common + ["--out", str(tmp_path / "ref")]) == 0
    killed_dir = tmp_path / "killed"
    child = multiprocessing.get_context("fork").Process(
        target=_die_mid_checkpoint, args=(common + ["--out", str(killed_dir)],))
    child.start()
    child.join(timeout=300)
    assert child.exitcode == -signal.SIGKILL, f"the child ended with {child.exitcode}"
    assert load_checkpoint(killed_dir / "checkpoint.pt")["step"] == 30  # never half-written
    assert main(common + ["--out", str(killed_dir), "--resume"]) == 0
    a = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(killed_dir / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-5)


def test_run_records_its_data_preparation_and_evaluate_reuses_it(tmp_path, capsys):
    """fit trains on the train split by default and writes data.json (split, seed, the training
    split's standardization statistics); evaluate without flags reuses them on the test split."""
    out = tmp_path / "gmm"
    assert main(FIT + ["--steps", "5", "--out", str(out)]) == 0
    prep = json.loads((out / "data.json").read_text())
    assert prep["split"] == "train" and prep["split_seed"] == 0 and prep["standardize"]
    assert len(prep["mean"]) == 4 and len(prep["std"]) == 4
    explicit, reused = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["evaluate", str(out), "--data", "iris", "--standardize", "--split", "test",
                 "--out", str(explicit)]) == 0
    assert main(["evaluate", str(out), "--data", "iris", "--out", str(reused)]) == 0
    a, b = json.loads(explicit.read_text()), json.loads(reused.read_text())
    assert b["num_examples"] == 30 and a["mean"] == pytest.approx(b["mean"])
    # samples come back in the data's units (iris features are positive, around 1..8)
    assert main(["sample", str(out), "-n", "200", "--out", str(tmp_path / "s.pt")]) == 0
    assert torch.load(tmp_path / "s.pt", weights_only=True).mean() > 1.0


def test_compare_names_results_by_run_folder(tmp_path, capsys):
    from probgen.core.result import LogLikelihood

    for run in ("run_a", "run_b"):
        (tmp_path / run).mkdir()
        LogLikelihood(torch.tensor([-1.0, -2.0]), kind="exact", estimator="exact", num_dims=1,
                      data_space="continuous").to_json(tmp_path / run / "test.json")
    assert main(["compare", str(tmp_path / "run_a" / "test.json"),
                 str(tmp_path / "run_b" / "test.json")]) == 0
    table = capsys.readouterr().out
    assert "run_a" in table and "run_b" in table


def test_fit_ema_decay_flag_averages_and_closed_form_methods_refuse_it(tmp_path, capsys):
    out = tmp_path / "avg"
    assert main(FIT + ["--method", "svi", "--steps", "30", "--lr", "0.05", "--ema-decay", "0.9",
                       "--out", str(out)]) == 0
    average = load_checkpoint(out / "checkpoint.pt")["average"]
    assert average["decay"] == 0.9 and average["updates"] == 30
    assert main(FIT + ["--method", "em", "--steps", "3", "--ema-decay", "0.9",
                       "--out", str(tmp_path / "em")]) == 2
    assert "ema_decay" in capsys.readouterr().err
