"""GenerativeModel: the protocol every bundled family implements (program, guide, capabilities)."""

from __future__ import annotations

import copy
import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyro
import torch
from torch import nn

from probgen.core.arguments import BLOCK_COUNT_LIMIT
from probgen.core.validate import check_num_samples, validate_data

__all__ = ["GenerativeModel", "Estimator", "check_numpy_range"]

_instance_counter = itertools.count()


@dataclass(frozen=True)
class Estimator:
    """A family's estimator: ``function(model, batch, **options)`` -> ``LogLikelihood``."""

    name: str
    function: Callable[..., Any]
    options: tuple[str, ...] = ()


class GenerativeModel(nn.Module):
    r"""A Pyro model program with its guide, parameters and configuration.

    Subclasses implement ``model(*batch)`` (a Pyro program with a data plate over the first
    dimension) and, when they have continuous latents, ``guide(*batch)``. Parameters live in
    ``nn.Module`` attributes registered with ``pyro.module(self.pyro_name, self)``; the
    construction arguments live in ``self.config`` (JSON-able) so ``probgen.save``/``load``
    rebuild the model exactly.

    Capabilities are declared once, on the class (or as a property of the config):
        has_exact_log_prob: ``log_prob(x)`` returns exact per-example log p(x) (a fast path that
            must agree with the generic enumeration path).
        has_guide: the model brings its own guide (otherwise ``fit`` builds one).
        default_method: the training method ``probgen.fit`` uses (``"svi"`` unless declared).
        default_estimator: the estimator ``evaluate(estimator="auto")`` uses (e.g. ``"ais"``).
        data_space: ``"discrete"``, ``"continuous"`` or ``"dequantized"``; support: a
            ``validate_data`` support.

    Training methods and estimators are declared with the class decorators
    :meth:`training_method` and :meth:`estimator`: one registry, callables with declared
    options, inherited by subclasses.
    """

    registry_name: ClassVar[str] = ""
    has_exact_log_prob: ClassVar[bool] = False
    has_guide: ClassVar[bool] = False
    data_space: ClassVar[str] = "continuous"
    support: ClassVar[str] = "real"
    default_method: ClassVar[str] = "svi"
    default_estimator: ClassVar[str | None] = None  # what estimator="auto" picks, if not exact/iwae
    # config keys added after models were saved without them: the value such a file meant
    # (probgen.load fills it in), which may differ from the constructor's new default
    saved_config_defaults: ClassVar[dict[str, Any]] = {}
    checks_padding: ClassVar[bool] = False  # validate_batch checks values past each length
    # the constructor argument that receives the data's size, filled by from_data (and the CLI):
    # a name ending in "_shape" takes one example's shape, any other the number of features of
    # 2-D data; None: the family has no such argument (every registered family declares it)
    data_size_argument: ClassVar[str | None] = None
    # constructor arguments, checked by annotation when the family is registered
    # (probgen.core.arguments): the smallest value of an int argument (default 1) and the largest
    # (default 2**24); repeated blocks built in a Python loop are capped much lower
    argument_minimums: ClassVar[dict[str, int]] = {"seed": 0, "warmup_steps": 0}
    argument_limits: ClassVar[dict[str, int]] = {
        name: BLOCK_COUNT_LIMIT for name in ("transforms", "flow_transforms", "num_masks",
                                             "layers", "num_layers")} | {"seed": 2**32 - 1}
    # one example row of the data the autoguide was built on (its shapes, for probgen.load)
    autoguide_example: tuple[torch.Tensor, ...] = ()

    @property
    def autoguide(self) -> Any:
        """The autoguide fit built for a model without its own guide; saved and loaded with it."""
        # a property, not a class attribute ``autoguide = None``: nn.Module keeps the guide in
        # ``_modules``, which a class attribute would shadow
        return self._modules.get("autoguide")

    @autoguide.setter
    def autoguide(self, guide: Any) -> None:
        if guide is None:  # nn.Module sets a Module itself (in ``_modules``); None lands here
            self._modules.pop("autoguide", None)
        else:
            raise TypeError(f"autoguide must be an nn.Module (an autoguide) or None, not "
                            f"{type(guide).__name__}")

    # --- declarations ----------------------------------------------------------------------
    @classmethod
    def training_method(cls, name: str) -> Callable[[type], type]:
        """Class decorator: declare a training method (a ``TrainingMethod`` subclass) under
        ``name`` for this family, reached by ``probgen.fit(model, data, method=name)``."""

        def declare(method: type) -> type:
            if "_declared_methods" not in cls.__dict__:  # not the base's dict
                cls._declared_methods = {}
            cls._declared_methods[name] = method
            return method

        return declare

    @classmethod
    def estimator(cls, name: str, *, options: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
        """Decorator: declare ``function(model, batch, **options) -> LogLikelihood`` as this
        family's estimator ``name``; ``options`` are the keywords it accepts (``k``,
        ``batch_size``, ``seed``, ...), checked by ``probgen.evaluate``."""

        def declare(function: Callable) -> Callable:
            if "_declared_estimators" not in cls.__dict__:
                cls._declared_estimators = {}
            cls._declared_estimators[name] = Estimator(name, function, tuple(options))
            return function

        return declare

    @classmethod
    def methods(cls) -> dict[str, type]:
        """Training methods declared on this class and its bases, by name."""
        found: dict[str, type] = {}
        for klass in reversed(cls.__mro__):
            found.update(klass.__dict__.get("_declared_methods", {}))
        return found

    @classmethod
    def estimators(cls) -> dict[str, Estimator]:
        """Estimators declared on this class and its bases, by name."""
        found: dict[str, Estimator] = {}
        for klass in reversed(cls.__mro__):
            found.update(klass.__dict__.get("_declared_estimators", {}))
        return found

    @classmethod
    def data_size_options(cls, data: torch.Tensor) -> dict[str, Any]:
        """``{data_size_argument: size}`` read from ``data`` (``(n, ...)``): one example's shape
        ``list(data.shape[1:])`` for a ``*_shape`` argument, else ``data.shape[1]`` of 2-D data;
        ``{}`` when there is no such argument or the data do not give it."""
        name = cls.data_size_argument
        if name is None:
            return {}
        if name.endswith("_shape"):
            return {name: list(data.shape[1:])}
        return {name: int(data.shape[1])} if data.dim() == 2 else {}

    @classmethod
    def from_data(cls, data: torch.Tensor, **kwargs: Any) -> GenerativeModel:
        """A model sized for ``data``: its :attr:`data_size_argument` filled from the data's
        shape (:meth:`data_size_options`) unless ``kwargs`` give it, then ``cls(**kwargs)``.

        Example:
            >>> from probgen.models.mixture import GaussianMixture
            >>> GaussianMixture.from_data(torch.zeros(10, 3), num_components=2).config["num_features"]
            3
        """
        return cls(**{**cls.data_size_options(data), **kwargs})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        sample = cls.__dict__.get("sample")
        if sample is not None and not getattr(sample, "_num_samples_checked", False):
            cls.sample = _checked_sample(sample)  # every family's sample(n): n checked first

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.config: dict[str, Any] = dict(config)
        self.pyro_name = f"{type(self).__name__.lower()}{next(_instance_counter)}"

    def __deepcopy__(self, memo: dict[int, Any]) -> GenerativeModel:
        """A deep copy under a Pyro name of its own: two copies trained in one process never
        share param-store entries (a shared name would let Pyro's store hold the other copy's
        tensors, and the copy would not train)."""
        cls = type(self)
        twin = cls.__new__(cls)
        memo[id(self)] = twin
        for key, value in self.__dict__.items():
            twin.__dict__[key] = copy.deepcopy(value, memo)
        twin.__dict__["pyro_name"] = f"{cls.__name__.lower()}{next(_instance_counter)}"
        return twin

    # --- the program -------------------------------------------------------------------
    def register_params(self, only: tuple[str, ...] | None = None, *,
                        exclude: tuple[str, ...] = ()) -> None:
        """``pyro.module(self.pyro_name, self)`` for some attributes: the same names, fewer sites.

        A model half that uses only the decoder registers the decoder (``only=...``) and the
        guide registers the rest (``exclude=`` the same names), so every parameter is still
        registered on every step, with half the ``pyro.param`` messages per program.
        """
        for name, param in self.named_parameters():
            attribute = name.split(".", 1)[0]
            if (only is None or attribute in only) and attribute not in exclude and param.requires_grad:
                pyro.param(f"{self.pyro_name}$$${name}", param)

    def model(self, *batch: torch.Tensor) -> None:
        raise NotImplementedError

    def guide(self, *batch: torch.Tensor) -> None:
        """An empty guide: correct when every latent is enumerated or absent."""

    def default_loss(self):
        """The ELBO ``fit`` uses when ``loss=None`` (None: probgen picks Trace/TraceEnum_ELBO)."""
        return None

    # --- capabilities ------------------------------------------------------------------
    def event_shape(self) -> tuple[int, ...] | None:
        """The shape of one example, or None if any shape is accepted."""
        return None

    def num_dims(self, x: torch.Tensor, *side: torch.Tensor) -> int:
        """Data dimensions per example (for bits/dim); ``side`` holds per-example side data."""
        return int(torch.Size(x.shape[1:]).numel())

    def validate_batch(self, *batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Check a whole batch (data first, then side tensors such as lengths) and return it."""
        return (self.validate(batch[0]),) + tuple(batch[1:])

    def validate(self, x: Any, *, name: str = "data") -> torch.Tensor:
        """Check data against this model (support, feature shape, device) and return it."""
        parameter = next(self.parameters(), None)  # one lookup for device and dtype (per batch)
        device = parameter.device if parameter is not None else self.device
        if isinstance(x, torch.Tensor) and device is not None and x.device != device:
            raise ValueError(f"{name} is on {x.device} but the model is on {device}; move one "
                             f"of them (x.to('{device}') or model.to('{x.device}'))")
        x = validate_data(x, name=name, support=self.support, event_shape=self.event_shape(),
                          num_categories=self.config.get("num_categories"))
        if x.is_floating_point() or self.support not in ("count", "categorical"):
            # integers given to a real or binary likelihood become the model's float dtype
            dtype = (parameter.dtype if parameter is not None else
                     x.dtype if x.is_floating_point() else torch.get_default_dtype())
            _check_range(x, dtype, name)
            x = x.to(dtype)
        return x

    @property
    def device(self) -> torch.device | None:
        for tensor in itertools.chain(self.parameters(), self.buffers()):
            return tensor.device
        return None

    @property
    def dtype(self) -> torch.dtype | None:
        for tensor in self.parameters():
            return tensor.dtype
        return None

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact per-example log p(x), shape ``(n,)`` (only when ``has_exact_log_prob``)."""
        raise NotImplementedError(f"{type(self).__name__} has no exact log_prob; use probgen.evaluate")

    def sample(self, num_samples: int) -> torch.Tensor:
        """Draw ``num_samples`` examples from the model."""
        raise NotImplementedError

    def values_per_sample(self, *args: Any, **kwargs: Any) -> int:
        """How many values one example of ``sample(n, *args, **kwargs)`` holds, for the memory
        check made before drawing (default: the event shape's size; a sequence family
        multiplies by its ``length``)."""
        shape = self.event_shape()
        return math.prod(shape) if shape else 1

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config.items())


def _check_range(x: torch.Tensor, dtype: torch.dtype, name: str, fix: str = "") -> None:
    """Refuse finite values that a cast to ``dtype`` would turn into Inf (1e39 in float32)."""
    if not dtype.is_floating_point or x.dtype == dtype or not x.numel() or not (
            x.is_floating_point() and torch.finfo(x.dtype).max > torch.finfo(dtype).max):
        return
    magnitudes = x.detach().abs()
    largest = float(magnitudes[torch.isfinite(magnitudes)].max()) if bool(
        torch.isfinite(magnitudes).any()) else 0.0
    limit = torch.finfo(dtype).max
    if largest > limit:
        kind = str(dtype).replace("torch.", "")
        raise ValueError(f"{name} has values up to {largest:.3g}, beyond {kind}'s range "
                         f"({limit:.3g}); rescale it or "
                         f"{fix or 'use a float64 model (model.double())'}")


def check_numpy_range(data: Any, name: str = "data") -> None:
    """Floating NumPy arrays (alone or in a tuple) become tensors of torch's default dtype at
    the boundary: refuse values that would become Inf there, naming the fix."""
    parts = data if isinstance(data, (tuple, list)) else (data,)
    for part in parts:
        if isinstance(part, np.ndarray) and part.dtype.kind == "f" and part.size:
            _check_range(torch.from_numpy(np.ascontiguousarray(part)),
                         torch.get_default_dtype(), name,
                         fix="pass it as a float64 tensor (torch.from_numpy(x)) to a float64 "
                             "model (model.double())")


def _checked_sample(sample: Callable[..., Any]) -> Callable[..., Any]:
    """``sample(self, num_samples, ...)`` with ``num_samples`` checked before anything is drawn:
    a positive integer (NumPy integers too) whose examples fit ``max_sample_bytes()``."""

    @functools.wraps(sample)
    def checked(self: GenerativeModel, num_samples: Any, *args: Any, **kwargs: Any) -> Any:
        per_sample = self.values_per_sample(*args, **kwargs)
        dtype = self.dtype or torch.get_default_dtype()
        try:
            num_samples = check_num_samples("num_samples", num_samples, per_sample=per_sample,
                                            element_bytes=torch.empty((), dtype=dtype).element_size())
        except ValueError as error:
            raise ValueError(f"{type(self).__name__}.sample: {error}") from None
        return sample(self, num_samples, *args, **kwargs)

    checked._num_samples_checked = True  # type: ignore[attr-defined]
    return checked
