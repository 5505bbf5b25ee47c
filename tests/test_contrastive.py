"""Contrastive training: CD/PCD raise the exact likelihood; Langevin/MALA/HMC sample the right law."""

import math

import pytest
import torch

from probgen.models.ebm.ais import evaluate_ais, evaluate_rbm_exact
from probgen.models.ebm.contrastive import (
    ReplayBuffer,
    hmc_step,
    langevin_sample,
    mala_sample,
    train_cd,
    train_ebm,
)
from probgen.models.ebm import RBM, GaussianRBM, NeuralEBM


def prototype_data(num_examples, num_visible, seed=0):
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.bernoulli(torch.full((3, num_visible), 0.5), generator=generator)
    which = torch.randint(3, (num_examples,), generator=generator)
    flips = torch.bernoulli(torch.full((num_examples, num_visible), 0.05), generator=generator)
    return ((prototypes[which] + flips) % 2).double()


@pytest.mark.parametrize("persistent", [False, True])
def test_contrastive_divergence_raises_the_exact_log_likelihood(persistent):
    data = prototype_data(240, 12)
    train, test = data[:200], data[200:]
    rbm = RBM(12, 6, seed=0).double()
    before = evaluate_rbm_exact(rbm, (test,)).mean
    result = train_cd(rbm, train, k=1, persistent=persistent, num_steps=100, batch_size=20,
                      lr=0.2, seed=0, progress=False)
    after = evaluate_rbm_exact(rbm, (test,))
    assert result.num_steps == 100 and len(result.losses) == 100
    # 12 noisy bits from 3 prototypes (entropy about log 3 + 12 H(0.05) = 3.5 nats): the
    # start (about 12 log 2 = 8.3 nats) improves by > 2.5 nats
    assert after.mean > before + 2.5
    assert after.mean > -12 * math.log(2) + 2.5
    # reconstructions improve as the model learns
    assert sum(result.reconstruction_errors[-20:]) < sum(result.reconstruction_errors[:20])


def test_cd_sets_the_ais_base_rate_from_the_data():
    data = prototype_data(100, 8)
    rbm = RBM(8, 4).double()
    train_cd(rbm, data, num_steps=1, batch_size=10, progress=False)
    marginals = (data.sum(0) + 0.5) / (data.shape[0] + 1.0)
    assert torch.allclose(torch.sigmoid(rbm.base_bias), marginals)


def test_cd_trains_a_gaussian_rbm():
    torch.manual_seed(0)
    data = torch.cat([torch.randn(150, 2) * 0.3 + 1.5, torch.randn(150, 2) * 0.3 - 1.5]).double()
    rbm = GaussianRBM(2, 4, seed=0).double()
    before = evaluate_rbm_exact(rbm, (data,)).mean
    train_cd(rbm, data, k=1, num_steps=100, batch_size=30, lr=0.05, seed=0, progress=False)
    assert evaluate_rbm_exact(rbm, (data,)).mean > before + 0.5


def test_train_cd_rejects_bad_arguments():
    rbm = RBM(4, 2)
    data = torch.ones(10, 4)
    with pytest.raises(ValueError, match="exactly one"):
        train_cd(rbm, data, progress=False)
    with pytest.raises(ValueError, match="k"):
        train_cd(rbm, data, k=0, num_steps=1, progress=False)
    with pytest.raises(ValueError, match="binary"):
        train_cd(rbm, torch.full((10, 4), 0.5), num_steps=1, progress=False)


def quadratic_energy(loc, scale):
    return lambda x: 0.5 * (((x - loc) / scale) ** 2).sum(-1)


