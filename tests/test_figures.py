"""docs/figures.py --smoke draws every figure the docs show (seconds-long fits), each small."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "docs" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(600)
def test_smoke_run_draws_every_figure(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    figures = load_script()
    captions = figures.main(["--smoke", "--out", str(tmp_path)])
    expected = {name for names in figures.FIGURES.values() for name in names}
    drawn = {path.stem for path in tmp_path.glob("*.png")}
    assert drawn == expected, (f"missing: {sorted(expected - drawn)}, "
                               f"not listed in FIGURES: {sorted(drawn - expected)}")
    assert set(captions) == expected
    assert json.loads((tmp_path / "captions.json").read_text()) == captions
    for path in tmp_path.glob("*.png"):
        assert 0 < path.stat().st_size <= figures.MAX_BYTES, path.name
    assert "lower bound on the annealed model" in captions["ebm_ais_raise"]


def test_the_committed_figures_are_the_scripts():
    """docs/img holds what docs/figures.py draws, with its captions (beside the pictures other
    scripts draw: benchmarks/report.py's charts, examples' own)."""
    figures = load_script()
    expected = {name for names in figures.FIGURES.values() for name in names}
    committed = {p.stem for p in (ROOT / "docs" / "img").glob("*.png")}
    assert expected <= committed, f"not committed: {sorted(expected - committed)}"
    assert set(json.loads((ROOT / "docs" / "img" / "captions.json").read_text())) == expected
