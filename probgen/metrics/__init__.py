"""probgen.metrics: sample-quality metrics of generated against real feature vectors.

Each takes ``(n, d)`` features (or image batches, flattened) and returns a
:class:`MetricResult`: improved precision and recall, kernel MMD² (KID with the polynomial
kernel) with a jackknife stderr, the Vendi score, and FID on the given features.
"""

from probgen.metrics.frechet import fid, frechet_distance
from probgen.metrics.kernels import RBF, Cosine, Kernel, Polynomial, median_bandwidth
from probgen.metrics.mmd import mmd2
from probgen.metrics.precision_recall import precision, precision_recall, recall
from probgen.metrics.result import MetricResult
from probgen.metrics.vendi import vendi

__all__ = [
    "MetricResult", "precision", "recall", "precision_recall", "mmd2", "vendi", "fid",
    "frechet_distance", "Kernel", "RBF", "Polynomial", "Cosine", "median_bandwidth",
]
