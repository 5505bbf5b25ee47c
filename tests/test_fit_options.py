"""fit's runtime and validation options: threads=, validation_estimator as a name resolved
through probgen.core.scoring or as the user's own scorer, and the trainer's independence from
probgen.evaluate."""

import ast
import os
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints

import probgen
from probgen.core import scoring


def normal_model(x):
    loc = pyro.param("loc", torch.tensor(0.0))
    scale = pyro.param("scale", torch.tensor(1.0), constraint=constraints.positive)
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(loc, scale), obs=x)


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(50, generator=generator) + 1, torch.randn(30, generator=generator) + 1


# --- threads= ------------------------------------------------------------------------------------
def test_threads_applies_for_the_run_and_is_restored(data):
    before = torch.get_num_threads()
    wanted = 2 if before != 2 else 1
    seen = []
    result = probgen.fit(normal_model, data[0], num_steps=3, optim=0.1, seed=0, progress=False,
                         threads=np.int64(wanted),
                         callbacks=[lambda state: seen.append(torch.get_num_threads())])
    assert seen == [wanted] * 3
    assert torch.get_num_threads() == before
    assert result.settings["threads"] == wanted and type(result.settings["threads"]) is int


def test_threads_are_restored_when_the_run_fails(data):
    before = torch.get_num_threads()

    def fail(state):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        probgen.fit(normal_model, data[0], num_steps=3, seed=0, progress=False, threads=1,
                    callbacks=[fail])
    assert torch.get_num_threads() == before


def test_threads_default_leaves_torch_alone(data):
    before = torch.get_num_threads()
    result = probgen.fit(normal_model, data[0], num_steps=2, seed=0, progress=False)
    assert torch.get_num_threads() == before and result.settings["threads"] is None


@pytest.mark.parametrize("threads", [0, -1, 2.0, True, "4", 4 * (os.cpu_count() or 1) + 1])
def test_bad_threads_are_refused_before_training(data, threads):
    with pytest.raises(ValueError, match=r"threads must be a whole number from 1 to \d+"):
        probgen.fit(normal_model, data[0], num_steps=2, progress=False, threads=threads)


# --- validation as a callable --------------------------------------------------------------------
def test_a_named_estimator_is_resolved_through_the_registry(data):
    assert "exact" in scoring.estimator_names(normal_model)
    result = probgen.fit(normal_model, data[0], num_steps=10, optim=0.1, validation=data[1],
                         validation_estimator="exact", validate_every=5, seed=0,
                         progress=False, restore_best=False)
    with torch.no_grad():
        expected = -dist.Normal(pyro.param("loc"), pyro.param("scale")).log_prob(data[1]).mean()
    assert result.validation[-1][1] == pytest.approx(float(expected), abs=1e-5)


def test_a_user_scorer_validates_like_the_named_estimator(data):
    calls = []

    def score(model, batch, guide):
        calls.append((model, len(batch[0]), callable(guide)))
        with torch.no_grad():
            return dist.Normal(pyro.param("loc"), pyro.param("scale")).log_prob(batch[0])

    result = probgen.fit(normal_model, data[0], num_steps=10, optim=0.1, validation=data[1],
                         validation_estimator=score, validate_every=5, seed=0, progress=False,
                         restore_best=False)
    assert calls == [(normal_model, 30, True)] * 2
    with torch.no_grad():
        expected = -dist.Normal(pyro.param("loc"), pyro.param("scale")).log_prob(data[1]).mean()
    assert result.validation[-1][1] == pytest.approx(float(expected), abs=1e-6)
    named = probgen.fit(normal_model, data[0], num_steps=10, optim=0.1, validation=data[1],
                        validation_estimator="exact", validate_every=5, seed=0, progress=False,
                        restore_best=False)
    assert [s for s, _ in named.validation] == [s for s, _ in result.validation]
    assert [v for _, v in named.validation] == pytest.approx([v for _, v in result.validation])


def test_an_unknown_estimator_name_is_refused_up_front(data):
    with pytest.raises(ValueError, match=r"validation_estimator must be one of \('auto',"):
        probgen.fit(normal_model, data[0], num_steps=2, validation=data[1],
                    validation_estimator="bogus", progress=False)


def test_the_trainer_never_imports_the_evaluation_package():
    infer = Path(probgen.__file__).parent / "infer"
    imported = []
    for path in infer.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.append((path.name, node.module))
            elif isinstance(node, ast.Import):
                imported += [(path.name, alias.name) for alias in node.names]
    assert not [(f, m) for f, m in imported if m.startswith("probgen.evaluate")]
