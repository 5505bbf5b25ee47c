import os
from pathlib import Path

import pyro
import pytest
import torch

from probgen.core.paths import shared_data_dir

torch.set_num_threads(1)  # small models: one thread beats two (no OpenMP waits)


@pytest.fixture(autouse=True, scope="session")
def temporary_cache(tmp_path_factory):
    """The whole session downloads and caches under a temporary $XDG_CACHE_HOME, never into
    the user's ~/.cache/probgen (matplotlib keeps its own font cache where it was)."""
    real_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MPLCONFIGDIR", os.environ.get("MPLCONFIGDIR",
                                                    str(real_cache / "matplotlib")))
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


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


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is not present")
    return path


@pytest.fixture
def isolated_data_dirs(tmp_path, monkeypatch) -> Path:
    """No $PROBGEN_DATA, no shared folder, an empty cache: loaders see only what a test gives."""
    monkeypatch.delenv("PROBGEN_DATA", raising=False)
    monkeypatch.setenv("PROBGEN_SHARED_DATA", str(tmp_path / "no-shared-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "probgen"
