import os
from pathlib import Path

import pyro
import pytest
import torch

torch.set_num_threads(1)  # small models: one thread beats two (no OpenMP waits)


@pytest.fixture(autouse=True)
def clean_pyro():
    """Each test starts with an empty param store, validation on, and a fixed seed."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()
    torch.set_default_dtype(dtype)  # no test leaks global state into the next
    torch.set_num_threads(threads)


def shared_data_dir() -> Path | None:
    """../shared/data beside the checkout (or $PROBGEN_SHARED_DATA), if present."""
    candidates = [os.environ.get("PROBGEN_SHARED_DATA"),
                  Path(__file__).resolve().parents[2] / "shared" / "data",
                  Path(__file__).resolve().parents[1] / "shared" / "data",
                  "/work/shared/data"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is not present")
    return path
