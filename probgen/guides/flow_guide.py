r"""FlowGuide: an autoguide whose posterior over all continuous latents is a normalizing flow."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_feasible

from probgen.distributions.flow import Flow, FlowDistribution

__all__ = ["FlowGuide"]

# Autoregressive kinds are fast in the density direction; a guide samples and scores its own
# samples, so by default they run inverted (IAF-style: one pass per sample).
_AUTOREGRESSIVE = ("maf", "nsf", "naf", "unaf", "sospf", "bpf")


class FlowGuide(AutoContinuous):
    r"""q(z) = flow over the flattened unconstrained latents of any Pyro model (Rezende & Mohamed, 2015).

    The continuous latent sites are mapped to the real line (``biject_to(site.support)``),
    concatenated into one vector of size ``latent_dim``, drawn from a normalizing flow, and
    unpacked, as in Pyro's ``AutoContinuous``: only :meth:`get_posterior` changes, returning
    a :class:`~probgen.distributions.flow.FlowDistribution`. Sampling and scoring one's own
    sample costs one pass of the flow.

    Arguments:
        model: a Pyro model with continuous latents (enumerate or marginalize discrete ones).
        flow: the flow kind (see :func:`probgen.distributions.flow.flow_kinds`).
        backend: ``"zuko"`` or ``"nflows"``.
        inverse: run the flow inverted so sampling is the fast pass (default: True for
            autoregressive kinds).
        flow_options: passed to :class:`~probgen.distributions.flow.Flow` (``transforms``,
            ``hidden``, ``base``, ``bins``...).

    Example:
        >>> import pyro
        >>> def model():
        ...     pyro.sample("z", pyro.distributions.Normal(0.0, 1.0).expand([2]).to_event(1))
        >>> guide = FlowGuide(model, flow="maf", transforms=2)
        >>> sorted(guide())
        ['z']
    """

    def __init__(self, model: Callable, flow: str = "nsf", *, backend: str = "zuko",
                 inverse: bool | None = None, transforms: int = 3,
                 hidden: Sequence[int] = (64, 64), init_loc_fn: Callable = init_to_feasible,
                 **flow_options: Any) -> None:
        super().__init__(model, init_loc_fn=init_loc_fn)
        if inverse is None:
            inverse = flow in _AUTOREGRESSIVE
        self._flow_args = dict(kind=flow, backend=backend, inverse=bool(inverse),
                               transforms=int(transforms), hidden=tuple(hidden), **flow_options)
        self.flow: Flow | None = None

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        prototype = self._init_loc()  # dtype and device of the model's latents
        self.flow = Flow(self.latent_dim, **self._flow_args).to(prototype)

    def get_posterior(self, *args: Any, **kwargs: Any) -> FlowDistribution:
        """The flow distribution over the packed unconstrained latent vector."""
        return self.flow()
