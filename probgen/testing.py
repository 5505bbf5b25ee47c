"""check_model: the contract every family keeps, ours or a user's, checked on small data.

In the spirit of scikit-learn's ``check_estimator``: run it on your own
:class:`~probgen.core.model.GenerativeModel` subclass before you trust its numbers.

Example:
    >>> from probgen.models import GaussianMixture
    >>> report = check_model(GaussianMixture(2, 2), torch.randn(40, 2), new_process=False)
    >>> report.passed
    True
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch

from probgen.core.model import GenerativeModel
from probgen.core.result import KINDS, LogLikelihood
from probgen.evaluate import evaluate
from probgen.infer import fit
from probgen.models.io import load, save

__all__ = ["check_model", "CheckResult", "ModelReport", "ContractBroken"]

# small settings for the estimators families declare, so a check takes seconds
SMALL_OPTIONS: dict[str, Any] = {"k": 16, "num_chains": 16, "num_betas": 50, "num_samples": 4,
                                 "num_steps": 50, "num_particles": 2}
ENUMERABLE_DIMS = 12  # binary data up to 2**12 points is summed exhaustively


class ContractBroken(AssertionError):
    """A model broke the family contract; the message lists every failed check."""


@dataclass(frozen=True)
class CheckResult:
    """One check: its name, ``"passed"``, ``"failed"`` or ``"skipped"``, and what was seen."""

    name: str
    status: str
    detail: str = ""


@dataclass(frozen=True)
class ModelReport:
    """Every check run on one model; ``passed`` when none failed."""

    model: str
    checks: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return all(check.status != "failed" for check in self.checks)

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(check for check in self.checks if check.status == "failed")

    def __str__(self) -> str:
        lines = [f"{self.model}: {'passed' if self.passed else 'FAILED'}"]
        lines += [f"  {c.status:7s} {c.name}: {c.detail}" for c in self.checks]
        return "\n".join(lines)


def check_model(model: GenerativeModel | Callable[[], GenerativeModel], data: Any, *,
                new_process: bool = True, seed: int = 0, tolerance: float = 1e-6,
                method_options: dict[str, dict[str, Any]] | None = None,
                raise_on_failure: bool = False) -> ModelReport:
    """Run the family contract on ``model`` with a few rows of ``data``.

    Checks: data validation; exact ``log_prob`` shape, finiteness, determinism and (for binary
    data up to 12 dimensions, or continuous data up to 2) normalization; a gradient reaching
    every parameter; one step of every declared training method; every estimator returning a
    correctly labelled :class:`LogLikelihood` with exact ≥ every lower bound and ELBO ≤ IWAE;
    sampling shape and support; save/load (in a new process when ``new_process``) scoring
    within ``tolerance``; refusal of NaN and misshapen data.

    Args:
        model: a :class:`GenerativeModel` instance or a zero-argument factory (a class whose
            defaults suit ``data``). It is not modified: checks run on copies.
        data: a small ``(n, ...)`` batch the model accepts (tens of rows are enough).
        method_options: extra ``fit`` options per training method, e.g.
            ``{"two_stage": {"vae_steps": 1}}``.
        raise_on_failure: raise :class:`ContractBroken` listing the failures.

    Returns:
        A :class:`ModelReport`; ``report.passed`` tells, ``print(report)`` lists each check.
    """
    if not isinstance(model, GenerativeModel) and callable(model):
        try:
            model = model()  # a class with suitable defaults, or a factory
        except TypeError as error:
            raise TypeError(f"check_model takes a probgen GenerativeModel or a zero-argument "
                            f"factory of one; calling {model!r} failed: {error}") from None
    if not isinstance(model, GenerativeModel):
        raise TypeError(f"check_model takes a probgen GenerativeModel (or a factory of one), got "
                        f"{type(model).__name__}; for a plain Pyro program use probgen.fit and "
                        "probgen.evaluate directly")
    model = _copy(model).eval()
    x = model.validate(data)
    checks: list[CheckResult] = []
    for name, check in _CHECKS:
        try:
            status, detail = check(model, x, seed=seed, tolerance=tolerance,
                                   new_process=new_process, method_options=method_options or {})
        except Exception as error:  # noqa: BLE001 - a check that raises has failed
            status, detail = "failed", f"{type(error).__name__}: {error}"
        checks.append(CheckResult(name, status, detail))
    report = ModelReport(type(model).__name__, tuple(checks))
    if raise_on_failure and not report.passed:
        raise ContractBroken(str(report))
    return report


# --- the checks: each returns (status, detail) -------------------------------------------------

_copies = itertools.count()


def _copy(model: GenerativeModel) -> GenerativeModel:
    """A deep copy under a Pyro name of its own, so copies never share param-store entries."""
    twin = copy.deepcopy(model)
    twin.pyro_name = f"{model.pyro_name}_check{next(_copies)}"
    return twin


def _check_log_prob(model: GenerativeModel, x: torch.Tensor, **_: Any) -> tuple[str, str]:
    if not model.has_exact_log_prob:
        return "skipped", "no exact log_prob declared"
    with torch.no_grad():
        first, second = model.log_prob(x), model.log_prob(x)
    if first.shape != (len(x),):
        return "failed", f"log_prob returned shape {tuple(first.shape)}, expected ({len(x)},)"
    if not torch.isfinite(first).all():
        return "failed", f"log_prob is not finite on {int((~torch.isfinite(first)).sum())} rows"
    if not torch.equal(first, second):
        return "failed", ("two calls of log_prob differ by up to "
                          f"{float((first - second).abs().max()):.3g}: is a dropout or other "
                          "training-mode layer active in eval()?")
    return "passed", f"shape ({len(x)},), finite, deterministic"


def _all_binary_inputs(dims: int, like: torch.Tensor) -> torch.Tensor:
    grid = torch.tensor(list(itertools.product((0.0, 1.0), repeat=dims)), dtype=like.dtype)
    return grid.reshape(-1, *like.shape[1:])


def _check_normalized(model: GenerativeModel, x: torch.Tensor, *, seed: int, **_: Any
                      ) -> tuple[str, str]:
    if not model.has_exact_log_prob:
        return "skipped", "no exact log_prob declared"
    dims = int(x[0].numel())
    with torch.no_grad():
        if model.support == "binary" and dims <= ENUMERABLE_DIMS:
            total = float(torch.logsumexp(model.log_prob(_all_binary_inputs(dims, x)), 0))
            ok = abs(total) < 1e-4
            return ("passed" if ok else "failed"), f"log Σ_x p(x) = {total:.3g} over 2^{dims} inputs"
        if model.data_space == "continuous" and dims <= 2 and model.support == "real":
            return _importance_normalization(model, x, seed)
    return "skipped", f"{dims}-dimensional {model.support} data cannot be summed here"


def _importance_normalization(model: GenerativeModel, x: torch.Tensor, seed: int
                              ) -> tuple[str, str]:
    """∫ p = E_q[p/q] with q a Gaussian three times as wide as the data."""
    generator = torch.Generator().manual_seed(seed)
    flat = x.reshape(len(x), -1).double()
    proposal = torch.distributions.Normal(flat.mean(0), 3 * flat.std(0).clamp_min(1e-3) + 1.0)
    draws = proposal.loc + proposal.scale * torch.randn(20000, flat.shape[1], generator=generator,
                                                         dtype=torch.float64)
    log_ratio = model.log_prob(draws.to(x.dtype).reshape(-1, *x.shape[1:])).double() \
        - proposal.log_prob(draws).sum(-1)
    ratio = log_ratio.exp()
    total, stderr = float(ratio.mean()), float(ratio.std() / math.sqrt(len(ratio)))
    ok = abs(total - 1) < 5 * stderr + 0.05
    return ("passed" if ok else "failed"), f"∫ p(x) dx = {total:.3f} ± {stderr:.3f} (importance)"


def _training_loss(model: GenerativeModel, x: torch.Tensor) -> torch.Tensor:
    if model.has_exact_log_prob:
        return -model.log_prob(x).sum()
    loss = model.default_loss() or pyro.infer.Trace_ELBO()
    return loss.differentiable_loss(model.model, model.guide, x)


def _check_gradients(model: GenerativeModel, x: torch.Tensor, **_: Any) -> tuple[str, str]:
    trainable = _copy(model).train()
    pyro.clear_param_store()
    try:
        _training_loss(trainable, x).backward()
    except NotImplementedError as error:  # e.g. a neural EBM: no normalized program
        return "skipped", str(error).split(";")[0]
    finally:
        pyro.clear_param_store()
    named = [(n, p) for n, p in trainable.named_parameters() if p.requires_grad]
    missing = [n for n, p in named if p.grad is None]
    if missing:
        return "failed", f"no gradient reaches {', '.join(missing[:5])}" + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    zero = sum(not bool(p.grad.ne(0).any()) for _, p in named)
    note = f" ({zero} exactly zero at this point, e.g. behind a zero-initialized layer)" if zero else ""
    return "passed", f"{len(named)} parameter tensors get a gradient{note}"


def _check_methods(model: GenerativeModel, x: torch.Tensor, *, seed: int,
                   method_options: dict[str, dict[str, Any]], **_: Any) -> tuple[str, str]:
    names = sorted(set(model.methods()) | {model.default_method})
    done = []
    for name in names:
        trained = _copy(model)
        result = fit(trained, x, method=name, num_steps=2, seed=seed, progress=False,
                     **method_options.get(name, {}))
        losses = [loss for loss in result.losses if loss is not None]
        if not losses or not all(math.isfinite(loss) for loss in losses):
            return "failed", f"method {name!r} gave losses {result.losses}"
        if any(m.training for m in trained.modules()):
            return "failed", f"after fit(method={name!r}) the model is left in training mode"
        done.append(name)
    return "passed", f"one step each of {', '.join(done)}"


def _estimator_names(model: GenerativeModel) -> list[str]:
    names = list(model.estimators())
    if model.has_exact_log_prob and "exact" not in names:
        names.insert(0, "exact")
    if not model.has_exact_log_prob and model.has_guide:
        names += ["elbo", "iwae"]
    return names


def _small_options(model: GenerativeModel, name: str, seed: int) -> dict[str, Any]:
    declared = model.estimators().get(name)
    accepted = declared.options if declared is not None else ("k",) if name == "iwae" else ()
    options = {k: v for k, v in SMALL_OPTIONS.items() if k in accepted}
    if (declared is not None and "seed" in declared.options) or name in ("elbo", "iwae"):
        options["seed"] = seed
    return options


def _scores(model: GenerativeModel, x: torch.Tensor, seed: int) -> dict[str, LogLikelihood]:
    return {name: evaluate(model, x, estimator=name, **_small_options(model, name, seed))
            for name in _estimator_names(model)}


def _check_estimators(model: GenerativeModel, x: torch.Tensor, *, seed: int, **_: Any
                      ) -> tuple[str, str]:
    results = _scores(model, x, seed)
    if not results:
        return "skipped", "no estimator declared"
    for name, ll in results.items():
        if not isinstance(ll, LogLikelihood) or ll.kind not in KINDS:
            return "failed", f"estimator {name!r} returned {type(ll).__name__}, not a labelled LogLikelihood"
        if ll.num_examples != len(x):
            return "failed", f"estimator {name!r} scored {ll.num_examples} of {len(x)} rows"
    exact = [ll for ll in results.values() if ll.kind == "exact" and ll.estimator == "exact"]
    for name, ll in results.items():
        if exact and ll.kind == "lower_bound":
            slack = 4 * ll.stderr / math.sqrt(len(x)) + 1e-6
            if ll.mean > exact[0].mean + max(slack, 1e-6):
                return "failed", (f"lower bound {name!r} {ll.mean:.4f} is above the exact "
                                  f"{exact[0].mean:.4f}")
    if "elbo" in results and "iwae" in results and \
            results["elbo"].mean > results["iwae"].mean + 1e-6:
        return "failed", (f"ELBO {results['elbo'].mean:.4f} above IWAE "
                          f"{results['iwae'].mean:.4f}")
    labels = ", ".join(f"{n}: {ll.kind} {ll.mean:.3f}" for n, ll in results.items())
    return "passed", labels


def _check_sample(model: GenerativeModel, x: torch.Tensor, **_: Any) -> tuple[str, str]:
    try:
        with torch.no_grad():
            samples = model.sample(3)
    except NotImplementedError:
        return "skipped", "the family does not sample"
    if not isinstance(samples, torch.Tensor):
        return "failed", f"sample returned {type(samples).__name__}, not a tensor"
    expected = (3, *x.shape[1:]) if model.event_shape() is not None else (3, *samples.shape[1:])
    if len(samples) != 3 or (model.event_shape() is None and samples.dim() != x.dim()) or \
            tuple(samples.shape) != expected:
        return "failed", f"sample(3) has shape {tuple(samples.shape)}, data rows are {tuple(x.shape[1:])}"
    model.validate(samples, name="samples")  # in the model's own support
    return "passed", f"shape {tuple(samples.shape)}, in the {model.support} support"


def _reference_score(model: GenerativeModel, x: torch.Tensor, seed: int) -> torch.Tensor:
    """A cheap, seeded score: exact log_prob, else the first estimator with small settings."""
    if model.has_exact_log_prob:
        with torch.no_grad():
            return model.log_prob(x).double()
    names = _estimator_names(model)
    if not names:
        return evaluate(model, x, seed=seed).per_example
    return evaluate(model, x, estimator=names[0],
                    **_small_options(model, names[0], seed)).per_example


_CHILD = textwrap.dedent("""
    import json, sys, torch, probgen
    from probgen.testing import _reference_score
    model = probgen.load(sys.argv[1])
    x = torch.load(sys.argv[2], weights_only=True)
    score = _reference_score(model, model.validate(x), int(sys.argv[3]))
    print(json.dumps(score.tolist()))
