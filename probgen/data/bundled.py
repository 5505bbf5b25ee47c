"""Small real data sets that ship with probgen (no download): iris, wine, 8×8 digits."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from probgen.core.validate import check_finite, check_num_samples, check_size

__all__ = ["Dataset", "BUNDLED", "load_dataset", "train_test_split"]


@dataclass(frozen=True)
class Dataset:
    """A bundled data set: ``data`` (n, ...) float tensor, optional integer ``labels``."""

    name: str
    data: torch.Tensor
    labels: torch.Tensor | None
    description: str


def _read(filename: str) -> str:
    raw = resources.files("probgen.data").joinpath("files", filename).read_bytes()
    return gzip.decompress(raw).decode() if filename.endswith(".gz") else raw.decode()


def _table(filename: str, header: bool) -> np.ndarray:
    lines = _read(filename).strip().splitlines()[1 if header else 0:]
    return np.array([[float(v) for v in line.split(",")] for line in lines])


def _iris() -> Dataset:
    table = _table("iris.csv", header=True)
    return Dataset("iris", torch.tensor(table[:, :4]), torch.tensor(table[:, 4], dtype=torch.long),
                   "Fisher's iris: 150 flowers × 4 measurements (cm), 3 species")


def _wine() -> Dataset:
    table = _table("wine_data.csv", header=True)
    return Dataset("wine", torch.tensor(table[:, :13]), torch.tensor(table[:, 13], dtype=torch.long),
                   "UCI wine: 178 wines × 13 chemical measurements, 3 cultivars")


def _digits() -> Dataset:
    table = _table("digits.csv.gz", header=False)
    return Dataset("digits", torch.tensor(table[:, :64]), torch.tensor(table[:, 64], dtype=torch.long),
                   "UCI optical digits: 1797 images of 8×8 pixels with 17 grey levels (0..16)")


BUNDLED = {"iris": _iris, "wine": _wine, "digits": _digits}


def load_dataset(name: str) -> Dataset:
    """Load a bundled data set by name (``"iris"``, ``"wine"``, ``"digits"``), as float64.

    Example:
        >>> load_dataset("iris").data.shape
        torch.Size([150, 4])
    """
    if not isinstance(name, str):
        raise TypeError(f"load_dataset takes a data set name (a str such as 'iris'), got "
                        f"{type(name).__name__}; bundled: {', '.join(sorted(BUNDLED))}")
    if name not in BUNDLED:
        raise ValueError(f"unknown data set {name!r}; bundled: {', '.join(sorted(BUNDLED))}")
    return BUNDLED[name]()


def train_test_split(n: int, test_fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a seeded random split: (train_index, test_index)."""
    n = check_size("n (the number of examples)", n, minimum=2)
    check_num_samples("n (the number of examples)", n, element_bytes=8,  # the permutation
                      fix="a data set of at most {largest} examples fits")
    seed = check_size("seed", seed, minimum=0)
    if seed > 2**63 - 1:
        raise ValueError(f"seed must be an integer in 0 .. 2**63 - 1, got {seed}")
    test_fraction = check_finite("test_fraction", test_fraction)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    num_test = max(1, int(round(n * test_fraction)))
    return order[num_test:], order[:num_test]
