"""Smoke-run the diffusion examples (each trains for a few steps and writes its figure)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("script", ["diffusion.py", "latent_diffusion.py"])
def test_example_smoke(script, tmp_path):
    out = tmp_path / "samples.png"
    run = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--smoke", "--out",
                          str(out)], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert out.exists() and out.stat().st_size > 0
    assert "nats" in run.stdout
