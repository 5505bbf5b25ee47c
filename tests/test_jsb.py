"""JSB chorales loader: split sizes, piano-roll contents, checksum-verified download and cache."""

import io
import json

import pytest
import torch

from probgen.data import jsb
from probgen.data.jsb import LOWEST_PITCH, find_jsb_file, load_jsb_chorales, piano_rolls


@pytest.fixture
def jsb_file(shared_data):
    path = shared_data / "jsb_chorales" / "jsb-chorales-quarter.json"
    if not path.is_file():
        pytest.skip("the JSB chorales are not in the shared data folder")
    return path


def test_splits_have_the_published_sizes_and_lengths(jsb_file):
    data = load_jsb_chorales(root=jsb_file.parent, download=False)
    sizes = {name: len(data.split(name)) for name in ("train", "valid", "test")}
    assert sizes == {"train": 229, "valid": 76, "test": 77}
    assert [int(data.split(n).lengths.max()) for n in ("train", "valid", "test")] == [129, 144, 160]
    assert data.train.values.shape == (229, 129, 88) and data.train.values.dtype == torch.float64
    assert set(data.test.values.unique().tolist()) <= {0.0, 1.0}
    assert (data.train.values.sum(-1) <= 4).all()  # four voices at most


def test_piano_roll_matches_the_raw_json(jsb_file):
    raw = json.loads(jsb_file.read_text())
    data = load_jsb_chorales(root=jsb_file.parent, download=False)
    for index in (0, 100, 228):
        chorale = raw["train"][index]
        roll = data.train.values[index]
        assert int(data.train.lengths[index]) == len(chorale)
        for t, notes in enumerate(chorale):
            keys = sorted(int(p) - LOWEST_PITCH for p in notes)
            assert torch.nonzero(roll[t]).flatten().tolist() == keys
        assert (roll[len(chorale):] == 0).all()


def test_piano_rolls_reject_out_of_range_pitches():
    assert piano_rolls([[[21, 108]]]).values[0, 0, [0, 87]].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="outside MIDI 21..108"):
        piano_rolls([[[20]]])


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_checks_the_checksum_and_caches(jsb_file, tmp_path, monkeypatch):
    payload = jsb_file.read_bytes()
    calls = []

    def fake_urlopen(url, timeout):
        calls.append(url)
        return _FakeResponse(payload)

    monkeypatch.setattr(jsb.urllib.request, "urlopen", fake_urlopen)
    cache = tmp_path / "cache"
    data = load_jsb_chorales(root=cache)
    assert len(calls) == 1 and calls[0].endswith("jsb-chorales-quarter.json")
    assert (cache / "jsb-chorales-quarter.json").read_bytes() == payload
    assert len(data.train) == 229
    load_jsb_chorales(root=cache)  # cached: no second download
    assert len(calls) == 1
    assert find_jsb_file(root=cache) == cache / "jsb-chorales-quarter.json"


def test_corrupt_download_or_local_copy_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(jsb.urllib.request, "urlopen",
                        lambda url, timeout: _FakeResponse(b'{"train": []}'))
    with pytest.raises(OSError, match="sha256"):
        load_jsb_chorales(root=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written is left behind
    (tmp_path / "jsb-chorales-quarter.json").write_text('{"train": []}')
    with pytest.raises(ValueError, match="does not match the published sha256"):
        load_jsb_chorales(root=tmp_path)


def test_missing_file_without_download_names_the_places_searched(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_jsb_chorales(root=tmp_path, download=False)
    with pytest.raises(ValueError, match="resolution must be one of"):
        load_jsb_chorales("32nd", root=tmp_path)


def test_demo_entries_fit_and_score_a_smoke_subset(jsb_file):
    from probgen.demo.hmm import demo_entries

    entries = demo_entries(smoke=True)
    assert [e.name for e in entries] == ["hmm-4", "hmm-16"]
    data = entries[0].load(True)
    result = entries[0].run(data, "unused")
    assert result.kind == "exact" and result.num_examples == 20
    assert -12.0 < result.settings["log_likelihood_per_step"] < -7.0
