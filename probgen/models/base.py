"""GenerativeModel: the base class of every bundled model program, and the model registry."""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import pyro
import torch
from torch import nn

from probgen.data.validate import validate_data

__all__ = ["GenerativeModel", "register_model", "get_model_class", "MODEL_REGISTRY"]

MODEL_REGISTRY: dict[str, type[GenerativeModel]] = {}
_instance_counter = itertools.count()


def register_model(name: str):
    """Class decorator: make a bundled model loadable by name (``probgen.load``, the CLI)."""

    def decorate(cls: type[GenerativeModel]) -> type[GenerativeModel]:
        if name in MODEL_REGISTRY and MODEL_REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered")
        cls.registry_name = name
        MODEL_REGISTRY[name] = cls
        return cls

    return decorate


FAMILIES = ("mixture", "hmm", "vae", "flow", "ebm", "diffusion", "latent_diffusion",
            "hierarchical", "flow_vae")


def import_families() -> None:
    """Import every bundled family so each registers itself (absent ones are skipped)."""
    import importlib

    for family in FAMILIES:
        module = f"probgen.models.{family}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise


def get_model_class(name: str) -> type[GenerativeModel]:
    """The bundled model class registered under ``name`` (e.g. ``"gmm"``, ``"vae"``)."""
    if name not in MODEL_REGISTRY:
        import_families()
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {name!r}; bundled models: {', '.join(sorted(MODEL_REGISTRY))}")
    return MODEL_REGISTRY[name]


class GenerativeModel(nn.Module):
    r"""A Pyro model program with its guide, parameters and configuration.

    Subclasses implement ``model(*batch)`` (a Pyro program with a data plate over the first
    dimension) and, when they have continuous latents, ``guide(*batch)``. Parameters live in
    ``nn.Module`` attributes registered with ``pyro.module(self.pyro_name, self)``; the
    construction arguments live in ``self.config`` (JSON-able) so ``probgen.save``/``load``
    rebuild the model exactly.

    Capabilities are declared, not probed:
        has_exact_log_prob: ``log_prob(x)`` returns exact per-example log p(x) (a fast path that
            must agree with the generic enumeration path).
        has_guide: the model brings its own guide (otherwise ``fit`` builds one).
        default_estimator: the estimator ``evaluate(estimator="auto")`` uses (e.g. ``"ais"``).
        estimators: family-specific estimators by name (e.g. ``{"exact": "...:evaluate_rbm_exact"}``),
            tried before the generic ones.
        data_space: ``"discrete"`` or ``"continuous"``; support: a ``validate_data`` support.
    """

    registry_name: ClassVar[str] = ""
    has_exact_log_prob: ClassVar[bool] = False
    has_guide: ClassVar[bool] = False
    data_space: ClassVar[str] = "continuous"
    support: ClassVar[str] = "real"
    default_estimator: ClassVar[str | None] = None  # what estimator="auto" picks, if not exact/iwae
    # family-specific estimators: name -> "module:function(model, batch, **options)"
    estimators: ClassVar[dict[str, str]] = {}

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.config: dict[str, Any] = dict(config)
        self.pyro_name = f"{type(self).__name__.lower()}{next(_instance_counter)}"

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
        device = self.device
        if isinstance(x, torch.Tensor) and device is not None and x.device != device:
            raise ValueError(f"{name} is on {x.device} but the model is on {device}; move one "
                             f"of them (x.to('{device}') or model.to('{x.device}'))")
        x = validate_data(x, name=name, support=self.support, event_shape=self.event_shape(),
                          num_categories=self.config.get("num_categories"))
        if x.is_floating_point() or self.support not in ("count", "categorical"):
            # integers given to a real or binary likelihood become the model's float dtype
            x = x.to(self.dtype or (x.dtype if x.is_floating_point() else torch.get_default_dtype()))
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

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config.items())
