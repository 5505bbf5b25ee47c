"""fit(ema_decay=d): Polyak averaging of the parameters, on programs written here."""

import pyro
import pyro.distributions as dist
import pytest
import torch

import probgen
from probgen.infer.averaging import ParameterAverage
from probgen.models.mixture import GaussianMixture


def mean_model(x):
    """x_n ~ N(loc, 1): the loss is quadratic in loc, its minimum at the sample mean."""
    loc = pyro.param("loc", torch.tensor(0.0, dtype=x.dtype))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(loc, 1.0), obs=x)


@pytest.fixture(autouse=True)
def fresh_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


@pytest.fixture
def data():
    return torch.randn(200, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 3


def trajectory(data, **options):
    """The raw parameter after every step (callbacks see θ, never θ̄) and the fit result."""
    seen = []
    result = probgen.fit(mean_model, data, batch_size=20, optim=0.05, seed=1, progress=False,
                         callbacks=[lambda state: seen.append(float(pyro.param("loc").detach()))],
                         **options)
    return seen, result


def by_hand(raw, decay):
    """θ̄ by the formula: θ̄_1 = θ_1, θ̄_t = d_t θ̄_{t−1} + (1 − d_t) θ_t, d_t = min(d, (1+t)/(10+t))."""
    average, averages = None, []
    for t, value in enumerate(raw):
        d = min(decay, (1 + t) / (10 + t))
        average = value if average is None else d * average + (1 - d) * value
        averages.append(average)
    return averages


def test_the_returned_parameter_is_the_average_of_the_steps(data):
    raw, _ = trajectory(data, num_steps=60, ema_decay=0.9)
    pyro.clear_param_store()
    plain, _ = trajectory(data, num_steps=60)
    assert raw == pytest.approx(plain, abs=1e-12)  # averaging never changes the steps taken
    assert float(pyro.param("loc").detach()) == pytest.approx(plain[-1], abs=1e-12)
    pyro.clear_param_store()
    trajectory(data, num_steps=60, ema_decay=0.9)
    assert float(pyro.param("loc").detach()) == pytest.approx(by_hand(raw, 0.9)[-1], abs=1e-6)
    assert abs(by_hand(raw, 0.9)[-1] - raw[-1]) > 1e-3  # the check can tell them apart


def test_validation_scores_the_averages_and_training_goes_on_from_the_raw_steps(data):
    held_out = data[:50] - 0.5
    raw, result = trajectory(data, num_steps=40, ema_decay=0.8, validation=held_out,
                             validate_every=10, restore_best=False)
    pyro.clear_param_store()
    unvalidated, _ = trajectory(data, num_steps=40, ema_decay=0.8)
    assert raw == pytest.approx(unvalidated, abs=1e-12)  # swapped back after each validation
    averages = by_hand(raw, 0.8)

    def nll(loc):  # -log N(x | loc, 1) per example, the program's Trace_ELBO
        return float(-dist.Normal(loc, 1.0).log_prob(held_out).mean())

    for step, value in result.validation:
        assert value == pytest.approx(nll(averages[step - 1]), abs=1e-6)
        assert abs(value - nll(raw[step - 1])) > 1e-4


def test_restore_best_keeps_the_best_averages(data):
    held_out = torch.full((20,), 1.0, dtype=torch.float64)  # far from the training mean: the
    raw, result = trajectory(data, num_steps=40, ema_decay=0.7, validation=held_out,  # first
                             validate_every=5)  # validation, nearest the start, is the best
    averages = by_hand(raw, 0.7)
    best = min(result.validation, key=lambda sv: sv[1])[0]
    assert result.best_step == best
    assert float(pyro.param("loc").detach()) == pytest.approx(averages[best - 1], abs=1e-6)


def test_a_resumed_run_continues_the_average_exactly(data, tmp_path):
    trajectory(data, num_steps=30, ema_decay=0.9)
    straight = float(pyro.param("loc").detach())
    pyro.clear_param_store()
    checkpoint = tmp_path / "fit.pt"
    trajectory(data, num_steps=12, ema_decay=0.9, checkpoint=checkpoint, restore_best=False)
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["average"]["updates"] == 12
    pyro.clear_param_store()
    # the checkpoint holds the raw parameter to go on from, and the average beside it
    raw, _ = trajectory(data, num_steps=30, ema_decay=0.9, checkpoint=checkpoint, resume=True)
    assert float(pyro.param("loc").detach()) == pytest.approx(straight, abs=1e-12)


def test_averaging_reduces_the_noise_of_small_batch_steps():
    x = torch.randn(2000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    errors = {}
    for decay in (None, 0.99):
        pyro.clear_param_store()
        probgen.fit(mean_model, x, batch_size=5, optim=0.05, num_steps=1500, seed=2,
                    progress=False, ema_decay=decay)
        errors[decay] = abs(float(pyro.param("loc").detach()) - float(x.mean()))
    assert errors[0.99] < errors[None] / 3


def test_closed_form_methods_and_bad_decays_are_refused():
    x = torch.randn(100, 2)
    with pytest.raises(TypeError, match="ema_decay"):
        probgen.fit(GaussianMixture(2, 2), x, method="em", num_steps=3, ema_decay=0.9,
                    progress=False)
    for bad in (0, 1, 1.5, -0.1, True, "0.9"):
        with pytest.raises(ValueError, match="ema_decay must be a number in"):
            probgen.fit(mean_model, x[:, 0], num_steps=2, ema_decay=bad, progress=False)


def test_parameters_created_during_the_first_step_are_tracked():
    first = torch.tensor([1.0, 2.0])
    average = ParameterAverage(0.5)
    average.update([first])
    second = torch.tensor([5.0])  # a parameter that appears later starts at its own value
    first += 10
    average.update([first, second])
    # t = 1: d = min(0.5, 2/11) = 2/11
    assert torch.allclose(average.shadow[0], torch.tensor([1.0, 2.0]) * 2 / 11
                          + torch.tensor([11.0, 12.0]) * 9 / 11)
    assert torch.equal(average.shadow[1], torch.tensor([5.0]))
    expected = torch.tensor([1.0, 2.0]) * 2 / 11 + torch.tensor([11.0, 12.0]) * 9 / 11
    with average.applied([first, second]):
        assert torch.allclose(first, expected)  # the average in place inside the block
    assert torch.equal(first, torch.tensor([11.0, 12.0]))  # the raw value after it
    average.apply([first, second])
    assert torch.allclose(first, expected)
