"""Every benchmark script imports and parses its options the way `make bench` runs it; the MNIST
benchmarks' training path (probgen.fit with a per-batch transform, a cosine schedule, validation
and a per-example IWAE loss) works on a toy problem."""

import math
import runpy
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO

from probgen.models.vae import VAE

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` as well as `python -m pytest`
    sys.path.insert(0, str(ROOT))
from benchmarks._mnist import MiniBatchIWAE, Splits, optimizer, train  # noqa: E402

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
        if path.stem not in ("svi_overhead", "flows"):
            assert "backward()" not in path.read_text(), path.name


def _toy():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.5 * x, 0.9))

    return model, guide


def test_minibatch_iwae_validation_loss_is_the_plain_bound_in_chunks():
    model, guide = _toy()
    x = torch.randn(10)
    pyro.set_rng_seed(0)
    expected = RenyiELBO(alpha=0, num_particles=50, vectorize_particles=True,
                         max_plate_nesting=1).loss(model, guide, x)
    pyro.set_rng_seed(0)
    chunked = MiniBatchIWAE(50, 1000, chunk=3).loss(model, guide, x)
    assert chunked == pytest.approx(expected, rel=0.05)


def test_cosine_schedule_and_intensities_through_fit(tmp_path):
    generator = torch.Generator().manual_seed(1)
    splits = Splits(torch.rand(200, 784, generator=generator),
                    torch.bernoulli(torch.rand(50, 784, generator=generator)), None,
                    torch.bernoulli, "dynamic", "toy")
    vae = VAE((784,), latent_dim=4, hidden_features=(16,), activation="tanh")
    schedule = optimizer(1e-2, 1e-4, 4)
    training = train(vae, vae.default_loss(), splits, epochs=4, batch_size=50, lr=1e-2,
                     final_lr=1e-4, seed=0, checkpoint=tmp_path / "run.fit.pt")
    assert training.epochs == 4 and len(training.train_loss_per_epoch) == 4
    assert len(training.validation_per_epoch) == 4 and 1 <= training.best_epoch <= 4
    assert all(math.isfinite(v) for v in training.train_loss_per_epoch)
    assert (tmp_path / "run.fit.pt").exists()
    assert "validation" in training.model_selection
    assert isinstance(schedule, pyro.optim.PyroLRScheduler)
    assert isinstance(optimizer(1e-3, None, 4), dict)  # no schedule: fit's fused Adam
    assert "validate_batch" not in vae.__dict__  # the intensity check is lifted only while fitting
