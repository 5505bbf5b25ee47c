"""fit_in_processes: two forked processes, one thread each, take the single-process run's steps.

With the reparameterization noise fixed (ε = 0.5 everywhere), a step's gradient is a
deterministic function of the global batch, so the 2-process run (each rank half of every
global batch, the data plate scaled by N·W/B, gradients averaged) must reproduce the 1-process
losses and parameters to float64 rounding.
"""

from __future__ import annotations

import os

import pytest
import torch

import probgen
from probgen.infer.distributed import fit_in_processes
from probgen.models import vae_loss
from probgen.models.vae import VAE

FIXED_NOISE = 0.5


def _fixed_rsample(self, sample_shape=torch.Size()):
    return (self.loc + FIXED_NOISE * self.scale).expand(self._extended_shape(sample_shape))


def _fixed_reparameterized(loc, log_scale, num_particles):
    shape = loc.shape if num_particles is None else (num_particles, *loc.shape)
    noise = torch.full(shape, FIXED_NOISE, dtype=loc.dtype, device=loc.device)
    return noise, loc + log_scale.exp() * noise


@pytest.fixture
def fixed_noise(monkeypatch):
    """ε = 0.5 on both the generic (Pyro's Normal) and the plain-torch path; forked workers
    inherit the patches."""
    monkeypatch.setattr(torch.distributions.Normal, "rsample", _fixed_rsample)
    monkeypatch.setattr(vae_loss, "_reparameterized", _fixed_reparameterized)


def _data() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.bernoulli(torch.rand(400, 20, generator=generator)).double()


def _vae() -> VAE:
    torch.manual_seed(0)
    return VAE((20,), latent_dim=3, hidden_features=(8,)).double()


def _run(nproc: int | None, **options) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model = _vae()
    settings = dict(batch_size=45, epochs=2, optim=1e-2, seed=0, progress=False, **options)
    result = (probgen.fit(model, _data(), **settings) if nproc is None
              else fit_in_processes(model, _data(), nproc=nproc, **settings))
    params = {name: value.detach().clone() for name, value in model.state_dict().items()}
    return torch.tensor(result.losses, dtype=torch.float64), params


def test_two_processes_take_the_single_process_steps(fixed_noise):
    """18 steps over global batches of 45 (split 23/22; the last, 40, split 20/20)."""
    single_losses, single_params = _run(None)
    losses, params = _run(2)
    assert len(losses) == len(single_losses) == 18
    assert single_losses[-1] < single_losses[0]  # it trained
    torch.testing.assert_close(losses, single_losses, rtol=1e-9, atol=1e-9)
    assert params.keys() == single_params.keys()
    for name, value in single_params.items():
        torch.testing.assert_close(params[name], value, rtol=1e-7, atol=1e-9)


def test_one_process_is_plain_fit_and_threads_are_restored(fixed_noise):
    single_losses, _ = _run(None)
    losses, _ = _run(1)
    torch.testing.assert_close(losses, single_losses, rtol=0, atol=0)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _run(2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_a_failing_worker_is_reported():
    parent = os.getpid()

    def fail_in_worker(state):
        if os.getpid() != parent and state.step >= 2:
            raise RuntimeError("worker broke")

    with pytest.raises(Exception) as caught:
        fit_in_processes(_vae(), _data(), nproc=2, batch_size=45, num_steps=20, seed=0,
                         progress=False, callbacks=[fail_in_worker], timeout=60)
    assert "worker broke" in str(caught.value) + "".join(getattr(caught.value, "__notes__", []))


@pytest.mark.parametrize("nproc", [0, -1, 1.5, True])
def test_bad_nproc(nproc):
    with pytest.raises(ValueError, match="nproc"):
        fit_in_processes(_vae(), _data(), nproc=nproc, num_steps=1)


def test_distributed_is_not_an_option():
    with pytest.raises(TypeError, match="distributed"):
        fit_in_processes(_vae(), _data(), nproc=2, num_steps=1, distributed=True)
