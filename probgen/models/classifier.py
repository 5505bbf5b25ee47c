"""Generative classifiers: one density model per class, p(y | x) ∝ p(x | y) p(y)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from probgen.core.model import GenerativeModel
from probgen.core.result import LogLikelihood, data_fingerprint
from probgen.core.validate import as_batch, check_finite, check_size, validate_data
from probgen.evaluate.api import evaluate
from probgen.infer.fit import fit
from probgen.infer.result import FitResult

__all__ = ["GenerativeClassifier", "ClassFamily", "KIND_ORDER"]

# What ``family_factory(c)`` may return: a bundled model, a Pyro program, or (model, guide).
ClassFamily = GenerativeModel | Callable[..., Any] | tuple[Any, Callable[..., Any] | None]
KIND_ORDER = ("exact", "lower_bound", "estimate")  # weakest last: a joint is as weak as its part


class _ClassScope(Messenger):
    """Prefix a program's sample sites with ``class{c}/``, so the autoguide ``fit`` builds for
    each class's copy of one program has its own parameter names (``AutoNormal.locs.class0/z``)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def _pyro_sample(self, msg: dict[str, Any]) -> None:
        if not site_is_subsample(msg):  # plates keep their names: probgen finds the data plate
            msg["name"] = f"{self.prefix}/{msg['name']}"


def _scoped(program: Callable[..., Any], prefix: str) -> Callable[..., Any]:
    @functools.wraps(program)
    def scoped(*args: Any, **kwargs: Any) -> Any:
        with _ClassScope(prefix):
            return program(*args, **kwargs)

    return scoped


@dataclass(frozen=True)
class _Member:
    """One class's density model: what ``fit`` and ``evaluate`` are called with."""

    model: Any
    guide: Callable[..., Any] | None


