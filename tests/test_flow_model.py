"""FlowModel: a Pyro program with an exact likelihood, fitted and scored by the generic API."""

from __future__ import annotations

import math

import pytest
import torch

import probgen
from probgen.core.result import LogLikelihood
from probgen.data.transforms import LogitTransform
from probgen.demo.flow import demo_entries
from probgen.models.flow import FlowModel


def gaussian_data(n: int, seed: int) -> tuple[torch.Tensor, torch.distributions.Distribution]:
    target = torch.distributions.MultivariateNormal(
        torch.tensor([1.0, -1.0], dtype=torch.float64),
        torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64))
    return target.sample((n,)), target


@pytest.mark.parametrize("backend", ["zuko", pytest.param("nflows", marks=pytest.mark.slow)])
def test_fit_and_exact_evaluate_against_true_density(backend):
    """After probgen.fit, the exact held-out LL is within 0.1 nats of the true Gaussian's."""
    torch.manual_seed(0)
    train, target = gaussian_data(1000, 0)
    test = target.sample((2000,))
    model = FlowModel(2, backend=backend, kind="maf", transforms=2, hidden=(16, 16)).double()
    result = probgen.fit(model, train, num_steps=250, optim=1e-2, seed=0, progress=False)
    assert result.losses[-1] < result.losses[0]
    ll = probgen.evaluate(model, test, estimator="exact")
    assert ll.kind == "exact" and ll.data_space == "continuous" and ll.num_examples == 2000
    truth = float(target.log_prob(test).mean())
    assert truth - 0.1 < ll.mean < truth + 3 * ll.stderr


def test_fast_path_matches_generic_program_path():
    torch.manual_seed(1)
    model = FlowModel(3, kind="nsf", transforms=2, hidden=(8, 8)).double()
    x = torch.randn(20, 3, dtype=torch.float64)
    fast = probgen.evaluate(model, x, estimator="exact")
    generic = probgen.evaluate(model, x, estimator="exact", fast=False)
    torch.testing.assert_close(fast.per_example, generic.per_example, atol=1e-10, rtol=0)
    torch.testing.assert_close(fast.per_example, model.flow().log_prob(x).detach())


def test_standardization_jacobian():
    torch.manual_seed(2)
    data = torch.randn(50, 2, dtype=torch.float64) * torch.tensor([3.0, 0.5]) + 4.0
    model = FlowModel.standardized(data, kind="maf", transforms=1, hidden=(8, 8)).double()
    loc, scale = data.mean(0), data.std(0)
    expected = model.flow().log_prob((data - loc) / scale) - scale.log().sum()
    torch.testing.assert_close(model.log_prob(data), expected)
    assert model.config["loc"] == pytest.approx(loc.tolist())


def test_unit_interval_domain_includes_logit_jacobian():
    torch.manual_seed(3)
    model = FlowModel(2, kind="maf", transforms=1, hidden=(8, 8), domain="unit_interval",
                      logit_alpha=0.05).double()
    y = torch.rand(10, 2, dtype=torch.float64)
    transform = LogitTransform(0.05)
    z = transform(y)
    expected = model.flow().log_prob(z) + transform.log_abs_det_jacobian(y, z).sum(-1)
    torch.testing.assert_close(model.log_prob(y), expected)
    samples = model.sample(100)
    assert samples.shape == (100, 2) and (samples >= 0).all() and (samples <= 1).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        probgen.evaluate(model, y + 1.0, estimator="exact")


def test_config_rebuilds_the_same_density(tmp_path):
    torch.manual_seed(4)
    model = FlowModel(3, kind="nsf", backend="zuko", transforms=2, hidden=(8, 8), bins=4)
    x = torch.randn(5, 3)
    path = probgen.save(model, tmp_path / "flow.pt")
    loaded = probgen.load(path)
    assert isinstance(loaded, FlowModel) and loaded.config == model.config
    torch.testing.assert_close(loaded.log_prob(x), model.log_prob(x))


def test_bad_input_errors():
    model = FlowModel(3, kind="maf", transforms=1, hidden=(8, 8))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        probgen.evaluate(model, torch.randn(4, 2), estimator="exact")
    with pytest.raises(ValueError, match="domain"):
        FlowModel(2, domain="positive")
    with pytest.raises(ValueError, match="features"):
        FlowModel(2, loc=[0.0, 0.0, 0.0])


def test_demo_entries_smoke():
    from probgen.data.bundled import load_dataset, train_test_split
    from probgen.demo.registry import DemoData

    entries = demo_entries(smoke=True)
    assert {e.dataset for e in entries} == {"iris"}
    iris = load_dataset("iris").data
    iris = (iris - iris.mean(0)) / iris.std(0)
    train_index, test_index = train_test_split(len(iris), 0.2, seed=0)
    data = DemoData("iris", (iris[train_index],), (iris[test_index],), "standardized iris")
    ll = entries[0].run(data, "")
    assert isinstance(ll, LogLikelihood) and ll.kind == "exact" and math.isfinite(ll.mean)


def test_support_follows_the_domain():
    assert FlowModel(2, kind="maf", transforms=1).support == "real"
    unit = FlowModel(2, kind="maf", transforms=1, domain="unit_interval")
    assert unit.support == "unit_interval" and unit.data_space == "continuous"
    with pytest.raises(AttributeError):
        unit.support = "real"
