"""The command line: fit -> evaluate -> compare -> sample, one-line errors, kill and resume."""

import json
import multiprocessing
import os
import signal

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import probgen
from probgen.cli import loss_label, main
from probgen.core.checkpoint import load_checkpoint
from probgen.data.bundled import train_test_split
from probgen.models.registry import get_model_class
from probgen.plots import plot_training_curve

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


# --- data units, validation, formats (issue 29 items 10 and 11) ---------------------------------
def _csv_with_header(tmp_path, n: int = 80):
    """Two clusters on very different scales (std ~1 and ~10), with a header row."""
    rng = np.random.default_rng(0)
    data = np.concatenate([rng.normal([0.0, 10.0], [1.0, 5.0], (n // 2, 2)),
                           rng.normal([5.0, 40.0], [2.0, 8.0], (n // 2, 2))])
    path = tmp_path / "measurements.csv"
    np.savetxt(path, data, delimiter=",", header="length,weight", comments="")
    return path, data


def _raw_test_rows(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CLI's default split (seed 0, 20% test), and the training rows' mean and std."""
    train_index, test_index = train_test_split(len(data), 0.2, seed=0)
    train = data[train_index.numpy()]
    return data[test_index.numpy()], train.mean(0), train.std(0, ddof=1)


@pytest.mark.parametrize("model", ["gmm", "flow"])
def test_standardize_reports_densities_of_the_users_data(model, tmp_path, capsys):
    """log p_x(x) = log p_y((x − μ)/σ) − Σ log σ: a GMM against scipy's mixture density on the
    raw data with its fitted parameters mapped back; a flow against its own standardized
    density minus Σ log σ computed with NumPy. Then compare pairs the two runs."""
    path, data = _csv_with_header(tmp_path)
    options = (["--set", "num_components=2"] if model == "gmm" else ["--steps", "50"])
    out = tmp_path / model
    assert main(["fit", model, "--data", str(path), "--standardize", "--quiet", "--out",
                 str(out)] + options) == 0
    assert main(["evaluate", str(out), "--data", str(path), "--out",
                 str(tmp_path / "std.json")]) == 0
    assert "log-Jacobian" in capsys.readouterr().out
    reported = json.loads((tmp_path / "std.json").read_text())
    test, mean, std = _raw_test_rows(data)
    fitted = probgen.load(out / "model.pt")
    if model == "gmm":
        expected = logsumexp(np.stack([
            np.log(w) + multivariate_normal(mean + std * m, np.diag(std) @ c @ np.diag(std))
            .logpdf(test) for w, m, c in zip(fitted.weights.detach().numpy(),
                                              fitted.locs.detach().numpy(),
                                              fitted.covariance_matrix.detach().numpy())]), 0)
    else:
        standardized = torch.as_tensor((test - mean) / std, dtype=fitted.dtype)
        with torch.no_grad():
            expected = fitted.log_prob(standardized).double().numpy() - np.log(std).sum()
    np.testing.assert_allclose(reported["per_example"], expected, rtol=1e-6, atol=1e-6)
    assert reported["settings"]["transform"] == "standardize"
    assert reported["settings"]["log_jacobian"] == pytest.approx(-np.log(std).sum(), abs=1e-5)
    # the same file without --standardize: the same data, so compare pairs them
    raw = tmp_path / f"{model}-raw"
    assert main(["fit", model, "--data", str(path), "--quiet", "--out", str(raw)] + options) == 0
    assert main(["evaluate", str(raw), "--data", str(path), "--out",
                 str(tmp_path / "raw.json")]) == 0
    assert main(["compare", str(tmp_path / "std.json"), str(tmp_path / "raw.json"),
                 "--names", "standardized", "raw"]) == 0
    assert "Δ vs best" in capsys.readouterr().out


def test_validation_and_patience_stop_early_and_restore_the_best(tmp_path, capsys):
    """--validation holds out training rows (seeded); --patience stops on their score and puts
    back the best parameters: the saved flow scores the recorded best on those rows."""
    path, data = _csv_with_header(tmp_path, n=100)
    out = tmp_path / "flow"
    assert main(["fit", "flow", "--data", str(path), "--standardize", "--steps", "3000",
                 "--lr", "0.02", "--validation", "0.25", "--patience", "2", "--validate-every",
                 "10", "--seed", "3", "--quiet", "--out", str(out)]) == 0
    record = json.loads((out / "fit.json").read_text())
    settings = record["settings"]
    assert (settings["validation"], settings["patience"], settings["validate_every"]) == (0.25, 2, 10)
    assert record["stopped_early"] and record["steps"] < 3000
    assert record["data_prep"]["num_validation"] == 20 and settings["size"] == 60
    best = min(value for _, value in record["validation"])
    assert dict(map(tuple, record["validation"]))[record["best_step"]] == best
    train_index, _ = train_test_split(len(data), 0.2, seed=0)
    train = data[train_index.numpy()]
    mean, std = train.mean(0), train.std(0, ddof=1)
    _, validation_index = train_test_split(len(train), 0.25, seed=3)
    rows = torch.as_tensor((train[validation_index.numpy()] - mean) / std)
    fitted = probgen.load(out / "model.pt")
    with torch.no_grad():
        score = -(fitted.log_prob(rows.to(fitted.dtype)).double().mean().item()
                  - np.log(std).sum())
    assert score == pytest.approx(best, rel=1e-5)
    assert "stopped early" in capsys.readouterr().out


@pytest.mark.parametrize("args,match", [
    (["--patience", "3"], "--patience 3 needs a validation split"),
    (["--validation", "1.5"], "--validation must be a fraction"),
    (["--validate-every", "5"], "--validate-every needs a validation split"),
])
def test_validation_flags_are_checked(args, match, tmp_path, capsys):
    assert main(FIT + ["--out", str(tmp_path / "run")] + args) == 2
    assert match in capsys.readouterr().err


def test_csv_header_is_kept_and_samples_are_written_in_the_format_asked(tmp_path, capsys):
    path, data = _csv_with_header(tmp_path)
    out = tmp_path / "gmm"
    assert main(["fit", "gmm", "--data", str(path), "--set", "num_components=2", "--quiet",
                 "--out", str(out)]) == 0
    assert json.loads((out / "data.json").read_text())["columns"] == ["length", "weight"]
    assert main(["sample", str(out), "-n", "7", "--out", str(tmp_path / "s.csv")]) == 0
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "length,weight" and len(lines) == 8
    assert np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1).shape == (7, 2)
    assert main(["sample", str(out), "-n", "7", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (7, 2)
    assert main(["sample", str(out), "-n", "7", "--out", str(tmp_path / "s.pt")]) == 0
    assert torch.load(tmp_path / "s.pt", weights_only=True).shape == (7, 2)
    capsys.readouterr()
    assert main(["sample", str(out), "--out", str(tmp_path / "s.txt")]) == 2
    err = capsys.readouterr().err
    assert "unknown suffix '.txt'" in err and ".csv" in err and not (tmp_path / "s.txt").exists()


def test_training_curve_says_what_the_loss_is(tmp_path):
    x = torch.randn(20, 3, dtype=torch.float64)
    flow = get_model_class("flow")(3)
    vae = get_model_class("vae")(data_shape=[3], latent_dim=2)
    assert loss_label(flow, "svi", None, x[:2].float()) == "negative log-likelihood"
    assert loss_label(None, "em", None, x[:2]) == "negative log-likelihood"
    assert loss_label(vae, "svi", None, x[:2].float()) == "−ELBO"
    assert loss_label(vae, "svi", "iwae", x[:2].float()) == "−IWAE bound"
    figure = plot_training_curve([3.0, 2.0, 1.0], ylabel="negative log-likelihood (nats)",
                                 validation=[(2, 2.5), (3, 1.5)])
    assert figure.axes[0].get_ylabel() == "negative log-likelihood (nats)"
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend == ["training loss", "validation"]