class GenerativeClassifier:
    r"""A density model per class and a class prior: p(y | x) ∝ p(x | y) p(y) (Ng & Jordan, 2002).

    ``family_factory(c)`` builds class ``c``'s model: a bundled
    :class:`~probgen.core.model.GenerativeModel` (a new instance per call), a Pyro program
    ``model(x)`` with a plate over the examples, or a ``(model, guide)`` pair, exactly what
    :func:`probgen.fit` and :func:`probgen.evaluate` accept. A program's sample sites run under
    a ``class{c}/`` name scope (so the autoguides ``fit`` builds stay apart); its parameters
    must be its own: name them per class (``pyro.param(f"loc_{c}", ...)``), which ``fit``
    checks before training.
    With an independent-feature family (one Gaussian with diagonal covariance, one Bernoulli
    product) it is naive Bayes.

    ``fit`` trains each class's model on its rows with :func:`probgen.fit` (options passed
    through) and sets log p(y = c) = log (N_c + α) / (N + Cα). Every method that scores takes
    ``estimator=`` and the other options of :func:`probgen.evaluate` (``k``, ``seed``, ...).

    Arguments:
        family_factory: ``c -> model``, ``c -> program`` or ``c -> (model, guide)``.
        num_classes: C; labels are integers 0..C-1.
        prior_smoothing: α >= 0, pseudo-counts added to each class count (0: the frequencies).

    Example:
        >>> from probgen.models.mixture import BernoulliMixture
        >>> x = torch.bernoulli(torch.full((60, 4), 0.5))
        >>> y = (x[:, 0] > 0).long()
        >>> classifier = GenerativeClassifier(lambda c: BernoulliMixture(1, 4).double(), 2)
        >>> classifier.fit(x, y, num_steps=5, progress=False).predict(x).shape
        torch.Size([60])
    """

    def __init__(self, family_factory: Callable[[int], ClassFamily], num_classes: int, *,
                 prior_smoothing: float = 0.0) -> None:
        if not callable(family_factory) or isinstance(family_factory, GenerativeModel):
            raise TypeError(f"family_factory must be a callable c -> model, got "
                            f"{type(family_factory).__name__}; e.g. lambda c: BernoulliMixture(1, 64)")
        self.family_factory = family_factory
        self.num_classes = check_size("num_classes", num_classes, minimum=2)
        self.prior_smoothing = check_finite("prior_smoothing", prior_smoothing, nonnegative=True)
        self.members: list[_Member] = []
        self.fit_results: list[FitResult] = []
        self.class_counts: Tensor | None = None  # (C,) training rows per class
        self.log_class_prior: Tensor | None = None  # (C,) log p(y = c), float64

    # --- training --------------------------------------------------------------------------
    def fit(self, x: Any, y: Any, *, validation: tuple[Any, Any] | None = None,
            class_options: Sequence[Mapping[str, Any]] | None = None,
            **fit_options: Any) -> GenerativeClassifier:
        """Fit class ``c``'s model to the rows with ``y == c`` by ``probgen.fit(model, x[y == c],
        **fit_options)``, for each c; ``validation=(x_val, y_val)`` is split the same way.

        ``class_options``: C dicts of fit options that override ``fit_options`` class by class
        (families that train differently: ``[{}, {"method": "svi", "optim": 0.01}]``).
        Returns ``self``; ``fit_results[c]`` holds each class's :class:`~probgen.FitResult`.
        """
        if class_options is None:
            class_options = [{}] * self.num_classes
        if isinstance(class_options, Mapping) or len(class_options) != self.num_classes or \
                not all(isinstance(options, Mapping) for options in class_options):
            raise TypeError(f"class_options must be a list of {self.num_classes} dicts of fit "
                            "options, one per class (use {} for a class with none)")
        for options in (fit_options, *class_options):
            for name in ("guide", "data"):
                if name in options:
                    raise TypeError(f"fit takes no {name}=: each class's guide comes from "
                                    "family_factory (return (model, guide)), its data from x, y")
        batch = as_batch(x, name="x")
        labels = self._labels(y, len(batch[0]))
        counts = torch.bincount(labels, minlength=self.num_classes)  # (C,)
        missing = [c for c in range(self.num_classes) if counts[c] == 0]
        if missing:
            raise ValueError(f"class(es) {missing} have no training examples; every class in "
                             f"0..{self.num_classes - 1} needs at least one row (relabel to "
                             "0..C-1 over the classes present, or pass a smaller num_classes)")
        held_out = None
        if validation is not None:
            if not isinstance(validation, (tuple, list)) or len(validation) != 2:
                raise TypeError("validation must be a pair (x_val, y_val) of held-out rows and "
                                "their labels")
            held_out = as_batch(validation[0], name="validation x")
            held_out_labels = self._labels(validation[1], len(held_out[0]), name="validation y")
        members = self._build_members()
        class_data = [_unwrap(tuple(t[(labels == c).to(t.device)] for t in batch))
                      for c in range(self.num_classes)]
        _check_separate_parameters(members, class_data)
        results = []
        for c, (member, data) in enumerate(zip(members, class_data)):
            options = {**fit_options, **class_options[c]}
            if held_out is not None:
                rows = held_out_labels == c
                if bool(rows.any()):
                    options["validation"] = _unwrap(tuple(t[rows.to(t.device)] for t in held_out))
            results.append(fit(member.model, data, guide=member.guide, **options))
        # Score with the guide each fit trained (an autoguide it built) or the member's own.
        self.members = [_Member(m.model, r.guide if r.method == "svi" else m.guide)
                        for m, r in zip(members, results)]
        self.fit_results = results
        self.class_counts = counts
        smoothed = counts.to(torch.float64) + self.prior_smoothing
        self.log_class_prior = smoothed.log() - smoothed.sum().log()
        return self

    def _build_members(self) -> list[_Member]:
        members, seen = [], {}
        for c in range(self.num_classes):
            made = self.family_factory(c)
            if isinstance(made, tuple) and len(made) != 2:
                raise TypeError(f"family_factory({c}) returned a tuple of {len(made)} items; "
                                "return a model, a Pyro program or a (model, guide) pair")
            model, guide = made if isinstance(made, tuple) else (made, None)
            if not callable(model) and not isinstance(model, GenerativeModel):
                raise TypeError(f"family_factory({c}) returned {type(model).__name__}; return a "
                                "GenerativeModel, a Pyro program (a callable) or (model, guide)")
            if guide is not None and not callable(guide):
                raise TypeError(f"family_factory({c}) returned a guide of type "
                                f"{type(guide).__name__}; a guide is a Pyro program or None")
            if isinstance(model, GenerativeModel):
                if id(model) in seen:
                    raise ValueError(f"family_factory returned the same model object for classes "
                                     f"{seen[id(model)]} and {c}; build a new model on each call "
                                     "(lambda c: BernoulliMixture(1, 64), not a shared instance)")
                seen[id(model)] = c
                members.append(_Member(model, guide))
            else:
                prefix = f"class{c}"
                members.append(_Member(_scoped(model, prefix),
                                       None if guide is None else _scoped(guide, prefix)))
        return members

    # --- scoring ---------------------------------------------------------------------------
    def class_log_likelihoods(self, x: Any, *, estimator: str = "auto",
                              **evaluate_options: Any) -> list[LogLikelihood]:
        """log p(x_i | y = c) for every row under each class's model: C results of
        ``probgen.evaluate(model_c, x, estimator=estimator, **evaluate_options)``."""
        self._check_fitted()
        if "guide" in evaluate_options:
            raise TypeError("evaluate options take no guide=: each class uses the guide it was "
                            "fitted with")
        batch = _unwrap(as_batch(x, name="x"))
        return [evaluate(member.model, batch, guide=member.guide, estimator=estimator,
                         **evaluate_options) for member in self.members]

    def log_joint(self, x: Any, *, estimator: str = "auto", **evaluate_options: Any) -> Tensor:
        r"""log p(x_i, y = c) = log p(x_i | y = c) + log p(y = c), shape ``(n, C)``, float64."""
        parts = self.class_log_likelihoods(x, estimator=estimator, **evaluate_options)
        return torch.stack([part.per_example for part in parts], dim=-1) + self.log_class_prior

    predict_joint_log_proba = log_joint  # scikit-learn's name

    def predict_log_proba(self, x: Any, *, estimator: str = "auto",
                          **evaluate_options: Any) -> Tensor:
        r"""log p(y = c | x_i) = log p(x_i, c) - logsumexp_c' log p(x_i, c'), shape ``(n, C)``."""
        joint = self.log_joint(x, estimator=estimator, **evaluate_options)
        return joint - torch.logsumexp(joint, dim=-1, keepdim=True)

    def predict_proba(self, x: Any, *, estimator: str = "auto", **evaluate_options: Any) -> Tensor:
        """p(y = c | x_i), shape ``(n, C)``; rows sum to 1."""
        return self.predict_log_proba(x, estimator=estimator, **evaluate_options).exp()

    def predict(self, x: Any, *, estimator: str = "auto", **evaluate_options: Any) -> Tensor:
        """argmax_c p(x_i, y = c), shape ``(n,)``, int64."""
        return self.log_joint(x, estimator=estimator, **evaluate_options).argmax(dim=-1)

    def score(self, x: Any, y: Any, *, estimator: str = "auto", **evaluate_options: Any) -> float:
        """Accuracy: the fraction of rows whose predicted class is ``y``."""
        predicted = self.predict(x, estimator=estimator, **evaluate_options)
        labels = self._labels(y, len(predicted))
        return float((predicted == labels.to(predicted.device)).double().mean())

    def evaluate(self, x: Any, y: Any, *, estimator: str = "auto",
                 **evaluate_options: Any) -> LogLikelihood:
        r"""Held-out log p(x_i, y_i) = log p(x_i | y_i) + log p(y_i), each row scored by its
        own class's model only.

        The kind is the weakest of the classes' kinds (exact < lower_bound < estimate): any
        estimate makes an estimate, else any lower bound a lower bound, else exact. The
        estimator is the classes' common estimator (names joined by ``+`` when they differ);
        ``settings["per_class"]`` lists each class's estimator, kind, settings and row count.
        """
        self._check_fitted()
        if "guide" in evaluate_options:
            raise TypeError("evaluate options take no guide=: each class uses the guide it was "
                            "fitted with")
        batch = as_batch(x, name="x")
        labels = self._labels(y, len(batch[0]))
        per_example = torch.empty(len(labels), dtype=torch.float64)
        parts: list[tuple[int, LogLikelihood]] = []
        for c, member in enumerate(self.members):
            rows = (labels == c).nonzero().flatten()
            if len(rows) == 0:
                continue
            data = _unwrap(tuple(t[rows.to(t.device)] for t in batch))
            result = evaluate(member.model, data, guide=member.guide, estimator=estimator,
                              **evaluate_options)
            per_example[rows] = result.per_example + self.log_class_prior[c]
            parts.append((c, result))
        return _joint_result(per_example, parts, data_fingerprint(*batch, labels),
                             self.prior_smoothing)

    # --- checks ------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.log_class_prior is None:
            raise RuntimeError("this GenerativeClassifier is not fitted yet; call fit(x, y) first")

    def _labels(self, y: Any, num_examples: int, *, name: str = "y") -> Tensor:
        """``y`` as an int64 vector of labels in 0..C-1, one per example of x."""
        labels = validate_data(y, name=name)
        if labels.dim() != 1:
            raise ValueError(f"{name} must be a vector of class labels, got shape "
                             f"{tuple(labels.shape)}; pass {name}.reshape(-1)")
        if len(labels) != num_examples:
            raise ValueError(f"{name} has {len(labels)} labels but x has {num_examples} rows; "
                             "pass one label per row")
        if labels.is_floating_point() and not torch.equal(labels, labels.round()):
            row = int((labels != labels.round()).nonzero()[0])
            raise ValueError(f"{name} must hold integer class labels, got {float(labels[row]):g} "
                             f"at row {row}; encode classes as 0..{self.num_classes - 1} (e.g. "
                             "np.unique(y, return_inverse=True)[1])")
        bad = (labels < 0) | (labels >= self.num_classes)
        if bool(bad.any()):
            row = int(bad.nonzero()[0])
            raise ValueError(f"{name} has label {labels[row].item():g} at row {row} ({int(bad.sum())} "
                             f"row(s) out of range), but num_classes={self.num_classes} takes "
                             f"labels 0..{self.num_classes - 1}; relabel them or raise num_classes")
        return labels.long().cpu()

    def __repr__(self) -> str:
        fitted = "fitted" if self.log_class_prior is not None else "not fitted"
        return (f"GenerativeClassifier(num_classes={self.num_classes}, prior_smoothing="
                f"{self.prior_smoothing:g}, {fitted})")


