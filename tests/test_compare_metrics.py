"""compare(metrics=...): sample-quality columns beside the likelihood rows, checked at the door."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import probgen
from probgen import LogLikelihood
from probgen.metrics import RBF, MetricResult, fid, mmd2, precision_recall, vendi


def ll(values):
    return LogLikelihood(torch.tensor(values, dtype=torch.float64), kind="exact",
                         estimator="exact", num_dims=2, data_space="continuous")


@pytest.fixture
def results():
    return {"worse": ll([-2.0, -3.0, -4.0]), "better": ll([-1.0, -2.0, -3.5])}


def test_metric_columns_sit_beside_each_likelihood_row(results):
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(100, 2, generator=generator)
    samples = {"better": torch.randn(120, 2, generator=generator),
               "worse": 0.3 * torch.randn(120, 2, generator=generator) + 1.0}
    kernel = RBF(1.0)  # one kernel for every model, so the MMD² column compares like with like
    metrics = {name: [*precision_recall(real, x), mmd2(real, x, kernel=kernel), vendi(x), fid(real, x)]
               for name, x in samples.items()}
    table = probgen.compare(results, metrics=metrics)

    assert [r.name for r in table.rows] == ["better", "worse"]  # ranked by likelihood only
    assert table.metric_names == ("precision", "recall", "mmd2", "vendi", "fid")
    for row in table.rows:
        assert row.metrics["fid"] is metrics[row.name][4]
    assert table.rows[0].metrics["fid"].value < table.rows[1].metrics["fid"].value
    text = str(table)
    header = text.splitlines()[0]
    for column in ("precision ↑", "recall ↑", "mmd2 ↓", "vendi ↑", "fid ↓"):
        assert column in header
    mmd_better = table.rows[0].metrics["mmd2"]
    assert mmd_better.formatted() in text.splitlines()[2] and "±" in mmd_better.formatted()
    assert not any("not directly comparable" in note for note in table.notes)

    saved = json.loads(table.to_json())
    assert saved["metric_names"] == list(table.metric_names)
    assert saved["rows"][0]["metrics"]["mmd2"]["stderr"] == pytest.approx(mmd_better.stderr)
    assert saved["rows"][1]["metrics"]["precision"]["settings"]["k"] == 3


def test_plain_numbers_and_models_left_out(results):
    results["third"] = ll([-5.0, -5.0, -5.0])
    table = probgen.compare(results, metrics={"worse": {"fid": 12.5, "precision": np.float32(0.5)},
                                              "better": {"precision": 0.75,
                                                         "fid": torch.tensor(3.25)}})
    assert table.metric_names == ("fid", "precision")  # the first model's order
    assert table.rows[0].metrics["fid"] == MetricResult("fid", 3.25)
    assert table.rows[2].name == "third" and table.rows[2].metrics == {}
    lines = str(table).splitlines()
    assert lines[0].split()[-2:] == ["fid", "precision"]  # no ↑/↓ known for plain numbers
    assert lines[4].split()[-2:] == ["-", "-"]
    assert "0.75" in lines[2] and "12.5" in lines[3]


def test_without_metrics_the_table_is_unchanged(results):
    table = probgen.compare(results)
    assert table.metric_names == () and all(r.metrics == {} for r in table.rows)
    saved = table.to_dict()
    assert "metric_names" not in saved and "metrics" not in saved["rows"][0]
    assert str(table) == str(probgen.compare(results, metrics={}))


def test_sequence_results_take_their_generated_names():
    table = probgen.compare([ll([-1.0, -2.0]), ll([-3.0, -3.0])],
                            metrics={"model 1": {"fid": 1.0}, "model 2": {"fid": 2.0}})
    assert [r.metrics["fid"].value for r in table.rows] == [1.0, 2.0]


def test_different_settings_add_a_note(results):
    a = MetricResult("mmd2", 0.1, 0.01, {"kernel": "rbf", "bandwidth": 1.0}, False)
    b = MetricResult("mmd2", 0.2, 0.01, {"kernel": "rbf", "bandwidth": 2.0}, False)
    table = probgen.compare(results, metrics={"worse": [a], "better": [b]})
    assert any("mmd2 was computed with different settings" in note for note in table.notes)


@pytest.mark.parametrize("metrics, error, match", [
    ({"better": {"fid": 1.0}, "typo": {"fid": 2.0}}, ValueError,
     "'typo' that are not among the compared results \\('worse', 'better'\\)"),
    ({"better": {"fid": 1.0, "precision": 0.5}, "worse": {"fid": 2.0}}, ValueError,
     "metrics\\['worse'\\] has different metrics from metrics\\['better'\\] \\(missing precision\\)"),
    ({"better": {"fid": 1.0}, "worse": {"fid": 2.0, "vendi": 3.0}}, ValueError, "extra vendi"),
    ({"better": {"fid": "low"}, "worse": {"fid": 2.0}}, TypeError,
     "metrics\\['better'\\]\\['fid'\\] is a str"),
    ({"better": {"fid": True}, "worse": {"fid": 2.0}}, TypeError, "is a bool"),
    ({"better": {"fid": float("nan")}, "worse": {"fid": 2.0}}, ValueError, "leave the model out"),
    ({"better": 3.0}, TypeError, "must be a dict \\{metric: value\\} or a list"),
    ({"better": [MetricResult("fid", 1.0), MetricResult("fid", 2.0)]}, ValueError,
     "lists fid more than once"),
    ([("better", {"fid": 1.0})], TypeError, "metrics must be a dict"),
])
def test_bad_metrics_are_refused_with_the_fix(results, metrics, error, match):
    with pytest.raises(error, match=match):
        probgen.compare(results, metrics=metrics)


def test_the_metrics_guide_runs(capsys):
    """docs/guide/metrics.md's snippet (a Bernoulli mixture on binarized digits) runs as shown."""
    guide = Path(__file__).resolve().parents[1] / "docs" / "guide" / "metrics.md"
    blocks = re.findall(r"```python\n(.*?)```", guide.read_text(), flags=re.S)
    assert len(blocks) == 1
    namespace: dict = {}
    exec(compile(blocks[0], f"{guide.name}[block 0]", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "precision ↑" in printed and "fid ↓" in printed
    assert 0.5 < namespace["precision"].value <= 1 and 0.5 < namespace["recall"].value <= 1
