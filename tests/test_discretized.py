"""Discretized logistic / normal: normalization over the bins, agreement with the continuous CDF."""

import numpy as np
import pytest
import torch
from scipy import stats

from probgen.distributions import DiscretizedLogistic, DiscretizedNormal

FAMILIES = [(DiscretizedLogistic, stats.logistic), (DiscretizedNormal, stats.norm)]


@pytest.mark.parametrize("family,reference", FAMILIES)
@pytest.mark.parametrize("scale", [1e-4, 1e-2, 0.3, 10.0, 1e4])
def test_mass_sums_to_one_over_256_bins(family, reference, scale):
    loc = torch.tensor([-1.5, -1.0, -0.3, 0.0, 0.51, 1.0, 2.0], dtype=torch.float64)
    d = family(loc, torch.full_like(loc, scale))
    log_mass = d.log_prob(torch.arange(256, dtype=torch.float64)[:, None])  # (256, 7)
    assert torch.isfinite(log_mass).all()
    torch.testing.assert_close(torch.logsumexp(log_mass, 0), torch.zeros(7, dtype=torch.float64),
                               atol=1e-9, rtol=0)


@pytest.mark.parametrize("family,reference", FAMILIES)
def test_bin_mass_matches_scipy_cdf_differences(family, reference):
    num_bins, loc, scale = 16, 0.2, 0.35
    edges = (2 * np.arange(num_bins + 1) - 1) / (num_bins - 1) - 1  # bin k spans edges[k:k+2]
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.diff(reference.cdf(edges, loc=loc, scale=scale))
    d = family(torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64),
               num_bins=num_bins)
    mass = d.log_prob(torch.arange(num_bins, dtype=torch.float64)).exp().numpy()
    np.testing.assert_allclose(mass, expected, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("family,reference", FAMILIES)
def test_narrow_bins_approach_the_density(family, reference):
    # scale >> bin width: P(k) ≈ pdf(c_k) · 2/(B-1)
    num_bins, scale = 256, 50.0
    d = family(torch.tensor(0.0, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64))
    values = torch.tensor([1.0, 100.0, 200.0], dtype=torch.float64)
    centres = 2 * values.numpy() / (num_bins - 1) - 1
    expected = reference.logpdf(centres, scale=scale) + np.log(2 / (num_bins - 1))
    np.testing.assert_allclose(d.log_prob(values).numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("family", [DiscretizedLogistic, DiscretizedNormal])
def test_sample_frequencies_match_probabilities(family):
    torch.manual_seed(0)
    d = family(torch.tensor(0.1, dtype=torch.float64), torch.tensor(0.2, dtype=torch.float64),
               num_bins=8)
    draws = d.sample((40000,))
    assert draws.shape == (40000,) and ((draws >= 0) & (draws <= 7)).all()
    assert torch.equal(draws, draws.round())
    counts = torch.bincount(draws.long(), minlength=8).double()
    probs = d.log_prob(torch.arange(8, dtype=torch.float64)).exp()
    _, p_value = stats.chisquare(counts.numpy(), probs.numpy() * 40000)
    assert p_value > 1e-3


def test_batch_shape_expand_gradients_and_validation():
    loc = torch.zeros(3, 1, requires_grad=True)
    scale = torch.full((1, 4), 0.1, requires_grad=True)
    d = DiscretizedLogistic(loc, scale, validate_args=True)
    assert d.batch_shape == (3, 4) and d.event_shape == ()
    assert d.expand((2, 3, 4)).batch_shape == (2, 3, 4)
    d.log_prob(torch.full((3, 4), 130.0)).sum().backward()
    assert loc.grad is not None and scale.grad is not None
    with pytest.raises(ValueError):
        d.log_prob(torch.full((3, 4), 0.5))  # not a bin index
    with pytest.raises(ValueError, match="num_bins"):
        DiscretizedLogistic(loc, scale, num_bins=1)
