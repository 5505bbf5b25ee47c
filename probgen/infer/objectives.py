"""Training objectives for any Pyro program with a guide: the IWAE bound, and the ELBO with KL
warm-up and free bits. ``probgen.fit`` builds them from ``loss="iwae"``, ``kl_warmup_epochs=``,
``free_bits=``; they are also plain ``pyro.infer.ELBO`` objects a user may pass as ``loss=``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import ELBO, RenyiELBO
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence

__all__ = ["IWAE", "AnnealedELBO", "kl_weight", "kl_warmup", "in_kl_warmup"]


class IWAE(RenyiELBO):
    r"""-Σ_n log (1/k) Σ_i p(x_n, z_i) / q(z_i | x_n), z_i ~ q: the IWAE bound (Burda et al.,
    2016), Pyro's ``RenyiELBO(alpha=0)`` with vectorized particles.

    ``probgen.fit`` multiplies a mini-batch's bound by N/B *after* the log-mean-exp (the
    per-example bound is what is averaged); ``loss`` (validation, no gradients) runs in chunks
    of ``chunk`` examples, so k × n log-weights never sit in memory at once.
    """

    def __init__(self, num_particles: int = 5, *, max_plate_nesting: int = 1,
                 chunk: int = 500) -> None:
        if isinstance(num_particles, bool) or not isinstance(num_particles, int) \
                or num_particles < 1:
            raise ValueError(f"IWAE needs num_particles = k >= 1, got {num_particles!r}")
        super().__init__(alpha=0.0, num_particles=num_particles, vectorize_particles=True,
                         max_plate_nesting=max_plate_nesting)
        self.chunk = int(chunk)

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        n = args[0].shape[0] if args and torch.is_tensor(args[0]) and args[0].dim() else 0
        if n <= self.chunk:
            return super().loss(model, guide, *args, **kwargs)
        return sum(super(IWAE, self).loss(model, guide, *(a[i:i + self.chunk] for a in args),
                                          **kwargs) for i in range(0, n, self.chunk))


def kl_weight(step: int, warmup_steps: int) -> float:
    """β_t = min(1, (t + 1) / T_warm-up) at 0-based training step t (1 without warm-up)."""
    return 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)


_WARMING_UP: ContextVar[bool] = ContextVar("probgen_kl_warmup", default=False)


def in_kl_warmup() -> bool:
    """Whether the bound being evaluated down-weights its KL (β < 1: an annealed training
    objective during warm-up). A model whose prior is learned reads it to hold that prior's
    parameters (:meth:`probgen.models.hierarchical.HierarchicalVAE.top_down`)."""
    return _WARMING_UP.get()


@contextmanager
def kl_warmup(active: bool = True) -> Iterator[None]:
    """Marks the bound evaluated inside as a KL warm-up one (``active``: β < 1), for
    :func:`in_kl_warmup`; :class:`AnnealedELBO` enters it around each evaluation."""
    token = _WARMING_UP.set(bool(active))
    try:
        yield
    finally:
        _WARMING_UP.reset(token)


def _latent_sites(trace: poutine.Trace) -> list[str]:
    return [name for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"]
            and not site_is_subsample(site) and not site["infer"].get("is_auxiliary")]


class AnnealedELBO(ELBO):
    r"""-[E_q log p(x | z) − β_t Σ_s max(λ D_s n_s, KL_s)]: the ELBO with KL warm-up and free bits.

    β_t rises linearly from 0 to 1 over ``warmup_steps`` training steps (Bowman et al., 2016;
    Sønderby et al., 2016); each latent site s's KL (closed form where torch knows one, else the
    one-sample log q − log p), summed over its n_s examples, is floored at λ nats per latent
    dimension D_s and example (free bits, Kingma et al., 2016). Works on any model/guide pair
    whose latents the guide samples; β and λ act in ``loss_and_grads`` (training) only, so
    ``loss`` (validation) is the true negative ELBO. ``step`` is the training step, set by
    ``probgen.fit`` before each step (so a resumed run continues the warm-up where it was).

    While β < 1 the bound is evaluated inside :func:`kl_warmup`: models with learned priors
    (the hierarchical VAEs' p(z_l | z_{l+1})) then hold those priors' parameters (same value,
    no gradient), so the prior cannot absorb q while the KL is down-weighted.
    """

    def __init__(self, warmup_steps: int = 0, free_bits: float = 0.0, *,
                 num_particles: int = 1) -> None:
        if isinstance(warmup_steps, bool) or int(warmup_steps) != warmup_steps or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        if not float(free_bits) >= 0:
            raise ValueError(f"free_bits must be >= 0 nats per latent dimension, got {free_bits!r}")
        super().__init__(num_particles=num_particles)
        self.warmup_steps, self.free_bits = int(warmup_steps), float(free_bits)
        self.step = 0

    def beta(self) -> float:
        """The KL weight at the current ``step``."""
        return kl_weight(self.step, self.warmup_steps)

    def objective(self, model: Callable, guide: Callable, *args: Any, beta: float = 1.0,
                  free_bits: float = 0.0, **kwargs: Any) -> torch.Tensor:
        """The negative annealed bound, averaged over ``num_particles`` draws (differentiable);
        evaluated inside :func:`kl_warmup` while ``beta`` < 1."""
        loss = 0.0
        with kl_warmup(beta < 1.0):  # learned priors held while the KL is down-weighted
            for _ in range(self.num_particles):
                guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
                model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                    *args, **kwargs)
                model_trace.compute_log_prob(site_filter=lambda name, site: site["is_observed"])
                latents = _latent_sites(model_trace)
                missing = sorted(set(latents) - set(guide_trace.nodes))
                if missing:
                    raise ValueError(f"AnnealedELBO needs a guide that samples every latent; it does "
                                     f"not sample {missing}")
                log_likelihood = sum(site["log_prob_sum"] for site in model_trace.nodes.values()
                                     if site["type"] == "sample" and site["is_observed"])
                kl_total = 0.0
                for name in latents:
                    kl_total = kl_total + self._site_kl(guide_trace.nodes[name],
                                                        model_trace.nodes[name], free_bits)
                loss = loss - (log_likelihood - beta * kl_total) / self.num_particles
        return loss

    @staticmethod
    def _site_kl(q_site: dict, p_site: dict, free_bits: float) -> torch.Tensor:
        """KL(q || p) of one site, summed over its (scaled, masked) batch, floored at λ D n."""
        q, p, value = q_site["fn"], p_site["fn"], q_site["value"]
        try:
            kl = kl_divergence(q, p)
            if kl.shape != q.batch_shape:
                raise NotImplementedError
        except NotImplementedError:  # a flow, a mixture: one-sample log q - log p
            kl = q.log_prob(value) - p.log_prob(value)
        kl = scale_and_mask(kl, q_site["scale"], q_site["mask"])
        total = kl.sum()
        if free_bits > 0:
            dims = max(1, int(torch.Size(q.event_shape).numel()))
            count = scale_and_mask(torch.ones_like(kl), q_site["scale"], q_site["mask"]).sum()
            total = torch.maximum(total, free_bits * dims * count)
        return total

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any,
                            **kwargs: Any) -> torch.Tensor:
        """The training objective (with β_t and free bits)."""
        return self.objective(model, guide, *args, beta=self.beta(), free_bits=self.free_bits,
                              **kwargs)

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """The true negative ELBO (β = 1, no free bits), for validation."""
        with torch.no_grad():
            return float(self.objective(model, guide, *args, **kwargs))

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss.detach())

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("AnnealedELBO computes its traces in objective()")
