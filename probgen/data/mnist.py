"""MNIST and statically binarized MNIST: local files, or download + MD5 check + cache."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from probgen.core import paths
from probgen.core.validate import check_regular_file, check_seed

__all__ = [
    "MNIST",
    "DynamicBinarizer",
    "dynamic_binarize",
    "load_binarized_mnist",
    "load_mnist",
    "read_idx",
]

# Decompressed-file MD5s (LeCun et al.); the .gz bytes differ between mirrors, the contents do not.
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train-images": ("train-images-idx3-ubyte.gz", "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels": ("train-labels-idx1-ubyte.gz", "a25bea736e30d166cdddb491f175f624"),
    "test-images": ("t10k-images-idx3-ubyte.gz", "2646ac647ad5339dbf082846283269ea"),
    "test-labels": ("t10k-labels-idx1-ubyte.gz", "27ae3e4e09519cfbb04c329615203637"),
}
# The mirrors torchvision uses, in its order.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# Larochelle & Murray (2011) binarization, as fetched by the IWAE code (Burda et al., 2016).
BINARIZED_URL = ("http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
                 "binarized_mnist_{split}.amat")
# MD5 of np.ascontiguousarray(X, dtype=np.uint8).tobytes() for each (n, 784) split.
BINARIZED_MD5: dict[str, str] = {
    "train": "8d4f0427d6c2572b5e9994e08bad66de",
    "valid": "3e33becd40c694040e5e6c812e2f4b50",
    "test": "fc34623e13bd64fed2f8b61365198339",
}
BINARIZED_SIZES = {"train": 50000, "valid": 10000, "test": 10000}

Downloader = Callable[[str, Path], None]


@dataclass(frozen=True)
class MNIST:
    """One MNIST split: ``images`` uint8 ``(n, 28, 28)`` in 0..255 and ``labels`` int64 ``(n,)``."""

    images: torch.Tensor
    labels: torch.Tensor
    split: str

    def flat(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Images as ``(n, 784)`` intensities in [0, 1] (the input to :func:`dynamic_binarize`)."""
        return self.images.reshape(len(self.images), -1).to(dtype) / 255.0


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/probgen`` or ``~/.cache/probgen`` (:func:`probgen.core.paths.cache_dir`)."""
    return paths.cache_dir()


def read_idx(source: str | Path | bytes) -> np.ndarray:
    """Parse an IDX file (LeCun's format, gzip-compressed or not) into a numpy array."""
    if isinstance(source, (str, Path)):
        raw = check_regular_file("IDX file", source, what="an MNIST IDX file").read_bytes()
    else:
        raw = bytes(source)
    raw = _decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError("not an IDX file: the first two bytes must be zero")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise ValueError(f"unknown IDX element type 0x{raw[2]:02x}")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"IDX file holds {len(raw)} bytes, fewer than its header of {ndim} "
                         "dimensions needs; the file is truncated or corrupt, delete it and retry")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(dtypes[raw[2]])
    expected = 4 + 4 * ndim + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"IDX file holds {len(raw)} bytes but its header (shape {shape}) needs "
                         f"{expected}; the file is truncated or corrupt, delete it and retry")
    array = np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _decompress(raw: bytes) -> bytes:
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _urllib_download(url: str, destination: Path) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "probgen"})
    with urllib.request.urlopen(request, timeout=60) as response, open(destination, "wb") as out:
        shutil.copyfileobj(response, out)


