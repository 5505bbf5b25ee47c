r"""Diffusion density model for continuous (or dequantized) vector data, scored by its VLB or ODE.

p(x) is a variance-preserving diffusion over x_std = (x - shift) / scale with a Gaussian decoder;
``evaluate_vlb`` gives a lower bound on log p(x) (Kingma et al., 2021), ``evaluate_ode`` the
probability-flow ODE's log-density (Song et al., 2021), exact up to the solver's tolerance when
the divergence is exact, a Hutchinson estimate otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro
import torch
from torch import Tensor

from probgen.core.chunks import eval_mode, map_chunks
from probgen.core.result import LogLikelihood, data_fingerprint
from probgen.core.standardize import config_floats
from probgen.core.validate import check_size
from probgen.diffusion.losses import simple_loss, vlb
from probgen.diffusion.ode import ode_log_prob, ode_sample
from probgen.diffusion.samplers import sample_loop
from probgen.diffusion.schedules import make_schedule
from probgen.distributions.diffusion import DiffusionPrior
from probgen.models.registry import register_model
from probgen.models.standardized import StandardizedVectorModel
from probgen.nn.denoiser import MLPDenoiser

__all__ = ["LOSSES", "DiffusionDensity", "evaluate_vlb", "evaluate_ode"]

LOSSES = ("vlb", "simple")


@register_model("diffusion")
class DiffusionDensity(StandardizedVectorModel):
    r"""A diffusion model of vectors x ∈ R^d (continuous data or dequantized integer data).

    log p(x) = log p_std((x - shift) / scale) - Σ_j log scale_j, with p_std a diffusion model
    (cosine/linear/learned schedule, MLP ε-network, continuous time or ``num_steps`` steps).

    Arguments:
        features: d.
        hidden_features: widths of the denoiser's residual blocks.
        schedule: ``"cosine"``, ``"linear"`` or ``"learned"``.
        logsnr_min, logsnr_max: λ(1) and λ(0) of the schedule.
        num_steps: T for the discrete-time model; None for continuous time (VDM).
        loss: training objective, ``"vlb"`` (a likelihood bound) or ``"simple"`` (Ho et al.'s
            ε-MSE: better samples, no bound while training; evaluation always uses the VLB).
        shift, scale: data standardization (scalars or one value per feature).
        dequantized: the data are uniformly dequantized integers (labels results ``dequantized``).

    Example:
        >>> model = DiffusionDensity(features=2, hidden_features=(32, 32))
        >>> model.vlb(torch.randn(4, 2)).shape
        torch.Size([4])
    """

    has_guide = True  # no latent sample sites: the empty guide is the right one
    default_estimator = "vlb"

    def __init__(self, features: int, hidden_features: Sequence[int] = (128, 128, 128),
                 time_features: int = 32, schedule: str = "cosine", logsnr_min: float = -10.0,
                 logsnr_max: float = 10.0, num_steps: int | None = None, loss: str = "vlb",
                 shift: float | Sequence[float] = 0.0, scale: float | Sequence[float] = 1.0,
                 dequantized: bool = False) -> None:
        features = check_size("features", features)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if num_steps is not None and int(num_steps) < 1:
            raise ValueError(f"num_steps must be a positive integer or None, got {num_steps}")
        super().__init__(features=int(features), hidden_features=list(hidden_features),
                         time_features=time_features, schedule=schedule, logsnr_min=logsnr_min,
                         logsnr_max=logsnr_max, num_steps=num_steps, loss=loss,
                         shift=config_floats(shift), scale=config_floats(scale), dequantized=bool(dequantized))
        self.denoiser = MLPDenoiser(int(features), hidden_features, time_features)
        self.schedule = make_schedule(schedule, logsnr_min, logsnr_max)
        self._register_standardization(int(features), shift, scale)

    def prior(self, *, num_samples: int = 1) -> DiffusionPrior:
        """p_std as a Pyro distribution whose log_prob is the VLB (``log_prob_is_bound``)."""
        return DiffusionPrior(self.denoiser, self.schedule, self.config["features"],
                              num_steps=self.config["num_steps"], num_samples=num_samples)

    def standardize(self, x: Tensor) -> Tensor:
        return (x - self.shift) / self.scale

    def log_scale(self) -> Tensor:
        """Σ_j log scale_j: the change-of-variables term between x and x_std."""
        return torch.log(self.scale).sum()

    def model(self, x: Tensor) -> None:
        pyro.module(self.pyro_name, self)
        x_std = self.standardize(x)
        with pyro.plate("data", x.shape[0]):
            if self.training and self.config["loss"] == "simple":
                pyro.factor("simple_loss", -simple_loss(self.denoiser, self.schedule, x_std))
            else:
                pyro.sample("x", self.prior(), obs=x_std)
                pyro.factor("log_jacobian", -self.log_scale().expand(x.shape[:1]))

    def vlb(self, x: Tensor, *, num_samples: int = 1, num_steps: int | None = -1) -> Tensor:
        """Per-example VLB estimate of log p(x) in nats (``num_steps=-1``: the model's own T)."""
        steps = self.config["num_steps"] if num_steps == -1 else num_steps
        return vlb(self.denoiser, self.schedule, self.standardize(x), num_steps=steps,
                   num_samples=num_samples) - self.log_scale()

    def ode_log_prob(self, x: Tensor, *, exact: bool = True, atol: float = 1e-5,
                     rtol: float = 1e-5) -> Tensor:
        r"""log p(x) of the probability-flow ODE model: x = z_0/α_0 with z_0 the ODE's output."""
        logsnr_0, _ = self.schedule.endpoints(x)
        log_alpha_0 = 0.5 * torch.nn.functional.logsigmoid(logsnr_0)
        z_0 = self.standardize(x) * log_alpha_0.exp()
        log_density = ode_log_prob(self.denoiser, self.schedule, z_0, exact=exact, atol=atol,
                                   rtol=rtol)
        return log_density + x.shape[-1] * log_alpha_0 - self.log_scale()

    @torch.no_grad()
    def sample(self, num_samples: int, *, sampler: str = "ancestral",
               num_steps: int | None = None, **options: Any) -> Tensor:
        """Samples ``(num_samples, d)`` by ``"ancestral"``, ``"ddim"`` or ``"ode"``."""
        shape = (int(num_samples), self.config["features"])
        ref = self.shift
        if sampler == "ode":
            x_std = ode_sample(self.denoiser, self.schedule, shape, dtype=ref.dtype,
                               device=ref.device, **options)
        elif sampler in ("ancestral", "ddim"):
            steps = num_steps or self.config["num_steps"] or (256 if sampler == "ancestral" else 50)
            eta = options.pop("eta", 1.0 if sampler == "ancestral" else 0.0)
            x_std = sample_loop(self.denoiser, self.schedule, shape, num_steps=steps, eta=eta,
                                dtype=ref.dtype, device=ref.device, **options)
        else:
            raise ValueError(f"unknown sampler {sampler!r}; choose 'ancestral', 'ddim' or 'ode'")
        return x_std * self.scale + self.shift



def _check(model: Any, batch: tuple[Tensor, ...]) -> Tensor:
    if not isinstance(model, DiffusionDensity):
        raise TypeError(f"this estimator needs a DiffusionDensity model, got {type(model).__name__}")
    if not isinstance(batch, tuple):
        batch = (batch,)
    return model.validate(batch[0])


@DiffusionDensity.estimator("vlb", options=("num_samples", "num_steps", "batch_size", "seed", "k"))
def evaluate_vlb(model: DiffusionDensity, batch: tuple[Tensor, ...], *, num_samples: int = 16,
                 num_steps: int | None = -1, batch_size: int | None = 1024,
                 seed: int | None = None, k: int | None = None) -> LogLikelihood:
    r"""The diffusion VLB per example, averaged over ``num_samples`` (t, ε) draws: a lower bound.

    Each value is an unbiased Monte Carlo estimate of the example's bound; its MC noise is part
    of the across-data standard error. ``num_steps=-1`` uses the model's own T (None: continuous).
    ``k`` (from ``probgen.evaluate(k=...)``) is an alias of ``num_samples``.
    """
    x = _check(model, batch)
    num_samples = int(k or num_samples)
    steps = model.config["num_steps"] if num_steps == -1 else num_steps
    with eval_mode(model, seed=seed), torch.no_grad():
        values = map_chunks(lambda chunk: model.vlb(chunk, num_samples=num_samples,
                                                    num_steps=steps), x, batch_size)
    settings = {"num_samples": int(num_samples), "num_steps": steps or "continuous",
                "schedule": model.config["schedule"]}
    return LogLikelihood(values, kind="lower_bound", estimator="vlb", num_dims=x.shape[-1],
                         data_space=model.data_space, settings=settings,
                         data_id=data_fingerprint(x))


@DiffusionDensity.estimator("prob_flow_ode", options=("exact", "atol", "rtol", "batch_size",
                                                       "seed"))
def evaluate_ode(model: DiffusionDensity, batch: tuple[Tensor, ...], *, exact: bool = True,
                 atol: float = 1e-5, rtol: float = 1e-5, batch_size: int | None = 1024,
                 seed: int | None = None) -> LogLikelihood:
    r"""log p(x) of the probability-flow ODE: ``kind="exact"`` with the exact divergence (to the
    ODE tolerance in ``settings``), ``"estimate"`` with Hutchinson's trace estimator."""
    x = _check(model, batch)
    with eval_mode(model, seed=seed):  # no no_grad: the exact divergence uses autograd
        values = map_chunks(lambda chunk: model.ode_log_prob(chunk, exact=exact, atol=atol,
                                                             rtol=rtol), x, batch_size)
    settings = {"atol": atol, "rtol": rtol, "trace": "exact" if exact else "hutchinson"}
    return LogLikelihood(values, kind="exact" if exact else "estimate", estimator="prob_flow_ode",
                         num_dims=x.shape[-1], data_space=model.data_space, settings=settings,
                         data_id=data_fingerprint(x))

