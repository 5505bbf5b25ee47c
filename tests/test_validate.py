"""The data boundary: each bad input gets a ValueError/TypeError that names problem and fix."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from probgen.data import as_batch, load_dataset, validate_data


@pytest.mark.parametrize("data,kwargs,error,match", [
    (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), {}, ValueError, "NaN in 1 row.*row 0"),
    (torch.tensor([[1.0, 2.0], [float("inf"), 1.0]]), {}, ValueError, "Inf.*row 1"),
    (torch.zeros(0, 3), {}, ValueError, "empty"),
    (torch.tensor(3.0), {}, ValueError, "at least 1 dimension"),
    (torch.ones(4, 3), {"event_shape": (2,)}, ValueError, "expects \\(2,\\)"),
    (torch.tensor([0.0, 0.5, 1.0]), {"support": "binary"}, ValueError, "whole numbers"),
    (torch.tensor([0.0, 2.0, 1.0]), {"support": "binary"}, ValueError, "binary.*binarize"),
    (torch.tensor([1, -2, 3]), {"support": "count"}, ValueError, "negative"),
    (torch.tensor([0, 3]), {"support": "categorical", "num_categories": 3}, ValueError, "category 3"),
    (torch.tensor([0.5, -1.0]), {"support": "positive"}, ValueError, "> 0"),
    (torch.tensor([0.5, 2.0]), {"support": "unit_interval"}, ValueError, "rescale"),
    ("not data", {}, TypeError, "torch.Tensor or numpy"),
    (np.array([np.array([1, 2]), np.array([1])], dtype=object), {}, TypeError, "ragged|pad"),
    (torch.ones(2, 2, dtype=torch.complex64), {}, TypeError, "complex"),
])
def test_bad_inputs(data, kwargs, error, match):
    with pytest.raises(error, match=match):
        validate_data(data, **kwargs)


def test_tuple_batches_must_share_first_dim():
    with pytest.raises(ValueError, match="share their first"):
        as_batch((torch.ones(3, 2), torch.ones(4)))
    x, y = as_batch((np.ones((3, 2)), torch.arange(3)))
    assert x.shape == (3, 2) and y.shape == (3,)
    with pytest.raises(TypeError, match="dict"):
        as_batch({"x": torch.ones(2)})


def test_bundled_data_sets_load_and_are_valid():
    for name, shape in (("iris", (150, 4)), ("wine", (178, 13)), ("digits", (1797, 64))):
        data = load_dataset(name)
        assert tuple(data.data.shape) == shape
        validate_data(data.data)
    with pytest.raises(ValueError, match="unknown data set"):
        load_dataset("mnist-but-typo")


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5),
                  elements=st.floats(allow_nan=True, allow_infinity=True)))
def test_validator_accepts_exactly_the_finite_arrays(array):
    finite = bool(np.isfinite(array).all())
    if finite:
        assert torch.equal(validate_data(array), torch.from_numpy(array))
    else:
        with pytest.raises(ValueError, match="NaN|Inf"):
            validate_data(array)