def _download_verified(urls: list[str], destination: Path, check: Callable[[bytes], str | None],
                       downloader: Downloader) -> None:
    """Fetch the first URL whose bytes pass ``check`` (None: good; else a reason), atomically."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        handle, temporary = tempfile.mkstemp(dir=destination.parent, suffix=".part")
        os.close(handle)
        try:
            downloader(url, Path(temporary))
            problem = check(Path(temporary).read_bytes())
            if problem is None:
                os.replace(temporary, destination)
                return
            failures.append(f"{url}: {problem}")
        except OSError as error:
            failures.append(f"{url}: {error}")
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
    raise ValueError(f"could not get {destination.name}: " + "; ".join(failures) +
                     ". Download it by hand and pass path=<folder> (or set PROBGEN_DATA)")


def _search_folders(path: str | Path | None, cache: Path, subfolder: str) -> list[Path]:
    """``path`` alone if given; else $PROBGEN_DATA, the cache and the shared data folder."""
    if path is not None:
        return [Path(path)]
    default_cache = paths.cache_dir() / subfolder
    return [cache if folder == default_cache else folder for folder in paths.data_dirs(subfolder)]


def _find(folders: list[Path], names: list[str]) -> Path | None:
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def _mnist_file(key: str, *, path: str | Path | None, cache_dir: str | Path | None,
                download: bool, downloader: Downloader | None, verify: bool) -> np.ndarray:
    filename, md5 = MNIST_FILES[key]
    names = [filename, filename[: -len(".gz")]]

    def check(raw: bytes) -> str | None:
        try:
            content = _decompress(raw)
        except (OSError, EOFError) as error:
            return f"not a readable gzip file ({error})"
        found = _md5(content)
        return None if found == md5 else f"MD5 of the decompressed file is {found}, expected {md5}"

    cache = Path(cache_dir) if cache_dir is not None else paths.cache_dir() / "mnist"
    local = _find(_search_folders(path, cache, "mnist"), names)
    if local is None and path is not None:
        raise FileNotFoundError(f"{filename} (or {names[1]}) is not in {path}; pass the folder "
                                "holding the four MNIST IDX files")
    if local is None:
        if not download:
            raise FileNotFoundError(f"{filename} is not cached in {cache} and download=False; pass "
                                    "path=<folder with the IDX files> or set PROBGEN_DATA")
        local = cache / filename
        _download_verified([mirror + filename for mirror in MNIST_MIRRORS], local, check,
                           downloader or _urllib_download)
        verify = False  # checked on download
    content = _decompress(local.read_bytes())
    if verify:
        problem = check(content)
        if problem is not None:
            raise ValueError(f"{local} failed its checksum ({problem}); delete it to download "
                             "it again, or pass verify=False for a modified copy")
    return read_idx(content)


def load_mnist(split: str = "train", *, path: str | Path | None = None,
               cache_dir: str | Path | None = None, download: bool = True,
               downloader: Downloader | None = None, verify: bool = True) -> MNIST:
    """Load MNIST (60,000 train / 10,000 test, LeCun et al. 1998) as uint8 images and labels.

    Files are looked up in ``path`` (a folder with the IDX files, .gz or not), else in
    ``$PROBGEN_DATA/mnist``, the cache (``~/.cache/probgen/mnist``) and the shared data folder
    (:func:`probgen.core.paths.data_dirs`), else downloaded from the mirrors torchvision uses;
    the MD5 of the decompressed bytes is checked.

    Arguments:
        split: ``"train"`` or ``"test"``.
        downloader: ``downloader(url, destination)`` (default: urllib); for proxies or tests.
        verify: check the MD5 of local and cached files too (False: accept modified copies).

    Example:
        >>> train = load_mnist("train")  # doctest: +SKIP
        >>> x = dynamic_binarize(train.flat(), torch.Generator().manual_seed(0))  # doctest: +SKIP
    """
    if split not in ("train", "test"):
        raise ValueError(f"MNIST split must be 'train' or 'test', got {split!r}")
    options = dict(path=path, cache_dir=cache_dir, download=download, downloader=downloader,
                   verify=verify)
    images = _mnist_file(f"{split}-images", **options)
    labels = _mnist_file(f"{split}-labels", **options)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"MNIST {split}: images {images.shape} and labels {labels.shape} do not "
                         "match; the files are not a matching pair")
    return MNIST(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)), split)


def _parse_amat(raw: bytes) -> np.ndarray:
    rows = raw.decode().split("\n")
    return np.array([row.split() for row in rows if row.strip()], dtype=np.uint8)


def load_binarized_mnist(split: str = "train", *, path: str | Path | None = None,
                         cache_dir: str | Path | None = None, download: bool = True,
                         downloader: Downloader | None = None, verify: bool = True) -> torch.Tensor:
    """Statically binarized MNIST (Larochelle & Murray, 2011): uint8 ``(n, 784)`` in {0, 1}.

    The standard 50,000 / 10,000 / 10,000 split of VAE and IWAE likelihood tables. Looked up in
    ``path`` (``binarized_mnist.npz`` with arrays train/valid/test, or the ``.amat`` files), else
    ``$PROBGEN_DATA/binarized_mnist``, the cache and the shared data folder, else downloaded (the
    files the IWAE code fetches); the MD5 of the array bytes is checked.
    """
    if split not in BINARIZED_MD5:
        raise ValueError(f"binarized MNIST split must be one of {sorted(BINARIZED_MD5)}, got {split!r}")
    md5 = BINARIZED_MD5[split]

    def problem_with(array: np.ndarray) -> str | None:
        if array.shape != (BINARIZED_SIZES[split], 784):
            return f"shape {array.shape}, expected {(BINARIZED_SIZES[split], 784)}"
        found = _md5(np.ascontiguousarray(array, dtype=np.uint8).tobytes())
        return None if found == md5 else f"MD5 of the array is {found}, expected {md5}"

    amat = f"binarized_mnist_{split}.amat"
    cache = Path(cache_dir) if cache_dir is not None else paths.cache_dir() / "binarized_mnist"
    local = _find(_search_folders(path, cache, "binarized_mnist"), ["binarized_mnist.npz", amat])
    if local is None and path is not None:
        raise FileNotFoundError(f"neither binarized_mnist.npz nor {amat} is in {path}")
    cached = cache / f"binarized_mnist_{split}.npy"
    if local is not None:
        if local.suffix == ".npz":
            with np.load(local) as archive:
                if split not in archive:
                    raise ValueError(f"{local} has no array {split!r} (it has {archive.files})")
                array = archive[split]
        else:
            array = _parse_amat(local.read_bytes())
    elif cached.is_file():
        array = np.load(cached)
    else:
        if not download:
            raise FileNotFoundError(f"binarized MNIST {split} is not cached in {cache} and "
                                    "download=False; pass path=<folder> or set PROBGEN_DATA")
        downloaded = cache / amat
        _download_verified([BINARIZED_URL.format(split=split)], downloaded,
                           lambda raw: problem_with(_parse_amat(raw)),
                           downloader or _urllib_download)
        array = _parse_amat(downloaded.read_bytes())
        np.save(cached, array)  # parsing text is slow; later loads read this
        downloaded.unlink()
        verify = False  # checked on download
    if verify:
        problem = problem_with(array)
        if problem is not None:
            raise ValueError(f"binarized MNIST {split} from {local or cached} failed its check "
                             f"({problem}); delete it to download again, or pass verify=False")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.uint8))


def dynamic_binarize(intensities: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""x ~ Bernoulli(intensities), a fresh draw per call (dynamic binarization, Salakhutdinov &
    Murray, 2008; used by Burda et al., 2016). ``intensities`` in [0, 1]; returns the same dtype."""
    if intensities.is_floating_point() is False or intensities.min() < 0 or intensities.max() > 1:
        raise ValueError("dynamic_binarize needs float intensities in [0, 1] (e.g. MNIST.flat())")
    return torch.bernoulli(intensities, generator=generator)


class DynamicBinarizer:
    """A seeded transform: each call draws a new binarization (call it per batch or per epoch).

    Example:
        >>> binarize = DynamicBinarizer(seed=0)
        >>> x = binarize(torch.full((2, 3), 0.5))
        >>> bool(((x == 0) | (x == 1)).all())
        True
    """

    def __init__(self, seed: int = 0) -> None:
        checked = check_seed(seed)
        if checked is None:
            raise ValueError("seed must be an integer in 0 .. 2**32 - 1, got None")
        self.seed = checked
        self._generators: dict[torch.device, torch.Generator] = {}

    def __call__(self, intensities: torch.Tensor) -> torch.Tensor:
        device = intensities.device
        if device not in self._generators:
            self._generators[device] = torch.Generator(device).manual_seed(self.seed)
        return dynamic_binarize(intensities, self._generators[device])
