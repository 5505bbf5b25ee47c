"""Every registered family checks its constructor arguments by annotation (issue 30's sweep).

NumPy scalars are numbers; fractions, booleans, strings and NaN are not sizes; sizes past an
up-front limit are refused at once (no hang, no raw allocator error); the message names the class,
the argument and the fix.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch

import probgen
from probgen.models.registry import MODEL_REGISTRY, import_families

import_families()

# (family, other arguments, the int argument to vary, a valid value for it)
SIZES = [
    ("gmm", {"num_features": 3}, "num_components", 2),
    ("bernoulli_mixture", {"num_components": 2}, "features", 4),
    ("hmm", {"num_states": 2}, "num_features", 3),
    ("vae", {"data_shape": (4,)}, "latent_dim", 3),
    ("hierarchical_vae", {"data_shape": (4,)}, "warmup_steps", 5),
    ("flow", {"features": 2}, "transforms", 2),
    ("flow_vae", {"data_shape": (4,)}, "flow_transforms", 2),
    ("made", {"features": 4}, "num_masks", 2),
    ("pixelcnn", {"image_shape": (4, 4)}, "layers", 2),
    ("rbm", {"num_visible": 4, "num_hidden": 3}, "seed", 3),
    ("ebm", {"num_features": 3}, "seed", 3),
    ("diffusion", {"features": 2}, "time_features", 8),
    ("latent_diffusion", {"features": 4}, "latent_features", 2),
]


def _build(name, args, **kwargs):
    if isinstance(args, dict):
        return MODEL_REGISTRY[name](**{**args, **kwargs})
    return MODEL_REGISTRY[name](*args, **kwargs)


@pytest.mark.parametrize(("name", "args", "argument", "valid"), SIZES, ids=[s[0] for s in SIZES])
def test_numpy_scalars_are_numbers(name, args, argument, valid):
    plain = _build(name, args, **{argument: valid})
    numpy_built = _build(name, args, **{argument: np.int64(valid)})
    assert json.dumps(numpy_built.config, sort_keys=True) == json.dumps(plain.config, sort_keys=True)
    assert type(numpy_built.config.get(argument, 0)) is not np.int64


@pytest.mark.parametrize("bad", [2.5, "3", True, float("nan"), None, -1],
                         ids=["fraction", "string", "bool", "nan", "none", "negative"])
@pytest.mark.parametrize(("name", "args", "argument", "valid"), SIZES, ids=[s[0] for s in SIZES])
def test_sizes_refused_naming_the_argument(name, args, argument, valid, bad):
    if bad is None and argument == "seed":
        pytest.skip("seed=None is valid (a fresh random seed)")
    if bad is None and name == "hmm":
        pytest.skip("num_features=None is valid for categorical emissions")
    with pytest.raises(ValueError, match=rf"{argument} must be an integer >= \d"):
        _build(name, args, **{argument: bad})


@pytest.mark.parametrize(("name", "args", "argument"), [
    ("flow", (2,), "transforms"), ("flow_vae", ((4,),), "flow_transforms"),
    ("made", (4,), "num_masks"), ("pixelcnn", ((4, 4),), "layers"),
])
def test_block_counts_capped_before_building(name, args, argument):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=rf"{argument}=1,000,000,000 is over the largest allowed"):
        _build(name, args, **{argument: 10**9})
    assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize(("name", "args"), [("vae", ((10**7,),)), ("made", (10**6,)),
                                            ("hierarchical_vae", ((10**7,),))])
def test_parameter_memory_refused_before_allocating(name, args):
    """Sized on the meta device first: 7-30 GiB of parameters are refused in well under a second."""
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"would allocate .* GiB of parameters.*over the 4.0 GiB limit"):
        _build(name, args)
    assert time.perf_counter() - start < 5.0


def test_allocator_refusal_is_a_clear_error():
    """A constructor that cannot be sized on meta still answers in the user's terms."""
    with pytest.raises(ValueError, match=r"needs more memory than this machine can give.*smaller"):
        MODEL_REGISTRY["diffusion"](2, hidden_features=(10**7, 10**7))  # 400 TB: refused at once


def test_sizing_leaves_random_streams_alone():
    torch.manual_seed(0)
    np.random.seed(0)
    first = MODEL_REGISTRY["made"](6, (8,), seed=1).state_dict()
    after = torch.rand(3), np.random.rand(3)
    torch.manual_seed(0)
    np.random.seed(0)
    with torch.device("cpu"):
        second = MODEL_REGISTRY["made"].__init__.__wrapped__  # the unchecked constructor
        model = MODEL_REGISTRY["made"].__new__(MODEL_REGISTRY["made"])
        second(model, 6, (8,), seed=1)
    assert all(torch.equal(first[k], v) for k, v in model.state_dict().items())
    assert torch.equal(after[0], torch.rand(3)) and np.array_equal(after[1], np.random.rand(3))


