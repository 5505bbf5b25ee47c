"""compare: ranking, paired differences and their stderr, refusing incomparable spaces."""

import math

import pytest
import torch

import probgen
from probgen import LogLikelihood


def ll(values, space="continuous", kind="exact", **kw):
    return LogLikelihood(torch.tensor(values, dtype=torch.float64), kind=kind,
                         estimator=kw.pop("estimator", "exact"), num_dims=2, data_space=space, **kw)


def test_paired_differences_and_their_stderr():
    a = ll([-1.0, -2.0, -3.0, -4.0])
    b = ll([-1.5, -2.0, -3.5, -4.2])
    table = probgen.compare({"b": b, "a": a})
    assert [r.name for r in table.rows] == ["a", "b"]
    diff = torch.tensor([0.5, 0.0, 0.5, 0.2], dtype=torch.float64)
    assert table.rows[1].diff_to_best == pytest.approx(diff.mean().item())
    assert table.rows[1].diff_stderr == pytest.approx(diff.std().item() / 2)
    # paired stderr is far smaller than the unpaired one: the per-example spread cancels
    assert table.rows[1].diff_stderr < math.hypot(a.stderr, b.stderr) / 5
    assert "Δ vs best" in str(table)


def test_refuses_discrete_against_continuous():
    with pytest.raises(ValueError, match="probability mass against a probability density"):
        probgen.compare({"vae": ll([-80.0], "discrete", "lower_bound"),
                         "flow": ll([-900.0], "continuous")})


def test_dequantized_ranks_against_discrete_with_a_note():
    table = probgen.compare({"vae": ll([-80.0, -82.0], "discrete", "lower_bound", estimator="iwae"),
                             "flow": ll([-85.0, -86.0], "dequantized", "lower_bound")})
    assert table.data_space == "discrete"
    assert any("dequantized" in note for note in table.notes)


def test_refuses_different_data():
    with pytest.raises(ValueError, match="different numbers of examples"):
        probgen.compare({"a": ll([-1.0]), "b": ll([-1.0, -2.0])})
    with pytest.raises(ValueError, match="different data"):
        probgen.compare({"a": ll([-1.0], data_id="x"), "b": ll([-1.0], data_id="y")})


def test_kind_note_and_estimator_error_in_quadrature():
    a = ll([-1.0, -2.0])
    b = ll([-1.0, -2.5], kind="estimate", estimator="ais", estimator_stderr=0.3)
    table = probgen.compare({"a": a, "b": b})
    assert any("lower bounds" in n for n in table.notes)
    assert table.rows[1].diff_stderr == pytest.approx(math.hypot(0.25, 0.3))


def test_comparison_plot_is_written(tmp_path):
    table = probgen.compare({"a": ll([-1.0, -2.0]), "b": ll([-1.2, -2.1], kind="lower_bound")})
    path = tmp_path / "chart.png"
    table.plot(str(path))
    assert path.stat().st_size > 1000


def test_comparison_plot_shows_the_paired_difference(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from probgen.plots import plot_comparison

    base = torch.randn(200, dtype=torch.float64) * 5
    a = LogLikelihood(base, kind="exact", estimator="exact", num_dims=1, data_space="continuous")
    b = LogLikelihood(base - 0.1, kind="exact", estimator="exact", num_dims=1,
                      data_space="continuous")
    table = probgen.compare({"a": a, "b": b})
    figure = plot_comparison(table, str(tmp_path / "chart.png"))
    paired = figure.axes[1]
    assert "paired" in paired.get_xlabel() and (tmp_path / "chart.png").exists()
    assert table.rows[1].diff_stderr < 0.01 < 2 * float(a.stderr)  # unpaired bars would overlap


def test_infinite_log_likelihoods_are_not_ranked():
    finite = LogLikelihood(torch.tensor([-1.0, -2.0]), kind="exact", estimator="exact",
                           num_dims=1, data_space="continuous")
    impossible = LogLikelihood(torch.tensor([-1.0, -float("inf")]), kind="exact",
                               estimator="exact", num_dims=1, data_space="continuous")
    with pytest.raises(ValueError, match=r"results\['far'\] gives 1 example.*row 1"):
        probgen.compare({"ok": finite, "far": impossible})
    with pytest.raises(ValueError, match=r"\+inf.*row 0"):
        LogLikelihood(torch.tensor([float("inf")]), kind="exact", estimator="exact", num_dims=1,
                      data_space="continuous")
