"""RBMs and neural EBMs: energies against brute force, Gibbs against the exact distribution."""

import math

import pyro
import pytest
import torch
from pyro.infer import MCMC, NUTS
from pyro.ops.stats import effective_sample_size

from probgen.models.ebm import RBM, GaussianRBM, NeuralEBM
from probgen.models.ebm.ais import binary_states, exact_log_partition
from probgen.models.registry import get_model_class


def random_rbm(num_visible, num_hidden, scale=0.7, seed=0, cls=RBM):
    torch.manual_seed(seed)
    rbm = cls(num_visible, num_hidden, init_scale=scale, seed=seed).double()
    with torch.no_grad():
        rbm.visible_bias.normal_(0.0, 0.5)
        rbm.hidden_bias.normal_(0.0, 0.5)
    return rbm


@pytest.mark.parametrize("shape", [(6, 4), (4, 7), (5, 25)])
def test_exact_log_partition_equals_enumeration_over_both_layers(shape):
    num_visible, num_hidden = shape
    rbm = random_rbm(num_visible, num_hidden)
    if num_hidden > 20:  # the brute force needs both layers; check -F(v) against the joint first
        v = binary_states(num_visible, dtype=torch.float64)
        h = binary_states(num_hidden, 0, 2**12, dtype=torch.float64)
        assert rbm.energy(v[:, None], h[None]).shape == (2**num_visible, 2**12)
        rbm = random_rbm(num_visible, 8, seed=1)
        num_hidden = 8
    v = binary_states(num_visible, dtype=torch.float64)
    h = binary_states(num_hidden, dtype=torch.float64)
    joint = -rbm.energy(v[:, None, :], h[None, :, :])  # (2^V, 2^H)
    brute_force = torch.logsumexp(joint.flatten(), 0)
    assert torch.allclose(exact_log_partition(rbm), brute_force, atol=1e-10)
    # free energy = -log sum_h exp(-E(v, h))
    assert torch.allclose(-rbm.free_energy(v), torch.logsumexp(joint, 1), atol=1e-10)


def test_exact_log_partition_enumerates_the_narrow_visible_layer():
    rbm = random_rbm(5, 25, scale=0.3)
    v = binary_states(5, dtype=torch.float64)
    by_visible = torch.logsumexp(-rbm.free_energy(v), 0)
    assert torch.allclose(exact_log_partition(rbm), by_visible, atol=1e-10)
    assert torch.allclose(rbm.log_prob(v).exp().sum(), torch.tensor(1.0, dtype=torch.float64))


def test_gaussian_rbm_log_partition_matches_quadrature():
    rbm = random_rbm(2, 5, scale=0.6, cls=GaussianRBM)
    grid = torch.linspace(-10, 10, 401, dtype=torch.float64)
    points = torch.cartesian_prod(grid, grid)
    cell = (grid[1] - grid[0]) ** 2
    quadrature = torch.logsumexp(-rbm.free_energy(points), 0) + torch.log(cell)
    assert torch.allclose(exact_log_partition(rbm), quadrature, atol=1e-6)


def test_gibbs_chains_reach_the_exact_distribution_of_a_tiny_rbm():
    rbm = random_rbm(4, 3, scale=1.5, seed=2)
    torch.manual_seed(0)
    # every chain starts in the all-zeros state, far from the model's distribution
    chains = rbm.gibbs(torch.zeros(10000, 4, dtype=torch.float64), 50)
    codes = (chains * 2 ** torch.arange(4, dtype=torch.float64)).sum(-1).long()
    empirical = torch.bincount(codes, minlength=16).double() / codes.numel()
    exact = rbm.log_prob(binary_states(4, dtype=torch.float64)).exp().detach()
    assert 1 - exact[0] > 0.5  # the start is in total variation > 0.5 from the target
    total_variation = 0.5 * (empirical - exact).abs().sum()
    assert total_variation < 0.05


def test_rbm_program_log_prob_equals_exact_log_prob():
    rbm = random_rbm(6, 4)
    x = binary_states(6, dtype=torch.float64)[:10]
    trace = pyro.poutine.trace(rbm.model).get_trace(x)
    assert torch.allclose(trace.log_prob_sum(), rbm.log_prob(x).sum())


