"""Ragged sequences <-> padded batches: round trips, masks and validation messages."""

import numpy as np
import pytest
import torch

from probgen.data.sequences import (
    PaddedSequences,
    lengths_to_mask,
    pad_sequences,
    unpad_sequences,
    validate_sequences,
)


def ragged(seed=0, feature_shape=(3,)):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, *feature_shape, generator=generator, dtype=torch.float64)
            for n in (4, 1, 7, 2)]


def test_pad_and_unpad_round_trip_with_mask():
    sequences = ragged()
    batch = pad_sequences(sequences)
    assert batch.values.shape == (4, 7, 3) and batch.lengths.tolist() == [4, 1, 7, 2]
    for original, recovered in zip(sequences, batch.unpad()):
        assert torch.equal(original, recovered)
    assert (batch.values[1, 1:] == 0).all()
    expected_mask = torch.tensor([[t < n for t in range(7)] for n in (4, 1, 7, 2)])
    assert torch.equal(batch.mask, expected_mask)
    assert batch.num_steps == 14
    assert torch.equal(lengths_to_mask(torch.tensor([2, 0]), 3),
                       torch.tensor([[True, True, False], [False, False, False]]))


def test_pad_accepts_lists_arrays_scalar_steps_and_max_length():
    batch = pad_sequences([[1, 2, 3], np.array([4]), torch.tensor([5, 6])], max_length=5,
                          padding_value=-1)
    assert batch.values.tolist() == [[1, 2, 3, -1, -1], [4, -1, -1, -1, -1], [5, 6, -1, -1, -1]]
    assert batch.values.dtype == torch.int64


def test_selection_trims_trailing_padding():
    batch = pad_sequences(ragged())
    subset = batch[torch.tensor([0, 3])]
    assert isinstance(subset, PaddedSequences)
    assert subset.values.shape == (2, 4, 3) and subset.lengths.tolist() == [4, 2]
    assert subset.as_tuple()[0] is subset.values


def test_pad_rejects_bad_input_with_clear_messages():
    with pytest.raises(ValueError, match="no sequences"):
        pad_sequences([])
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        pad_sequences([torch.ones(2, 3), torch.ones(0, 3)])
    with pytest.raises(ValueError, match="sequence 1 has steps of shape"):
        pad_sequences([torch.ones(2, 3), torch.ones(2, 4)])
    with pytest.raises(ValueError, match="shorter than the longest"):
        pad_sequences([torch.ones(5)], max_length=3)
    with pytest.raises(TypeError, match="list of sequences"):
        pad_sequences(torch.ones(2, 3))


def test_validate_checks_lengths_features_and_observed_values_only():
    batch = pad_sequences(ragged())
    values = batch.values.clone()
    values[1, 3:] = float("nan")  # padding may hold anything
    checked, lengths = validate_sequences(values, batch.lengths, feature_shape=(3,))
    assert torch.equal(lengths, batch.lengths) and (checked[1, 1:] == 0).all()
    assert torch.isfinite(checked).all()
    values[2, 5, 1] = float("nan")  # an observed step
    with pytest.raises(ValueError, match="NaN"):
        validate_sequences(values, batch.lengths)
    with pytest.raises(ValueError, match="lengths must lie in 1..7.*sequence 2 has length 8"):
        validate_sequences(batch.values, torch.tensor([4, 1, 8, 2]))
    with pytest.raises(ValueError, match="lengths must have shape \\(4,\\)"):
        validate_sequences(batch.values, torch.tensor([4, 1]))
    with pytest.raises(ValueError, match="whole numbers"):
        validate_sequences(batch.values, torch.tensor([4.0, 1.5, 7.0, 2.0]))
    with pytest.raises(ValueError, match="steps of shape \\(3,\\) but the model expects \\(5,\\)"):
        validate_sequences(batch.values, batch.lengths, feature_shape=(5,))
    with pytest.raises(TypeError, match="pad_sequences"):
        validate_sequences([[1.0, 2.0], [1.0]])
    with pytest.raises(ValueError, match="\\(batch, time, ...\\)"):
        validate_sequences(torch.ones(3))


def test_validate_support_applies_to_observed_steps():
    values = torch.tensor([[1, 0, -1], [1, 1, 0]])
    checked, lengths = validate_sequences(values, torch.tensor([2, 3]), support="binary")
    assert checked.tolist() == [[1, 0, 0], [1, 1, 0]] and lengths.dtype == torch.long
    with pytest.raises(ValueError, match="binary"):
        validate_sequences(values, torch.tensor([3, 3]), support="binary")
    with pytest.raises(ValueError, match="category 5"):
        validate_sequences(torch.tensor([[5, 1]]), support="categorical", num_categories=3)
    full, full_lengths = validate_sequences(torch.ones(2, 4, 1))
    assert full_lengths.tolist() == [4, 4]


def test_unpad_gives_views_of_each_sequence():
    batch = pad_sequences(ragged(feature_shape=()))
    pieces = unpad_sequences(batch.values, batch.lengths)
    assert [p.shape[0] for p in pieces] == [4, 1, 7, 2]