def _check_separate_parameters(members: list[_Member], class_data: list[Any]) -> None:
    """Refuse programs whose ``pyro.param`` names recur across classes: fitting class c would
    reset and retrain the parameters of the classes before it. Bundled models name theirs
    uniquely; each program (and guide) is traced once on its class's rows, as ``fit`` does."""
    owner: dict[str, int] = {}
    for c, (member, data) in enumerate(zip(members, class_data)):
        if isinstance(member.model, GenerativeModel):
            continue
        batch = data if isinstance(data, tuple) else (data,)
        with poutine.block(), torch.no_grad(), poutine.trace(param_only=True) as capture:
            member.model(*batch)
            if member.guide is not None:
                member.guide(*batch)
        shared = sorted(name for name in capture.trace.nodes if owner.get(name, c) != c)
        if shared:
            raise ValueError(
                f"the programs of classes {owner[shared[0]]} and {c} share the parameter(s) "
                f"{shared[:5]}: fitting class {c} would overwrite them. Give each class its own "
                "names inside family_factory (pyro.param(f'loc_{c}', ...), pyro.module(f'net_{c}', "
                "net)) or a new PyroModule per class")
        owner.update(dict.fromkeys(capture.trace.nodes, c))


def _unwrap(batch: tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
    """One tensor as itself, side data as the tuple ``fit``/``evaluate`` take."""
    return batch[0] if len(batch) == 1 else batch


def _joint_result(per_example: Tensor, parts: list[tuple[int, LogLikelihood]], data_id: str,
                  prior_smoothing: float) -> LogLikelihood:
    """The classes' results as one LogLikelihood of the joint, labelled with the weakest kind."""
    kind = max((part.kind for _, part in parts), key=KIND_ORDER.index)
    names = sorted({part.estimator for _, part in parts})
    spaces = {part.data_space for _, part in parts}
    if len(spaces) > 1:
        raise ValueError(f"the class models score x in different data spaces {sorted(spaces)}; "
                         "use one kind of likelihood for every class")
    total = sum(part.num_examples for _, part in parts)
    num_dims = sum(part.num_dims * part.num_examples for _, part in parts) / total
    # Each class's estimator error enters the mean with its share of the rows.
    estimator_stderr = math.sqrt(sum((part.num_examples / total * part.estimator_stderr) ** 2
                                     for _, part in parts))
    settings = {"per_class": [{"class": c, "estimator": part.estimator, "kind": part.kind,
                               "num_examples": part.num_examples, "settings": part.settings}
                              for c, part in parts],
                "prior_smoothing": prior_smoothing}
    return LogLikelihood(per_example, kind=kind, estimator="+".join(names),
                         num_dims=float(num_dims) if num_dims != int(num_dims) else int(num_dims),
                         data_space=spaces.pop(), settings=settings, data_id=data_id,
                         estimator_stderr=estimator_stderr)

