"""Issue 29's corpus: every program in tests/user_programs/ is written the way Pyro's tutorials
and examples write it, and is taken through fit → evaluate → save → load in a new process →
evaluate → sample, each number checked against an independent computation.

A program module exposes ``make_data(seed) -> (train, test)``, ``build()`` (a namespace with
``model`` and ``guide``, networks built afresh on every call), ``FIT``/``EVALUATE`` (the
keyword arguments of ``probgen.fit``/``probgen.evaluate``), ``KIND`` (the kind evaluate must
report), ``reference(program, test)`` (per-example log-likelihoods computed without probgen from
the fitted parameters) and ``check_samples(program, guide, test)``; optionally ``train(program,
train)`` when fitting is more than one ``probgen.fit`` call. Tolerances, by kind:

- ``exact``: every example within 1e-5 nats of the reference;
- ``lower_bound``: the reference is log p(x) itself; 0 ≤ mean gap ≤ ``MAX_GAP``, the lower end
  loosened by 3 standard errors of the paired per-example differences;
- ``estimate``: the mean within 4 × the estimator's stderr + ``SLACK`` of the reference's.

The reload runs in ONE child process for the whole corpus (``_reload_child.py``, started once
and fed one saved program per request), which never saw the fits: it imports each program by
path, builds fresh networks, calls ``probgen.load(path, model=..., guide=...)``, evaluates with
the same seed and must reproduce the parent's per-example numbers to 1e-6.
New features add their case here: one module, and the driver picks it up.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys

import pytest
import torch
from _load import HERE, import_program, program_names

import probgen

# name -> "issue 29 item N: <exact error>": bugs still open; strict, so a fix must remove it
EXPECTED_FAILURES: dict[str, str] = {}  # name -> the open bug, with xfail(strict=True)


def _marked(name: str):
    if name in EXPECTED_FAILURES:
        return pytest.param(name, marks=pytest.mark.xfail(strict=True,
                                                          reason=EXPECTED_FAILURES[name]))
    return name


class ReloadingProcess:
    """One long-lived child process: a request per saved program, a JSON reply per request
    (started again if a request killed it, so one crash fails one program, not the rest)."""

    TIMEOUT = 300  # seconds for one program's load, evaluation and samples

    def __init__(self, folder) -> None:
        self.process: subprocess.Popen | None = None
        self.stderr = folder / "reloading-process.stderr"  # a file: a pipe could fill and block

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
            [str(HERE), os.environ.get("PYTHONPATH", "")]))
        with open(self.stderr, "a") as stderr:
            return subprocess.Popen(
                [sys.executable, str(HERE / "_reload_child.py")], cwd=HERE, env=env, text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)

    def reload(self, name: str, path: str) -> dict:
        if self.process is None or self.process.poll() is not None:
            self.process = self._start()
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"name": name, "path": path}) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], self.TIMEOUT)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.close()
            raise RuntimeError(f"the reloading process died or hung on {name!r}: "
                               f"{self.stderr.read_text()[-3000:]}")
        return json.loads(line)

    def close(self) -> None:
        if self.process is None:
            return
        self.process.stdin.close()  # the child's loop ends with its input
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


@pytest.fixture(scope="module")
def new_process(tmp_path_factory):
    child = ReloadingProcess(tmp_path_factory.mktemp("reloading"))
    yield child
    child.close()


def check_against_reference(module, held_out: probgen.LogLikelihood,
                            reference: torch.Tensor) -> None:
    assert held_out.kind == module.KIND, (held_out.kind, held_out.settings)
    got = held_out.per_example.double()
    reference = reference.double()
    assert got.shape == reference.shape, (
        f"evaluate gave {tuple(got.shape)} values for {tuple(reference.shape)} held-out rows")
    if module.KIND == "exact":
        torch.testing.assert_close(got, reference, atol=1e-5, rtol=0)
        return
    differences = reference - got
    paired_stderr = float(differences.std() / len(differences) ** 0.5)
    gap = float(differences.mean())
    if module.KIND == "lower_bound":
        assert -3 * paired_stderr <= gap <= module.MAX_GAP, (gap, paired_stderr)
    else:
        allowed = 4 * held_out.estimator_stderr + module.SLACK
        assert abs(gap) <= allowed, (gap, held_out.estimator_stderr)


@pytest.mark.parametrize("name", [_marked(name) for name in program_names()])
def test_program(name, new_process, tmp_path):
    module = import_program(name)
    train, test = module.make_data(0)
    program = module.build()
    if hasattr(module, "train"):
        result = module.train(program, train)
    else:
        result = probgen.fit(program.model, train, guide=program.guide, progress=False,
                             **module.FIT)
    held_out = probgen.evaluate(program.model, test, guide=result.guide, **module.EVALUATE)
    reference = module.reference(program, test)
    check_against_reference(module, held_out, reference)
    module.check_samples(program, result.guide, test)

    path = tmp_path / f"{name}.pt"
    probgen.save(result, path)
    reloaded = new_process.reload(name, str(path))
    assert "error" not in reloaded, reloaded.get("error")
    assert reloaded["kind"] == held_out.kind
    torch.testing.assert_close(torch.tensor(reloaded["per_example"], dtype=torch.float64),
                               held_out.per_example.double(), atol=1e-6, rtol=0)
    # the child's fresh networks hold the fitted weights: its independent numbers agree too
    torch.testing.assert_close(torch.tensor(reloaded["reference"], dtype=torch.float64),
                               reference.double(), atol=1e-6, rtol=0)
    assert reloaded["samples"] is None, reloaded["samples"]


def test_the_corpus_covers_issue_29s_program_shapes():
    """At least 12 programs; each module declares what the driver needs."""
    names = program_names()
    assert len(names) >= 12, names
    for name in names:
        module = import_program(name)
        missing = [attribute for attribute in ("make_data", "build", "FIT", "EVALUATE", "KIND",
                                               "reference", "check_samples")
                   if not hasattr(module, attribute)]
        assert not missing, f"{name}.py lacks {missing}"
        assert module.KIND in ("exact", "lower_bound", "estimate")
        assert module.KIND != "lower_bound" or hasattr(module, "MAX_GAP"), name
        assert module.KIND != "estimate" or hasattr(module, "SLACK"), name