def test_gaussian_rbm_energy_program_sampled_by_nuts_matches_the_mixture_moments():
    rbm = random_rbm(1, 3, scale=1.0, seed=3, cls=GaussianRBM)
    # p(v) = sum_h p(h) N(v; b + sigma W h, sigma^2), p(h) ∝ exp(log_marginal_hidden(h))
    h = binary_states(3, dtype=torch.float64)
    weights = torch.softmax(rbm.log_marginal_hidden(h), 0).detach()
    means = (rbm.visible_bias + h @ rbm.weight.T).squeeze(-1).detach()
    mean = float((weights * means).sum())
    sd = math.sqrt(float((weights * (means**2 + 1)).sum()) - mean**2)
    pyro.set_rng_seed(0)
    mcmc = MCMC(NUTS(rbm.energy_program()), num_samples=600, warmup_steps=200,
                disable_progbar=True)
    mcmc.run()
    draws = mcmc.get_samples()["x"].squeeze(-1)
    ess = float(effective_sample_size(draws[None, :, None]))
    assert ess > 50
    assert abs(float(draws.mean()) - mean) < 4 * sd / math.sqrt(ess)  # 4 Monte Carlo stderrs
    assert abs(float(draws.std()) - sd) < 0.15 * sd


def test_rbm_validates_data_and_layers():
    rbm = RBM(4, 3)
    with pytest.raises(ValueError, match="binary"):
        rbm.log_prob(torch.full((2, 4), 0.3))
    with pytest.raises(ValueError, match=r"\(4,\)"):
        rbm.log_prob(torch.ones(2, 5))
    with pytest.raises(ValueError, match="num_hidden"):
        RBM(4, 0)
    with pytest.raises(TypeError, match="Gibbs"):
        rbm.energy_program()
    with pytest.raises(ValueError, match="sigma"):
        GaussianRBM(2, 2, sigma=0.0)


@pytest.mark.parametrize("name,cls,kwargs", [
    ("rbm", RBM, {"num_visible": 5, "num_hidden": 3}),
    ("gaussian_rbm", GaussianRBM, {"num_visible": 5, "num_hidden": 3, "sigma": 0.5}),
    ("ebm", NeuralEBM, {"num_features": 5, "hidden_sizes": [8]}),
])
def test_models_are_registered_and_rebuild_from_config(name, cls, kwargs):
    assert get_model_class(name) is cls
    model = cls(**kwargs)
    rebuilt = cls(**model.config)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(3, 5) if name != "rbm" else torch.bernoulli(torch.full((3, 5), 0.5))
    energy = model.energy if name == "ebm" else model.free_energy
    rebuilt_energy = rebuilt.energy if name == "ebm" else rebuilt.free_energy
    assert torch.allclose(energy(x), rebuilt_energy(x))


def test_neural_ebm_energy_program_and_sampling():
    ebm = NeuralEBM(2, hidden_sizes=(8,)).double()
    ebm.set_base_rate(torch.randn(50, 2, dtype=torch.float64))
    samples = ebm.sample(16, num_steps=5)
    assert samples.shape == (16, 2) and torch.isfinite(samples).all()
    trace = pyro.poutine.trace(ebm.energy_program()).get_trace()
    x = trace.nodes["x"]["value"]
    assert torch.allclose(trace.log_prob_sum(), -ebm.energy(x).sum())
    # the program runs (probgen.fit traces it) but has no density to score
    program = pyro.poutine.trace(ebm.model).get_trace(torch.zeros(2, 2, dtype=torch.float64))
    with pytest.raises(NotImplementedError, match="ais"):
        program.log_prob_sum()


def test_demo_entry_scores_an_rbm_by_ais(tmp_path):
    from probgen.demo.ebm import demo_entries
    from probgen.demo.registry import DemoData

    generator = torch.Generator().manual_seed(0)
    data = torch.bernoulli(torch.full((120, 64), 0.3), generator=generator)
    (entry,) = demo_entries(smoke=True)
    assert entry.dataset == "digits"
    ll = entry.run(DemoData("digits", (data[:100],), (data[100:],), "random"), str(tmp_path))
    assert ll.kind == "estimate" and ll.estimator == "ais" and ll.num_examples == 20
    # no model can beat log 1 per pixel; a fair coin per pixel gives 64 log 2
    assert -64 * math.log(2) - 15 < ll.mean < 0
