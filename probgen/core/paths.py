"""Where data sets live: ``$PROBGEN_DATA``, then the cache, then the repository's ``../shared/data``.

The one resolver: loaders (:mod:`probgen.data`), tests and benchmarks all search these folders.
No machine paths: the shared folder is found relative to this checkout, and only when it exists.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "shared_data_dir", "data_dirs", "find_data"]


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/probgen`` or ``~/.cache/probgen`` (created on first download)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "probgen"


def shared_data_dir() -> Path | None:
    """``$PROBGEN_SHARED_DATA``, else ``../shared/data`` beside this checkout, if it exists."""
    explicit = os.environ.get("PROBGEN_SHARED_DATA")
    if explicit:
        return Path(explicit) if Path(explicit).is_dir() else None
    beside_checkout = Path(__file__).resolve().parents[3] / "shared" / "data"
    return beside_checkout if beside_checkout.is_dir() else None


def data_dirs(subfolder: str = "") -> list[Path]:
    """Folders searched for a data set, in order: $PROBGEN_DATA, the cache, the shared folder.

    With ``subfolder`` (e.g. ``"jsb_chorales"``), that folder inside each of them.
    """
    dirs = [Path(os.environ["PROBGEN_DATA"])] if os.environ.get("PROBGEN_DATA") else []
    dirs.append(cache_dir())
    shared = shared_data_dir()
    if shared is not None:
        dirs.append(shared)
    return [directory / subfolder for directory in dirs] if subfolder else dirs


def find_data(name: str) -> Path | None:
    """The first existing ``<dir>/<name>`` (a file or a non-empty folder) over :func:`data_dirs`,
    or None.

    ``name`` is a relative path inside those folders: absolute paths, ``..`` and NUL bytes are
    refused (a data set name must not reach outside the data folders).
    """
    if not isinstance(name, (str, os.PathLike)) or isinstance(name, bytes):
        raise TypeError(f"find_data takes a file name inside the data folders (a str), got "
                        f"{type(name).__name__}")
    text = os.fspath(name)
    if not text or "\x00" in text or Path(text).is_absolute() or ".." in Path(text).parts:
        raise ValueError(f"find_data takes a relative file name inside the data folders "
                         f"(e.g. 'mnist/train-images-idx3-ubyte.gz'), got {text!r}")
    for directory in data_dirs():
        candidate = directory / name
        if candidate.is_file() or (candidate.is_dir() and any(candidate.iterdir())):
            return candidate  # an empty folder (a download that never ran) hides nothing
    return None
