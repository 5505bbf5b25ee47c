"""JSB chorales as 88-key binary piano rolls (Boulanger-Lewandowski et al., 2012 split)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from probgen.core.paths import cache_dir, data_dirs
from probgen.data.sequences import PaddedSequences, pad_sequences

__all__ = ["JSBChorales", "load_jsb_chorales", "find_jsb_file", "piano_rolls", "LOWEST_PITCH",
           "NUM_KEYS", "SPLITS"]

LOWEST_PITCH = 21  # MIDI A0: key 0 of the 88-key roll (Pyro's convention: MIDI 21..108)
NUM_KEYS = 88
SPLITS = ("train", "valid", "test")
_SOURCE = ("https://raw.githubusercontent.com/czhuang/JSB-Chorales-dataset/"
           "9a7f733ddb4ed91f48da64ac7f0f621c34aadd4d/{name}")
_SHA256 = {  # of the JSON files as published in czhuang/JSB-Chorales-dataset
    "quarter": "2db9329f1881a1d3f49703ec556bf1d6f84b4f6c1d702c156536e93cf31e1c91",
    "8th": "88fb80b22829a815e8105da538d94ae803773158507e2145938351f35142390a",
    "16th": "8730aca7b64e7d29493733d1cf19fad4a5b351d8f1845e57dac27728104fd39f",
}


@dataclass(frozen=True)
class JSBChorales:
    """The three splits, each a padded ``(chorales, time, 88)`` float piano roll with lengths.

    Fields:
        train, valid, test: :class:`PaddedSequences` (229, 76 and 77 chorales at quarter notes).
        resolution: ``"quarter"``, ``"8th"`` or ``"16th"`` notes per time step.
        path: the JSON file read.
    """

    train: PaddedSequences
    valid: PaddedSequences
    test: PaddedSequences
    resolution: str
    path: Path

    def split(self, name: str) -> PaddedSequences:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {SPLITS}")
        return getattr(self, name)


def _filename(resolution: str) -> str:
    if resolution not in _SHA256:
        raise ValueError(f"resolution must be one of {tuple(_SHA256)}, got {resolution!r}")
    return f"jsb-chorales-{resolution}.json"


def _candidate_dirs(root: str | os.PathLike | None) -> list[Path]:
    if root is not None:
        return [Path(root), Path(root) / "jsb_chorales"]
    return data_dirs("jsb_chorales")  # $PROBGEN_DATA, the cache, the shared data folder


def find_jsb_file(resolution: str = "quarter", *, root: str | os.PathLike | None = None) -> Path | None:
    """The local JSON file, if any: ``root``, else :func:`probgen.core.paths.data_dirs`."""
    name = _filename(resolution)
    for directory in _candidate_dirs(root):
        if (directory / name).is_file():
            return directory / name
    return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _download(resolution: str, directory: Path, timeout: float) -> Path:
    name = _filename(resolution)
    directory.mkdir(parents=True, exist_ok=True)
    url = _SOURCE.format(name=name)
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (fixed https URL)
        payload = response.read()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != _SHA256[resolution]:
        raise OSError(f"{url} has sha256 {digest}, expected {_SHA256[resolution]}; not using it")
    handle, tmp = tempfile.mkstemp(dir=directory, suffix=".part")
    with os.fdopen(handle, "wb") as f:
        f.write(payload)
    os.replace(tmp, directory / name)  # atomic: a partial download is never read
    return directory / name


def load_jsb_chorales(
    resolution: str = "quarter",
    *,
    root: str | os.PathLike | None = None,
    download: bool = True,
    dtype: torch.dtype = torch.float64,
    timeout: float = 30.0,
) -> JSBChorales:
    """Load JSB chorales as padded 88-key piano rolls (key k sounds MIDI pitch 21 + k).

    Looks for ``jsb-chorales-<resolution>.json`` in ``root`` (or ``$PROBGEN_DATA/jsb_chorales``,
    ``~/.cache/probgen/jsb_chorales``, the shared data folder); otherwise downloads it from
    github.com/czhuang/JSB-Chorales-dataset, checks its sha256 and caches it (under ``root`` or
    the cache folder).

    Example:
        >>> data = load_jsb_chorales()  # doctest: +SKIP
        >>> data.train.values.shape     # doctest: +SKIP
        torch.Size([229, 129, 88])
    """
    path = find_jsb_file(resolution, root=root)
    if path is None:
        if not download:
            places = ", ".join(str(d) for d in _candidate_dirs(root))
            raise FileNotFoundError(f"no {_filename(resolution)} in {places}; pass download=True "
                                    "or root=<folder with the JSON file>")
        target = Path(root) if root is not None else cache_dir() / "jsb_chorales"
        path = _download(resolution, target, timeout)
    elif _sha256(path) != _SHA256[resolution]:
        raise ValueError(f"{path} does not match the published sha256 of {_filename(resolution)}; "
                         "delete it to download a fresh copy")
    with open(path) as f:
        raw = json.load(f)
    return JSBChorales(**{split: piano_rolls(raw[split], dtype=dtype) for split in SPLITS},
                       resolution=resolution, path=path)


def _is_pitch(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) or (
        isinstance(value, float) and value.is_integer())


def piano_rolls(chorales: list[list[list[int]]], *, dtype: torch.dtype = torch.float64) -> PaddedSequences:
    """Lists of sounding MIDI pitches per step -> padded ``(n, time, 88)`` 0/1 rolls."""
    rolls = []
    for i, chorale in enumerate(chorales):
        roll = torch.zeros(len(chorale), NUM_KEYS, dtype=dtype)
        steps = [t for t, notes in enumerate(chorale) for _ in notes]
        try:
            keys = [int(p) - LOWEST_PITCH for notes in chorale for p in notes]
        except (TypeError, ValueError):
            bad = next((p for notes in chorale for p in notes if not _is_pitch(p)), None)
            raise ValueError(f"chorale {i} has a pitch {bad!r}, not a MIDI note number; each "
                             "step lists the sounding pitches as integers") from None
        if keys and (min(keys) < 0 or max(keys) >= NUM_KEYS):
            raise ValueError(f"chorale {i} has a pitch outside MIDI {LOWEST_PITCH}..{LOWEST_PITCH + 87}")
        roll[steps, keys] = 1.0
        rolls.append(roll)
    return pad_sequences(rolls, dtype=dtype)
