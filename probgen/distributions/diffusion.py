r"""A diffusion model as a Pyro distribution whose ``log_prob`` is a labelled lower bound (the VLB)."""

from __future__ import annotations

from typing import Any

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor

from probgen.diffusion.losses import Denoiser, vlb
from probgen.diffusion.samplers import sample_loop
from probgen.diffusion.schedules import NoiseSchedule

__all__ = ["DiffusionPrior"]


class DiffusionPrior(TorchDistribution):
    r"""A variance-preserving diffusion model over vectors, usable as a prior or a likelihood.

    ``log_prob(x)`` returns a one-sample (or ``num_samples``-sample) unbiased estimate of the
    variational lower bound log p(x) >= E[log p(x|z_0)] - KL(q(z_1|x) || N(0, I)) - L_T(x)
    (Kingma et al., 2021) — **not** log p(x). The class attribute ``log_prob_is_bound = True``
    says so; estimators that read a site's ``log_prob`` must label results ``lower_bound``
    (a plain average of it) or ``estimate`` (inside a log-mean-exp, e.g. IWAE, where Jensen's
    inequality no longer guarantees a bound). The estimate is differentiable with respect to the
    denoiser's parameters and to ``value`` (for end-to-end training of latent-diffusion VAEs).

    Arguments:
        denoiser: ε̂(z_t, t) network (e.g. :class:`probgen.nn.denoiser.MLPDenoiser`).
        schedule: a :class:`probgen.diffusion.schedules.NoiseSchedule`.
        features: event size d (the event shape is ``(d,)``).
        num_steps: T for the discrete-time model, None for continuous time.
        num_samples: (t, ε) draws averaged per example in ``log_prob``.
        sample_steps: ancestral steps in ``sample`` (default T, or 256 in continuous time).

    Example:
        >>> from probgen.diffusion import CosineSchedule
        >>> from probgen.nn.denoiser import MLPDenoiser
        >>> prior = DiffusionPrior(MLPDenoiser(2, (16,)), CosineSchedule(), features=2)
        >>> prior.log_prob(torch.randn(5, 2)).shape, prior.sample((3,)).shape
        (torch.Size([5]), torch.Size([3, 2]))
    """

    arg_constraints: dict[str, Any] = {}
    support = constraints.real_vector
    has_rsample = False
    log_prob_is_bound = True

    def __init__(self, denoiser: Denoiser, schedule: NoiseSchedule, features: int, *,
                 num_steps: int | None = None, num_samples: int = 1,
                 sample_steps: int | None = None, batch_shape: torch.Size | tuple = (),
                 validate_args: bool | None = None) -> None:
        if num_steps is not None and int(num_steps) < 1:
            raise ValueError(f"num_steps must be a positive integer or None, got {num_steps}")
        self.denoiser, self.schedule = denoiser, schedule
        self.features, self.num_steps = int(features), num_steps
        self.num_samples = int(num_samples)
        self.sample_steps = int(sample_steps or num_steps or 256)
        super().__init__(torch.Size(batch_shape), torch.Size([self.features]),
                         validate_args=validate_args)

    def expand(self, batch_shape: torch.Size | tuple, _instance: Any = None) -> DiffusionPrior:
        return DiffusionPrior(self.denoiser, self.schedule, self.features, num_steps=self.num_steps,
                              num_samples=self.num_samples, sample_steps=self.sample_steps,
                              batch_shape=batch_shape, validate_args=self._validate_args)

    def _reference(self) -> Tensor | None:
        for tensor in getattr(self.denoiser, "parameters", lambda: iter(()))():
            return tensor
        for tensor in getattr(self.denoiser, "buffers", lambda: iter(()))():
            return tensor
        return None

    def log_prob(self, value: Tensor) -> Tensor:
        """The VLB estimate of log p(value), shape ``broadcast(value.shape[:-1], batch_shape)``."""
        if value.dim() == 0 or value.shape[-1] != self.features:
            raise ValueError(f"value has shape {tuple(value.shape)} but the diffusion model has "
                             f"{self.features} features; pass vectors of shape (..., "
                             f"{self.features})")
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        value = value.expand(*shape, self.features)
        return vlb(self.denoiser, self.schedule, value, num_steps=self.num_steps,
                   num_samples=self.num_samples)

    def sample(self, sample_shape: torch.Size | tuple = torch.Size()) -> Tensor:
        """Ancestral (DDPM) samples of shape ``sample_shape + batch_shape + (d,)``."""
        shape = self._extended_shape(torch.Size(sample_shape))
        reference = self._reference()
        dtype = reference.dtype if reference is not None else None
        device = reference.device if reference is not None else None
        return sample_loop(self.denoiser, self.schedule, tuple(shape), num_steps=self.sample_steps,
                           eta=1.0, dtype=dtype, device=device)
