"""Data sets and the validation boundary."""

from probgen.core.validate import as_batch, validate_data
from probgen.data.bundled import BUNDLED, Dataset, load_dataset, train_test_split

__all__ = ["BUNDLED", "Dataset", "as_batch", "load_dataset", "train_test_split", "validate_data"]
