"""First contact (issue 29 item 12): short FitResult repr, progress bar only on a terminal, a
temporary cache for tests, the demo saying what it skipped, a readable density plot."""

from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

import probgen
from probgen.cli import main
from probgen.core.paths import cache_dir
from probgen.demo import hmm as hmm_demo
from probgen.demo.run import collect_entries
from probgen.plots import plot_density_2d


def _normal_program(x: torch.Tensor) -> None:
    loc = pyro.param("loc", torch.tensor(0.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(loc, 1.0), obs=x)


def test_fit_result_repr_is_one_short_line():
    x = torch.full((10,), 3.0)
    result = probgen.fit(_normal_program, x, num_steps=200, optim=0.1, seed=0, progress=False,
                         validation=x[:4], validate_every=50)
    text = repr(result)
    assert len(text.splitlines()) == 1 and len(text) < 200, text
    assert "num_steps=200" in text and f"final_loss={result.losses[-1]:.6g}" in text
    best = min(result.validation, key=lambda entry: entry[1])
    assert f"best_validation={best[1]:.4g} at step {best[0]}" in text and "seconds=" in text


def test_progress_bar_only_on_a_terminal_unless_forced(capsys):
    """progress=None (the default) shows no bar when stderr is not a TTY (pytest's capture is
    not); progress=True forces it."""
    x = torch.full((10,), 3.0)
    probgen.fit(_normal_program, x, num_steps=20, seed=0)
    assert "fit" not in capsys.readouterr().err
    probgen.fit(_normal_program, x, num_steps=20, seed=0, progress=True)
    assert "fit" in capsys.readouterr().err


def test_tests_cache_under_a_temporary_folder():
    assert not cache_dir().is_relative_to(Path.home() / ".cache")
    assert cache_dir().name == "probgen"


def test_demo_says_in_one_line_when_the_jsb_chorales_are_absent(monkeypatch, capsys):
    def offline(**_):
        raise OSError("network is unreachable")

    monkeypatch.setattr(hmm_demo, "find_jsb_file", lambda: None)
    monkeypatch.setattr(hmm_demo, "load_jsb_chorales", offline)
    skipped: list[str] = []
    entries = collect_entries(True, skipped)
    assert entries and not any(entry.dataset == "jsb_chorales" for entry in entries)
    assert len(skipped) == 1 and skipped[0].startswith("jsb_chorales (HMMs)")
    assert "network is unreachable" in skipped[0] and "$PROBGEN_DATA" in skipped[0]
    assert main(["demo", "--smoke", "--only", "jsb_chorales"]) == 2
    err = capsys.readouterr().err
    assert "cannot run here: jsb_chorales" in err and len(err.strip().splitlines()) == 1


def test_density_plot_has_a_colour_bar_labels_and_a_whole_title():
    data = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    title = "iris training data under the 3-component diagonal mixture (first two features)"
    figure = plot_density_2d(lambda p: dist.Normal(0.0, 1.0).log_prob(p).sum(-1), data,
                             title=title, xlabel="sepal length", ylabel="sepal width")
    main_axes, colour_bar = figure.axes
    assert colour_bar.get_ylabel() == "density"
    assert (main_axes.get_xlabel(), main_axes.get_ylabel()) == ("sepal length", "sepal width")
    assert main_axes.get_title().replace("\n", " ") == title
    figure.canvas.draw()  # the title lies inside the figure: not cut
    box = main_axes.title.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= figure.bbox.x1


def test_demo_flows_stop_before_overfitting_iris():
    """Trained 600 steps, MAF scored −13.09 ± 4.59 on iris's test split (train −0.57);
    early-stopped on a validation fifth of the training rows it scores above −6."""
    from probgen.demo.flow import demo_entries
    from probgen.demo.run import DATASETS

    data = DATASETS["iris"](False)
    maf = next(entry for entry in demo_entries(False) if "maf" in entry.name)
    assert maf.run(data, "unused").mean > -6.0
