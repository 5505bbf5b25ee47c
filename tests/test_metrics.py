"""probgen.metrics against closed forms and brute force: MMD² of Gaussians, FID vs scipy's sqrtm,
Vendi of identical and orthogonal sets, precision/recall vs a scikit-learn k-NN."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.spatial.distance import cdist, pdist
from sklearn.metrics.pairwise import polynomial_kernel
from sklearn.neighbors import NearestNeighbors

from probgen.metrics import (
    RBF,
    Cosine,
    MetricResult,
    Polynomial,
    fid,
    frechet_distance,
    median_bandwidth,
    mmd2,
    precision,
    precision_recall,
    recall,
    vendi,
)
from probgen.metrics import pairwise as pairwise_module


def gaussian(n, mean, scale, generator):
    mean = torch.as_tensor(mean, dtype=torch.float64)
    return mean + scale * torch.randn(n, mean.numel(), generator=generator, dtype=torch.float64)


@pytest.fixture
def small_chunks(monkeypatch):
    """Blocks of 64 entries: every pairwise computation runs over many row chunks."""
    monkeypatch.setattr(pairwise_module, "CHUNK_ELEMENTS", 64)


# --- MMD² ------------------------------------------------------------------------------------
def expected_rbf(mean_a, var_a, mean_b, var_b, bandwidth, dim):
    """E k(x, y), x ~ N(μa, σa² I), y ~ N(μb, σb² I), k = exp(-|x-y|²/2ℓ²), x and y independent."""
    total = bandwidth**2 + var_a + var_b
    gap = float(((torch.as_tensor(mean_a) - torch.as_tensor(mean_b)) ** 2).sum())
    return (bandwidth**2 / total) ** (dim / 2) * math.exp(-gap / (2 * total))


def mmd2_closed_form(mean_a, scale_a, mean_b, scale_b, bandwidth, dim):
    va, vb = scale_a**2, scale_b**2
    return (expected_rbf(mean_a, va, mean_a, va, bandwidth, dim)
            + expected_rbf(mean_b, vb, mean_b, vb, bandwidth, dim)
            - 2 * expected_rbf(mean_a, va, mean_b, vb, bandwidth, dim))


def repeated_mmd2(mean_b, scale_b, repeats=300):
    generator = torch.Generator().manual_seed(1)
    results = [mmd2(gaussian(100, [0.0, 0.0], 1.0, generator),
                    gaussian(150, mean_b, scale_b, generator), kernel=RBF(1.0))
               for _ in range(repeats)]
    values = torch.tensor([r.value for r in results], dtype=torch.float64)
    stderrs = torch.tensor([r.stderr for r in results], dtype=torch.float64)
    return values, stderrs


def test_mmd2_matches_the_gaussian_closed_form_and_its_stderr_the_spread():
    values, stderrs = repeated_mmd2([0.5, 0.0], 1.2)
    truth = mmd2_closed_form([0.0, 0.0], 1.0, [0.5, 0.0], 1.2, 1.0, 2)
    spread = float(values.std())
    assert truth == pytest.approx(0.0304, abs=1e-4)  # the closed form itself is not ~0
    assert abs(float(values.mean()) - truth) < 4 * spread / math.sqrt(len(values))
    # the jackknife is consistent away from the null: its stderr matches the spread over repeats
    # (the spread's own relative error is 1/sqrt(2 * 300) = 4%)
    assert float(stderrs.mean()) / spread == pytest.approx(1.0, abs=0.15)


def test_mmd2_of_identical_distributions_is_unbiased_and_its_stderr_conservative():
    values, stderrs = repeated_mmd2([0.0, 0.0], 1.0)
    spread = float(values.std())
    assert abs(float(values.mean())) < 4 * spread / math.sqrt(len(values))
    assert (values < 0).sum() > 50  # unbiased: negative about as often as positive
    ratio = float(stderrs.mean()) / spread  # degenerate U-statistic: jackknife overstates, <= √2
    assert 0.95 < ratio < 1.6


def brute_force_mmd2(x, y, kernel):
    """The U-statistic from full matrices, and its delete-one jackknife by recomputation."""
    def statistic(a, b):
        kaa, kbb, kab = kernel(a, a), kernel(b, b), kernel(a, b)
        n, m = len(a), len(b)
        return ((kaa.sum() - np.trace(kaa)) / (n * (n - 1)) + (kbb.sum() - np.trace(kbb))
                / (m * (m - 1)) - 2 * kab.mean())

    def jackknife(deleted):
        deleted = np.array(deleted)
        return (len(deleted) - 1) / len(deleted) * ((deleted - deleted.mean()) ** 2).sum()

    without_x = [statistic(np.delete(x, i, 0), y) for i in range(len(x))]
    without_y = [statistic(x, np.delete(y, j, 0)) for j in range(len(y))]
    return statistic(x, y), math.sqrt(jackknife(without_x) + jackknife(without_y))


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("which", ["rbf", "kid"])
def test_mmd2_and_jackknife_equal_brute_force(which, chunked, request):
    if chunked:
        request.getfixturevalue("small_chunks")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(13, 4)), rng.normal(0.3, 1.5, size=(9, 4))
    if which == "rbf":
        bandwidth = float(np.median(pdist(np.concatenate([x, y]))))
        kernel_np = lambda a, b: np.exp(-cdist(a, b, "sqeuclidean") / (2 * bandwidth**2))  # noqa: E731
        result = mmd2(x, y)  # the median heuristic is the default
        assert result.settings["bandwidth"] == pytest.approx(bandwidth)
    else:
        kernel_np = lambda a, b: polynomial_kernel(a, b, degree=3, gamma=1 / 4, coef0=1)  # noqa: E731
        result = mmd2(x, y, kernel=Polynomial())
        assert result.settings["gamma"] == pytest.approx(0.25)
    value, stderr = brute_force_mmd2(x, y, kernel_np)
    assert result.value == pytest.approx(value, rel=1e-10, abs=1e-12)
    assert result.stderr == pytest.approx(stderr, rel=1e-8)
    assert result.name == "mmd2" and result.higher_is_better is False


def test_polynomial_kernel_matches_scikit_learn():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    ours = Polynomial(degree=2, gamma=0.7, coef0=0.5)(torch.tensor(x), torch.tensor(y))
    assert np.allclose(ours.numpy(), polynomial_kernel(x, y, degree=2, gamma=0.7, coef0=0.5))
    assert np.allclose(Polynomial().diag(torch.tensor(x)).numpy(),
                       np.diag(polynomial_kernel(x, x, degree=3, gamma=1 / 3, coef0=1)))


def test_median_bandwidth_is_the_median_distance_and_survives_duplicates():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 3))
    assert median_bandwidth(torch.tensor(x)) == pytest.approx(np.median(pdist(x)))
    duplicates = torch.zeros(10, 2)
    duplicates[0] = 3.0  # 9 of 45 pairs non-zero: the median of the non-zero ones
    assert median_bandwidth(duplicates) == pytest.approx(math.sqrt(18))
    assert median_bandwidth(torch.zeros(5, 2)) == 1.0
    many = torch.randn(1500, 2, generator=torch.Generator().manual_seed(0))
    assert median_bandwidth(many) == pytest.approx(median_bandwidth(many), rel=0)  # seeded
    assert median_bandwidth(many) == pytest.approx(float(np.median(pdist(many.numpy()))),
                                                   rel=0.05)


def test_mmd2_separates_distributions_and_passes_one_kernel_back():
    generator = torch.Generator().manual_seed(3)
    real = gaussian(300, [0.0] * 3, 1.0, generator)
    close = mmd2(real, gaussian(300, [0.1] * 3, 1.0, generator))
    far = mmd2(real, gaussian(300, [1.0] * 3, 1.0, generator), kernel=RBF(
        close.settings["bandwidth"]))
    assert far.value > close.value and far.value > 10 * far.stderr
    assert far.settings["bandwidth"] == close.settings["bandwidth"]


# --- FID -------------------------------------------------------------------------------------
def scipy_frechet(mu1, cov1, mu2, cov2):
    root = scipy.linalg.sqrtm(cov1 @ cov2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1 + cov2 - 2 * root))


def random_covariance(dim, rng):
    a = rng.normal(size=(dim, dim))
    return a @ a.T + 0.1 * np.eye(dim)


def test_frechet_distance_commuting_covariances_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected)
    assert expected == pytest.approx(5.0 + 4.0 + 1.0)


@pytest.mark.parametrize("dim", [2, 10])
def test_frechet_distance_non_commuting_matches_scipy_sqrtm(dim):
    rng = np.random.default_rng(dim)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    cov1, cov2 = random_covariance(dim, rng), random_covariance(dim, rng)
    assert not np.allclose(cov1 @ cov2, cov2 @ cov1)
    ours = frechet_distance(torch.tensor(mu1), torch.tensor(cov1), mu2, cov2)
    assert ours == pytest.approx(scipy_frechet(mu1, cov1, mu2, cov2), rel=1e-8)
    assert frechet_distance(mu2, cov2, mu1, cov1) == pytest.approx(ours, rel=1e-8)  # symmetric
    assert frechet_distance(mu1, cov1, mu1, cov1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_with_a_singular_covariance():
    rng = np.random.default_rng(5)
    cov2 = random_covariance(4, rng)
    mu1, mu2 = np.zeros(4), rng.normal(size=4)
    # N(μ1, 0) is a point mass: W2² = |μ1 - μ2|² + Tr Σ2
    assert frechet_distance(mu1, np.zeros((4, 4)), mu2, cov2) == pytest.approx(
        (mu2**2).sum() + np.trace(cov2))
    low_rank = rng.normal(size=(4, 2))
    ours = frechet_distance(mu1, low_rank @ low_rank.T, mu2, cov2)
    assert ours == pytest.approx(scipy_frechet(mu1, low_rank @ low_rank.T, mu2, cov2), rel=1e-6)


def test_fid_fits_gaussians_with_unbiased_covariances():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(50, 6)), rng.normal(0.5, 2.0, size=(70, 6))
    result = fid(x, y)
    expected = scipy_frechet(x.mean(0), np.cov(x.T), y.mean(0), np.cov(y.T))
    assert result.value == pytest.approx(expected, rel=1e-8)
    assert result.name == "fid" and result.stderr is None and result.higher_is_better is False
    assert result.settings == {"num_real": 50, "num_generated": 70, "num_features": 6}
    assert fid(x[:, :1], y[:, :1]).value == pytest.approx(  # one feature: a 1x1 covariance
        (x[:, 0].mean() - y[:, 0].mean()) ** 2 + (x[:, 0].std(ddof=1) - y[:, 0].std(ddof=1)) ** 2)


def test_fid_of_large_gaussian_samples_approaches_the_population_distance():
    generator = torch.Generator().manual_seed(7)
    scale = torch.tensor([1.0, 2.0], dtype=torch.float64)
    x = torch.randn(20000, 2, generator=generator, dtype=torch.float64)
    y = 1.0 + scale * torch.randn(20000, 2, generator=generator, dtype=torch.float64)
    assert fid(x, y).value == pytest.approx(2.0 + 1.0, abs=0.05)  # |μ|² + Σ(σ1 - σ2)²


# --- Vendi -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", [Cosine(), RBF(1.0), RBF()])
def test_vendi_of_identical_samples_is_one(kernel):
    samples = torch.tensor([[0.3, -1.0, 2.0]]).repeat(25, 1)
    assert vendi(samples, kernel=kernel).value == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("n", [1, 7, 40])
def test_vendi_of_orthogonal_one_hots_is_n(n):
    result = vendi(torch.eye(n))
    assert result.value == pytest.approx(n, rel=1e-10)
    assert result.name == "vendi" and result.higher_is_better is True
    assert vendi(torch.eye(n), kernel=RBF(0.05)).value == pytest.approx(n, rel=1e-8)


@pytest.mark.parametrize("q", [0.5, 1.0, 2.0, math.inf])
def test_vendi_of_equal_groups_is_the_number_of_groups_for_every_order(q):
    groups = torch.eye(5)[torch.arange(30) % 5] * 3.0  # 5 orthogonal directions, 6 copies each
    assert vendi(groups, q=q).value == pytest.approx(5.0, rel=1e-9)


@pytest.mark.parametrize("q", [0.5, 1.0, 2.0, math.inf])
def test_vendi_matches_numpy_eigenvalues(q):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(30, 4))
    for kernel, gram in ((Cosine(), None), (RBF(1.5), None)):
        if isinstance(kernel, Cosine):
            unit = x / np.linalg.norm(x, axis=1, keepdims=True)
            gram = unit @ unit.T
        else:
            gram = np.exp(-cdist(x, x, "sqeuclidean") / (2 * 1.5**2))
        eigenvalues = np.clip(np.linalg.eigvalsh(gram / len(x)), 0, None)
        eigenvalues = eigenvalues[eigenvalues > 1e-15]
        if q == 1.0:
            expected = math.exp(-(eigenvalues * np.log(eigenvalues)).sum())
        elif q == math.inf:
            expected = 1 / eigenvalues.max()
        else:
            expected = (eigenvalues**q).sum() ** (1 / (1 - q))
        assert vendi(x, kernel=kernel, q=q).value == pytest.approx(expected, rel=1e-8)


def test_vendi_cosine_uses_the_smaller_gram_matrix_consistently():
    rng = np.random.default_rng(9)
    wide, tall = rng.normal(size=(10, 30)), rng.normal(size=(30, 10))  # n < d and n > d
    for x in (wide, tall):
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        eigenvalues = np.clip(np.linalg.eigvalsh(unit @ unit.T / len(x)), 1e-300, None)
        expected = math.exp(-(eigenvalues * np.log(eigenvalues)).sum())
        assert vendi(x).value == pytest.approx(expected, rel=1e-8)


# --- precision and recall --------------------------------------------------------------------
def brute_force_coverage(reference, queries, k):
    """Fraction of queries within the k-th-neighbour radius of some reference point."""
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(reference).kneighbors(reference)
    radii = distances[:, -1]  # the 1st "neighbour" is the point itself
    return float((cdist(queries, reference) <= radii[None, :]).any(axis=1).mean())


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_precision_and_recall_equal_a_brute_force_knn(k, chunked, request):
    if chunked:
        request.getfixturevalue("small_chunks")
    rng = np.random.default_rng(k)
    real, generated = rng.normal(size=(120, 5)), rng.normal(0.5, 0.8, size=(90, 5))
    p, r = precision_recall(real, generated, k=k)
    assert p.value == pytest.approx(brute_force_coverage(real, generated, k), abs=1e-12)
    assert r.value == pytest.approx(brute_force_coverage(generated, real, k), abs=1e-12)
    assert 0.5 < p.value < 1 and 0.5 < r.value < 0.9  # neither trivially 0 nor 1
    assert precision(real, generated, k=k) == p and recall(real, generated, k=k) == r
    assert p.settings == {"k": k, "num_real": 120, "num_generated": 90}


def test_precision_and_recall_of_identical_and_of_far_apart_sets():
    generator = torch.Generator().manual_seed(10)
    x = torch.randn(200, 8, generator=generator)
    assert [m.value for m in precision_recall(x, x)] == [1.0, 1.0]
    assert [m.value for m in precision_recall(x, x + 50.0)] == [0.0, 0.0]
    mode = torch.cat([x[:100], torch.randn(100, 8, generator=generator) + 50.0])
    p, r = precision_recall(mode, x[:100])  # the model covers one of two modes: recall halves
    assert p.value == 1.0 and r.value == pytest.approx(0.5, abs=0.02)


def test_image_batches_are_flattened():
    generator = torch.Generator().manual_seed(11)
    images = torch.rand(60, 1, 8, 8, generator=generator)
    others = torch.rand(50, 1, 8, 8, generator=generator)
    flat, flat_others = images.reshape(60, -1), others.reshape(50, -1)
    assert precision_recall(images, others) == precision_recall(flat, flat_others)
    assert fid(images, others).value == pytest.approx(fid(flat, flat_others).value)
    assert mmd2(images, others) == mmd2(flat, flat_others)
    assert vendi((images > 0.5).int()).value == pytest.approx(vendi((flat > 0.5).double()).value)


# --- the boundary ----------------------------------------------------------------------------
@pytest.mark.parametrize("call, error, match", [
    (lambda: precision(torch.randn(10), torch.randn(10, 1)), ValueError, "x\\[:, None\\]"),
    (lambda: precision(torch.randn(10, 3), torch.randn(10, 4)), ValueError,
     "3 features per sample but generated has 4"),
    (lambda: precision(torch.randn(3, 2), torch.randn(10, 2)), ValueError,
     "real has 3 sample\\(s\\), but a k-NN manifold with k=3"),
    (lambda: recall(torch.randn(10, 2), torch.randn(10, 2), k=0), ValueError, "k must be"),
    (lambda: recall(torch.randn(10, 2), torch.randn(10, 2), k=True), ValueError, "k must be"),
    (lambda: mmd2(torch.randn(10, 2), torch.tensor([[1.0, float("nan")]] * 4)), ValueError,
     "generated has NaN in 4 row"),
    (lambda: mmd2(torch.randn(10, 2), torch.randn(2, 2)), ValueError, "at least 3"),
    (lambda: mmd2(torch.randn(10, 2), torch.randn(9, 2), kernel="rbf"), TypeError, "RBF()"),
    (lambda: mmd2(torch.randn(10, 2), torch.randn(0, 2)), ValueError, "generated is empty"),
    (lambda: fid(torch.randn(1, 2), torch.randn(10, 2)), ValueError, "a covariance"),
    (lambda: fid("real", torch.randn(10, 2)), TypeError, "real is a str"),
    (lambda: fid(np.array([["a", "b"]] * 3), torch.randn(10, 2)), TypeError, "text"),
    (lambda: vendi(torch.randn(10, 2), kernel=Polynomial()), ValueError, "k\\(x, x\\) = 1"),
    (lambda: vendi(torch.randn(10, 2), q=0), ValueError, "q must be positive"),
    (lambda: vendi(torch.cat([torch.randn(4, 2), torch.zeros(2, 2)])), ValueError,
     "2 all-zero sample\\(s\\) \\(first: row 4\\)"),
    (lambda: vendi(torch.randn(5, 0)), ValueError, "without features"),
    (lambda: RBF(-1.0), ValueError, "bandwidth must be positive"),
    (lambda: frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2)), ValueError,
     "shape \\(d,\\)"),
    (lambda: frechet_distance(np.zeros(2), [[1.0, 0.5], [0.0, 1.0]], np.zeros(2), np.eye(2)),
     ValueError, "cov1 is not symmetric"),
    (lambda: frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), -np.eye(2)), ValueError,
     "cov2 is not positive semi-definite"),
    (lambda: frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3)), ValueError,
     "2 and 3 dimensions"),
    (lambda: MetricResult("fid", 1.0, -0.1), ValueError, "stderr"),
    (lambda: MetricResult("fid", "1.0"), TypeError, "a number"),
])
def test_bad_inputs_name_the_problem_and_the_fix(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_numpy_lists_and_integer_pixels_are_accepted():
    pixels = np.random.default_rng(12).integers(0, 17, size=(30, 64))
    assert fid(pixels, pixels.tolist()).value == pytest.approx(0.0, abs=1e-8)
    assert precision(pixels.astype(np.uint8), torch.tensor(pixels)).value == 1.0


def test_metric_result_reads_as_a_number_and_a_record():
    result = MetricResult("mmd2", 0.5, 0.25, {"kernel": "rbf", "bandwidth": 1.23456789},
                          higher_is_better=False)
    assert float(result) == 0.5 and result.formatted() == "0.5 ± 0.25"
    assert repr(result) == "MetricResult(mmd2 = 0.5 ± 0.25, kernel=rbf, bandwidth=1.235)"
    assert result.to_dict()["settings"] == {"kernel": "rbf", "bandwidth": 1.23456789}
