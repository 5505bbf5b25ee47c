"""Binarize, dequantize and logit: Jacobians, and the dequantization bound against exact masses."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import integrate, stats

import probgen
from probgen.data.transforms import LogitTransform, binarize, logit_transform, uniform_dequantize
from probgen.distributions.flow import Flow
from probgen.evaluate.dequantized import bits_per_dim_dequantized, dequantized_log_likelihood
from probgen.guides.dequantizer import UniformDequantizer, VariationalDequantizer


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_static_binarize_thresholds():
    x = torch.tensor([[0.0, 0.49, 0.5, 0.51, 1.0]], dtype=torch.float64)
    assert binarize(x).tolist() == [[0.0, 0.0, 0.0, 1.0, 1.0]]
    assert binarize(x, threshold=0.2).tolist() == [[0.0, 1.0, 1.0, 1.0, 1.0]]


def test_dynamic_binarize_is_bernoulli_and_seeded():
    x = torch.tensor([[0.1, 0.5, 0.9]], dtype=torch.float64).expand(20000, 3)
    first = binarize(x, dynamic=True, generator=torch.Generator().manual_seed(1))
    again = binarize(x, dynamic=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and set(first.unique().tolist()) <= {0.0, 1.0}
    stderr = (x[0] * (1 - x[0]) / x.shape[0]).sqrt()
    assert ((first.mean(0) - x[0]).abs() < 4 * stderr).all()


def test_binarize_rejects_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binarize(torch.tensor([[0.0, 255.0]]))


def test_uniform_dequantize_stays_in_the_bin():
    x = torch.randint(0, 256, (100, 5)).double()
    y = uniform_dequantize(x, 256)
    assert torch.equal((y * 256).floor(), x) and (y >= 0).all() and (y < 1).all()
    y_raw = uniform_dequantize(x, 256, scale=False)
    assert torch.equal(y_raw.floor(), x)
    with pytest.raises(ValueError, match="256 categories"):
        uniform_dequantize(torch.tensor([[256.0]]), 256)
    with pytest.raises(ValueError, match="whole numbers"):
        uniform_dequantize(torch.tensor([[0.5]]), 256)


def test_logit_jacobian_and_inverse():
    y = torch.rand(4, 3, dtype=torch.float64)
    transform = LogitTransform(alpha=0.05)
    z = transform(y)
    torch.testing.assert_close(transform.inv(z), y)
    leaf = y.clone().requires_grad_()
    # elementwise map: the gradient of the sum holds every dz_ij / dy_ij
    (derivative,) = torch.autograd.grad(transform(leaf).sum(), leaf)
    torch.testing.assert_close(transform.log_abs_det_jacobian(y, z), derivative.log())
    z2, log_det = logit_transform(y, 0.05)
    torch.testing.assert_close(z2, z)
    torch.testing.assert_close(log_det, derivative.log().sum(-1))


def test_logit_density_on_unit_cube_mass():
    """alpha=0: a density on [0, 1]; alpha>0 loses the mass outside logit(alpha)..logit(1-alpha)."""
    torch.manual_seed(1)
    flow = Flow(1, kind="maf", transforms=1, hidden=(4, 4)).double()
    grid = torch.linspace(1e-10, 1 - 1e-10, 400001, dtype=torch.float64)[:, None]
    z_grid = torch.linspace(-60, 60, 400001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        for alpha in (0.0, 0.05):
            density = torch.distributions.TransformedDistribution(
                flow(), [LogitTransform(alpha).inv])
            mass = torch.trapezoid(density.log_prob(grid).exp(), grid[:, 0])
            bound = math.log(alpha / (1 - alpha)) if alpha else -60.0
            inside = (z_grid[:, 0] > bound) & (z_grid[:, 0] < -bound)
            z_mass = torch.trapezoid(flow().log_prob(z_grid[inside]).exp(), z_grid[inside, 0])
            assert abs(float(mass - z_mass)) < 2e-3, alpha
            assert float(mass) <= 1 + 1e-3


def gaussian_case():
    """Independent Gaussians on the [0, 1) scale: the bin masses are differences of CDFs."""
    num_levels, mean = 5, torch.tensor([0.3, 0.5, 0.7], dtype=torch.float64)
    std = torch.tensor([0.2, 0.1, 0.3], dtype=torch.float64)
    x = torch.tensor([[0, 2, 4], [1, 2, 3], [4, 0, 2], [2, 3, 1]], dtype=torch.float64)

    def log_density(y):
        return torch.distributions.Normal(mean, std).log_prob(y).sum(-1)

    normal = stats.norm(mean.numpy(), std.numpy())
    lower, upper = x.numpy() / num_levels, (x.numpy() + 1) / num_levels
    exact = torch.from_numpy(log_mass := (normal.cdf(upper) - normal.cdf(lower))).log().sum(-1)
    assert log_mass.shape == (4, 3)
    return num_levels, x, log_density, exact


def test_uniform_dequantization_is_a_lower_bound_on_gaussian_bins():
    num_levels, x, log_density, exact = gaussian_case()
    generator = torch.Generator().manual_seed(3)
    # 400 independent k=1 bounds per example (unbiased for E_u log p), vectorized as rows
    single = dequantized_log_likelihood(log_density, x.repeat(400, 1), num_levels=num_levels,
                                        generator=generator).per_example.reshape(400, -1)
    # E_u log N(y; m, s) for y ~ U[a, b) is closed form: E(y-m)² = ((b-m)³ - (a-m)³) / 3(b-a)
    mean, std = torch.tensor([0.3, 0.5, 0.7]).double(), torch.tensor([0.2, 0.1, 0.3]).double()
    a, b = x / num_levels, (x + 1) / num_levels
    second_moment = ((b - mean) ** 3 - (a - mean) ** 3) / (3 * (b - a))
    expected_bound = (-0.5 * torch.log(2 * math.pi * std**2) - second_moment / (2 * std**2)
                      ).sum(-1) - 3 * math.log(num_levels)
    assert (expected_bound < exact).all(), "E_u log p <= log P by Jensen, strictly here"
    stderr = single.std(0) / math.sqrt(single.shape[0])
    assert ((single.mean(0) - expected_bound).abs() < 4 * stderr).all()
    # importance weighting with k draws converges to log P(x) (noise ~ CV / sqrt(k) ≈ 3e-3)
    tight = dequantized_log_likelihood(log_density, x, num_levels=num_levels, num_samples=200000,
                                       chunk_size=20000, generator=generator)
    assert tight.kind == "lower_bound" and tight.data_space == "dequantized"
    torch.testing.assert_close(tight.per_example, exact, atol=1e-2, rtol=0)
    assert tight.settings == {"num_levels": 5, "num_samples": 200000}


def test_bits_per_dim_use_the_unit_bin_scale():
    num_levels, x, log_density, _ = gaussian_case()
    ll = dequantized_log_likelihood(log_density, x, num_levels=num_levels,
                                    generator=torch.Generator().manual_seed(4))
    # the same draws on the [0, 1) scale:
    y = UniformDequantizer(num_levels).sample_and_log_prob(
        x, 1, generator=torch.Generator().manual_seed(4))[0][0]
    mean_scaled = float(log_density(y).mean())
    expected = -(mean_scaled - 3 * math.log(num_levels)) / (3 * math.log(2))
    assert ll.bits_per_dim == pytest.approx(expected, rel=1e-12)
    assert bits_per_dim_dequantized(mean_scaled, 3, num_levels) == pytest.approx(expected)


def test_dequantized_flow_bound_below_quadrature_mass():
    """A 1-D flow density: exact bin masses by adaptive quadrature, both dequantizers below."""
    torch.manual_seed(5)
    num_levels = 4
    flow = Flow(1, kind="nsf", transforms=2, hidden=(8, 8)).double()

    def log_density(y):
        return flow().log_prob(4 * y - 2) + math.log(4)  # a density on the [0, 1) scale

    def density(value):
        with torch.no_grad():
            return float(log_density(torch.tensor([[value]], dtype=torch.float64)).exp())

    x = torch.arange(num_levels, dtype=torch.float64)[:, None]
    exact = torch.tensor([math.log(integrate.quad(density, k / 4, (k + 1) / 4, epsabs=1e-12)[0])
                          for k in range(num_levels)], dtype=torch.float64)
    variational = VariationalDequantizer(1, num_levels, transforms=2, hidden=(8, 8)).double()
    for dequantizer in (UniformDequantizer(num_levels), variational):
        draws = dequantized_log_likelihood(
            log_density, x.repeat(2000, 1), num_levels=num_levels, dequantizer=dequantizer
        ).per_example.reshape(2000, -1)  # (draws, n) k=1 bounds
        stderr = draws.std(0) / math.sqrt(draws.shape[0])
        assert (draws.mean(0) <= exact + 3 * stderr).all(), dequantizer.name
    tight = dequantized_log_likelihood(log_density, x, num_levels=num_levels,
                                       num_samples=100000, chunk_size=100000)
    torch.testing.assert_close(tight.per_example, exact, atol=1e-2, rtol=0)


def test_variational_noise_density_is_normalized_on_the_cube():
    torch.manual_seed(6)
    dequantizer = VariationalDequantizer(1, 4, transforms=2, hidden=(8, 8)).double()
    x = torch.tensor([[2.0]], dtype=torch.float64)
    grid = torch.linspace(1e-7, 1 - 1e-7, 100001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        density = dequantizer.log_prob(grid, x).exp()
        y, log_q = dequantizer.sample_and_log_prob(x, 5)
        u = y * 4 - x
        torch.testing.assert_close(log_q, dequantizer.log_prob(u, x), atol=1e-8, rtol=1e-6)
    assert abs(float(torch.trapezoid(density, grid[:, 0])) - 1) < 1e-3
    assert ((u > 0) & (u < 1)).all()


def test_evaluate_dequantized_estimator():
    from probgen.evaluate.dequantized import evaluate_dequantized
    from probgen.models.flow import FlowModel

    torch.manual_seed(7)
    model = FlowModel(2, kind="maf", transforms=1, hidden=(8, 8), domain="unit_interval",
                      logit_alpha=0.05).double()
    x = torch.randint(0, 4, (30, 2))
    ll = evaluate_dequantized(model, (x,), num_levels=4, k=8, seed=3)
    reference = dequantized_log_likelihood(model.log_prob, x.double(), num_levels=4,
                                           num_samples=8,
                                           generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ll.per_example, reference.per_example)
    assert (ll.kind, ll.data_space, ll.num_dims) == ("lower_bound", "dequantized", 2)
    with pytest.raises(ValueError, match="exact log_prob"):
        evaluate_dequantized(torch.nn.Linear(2, 2), (x,), num_levels=4)


def test_dequantized_estimator_is_reachable_through_evaluate_on_integer_data():
    from probgen.models.flow import FlowModel

    model = FlowModel(4, kind="maf", transforms=1, hidden=(8,), domain="unit_interval")
    counts = torch.randint(0, 17, (20, 4), generator=torch.Generator().manual_seed(0))
    bound = probgen.evaluate(model, counts, estimator="dequantized", num_levels=17, k=4, seed=0)
    assert bound.kind == "lower_bound" and bound.settings["num_levels"] == 17
    assert bound.mean <= 0.0  # a log-probability mass of discrete data