@pytest.mark.parametrize("sampler", ["mala", "hmc"])
def test_exact_samplers_match_a_gaussian(sampler):
    torch.manual_seed(0)
    loc = torch.tensor([1.0, -1.0], dtype=torch.float64)
    scale = torch.tensor([0.5, 2.0], dtype=torch.float64)
    energy = quadratic_energy(loc, scale)
    x = torch.zeros(4000, 2, dtype=torch.float64)
    if sampler == "mala":
        x = mala_sample(energy, x, num_steps=60, step_size=0.6)
    else:
        for _ in range(15):
            x, accepted = hmc_step(energy, x, step_size=0.3, num_leapfrog=8)
        assert accepted.double().mean() > 0.6
    # independent chains: stderr of the mean is scale / sqrt(4000); allow 4 of them
    assert ((x.mean(0) - loc).abs() < 4 * scale / math.sqrt(4000)).all()
    assert ((x.std(0) / scale - 1).abs() < 0.06).all()


def test_langevin_sample_is_close_for_a_small_step():
    torch.manual_seed(0)
    energy = quadratic_energy(torch.tensor(2.0), torch.tensor(1.0))
    x = langevin_sample(energy, torch.zeros(4000, 1), num_steps=300, step_size=0.02)
    assert abs(float(x.mean()) - 2.0) < 0.06
    assert abs(float(x.std()) - 1.0) < 0.06  # unadjusted: variance is 1/(1 - step/2) ≈ 1.005


def test_replay_buffer_keeps_capacity_and_restarts():
    torch.manual_seed(0)
    buffer = ReplayBuffer(10, lambda n: torch.full((n, 2), -1.0), reinit_prob=0.5)
    assert (buffer.draw(4) == -1).all()
    for step in range(4):
        buffer.push(torch.full((4, 2), float(step)))
    assert len(buffer) == 10
    assert set(buffer.samples[:, 0].tolist()) == {1.0, 2.0, 3.0}  # the oldest were overwritten
    draws = buffer.draw(2000)[:, 0]
    assert 0.4 < float((draws == -1).double().mean()) < 0.6
    with pytest.raises(ValueError, match="reinit_prob"):
        ReplayBuffer(5, lambda n: torch.zeros(n, 1), reinit_prob=2.0)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["langevin", "hmc"])
def test_train_ebm_learns_a_gaussian(sampler):
    torch.manual_seed(0)
    true = torch.distributions.MultivariateNormal(
        torch.tensor([1.0, -1.0]), torch.tensor([[1.0, 0.8], [0.8, 1.0]]))
    train, test = true.sample((512,)).double(), true.sample((256,)).double()
    ebm = NeuralEBM(2, hidden_sizes=(16, 16), seed=0).double()
    ebm.set_base_rate(train)
    before = evaluate_ais(ebm, (test,), num_chains=64, num_betas=60, seed=0, step_size=0.3)
    result = train_ebm(ebm, train, sampler=sampler, num_steps=100, batch_size=64, lr=5e-3,
                       sampler_steps=10 if sampler == "langevin" else 3, step_size=0.05,
                       energy_reg=0.01, seed=0, progress=False)
    after = evaluate_ais(ebm, (test,), num_chains=64, num_betas=60, seed=0, step_size=0.3)
    truth = float(true.log_prob(test.float()).mean())
    assert result.num_steps == 100
    assert after.mean > before.mean + 0.3
    # nothing beats the true density on fresh data (beyond the estimate's noise)
    assert after.mean < truth + 3 * after.stderr + 0.05


@pytest.mark.parametrize("sampler", ["langevin", "hmc"])
def test_train_ebm_runs_and_fills_the_replay_buffer(sampler):
    data = torch.randn(64, 2, dtype=torch.float64)
    ebm = NeuralEBM(2, hidden_sizes=(8,), seed=0).double()
    before = [p.detach().clone() for p in ebm.parameters()]
    result = train_ebm(ebm, data, sampler=sampler, num_steps=3, batch_size=32, sampler_steps=2,
                       num_leapfrog=3, seed=0, progress=False)
    assert len(result.losses) == 3 and all(math.isfinite(v) for v in result.losses)
    assert all(not torch.equal(a, b) for a, b in zip(before, ebm.parameters()))
    assert torch.allclose(ebm.base_loc, data.mean(0))
    with pytest.raises(ValueError, match="sampler"):
        train_ebm(ebm, data, sampler="gibbs", num_steps=1)
