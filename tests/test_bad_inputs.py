"""Every public entry point, driven with bad input, answers with a clear error naming the fix.

Each case: (entry point, what is wrong, call, expected error type, a regex the message must
match). The CLI cases must exit with code 2 and print one line, no traceback. The last test
prints the coverage: entry points and the number of bad inputs tried.
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
    Case("probgen.save", "raw program", lambda: probgen.save(program, "/tmp/x.pt"), TypeError, "FitResult of probgen.fit"),
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
    Case("HMM", "boolean num_states", lambda: _cls("probgen.models.hmm", "HMM")(True, num_features=2), ValueError, "num_states must be a positive integer"),
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
    ("probgen compare", "the same file twice", lambda: [ "compare", "/tmp/probgen-same.json", "/tmp/probgen-same.json"] if _ll([-1.0]).to_json("/tmp/probgen-same.json") or True else [], "duplicate result names"),
    ("probgen compare", "a folder as result", lambda: ["compare", _tmp()], "is a folder"),
    ("probgen compare", "non-JSON result", lambda: ["compare", _bytes_file(".json", b"\xff\xfe not json")], "not a LogLikelihood JSON"),
    ("probgen demo", "--only nosuch", lambda: ["demo", "--only", "nosuch", "--smoke", "--out", _tmp()], "--only 'nosuch' is not a demo data set"),
    ("probgen demo", "--out ''", lambda: ["demo", "--smoke", "--only", "iris", "--out", ""], "--out is empty"),
]


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


@pytest.mark.parametrize("case", CASES, ids=[f"{c.entry}: {c.problem}" for c in CASES])
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
    assert total >= 40 and len(entries) >= 15