def test_widths_and_shapes_checked_element_by_element():
    with pytest.raises(ValueError, match=r"VAE: hidden_features must be an integer >= 1, got 2.5"):
        MODEL_REGISTRY["vae"]((4,), hidden_features=(2.5,))
    with pytest.raises(ValueError, match=r"DiffusionDensity: hidden_features must be a list or tuple"):
        MODEL_REGISTRY["diffusion"](2, hidden_features="64")
    with pytest.raises(ValueError, match=r"FlowModel: scale must be a finite number, got nan"):
        MODEL_REGISTRY["flow"](2, scale=[float("nan"), 1.0])
    with pytest.raises(ValueError, match=r"logit_alpha must be in \(0, 0.5\)"):
        MODEL_REGISTRY["flow"](2, logit_alpha=0.7)
    with pytest.raises(ValueError, match=r"scale holds the data's standard deviations"):
        MODEL_REGISTRY["flow"](2, scale=[0.0, 1.0])


def test_valid_json_sizes_still_load():
    """A config read back from JSON has 3.0 for 3 and lists for tuples: both are accepted."""
    model = MODEL_REGISTRY["vae"]([4.0], latent_dim=3.0, hidden_features=[8.0])
    assert model.config["latent_dim"] == 3


# --- LogLikelihood records -------------------------------------------------------------------

def _ll(**kwargs):
    base = dict(kind="exact", estimator="exact", num_dims=2, data_space="continuous")
    return probgen.LogLikelihood(torch.tensor([-1.0, -2.0]), **{**base, **kwargs})


def test_fractional_num_dims_survives_json(tmp_path):
    ll = _ll(num_dims=2.5)
    ll.to_json(tmp_path / "ll.json")
    back = probgen.LogLikelihood.from_json(tmp_path / "ll.json")
    assert back.num_dims == 2.5 and back.bits_per_dim == ll.bits_per_dim


def test_numpy_scalars_in_records(tmp_path):
    ll = _ll(num_dims=np.int64(2), estimator_stderr=np.float32(0.5), settings={"k": np.int64(8)})
    assert ll.num_dims == 2 and isinstance(ll.estimator_stderr, float)
    assert json.loads(ll.to_json())["settings"] == {"k": 8}


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"estimator": 3}, TypeError, "estimator must be the estimator's name"),
    ({"settings": [1]}, TypeError, "settings must be a dict"),
    ({"num_dims": True}, ValueError, "num_dims must be a positive number"),
    ({"estimator_stderr": "0.1"}, ValueError, "estimator_stderr must be finite"),
])
def test_record_fields_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        _ll(**kwargs)


def test_complex_and_matrix_values_refused():
    with pytest.raises(TypeError, match="per_example is complex"):
        probgen.LogLikelihood(torch.tensor([1.0 + 1j]), kind="exact", estimator="exact",
                              num_dims=1, data_space="continuous")
    with pytest.raises(ValueError, match=r"one value per example, shape \(n,\), got shape \(3, 2\)"):
        probgen.LogLikelihood(torch.zeros(3, 2), kind="exact", estimator="exact", num_dims=1,
                              data_space="continuous")


def test_unwritable_settings_named():
    with pytest.raises(TypeError, match="settings of this LogLikelihood cannot be written as JSON"):
        _ll(settings={"f": object()}).to_json()


@pytest.mark.parametrize(("content", "match"), [
    ({"per_example": [1.0]}, "it lacks kind, estimator, num_dims, data_space"),
    ({"per_example": ["a"], "kind": "exact", "estimator": "e", "num_dims": 1,
      "data_space": "continuous"}, "per_example must be a list of numbers"),
    ({"per_example": [1.0], "kind": "exact", "estimator": "e", "num_dims": 1,
      "data_space": "continuous", "settings": 3}, "settings must be a JSON object"),
])
def test_foreign_records_one_clear_error(tmp_path, content, match):
    path = tmp_path / "x.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=match):
        probgen.LogLikelihood.from_json(path)


def test_paths_that_are_not_files(tmp_path):
    with pytest.raises(ValueError, match="is not a regular file"):
        probgen.LogLikelihood.from_json(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="is not a regular file"):  # must not block on the pipe
        probgen.LogLikelihood.from_json(fifo)
    assert time.perf_counter() - start < 5.0
    with pytest.raises(FileNotFoundError, match="no such file"):
        probgen.LogLikelihood.from_json(tmp_path / "missing.json")


def test_concat_refuses_strangers():
    with pytest.raises(TypeError, match="concat joins LogLikelihood results, got float"):
        probgen.LogLikelihood.concat([_ll(), 1.5])
