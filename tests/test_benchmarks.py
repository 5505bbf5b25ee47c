"""Every benchmark script imports and parses its options the way `make bench` runs it; the MNIST
benchmarks' training path (probgen.fit with a per-batch transform and a recipe of fit options:
cosine schedule, KL warm-up, validation) works on a toy problem."""

import math
import runpy
import sys
from pathlib import Path

import pytest
import torch

from probgen.models.vae import VAE

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` as well as `python -m pytest`
    sys.path.insert(0, str(ROOT))
from benchmarks._mnist import Splits, describe_recipe, recipe, train  # noqa: E402

SCRIPTS = sorted(p.stem for p in (ROOT / "benchmarks").glob("[a-z]*.py"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_script_starts(name, monkeypatch, capsys):
    """Each script imports and parses its options (in-process: no interpreter start-up)."""
    monkeypatch.setattr(sys, "argv", [f"benchmarks/{name}.py", "--help"])
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as done:
        runpy.run_module(f"benchmarks.{name}", run_name="__main__", alter_sys=True)
    assert done.value.code in (0, None)
    assert "usage" in capsys.readouterr().out.lower()


def test_no_private_training_loop():
    """Only the overhead baselines hand-write a backward pass; the rest train through fit."""
    for path in (ROOT / "benchmarks").glob("*.py"):
        if path.stem not in ("svi_overhead", "flows", "throughput"):
            assert "backward()" not in path.read_text(), path.name


def test_cosine_schedule_and_intensities_through_fit(tmp_path):
    generator = torch.Generator().manual_seed(1)
    splits = Splits(torch.rand(200, 784, generator=generator),
                    torch.bernoulli(torch.rand(50, 784, generator=generator)), None,
                    torch.bernoulli, "dynamic", "toy")
    vae = VAE((784,), latent_dim=4, hidden_features=(16,), activation="tanh")
    options = recipe(lr=1e-2, final_lr=1e-4, kl_warmup_epochs=2, loss=None)
    assert options["lr_schedule"] == "cosine" and options["kl_warmup_epochs"] == 2
    training = train(vae, splits, epochs=4, batch_size=50, seed=0,
                     checkpoint=tmp_path / "run.fit.pt", **options)
    assert training.epochs == 4 and len(training.train_loss_per_epoch) == 4
    assert len(training.validation_per_epoch) == 4 and 1 <= training.best_epoch <= 4
    assert all(math.isfinite(v) for v in training.train_loss_per_epoch)
    assert (tmp_path / "run.fit.pt").exists()
    assert "validation" in training.model_selection
    assert "cosine lr to 0.0001 per step" in training.settings["optim"]
    assert describe_recipe(options) == ("elbo, KL warm-up 2 epochs, cosine lr 0.01 -> 0.0001")
    assert describe_recipe(recipe(lr=1e-3, loss="iwae", num_particles=5)).startswith(
        "iwae (k=5")
    assert "validate_batch" not in vae.__dict__  # the intensity check is lifted only while fitting


def test_paired_differences_from_the_per_example_files(tmp_path):
    """The MNIST table's paired difference is the mean and standard error of the per-image
    NLL differences to the baseline; rows scored on other images are refused."""
    from benchmarks.hierarchical_mnist import pair_with, save_per_example

    generator = torch.Generator().manual_seed(0)
    images = torch.bernoulli(torch.rand(400, 784, generator=generator))
    base = -90.0 + torch.randn(400, generator=generator, dtype=torch.float64)
    better = base + 1.5 + 0.3 * torch.randn(400, generator=generator, dtype=torch.float64)
    save_per_example(base, images, "plain", "iwae", 50, tmp_path)
    save_per_example(better, images, "richer", "iwae", 50, tmp_path)
    rows = [{"model": m, "estimator": "iwae", "k": 50, "machine": "x"} for m in ("plain", "richer")]
    pair_with(rows, "plain", tmp_path)
    assert "paired_difference_nats" not in rows[0]
    difference = base - better  # NLL(richer) - NLL(plain)
    assert rows[1]["paired_with"] == "plain"
    assert rows[1]["paired_difference_nats"] == pytest.approx(float(difference.mean()))
    assert rows[1]["paired_difference_nats"] == pytest.approx(-1.5, abs=0.05)
    assert rows[1]["paired_difference_stderr"] == pytest.approx(
        float(difference.std()) / 20, rel=1e-9)
    save_per_example(better, 1 - images, "richer", "iwae", 50, tmp_path)
    with pytest.raises(SystemExit, match="other test images"):
        pair_with(rows, "plain", tmp_path)
    with pytest.raises(SystemExit, match="no per-example scores of that model"):
        pair_with(rows, "plane", tmp_path)  # a misspelt baseline label is named, not skipped
