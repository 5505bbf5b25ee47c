"""Held-out numbers for programs written the way Pyro's tutorials write them: per-example
autoguides (refit on the test rows), Pyro's subsample plates, NumPy input."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import scipy.stats
import torch

import probgen

D, Q = 5, 2


def ppca(x):
    """Probabilistic PCA: z_n ~ N(0, I), x_n ~ N(W z_n, σ² I); W and σ are parameters."""
    weight = pyro.param("W", 0.1 * torch.ones(D, Q) + 0.05 * torch.arange(D * Q).reshape(D, Q))
    sigma = pyro.param("sigma", torch.tensor(1.0), constraint=dist.constraints.positive)
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([Q]).to_event(1))
        pyro.sample("x", dist.Normal(z @ weight.T, sigma).to_event(1), obs=x)


def test_per_example_autonormal_is_refit_on_held_out_rows():
    generator = torch.Generator().manual_seed(0)
    true_weight = torch.randn(D, Q, generator=generator)

    def draw(n):
        return (torch.randn(n, Q, generator=generator) @ true_weight.T
                + 0.3 * torch.randn(n, D, generator=generator))

    train, test = draw(400), draw(200)
    fitted = probgen.fit(ppca, train, num_steps=600, optim=0.03, seed=0, progress=False)
    weight, sigma = pyro.param("W").detach().clone(), pyro.param("sigma").detach().clone()
    trained_guide_locs = pyro.param("AutoNormal.locs.z").detach().clone()
    held_out = probgen.evaluate(ppca, test, guide=fitted.guide, k=1000, seed=0, refit_steps=600)
    closed_form = dist.MultivariateNormal(torch.zeros(D), weight @ weight.T
                                          + sigma**2 * torch.eye(D)).log_prob(test)
    assert held_out.kind == "lower_bound" and held_out.settings["refit"]["num_steps"] == 600
    gap = float(closed_form.mean()) - held_out.mean
    assert 0 <= gap < 0.02, gap
    # the model's parameters and the trained guide are untouched
    assert torch.equal(pyro.param("W").detach(), weight)
    assert torch.equal(pyro.param("AutoNormal.locs.z").detach(), trained_guide_locs)
    assert trained_guide_locs.shape == (400, Q)


def subsampled(x):
    loc = pyro.param("loc", torch.tensor(0.0))
    scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
    with pyro.plate("data", len(x), subsample_size=16) as index:
        pyro.sample("x", dist.Normal(loc, scale), obs=x[index])


def test_subsample_plate_fits_and_is_scored_on_every_row():
    torch.manual_seed(0)
    x = torch.randn(500) * 2 + 3
    result = probgen.fit(subsampled, x, num_steps=800, optim=0.05, seed=0, progress=False)
    assert abs(float(pyro.param("loc")) - float(x.mean())) < 0.3  # SGD noise at B=16
    assert result.losses[-1] == pytest.approx(-float(dist.Normal(pyro.param("loc"), pyro.param(
        "scale")).log_prob(x).mean()) * 500, rel=0.15)  # N/B scaling from Pyro's own plate
    test = torch.randn(37) * 2 + 3  # not a multiple of the subsample size
    held_out = probgen.evaluate(subsampled, test)
    expected = scipy.stats.norm.logpdf(test.numpy(), float(pyro.param("loc")),
                                       float(pyro.param("scale")))
    assert held_out.kind == "exact" and held_out.num_examples == 37
    np.testing.assert_allclose(held_out.per_example.numpy(), expected, atol=1e-5)


def linear(x, y):
    weight = pyro.param("weight", torch.zeros(3))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(x @ weight, 1.0), obs=y)


def test_numpy_float64_input_fits_and_scores_a_float32_program():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=200)
    assert x.dtype == np.float64
    probgen.fit(linear, (x, y), num_steps=300, optim=0.05, seed=0, progress=False)
    weight = pyro.param("weight").detach()
    assert weight.dtype == torch.float32
    np.testing.assert_allclose(weight.numpy(), [1.0, -2.0, 0.5], atol=0.05)
    held_out = probgen.evaluate(linear, (x[:20].tolist(), y[:20]))
    expected = scipy.stats.norm.logpdf(y[:20], x[:20] @ weight.double().numpy(), 1.0)
    np.testing.assert_allclose(held_out.per_example.numpy(), expected, atol=1e-4)


def test_float64_program_keeps_float64_tensors():
    def model(x):
        loc = pyro.param("loc", torch.tensor(0.0, dtype=torch.float64))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    x = torch.randn(20, dtype=torch.float32)
    probgen.fit(model, x, num_steps=5, progress=False, seed=0)
    assert pyro.param("loc").dtype == torch.float64
    assert probgen.evaluate(model, x.numpy()).kind == "exact"


NUM_STATES = 3
PROBS_X = torch.softmax(torch.randn(NUM_STATES, NUM_STATES, generator=torch.Generator().manual_seed(1)), -1)
LOCS = torch.tensor([-2.0, 0.0, 2.0])


def padded_hmm(mask_latents: bool):
    def program(sequences, lengths):
        with pyro.plate("sequences", len(sequences)):
            x = 0
            for t in pyro.markov(range(sequences.shape[1])):
                present = t < lengths
                with pyro.poutine.mask(mask=present if mask_latents else True):
                    x = pyro.sample(f"x_{t}", dist.Categorical(PROBS_X[x]),
                                    infer={"enumerate": "parallel"})
                with pyro.poutine.mask(mask=present):
                    pyro.sample(f"y_{t}", dist.Normal(LOCS[x], 1.0), obs=sequences[:, t])
    return program


def test_masked_enumerated_latents_are_refused_unless_asked_for():
    sequences = torch.randn(4, 8)
    lengths = torch.tensor([8, 3, 5, 1])
    right = probgen.evaluate(padded_hmm(mask_latents=False), (sequences, lengths))
    with pytest.raises(ValueError, match="masked.*Mask the observations.*allow_masked_latents"):
        probgen.evaluate(padded_hmm(mask_latents=True), (sequences, lengths))
    with pytest.warns(UserWarning) as caught:
        inflated = probgen.evaluate(padded_hmm(mask_latents=True), (sequences, lengths),
                                    allow_masked_latents=True)
    assert len([w for w in caught if "masked" in str(w.message)]) == 1  # once, not per step
    padded = (8 - lengths).double()
    torch.testing.assert_close(inflated.per_example - right.per_example,
                               padded * np.log(NUM_STATES), atol=1e-5, rtol=0)


def test_observed_values_outside_the_support_are_named_even_without_validate_args():
    def coin(x):
        with pyro.plate("data", len(x)):
            pyro.sample("flip", dist.Bernoulli(0.3, validate_args=False), obs=x)

    with pytest.raises(ValueError, match=r"'flip'.*row 2: 0\.5"):
        probgen.evaluate(coin, torch.tensor([0.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match=r"'flip'.*row 1: 2\.0"):
        probgen.fit(coin, torch.tensor([0.0, 2.0, 1.0]), num_steps=1, progress=False)

    def counts(x):
        with pyro.plate("data", len(x)):
            pyro.sample("n", dist.Poisson(2.0, validate_args=False), obs=x)

    with pytest.raises(ValueError, match=r"'n'.*row 0: -1\.0"):
        probgen.evaluate(counts, torch.tensor([-1.0, 3.0]))


def test_a_guide_that_misses_the_models_latent_is_refused():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def misnamed_guide(x):
        loc = pyro.param("q_loc", torch.zeros(len(x)))
        with pyro.plate("data", len(x)):
            pyro.sample("z_typo", dist.Normal(loc, 1.0))

    with pytest.raises(ValueError, match=r"does not sample the model's latent site\(s\) \['z'\]"):
        probgen.fit(model, torch.randn(5), guide=misnamed_guide, num_steps=2, progress=False)


def test_compare_takes_a_list():
    a = probgen.evaluate(linear, (torch.randn(10, 3), torch.randn(10)))
    table = probgen.compare([a, a])
    assert [row.name for row in table.rows] == ["model 1", "model 2"]


def test_bits_per_dim_of_ragged_sequences_count_true_lengths():
    sequences = torch.randn(4, 8)
    lengths = torch.tensor([8, 3, 5, 1])
    result = probgen.evaluate(padded_hmm(mask_latents=False), (sequences, lengths))
    assert result.num_dims == pytest.approx(float(lengths.double().mean()))  # 4.25, not 8
    expected = -float(result.per_example.sum()) / (float(lengths.sum()) * np.log(2))
    assert result.bits_per_dim == pytest.approx(expected)


def test_a_point_mass_guide_is_refit_as_a_density_so_the_bound_holds():
    """An AutoDelta over z proposes no density: log p(x, z_MAP) is no bound on log p(x). The
    refit uses an AutoNormal, and the IWAE-k value stays below the closed form."""
    generator = torch.Generator().manual_seed(0)
    test = torch.randn(100, Q, generator=generator) @ torch.randn(Q, D, generator=generator)
    test = test + 0.3 * torch.randn(100, D, generator=generator)
    point = pyro.infer.autoguide.AutoDelta(ppca)
    point(test)  # W and sigma at their initial values: the closed form below uses them
    held_out = probgen.evaluate(ppca, test, guide=point, k=500, seed=0, refit_steps=400)
    weight, sigma = pyro.param("W").detach(), pyro.param("sigma").detach()
    closed_form = dist.MultivariateNormal(torch.zeros(D), weight @ weight.T
                                          + sigma**2 * torch.eye(D)).log_prob(test)
    assert held_out.kind == "lower_bound"
    assert held_out.settings["refit"]["guide"] == "AutoNormal"
    gap = float(closed_form.mean()) - held_out.mean
    assert 0 <= gap < 0.02, gap
