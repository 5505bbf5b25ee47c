"""MADE and PixelCNN: normalization by enumeration, the autoregressive property by gradients,
sampling against exp(log p), training through probgen.fit, exact evaluation, save/load."""

from __future__ import annotations

import doctest
import itertools
import math
import re
from pathlib import Path

import pyro
import pytest
import torch
from pyro import poutine
from scipy import stats

import probgen
from probgen.models import autoregressive
from probgen.models.autoregressive import MADE, PixelCNN, gated, made, masked, pixelcnn
from probgen.models.registry import get_model_class


@pytest.fixture(autouse=True)
def float64():
    torch.set_default_dtype(torch.float64)  # conftest restores the default after each test


def all_inputs(num_variables: int, num_categories: int = 2) -> torch.Tensor:
    """Every configuration of ``num_variables`` variables with ``num_categories`` values."""
    values = list(itertools.product(range(num_categories), repeat=num_variables))
    return torch.tensor(values, dtype=torch.float64 if num_categories == 2 else torch.long)


def markov_chain(n: int, length: int, stay: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary chains x_0 ~ U{0,1}, x_d = x_{d-1} w.p. ``stay``, and their true log p(x)."""
    generator = torch.Generator().manual_seed(seed)
    flips = torch.rand(n, length, generator=generator) > stay
    flips[:, 0] = torch.rand(n, generator=generator) < 0.5
    x = (torch.cumsum(flips.long(), 1) % 2).double()
    changes = flips[:, 1:].sum(1).double()
    log_prob = math.log(0.5) + changes * math.log(1 - stay) + (length - 1 - changes) * math.log(stay)
    return x, log_prob


MADES = {
    "one ordering": dict(features=10, hidden_features=(16,)),
    "two layers, direct": dict(features=8, hidden_features=(12, 12), direct_connections=True),
    "4 orderings": dict(features=8, hidden_features=(16,), num_masks=4),
    "3 connectivities": dict(features=8, hidden_features=(16,), num_masks=3,
                             order_agnostic=False),
    "random ordering": dict(features=7, hidden_features=(16,), natural_ordering=False),
    "no hidden layer": dict(features=6, hidden_features=(), direct_connections=True),
    "K=3": dict(features=5, hidden_features=(16,), num_categories=3),
    "K=3, 3 orderings": dict(features=4, hidden_features=(16, 16), num_categories=3,
                             num_masks=3, direct_connections=True),
    "orthogonal init": dict(features=6, hidden_features=(20,), direct_connections=True,
                            init="orthogonal"),
}


@pytest.mark.parametrize("name", list(MADES))
def test_made_normalizes_over_every_input(name):
    """Σ_x p(x) = 1 over all K^D inputs, for the model and for each ordering's own model."""
    config = MADES[name]
    model = MADE(**config).eval()
    x = all_inputs(config["features"], config.get("num_categories", 2))
    with torch.no_grad():
        total = torch.logsumexp(model.log_prob(x), 0)
        per_ordering = torch.logsumexp(model.log_prob_per_ordering(x), 0)
    assert abs(float(total)) < 1e-10
    torch.testing.assert_close(per_ordering, torch.zeros_like(per_ordering), atol=1e-10, rtol=0)
    ll = probgen.evaluate(model, x)
    assert ll.kind == "exact" and ll.data_space == "discrete"
    torch.testing.assert_close(ll.per_example, model.log_prob(x).detach())
    generic = probgen.evaluate(model, x, estimator="exact", fast=False)  # the program itself
    torch.testing.assert_close(generic.per_example, ll.per_example)


def test_made_ensemble_is_labelled_as_the_mixture():
    model = MADE(6, (16,), num_masks=5)
    x = all_inputs(6)
    ll = probgen.evaluate(model, x)
    assert (ll.kind, ll.estimator) == ("exact", "ensemble")
    assert ll.settings == {"model": "mixture over 5 orderings", "num_orderings": 5}
    per_ordering = model.log_prob_per_ordering(x).detach()
    third = probgen.evaluate(model, x, estimator="ordering", ordering=3)
    assert third.kind == "exact" and third.settings["model"] == "ordering 3 of 5"
    torch.testing.assert_close(third.per_example, per_ordering[:, 3])
    torch.testing.assert_close(ll.per_example, per_ordering.logsumexp(-1) - math.log(5))
    with pytest.raises(ValueError, match="ordering must be an integer in 0..4"):
        probgen.evaluate(model, x, estimator="ordering", ordering=5)


@pytest.mark.parametrize("direct", [False, True])
@pytest.mark.parametrize("num_categories", [2, 3])
def test_made_output_never_sees_itself_or_its_successors(direct, num_categories):
    """d logit_d / d input_j = 0 unless j comes before d in the mask's ordering; nonzero for
    some predecessor of every d but the first (for every predecessor with direct connections)."""
    D, K = 7, num_categories
    model = MADE(D, (64, 64), num_categories=K, num_masks=3, direct_connections=direct)
    per = model.per_feature
    inputs = torch.rand(5, D * per)  # a real-valued point: every path carries a gradient
    for m in range(3):
        jacobian = torch.autograd.functional.jacobian(
            lambda v, m=m: model.net(v, m).sum(0), inputs)  # (D·K out, 5, D·K in)
        dependence = jacobian.abs().sum(1).reshape(D, per, D, per).sum((1, 3))  # (D out, D in)
        position = model.net.input_degrees[m] - 1  # position of each variable in ordering m
        before = position[None, :] < position[:, None]  # before[d, j]: j precedes d
        assert (dependence[~before] == 0).all()
        sees = dependence > 0
        first = int(model.orderings[m, 0])
        assert all(sees[d].any() for d in range(D) if d != first)
        if direct:
            assert (sees == before).all()


def test_made_dropout_acts_in_training_only_and_keeps_the_ordering():
    model = MADE(7, (64, 64), num_masks=2, dropout=0.5)
    x = torch.bernoulli(torch.full((6, 7), 0.5))
    model.train()
    assert not torch.equal(model.net(x, 0), model.net(x, 0))  # a new dropout mask per call
    inputs = torch.rand(5, 7)
    for m in range(2):
        torch.manual_seed(m)  # one dropout mask for the whole Jacobian (train mode)
        state = torch.get_rng_state()

        def logits(v, m=m, state=state):
            torch.set_rng_state(state)
            return model.net(v, m).sum(0)

        dependence = torch.autograd.functional.jacobian(logits, inputs).abs().sum(1)
        position = model.net.input_degrees[m] - 1
        assert (dependence[~(position[None, :] < position[:, None])] == 0).all()
    model.eval()
    torch.testing.assert_close(model.net(x, 0), model.net(x, 0))
    ll = probgen.evaluate(model, x)  # evaluate runs in eval mode: exact and deterministic
    assert ll.kind == "exact"
    torch.testing.assert_close(ll.per_example, probgen.evaluate(model, x).per_example)
    total = torch.logsumexp(model.log_prob(all_inputs(7)), 0)
    assert float(total) == pytest.approx(0.0, abs=1e-9)  # normalized with dropout off


PIXELCNNS = {
    "binary 3x3": (dict(image_shape=(3, 3), channels=8, layers=3, first_kernel_size=3), 9, 2),
    "binary 3x4, defaults' kernels": (dict(image_shape=(3, 4), channels=4, layers=2), 12, 2),
    "K=3 2x3": (dict(image_shape=(2, 3), num_categories=3, channels=8, layers=2), 6, 3),
}


@pytest.mark.parametrize("name", list(PIXELCNNS))
def test_pixelcnn_normalizes_over_every_image(name):
    config, num_pixels, K = PIXELCNNS[name]
    model = PixelCNN(**config)
    x = all_inputs(num_pixels, K)
    ll = probgen.evaluate(model, x)
    assert ll.kind == "exact" and ll.num_dims == num_pixels
    assert abs(float(torch.logsumexp(ll.per_example, 0))) < 1e-10
    images = x.reshape(-1, 1, *model.config["image_shape"])
    torch.testing.assert_close(model.log_prob(images), model.log_prob(x))
    generic = probgen.evaluate(model, images, estimator="exact", fast=False)
    torch.testing.assert_close(generic.per_example, ll.per_example)


def pixel_dependence(model: PixelCNN, points: int = 3) -> torch.Tensor:
    """dependence[p, q] = Σ |d features_p / d x_q| over a few random real-valued images, the
    features being the last horizontal stack's (the 1x1 head adds no spatial dependence, and
    its ReLUs could hide some by chance at a random initialization)."""
    height, width = model.height, model.width
    x = torch.rand(points, 1, height, width)
    jacobian = torch.autograd.functional.jacobian(
        lambda v: model.net.features(v).sum((0, 1)).reshape(-1), x)  # (H·W, points, 1, H, W)
    return jacobian.abs().sum(1).reshape(height * width, height * width)  # raster order


def test_pixelcnn_sees_every_earlier_pixel_and_no_later_one():
    """On a 7x7 image: no output depends on its pixel or later ones (raster order), and a deep
    enough network depends on every earlier one, including the upper-right pixels that
    stacked masked 3x3 convolutions miss (the blind spot)."""
    model = PixelCNN((7, 7), channels=4, layers=4)
    assert model.receptive_field() >= 6
    dependence = pixel_dependence(model)
    earlier = torch.ones(49, 49).tril(-1).bool()
    assert (dependence[~earlier] == 0).all()
    assert (dependence[earlier] > 0).all()
    logits = torch.autograd.functional.jacobian(lambda v: model.logits(v).sum(0),
                                                torch.rand(3, 49)).abs().sum(1)
    assert (logits[~earlier] == 0).all()  # the whole model, head included, leaks nothing


def test_pixelcnn_receptive_field_of_one_layer():
    """The dependence test has power: one mask-A layer of kernel 3 sees, from (3, 3), exactly
    rows 1-2 at columns 2-4 (vertical stack, shifted down) and (3, 1), (3, 2) (horizontal)."""
    model = PixelCNN((7, 7), channels=4, layers=1, first_kernel_size=3)
    seen = pixel_dependence(model)[3 * 7 + 3].reshape(7, 7) > 0
    expected = torch.zeros(7, 7, dtype=torch.bool)
    expected[1:3, 2:5] = True
    expected[3, 1:3] = True
    assert (seen == expected).all()


def chi_square_p_value(samples: torch.Tensor, log_prob: torch.Tensor, states: torch.Tensor
                       ) -> float:
    """Pearson's test of samples against the probabilities exp(log_prob) of ``states``."""
    index = {tuple(row.tolist()): i for i, row in enumerate(states)}
    counts = torch.zeros(len(states))
    for row in samples.reshape(len(samples), -1):
        counts[index[tuple(row.tolist())]] += 1
    expected = log_prob.exp() * len(samples)
    statistic = float(((counts - expected) ** 2 / expected).sum())
    return float(stats.chi2.sf(statistic, len(states) - 1))


@pytest.mark.parametrize("case", ["one ordering", "ordering 1 of 3", "mixture", "K=3"])
def test_made_samples_follow_its_likelihood(case):
    """Seeded: 20,000 draws against exp(log p) on all 2^4 (or 3^3) inputs, Pearson p > 0.001."""
    torch.manual_seed(0)
    K = 3 if case == "K=3" else 2
    D = 3 if K == 3 else 4
    model = MADE(D, (8,), num_categories=K, num_masks=1 if case in ("one ordering", "K=3")
                 else 3)
    for p in model.parameters():  # larger weights: a distribution far from uniform
        p.data.mul_(3)
    states = all_inputs(D, K)
    if case == "ordering 1 of 3":
        samples, log_prob = model.sample(20_000, ordering=1), model.log_prob_per_ordering(states)[:, 1]
    else:
        samples, log_prob = model.sample(20_000), model.eval().log_prob(states)
    assert samples.shape == (20_000, D)
    assert samples.dtype == (torch.long if K == 3 else torch.get_default_dtype())
    assert chi_square_p_value(samples, log_prob.detach(), states) > 1e-3


@pytest.mark.parametrize("num_categories", [2, 3])
def test_pixelcnn_samples_follow_its_likelihood(num_categories):
    torch.manual_seed(1)
    shape = (2, 3) if num_categories == 2 else (2, 2)
    model = PixelCNN(shape, num_categories=num_categories, channels=8, layers=2)
    for p in model.parameters():
        p.data.mul_(2)
    states = all_inputs(shape[0] * shape[1], num_categories)
    samples = model.sample(10_000)
    assert samples.shape == (10_000, 1, *shape)
    assert model.sample(3, flat=True).shape == (3, shape[0] * shape[1])
    assert chi_square_p_value(samples, model.log_prob(states).detach(), states) > 1e-3


@pytest.mark.parametrize("make", [
    lambda: MADE(6, (32,)),
    lambda: MADE(6, (32,), num_masks=4, direct_connections=True),
    lambda: PixelCNN((2, 3), channels=8, layers=2, first_kernel_size=3),
], ids=["made", "made, 4 orderings", "pixelcnn"])
def test_fit_learns_a_markov_chain_without_cheating(make):
    """probgen.fit brings the held-out log-likelihood within 0.1 nats of the true model's, and
    not above it beyond noise (paired, 3 standard errors): a leak of x_d into its own
    conditional would score far above the truth."""
    train, _ = markov_chain(2000, 6, stay=0.9, seed=0)
    test, truth = markov_chain(2000, 6, stay=0.9, seed=1)
    model = make()
    before = probgen.evaluate(model, test).mean
    result = probgen.fit(model, train, num_steps=600, batch_size=100, optim=2e-2, seed=0,
                         progress=False)
    assert result.losses[-1] < result.losses[0]
    ll = probgen.evaluate(model, test)
    assert ll.kind == "exact"
    torch.testing.assert_close(ll.per_example, model.eval().log_prob(test).detach())
    assert ll.mean > before + 1.0
    gap = ll.per_example - truth  # paired: the test set's own noise cancels
    assert -0.1 < float(gap.mean()) < 3 * float(gap.std()) / math.sqrt(len(gap))


def test_made_training_program_uses_one_drawn_ordering_per_batch():
    model = MADE(5, (16,), num_masks=4).train()
    x = all_inputs(5)
    per_ordering = model.log_prob_per_ordering(x).detach()
    used = set()
    for seed in range(12):
        pyro.set_rng_seed(seed)
        trace = poutine.trace(model.model).get_trace(x)
        values = trace.nodes["x"]["fn"].log_prob(x).detach()
        matches = [m for m in range(4) if torch.allclose(values, per_ordering[:, m])]
        assert len(matches) == 1
        used.add(matches[0])
    assert used == {0, 1, 2, 3}


@pytest.mark.parametrize("make", [
    lambda: MADE(5, (8, 8), num_categories=3, num_masks=3, direct_connections=True, seed=7),
    lambda: PixelCNN((3, 3), channels=4, layers=2),
], ids=["made", "pixelcnn"])
def test_save_and_load_round_trip(make, tmp_path):
    model = make()
    x = model.sample(20)
    probgen.save(model, tmp_path / "model.pt")
    loaded = probgen.load(tmp_path / "model.pt")
    assert type(loaded) is type(model) and get_model_class(model.registry_name) is type(model)
    torch.testing.assert_close(probgen.evaluate(loaded, x).per_example,
                               probgen.evaluate(model, x).per_example)


def test_made_orthogonal_init_has_orthonormal_weights_and_zero_biases(tmp_path):
    model = MADE(6, (20, 4), direct_connections=True, init="orthogonal")
    net = model.net
    for weight in (net.hidden[0].weight, net.hidden[1].weight, net.output.weight,
                   net.direct.weight):  # (out, in): orthonormal columns if tall, rows if wide
        gram = weight.T @ weight if weight.shape[0] >= weight.shape[1] else weight @ weight.T
        torch.testing.assert_close(gram, torch.eye(len(gram)))
    assert all(float(layer.bias.abs().max()) == 0 for layer in (*net.hidden, net.output))
    default = MADE(6, (20, 4))
    assert float(default.net.hidden[0].bias.abs().max()) > 0  # the default init differs
    probgen.save(model, tmp_path / "made.pt")
    assert probgen.load(tmp_path / "made.pt").config["init"] == "orthogonal"


@pytest.mark.parametrize("call, message", [
    (lambda: MADE(4, (8,), init="xavier"), "init must be 'default' or 'orthogonal'"),
    (lambda: MADE(4, (8,), dropout=1.0), r"dropout must be a probability in \[0, 1\)"),
    (lambda: probgen.evaluate(MADE(4, (8,)), torch.full((3, 4), 0.5)), "binary"),
    (lambda: probgen.evaluate(MADE(4, (8,)), torch.zeros(3, 5)), r"shape \(5,\).*\(4,\)"),
    (lambda: probgen.evaluate(MADE(4, (8,), num_categories=3), torch.full((3, 4), 3)),
     "category 3 but the model has 3 categories"),
    (lambda: probgen.fit(PixelCNN((3, 3), channels=4, layers=1), torch.zeros(4, 10),
                         num_steps=1, progress=False), r"3x3 images.*\(n, 1, 3, 3\).*\(n, 9\)"),
    (lambda: MADE(4, ()), "direct_connections=True"),
    (lambda: MADE(4, (0,)), "hidden_features must be an integer >= 1"),
    (lambda: PixelCNN((3, 3), kernel_size=4), "kernel_size must be odd"),
    (lambda: PixelCNN((3, 3, 3)), "single-channel"),
    (lambda: MADE(4, (8,)).sample(2, ordering=1), r"0..0 \(this MADE has num_masks=1\)"),
])
def test_bad_inputs_name_the_problem_and_the_fix(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_docstring_examples_run():
    for module in (masked, made, gated, pixelcnn):
        result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__
    assert set(autoregressive.__all__) <= set(dir(autoregressive))


def test_guide_snippet_runs(capsys):
    guide = Path(__file__).resolve().parents[1] / "docs" / "models" / "autoregressive.md"
    block = re.findall(r"```python\n(.*?)```", guide.read_text(), flags=re.S)[0]
    exec(compile(block, f"{guide.name}[block 0]", "exec"), {})
    printed = capsys.readouterr().out
    assert "exact mixture over 8 orderings" in printed and "exact (exact)" in printed
