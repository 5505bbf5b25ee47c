"""LogLikelihood: stderr, bits/dim, concat, JSON round trip, validation of its fields."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from probgen import LogLikelihood


def make(values, **kw):
    defaults = dict(kind="exact", estimator="exact", num_dims=4, data_space="continuous")
    defaults.update(kw)
    return LogLikelihood(torch.tensor(values, dtype=torch.float64), **defaults)


def test_mean_stderr_bits_per_dim_formulas():
    ll = make([-1.0, -2.0, -6.0])
    assert ll.mean == pytest.approx(-3.0)
    sample_var = ((1.0 - 3) ** 2 + (2.0 - 3) ** 2 + (6.0 - 3) ** 2) / 2
    assert ll.stderr == pytest.approx(math.sqrt(sample_var / 3))
    assert ll.bits_per_dim == pytest.approx(3.0 / (4 * math.log(2)))
    assert ll.nll == pytest.approx(3.0)


def test_estimator_stderr_adds_in_quadrature():
    ll = make([-1.0, -3.0], estimator_stderr=0.5, kind="estimate", estimator="ais")
    assert ll.stderr == pytest.approx(math.sqrt(2.0 / 2 + 0.25))  # s² = 2, n = 2


def test_json_round_trip(tmp_path):
    ll = make([-1.0, -2.5], settings={"k": 50}, kind="lower_bound", estimator="iwae", data_id="ab")
    path = tmp_path / "ll.json"
    ll.to_json(str(path))
    back = LogLikelihood.from_json(str(path))
    assert back.to_dict() == ll.to_dict()


@pytest.mark.parametrize("field,value,match", [
    ("kind", "upper_bound", "kind"), ("data_space", "pixels", "data_space"),
    ("num_dims", 0, "num_dims"),
])
def test_bad_fields_are_refused(field, value, match):
    with pytest.raises(ValueError, match=match):
        make([-1.0], **{field: value})


def test_nan_and_empty_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        make([float("nan")])
    with pytest.raises(ValueError, match="at least one"):
        make([])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=40), st.integers(1, 39))
def test_concat_of_chunks_equals_whole(values, cut):
    cut = min(cut, len(values) - 1)
    whole = make(values)
    joined = LogLikelihood.concat([make(values[:cut]), make(values[cut:])])
    assert joined.mean == pytest.approx(whole.mean, abs=1e-9)
    assert joined.stderr == pytest.approx(whole.stderr, abs=1e-9)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=20), st.floats(-100, 100))
def test_shift_moves_mean_not_stderr(values, offset):
    ll = make(values)
    moved = ll.shifted(offset)
    assert moved.mean == pytest.approx(ll.mean + offset, abs=1e-6)
    assert moved.stderr == pytest.approx(ll.stderr, abs=1e-6)


def test_fingerprint_survives_a_cast_to_the_model_dtype():
    from probgen.core.result import data_fingerprint

    x = torch.randn(5, 3, dtype=torch.float64)
    assert data_fingerprint(x) == data_fingerprint(x.float()) == data_fingerprint(x.float().double())
    assert data_fingerprint(x) != data_fingerprint(x + 1e-3)
