"""Every example runs in smoke mode (an example that is not run is an example that is broken).

Each script runs in this process, as ``python examples/<name>.py --smoke`` would run it (``__main__``,
its own folder first on ``sys.path``, a fresh working directory), so the suite pays for torch's
import once rather than once per example. This file is the one place examples are run.
"""

import runpy
import sys
from pathlib import Path

import matplotlib
import pytest

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
EXAMPLES = sorted(p for p in EXAMPLES_DIR.glob("*.py") if not p.name.startswith("_"))
# What an example must print besides "something": the numbers it exists to show.
EXPECTED = {
    "rbm": ["AIS - exact", "estimate (ais"],
    "hmm": ["log-likelihood"],
    "mcmc_gmm": ["elpd_loo", "rank"],
    "mcmc_hmm": ["elpd_loo", "rank"],
    "diffusion": ["nats"],
    "latent_diffusion": ["nats"],
}


@pytest.fixture
def run_example(tmp_path, monkeypatch, capsys):
    """Run a script as ``__main__`` with ``--smoke`` in ``tmp_path``; return what it printed."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(EXAMPLES_DIR))

    def run(script: Path) -> str:
        monkeypatch.setattr(sys, "argv", [str(script), "--smoke"])
        try:
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit as stop:  # sys.exit(main()) at the end of a script
            assert stop.code in (None, 0), f"{script.name} exited with {stop.code}"
        finally:
            import matplotlib.pyplot as plt

            plt.close("all")
        return capsys.readouterr().out

    return run


@pytest.mark.timeout(300)
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_in_smoke_mode(script, run_example):
    out = run_example(script)
    assert out.strip(), "an example prints what it measured"
    for text in EXPECTED.get(script.stem, []):
        assert text in out, f"{script.name} did not print {text!r}:\n{out[-2000:]}"
