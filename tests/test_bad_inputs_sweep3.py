"""Reliability sweep 3: iterables that end, absurd sizes, pipes and devices as files, non-finite
hyper-parameters, damaged run records, NumPy scalars, in the style of ``test_bad_inputs.py``.

Each case: (entry point, what is wrong, call, expected error type, a regex the message must
match: the argument and the fix). CLI cases exit with code 2 and print one line. A few
``ACCEPTED`` cases check that valid inputs given as NumPy scalars are not refused.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import probgen
from probgen.cli import main as cli_main
from probgen.core.validate import (
    check_num_samples,
    check_option,
    check_probability,
    check_regular_file,
    check_size,
)


@dataclass(frozen=True)
class Case:  # as in test_bad_inputs.py
    entry: str
    problem: str
    call: Callable[[], object]
    error: type[BaseException] | tuple[type[BaseException], ...]
    match: str


GOOD = torch.randn(20, 3)
_fifo_count = itertools.count()


def program(x):
    loc = pyro.param("loc", torch.zeros(3))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)


def _tmp(name: str = "") -> str:
    return tempfile.mkdtemp() + ("/" + name if name else "")


def _fifo(suffix: str = ".pt") -> str:
    path = os.path.join(_tmp(), f"pipe{next(_fifo_count)}{suffix}")
    os.mkfifo(path)
    return path


def _fit(data, **kw):
    kw.setdefault("num_steps", 2)
    return probgen.fit(program, data, progress=False, **kw)


def _batches(n: int = 3, width: int = 3):
    for _ in range(n):
        yield torch.randn(5, width)


def _empty_generator():
    return
    yield


def _cls(module: str, name: str):
    return getattr(__import__(module, fromlist=["x"]), name)


def _gmm():
    return _cls("probgen.models.mixture", "GaussianMixture")(2, 3)


def _loader(dataset, **kw):
    return torch.utils.data.DataLoader(dataset, batch_size=5, **kw)


from probgen import metrics as M  # noqa: E402
from probgen.data import jsb, mnist  # noqa: E402
from probgen.data import sequences as S  # noqa: E402
from probgen.data import transforms as T  # noqa: E402

X, Y = torch.randn(30, 3), torch.randn(30, 3)


def _with_env(name: str, value: str, call):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        return call()
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old

_LIMIT = r"over the .* limit.*PROBGEN_MAX_SAMPLE_BYTES"

CASES: list[Case] = [
    # training data: iterables that end
    Case("probgen.fit", "generator shorter than num_steps", lambda: _fit(_batches(3), num_examples=15, num_steps=5), ValueError, r"one-shot iterator \(generator\), which can be read only once, and it ended at step 3.*list of batches or a DataLoader.*num_steps=3"),
    Case("probgen.fit", "generator for two epochs", lambda: _fit(_batches(3), num_examples=15, num_steps=None, epochs=2), ValueError, "read only once.*ended at step 3"),
    Case("probgen.fit", "empty generator", lambda: _fit(_empty_generator(), num_examples=15), ValueError, r"one-shot iterator \(generator\) that yielded no batch.*pass at least one batch"),
    Case("probgen.fit", "empty iterator", lambda: _fit(iter([]), num_examples=15), ValueError, "yielded no batch"),
    Case("probgen.fit", "empty TensorDataset", lambda: _fit(torch.utils.data.TensorDataset(torch.zeros(0, 3))), ValueError, r"empty TensorDataset \(0 examples\); pass at least one example"),
    Case("probgen.fit", "DataLoader over an empty dataset", lambda: _fit(_loader(torch.utils.data.TensorDataset(torch.zeros(0, 3)))), ValueError, r"DataLoader over an empty dataset \(0 examples\)"),
    Case("probgen.fit", "num_examples smaller than a batch", lambda: _fit(_batches(), num_examples=2), ValueError, r"num_examples=2 is smaller than the first batch \(5 examples\).*whole training set"),
    Case("probgen.fit", "batches of other widths", lambda: _fit(iter([torch.randn(5, 3), torch.randn(5, 4)]), num_examples=10), ValueError, r"batch 1 of epoch 0 has examples of shape \(4,\) but the first batch had \(3,\)"),
    Case("probgen.fit", "batches holding other numbers of tensors", lambda: _fit(iter([torch.randn(5, 3), (torch.randn(5, 3), torch.ones(5))]), num_examples=10), ValueError, r"holds 2 tensor\(s\) but the first batch held 1"),
    Case("probgen.fit", "num_examples that disagrees with a tensor", lambda: _fit(GOOD, num_examples=5), ValueError, "num_examples=5 but data holds 20 examples.*leave it unset"),
    Case("probgen.fit", "num_examples a string", lambda: _fit(_batches(), num_examples="15"), ValueError, "num_examples must be a positive integer, got '15'"),
    # sizes with an up-front limit
    Case("GaussianMixture.sample", "10**12 examples", lambda: _gmm().sample(10**12), ValueError, r"GaussianMixture.sample: num_samples=1,000,000,000,000 would fill .*TiB.*" + _LIMIT),
    Case("GaussianMixture.sample", "num_samples=0", lambda: _gmm().sample(0), ValueError, "num_samples must be an integer >= 1, got 0"),
    Case("GaussianMixture.sample", "num_samples=-1", lambda: _gmm().sample(-1), ValueError, "num_samples must be an integer >= 1, got -1"),
    Case("GaussianMixture.sample", "num_samples=2.5", lambda: _gmm().sample(2.5), ValueError, "num_samples must be an integer >= 1, got 2.5; sizes are whole numbers"),
    Case("GaussianMixture.sample", "num_samples=True", lambda: _gmm().sample(True), ValueError, "num_samples must be an integer >= 1, got True"),
    Case("GaussianMixture.sample", "num_samples='3'", lambda: _gmm().sample("3"), ValueError, "num_samples must be an integer >= 1, got '3'"),
    Case("VAE.sample", "10**12 examples", lambda: _cls("probgen.models.vae", "VAE")((6,), latent_dim=2, hidden_features=(8,)).sample(10**12), ValueError, "VAE.sample: num_samples=.*would fill.*" + _LIMIT),
    Case("MADE.sample", "10**12 examples", lambda: _cls("probgen.models.autoregressive", "MADE")(6, hidden_features=(8,)).sample(10**12), ValueError, "MADE.sample: num_samples=.*would fill"),
    Case("probgen.data.train_test_split", "n=10**13", lambda: probgen.data.train_test_split(10**13), ValueError, r"n \(the number of examples\)=10,000,000,000,000 would fill .*TiB"),
    Case("pad_sequences", "max_length=10**12", lambda: S.pad_sequences([torch.zeros(2, 2)], max_length=10**12), ValueError, r"max_length=1,000,000,000,000 would fill.*pad to the longest sequence \(max_length=None\)"),
    Case("lengths_to_mask", "max_length=10**12", lambda: S.lengths_to_mask(torch.tensor([2]), 10**12), ValueError, r"max_length=.*would fill.*max_length=None"),
    Case("lengths_to_mask", "negative length", lambda: S.lengths_to_mask(torch.tensor([3, -2])), ValueError, r"lengths must be >= 0, got -2 \(sequence 1\)"),
    Case("lengths_to_mask", "fractional lengths", lambda: S.lengths_to_mask(torch.tensor([2.5])), ValueError, "lengths must be integers.*torch.float32"),
    Case("Polynomial", "degree=10**9", lambda: M.Polynomial(degree=10**9), ValueError, "Polynomial degree=1,000,000,000 is over the limit of 64.*KID uses degree 3"),
    Case("vendi", "RBF Gram matrix of 60,000 rows", lambda: M.vendi(torch.randn(60000, 3), kernel=M.RBF(1.0)), ValueError, r"samples \(rows\)=60,000 would fill .*GiB.*subsample to at most [\d,]+ rows, or use Cosine\(\)"),
    Case("mmd2", "pairwise work over the limit", lambda: _with_env("PROBGEN_MAX_PAIRWISE_WORK", "1e6", lambda: M.mmd2(X.repeat(20, 1), Y.repeat(20, 1))), ValueError, r"MMD² over 1,200 × 1,200 samples .* over the 1e\+06 limit.*subsample to about"),
    Case("precision", "pairwise work over the limit", lambda: _with_env("PROBGEN_MAX_PAIRWISE_WORK", "1e6", lambda: M.precision(X.repeat(20, 1), Y.repeat(20, 1))), ValueError, "the k-NN manifolds over .* over the 1e\\+06 limit"),
    Case("median_bandwidth", "max_samples=0", lambda: M.median_bandwidth(X, max_samples=0), ValueError, "max_samples must be an integer >= 2, got 0"),
    # pipes, devices and folders given as files: refused without being opened
    Case("read_idx", "a FIFO", lambda: mnist.read_idx(_fifo(".gz")), ValueError, r"IDX file .*pipe\d+.gz is a pipe \(FIFO\), not a regular file.*pass an MNIST IDX file saved on disk"),
    Case("read_idx", "/dev/zero", lambda: mnist.read_idx("/dev/zero"), ValueError, "IDX file /dev/zero is a device, not a regular file"),
    Case("read_idx", "header longer than the file", lambda: mnist.read_idx(b"\x00\x00\x08\x09" + b"\xff" * 20), ValueError, "IDX file holds 24 bytes, fewer than its header of 9 dimensions needs"),
    Case("check_regular_file", "a folder", lambda: check_regular_file("--data", _tmp()), ValueError, "--data .* is a folder"),
    Case("check_regular_file", "missing", lambda: check_regular_file("--data", "/no/such/file.npy"), FileNotFoundError, "--data /no/such/file.npy: no such file"),
    Case("check_regular_file", "NUL in the name", lambda: check_regular_file("path", "a\x00b"), ValueError, "contains a NUL byte"),
    Case("check_regular_file", "over the size limit", lambda: check_regular_file("path", __file__, max_bytes=10), ValueError, r"is .* over the 10.0 B limit.*PROBGEN_MAX_FILE_BYTES"),
    Case("find_data", "a path escaping the data folders", lambda: probgen.core.paths.find_data("../../etc/passwd"), ValueError, "relative file name inside the data folders"),
    Case("find_data", "an int", lambda: probgen.core.paths.find_data(3), TypeError, "find_data takes a file name.*got int"),
    # numbers: NaN/Inf and strings refused by name
    Case("binarize", "threshold NaN", lambda: T.binarize(torch.rand(3, 2), threshold=float("nan")), ValueError, "threshold must be a finite number, got nan"),
    Case("binarize", "threshold a string", lambda: T.binarize(torch.rand(3, 2), threshold="a"), ValueError, "threshold must be a finite number, got 'a'"),
    Case("uniform_dequantize", "num_levels=2.5", lambda: T.uniform_dequantize(torch.zeros(3), 2.5), ValueError, "num_levels must be an integer >= 2, got 2.5"),
    Case("DynamicBinarizer", "seed -1", lambda: mnist.DynamicBinarizer(seed=-1), ValueError, r"seed must be an integer in 0 \.\. 2\*\*32 - 1, got -1"),
    Case("piano_rolls", "a pitch that is not a number", lambda: jsb.piano_rolls([[["a"]]]), ValueError, "chorale 0 has a pitch 'a', not a MIDI note number"),
    Case("frechet_distance", "strings", lambda: M.frechet_distance("a", "b", "c", "d"), TypeError, "mu1 must be a tensor or array of numbers, got str"),
    Case("frechet_distance", "None", lambda: M.frechet_distance(None, None, None, None), TypeError, "mu1 must be a tensor or array of numbers, got NoneType"),
    Case("frechet_distance", "complex mean", lambda: M.frechet_distance(torch.zeros(2, dtype=torch.complex64), torch.eye(2), torch.zeros(2), torch.eye(2)), TypeError, r"mu1 is complex \(torch.complex64\)"),
    Case("MetricResult", "a string stderr", lambda: M.MetricResult("x", 1.0, "0.1"), TypeError, "metric 'x' has a stderr of type str; pass a number or None"),
    Case("mmd2", "a polynomial kernel that overflows", lambda: M.mmd2(X * 1e3, Y, kernel=M.Polynomial(degree=60, gamma=1.0)), ValueError, r"MMD² is (nan|inf): the Polynomial kernel overflowed.*rescale"),
    # the shared checkers
    Case("check_probability", "1.5", lambda: check_probability("dropout", 1.5), ValueError, r"dropout must be a probability in \[0, 1\], got 1.5"),
    Case("check_probability", "NaN", lambda: check_probability("dropout", float("nan")), ValueError, "dropout must be a finite number, got nan"),
    Case("check_probability", "0 in an open interval", lambda: check_probability("p", 0.0, open_interval=True), ValueError, r"p must be a probability in \(0, 1\)"),
    Case("check_option", "wrong case", lambda: check_option("covariance", "Full", ("full", "diag")), ValueError, r"covariance must be one of \('full', 'diag'\), got 'Full' \(did you mean 'full'\?\)"),
    Case("check_option", "not a string", lambda: check_option("kind", 3, ("a",)), ValueError, r"kind must be one of \('a',\), got 3"),
    Case("check_size", "over a maximum", lambda: check_size("num_masks", 10**9, maximum=1024), ValueError, "num_masks=1,000,000,000 is over the limit of 1,024"),
    Case("check_num_samples", "NumPy float that is not whole", lambda: check_num_samples("k", np.float32(2.5)), ValueError, "k must be an integer >= 1"),
]

# valid inputs given as NumPy scalars: accepted as Python numbers are
ACCEPTED = [
    ("GaussianMixture.sample", "np.int64(3)", lambda: _gmm().sample(np.int64(3)).shape == (3, 3)),
    ("GaussianMixture.sample", "np.float64(3.0)", lambda: _gmm().sample(np.float64(3.0)).shape == (3, 3)),
    ("probgen.fit", "num_examples=np.int64 and batch_size=np.int64", lambda: _fit(_loader(torch.utils.data.TensorDataset(GOOD)), num_examples=np.int64(20)).num_steps == 2 and _fit(GOOD, batch_size=np.int64(5)).num_steps == 2),
    ("probgen.fit", "a generator as long as the run", lambda: _fit(_batches(3), num_examples=15, num_steps=3).num_steps == 3),
    ("binarize", "threshold np.float32", lambda: T.binarize(torch.tensor([[0.2, 0.7]]), threshold=np.float32(0.5)).tolist() == [[0.0, 1.0]]),
    ("uniform_dequantize", "num_levels np.int64", lambda: T.uniform_dequantize(torch.zeros(3), np.int64(256)).shape == (3,)),
    ("lengths_to_mask", "max_length np.int64", lambda: S.lengths_to_mask(torch.tensor([2, 0]), np.int64(3)).tolist() == [[True, True, False], [False, False, False]]),
    ("MetricResult", "value np.float32", lambda: M.MetricResult("x", np.float32(1.5)).value == 1.5),
    ("vendi", "RBF on a small set (an n × n spectrum under the limit)", lambda: 1 <= M.vendi(X, kernel=M.RBF()).value <= 30),
    ("median_bandwidth", "a nested list", lambda: M.median_bandwidth([[0.0], [1.0], [3.0]]) == 2.0),
    ("check_probability", "np.float32", lambda: check_probability("p", np.float32(0.25)) == 0.25),
    ("check_option", "np.str_", lambda: check_option("kind", np.str_("a"), ("a", "b")) == "a"),
]


# --- issue 30: fit's hyper-parameters, resume, evaluate's posterior, files, ranges ----------------
_LR = r"learning rate must be a finite positive number, got "
_CKPT: dict[str, str] = {}


def _checkpoint(name: str = "program") -> str:
    """A copy of a finished 4-step fit checkpoint (seed 0, batch_size 5) of ``program`` (or a
    GaussianMixture(2, 3) for ``name='gmm'``), made once."""
    if name not in _CKPT:
        path = _tmp(f"{name}.pt")
        model = program if name == "program" else _gmm()
        probgen.fit(model, GOOD, num_steps=4, seed=0, progress=False, checkpoint=path,
                    **({"batch_size": 5} if name == "program" else {}))
        _CKPT[name] = path
    copy = _tmp(f"{name}.pt")
    shutil.copy(_CKPT[name], copy)
    return copy


def _resume(model=None, **kw):
    kw.setdefault("num_steps", 8)
    kw.setdefault("batch_size", 5)
    return probgen.fit(model or program, GOOD, checkpoint=_checkpoint(), resume=True,
                       progress=False, **kw)


def program_with_scale(x):
    loc = pyro.param("loc", torch.zeros(3))
    scale = pyro.param("scale", torch.ones(3), constraint=dist.constraints.positive)
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(loc, scale).to_event(1), obs=x)


def latent_program(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)


def global_program(x):
    W = pyro.sample("W", dist.Normal(torch.zeros(5, 3), 1.0).to_event(2))
    loc = pyro.param("loc", torch.zeros(3))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(W.sum(0) + loc, 1.0).to_event(1), obs=x)


def _saved_program_fit(GOOD, ) -> str:
    """probgen.save of an AutoNormal fit of ``latent_program``, made once."""
    if "saved" not in _CKPT:
        path = _tmp("program.pt")
        probgen.save(probgen.fit(latent_program, GOOD, num_steps=2, progress=False), path)
        _CKPT["saved"] = path
    return _CKPT["saved"]


def _crafted(edit) -> str:
    """A copy of the saved program fit with ``edit(state)`` applied."""
    state = torch.load(_saved_program_fit(GOOD, ), weights_only=True)
    edit(state)
    path = _tmp("crafted.pt")
    torch.save(state, path)
    return path


def _load_crafted(edit):
    pyro.clear_param_store()
    return probgen.load(_crafted(edit), model=latent_program)


def _first_constraint(spec):
    def edit(state):
        name = next(iter(state["param_store"]["constraints"]))
        state["param_store"]["constraints"][name] = spec
        state["param_store"]["params"]["not_in_the_program"] = torch.zeros(2)
        state["param_store"]["constraints"]["not_in_the_program"] = spec
    return edit


def _locked_by(content: str):
    """fit with a checkpoint whose lock file holds ``content`` (a pid, and a start time)."""
    path = _tmp("run.pt")
    with open(path + ".lock", "w") as f:
        f.write(content)
    return _fit(GOOD, checkpoint=path)


def _vae():
    return _cls("probgen.models.vae", "VAE")((6,), latent_dim=2, hidden_features=(8,))


class _ClosedFormNaN(probgen.infer.method.TrainingMethod):
    """A closed-form method (no learning rate) whose loss is NaN, as EM's is when a component
    collapses onto constant data (BernoulliMixture on a constant column in float32)."""

    uses_optim = False

    def step(self, batch, scale):
        return float("nan")

    def tensors(self):
        return []


def _closed_form_diverges():
    return probgen.fit(program, GOOD, method=_ClosedFormNaN, num_steps=3, progress=False)


def _log_likelihood(values):
    return probgen.LogLikelihood(torch.tensor(values, dtype=torch.float64), kind="exact",
                                 estimator="exact", num_dims=1, data_space="continuous")


_RBM_DATA = torch.bernoulli(torch.full((5, 6), 0.5))
_DIVERGED = probgen.TrainingDiverged
_CHECKPOINT = probgen.core.checkpoint.CheckpointError
_HUGE = GOOD.double().clone()
_HUGE[3, 1] = 1e39

CASES += [
    # 1-3: learning rates and annealing hyper-parameters, refused by name before training
    Case("probgen.fit", "optim=inf", lambda: _fit(GOOD, optim=float("inf")), ValueError, _LR + r"inf \(optim\); pass e.g. optim=1e-3"),
    Case("probgen.fit", "optim={'lr': inf}", lambda: _fit(GOOD, optim={"lr": float("inf")}), ValueError, _LR + r"inf \(optim\['lr'\]\)"),
    Case("probgen.fit", "optim={'lr': nan}", lambda: _fit(GOOD, optim={"lr": float("nan")}), ValueError, _LR + r"nan \(optim\['lr'\]\)"),
    Case("probgen.fit", "optim=np.float32(-1)", lambda: _fit(GOOD, optim=np.float32(-1.0)), ValueError, _LR + r"-1.0 \(optim\)"),
    Case("probgen.fit", "final_lr=inf", lambda: _fit(GOOD, lr_schedule="cosine", final_lr=float("inf")), ValueError, "final_lr must be a finite number, got inf"),
    Case("probgen.fit", "final_lr=-1", lambda: _fit(GOOD, lr_schedule="cosine", final_lr=-1.0), ValueError, "final_lr must be >= 0, got -1.0"),
    Case("probgen.fit", "free_bits=inf", lambda: _fit(GOOD, free_bits=float("inf")), ValueError, "free_bits must be a finite number, got inf"),
    Case("probgen.fit", "free_bits=-1", lambda: _fit(GOOD, free_bits=-1.0), ValueError, "free_bits must be >= 0, got -1.0"),
    Case("probgen.fit", "kl_warmup_epochs=nan", lambda: _fit(GOOD, kl_warmup_epochs=float("nan")), ValueError, "kl_warmup_epochs must be a finite number, got nan"),
    Case("probgen.fit", "ema_decay=1", lambda: _fit(GOOD, ema_decay=1.0), ValueError, r"ema_decay must be a number in \(0, 1\), got 1.0; e.g. ema_decay=0.999"),
    Case("probgen.fit", "ema_decay=inf", lambda: _fit(GOOD, ema_decay=float("inf")), ValueError, r"ema_decay must be a number in \(0, 1\), got inf"),
    # 5-6: sizes with an up-front limit
    Case("probgen.fit", "num_particles=10**9", lambda: _fit(GOOD, num_particles=10**9), ValueError, r"num_particles=1,000,000,000 would fill .*GiB.*each particle copies the batch: use at most [\d,]+ particles or a smaller batch_size"),
    Case("probgen.fit", "VAE iwae with num_particles=10**9", lambda: probgen.fit(_vae(), torch.ones(4, 6), loss="iwae", num_particles=10**9, num_steps=1, progress=False), ValueError, r"num_particles=1,000,000,000 would fill"),
    Case("probgen.fit", "num_steps=10**15", lambda: _fit(GOOD, num_steps=10**15), ValueError, r"num_steps=1,000,000,000,000,000 is over the limit of 1,000,000,000.*e\.g\. num_steps=10_000"),
    Case("probgen.fit", "epochs=10**12", lambda: _fit(GOOD, num_steps=None, epochs=10**12), ValueError, r"epochs=1,000,000,000,000 is over the limit"),
    # 7: options and flags
    Case("probgen.fit", "validation_estimator='bogus'", lambda: _fit(GOOD, validation=GOOD, validation_estimator="bogus"), ValueError, r"validation_estimator must be one of \('auto', 'exact', 'elbo', 'iwae', 'predictive'.*got 'bogus'"),
    Case("probgen.fit", "shuffle='yes'", lambda: _fit(GOOD, shuffle="yes"), ValueError, "shuffle must be True or False, got 'yes'"),
    Case("probgen.fit", "progress='x'", lambda: probgen.fit(program, GOOD, num_steps=2, progress="x"), ValueError, r"progress must be True, False or None \(a bar only on a terminal\), got 'x'"),
    Case("probgen.fit", "restore_best='no'", lambda: _fit(GOOD, restore_best="no"), ValueError, "restore_best must be True or False, got 'no'"),
    Case("probgen.fit", "warm_start=3", lambda: _fit(GOOD, warm_start=3), ValueError, "warm_start must be True or False, got 3"),
    # 8: resume refuses another program, model size, objective or seed
    Case("probgen.fit", "resume with another program", lambda: _resume(program_with_scale), _CHECKPOINT, r"written by another program: its parameters are \['loc'\], this program's \['loc', 'scale'\] \(not in the checkpoint: \['scale'\].*resume with the program"),
    Case("probgen.fit", "resume a model of another size", lambda: probgen.fit(_cls("probgen.models.mixture", "GaussianMixture")(3, 3), GOOD, num_steps=8, checkpoint=_checkpoint("gmm"), resume=True, progress=False), _CHECKPOINT, r"written by a GaussianMixture of another configuration \(num_components=2 in the checkpoint, 3 now\); resume with the model it was written by"),
    Case("probgen.fit", "resume with another loss", lambda: _resume(loss="mean_field"), _CHECKPOINT, r"written with loss=None but this run has loss='mean_field'; resume with the same objective \(loss, num_particles\)"),
    Case("probgen.fit", "resume with other num_particles", lambda: _resume(num_particles=2), _CHECKPOINT, "written with num_particles=1 but this run has num_particles=2; resume with the same objective"),
    Case("probgen.fit", "resume with another seed", lambda: _resume(seed=3), _CHECKPOINT, r"written with seed=0 but this run passes seed=3; resume with the same seed \(or leave seed unset"),
    Case("probgen.fit", "resume with another batch_size", lambda: _resume(batch_size=4), _CHECKPOINT, "written with batch_size=5 but this run has batch_size=4; resume with the same batch_size"),
    # 9: the divergence message fits the method
    Case("probgen.fit", "a closed-form method (EM-like) diverging", _closed_form_diverges, _DIVERGED, r"Likely causes: a component \(or state\) collapsed onto constant data.*use float64 \(model.double\(\)\), or add reg_covar/smoothing"),
    # 11-13: evaluate's particles and posterior draws
    Case("probgen.evaluate", "IWAE k=10**12 on a program", lambda: probgen.evaluate(latent_program, GOOD, guide=pyro.infer.autoguide.AutoNormal(latent_program), estimator="iwae", k=10**12), ValueError, r"k=1,000,000,000,000 would fill .*TiB.*use at most [\d,]+ particles \(IWAE-5000 is the usual ceiling\)"),
    Case("probgen.evaluate", "VAE iwae k=10**10", lambda: probgen.evaluate(_vae(), torch.ones(4, 6), estimator="iwae", k=10**10), ValueError, r"k=10,000,000,000 would fill"),
    Case("probgen.evaluate", "posterior draws of the wrong shape", lambda: probgen.evaluate(global_program, GOOD, posterior={"W": torch.randn(10, 4, 3)}), ValueError, r"posterior\['W'\] has draws of shape \(10, 4, 3\); site 'W' has shape \(5, 3\): pass \(10, 5, 3\)"),
    Case("probgen.evaluate", "posterior with a misspelt site", lambda: probgen.evaluate(global_program, GOOD, posterior={"W": torch.randn(10, 5, 3), "zz": torch.randn(10)}), ValueError, r"posterior has no site 'zz'; the program's latent sites are \['W'\]"),
    Case("probgen.evaluate", "posterior draws of a pyro.param", lambda: probgen.evaluate(global_program, GOOD, posterior={"W": torch.randn(10, 5, 3), "loc": torch.randn(10, 3)}), ValueError, r"'loc' is a pyro.param, not a latent site.*drop 'loc'"),
    Case("probgen.evaluate", "posterior draws of the observed site", lambda: probgen.evaluate(global_program, GOOD, posterior={"W": torch.randn(10, 5, 3), "x": torch.randn(10, 20, 3)}), ValueError, r"posterior has no latent site 'x' \(it is observed\)"),
    Case("probgen.evaluate", "num_draws=10**12", lambda: probgen.evaluate(global_program, GOOD, posterior={"W": torch.randn(10, 5, 3)}, num_draws=10**12), ValueError, r"num_draws=1,000,000,000,000 would fill .*use at most [\d,]+ draws"),
    Case("probgen.evaluate", "num_draws=2.5", lambda: probgen.evaluate(global_program, GOOD, posterior={"W": torch.randn(10, 5, 3)}, num_draws=2.5), ValueError, "num_draws must be a positive integer, got 2.5"),
    # 14-15: files: pipes, devices, NUL bytes, files as folders, stale locks
    Case("probgen.load", "a FIFO", lambda: probgen.load(_fifo()), _CHECKPOINT, r"checkpoint .*pipe\d+\.pt is a pipe \(FIFO\), not a regular file"),
    Case("probgen.load", "/dev/zero", lambda: probgen.load("/dev/zero"), _CHECKPOINT, "checkpoint /dev/zero is a device, not a regular file"),
    Case("probgen.fit", "resume from a FIFO checkpoint", lambda: _fit(GOOD, checkpoint=_fifo(), resume=True), _CHECKPOINT, r"is a pipe \(FIFO\), not a regular file"),
    Case("probgen.save", "a NUL byte in the path", lambda: probgen.save(_gmm(), "a\x00b.pt"), ValueError, "probgen.save path 'a\\\\x00b.pt' contains a NUL byte.*pass a path without it"),
    Case("probgen.save", "a path inside an existing file", lambda: probgen.save(_gmm(), __file__ + "/x.pt"), ValueError, r"test_bad_inputs_sweep3.py is a file, not a folder, so nothing can be written inside it"),
    Case("probgen.fit", "checkpoint inside an existing file", lambda: _fit(GOOD, checkpoint=__file__ + "/run.pt"), ValueError, r"checkpoint .* is a file, not a folder"),
    Case("probgen.fit", "a lock naming a live, unrelated pid", lambda: _locked_by(str(os.getppid())), _CHECKPOINT, r"holds the lock file .*run.pt.lock .*if no fit is writing it .*delete the lock: rm '.*run.pt.lock'"),
    # 16: crafted or foreign model files, read through allow-lists
    Case("probgen.load", "an unknown autoguide name", lambda: _load_crafted(lambda s: s.__setitem__("autoguide", "os")), _CHECKPOINT, r"names the autoguide 'os', which is not one of Pyro's autoguides \(AutoCallable.*damaged or crafted"),
    Case("probgen.load", "an autoguide module attribute", lambda: _load_crafted(lambda s: s.__setitem__("autoguide", "init_to_mean")), _CHECKPOINT, "names the autoguide 'init_to_mean', which is not one of Pyro's autoguides"),
    Case("probgen.load", "an unknown constraint name", lambda: _load_crafted(_first_constraint("__class__")), _CHECKPOINT, r"parameter '.*': unknown constraint '__class__'.*damaged or crafted"),
    Case("probgen.load", "a malformed constraint spec", lambda: _load_crafted(_first_constraint({"interval": ["a"]})), _CHECKPOINT, r"malformed constraint spec interval: \['a'\]; it takes 2 number"),
    Case("probgen.load", "an unknown constraint spec", lambda: _load_crafted(_first_constraint({"eval": 1})), _CHECKPOINT, "unknown constraint spec {'eval': 1}"),
    Case("probgen.load", "no param_store", lambda: _load_crafted(lambda s: s.pop("param_store")), _CHECKPOINT, "damaged or crafted probgen-program file: it has no 'param_store'"),
    Case("probgen.load", "a bundled model's fit checkpoint with model=program", lambda: probgen.load(_checkpoint("gmm"), model=program), TypeError, r"is a fit checkpoint of the bundled model GaussianMixture\(num_components=2, num_features=3.*not of a Pyro program: resume it with probgen.fit\(GaussianMixture\(...\)"),
    # 17: AIS and PCD chains
    Case("RBM (evaluate)", "AIS num_chains=10**12", lambda: probgen.evaluate(_cls("probgen.models.ebm", "RBM")(6, 4), _RBM_DATA, estimator="ais", num_chains=10**12), ValueError, r"num_chains=1,000,000,000,000 would fill .*TiB.*use at most [\d,]+ chains"),
    Case("RBM (evaluate)", "RAISE num_chains=10**12", lambda: probgen.evaluate(_cls("probgen.models.ebm", "RBM")(6, 4), _RBM_DATA, estimator="raise", num_chains=10**12), ValueError, r"num_chains=1,000,000,000,000 would fill"),
    Case("RBM (fit)", "PCD num_chains=10**12", lambda: probgen.fit(_cls("probgen.models.ebm", "RBM")(6, 4), _RBM_DATA, method="pcd", num_chains=10**12, num_steps=1, progress=False), ValueError, r"num_chains=1,000,000,000,000 would fill"),
    # 18-19: values beyond a dtype's range, log-likelihoods that overflow
    Case("GaussianMixture.log_prob", "float64 1e39 to a float32 model", lambda: _gmm().log_prob(_HUGE), ValueError, r"data has values up to 1e\+39, beyond float32's range \(3.4e\+38\); rescale it or use a float64 model \(model.double\(\)\)"),
    Case("probgen.fit", "float64 1e39 to a float32 model", lambda: probgen.fit(_gmm(), _HUGE, num_steps=1, progress=False), ValueError, r"data has values up to 1e\+39, beyond float32's range"),
    Case("probgen.evaluate", "a float64 NumPy array up to 1e39", lambda: probgen.evaluate(_gmm(), _HUGE.numpy()), ValueError, r"data has values up to 1e\+39, beyond float32's range.*pass it as a float64 tensor \(torch.from_numpy\(x\)\) to a float64 model"),
    Case("probgen.fit", "a float64 NumPy array up to 1e39 (a program)", lambda: _fit(_HUGE.numpy()), ValueError, r"data has values up to 1e\+39, beyond float32's range"),
    Case("LogLikelihood", "per-example values of 1e308", lambda: _log_likelihood([1e308, -1e308]), ValueError, r"per-example log-likelihood 1e\+308 \(row 0\) is beyond ±1e\+300 nats"),
]

ACCEPTED += [
    ("probgen.fit", "optim=np.float32(0.01) and optim={'lr': np.float32}", lambda: _fit(GOOD, optim=np.float32(0.01)).num_steps == 2 and _fit(GOOD, optim={"lr": np.float32(0.01)}).num_steps == 2),
    ("probgen.fit", "NumPy integers for every count", lambda: _fit(GOOD, num_steps=np.int64(3), num_particles=np.int64(2), checkpoint_every=np.int64(1), seed=np.int64(1), batch_size=np.int64(5), patience=np.int64(2), validation=GOOD, validate_every=np.int64(1)).num_steps == 3),
    ("probgen.fit", "NumPy epochs", lambda: _fit(GOOD, num_steps=None, epochs=np.int64(2), batch_size=10).num_steps == 4),
    ("probgen.fit", "a checkpoint written with NumPy integers resumes", lambda: (lambda path: _fit(GOOD, num_steps=np.int64(2), seed=np.int64(0), batch_size=np.int64(5), checkpoint=path) and _fit(GOOD, num_steps=4, batch_size=5, checkpoint=path, resume=True).num_steps == 4)(_tmp("np.pt"))),
    ("probgen.fit", "resume with a new learning rate (and the same seed)", lambda: _resume(optim=1e-3, seed=0).num_steps == 8),
    ("probgen.fit", "a lock of a process that has ended, or of a reused pid", lambda: _locked_by("999999999").num_steps == 2 and _locked_by(f"{os.getppid()} 1").num_steps == 2),
    ("probgen.fit", "progress=np.bool_(False)", lambda: probgen.fit(program, GOOD, num_steps=1, progress=np.bool_(False)).num_steps == 1),
    ("probgen.evaluate", "k=np.int64(3) and batch_size=np.int64(2)", lambda: probgen.evaluate(latent_program, GOOD, guide=probgen.fit(latent_program, GOOD, num_steps=1, progress=False).guide, estimator="iwae", k=np.int64(3), batch_size=np.int64(2)).settings["k"] == 3),
    ("probgen.evaluate", "bundled model with batch_size=np.int64(2)", lambda: probgen.evaluate(_gmm(), GOOD, batch_size=np.int64(2)).num_examples == 20),
    ("probgen.evaluate", "posterior draws of the right shape", lambda: probgen.evaluate(global_program, GOOD, posterior={"W": torch.randn(10, 5, 3)}, num_draws=np.int64(4)).settings["num_draws"] == 4),
    ("LogLikelihood", "-inf (an impossible example) and 1e300", lambda: _log_likelihood([float("-inf"), -1e300]).num_examples == 2),
]


_SAVED: dict[str, str] = {}
FIT_IRIS = ["fit", "gmm", "--data", "iris", "--set", "num_components=2", "--quiet"]


def _run() -> str:
    """A tiny fitted CLI run (standardized iris), made once."""
    if "run" not in _SAVED:
        out = _tmp("run")
        assert cli_main(FIT_IRIS[:-1] + ["--standardize", "--set", 'covariance="diag"', "--steps",
                                         "3", "--quiet", "--out", out]) == 0
        _SAVED["run"] = out
    return _SAVED["run"]


def _run_with_prep(edit) -> str:
    """A copy of the run whose data.json is edited (or replaced) by ``edit(folder, prep)``."""
    copy = _tmp("run")
    shutil.copytree(_run(), copy)
    path = os.path.join(copy, "data.json")
    prep = json.load(open(path))
    if edit(copy, prep) is None:
        with open(path, "w") as f:
            json.dump(prep, f)
    return copy


def _set(key, value):
    return lambda folder, prep: prep.__setitem__(key, value)


def _prep_fifo(folder, prep):
    os.remove(os.path.join(folder, "data.json"))
    os.mkfifo(os.path.join(folder, "data.json"))
    return True


def _npy(array, name: str = "x.npy") -> str:
    path = _tmp(name)
    np.save(path, array)
    return path


def _vae_fit(*extra: str) -> list[str]:
    return ["fit", "vae", "--data", "iris", "--binarize", "5", "--set", "latent_dim=2", "--set",
            "hidden_features=[8]", "--quiet", "--steps", "3", "--out", _tmp("v")] + list(extra)


def _result_json() -> str:
    path = _tmp("test.json")
    probgen.LogLikelihood(torch.tensor([-1.0, -2.0]), kind="exact", estimator="exact",
                          num_dims=1, data_space="continuous").to_json(path)
    return path


_DAMAGED = "data.json is damaged: {}; fit the run again, or delete data.json"
CLI_LAZY = [
    # non-finite hyper-parameters: refused by name, not blamed on a learning rate
    ("probgen fit", "--lr inf", lambda: _vae_fit("--lr", "inf"), r"--lr must be a finite number, got inf.*e\.g\. --lr 1e-3"),
    ("probgen fit", "--lr nan", lambda: _vae_fit("--lr", "nan"), "--lr must be a finite number, got nan"),
    ("probgen fit", "--lr -1", lambda: _vae_fit("--lr", "-1"), "--lr must be positive, got -1.0"),
    ("probgen fit", "--final-lr inf", lambda: _vae_fit("--lr-schedule", "cosine", "--final-lr", "inf"), "--final-lr must be a finite number, got inf"),
    ("probgen fit", "--free-bits inf", lambda: _vae_fit("--free-bits", "inf"), r"--free-bits must be a finite number, got inf.*--free-bits 0\.5"),
    ("probgen fit", "--kl-warmup-epochs nan", lambda: _vae_fit("--kl-warmup-epochs", "nan"), "--kl-warmup-epochs must be a finite number, got nan"),
    ("probgen fit", "--ema-decay 2", lambda: _vae_fit("--ema-decay", "2"), r"--ema-decay must be a number in \(0, 1\), got 2.0"),
    ("probgen fit", "--particles 10**9", lambda: _vae_fit("--particles", "1000000000"), r"--particles=1,000,000,000 would fill .*TiB.*at most [\d,]+ particles or a smaller --batch-size"),
    # flags an exact method has no use for
    ("probgen fit", "--particles with EM", lambda: FIT_IRIS + ["--particles", "5", "--out", _tmp("o")], "--particles shapes an SVI objective, but gmm trains with em.*--method svi"),
    ("probgen fit", "--loss with EM", lambda: FIT_IRIS + ["--loss", "iwae", "--out", _tmp("o")], "--loss shapes an SVI objective, but gmm trains with em"),
    ("probgen fit", "--set given twice", lambda: FIT_IRIS + ["--set", "num_components=3", "--out", _tmp("o")], r"--set num_components is given twice \(2, then 3\); pass it once"),
    ("probgen fit", "--key with a bundled data set", lambda: FIT_IRIS + ["--key", "a", "--out", _tmp("o")], "--key 'a' names an array inside an .npz file, but --data iris is a bundled data set"),
    ("probgen fit", "--key with a .npy file", lambda: FIT_IRIS + ["--data", _npy(np.random.rand(20, 3)), "--key", "a", "--out", _tmp("o")], r"--key 'a' .* is a \.npy file; drop --key"),
    # files that are pipes, devices or folders
    ("probgen fit", "--data a FIFO (.npy)", lambda: FIT_IRIS + ["--data", _fifo(".npy"), "--out", _tmp("o")], r"--data .*pipe\d+\.npy is a pipe \(FIFO\), not a regular file"),
    ("probgen fit", "--data a FIFO (.csv)", lambda: FIT_IRIS + ["--data", _fifo(".csv"), "--out", _tmp("o")], r"is a pipe \(FIFO\), not a regular file"),
    ("probgen fit", "--data /dev/zero", lambda: FIT_IRIS + ["--data", "/dev/zero", "--out", _tmp("o")], "--data /dev/zero is a device, not a regular file"),
    ("probgen fit", "--data a folder", lambda: FIT_IRIS + ["--data", _tmp(), "--out", _tmp("o")], r"--data .* is a folder; pass a \.npy, \.npz, \.pt or \.csv file"),
    ("probgen evaluate", "model.pt a FIFO", lambda: ["evaluate", _fifo(".pt"), "--data", "iris"], r"the run's model .* is a pipe \(FIFO\)"),
    ("probgen evaluate", "data.json a FIFO", lambda: ["evaluate", _run_with_prep(_prep_fifo), "--data", "iris"], r"data preparation .*data.json is a pipe \(FIFO\).*delete it"),
    ("probgen evaluate", "--out a FIFO", lambda: ["evaluate", _run(), "--data", "iris", "--out", _fifo(".json")], "--out .* is a pipe, socket or device, not a regular file"),
    ("probgen sample", "--out a FIFO", lambda: ["sample", _run(), "--out", _fifo(".pt")], "--out .* is a pipe, socket or device"),
    ("probgen compare", "--plot a FIFO", lambda: ["compare", _result_json(), "--plot", _fifo(".png")], "--plot .* is a pipe, socket or device"),
    ("probgen compare", "--plot of an unknown image type", lambda: ["compare", _result_json(), "--plot", _tmp("chart.pt")], r"--plot .*chart.pt: unknown image suffix '\.pt'; name a \.png"),
    # data files: values and layouts
    ("probgen fit", "values beyond float32", lambda: FIT_IRIS + ["--data", _npy(np.full((20, 3), 1e308) * np.random.rand(20, 3)), "--out", _tmp("o")], r"has values up to .*e\+307, beyond the range of the model's float32 .*rescale the data"),
    ("probgen fit", "--standardize on values near 1e308", lambda: FIT_IRIS + ["--standardize", "--data", _npy(np.concatenate([np.full((10, 3), -1e308), np.full((10, 3), 1e308)])), "--out", _tmp("o")], "--standardize: the mean or standard deviation of --data .* overflows"),
    ("probgen fit", "a NaN row with --standardize", lambda: FIT_IRIS + ["--standardize", "--data", _npy(np.concatenate([np.random.rand(19, 3), np.full((1, 3), np.nan)])), "--out", _tmp("o")], r"--data .*x.npy has NaN in 1 row\(s\) \(first: row 19\)"),
    ("probgen fit", "--data sparse .pt", lambda: FIT_IRIS + ["--data", (lambda p: (torch.save(torch.eye(3).to_sparse(), p), p)[1])(_tmp("s.pt")), "--out", _tmp("o")], r"holds a torch.sparse_coo tensor; save a dense one"),
    ("probgen fit", "--data .npz with no arrays", lambda: FIT_IRIS + ["--data", (lambda p: (np.savez(p), p)[1])(_tmp("e.npz")), "--out", _tmp("o")], r"--data .*e.npz holds no arrays"),
    ("probgen fit", "--data .csv with blank lines only (one stderr line)", lambda: FIT_IRIS + ["--data", (lambda p: (open(p, "w").write("\n\n"), p)[1])(_tmp("e.csv")), "--out", _tmp("o")], "holds no examples"),
    # a run's damaged data.json: named, not reported as Inf or NaN in the data
    ("probgen evaluate", "data.json std 0", lambda: ["evaluate", _run_with_prep(_set("std", [0.0] * 4)), "--data", "iris"], _DAMAGED.format(r"its std has a value <= 0 \(feature 0\).*")),
    ("probgen evaluate", "data.json std NaN", lambda: ["evaluate", _run_with_prep(_set("std", [float("nan")] * 4)), "--data", "iris"], _DAMAGED.format("its mean and std must be lists of finite numbers")),
    ("probgen evaluate", "data.json mean a string", lambda: ["evaluate", _run_with_prep(_set("mean", "x")), "--data", "iris"], "its mean and std must be lists of finite numbers"),
    ("probgen evaluate", "data.json mean of another length", lambda: ["evaluate", _run_with_prep(_set("mean", [0.0] * 3)), "--data", "iris"], "its mean has 3 values but its std 4"),
    ("probgen evaluate", "data.json binarize a string", lambda: ["evaluate", _run_with_prep(_set("binarize", "x")), "--data", "iris"], "binarize is 'x', not a finite threshold or null"),
    ("probgen evaluate", "data.json split unknown", lambda: ["evaluate", _run_with_prep(_set("split", "bogus")), "--data", "iris"], "split is 'bogus', not 'all', 'train' or 'test'"),
    ("probgen evaluate", "data.json log_jacobian NaN", lambda: ["evaluate", _run_with_prep(_set("log_jacobian", float("nan"))), "--data", "iris"], "log_jacobian is nan, not a finite number"),
    ("probgen sample", "data.json std 0", lambda: ["sample", _run_with_prep(_set("std", [0.0] * 4)), "--out", _tmp("s.pt")], "its std has a value <= 0"),
    # sizes
    ("probgen evaluate", "--k 10**12", lambda: ["evaluate", _run(), "--data", "iris", "--estimator", "iwae", "--k", "1000000000000"], r"--k=1,000,000,000,000 would fill .*use at most [\d,]+ \(IWAE-5000 is the usual ceiling\)"),
    ("probgen sample", "-n 10**12", lambda: ["sample", _run(), "-n", "1000000000000", "--out", _tmp("s.pt")], r"-n=1,000,000,000,000 would fill .*TiB.*use at most [\d,]+ per call"),
    # resume: another run's settings
    ("probgen fit", "--resume with another --seed", lambda: FIT_IRIS[:-1] + ["--standardize", "--set", 'covariance="diag"', "--steps", "6", "--quiet", "--resume", "--seed", "5", "--out", _run()], "--resume: the run in .* was fitted with seed=0, now 5; pass the same flags"),
    ("probgen fit", "--resume with another --method", lambda: FIT_IRIS[:-1] + ["--standardize", "--set", 'covariance="diag"', "--steps", "6", "--quiet", "--resume", "--method", "svi", "--out", _run()], "fitted with method='em', now 'svi'"),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=f"{c.entry}: {c.problem}") for c in CASES])
def test_python_entry_point_rejects_bad_input(case):
    with pytest.raises(case.error) as caught:
        case.call()
    assert re.search(case.match, str(caught.value)), str(caught.value)


@pytest.mark.parametrize("entry,problem,call", ACCEPTED, ids=[f"{c[0]}: {c[1]}" for c in ACCEPTED])
def test_valid_numpy_scalars_and_finite_iterables_are_accepted(entry, problem, call):
    assert call()


@pytest.mark.parametrize("entry,problem,argv,match", CLI_LAZY, ids=[f"{c[0]}: {c[1]}" for c in CLI_LAZY])
def test_cli_rejects_bad_input_with_one_line_and_exit_2(entry, problem, argv, match, capsys):
    args = argv()
    capsys.readouterr()
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("probgen: error:"), err
    assert re.search(match, err), err


def test_generator_trains_on_every_batch_including_the_first():
    """A one-shot iterator's first batch (read to size the run) is trained on, not dropped."""
    seen = []

    def recording(x):
        seen.append(float(x[0, 0]))
        program(x)

    batches = [torch.full((5, 3), float(i)) for i in range(3)]
    probgen.fit(recording, iter(batches), num_examples=15, num_steps=3, progress=False)
    assert {0.0, 1.0, 2.0} <= set(seen)


def test_sweep3_lists_its_coverage(capsys):
    entries = sorted({c.entry for c in CASES} | {c[0] for c in ACCEPTED + CLI_LAZY})
    total = len(CASES) + len(ACCEPTED) + len(CLI_LAZY)
    with capsys.disabled():
        print(f"\nsweep 3: {total} inputs over {len(entries)} entry points")
    assert total >= 100
