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
    entries = sorted({c.entry for c in CASES} | {c[0] for c in CLI_CASES})
    total = len(CASES) + len(CLI_CASES)
    with capsys.disabled():
        print(f"\nbad-input suite: {total} bad inputs over {len(entries)} entry points: "
              + ", ".join(entries))
    assert total >= 40 and len(entries) >= 15
