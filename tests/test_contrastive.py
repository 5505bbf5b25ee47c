"""Contrastive training through probgen.fit: CD/PCD raise the exact likelihood and follow the CD
update exactly; Langevin/MALA/HMC sample the right law."""

import math

import pytest
import torch

import probgen
from probgen.infer import FitState
from probgen.models.ebm import RBM, GaussianRBM, NeuralEBM, RBMBase
from probgen.models.ebm.ais import evaluate_ais, evaluate_rbm_exact
from probgen.models.ebm.samplers import ReplayBuffer, hmc_step, langevin_sample, mala_sample


def prototype_data(num_examples, num_visible, seed=0):
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.bernoulli(torch.full((3, num_visible), 0.5), generator=generator)
    which = torch.randint(3, (num_examples,), generator=generator)
    flips = torch.bernoulli(torch.full((num_examples, num_visible), 0.05), generator=generator)
    return ((prototypes[which] + flips) % 2).double()


def fit(model, data, **options):
    return probgen.fit(model, data, progress=False, **options)


@pytest.mark.parametrize("method,options", [
    ("cd", dict(optim=0.2)),
    ("pcd", dict(optim=0.1, k=10, num_steps=200)),  # PCD at 0.2 oscillates (as it did before fit)
])
def test_contrastive_divergence_raises_the_exact_log_likelihood(method, options):
    data = prototype_data(240, 12)
    train, test = data[:200], data[200:]
    rbm = RBM(12, 6, seed=0).double()
    before = evaluate_rbm_exact(rbm, (test,)).mean
    options = {"num_steps": 100, **options}
    result = fit(rbm, train, method=method, batch_size=20, seed=0, **options)
    after = evaluate_rbm_exact(rbm, (test,))
    assert result.method == method and result.num_steps == len(result.losses) == options["num_steps"]
    # 12 noisy bits from 3 prototypes (entropy about log 3 + 12 H(0.05) = 3.5 nats): the
    # start (about 12 log 2 = 8.3 nats) improves by > 2.5 nats
    assert after.mean > before + 2.5
    assert after.mean > -12 * math.log(2) + 2.5


def reference_cd(rbm, x, *, k, persistent, num_steps, batch_size, lr, momentum, weight_decay,
                 seed):
    """The CD-k / PCD update, written out: the same math as the former train_cd loop, with the
    random streams fit uses (torch seeded with ``seed``; epoch e shuffled by a generator seeded
    with seed + e; PCD chains drawn from the first batch's base rate, before the reseed)."""
    torch.manual_seed(seed)
    rbm.set_base_rate(x[:batch_size])
    chains = rbm.init_chains(batch_size) if persistent else None
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(rbm.parameters(), lr=lr, momentum=momentum,
                                weight_decay=weight_decay)
    step, epoch = 0, 0
    while step < num_steps:
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + epoch))
        for start in range(0, len(x), batch_size):
            if step == num_steps:
                break
            positive = x[order[start:start + batch_size]]
            with torch.no_grad():
                negative = rbm.gibbs(chains if persistent else positive, k)
                if persistent:
                    chains = negative
            loss = rbm.free_energy(positive).mean() - rbm.free_energy(negative).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
        epoch += 1


@pytest.mark.parametrize("method", ["cd", "pcd"])
def test_fit_follows_the_cd_update_exactly(method):
    """probgen.fit(method="cd"/"pcd") is the CD update and nothing else: the same seed gives
    the same parameters as the update written out by hand (three epochs, reshuffled)."""
    x = prototype_data(60, 8)
    settings = dict(k=2, num_steps=9, lr=0.1, momentum=0.5, weight_decay=2e-4, seed=3)
    ours, theirs = RBM(8, 5, seed=1).double(), RBM(8, 5, seed=1).double()
    fit(ours, x, method=method, batch_size=20, optim=settings["lr"], k=settings["k"],
        num_steps=settings["num_steps"], momentum=settings["momentum"],
        weight_decay=settings["weight_decay"], seed=settings["seed"])
    reference_cd(theirs, x, persistent=method == "pcd", batch_size=20, **settings)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(ours.weight, RBM(8, 5, seed=1).double().weight)  # it trained


def test_fit_without_a_method_is_cd_and_callbacks_see_fit_state():
    x = prototype_data(40, 6)
    states = []
    rbm = RBM(6, 3).double()
    result = fit(rbm, x, batch_size=10, num_steps=6, seed=0, callbacks=[states.append])
    assert RBMBase.default_method == "cd" and result.method == "cd"
    assert [s.step for s in states] == list(range(6)) and all(isinstance(s, FitState) for s in states)
    assert [s.loss for s in states] == result.losses
    ebm = NeuralEBM(2, hidden_sizes=(4,), seed=0).double()
    assert fit(ebm, torch.randn(16, 2, dtype=torch.float64), batch_size=8, num_steps=1,
               sampler_steps=1).method == "contrastive"


def test_cd_sets_the_ais_base_rate_from_the_data():
    data = prototype_data(100, 8)
    rbm = RBM(8, 4).double()
    marginals = (data.sum(0) + 0.5) / (data.shape[0] + 1.0)
    fit(rbm, data, batch_size=10, num_steps=1)  # data in memory: all of it from the start
    assert torch.allclose(torch.sigmoid(rbm.base_bias), marginals)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data), batch_size=10)
    rbm = RBM(8, 4).double()
    fit(rbm, loader, num_steps=1)  # a loader: the first mini-batch until a pass is complete
    first = (data[:10].sum(0) + 0.5) / 11.0
    assert torch.allclose(torch.sigmoid(rbm.base_bias), first)
    fit(rbm, loader, num_steps=10, warm_start=True)
    assert torch.allclose(torch.sigmoid(rbm.base_bias), marginals)