""")


def _check_save_load(model: GenerativeModel, x: torch.Tensor, *, seed: int, tolerance: float,
                     new_process: bool, **_: Any) -> tuple[str, str]:
    before = _reference_score(model, x, seed)
    with tempfile.TemporaryDirectory() as folder:
        path, data_path = Path(folder) / "model.pt", Path(folder) / "x.pt"
        save(model, path)
        if new_process:
            torch.save(x, data_path)
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            child = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(data_path),
                                    str(seed)], capture_output=True, text=True, timeout=600,
                                   env=env)
            if child.returncode != 0:
                return "failed", f"loading in a new process failed: {child.stderr.strip()[-300:]}"
            after = torch.tensor(json.loads(child.stdout.strip().splitlines()[-1]),
                                 dtype=torch.float64)
        else:
            after = _reference_score(load(path), x, seed)
    gap = float((before - after).abs().max())
    where = "a new process" if new_process else "this process"
    if gap > tolerance:
        return "failed", f"reloaded in {where}, scores moved by up to {gap:.3g} (> {tolerance:g})"
    return "passed", f"reloaded in {where}, scores equal to {gap:.1g}"


def _check_refusals(model: GenerativeModel, x: torch.Tensor, **_: Any) -> tuple[str, str]:
    bad = x.clone().float() if not x.is_floating_point() else x.clone()
    bad.view(len(bad), -1)[0, 0] = float("nan")
    refused = []
    for what, data in (("NaN", bad), ("a row of another shape", x.reshape(len(x), -1)[:, :-1])):
        if what != "NaN" and x[0].numel() < 2:
            continue
        try:
            evaluate(model, data)
        except (ValueError, TypeError):
            refused.append(what)
            continue
        return "failed", f"evaluate accepted data with {what}"
    return "passed", f"refuses {', '.join(refused)}"


_CHECKS: tuple[tuple[str, Callable[..., tuple[str, str]]], ...] = (
    ("log_prob", _check_log_prob),
    ("normalized", _check_normalized),
    ("gradients", _check_gradients),
    ("training methods", _check_methods),
    ("estimators", _check_estimators),
    ("sample", _check_sample),
    ("save/load", _check_save_load),
    ("bad input", _check_refusals),
)
