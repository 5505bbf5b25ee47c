"""MNIST loaders: IDX parsing, checksum, cache and mirror fallback (tiny files), real files if present."""

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from probgen.data import mnist
from probgen.data.mnist import (
    DynamicBinarizer,
    dynamic_binarize,
    load_binarized_mnist,
    load_mnist,
    read_idx,
)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def tiny_split(n: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


@pytest.fixture
def fake_mnist(monkeypatch, isolated_data_dirs):
    """Tiny IDX files served by a fake downloader; MNIST_FILES point at their MD5s."""
    images, labels = tiny_split()
    contents = {"t10k-images-idx3-ubyte.gz": idx_bytes(images),
                "t10k-labels-idx1-ubyte.gz": idx_bytes(labels)}
    files = dict(mnist.MNIST_FILES)
    for key, (filename, _) in mnist.MNIST_FILES.items():
        if filename in contents:
            files[key] = (filename, hashlib.md5(contents[filename]).hexdigest())
    monkeypatch.setattr(mnist, "MNIST_FILES", files)
    calls: list[str] = []

    def downloader(url: str, destination: Path) -> None:
        calls.append(url)
        destination.write_bytes(gzip.compress(contents[url.rsplit("/", 1)[1]]))

    return images, labels, contents, downloader, calls


def test_read_idx_roundtrip_plain_and_gzip(tmp_path):
    images, labels = tiny_split()
    (tmp_path / "a").write_bytes(idx_bytes(images))
    (tmp_path / "b.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "b.gz"), labels)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(idx_bytes(images)[:-3])
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(b"\x01\x02\x08\x01")


def test_download_then_cache_hit(tmp_path, fake_mnist):
    images, labels, _, downloader, calls = fake_mnist
    first = load_mnist("test", cache_dir=tmp_path, downloader=downloader)
    assert len(calls) == 2 and calls[0].startswith(mnist.MNIST_MIRRORS[0])
    assert torch.equal(first.images, torch.from_numpy(images))
    assert torch.equal(first.labels, torch.from_numpy(labels.astype(np.int64)))
    assert first.flat().shape == (5, 784) and float(first.flat().max()) <= 1.0
    second = load_mnist("test", cache_dir=tmp_path, downloader=downloader)
    assert len(calls) == 2  # served from the cache
    assert torch.equal(second.images, first.images)
    assert not list(tmp_path.glob("*.part"))


def test_falls_back_to_the_next_mirror(tmp_path, fake_mnist):
    *_, downloader, _ = fake_mnist
    calls = []

    def flaky(url: str, destination: Path) -> None:
        calls.append(url)
        if url.startswith(mnist.MNIST_MIRRORS[0]):
            raise OSError("mirror down")
        downloader(url, destination)

    load_mnist("test", cache_dir=tmp_path, downloader=flaky)
    assert [u.startswith(mnist.MNIST_MIRRORS[1]) for u in calls] == [False, True, False, True]


def test_checksum_mismatch_is_an_error_and_leaves_nothing(tmp_path, fake_mnist):
    *_, contents, _, _ = fake_mnist
    other_images, _ = tiny_split(seed=1)

    def wrong(url: str, destination: Path) -> None:
        destination.write_bytes(gzip.compress(idx_bytes(other_images)))

    with pytest.raises(ValueError, match="MD5 of the decompressed file"):
        load_mnist("test", cache_dir=tmp_path, downloader=wrong)
    assert not list(tmp_path.iterdir())


def test_local_path_verify_and_missing(tmp_path, fake_mnist, monkeypatch):
    images, labels, contents, _, _ = fake_mnist
    for name, content in contents.items():  # uncompressed copies are accepted too
        (tmp_path / name.removesuffix(".gz")).write_bytes(content)
    assert torch.equal(load_mnist("test", path=tmp_path).images, torch.from_numpy(images))
    modified = idx_bytes(np.zeros((5, 28, 28), np.uint8))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(modified)
    with pytest.raises(ValueError, match="failed its checksum"):
        load_mnist("test", path=tmp_path)
    assert load_mnist("test", path=tmp_path, verify=False).images.sum() == 0
    with pytest.raises(FileNotFoundError, match="train-images"):
        load_mnist("train", path=tmp_path)
    with pytest.raises(FileNotFoundError, match="download=False"):
        load_mnist("test", cache_dir=tmp_path / "empty", download=False)
    with pytest.raises(ValueError, match="split"):
        load_mnist("valid")
    root = tmp_path / "root"
    (root / "mnist").mkdir(parents=True)
    for name, content in contents.items():
        (root / "mnist" / name).write_bytes(gzip.compress(content))
    monkeypatch.setenv("PROBGEN_DATA", str(root))
    assert torch.equal(load_mnist("test", download=False).images, torch.from_numpy(images))


def test_binarized_download_checksum_and_npy_cache(tmp_path, monkeypatch, isolated_data_dirs):
    rng = np.random.default_rng(0)
    array = (rng.random((4, 784)) < 0.2).astype(np.uint8)
    monkeypatch.setitem(mnist.BINARIZED_SIZES, "valid", 4)
    monkeypatch.setitem(mnist.BINARIZED_MD5, "valid", hashlib.md5(array.tobytes()).hexdigest())
    calls = []

    def downloader(url: str, destination: Path) -> None:
        calls.append(url)
        destination.write_text("\n".join(" ".join(map(str, row)) for row in array) + "\n")

    loaded = load_binarized_mnist("valid", cache_dir=tmp_path, downloader=downloader)
    assert calls == [mnist.BINARIZED_URL.format(split="valid")]
    assert torch.equal(loaded, torch.from_numpy(array))
    assert torch.equal(load_binarized_mnist("valid", cache_dir=tmp_path, downloader=downloader),
                       loaded) and len(calls) == 1  # the parsed .npy cache
    def all_zeros(url: str, destination: Path) -> None:
        destination.write_text(("0 " * 784 + "\n") * 4)

    with pytest.raises(ValueError, match="MD5 of the array"):
        load_binarized_mnist("valid", cache_dir=tmp_path / "other", downloader=all_zeros)
    assert not list((tmp_path / "other").iterdir())
    (tmp_path / "text").mkdir()
    downloader("", tmp_path / "text" / "binarized_mnist_valid.amat")  # a local .amat file
    assert torch.equal(load_binarized_mnist("valid", path=tmp_path / "text"), loaded)
    np.savez(tmp_path / "binarized_mnist.npz", valid=array)
    assert torch.equal(load_binarized_mnist("valid", path=tmp_path), loaded)
    with pytest.raises(ValueError, match="no array 'test'"):
        load_binarized_mnist("test", path=tmp_path)


def test_dynamic_binarization_is_seeded_fresh_and_unbiased():
    intensities = torch.rand(200, 784, generator=torch.Generator().manual_seed(0))
    first, second = DynamicBinarizer(seed=3), DynamicBinarizer(seed=3)
    a, b = first(intensities), first(intensities)
    assert torch.equal(a, second(intensities))  # same seed, same sequence
    assert not torch.equal(a, b)  # a fresh draw per call
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    # E[x] = intensity: the mean difference over 156,800 pixels is within 5 standard errors
    diff = (a - intensities).mean()
    stderr = (intensities * (1 - intensities)).mean().sqrt() / intensities.numel() ** 0.5
    assert abs(float(diff)) < 5 * float(stderr)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        dynamic_binarize(intensities * 255)


def test_real_mnist_checksums_and_counts(shared_data):
    if not (shared_data / "mnist").is_dir():
        pytest.skip("shared MNIST absent")
    test = load_mnist("test", path=shared_data / "mnist")  # verifies the published MD5s
    assert test.images.shape == (10000, 28, 28) and test.images.dtype == torch.uint8
    assert torch.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028,
                                                    974, 1009]


@pytest.mark.parametrize("split,size", [
    ("test", 10000),
    pytest.param("valid", 10000, marks=pytest.mark.slow),
    pytest.param("train", 50000, marks=pytest.mark.slow),
])
def test_real_binarized_mnist_checksums(shared_data, split, size):
    if not (shared_data / "binarized_mnist").is_dir():
        pytest.skip("shared binarized MNIST absent")
    array = load_binarized_mnist(split, path=shared_data / "binarized_mnist")  # MD5 checked
    assert array.shape == (size, 784) and set(array.unique().tolist()) == {0, 1}


def test_data_dirs_order_and_no_shared_folder_when_absent(tmp_path, monkeypatch):
    from probgen.core import paths

    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setenv("PROBGEN_DATA", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PROBGEN_SHARED_DATA", str(shared))
    assert paths.data_dirs("mnist") == [tmp_path / "mine" / "mnist",
                                        tmp_path / "cache" / "probgen" / "mnist", shared / "mnist"]
    monkeypatch.setenv("PROBGEN_SHARED_DATA", str(tmp_path / "absent"))
    assert paths.shared_data_dir() is None and len(paths.data_dirs()) == 2
    (tmp_path / "cache" / "probgen" / "x.npz").parent.mkdir(parents=True)
    (tmp_path / "cache" / "probgen" / "x.npz").write_bytes(b"")
    assert paths.find_data("x.npz") == tmp_path / "cache" / "probgen" / "x.npz"


def test_an_empty_cache_folder_does_not_hide_the_shared_data(tmp_path, monkeypatch):
    """A download that never ran leaves an empty folder: the search goes on past it."""
    from probgen.core import paths

    shared = tmp_path / "shared"
    (shared / "mnist").mkdir(parents=True)
    (shared / "mnist" / "train.npz").write_bytes(b"x")
    monkeypatch.delenv("PROBGEN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PROBGEN_SHARED_DATA", str(shared))
    (tmp_path / "cache" / "probgen" / "mnist").mkdir(parents=True)
    assert paths.find_data("mnist") == shared / "mnist"
    (tmp_path / "cache" / "probgen" / "mnist" / "train.npz").write_bytes(b"y")
    assert paths.find_data("mnist") == tmp_path / "cache" / "probgen" / "mnist"