def test_pcd_checkpoint_resume_equals_an_uninterrupted_run(tmp_path):
    x = prototype_data(60, 8)
    options = dict(method="pcd", batch_size=20, optim=0.1, k=1, num_chains=7, momentum=0.9)
    reference = RBM(8, 5, seed=1).double()
    expected = fit(reference, x, num_steps=12, seed=5, **options)
    interrupted = RBM(8, 5, seed=1).double()
    fit(interrupted, x, num_steps=5, seed=5, checkpoint=tmp_path / "pcd.pt", **options)
    resumed = RBM(8, 5, seed=1).double()
    result = fit(resumed, x, num_steps=12, seed=5, checkpoint=tmp_path / "pcd.pt", resume=True,
                 **options)  # momentum buffers, chains and the base rate come back
    assert result.losses == expected.losses
    for a, b in zip(resumed.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_cd_trains_a_gaussian_rbm():
    torch.manual_seed(0)
    data = torch.cat([torch.randn(150, 2) * 0.3 + 1.5, torch.randn(150, 2) * 0.3 - 1.5]).double()
    rbm = GaussianRBM(2, 4, seed=0).double()
    before = evaluate_rbm_exact(rbm, (data,)).mean
    fit(rbm, data, method="cd", k=1, num_steps=100, batch_size=30, optim=0.05, seed=0)
    assert evaluate_rbm_exact(rbm, (data,)).mean > before + 0.5


def test_cd_validates_with_the_exact_likelihood_when_it_can():
    data = prototype_data(120, 8)
    rbm = RBM(8, 4, seed=0).double()
    result = fit(rbm, data[:100], batch_size=20, num_steps=10, seed=0, validation=data[100:],
                 validate_every=5, restore_best=False)
    assert [step for step, _ in result.validation] == [5, 10]
    assert result.validation[-1][1] == pytest.approx(
        -evaluate_rbm_exact(rbm, (data[100:],)).mean, rel=1e-12)
    wide = RBM(30, 25, seed=0).double()
    with pytest.raises(ValueError, match="validation_estimator='ais'"):
        fit(wide, prototype_data(20, 30), batch_size=10, num_steps=1,
            validation=prototype_data(5, 30, seed=1))


def test_wide_rbm_trains_by_cd_and_its_program_refuses_to_score():
    wide = RBM(30, 25, seed=0).double()
    x = prototype_data(40, 30)
    result = fit(wide, x, method="pcd", batch_size=20, num_steps=2)  # fit traces the program
    assert result.num_steps == 2
    with pytest.raises(ValueError, match="log Z cannot be enumerated"):
        probgen.fit(wide, x, method="svi", num_steps=1, progress=False)


def test_cd_rejects_bad_arguments():
    rbm = RBM(4, 2)
    data = torch.ones(10, 4)
    with pytest.raises(ValueError, match="k"):
        fit(rbm, data, method="cd", k=0, num_steps=1)
    with pytest.raises(ValueError, match="binary"):
        fit(rbm, torch.full((10, 4), 0.5), method="cd", num_steps=1)
    with pytest.raises(TypeError, match="unexpected options \\['num_chains'\\]"):
        fit(rbm, data, method="cd", num_chains=5, num_steps=1)
    with pytest.raises(TypeError, match="learning rate"):
        fit(rbm, data, method="cd", optim={"lr": 0.1}, num_steps=1)
    with pytest.raises(ValueError, match="sampler"):
        fit(NeuralEBM(4, hidden_sizes=(4,)), data, sampler="gibbs", num_steps=1)


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
def test_contrastive_fit_learns_a_gaussian(sampler):
    torch.manual_seed(0)
    true = torch.distributions.MultivariateNormal(
        torch.tensor([1.0, -1.0]), torch.tensor([[1.0, 0.8], [0.8, 1.0]]))
    train, test = true.sample((512,)).double(), true.sample((256,)).double()
    ebm = NeuralEBM(2, hidden_sizes=(16, 16), seed=0).double()
    ebm.set_base_rate(train)
    before = evaluate_ais(ebm, (test,), num_chains=64, num_betas=60, seed=0, step_size=0.3)
    result = fit(ebm, train, method="contrastive", sampler=sampler, num_steps=100, batch_size=64,
                 optim=5e-3, sampler_steps=10 if sampler == "langevin" else 3, step_size=0.05,
                 energy_reg=0.01, seed=0)
    after = evaluate_ais(ebm, (test,), num_chains=64, num_betas=60, seed=0, step_size=0.3)
    truth = float(true.log_prob(test.float()).mean())
    assert result.num_steps == 100
    assert after.mean > before.mean + 0.3
    # nothing beats the true density on fresh data (beyond the estimate's noise)
    assert after.mean < truth + 3 * after.stderr + 0.05


@pytest.mark.parametrize("sampler", ["langevin", "hmc"])
def test_contrastive_fit_runs_and_sets_the_base_from_the_data(sampler):
    data = torch.randn(64, 2, dtype=torch.float64)
    ebm = NeuralEBM(2, hidden_sizes=(8,), seed=0).double()
    before = [p.detach().clone() for p in ebm.parameters()]
    result = fit(ebm, data, method="contrastive", sampler=sampler, num_steps=3, batch_size=32,
                 sampler_steps=2, num_leapfrog=3, seed=0)
    assert len(result.losses) == 3 and all(math.isfinite(v) for v in result.losses)
    assert all(not torch.equal(a, b) for a, b in zip(before, ebm.parameters()))
    # after the first pass (two batches of 32): the base is the whole data's mean and std
    assert torch.allclose(ebm.base_loc, data.mean(0))
    assert torch.allclose(ebm.base_scale, data.std(0))
