"""Every example runs in smoke mode (an example that is not run is an example that is broken)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_in_smoke_mode(script, tmp_path):
    completed = subprocess.run([sys.executable, str(script), "--smoke"], cwd=tmp_path,
                               capture_output=True, text=True, timeout=300,
                               env={**__import__("os").environ, "MPLBACKEND": "Agg"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip(), "an example prints what it measured"
