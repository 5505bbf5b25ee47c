"""Every public entry point, driven with bad input, answers with a clear error naming the fix.

Each case: (entry point, what is wrong, call, expected error type, a regex the message must
match). The CLI cases must exit with code 2 and print one line, no traceback. The last test
prints the coverage: entry points and the number of bad inputs tried. A case that still lets a
raw torch/pyro/numpy/OS error escape is a known bug: it is marked ``xfail(strict=True)`` with a
one-line reproduction (``_bug``), so that it turns into a failure once fixed and can be unmarked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import pytest
import torch

import probgen
from probgen.cli import main as cli_main


@dataclass(frozen=True)
class Case:
    entry: str
    problem: str
    call: Callable[[], object]
    error: type[BaseException] | tuple[type[BaseException], ...]
    match: str


def program(x):
    loc = pyro.param("loc", torch.zeros(3))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)


def latent_program(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def latent_guide(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(0.0, 1.0))


GOOD = torch.randn(20, 3)
NAN = GOOD.clone()
NAN[4, 1] = float("nan")
INF = GOOD.clone()
INF[7, 0] = float("inf")


def _ll(values, space="continuous"):
    return probgen.LogLikelihood(torch.tensor(values), kind="exact", estimator="exact",
                                 num_dims=1, data_space=space)


def _gmm():
    from probgen.models.mixture import GaussianMixture

    return GaussianMixture(2, 3).double()


CASES: list[Case] = [
    # probgen.fit
    Case("probgen.fit", "NaN", lambda: probgen.fit(program, NAN, num_steps=1, progress=False), ValueError, "NaN.*row 4.*drop or impute"),
    Case("probgen.fit", "Inf", lambda: probgen.fit(program, INF, num_steps=1, progress=False), ValueError, "Inf.*row 7"),
    Case("probgen.fit", "empty data", lambda: probgen.fit(program, torch.zeros(0, 3), num_steps=1, progress=False), ValueError, "empty"),
    Case("probgen.fit", "scalar data", lambda: probgen.fit(program, torch.tensor(1.0), num_steps=1, progress=False), ValueError, "at least 1 dimension"),
    Case("probgen.fit", "batch_size 0", lambda: probgen.fit(program, GOOD, batch_size=0, progress=False), ValueError, "positive integer"),
    Case("probgen.fit", "absurd batch_size", lambda: probgen.fit(program, GOOD, batch_size=10**9, progress=False), ValueError, "exceeds"),
    Case("probgen.fit", "negative steps", lambda: probgen.fit(program, GOOD, num_steps=-3, progress=False), ValueError, "num_steps"),
    Case("probgen.fit", "side data of other length", lambda: probgen.fit(program, (GOOD, torch.ones(5)), num_steps=1, progress=False), ValueError, "share their first"),
    Case("probgen.fit", "not a tensor", lambda: probgen.fit(program, "data.csv", num_steps=1, progress=False), TypeError, "torch.Tensor or numpy"),
    Case("probgen.fit", "model not callable", lambda: probgen.fit(42, GOOD, num_steps=1, progress=False), TypeError, "Pyro program"),
    Case("probgen.fit", "no data plate", lambda: probgen.fit(lambda x: pyro.sample("x", dist.Normal(0., 1.).expand(x.shape).to_event(2), obs=x), GOOD, num_steps=1, progress=False), ValueError, "pyro.plate"),
    Case("probgen.fit", "bad optimizer", lambda: probgen.fit(program, GOOD, optim="sgd", num_steps=1, progress=False), TypeError, "optim"),
    # probgen.evaluate
    Case("probgen.evaluate", "k = 0", lambda: probgen.evaluate(latent_program, torch.randn(4), guide=latent_guide, estimator="iwae", k=0), ValueError, "k must be a positive"),
    Case("probgen.evaluate", "k negative", lambda: probgen.evaluate(latent_program, torch.randn(4), guide=latent_guide, estimator="iwae", k=-5), ValueError, "k must be a positive"),
    Case("probgen.evaluate", "batch_size 0", lambda: probgen.evaluate(program, GOOD, batch_size=0), ValueError, "batch_size"),
    Case("probgen.evaluate", "unknown estimator", lambda: probgen.evaluate(program, GOOD, estimator="magic"), ValueError, "unknown estimator"),
    Case("probgen.evaluate", "NaN", lambda: probgen.evaluate(program, NAN), ValueError, "NaN"),
    Case("probgen.evaluate", "empty", lambda: probgen.evaluate(program, torch.zeros(0, 3)), ValueError, "empty"),
    Case("probgen.evaluate", "no guide for continuous latents", lambda: probgen.evaluate(latent_program, torch.randn(4)), ValueError, "guide"),
    # probgen.compare
    Case("probgen.compare", "nothing to compare", lambda: probgen.compare({}), ValueError, "at least one"),
    Case("probgen.compare", "bare floats", lambda: probgen.compare({"a": -1.0}), TypeError, "LogLikelihood"),
    Case("probgen.compare", "mass vs density", lambda: probgen.compare({"a": _ll([-1.0], "discrete"), "b": _ll([-1.0])}), ValueError, "mass against a probability density"),
    Case("probgen.compare", "different test sets", lambda: probgen.compare({"a": _ll([-1.0]), "b": _ll([-1.0, -2.0])}), ValueError, "same held-out data"),
    # LogLikelihood
    Case("LogLikelihood", "unknown kind", lambda: probgen.LogLikelihood(torch.zeros(2), kind="upper", estimator="x", num_dims=1, data_space="continuous"), ValueError, "kind must be"),
    Case("LogLikelihood", "NaN values", lambda: _ll([float("nan")]), ValueError, "NaN"),
    # probgen.save / load
    Case("probgen.save", "raw program", lambda: probgen.save(program, _tmp("x.pt")), TypeError, "FitResult of probgen.fit"),
    Case("probgen.load", "missing file", lambda: probgen.load("/nonexistent/model.pt"), FileNotFoundError, "no checkpoint"),
    # data
    Case("probgen.data.load_dataset", "unknown name", lambda: probgen.data.load_dataset("imagenet"), ValueError, "unknown data set"),
    Case("probgen.data.validate_data", "non-binary for Bernoulli", lambda: probgen.data.validate_data(torch.tensor([0.0, 2.0]), support="binary"), ValueError, "binary"),
    Case("probgen.data.validate_data", "negative counts", lambda: probgen.data.validate_data(torch.tensor([3, -1]), support="count"), ValueError, "negative"),
    Case("probgen.models.get_model_class", "unknown model", lambda: probgen.models.get_model_class("gpt"), ValueError, "unknown model 'gpt'"),
    # bundled models: feature count and device
    Case("GaussianMixture.log_prob", "wrong feature count", lambda: probgen.evaluate(_gmm(), torch.randn(5, 4).double()), ValueError, "expects \\(3,\\)"),
    Case("GaussianMixture (evaluate)", "data on another device", lambda: probgen.evaluate(_gmm(), torch.randn(5, 3, device="meta")), ValueError, "on meta but the model is on cpu"),
    Case("GaussianMixture (fit)", "integer data with NaN-free but wrong rank", lambda: probgen.fit(_gmm(), torch.ones(5, 3, 2).double(), num_steps=1, progress=False), ValueError, "expects"),
]

def _hmm():
    from probgen.models.hmm import HMM

    return HMM(3, "gaussian", num_features=2).double()


def _vae():
    from probgen.models.vae import VAE

    return VAE((6,), latent_dim=2, hidden_features=(8,))


def _rbm():
    from probgen.models.ebm import RBM

    return RBM(6, 3).double()


def _flow():
    from probgen.models.flow import FlowModel

    return FlowModel(3, kind="maf", transforms=1, hidden=(8,)).double()


def _family_cases() -> list[Case]:
    from probgen.data.sequences import pad_sequences
    from probgen.infer.mcmc import run_mcmc

    ragged = [torch.randn(4, 2).double(), torch.randn(2, 2).double()]
    seqs = torch.randn(2, 5, 2).double()
    return [
        Case("fit method=em (GMM)", "NaN", lambda: probgen.fit(_gmm(), NAN.double(), method="em", num_steps=2, progress=False), ValueError, "NaN"),
        Case("fit method=em (GMM)", "wrong feature count", lambda: probgen.fit(_gmm(), torch.randn(9, 5).double(), method="em", num_steps=2, progress=False), ValueError, r"\(3,\)"),
        Case("GaussianMixture", "zero components", lambda: __import__("probgen.models.mixture", fromlist=["x"]).GaussianMixture(0, 2), ValueError, "num_components"),
        Case("HMM.log_prob", "ragged sequences without padding", lambda: _hmm().log_prob(ragged), (ValueError, TypeError), "pad|ragged|lengths"),
        Case("HMM.log_prob", "lengths longer than the padded time", lambda: _hmm().log_prob(seqs, torch.tensor([7, 2])), ValueError, "length"),
        Case("HMM.log_prob", "wrong feature size", lambda: _hmm().log_prob(torch.randn(2, 5, 3).double()), ValueError, r"feature|\(2,\)"),
        Case("HMM (evaluate)", "NaN inside observed steps", lambda: probgen.evaluate(_hmm(), (torch.full((1, 3, 2), float("nan")).double(), torch.tensor([3]))), ValueError, "NaN"),
        Case("fit method=baum_welch", "negative lengths", lambda: probgen.fit(_hmm(), (seqs, torch.tensor([-1, 2])), method="baum_welch", num_steps=1, progress=False), ValueError, "length"),
        Case("pad_sequences", "empty list", lambda: pad_sequences([]), ValueError, "empty|at least one"),
        Case("VAE (fit)", "non-binary data for Bernoulli", lambda: probgen.fit(_vae(), torch.rand(10, 6), num_steps=1, progress=False), ValueError, "binar"),
        Case("VAE (evaluate)", "wrong feature count", lambda: probgen.evaluate(_vae(), torch.ones(4, 7), estimator="iwae", k=2), ValueError, r"\(6,\)"),
        Case("VAE (evaluate)", "k = 0", lambda: probgen.evaluate(_vae(), torch.ones(4, 6), estimator="iwae", k=0), ValueError, "k must be"),
        Case("RBM (evaluate)", "non-binary data", lambda: probgen.evaluate(_rbm(), torch.full((3, 6), 0.5).double(), estimator="exact"), ValueError, "whole numbers|binary"),
        Case("RBM (evaluate ais)", "zero chains", lambda: probgen.evaluate(_rbm(), torch.ones(3, 6).double(), estimator="ais", num_chains=0), ValueError, "num_chains|chains"),
        Case("FlowModel (evaluate)", "wrong feature count", lambda: probgen.evaluate(_flow(), torch.randn(4, 2).double()), ValueError, r"\(3,\)"),
        Case("FlowModel (fit)", "Inf", lambda: probgen.fit(_flow(), torch.full((4, 3), float("inf")).double(), num_steps=1, progress=False), ValueError, "Inf"),
        Case("FlowModel", "unknown kind", lambda: __import__("probgen.models.flow", fromlist=["x"]).FlowModel(3, kind="glow9"), ValueError, "kind|glow9"),
        Case("run_mcmc", "unknown kernel", lambda: run_mcmc(program, GOOD, kernel="gibbs9", num_samples=2, warmup_steps=1), ValueError, "kernel"),
        Case("probgen.load", "a program's fit checkpoint without the program", lambda: probgen.load(_fit_checkpoint()), TypeError, "model=program"),
    ]


def _fit_checkpoint() -> str:
    import tempfile

    path = tempfile.mktemp(suffix=".pt")
    probgen.fit(program, GOOD, num_steps=1, progress=False, checkpoint=path)
    return path


CASES += _family_cases()

CLI_CASES = [
    ("probgen fit", "unknown model name", ["fit", "nosuchmodel", "--data", "iris"], "unknown model"),
    ("probgen fit", "missing data file", ["fit", "gmm", "--data", "/no/such.npy"], "neither a bundled"),
    ("probgen fit", "bad --set", ["fit", "gmm", "--data", "iris", "--set", "oops"], "key=value"),
    ("probgen fit", "absurd batch size", ["fit", "gmm", "--data", "iris", "--set", "num_components=2", "--batch-size", "100000"], "exceeds"),
    ("probgen fit", "resume without checkpoint of same settings", ["fit", "gmm", "--data", "iris", "--set", "num_components=0"], "num_components"),
    ("probgen evaluate", "missing run", ["evaluate", "/no/run", "--data", "iris"], "no checkpoint"),
    ("probgen sample", "n <= 0", ["sample", "/no/run", "-n", "0"], "positive number"),
    ("probgen compare", "missing result", ["compare", "/no/result.json"], "no result file"),
]


def _cls(module: str, name: str):
    return getattr(__import__(module, fromlist=["x"]), name)


def _crafted_model(tmp: str, edit) -> str:
    """A real saved GaussianMixture file, then one field edited the way an attacker or a disk
    error would."""
    import os
    import tempfile

    from probgen.core.checkpoint import atomic_save

    state = torch.load(_saved_gmm(), weights_only=True)
    edit(state)
    path = os.path.join(tempfile.mkdtemp(), f"{tmp}.pt")
    atomic_save(state, path)
    return path


_SAVED: dict[str, str] = {}


def _saved_gmm() -> str:
    import tempfile

    if "gmm" not in _SAVED:
        _SAVED["gmm"] = tempfile.mktemp(suffix=".pt")
        probgen.save(_cls("probgen.models.mixture", "GaussianMixture")(2, 3), _SAVED["gmm"])
    return _SAVED["gmm"]


def _set(key, value):
    def edit(state):
        state[key] = value
    return edit


def _config(key, value):
    def edit(state):
        state["config"][key] = value
    return edit


def _bytes_file(suffix: str, payload: bytes) -> str:
    import tempfile

    path = tempfile.mktemp(suffix=suffix)
    with open(path, "wb") as f:
        f.write(payload)
    return path


NAN_F = float("nan")
CASES += [
    # sizes and hyper-parameters: checked before anything is allocated
    Case("GaussianMixture", "full covariance of tens of GB", lambda: _cls("probgen.models.mixture", "GaussianMixture")(2000, 1000), ValueError, r"num_components|GiB.*covariance='diag'"),
    Case("GaussianMixture", "non-integer size K=2.7", lambda: _cls("probgen.models.mixture", "GaussianMixture")(2.7, 3), ValueError, r"num_components must be an integer.*2\.7"),
    Case("GaussianMixture", "boolean as a size", lambda: _cls("probgen.models.mixture", "GaussianMixture")(True, 3), ValueError, "num_components must be an integer.*True"),
    Case("GaussianMixture", "NaN reg_covar", lambda: _cls("probgen.models.mixture", "GaussianMixture")(2, 3, reg_covar=NAN_F), ValueError, "reg_covar must be a finite"),
    Case("GaussianMixture", "string size", lambda: _cls("probgen.models.mixture", "GaussianMixture")("3", 3), ValueError, "num_components must be an integer"),
    Case("RBM", "NaN init_scale", lambda: _cls("probgen.models.ebm", "RBM")(6, 3, init_scale=NAN_F), ValueError, "init_scale must be a finite"),
    Case("RBM", "non-integer num_hidden", lambda: _cls("probgen.models.ebm", "RBM")(6, 2.5), ValueError, "num_hidden must be an integer"),
    Case("RBM", "huge weight matrix", lambda: _cls("probgen.models.ebm", "RBM")(10**6, 10**5), ValueError, "would allocate .*GiB.*PROBGEN_MAX_PARAMETER_BYTES"),
    Case("GaussianRBM", "NaN sigma", lambda: _cls("probgen.models.ebm", "GaussianRBM")(6, 3, sigma=NAN_F), ValueError, "sigma must be a finite"),
    Case("GaussianRBM", "negative sigma", lambda: _cls("probgen.models.ebm", "GaussianRBM")(6, 3, sigma=-1.0), ValueError, "sigma must be positive"),
    Case("NeuralEBM", "fractional layer width", lambda: _cls("probgen.models.ebm", "NeuralEBM")(3, hidden_sizes=(8.5,)), ValueError, "hidden_sizes.*integer"),
    Case("HMM", "boolean num_states", lambda: _cls("probgen.models.hmm", "HMM")(True, num_features=2), ValueError, "num_states must be an integer >= 1, got True"),
    Case("HMM", "non-integer num_features", lambda: _cls("probgen.models.hmm", "HMM")(3, num_features=2.5), ValueError, "num_features must be an integer"),
    Case("HMM", "huge full covariance", lambda: _cls("probgen.models.hmm", "HMM")(1000, num_features=10**4, covariance="full"), ValueError, "would allocate"),
    Case("probgen.fit", "num_steps=True", lambda: probgen.fit(program, GOOD, num_steps=True, progress=False), ValueError, "num_steps must be a positive integer"),
    Case("probgen.fit", "batch_size=True", lambda: probgen.fit(program, GOOD, num_steps=1, batch_size=True, progress=False), ValueError, "batch_size must be a positive integer"),
    Case("probgen.fit", "seed above 2**32-1", lambda: probgen.fit(program, GOOD, num_steps=1, seed=2**33, progress=False), ValueError, "seed must be an integer in 0"),
    # crafted or corrupt model files
    Case("probgen.load", "config num_components=10**6", lambda: probgen.load(_crafted_model("big", _config("num_components", 10**6))), probgen.core.checkpoint.CheckpointError, r"shape .*needs \(1000000|would allocate"),
    Case("probgen.load", "config num_features=10**5 (tens of GB)", lambda: probgen.load(_crafted_model("huge", _config("num_features", 10**5))), probgen.core.checkpoint.CheckpointError, "would allocate .*GiB"),
    Case("probgen.load", "state_dict size mismatch", lambda: probgen.load(_crafted_model("mismatch", lambda s: s["state_dict"].__setitem__("locs", torch.zeros(5, 3)))), probgen.core.checkpoint.CheckpointError, r"'locs' has shape \(5, 3\)"),
    Case("probgen.load", "model name missing", lambda: probgen.load(_crafted_model("noname", lambda s: s.pop("model"))), probgen.core.checkpoint.CheckpointError, "'model' is NoneType"),
    Case("probgen.load", "config not a dict", lambda: probgen.load(_crafted_model("cfg", _set("config", [1, 2]))), probgen.core.checkpoint.CheckpointError, "'config' is list"),
    Case("probgen.load", "unknown model in file", lambda: probgen.load(_crafted_model("unk", _set("model", "gpt"))), probgen.core.checkpoint.CheckpointError, "unknown model 'gpt'"),
    Case("probgen.load", "config key the class does not take", lambda: probgen.load(_crafted_model("key", _config("bogus", 1))), probgen.core.checkpoint.CheckpointError, "config does not fit GaussianMixture"),
    Case("probgen.load", "non-tensor in state_dict", lambda: probgen.load(_crafted_model("nt", lambda s: s["state_dict"].__setitem__("locs", [1, 2]))), probgen.core.checkpoint.CheckpointError, "not a named tensor"),
    Case("probgen.load", "format_version a string", lambda: probgen.load(_crafted_model("fv", _set("format_version", "x"))), probgen.core.checkpoint.CheckpointError, "malformed format_version"),
    Case("probgen.load", "random bytes", lambda: probgen.load(_bytes_file(".pt", b"\x80\x02garbage" * 10)), probgen.core.checkpoint.CheckpointError, "not a readable checkpoint|refusing"),
    Case("probgen.load", "truncated zip", lambda: probgen.load(_bytes_file(".pt", open(_saved_gmm(), "rb").read()[:300])), probgen.core.checkpoint.CheckpointError, "not a readable checkpoint"),
    Case("probgen.load", "a folder", lambda: probgen.load(__import__("tempfile").mkdtemp()), probgen.core.checkpoint.CheckpointError, "is a folder"),
]


def _tmp(name: str = "") -> str:
    import tempfile

    return tempfile.mkdtemp() + ("/" + name if name else "")


def _gmm_run() -> str:
    """A tiny fitted CLI run (standardized iris), made once."""
    if "run" not in _SAVED:
        out = _tmp("run")
        assert cli_main(["fit", "gmm", "--data", "iris", "--standardize", "--set", "num_components=2",
                         "--set", 'covariance="diag"', "--steps", "3", "--quiet", "--out", out]) == 0
        _SAVED["run"] = out
    return _SAVED["run"]


def _npy(array) -> str:
    import numpy as np

    path = _tmp("x.npy")
    np.save(path, array)
    return path


def _evil_pt() -> str:
    import argparse

    path = _tmp("evil.pt")
    torch.save(argparse.Namespace(payload="os.system"), path)
    return path


def _result_json() -> str:
    path = _tmp("test.json")
    _ll([-1.0, -2.0]).to_json(path)
    return path


FIT_IRIS = ["fit", "gmm", "--data", "iris", "--set", "num_components=2", "--quiet"]

# (entry, problem, argv factory, message regex): built when the test runs (files, runs).
CLI_LAZY = [
    ("probgen fit", "diverging --lr 1e6 (rolled-back model.pt still written)", lambda: FIT_IRIS + ["--method", "svi", "--lr", "1e6", "--steps", "30", "--out", _tmp("dv")], "training diverged.*wrote the rolled-back parameters.*lower --lr"),
    ("probgen fit", "read-only output folder", lambda: FIT_IRIS + ["--out", "/proc/self/probgen-run"], "not writable|--out"),
    ("probgen fit", "--out names an existing file", lambda: FIT_IRIS + ["--out", _result_json()], "is an existing file"),
    ("probgen fit", "--out ''", lambda: FIT_IRIS + ["--out", ""], "--out is empty"),
    ("probgen fit", "--nproc 0", lambda: FIT_IRIS + ["--nproc", "0"], "--nproc must be a positive"),
    ("probgen fit", "--nproc -2", lambda: FIT_IRIS + ["--nproc", "-2"], "--nproc must be a positive"),
    ("probgen fit", "seed -1", lambda: FIT_IRIS + ["--seed", "-1"], r"--seed must be in 0 \.\. 2\*\*32 - 1"),
    ("probgen fit", "seed 2**32", lambda: FIT_IRIS + ["--seed", str(2**32)], "--seed must be in 0"),
    ("probgen fit", "seed not a number", lambda: FIT_IRIS + ["--seed", "abc"], "invalid int value.*--help"),
    ("probgen fit", "--data missing (argparse)", lambda: ["fit", "gmm"], "required.*--data"),
    ("probgen fit", "--device cuda without CUDA", lambda: FIT_IRIS + ["--device", "cuda"] if not torch.cuda.is_available() else FIT_IRIS + ["--device", "cuda:999"], "CUDA is not available|CUDA device"),
    ("probgen fit", "--device nonsense", lambda: FIT_IRIS + ["--device", "gpu7"], "is not a device"),
    ("probgen fit", "--data evil.pt (pickled object)", lambda: FIT_IRIS + ["--data", _evil_pt()], "refusing to load --data.*weights_only"),
    ("probgen fit", "--data corrupt .npy", lambda: FIT_IRIS + ["--data", _bytes_file(".npy", b"not numpy at all")], "cannot read --data"),
    ("probgen fit", "--data complex .npy", lambda: FIT_IRIS + ["--data", _npy(__import__("numpy").ones((10, 2)) * (1 + 2j))], "complex.*real part"),
    ("probgen fit", "--binarize nan", lambda: FIT_IRIS + ["--binarize", "nan"], "--binarize must be a finite"),
    ("probgen fit", "--binarize inf", lambda: FIT_IRIS + ["--binarize", "inf"], "--binarize must be a finite"),
    ("probgen fit", "--set num_components=2.7", lambda: ["fit", "gmm", "--data", "iris", "--set", "num_components=2.7", "--quiet"], "num_components must be an integer"),
    ("probgen fit", "--set num_components=true", lambda: ["fit", "gmm", "--data", "iris", "--set", "num_components=true", "--quiet"], "num_components must be an integer"),
    ("probgen fit", "--set num_components=10**6 (tens of GB)", lambda: ["fit", "gmm", "--data", "digits", "--set", "num_components=1000000", "--quiet"], "would allocate .*GiB"),
    ("probgen fit", "--quiet with --progress", lambda: FIT_IRIS + ["--progress", "--out", _tmp("q")], "--quiet and --progress"),
    ("probgen fit", "--resume with a changed config", lambda: ["fit", "gmm", "--data", "iris", "--standardize", "--set", "num_components=3", "--set", 'covariance="diag"', "--steps", "6", "--quiet", "--resume", "--out", _gmm_run()], "different config.*num_components"),
    ("probgen fit", "--resume another family's run", lambda: ["fit", "rbm", "--data", "iris", "--binarize", "0", "--set", "num_hidden=3", "--steps", "6", "--quiet", "--resume", "--out", _gmm_run()], "holds a 'gmm' run, not 'rbm'"),
    ("probgen evaluate", "--out names a folder", lambda: ["evaluate", _gmm_run(), "--data", "iris", "--out", _tmp()], "is a folder"),
    ("probgen evaluate", "corrupt model file", lambda: ["evaluate", _bytes_file(".pt", b"\x80\x02garbage" * 10), "--data", "iris"], "not a readable checkpoint|refusing"),
    ("probgen evaluate", "crafted size mismatch", lambda: ["evaluate", _crafted_model("mm", lambda s: s["state_dict"].__setitem__("locs", torch.zeros(5, 3))), "--data", "iris"], "'locs' has shape"),
    ("probgen evaluate", "crafted config of tens of GB", lambda: ["evaluate", _crafted_model("big", _config("num_features", 10**5)), "--data", "iris"], "would allocate"),
    ("probgen evaluate", "crafted non-dict config", lambda: ["evaluate", _crafted_model("cfg", _set("config", "x")), "--data", "iris"], "'config' is str"),
    ("probgen evaluate", "--binarize conflicting with the run", lambda: ["evaluate", _gmm_run(), "--data", "iris", "--binarize", "0.5"], "conflicts with the run"),
    ("probgen evaluate", "empty run", lambda: ["evaluate", "", "--data", "iris"], "run is empty"),
    ("probgen sample", "--out names a folder", lambda: ["sample", _gmm_run(), "--out", _tmp()], "is a folder"),
    ("probgen sample", "--out ''", lambda: ["sample", _gmm_run(), "--out", ""], "--out is empty"),
    ("probgen sample", "seed 2**32", lambda: ["sample", _gmm_run(), "--seed", str(2**32)], "--seed must be in 0"),
    ("probgen compare", "duplicate --names", lambda: ["compare", _result_json(), _result_json(), "--names", "m", "m"], "duplicate result names"),
    ("probgen compare", "the same file twice", lambda: (lambda same: ["compare", same, same] if _ll([-1.0]).to_json(same) or True else [])(_tmp("probgen-same.json")), "duplicate result names"),
    ("probgen compare", "a folder as result", lambda: ["compare", _tmp()], "is a folder"),
    ("probgen compare", "non-JSON result", lambda: ["compare", _bytes_file(".json", b"\xff\xfe not json")], "not a LogLikelihood JSON"),
    ("probgen demo", "--only nosuch", lambda: ["demo", "--only", "nosuch", "--smoke", "--out", _tmp()], "--only 'nosuch' is not a demo data set"),
    ("probgen demo", "--out ''", lambda: ["demo", "--smoke", "--only", "iris", "--out", ""], "--out is empty"),
]


# --- reliability sweep 2: bad data × every family and entry point, bad arguments, files -------
import numpy as _np  # noqa: E402

XFAIL: dict[int, str] = {}  # id(case) -> why it is a known bug (the case is marked xfail(strict))


def _bug(case: Case, reason: str) -> Case:
    XFAIL[id(case)] = reason
    return case


_FAMILIES = {  # name -> (factory, number of features)
    "GaussianMixture": (lambda: _cls("probgen.models.mixture", "GaussianMixture")(2, 3).double(), 3),
    "VAE": (lambda: _cls("probgen.models.vae", "VAE")((6,), latent_dim=2, hidden_features=(8,)), 6),
    "FlowModel": (lambda: _cls("probgen.models.flow", "FlowModel")(3, kind="maf", transforms=1, hidden=(8,)).double(), 3),
    "RBM": (lambda: _cls("probgen.models.ebm", "RBM")(6, 3).double(), 6),
    "GaussianRBM": (lambda: _cls("probgen.models.ebm", "GaussianRBM")(3, 2).double(), 3),
    "NeuralEBM": (lambda: _cls("probgen.models.ebm", "NeuralEBM")(3, hidden_sizes=(8,)).double(), 3),
    "DiffusionDensity": (lambda: _cls("probgen.models.diffusion", "DiffusionDensity")(3, hidden_features=(8,), time_features=4).double(), 3),
    "LatentDiffusionVAE": (lambda: _cls("probgen.models.latent_diffusion", "LatentDiffusionVAE")(6, latent_features=2, hidden_features=(8,), denoiser_features=(8,), time_features=4), 6),
    "HierarchicalVAE": (lambda: _cls("probgen.models.hierarchical", "HierarchicalVAE")((6,), latent_dims=(2, 2), hidden_features=((8,), (8,))), 6),
    "BernoulliMixture": (lambda: _cls("probgen.models.mixture", "BernoulliMixture")(2, 6).double(), 6),
    "MADE": (lambda: _cls("probgen.models.autoregressive", "MADE")(6, hidden_features=(8,)), 6),
    "PixelCNN": (lambda: _cls("probgen.models.autoregressive", "PixelCNN")(image_shape=(2, 3), channels=4, layers=2, head_channels=8), 6),
}

# kind -> (make(num_features), error type, message regex(num_features))
_BAD_DATA = {
    "NaN": (lambda f: torch.zeros(4, f).double().index_fill_(0, torch.tensor([2]), float("nan")), ValueError, lambda f: r"NaN in 1 row\(s\) \(first: row 2\).*drop or impute"),
    "+Inf": (lambda f: torch.full((4, f), float("inf")).double(), ValueError, lambda f: r"Inf in 4 row.*drop or impute"),
    "-Inf": (lambda f: torch.zeros(4, f).double().index_fill_(0, torch.tensor([3]), -float("inf")), ValueError, lambda f: r"Inf in 1 row\(s\) \(first: row 3\)"),
    "empty": (lambda f: torch.zeros(0, f).double(), ValueError, lambda f: rf"is empty \(shape \(0, {f}\)\); pass at least one example"),
    "one example without its batch dim": (lambda f: torch.zeros(f).double(), ValueError, lambda f: rf"examples of shape \(\) but the model expects \({f},\)"),
    "rank 3": (lambda f: torch.zeros(4, f, 2).double(), ValueError, lambda f: rf"examples of shape \({f}, 2\) but the model expects \({f},\)"),
    "one feature too many": (lambda f: torch.zeros(4, f + 1).double(), ValueError, lambda f: rf"examples of shape \({f + 1},\) but the model expects \({f},\).*features the model was fitted on"),
    "complex": (lambda f: torch.zeros(4, f, dtype=torch.complex64), TypeError, lambda f: r"complex \(torch.complex64\); probgen models real"),
    "numpy object array": (lambda f: _np.array([_np.zeros(f), _np.zeros(f - 1)], dtype=object), TypeError, lambda f: r"numpy array of Python objects.*pad it"),
    "ragged nested list": (lambda f: [[0.0] * f, [0.0] * (f - 1)], TypeError, lambda f: r"could not be made into a tensor.*need padding"),
    "numpy text array": (lambda f: _np.array([["0"] * f] * 4), TypeError, lambda f: r"holds text \(numpy dtype <U1\), not numbers"),
    "a file name": (lambda f: "data.csv", TypeError, lambda f: r"must be a torch.Tensor or numpy array, got str"),
    "a dict": (lambda f: {"x": torch.zeros(4, f)}, TypeError, lambda f: r"not a dict; pass the values in the order"),
    "None": (lambda f: None, TypeError, lambda f: r"must be a torch.Tensor or numpy array, got NoneType"),
    "meta tensor": (lambda f: torch.zeros(4, f, device="meta"), ValueError, lambda f: r"meta device and holds no values; pass real data"),
}


def _through(via_fit: bool, make_model, make, f: int) -> Callable[[], object]:
    def call():
        if via_fit:
            return probgen.fit(make_model(), make(f), num_steps=1, progress=False)
        return probgen.evaluate(make_model(), make(f))
    return call


def _family_matrix() -> list[Case]:
    """Every bad-data kind reaches every family once, alternately through fit and evaluate."""
    cases = []
    for i, (family, (make_model, f)) in enumerate(_FAMILIES.items()):
        for j, (kind, (make, error, match)) in enumerate(_BAD_DATA.items()):
            via_fit = (i + j) % 2 == 0
            call = _through(via_fit, make_model, make, f)
            entry = f"{family} ({'fit' if via_fit else 'evaluate'})"
            regex = match(f)
            if kind == "meta tensor" and entry.endswith("(evaluate)"):  # checked against the model
                regex = r"data is on meta but the model is on cpu; move one of them"
            if family == "PixelCNN" and "examples of shape" in regex:  # images: says both layouts
                regex = (r"examples of shape \(.*\) but this PixelCNN models 2x3 images: pass "
                         r"\(n, 1, 2, 3\) or flat \(n, 6\) data")
            cases.append(Case(entry, kind, call, error, regex))
    return cases


def _program_matrix() -> list[Case]:
    """A user's program: bad data through fit, evaluate, fit's validation= and run_mcmc."""
    from probgen.infer.mcmc import run_mcmc

    entries = {
        "probgen.fit": lambda x: probgen.fit(program, x, num_steps=1, progress=False),
        "probgen.evaluate": lambda x: probgen.evaluate(program, x),
        "probgen.fit validation=": lambda x: probgen.fit(program, GOOD, validation=x, num_steps=1, progress=False),
        "run_mcmc": lambda x: run_mcmc(program, x, num_samples=4, warmup_steps=1, progress=False),
    }
    skip = {"one example without its batch dim", "rank 3", "one feature too many"}  # below
    cases = []
    for entry, call in entries.items():
        for kind, (make, error, match) in _BAD_DATA.items():
            if kind in skip or (kind == "None" and entry in ("probgen.fit validation=", "run_mcmc")):
                continue  # validation=None means "no validation"; run_mcmc(model, None): below
            regex = match(3)
            if entry == "probgen.fit validation=":
                regex = regex.replace("is empty", "validation is empty")
                if kind in ("a file name", "complex", "None"):
                    regex = "validation.*" + regex
            cases.append(Case(entry, kind, lambda c=call, mk=make: c(mk(3)), error, regex))
    return cases


def _ebm_rbm():
    return _FAMILIES["RBM"][0]()


L4 = torch.randn(4)


def _latent_eval(**kw):
    return probgen.evaluate(latent_program, L4, guide=latent_guide, estimator="iwae", **kw)


def _fit(**kw):
    kw.setdefault("num_steps", 1)
    return probgen.fit(program, GOOD, progress=False, **kw)


def _in_tmp_dir(fn):
    """Run fn with a fresh temporary folder as the working directory (paths like '' resolve there)."""
    import os

    here = os.getcwd()
    os.chdir(_tmp())
    try:
        return fn()
    finally:
        os.chdir(here)


def _torch_file(obj) -> str:
    path = _tmp("t.pt")
    torch.save(obj, path)
    return path


def _seqs():
    return torch.randn(2, 5, 2).double()


def _pad(*args, **kw):
    from probgen.data.sequences import pad_sequences

    return pad_sequences(*args, **kw)


def _mcmc(data=GOOD, model=None, **kw):
    from probgen.infer.mcmc import run_mcmc

    def latent_loc(x):
        loc = pyro.sample("loc", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    kw = {"num_samples": 4, "warmup_steps": 1, "progress": False, **kw}
    return run_mcmc(model or latent_loc, data, **kw)


_ARG_VALUES = {"0": 0, "-1": -1, "True": True, "1.5": 1.5, "'3'": "3", "NaN": float("nan")}


def _argument_matrix() -> list[Case]:
    cases = []
    already = {("num_steps", "True"), ("num_steps", "-1"), ("batch_size", "0"), ("batch_size", "True")}
    for arg in ("num_steps", "epochs", "batch_size", "patience", "validate_every", "num_particles", "seed"):
        for label, value in _ARG_VALUES.items():
            if (arg, label) in already or (arg == "seed" and label == "0"):
                continue
            extra = {"num_steps": None} if arg == "epochs" else {}
            if arg in ("patience", "validate_every"):
                extra["validation"] = GOOD
            regex = (r"seed must be an integer in 0 \.\. 2\*\*32 - 1" if arg == "seed"
                     else f"{arg} must be a positive integer, got {re.escape(repr(value))}")
            cases.append(Case("probgen.fit", f"{arg}={label}",
                              lambda a=arg, v=value, e=extra: _fit(**{**e, a: v}), ValueError, regex))
    for label, value in _ARG_VALUES.items():
        if label not in ("0", "-1"):  # covered above
            cases.append(Case("probgen.evaluate", f"k={label}", lambda v=value: _latent_eval(k=v), ValueError,
                              f"k must be a positive integer number of particles, got {re.escape(repr(value))}"))
        if label not in ("0", "True"):  # 0 covered above; True is accepted as 1 by design of bool⊂int
            cases.append(Case("probgen.evaluate", f"batch_size={label}", lambda v=value: _latent_eval(batch_size=v),
                              ValueError, f"batch_size must be a positive integer, got {re.escape(repr(value))}"))
    for label, value in (("0", 0), ("-1", -1), ("NaN", float("nan"))):
        cases.append(Case("probgen.evaluate", f"num_dims={label}", lambda v=value: _latent_eval(num_dims=v),
                          ValueError, "num_dims must be a positive number"))
    return cases


CASES += _family_matrix() + _program_matrix() + _argument_matrix()

CASES += [
    # user programs: shape errors reach the user as Pyro's own error
    Case("probgen.evaluate", "program: one feature too many", lambda: probgen.evaluate(program, torch.randn(4, 4)), ValueError, r"data has examples of shape \(4,\).*expects"),
    # probgen.fit: methods, options, optimizers
    Case("probgen.fit", "unknown method", lambda: _fit(method="magic"), ValueError, r"unknown method 'magic' for function; choose one of \['svi'\]"),
    Case("probgen.fit", "method of another family (em on a program)", lambda: _fit(method="em"), ValueError, "unknown method 'em'"),
    Case("probgen.fit", "method of another family (em on a VAE)", lambda: probgen.fit(_vae(), torch.ones(4, 6), method="em", num_steps=1, progress=False), ValueError, r"unknown method 'em' for VAE"),
    Case("probgen.fit", "two_stage on a plain VAE", lambda: probgen.fit(_vae(), torch.ones(4, 6), method="two_stage", num_steps=1, progress=False), ValueError, "unknown method 'two_stage' for VAE"),
    Case("probgen.fit", "unknown method option", lambda: _fit(tol=1e-3), TypeError, r"unexpected options \['tol'\] for method SVI; it takes none"),
    Case("probgen.fit", "scheduler_every='batch'", lambda: _fit(scheduler_every="batch"), ValueError, "scheduler_every must be 'epoch' or 'step', got 'batch'"),
    Case("probgen.fit", "scheduler_every=None", lambda: _fit(scheduler_every=None), ValueError, "scheduler_every must be 'epoch' or 'step', got None"),
    Case("probgen.fit", "optim negative rate", lambda: _fit(optim=-0.1), ValueError, r"learning rate must be a finite positive number, got -0.1 \(optim\); pass e.g. optim=1e-3"),
    Case("probgen.fit", "optim zero rate", lambda: _fit(optim=0.0), ValueError, r"learning rate must be a finite positive number, got 0.0 \(optim\)"),
    Case("probgen.fit", "optim NaN rate", lambda: _fit(optim=float("nan")), ValueError, r"learning rate must be a finite positive number, got nan \(optim\)"),
    Case("probgen.fit", "optim a list", lambda: _fit(optim=[0.1]), TypeError, "optim must be a learning rate.*got list"),
    Case("probgen.fit", "optim a bool", lambda: _fit(optim=True), TypeError, "optim must be a learning rate.*got bool"),
    Case("probgen.fit", "optim a torch optimizer class", lambda: _fit(optim=torch.optim.Adam), TypeError, "optim must be a learning rate.*got type"),
    Case("probgen.fit", "optim dict with negative lr", lambda: _fit(optim={"lr": -1.0}), ValueError, r"learning rate must be a finite positive number, got -1.0 \(optim\['lr'\]\); pass e.g. optim=\{'lr': 1e-3\}"),
    Case("probgen.fit", "optim dict with an unknown key", lambda: _fit(optim={"learning_rate": 0.1}), (ValueError, TypeError), "optim.*learning_rate.*(lr|takes)"),
    Case("probgen.fit", "num_steps and epochs both", lambda: _fit(num_steps=1, epochs=1), ValueError, "pass num_steps or epochs, not both"),
    Case("probgen.fit", "unknown loss name", lambda: _fit(loss="magic"), ValueError, r"unknown loss 'magic'; choose one of"),
    Case("probgen.fit", "data_plate that does not exist", lambda: _fit(data_plate="nosuch"), ValueError, "outside the data plate 'nosuch'"),
    Case("probgen.fit", "resume=True without checkpoint", lambda: _fit(resume=True), ValueError, "resume=True needs checkpoint=PATH"),
    Case("probgen.fit", "resume from a missing checkpoint", lambda: _fit(resume=True, checkpoint="/nonexistent/x.pt"), FileNotFoundError, "no checkpoint at /nonexistent/x.pt; start a new run"),
    Case("probgen.fit", "empty tuple of data", lambda: probgen.fit(program, (), num_steps=1, progress=False), ValueError, "empty tuple; pass at least one tensor"),
    Case("probgen.fit", "None inside the data tuple", lambda: probgen.fit(program, (GOOD, None), num_steps=1, progress=False), TypeError, r"data\[1\] must be a torch.Tensor.*NoneType"),
    Case("probgen.fit", "list of tensors with other first dims", lambda: probgen.fit(program, [GOOD, torch.ones(3)], num_steps=1, progress=False), ValueError, r"share their first.*\(20, 3\), \(3,\)"),
    Case("probgen.fit", "side data one row short", lambda: probgen.fit(program, (GOOD, torch.ones(19, 2)), num_steps=1, progress=False), ValueError, r"share their first.*\(19, 2\)"),
    Case("probgen.fit", "numpy datetime array", lambda: probgen.fit(program, _np.zeros((4, 3), dtype="datetime64[s]"), num_steps=1, progress=False), TypeError, "dates/times"),
    Case("probgen.fit", "numpy structured array", lambda: probgen.fit(program, _np.zeros(4, dtype=[("a", "f8"), ("b", "f8")]), num_steps=1, progress=False), TypeError, "structured records"),
    Case("probgen.fit", "list with None rows", lambda: probgen.fit(program, [[0.0, 1.0, 2.0], None], num_steps=1, progress=False), TypeError, "Python objects|could not be made"),
    Case("probgen.fit", "guide not callable", lambda: _fit(guide=3), TypeError, "guide"),
    Case("probgen.fit", "callback not callable", lambda: _fit(callbacks=[3]), TypeError, "callback"),
    Case("probgen.fit", "transform not callable", lambda: _fit(transform=3), TypeError, "transform"),
    Case("probgen.fit", "checkpoint_every a string", lambda: _fit(checkpoint_every="3", checkpoint=_tmp("c.pt")), ValueError, "checkpoint_every"),
    Case("probgen.fit", "device 'gpu7'", lambda: _fit(device="gpu7"), ValueError, "device"),
    Case("probgen.fit", "checkpoint= a folder", lambda: _fit(checkpoint=_tmp()), ValueError, "folder|directory"),
    Case("fit method=cd (RBM)", "k=0 Gibbs sweeps", lambda: probgen.fit(_ebm_rbm(), torch.ones(4, 6).double(), method="cd", k=0, num_steps=1, progress=False), ValueError, r"k \(Gibbs sweeps per update\) must be a positive integer, got 0"),
    Case("fit method=cd (RBM)", "k=1.5 Gibbs sweeps", lambda: probgen.fit(_ebm_rbm(), torch.ones(4, 6).double(), method="cd", k=1.5, num_steps=1, progress=False), ValueError, r"k \(Gibbs sweeps.*got 1.5"),
    Case("fit method=cd (RBM)", "real-valued data", lambda: probgen.fit(_ebm_rbm(), torch.full((4, 6), 0.3).double(), method="cd", num_steps=1, progress=False), ValueError, "whole numbers for a binary likelihood"),
    Case("fit method=cd (RBM)", "negative 0/1 data", lambda: probgen.fit(_ebm_rbm(), -torch.ones(4, 6).double(), method="cd", num_steps=1, progress=False), ValueError, r"binary \(0/1\).*binarize"),
    Case("VAE (fit)", "negative data for Bernoulli", lambda: probgen.fit(_vae(), -torch.ones(4, 6), num_steps=1, progress=False), ValueError, "binary"),
    # probgen.evaluate
    Case("probgen.evaluate", "estimator=None", lambda: probgen.evaluate(program, GOOD, estimator=None), ValueError, "unknown estimator None; choose one of"),
    Case("probgen.evaluate", "exact on continuous latents", lambda: probgen.evaluate(latent_program, L4, guide=latent_guide, estimator="exact"), ValueError, r"exact evaluation needs no continuous latents.*\['z'\]; use estimator='iwae'"),
    Case("probgen.evaluate", "unknown estimator option", lambda: probgen.evaluate(program, GOOD, bogus=1), TypeError, r"unexpected options for estimator 'exact': \['bogus'\]"),
    Case("probgen.evaluate", "unknown data_space", lambda: probgen.evaluate(program, GOOD, data_space="weird"), ValueError, "data_space must be one of"),
    Case("probgen.evaluate", "data_plate that does not exist", lambda: probgen.evaluate(program, GOOD, data_plate="nosuch"), ValueError, "outside the data plate 'nosuch'"),
    Case("probgen.evaluate", "posterior= a string", lambda: probgen.evaluate(program, GOOD, posterior="x"), TypeError, r"posterior must be a dict \{site: draws"),
    Case("probgen.evaluate", "posterior= a list", lambda: probgen.evaluate(program, GOOD, posterior=[1, 2]), TypeError, "posterior must be a dict"),
    Case("probgen.evaluate", "posterior= an empty dict", lambda: probgen.evaluate(latent_program, L4, posterior={}), TypeError, "posterior must be a dict"),
    Case("probgen.evaluate", "posterior= zero draws", lambda: probgen.evaluate(latent_program, L4, posterior={"z": torch.zeros(0, 4)}), ValueError, "posterior"),
    Case("probgen.evaluate", "posterior= a scalar draw", lambda: probgen.evaluate(latent_program, L4, posterior={"z": torch.tensor(1.0)}), ValueError, "posterior"),
    Case("probgen.evaluate", "posterior= NaN draws", lambda: probgen.evaluate(latent_program, L4, posterior={"z": torch.full((3, 4), float("nan"))}), ValueError, "posterior.*NaN"),
    Case("probgen.evaluate", "guide not callable", lambda: probgen.evaluate(latent_program, L4, guide=3, estimator="iwae"), TypeError, "guide"),
    Case("probgen.evaluate", "model not callable", lambda: probgen.evaluate(3, GOOD), TypeError, "Pyro program"),
    Case("probgen.evaluate", "device 'gpu7'", lambda: probgen.evaluate(program, GOOD, device="gpu7"), ValueError, "device"),
    Case("probgen.evaluate", "seed=-1", lambda: _latent_eval(seed=-1), ValueError, "seed must be"),
    Case("probgen.evaluate", "seed='3'", lambda: _latent_eval(seed="3"), ValueError, "seed must be"),
    Case("GaussianMixture (evaluate)", "an estimator the family lacks (ais)", lambda: probgen.evaluate(_gmm(), torch.randn(3, 3).double(), estimator="ais"), ValueError, "unknown estimator 'ais'; choose one of"),
    Case("NeuralEBM (evaluate)", "exact on an unnormalised EBM", lambda: probgen.evaluate(_FAMILIES["NeuralEBM"][0](), torch.zeros(3, 3).double(), estimator="exact"), NotImplementedError, "Z is intractable.*estimator='ais'"),
    Case("RBM (evaluate ais)", "num_chains=1.5", lambda: probgen.evaluate(_ebm_rbm(), torch.ones(3, 6).double(), estimator="ais", num_chains=1.5), ValueError, "num_chains"),
    Case("RBM (evaluate)", "negative 'binary' data", lambda: probgen.evaluate(_ebm_rbm(), -torch.ones(3, 6).double(), estimator="exact"), ValueError, "binary"),
    # run_mcmc
    Case("run_mcmc", "kernel=None", lambda: _mcmc(kernel=None), ValueError, "kernel must be 'nuts' or 'hmc', got None"),
    Case("run_mcmc", "num_samples=0", lambda: _mcmc(num_samples=0), ValueError, "num_samples and num_chains must be >= 1"),
    Case("run_mcmc", "num_chains=-1", lambda: _mcmc(num_chains=-1), ValueError, "num_samples and num_chains must be >= 1"),
    Case("run_mcmc", "data_plate that does not exist", lambda: _mcmc(data_plate="nosuch"), ValueError, r"no observed site lies in a plate named 'nosuch'.*\['data'\]"),
    Case("run_mcmc", "num_samples='3'", lambda: _mcmc(num_samples="3"), ValueError, "num_samples"),
    Case("run_mcmc", "num_chains=1.5", lambda: _mcmc(num_chains=1.5), ValueError, "num_chains"),
    Case("run_mcmc", "num_samples=2 (too few for diagnostics)", lambda: _mcmc(num_samples=2), ValueError, "num_samples"),
    Case("run_mcmc", "unknown kernel option", lambda: _mcmc(bogus=1), TypeError, "kernel option|bogus.*nuts"),
    Case("run_mcmc", "one feature too many", lambda: _mcmc(torch.randn(5, 4)), ValueError, "shape"),
    Case("run_mcmc", "data=None for a program that needs data", lambda: _mcmc(None), TypeError, "data"),
    Case("run_mcmc", "a program with no latent sites", lambda: _mcmc(model=program), ValueError, "latent|no sample"),
    # probgen.compare and LogLikelihood
    Case("probgen.compare", "list of floats", lambda: probgen.compare([1.0, 2.0]), TypeError, r"results\['model 1'\] is a float, not a LogLikelihood"),
    Case("probgen.compare", "None", lambda: probgen.compare(None), TypeError, r"compare takes a dict \{name: LogLikelihood\}.*NoneType"),
    Case("probgen.compare", "a string", lambda: probgen.compare("a"), TypeError, "compare takes a dict.*got str"),
    Case("probgen.compare", "a tensor of values", lambda: probgen.compare({"a": torch.tensor([-1.0])}), TypeError, r"results\['a'\] is a Tensor, not a LogLikelihood"),
    Case("probgen.compare", "a nested dict", lambda: probgen.compare({"a": {"b": _ll([-1.0])}}), TypeError, r"results\['a'\] is a dict"),
    Case("LogLikelihood", "num_dims=0", lambda: probgen.LogLikelihood(torch.zeros(2), kind="exact", estimator="exact", num_dims=0, data_space="continuous"), ValueError, "num_dims must be a positive number, got 0"),
    Case("LogLikelihood", "unknown data_space", lambda: probgen.LogLikelihood(torch.zeros(2), kind="exact", estimator="exact", num_dims=1, data_space="weird"), ValueError, "data_space must be one of"),
    Case("LogLikelihood", "no examples", lambda: probgen.LogLikelihood(torch.zeros(0), kind="exact", estimator="exact", num_dims=1, data_space="continuous"), ValueError, "needs at least one example"),
    Case("LogLikelihood.from_json", "a JSON list", lambda: probgen.LogLikelihood.from_json(_bytes_file(".json", b"[1, 2]")), ValueError, "a LogLikelihood record is a JSON object, got list"),
    Case("LogLikelihood.from_json", "a dict without values", lambda: probgen.LogLikelihood.from_json(_bytes_file(".json", b'{"kind": "exact"}')), ValueError, "no per_example values; save with per_example=True"),
    Case("LogLikelihood.from_json", "not JSON", lambda: probgen.LogLikelihood.from_json(_bytes_file(".json", b"{not json")), ValueError, "not a LogLikelihood JSON"),
    Case("LogLikelihood.from_json", "an empty file", lambda: probgen.LogLikelihood.from_json(_bytes_file(".json", b"")), ValueError, "not a LogLikelihood JSON"),
    # probgen.save / probgen.load
    Case("probgen.save", "None", lambda: probgen.save(None, _tmp("x.pt")), TypeError, "takes a bundled GenerativeModel or the FitResult.*NoneType"),
    Case("probgen.save", "path is a folder", lambda: probgen.save(_gmm(), _tmp()), ValueError, "folder"),
    Case("probgen.save", "path ''", lambda: _in_tmp_dir(lambda: probgen.save(_gmm(), "")), ValueError, "empty"),
    Case("probgen.save", "path an int", lambda: probgen.save(_gmm(), 3), TypeError, "path"),
    Case("probgen.load", "empty file", lambda: probgen.load(_bytes_file(".pt", b"")), probgen.core.checkpoint.CheckpointError, "not a readable checkpoint.*write it again"),
    Case("probgen.load", "a JSON file where a .pt is expected", lambda: probgen.load(_result_json()), probgen.core.checkpoint.CheckpointError, "refusing to load .*test.json"),
    Case("probgen.load", "a pickle with code", lambda: probgen.load(_evil_pt()), probgen.core.checkpoint.CheckpointError, "refusing to load .*evil.pt.*objects other than tensors"),
    Case("probgen.load", "a .npy file", lambda: probgen.load(_npy(_np.zeros(3))), probgen.core.checkpoint.CheckpointError, "refusing to load .*x.npy"),
    Case("probgen.load", "a valid torch file holding a tensor", lambda: probgen.load(_torch_file(torch.zeros(3))), probgen.core.checkpoint.CheckpointError, "is not a probgen checkpoint \\(no 'format' entry\\)"),
    Case("probgen.load", "a valid torch file holding a list", lambda: probgen.load(_torch_file([1, 2])), probgen.core.checkpoint.CheckpointError, "not a probgen checkpoint"),
    Case("probgen.load", "a torch dict of other keys", lambda: probgen.load(_torch_file({"a": 1})), probgen.core.checkpoint.CheckpointError, "not a probgen checkpoint"),
    Case("probgen.load", "path ''", lambda: probgen.load(""), probgen.core.checkpoint.CheckpointError, "checkpoint is empty; pass the path of a checkpoint"),
    Case("probgen.load", "state_dict missing a parameter", lambda: probgen.load(_crafted_model("mk", lambda s: s["state_dict"].pop("locs"))), probgen.core.checkpoint.CheckpointError, r"do not match GaussianMixture: missing \['locs'\]"),
    Case("probgen.load", "state_dict with an extra parameter", lambda: probgen.load(_crafted_model("ek", lambda s: s["state_dict"].__setitem__("bogus", torch.zeros(1)))), probgen.core.checkpoint.CheckpointError, r"unexpected \['bogus'\]"),
    Case("probgen.load", "state_dict a list", lambda: probgen.load(_crafted_model("sd", _set("state_dict", [1]))), probgen.core.checkpoint.CheckpointError, "'state_dict' is list, not dict"),
    Case("probgen.load", "state_dict missing", lambda: probgen.load(_crafted_model("sdm", lambda s: s.pop("state_dict"))), probgen.core.checkpoint.CheckpointError, "'state_dict' is NoneType"),
    Case("probgen.load", "format_version from the future", lambda: probgen.load(_crafted_model("fv9", _set("format_version", 999))), probgen.core.checkpoint.CheckpointError, r"newer probgen \(format 999 > \d+\); upgrade"),
    Case("probgen.load", "model name an int", lambda: probgen.load(_crafted_model("mi", _set("model", 3))), probgen.core.checkpoint.CheckpointError, "'model' is int, not str"),
    Case("probgen.load", "config size a string", lambda: probgen.load(_crafted_model("cs", _config("num_components", "2"))), probgen.core.checkpoint.CheckpointError, "does not fit GaussianMixture \\(GaussianMixture: num_components must be an integer"),
    Case("probgen.load", "config size negative", lambda: probgen.load(_crafted_model("cn", _config("num_components", -2))), probgen.core.checkpoint.CheckpointError, "num_components must be an integer >= 1, got -2.*damaged or crafted"),
    Case("probgen.load", "config option unknown value", lambda: probgen.load(_crafted_model("cc", _config("covariance", "weird"))), probgen.core.checkpoint.CheckpointError, "covariance must be one of"),
    Case("probgen.load", "path None", lambda: probgen.load(None), TypeError, "path"),
    Case("probgen.load", "map_location 'gpu7'", lambda: probgen.load(_saved_gmm(), map_location="gpu7"), ValueError, "map_location|device"),
    # data sets and splits
    Case("probgen.data.load_dataset", "None", lambda: probgen.data.load_dataset(None), TypeError, "takes a data set name.*NoneType; bundled: digits, iris, wine"),
    Case("probgen.data.load_dataset", "an int", lambda: probgen.data.load_dataset(3), TypeError, "got int; bundled"),
    Case("probgen.data.load_dataset", "a list of names", lambda: probgen.data.load_dataset(["iris"]), TypeError, "got list; bundled"),
    Case("probgen.data.load_dataset", "wrong case", lambda: probgen.data.load_dataset("IRIS"), ValueError, "unknown data set 'IRIS'; bundled: digits, iris, wine"),
    Case("probgen.data.load_dataset", "a file path", lambda: probgen.data.load_dataset("iris.csv"), ValueError, "unknown data set 'iris.csv'"),
    Case("probgen.data.train_test_split", "test_fraction 0", lambda: probgen.data.train_test_split(10, 0.0), ValueError, r"test_fraction must be in \(0, 1\), got 0.0"),
    Case("probgen.data.train_test_split", "test_fraction 1", lambda: probgen.data.train_test_split(10, 1.0), ValueError, r"test_fraction must be in \(0, 1\), got 1.0"),
    Case("probgen.data.train_test_split", "test_fraction NaN", lambda: probgen.data.train_test_split(10, float("nan")), ValueError, "test_fraction must be a finite number"),
    Case("probgen.data.train_test_split", "test_fraction a string", lambda: probgen.data.train_test_split(10, "0.2"), ValueError, "test_fraction must be a finite number, got '0.2'"),
    Case("probgen.data.train_test_split", "n=0", lambda: probgen.data.train_test_split(0), ValueError, r"n \(the number of examples\) must be an integer >= 2, got 0"),
    Case("probgen.data.train_test_split", "n=1 (nothing left to train on)", lambda: probgen.data.train_test_split(1), ValueError, "must be an integer >= 2, got 1"),
    Case("probgen.data.train_test_split", "n negative", lambda: probgen.data.train_test_split(-5), ValueError, "got -5"),
    Case("probgen.data.train_test_split", "n fractional", lambda: probgen.data.train_test_split(10.5), ValueError, "got 10.5; sizes are whole numbers"),
    Case("probgen.data.train_test_split", "seed a string", lambda: probgen.data.train_test_split(10, seed="a"), ValueError, "seed must be an integer >= 0, got 'a'"),
    Case("probgen.data.validate_data", "unknown support", lambda: probgen.data.validate_data(torch.zeros(2), support="weird"), ValueError, "unknown support 'weird'; choose one of"),
    Case("probgen.data.validate_data", "category out of range", lambda: probgen.data.validate_data(torch.tensor([0, 3]), support="categorical", num_categories=3), ValueError, r"category 3 but the model has 3 categories \(0..2\)"),
    Case("probgen.data.validate_data", "categorical without num_categories", lambda: probgen.data.validate_data(torch.tensor([0, 1]), support="categorical"), ValueError, "needs num_categories"),
    Case("probgen.data.validate_data", "zero for a positive support", lambda: probgen.data.validate_data(torch.tensor([0.0, 1.0]), support="positive"), ValueError, "must be > 0 but has min 0"),
    Case("probgen.data.validate_data", "pixels 0..255 for unit_interval", lambda: probgen.data.validate_data(torch.tensor([0.0, 255.0]), support="unit_interval"), ValueError, r"must lie in \[0, 1\].*x / 255"),
    Case("probgen.data.validate_data", "fractional counts", lambda: probgen.data.validate_data(torch.tensor([1.5]), support="count"), ValueError, "whole numbers for a count likelihood"),
    # pad_sequences
    Case("pad_sequences", "a rectangular tensor", lambda: _pad(torch.zeros(2, 3)), TypeError, "takes a list of sequences; an already rectangular tensor"),
    Case("pad_sequences", "None", lambda: _pad(None), TypeError, "takes a list of sequences.*got NoneType"),
    Case("pad_sequences", "an int", lambda: _pad(5), TypeError, "got int"),
    Case("pad_sequences", "a dict", lambda: _pad({"a": torch.zeros(2)}), TypeError, "got dict"),
    Case("pad_sequences", "a scalar sequence", lambda: _pad([torch.tensor(1.0)]), ValueError, "sequence 0 is a scalar; each sequence needs a time dimension"),
    Case("pad_sequences", "an empty sequence", lambda: _pad([torch.zeros(2, 2), torch.zeros(0, 2)]), ValueError, "sequence 1 is empty; drop empty sequences"),
    Case("pad_sequences", "steps of different features", lambda: _pad([torch.zeros(2, 2), torch.zeros(2, 3)]), ValueError, r"sequence 1 has steps of shape \(3,\) but sequence 0 has \(2,\)"),
    Case("pad_sequences", "ragged steps inside one sequence", lambda: _pad([[[1, 2], [3]]]), ValueError, "sequence 0 has steps of different shapes"),
    Case("pad_sequences", "strings as sequences", lambda: _pad(["abc", "de"]), TypeError, "sequence 0 is str, not a sequence of numbers"),
    Case("pad_sequences", "None as a sequence", lambda: _pad([torch.zeros(2), None]), TypeError, "sequence 1 is NoneType"),
    Case("pad_sequences", "meta tensor sequence", lambda: _pad([torch.zeros(2, device="meta")]), ValueError, "sequence 0 is on the meta device"),
    Case("pad_sequences", "max_length shorter than a sequence", lambda: _pad([torch.zeros(4, 2)], max_length=2), ValueError, r"max_length=2 is shorter than the longest sequence \(4\)"),
    Case("pad_sequences", "max_length=0", lambda: _pad([torch.zeros(4, 2)], max_length=0), ValueError, "max_length must be an integer >= 1, got 0"),
    Case("pad_sequences", "max_length=3.5", lambda: _pad([torch.zeros(2, 2)], max_length=3.5), ValueError, "max_length must be an integer >= 1, got 3.5"),
    Case("pad_sequences", "max_length=True", lambda: _pad([torch.zeros(2, 2)], max_length=True), ValueError, "max_length must be an integer >= 1, got True"),
    Case("pad_sequences", "padding_value a string", lambda: _pad([torch.zeros(2)], padding_value="x"), TypeError, "padding_value must be a number, got 'x'"),
    Case("pad_sequences", "NaN padding for integer sequences", lambda: _pad([torch.zeros(2, dtype=torch.long)], padding_value=float("nan")), ValueError, "padding_value=nan does not fit the sequences' integer dtype torch.int64"),
    Case("pad_sequences", "padding beyond int8", lambda: _pad([torch.zeros(2, dtype=torch.int8)], padding_value=1000), ValueError, "outside the range of torch.int8"),
    # HMM: padded sequences
    Case("HMM (evaluate)", "fractional lengths", lambda: probgen.evaluate(_hmm(), (_seqs(), torch.tensor([2.5, 3.0]))), ValueError, "lengths must be whole numbers"),
    Case("HMM (evaluate)", "zero length", lambda: probgen.evaluate(_hmm(), (_seqs(), torch.tensor([0, 3]))), ValueError, r"lengths must lie in 1..5.*sequence 0 has length 0"),
    Case("HMM (evaluate)", "lengths of another shape", lambda: probgen.evaluate(_hmm(), (_seqs(), torch.tensor([[2, 3]]))), ValueError, "share their first"),
    Case("HMM (evaluate)", "(time, features) without the batch dim", lambda: probgen.evaluate(_hmm(), torch.randn(5, 2).double()), ValueError, r"steps of shape \(\) but the model expects \(2,\).*\(batch, time, \*features\)"),
    Case("HMM (evaluate)", "no sequences", lambda: probgen.evaluate(_hmm(), torch.randn(0, 5, 2).double()), ValueError, "is empty"),
    Case("HMM (evaluate)", "zero time steps", lambda: probgen.evaluate(_hmm(), torch.randn(2, 0, 2).double()), ValueError, r"sequences is empty \(shape \(2, 0, 2\)\); pass at least one step"),
    Case("HMM (fit)", "Inf", lambda: probgen.fit(_hmm(), torch.full((2, 5, 2), float("inf")).double(), num_steps=1, progress=False), ValueError, "sequences has Inf"),
    Case("HMM (evaluate)", "complex", lambda: probgen.evaluate(_hmm(), torch.zeros(2, 5, 2, dtype=torch.complex64)), TypeError, "complex"),
    Case("HMM (evaluate)", "a file name", lambda: probgen.evaluate(_hmm(), "seqs.npy"), TypeError, "got str"),
    Case("HMM (evaluate)", "None", lambda: probgen.evaluate(_hmm(), None), TypeError, "got NoneType"),
    Case("HMM (evaluate)", "meta tensor", lambda: probgen.evaluate(_hmm(), torch.zeros(2, 5, 2, device="meta")), ValueError, "on meta but the model is on cpu"),
    Case("HMM (fit)", "a list of ragged sequences", lambda: probgen.fit(_hmm(), [torch.randn(4, 2).double(), torch.randn(2, 2).double()], num_steps=1, progress=False), ValueError, r"share their first.*\(4, 2\), \(2, 2\)"),
    Case("HMM (evaluate)", "category beyond num_categories", lambda: probgen.evaluate(_cls("probgen.models.hmm", "HMM")(3, "categorical", num_categories=4), torch.tensor([[0, 5, 1]])), ValueError, r"category 5 but the model has 4 categories \(0..3\)"),
    # constructors
    Case("HMM", "unknown emission", lambda: _cls("probgen.models.hmm", "HMM")(3, "weird"), ValueError, "emission must be one of"),
    Case("GaussianMixture", "unknown covariance", lambda: _cls("probgen.models.mixture", "GaussianMixture")(2, 3, covariance="weird"), ValueError, "covariance must be one of"),
    Case("VAE", "latent_dim=0", lambda: _cls("probgen.models.vae", "VAE")((6,), latent_dim=0), ValueError, "VAE: latent_dim must be an integer >= 1, got 0"),
    Case("VAE", "unknown likelihood", lambda: _cls("probgen.models.vae", "VAE")((6,), likelihood="weird"), ValueError, "unknown likelihood 'weird'; choose one of"),
    Case("VAE", "empty data_shape", lambda: _cls("probgen.models.vae", "VAE")((), latent_dim=2), ValueError, r"must be positive, got 2, \[\]"),
    Case("VAE", "negative beta", lambda: _cls("probgen.models.vae", "VAE")((6,), beta=-1.0), ValueError, "beta must be > 0, got -1.0"),
    Case("DiffusionDensity", "unknown schedule", lambda: _cls("probgen.models.diffusion", "DiffusionDensity")(3, schedule="weird"), ValueError, "unknown noise schedule 'weird'"),
    Case("DiffusionDensity", "logsnr_min above logsnr_max", lambda: _cls("probgen.models.diffusion", "DiffusionDensity")(3, logsnr_min=5.0, logsnr_max=-5.0), ValueError, "need logsnr_min < logsnr_max"),
    Case("DiffusionDensity", "scale=0", lambda: _cls("probgen.models.diffusion", "DiffusionDensity")(3, scale=0.0), ValueError, "scale must be positive, got 0.0"),
    Case("DiffusionDensity", "unknown loss", lambda: _cls("probgen.models.diffusion", "DiffusionDensity")(3, loss="weird"), ValueError, r"loss must be one of \('vlb', 'simple'\)"),
    Case("DiffusionDensity", "features=0", lambda: _cls("probgen.models.diffusion", "DiffusionDensity")(0), ValueError, "features"),
    Case("LatentDiffusionVAE", "unknown prior", lambda: _cls("probgen.models.latent_diffusion", "LatentDiffusionVAE")(6, prior="weird"), ValueError, r"prior must be one of \('diffusion', 'gaussian'\)"),
    Case("HierarchicalVAE", "no latent layers", lambda: _cls("probgen.models.hierarchical", "HierarchicalVAE")((6,), latent_dims=()), ValueError, "latent_dims must list at least one positive size"),
    Case("HierarchicalVAE", "negative free_bits", lambda: _cls("probgen.models.hierarchical", "HierarchicalVAE")((6,), free_bits=-1.0), ValueError, "warmup_steps and free_bits must be >= 0"),
    Case("FlowModel", "unknown backend", lambda: _cls("probgen.models.flow", "FlowModel")(3, backend="weird"), ValueError, "unknown flow backend 'weird'"),
    Case("FlowModel", "unknown domain", lambda: _cls("probgen.models.flow", "FlowModel")(3, domain="weird"), ValueError, "domain must be one of"),
    Case("FlowModel", "transforms=0", lambda: _cls("probgen.models.flow", "FlowModel")(3, transforms=0), ValueError, "transforms"),
    Case("NeuralEBM", "hidden_sizes a string", lambda: _cls("probgen.models.ebm", "NeuralEBM")(3, hidden_sizes="8"), ValueError, "hidden_sizes must be a list or tuple, got '8'"),
    Case("RBM", "num_visible=0", lambda: _cls("probgen.models.ebm", "RBM")(0, 3), ValueError, "RBM: num_visible must be an integer >= 1, got 0"),
]

_IRIS_RUN = ["evaluate", "--data", "iris"]
CLI_LAZY += [
    ("probgen fit", "--split bogus", lambda: FIT_IRIS + ["--split", "bogus"], r"--split: invalid choice: 'bogus'.*--help"),
    ("probgen fit", "--steps 0", lambda: FIT_IRIS + ["--steps", "0"], "num_steps must be a positive integer, got 0"),
    ("probgen fit", "--steps -1", lambda: FIT_IRIS + ["--steps", "-1"], "num_steps must be a positive integer, got -1"),
    ("probgen fit", "--steps abc", lambda: FIT_IRIS + ["--steps", "abc"], "--steps: invalid int value: 'abc'"),
    ("probgen fit", "--steps 1.5", lambda: FIT_IRIS + ["--steps", "1.5"], "--steps: invalid int value: '1.5'"),
    ("probgen fit", "--batch-size 0", lambda: FIT_IRIS + ["--batch-size", "0"], "batch_size must be a positive integer, got 0"),
    ("probgen fit", "--lr with EM", lambda: FIT_IRIS + ["--lr", "0.1"], "EM has closed-form updates and takes no optim"),
    ("probgen fit", "--method bogus", lambda: FIT_IRIS + ["--method", "bogus"], r"unknown method 'bogus' for GaussianMixture; choose one of \['em', 'svi'\]"),
    ("probgen fit", "--device ''", lambda: FIT_IRIS + ["--device", ""], "--device '' is not a device"),
    ("probgen fit", "--device cuda:x", lambda: FIT_IRIS + ["--device", "cuda:x"], "--device 'cuda:x' is not a device"),
    ("probgen fit", "--device tpu", lambda: FIT_IRIS + ["--device", "tpu"], "--device 'tpu' is not a device"),
    ("probgen fit", "--set =3 (no key)", lambda: FIT_IRIS + ["--set", "=3"], "cannot build model 'gmm'.*pass them with --set key=v"),
    ("probgen fit", "--set of an unknown key", lambda: FIT_IRIS + ["--set", "bogus=1"], r"unexpected keyword argument 'bogus'\); it takes \['num_components'"),
    ("probgen fit", "--set covariance=\"weird\"", lambda: FIT_IRIS + ["--set", 'covariance="weird"'], "covariance must be one of"),
    ("probgen fit", "--set num_components=-1", lambda: ["fit", "gmm", "--data", "iris", "--set", "num_components=-1", "--quiet"], "num_components must be an integer >= 1, got -1"),
    ("probgen fit", "--set num_components=NaN", lambda: ["fit", "gmm", "--data", "iris", "--set", "num_components=NaN", "--quiet"], "num_components must be an integer >= 1, got nan"),
    ("probgen fit", "--set reg_covar=\"x\"", lambda: FIT_IRIS + ["--set", 'reg_covar="x"'], "reg_covar must be a finite number, got 'x'"),
    ("probgen fit", "hmm without --set num_states", lambda: ["fit", "hmm", "--data", "iris", "--quiet"], r"missing a required argument: 'num_states'.*--set key=value"),
    ("probgen fit", "rbm on real-valued data", lambda: ["fit", "rbm", "--data", "iris", "--set", "num_hidden=2", "--quiet"], "whole numbers for a binary likelihood.*binarize"),
    ("probgen fit", "--binarize x", lambda: FIT_IRIS + ["--binarize", "x"], "--binarize: invalid float value: 'x'"),
    ("probgen fit", "--data empty .npy", lambda: FIT_IRIS + ["--data", _npy(_np.zeros((0, 4)))], r"holds no examples \(shape \(0, 4\)\)"),
    ("probgen fit", "--data .npy with NaN", lambda: FIT_IRIS + ["--data", _npy(_np.full((10, 4), float("nan")))], "NaN in .*drop or impute"),
    ("probgen fit", "--data text .npy", lambda: FIT_IRIS + ["--data", _npy(_np.array(["a"] * 10))], "holds <U1 values; probgen needs numbers"),
    ("probgen fit", "--data object .npy", lambda: FIT_IRIS + ["--data", _npy(_np.array([[1], [1, 2]], dtype=object))], "cannot read --data .*allow_pickle=False.*numeric"),
    ("probgen fit", "--data .json", lambda: FIT_IRIS + ["--data", _result_json()], r"unsupported data file '.json'; use .npy, .npz, .pt or .csv"),
    ("probgen fit", "--data .txt", lambda: FIT_IRIS + ["--data", _bytes_file(".txt", b"hello")], "unsupported data file '.txt'"),
    ("probgen fit", "--data zero-byte .npy", lambda: FIT_IRIS + ["--data", _bytes_file(".npy", b"")], "cannot read --data .*EOFError"),
    ("probgen fit", "--data .csv with text below the first row", lambda: FIT_IRIS + ["--data", _bytes_file(".csv", b"1,2\na,b\n")], "cannot read --data .*could not convert string 'a'"),
    ("probgen fit", "--data .csv header naming too many columns", lambda: FIT_IRIS + ["--data", _bytes_file(".csv", b"a,b,c\n1,2\n")], "header row names 3 columns but the rows have 2 values"),
    ("probgen fit", "--data ragged .csv", lambda: FIT_IRIS + ["--data", _bytes_file(".csv", b"1,2\n3\n")], "cannot read --data .*number of columns changed"),
    ("probgen fit", "--data .npz with --key absent", lambda: FIT_IRIS + ["--data", (lambda p: (_np.savez(p, a=_np.zeros((5, 4))), p)[1])(_tmp("x.npz")), "--key", "zz"], r"has arrays \['a'\], not 'zz' \(use --key\)"),
    ("probgen fit", "--split test of one example", lambda: FIT_IRIS + ["--data", _npy(_np.zeros((1, 4))), "--split", "test"], "--split test needs at least 2 examples"),
    ("probgen fit", "--resume with no checkpoint yet", lambda: FIT_IRIS + ["--resume", "--out", _tmp("fresh")], "no checkpoint at .*checkpoint.pt; start a new run"),
    ("probgen", "unknown flag", lambda: FIT_IRIS + ["--bogus"], "unrecognized arguments: --bogus"),
    ("probgen", "no command", lambda: [], "the following arguments are required: command"),
    ("probgen", "unknown command", lambda: ["train"], "argument command: invalid choice: 'train'"),
    ("probgen evaluate", "--data missing", lambda: ["evaluate", _gmm_run()], "required: --data"),
    ("probgen evaluate", "--estimator magic", lambda: ["evaluate", _gmm_run(), "--data", "iris", "--estimator", "magic"], "unknown estimator 'magic'"),
    ("probgen evaluate", "--k 0", lambda: ["evaluate", _gmm_run(), "--data", "iris", "--estimator", "iwae", "--k", "0"], "k must be a positive integer"),
    ("probgen evaluate", "data of another feature count", lambda: ["evaluate", _gmm_run(), "--data", "wine"], r"standardized examples of shape \(4,\) but --data wine has \(13,\)"),
    ("probgen evaluate", "--batch-size 0", lambda: ["evaluate", _gmm_run(), "--data", "iris", "--batch-size", "0"], "batch_size must be a positive integer, got 0"),
    ("probgen evaluate", "--device gpu7", lambda: ["evaluate", _gmm_run(), "--data", "iris", "--device", "gpu7"], "--device 'gpu7' is not a device"),
    ("probgen evaluate", "--split val", lambda: ["evaluate", _gmm_run(), "--data", "iris", "--split", "val"], "--split: invalid choice: 'val'"),
    ("probgen evaluate", "a JSON file as the model", lambda: ["evaluate", _result_json(), "--data", "iris"], "refusing to load .*test.json"),
    ("probgen evaluate", "zero-byte model file", lambda: ["evaluate", _bytes_file(".pt", b""), "--data", "iris"], "not a readable checkpoint"),
    ("probgen evaluate", "a pickle with code as the model", lambda: ["evaluate", _evil_pt(), "--data", "iris"], "refusing to load .*evil.pt"),
    ("probgen sample", "-n -1", lambda: ["sample", _gmm_run(), "-n", "-1"], "-n must be a positive number of samples, got -1"),
    ("probgen sample", "-n abc", lambda: ["sample", _gmm_run(), "-n", "abc"], "invalid int value: 'abc'"),
    ("probgen sample", "--device gpu7", lambda: ["sample", _gmm_run(), "--device", "gpu7"], "--device 'gpu7' is not a device"),
    ("probgen sample", "missing run", lambda: ["sample", "/no/run"], "no checkpoint at /no/run"),
    ("probgen sample", "truncated model file", lambda: ["sample", _bytes_file(".pt", open(_saved_gmm(), "rb").read()[:300])], "not a readable checkpoint"),
    ("probgen compare", "no results", lambda: ["compare"], "required: results"),
    ("probgen compare", "one of two results missing", lambda: ["compare", "/no/x.json", _result_json()], "no result file /no/x.json"),
    ("probgen compare", "--names of the wrong count", lambda: ["compare", _result_json(), _result_json(), "--names", "a"], "--names has 1 names for 2 results"),
    ("probgen compare", "a JSON list", lambda: ["compare", _bytes_file(".json", b"[1,2]")], "a LogLikelihood record is a JSON object, got list"),
    ("probgen compare", "a zero-byte result", lambda: ["compare", _bytes_file(".json", b"")], "not a LogLikelihood JSON file"),
    ("probgen compare", "a model .pt as a result", lambda: ["compare", _saved_gmm()], "not a LogLikelihood JSON file"),
    ("probgen demo", "--only ''", lambda: ["demo", "--only", "", "--smoke", "--out", _tmp()], "--only '' is not a demo data set"),
]
if not torch.backends.mps.is_available():
    CLI_LAZY.append(("probgen fit", "--device mps without MPS", lambda: FIT_IRIS + ["--device", "mps"], "MPS is not available here; use --device cpu"))


def _param(case: Case):
    reason = XFAIL.get(id(case))
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(case, id=f"{case.entry}: {case.problem}", marks=marks)



@pytest.mark.parametrize("entry,problem,argv,match", CLI_LAZY,
                         ids=[f"{c[0]}: {c[1]}" for c in CLI_LAZY])
def test_cli_rejects_bad_input_lazy(entry, problem, argv, match, capsys):
    args = argv()
    capsys.readouterr()
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("probgen: error:"), err
    assert "Traceback" not in err
    assert re.search(match, err), err


def test_diverged_cli_fit_still_writes_the_rolled_back_model(tmp_path, capsys):
    out = tmp_path / "dv"
    assert cli_main(FIT_IRIS + ["--method", "svi", "--lr", "1e6", "--steps", "30", "--out", str(out)]) == 2
    record = __import__("json").loads((out / "fit.json").read_text())
    assert record["diverged"] and (out / "model.pt").exists()
    model = probgen.load(out / "model.pt")
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_python_entry_point_rejects_bad_input(case):
    with pytest.raises(case.error) as caught:
        case.call()
    assert re.search(case.match, str(caught.value)), str(caught.value)


@pytest.mark.parametrize("entry,problem,argv,match", CLI_CASES,
                         ids=[f"{c[0]}: {c[1]}" for c in CLI_CASES])
def test_cli_rejects_bad_input_with_one_line_and_exit_2(entry, problem, argv, match, capsys):
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("probgen: error:"), err
    assert "Traceback" not in err
    assert re.search(match, err), err


def test_suite_lists_its_coverage(capsys):
    entries = sorted({c.entry for c in CASES} | {c[0] for c in CLI_CASES + CLI_LAZY})
    total = len(CASES) + len(CLI_CASES) + len(CLI_LAZY)
    with capsys.disabled():
        print(f"\nbad-input suite: {total} bad inputs over {len(entries)} entry points: "
              + ", ".join(entries))
    assert total >= 250 and len(entries) >= 15
