"""Variational autoencoders: MLP or convolutional networks, Bernoulli/Gaussian/discretized likelihoods."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from probgen.core.model import GenerativeModel
from probgen.distributions.discretized import DiscretizedLogistic
from probgen.distributions.likelihoods import (
    DATA_SPACE,
    PARAMS_PER_DIM,
    SUPPORT,
    check_bins,
    observation_distribution,
)
from probgen.infer.objectives import IWAE, AnnealedELBO
from probgen.models import vae_loss
from probgen.models.lean_svi import LeanSVI, Objective, keeps_program, plain_options
from probgen.models.registry import register_model
from probgen.nn import MLP, ConvDecoder, ConvEncoder, activation

__all__ = ["VAE", "VAESVI", "LIKELIHOODS"]

LIKELIHOODS = ("bernoulli", "gaussian", "discretized_logistic")


class ObservationCapabilities:
    """``data_space`` and ``support`` from the configured observation likelihood (declared once,
    for every family whose decoder ends in ``observation_distribution``)."""

    config: dict

    @property
    def data_space(self) -> str:
        """``"discrete"`` for Bernoulli and discretized likelihoods, ``"continuous"`` for Gaussian."""
        return DATA_SPACE[self.config["likelihood"]]

    @property
    def support(self) -> str:
        """The data's support, from the likelihood: ``"binary"``, ``"real"`` or ``"count"``."""
        return SUPPORT[self.config["likelihood"]]


@register_model("vae")
class VAE(ObservationCapabilities, GenerativeModel):
    r"""A VAE: z ~ N(0, I), x ~ p_θ(x | z [, y]); guide z ~ q_φ(z | x [, y]) (Kingma & Welling, 2014).

    ELBO: E_q[log p(x | z)] - β KL(q(z | x) || p(z)); β != 1 only in training mode (beta-VAE,
    Higgins et al., 2017), so evaluation (``model.eval()``) always scores the true bound on log p(x).
    With ``num_classes`` it is a conditional VAE (Sohn et al., 2015): ``model(x, y)`` with integer
    labels ``y`` fed to both networks, scoring log p(x | y).

    Arguments:
        data_shape: the shape of one example, e.g. ``(784,)`` or ``(1, 28, 28)``.
        latent_dim: the size of z.
        hidden_features: hidden layer sizes of the MLP encoder and decoder (``()``: linear
            networks, e.g. probabilistic PCA; the conv networks use the last one as the width of
            their dense layer).
        likelihood: ``"bernoulli"`` (binary data), ``"gaussian"`` (real data) or
            ``"discretized_logistic"`` (integers 0..num_bins-1, e.g. 8-bit pixels).
        network: ``"mlp"`` or ``"conv"`` (``data_shape`` must then be ``(C, H, W)``).
        observation_scale: Gaussian likelihood: a fixed standard deviation, or None to learn one
            per data dimension.
        num_bins: discretized likelihood: the number of values.
        beta: weight of the KL term in training.
        num_classes: labels ``0..num_classes-1`` for a conditional VAE (None: unconditional).

    Example:
        >>> vae = VAE((64,), latent_dim=4, hidden_features=(32,))
        >>> vae.sample(3).shape
        torch.Size([3, 64])
    """

    has_guide = True
    # what the model half uses; the guide registers every other parameter
    decoder_attributes: ClassVar[tuple[str, ...]] = ("decoder_body", "log_observation_scale")
    data_size_argument = "data_shape"  # filled from the data by from_data and the CLI

    def __init__(self, data_shape: Sequence[int] = (784,), *, latent_dim: int = 20,
                 hidden_features: Sequence[int] = (400,), likelihood: str = "bernoulli",
                 network: str = "mlp", activation: str = "relu", channels: int = 32,
                 observation_scale: float | None = None, num_bins: int = 256, beta: float = 1.0,
                 num_classes: int | None = None) -> None:
        data_shape = [int(s) for s in (data_shape if isinstance(data_shape, Sequence) else [data_shape])]
        hidden_features = [int(h) for h in hidden_features]
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}")
        if network not in ("mlp", "conv"):
            raise ValueError(f"network must be 'mlp' or 'conv', got {network!r}")
        if network == "conv" and len(data_shape) != 3:
            raise ValueError(f"a conv VAE needs data_shape (channels, height, width), got "
                             f"{tuple(data_shape)}; reshape images, e.g. x.reshape(-1, 1, 28, 28)")
        if int(latent_dim) <= 0 or min(data_shape, default=0) <= 0 or min(hidden_features,
                                                                        default=1) <= 0:
            raise ValueError("latent_dim, data_shape and hidden_features must be positive, got "
                             f"{latent_dim}, {data_shape}, {hidden_features}")
        if network == "conv" and not hidden_features:
            raise ValueError("a conv VAE needs hidden_features=(width,) for its dense layer")
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        if observation_scale is not None and not observation_scale > 0:
            raise ValueError(f"observation_scale must be > 0 or None (learned), got {observation_scale}")
        if num_classes is not None and int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2 (or None), got {num_classes}")
        super().__init__(data_shape=data_shape, latent_dim=int(latent_dim),
                         hidden_features=hidden_features, likelihood=likelihood, network=network,
                         activation=activation, channels=int(channels),
                         observation_scale=observation_scale, num_bins=int(num_bins),
                         beta=float(beta), num_classes=None if num_classes is None else int(num_classes))
        self.data_shape = tuple(data_shape)
        self.latent_dim = int(latent_dim)
        self.likelihood = likelihood
        self.beta = float(beta)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.num_bins = int(num_bins)
        self.observation_scale = observation_scale
        num_data = math.prod(self.data_shape)
        num_labels = self.num_classes or 0
        per_dim = PARAMS_PER_DIM[likelihood]
        if network == "mlp":
            self.encoder_body: nn.Module = MLP(num_data + num_labels, 2 * self.latent_dim,
                                               hidden_features, activation)
            self.decoder_body: nn.Module = MLP(self.latent_dim + num_labels, per_dim * num_data,
                                               hidden_features[::-1], activation)
        else:
            c, h, w = self.data_shape
            width = hidden_features[-1]
            self.encoder_body = nn.Sequential(
                ConvEncoder(self.data_shape, width, channels, activation), _act(activation))
            self.encoder_head = nn.Linear(width + num_labels, 2 * self.latent_dim)
            self.decoder_body = ConvDecoder(self.latent_dim + num_labels, (per_dim * c, h, w),
                                            channels=channels, activation=activation)
        self.network = network
        if likelihood == "gaussian" and observation_scale is None:
            self.log_observation_scale = nn.Parameter(torch.zeros(self.data_shape))
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    # --- networks ----------------------------------------------------------------------
    def _labels(self, y: torch.Tensor | None, batch_shape: torch.Size) -> torch.Tensor | None:
        if self.num_classes is None:
            return None
        if y is None:
            raise ValueError("this is a conditional VAE (num_classes set): pass labels, model(x, y)")
        onehot = nn.functional.one_hot(y.long(), self.num_classes).to(self._zero.dtype)
        return onehot.expand(*batch_shape, self.num_classes)

    def _encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self._zero.dtype)
        if self.likelihood == "discretized_logistic":
            x = 2.0 * x / (self.num_bins - 1) - 1.0
        return x

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        r"""The amortized posterior q(z | x [, y]): a diagonal Normal with event shape ``(latent_dim,)``.

        The hook for richer posteriors: override or replace this method (e.g. an amortized flow)
        and the guide uses it unchanged (training then takes Pyro's generic path).
        """
        loc, log_scale = self.posterior_parameters(x, y)
        return dist.Normal(loc, log_scale.exp(), validate_args=False).to_event(1)

    def posterior_parameters(self, x: torch.Tensor, y: torch.Tensor | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's (μ, log σ) of q(z | x [, y]), each ``(*batch, latent_dim)``."""
        x = self._encoder_input(x)
        batch_shape = x.shape[: x.dim() - len(self.data_shape)]
        labels = self._labels(y, batch_shape)
        if self.network == "mlp":
            features = x.reshape(*batch_shape, -1)
            if labels is not None:
                features = torch.cat([features, labels], -1)
            out = self.encoder_body(features)
        else:
            features = self.encoder_body(x)
            if labels is not None:
                features = torch.cat([features, labels], -1)
            out = self.encoder_head(features)
        loc, log_scale = out.split(self.latent_dim, -1)  # (*batch, latent_dim) each
        return loc, log_scale

    def prior(self, batch_shape: torch.Size | tuple[int, ...]) -> dist.Distribution:
        """p(z) = N(0, I), event shape ``(latent_dim,)``."""
        zeros = self._zero.expand(*batch_shape, self.latent_dim)
        return dist.Normal(zeros, torch.ones_like(zeros), validate_args=False).to_event(1)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        r"""The likelihood p(x | z [, y]) with event shape ``data_shape``, batch shape ``z.shape[:-1]``.

        Its arguments are valid by construction and data are checked once at the boundary
        (:meth:`validate`, called by ``fit`` and ``evaluate``), so per-step validation is off.
        """
        batch_shape = z.shape[:-1]
        labels = self._labels(y, batch_shape)
        if labels is not None:
            z = torch.cat([z, labels], -1)
        out = self.decoder_body(z)
        return observation_distribution(
            out, batch_shape, self.data_shape, self.likelihood,
            observation_scale=self.observation_scale,
            log_observation_scale=getattr(self, "log_observation_scale", None),
            num_bins=self.num_bins)

    def decoder_log_prob(self, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor | None = None,
                         *, summed: bool = False) -> torch.Tensor:
        """log p(x | z [, y]) summed over the data dimensions: shape ``z.shape[:-1]``, e.g.
        ``(particles, batch)`` for z ``(particles, batch, latent_dim)`` and x ``(batch, ...)``;
        ``summed``: the total over particles and examples too (one fused reduction)."""
        if self.likelihood != "bernoulli":
            log_prob = self.decode(z, y).log_prob(x)
            return log_prob.sum() if summed else log_prob
        batch_shape = z.shape[:-1]
        labels = self._labels(y, batch_shape)
        logits = self.decoder_body(z if labels is None else torch.cat([z, labels], -1))
        logits = logits.reshape(*batch_shape, -1)  # (*batch, prod(data_shape))
        x = x.reshape(*x.shape[: x.dim() - len(self.data_shape)], -1)
        if x.shape != logits.shape:
            x = x.expand_as(logits)
        # Bernoulli(logits).log_prob(x), fused: what torch.distributions computes, one kernel
        if summed:
            return -nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        return -nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)

    def _kl_scale(self):
        """poutine.scale(beta) around z in training; no handler at all when beta is 1."""
        if self.training and self.beta != 1.0:
            return poutine.scale(scale=self.beta)
        return nullcontext()

    # --- the program -------------------------------------------------------------------
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """z ~ N(0, I); x ~ p(x | z [, y]), in a plate ``"data"`` over the first dimension of x."""
        self.register_params(self.decoder_attributes)
        with pyro.plate("data", x.shape[0]):
            with self._kl_scale():
                z = pyro.sample("z", self.prior(x.shape[:1]))
            pyro.sample("x", self.decode(z, y), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """z ~ q(z | x [, y]) = ``self.posterior(x, y)``."""
        self.register_params(exclude=self.decoder_attributes)
        with pyro.plate("data", x.shape[0]):
            with self._kl_scale():
                pyro.sample("z", self.posterior(x, y))

    def default_loss(self) -> pyro.infer.ELBO:
        """TraceMeanField_ELBO: the Gaussian KL in closed form (lower variance, fewer log_probs)."""
        return pyro.infer.TraceMeanField_ELBO()

    # --- checks ------------------------------------------------------------------------
    def event_shape(self) -> tuple[int, ...]:
        return self.data_shape

    def validate(self, x: Any, *, name: str = "data") -> torch.Tensor:
        return check_bins(super().validate(x, name=name), self.likelihood, self.num_bins, name)

    def validate_labels(self, y: Any, num_examples: int, *, name: str = "labels") -> torch.Tensor:
        """Check labels for a conditional VAE: integers in 0..num_classes-1, one per example."""
        if self.num_classes is None:
            raise ValueError("this VAE is unconditional (num_classes=None); call it without labels")
        y = torch.as_tensor(y)
        if y.dim() != 1 or y.shape[0] != num_examples:
            raise ValueError(f"{name} must have shape ({num_examples},), got {tuple(y.shape)}")
        if y.is_floating_point() and not torch.equal(y, y.round()):
            raise ValueError(f"{name} must be integer class indices, got fractional values")
        if ((y < 0) | (y >= self.num_classes)).any():
            raise ValueError(f"{name} must lie in 0..{self.num_classes - 1}, got values in "
                             f"[{int(y.min())}, {int(y.max())}]")
        return y.long()

    # --- using a fitted model ------------------------------------------------------------
    def _mean(self, likelihood: dist.Distribution) -> torch.Tensor:
        base = likelihood.base_dist
        if isinstance(base, DiscretizedLogistic):
            return ((base.loc.clamp(-1, 1) + 1) * (self.num_bins - 1) / 2).round()
        return base.mean

    @torch.no_grad()
    def sample(self, num_samples: int, y: torch.Tensor | None = None, *,
               mean: bool = False) -> torch.Tensor:
        """Draw ``num_samples`` examples x ~ p(x | z [, y]), z ~ p(z) (``mean=True``: E[x | z])."""
        if self.num_classes is not None:
            if y is None:
                raise ValueError("a conditional VAE samples given labels: sample(n, y=labels)")
            y = self.validate_labels(y, num_samples)
        z = self.prior((num_samples,)).sample()
        likelihood = self.decode(z, y)
        return self._mean(likelihood) if mean else likelihood.sample()

    @torch.no_grad()
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The posterior mean of z given x, shape ``(n, latent_dim)``."""
        return self.posterior(x, y).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None, *,
                    sample: bool = False) -> torch.Tensor:
        """E[x | z] at the posterior mean of z (``sample=True``: a draw of z and of x)."""
        posterior = self.posterior(x, y)
        z = posterior.sample() if sample else posterior.mean
        likelihood = self.decode(z, y)
        return likelihood.sample() if sample else self._mean(likelihood)

    @torch.no_grad()
    def interpolate(self, x_start: torch.Tensor, x_end: torch.Tensor, num_steps: int = 8,
                    y: torch.Tensor | None = None) -> torch.Tensor:
        """Decoded means along the line between posterior means: shape ``(num_steps, n, *data_shape)``."""
        z_start, z_end = self.encode(x_start, y), self.encode(x_end, y)
        weights = torch.linspace(0, 1, num_steps, dtype=z_start.dtype, device=z_start.device)
        z = torch.lerp(z_start, z_end, weights[:, None, None])  # (steps, n, latent_dim)
        if y is not None:
            y = y.expand(num_steps, *y.shape)
        return self._mean(self.decode(z, y))


@VAE.training_method("svi")
class VAESVI(LeanSVI):
    r"""SVI for the VAE family, in plain torch where Pyro's trace is pure overhead.

    When the ELBO is one the family writes in closed form (the default ``TraceMeanField_ELBO``,
    ``loss="mean_field"``, ``"trace"`` or ``"iwae"``, particles vectorized) on the model's own
    Gaussian posterior (fit's KL warm-up, free bits and data parallelism included), with no user
    guide, a step
    evaluates :mod:`probgen.models.vae_loss` (one encoder and one decoder pass, no trace) and
    takes the same Adam step on the same parameters as :class:`~probgen.infer.svi.SVI`: the
    same values, gradients and random draws, so results, checkpoints and resumes are
    interchangeable. Anything else (a subclass's posterior, a ``pyro.infer.ELBO`` object)
    takes the generic path.
    """

    def lean_objective(self) -> Objective | None:
        model, loss = self.setup.model, self.elbo
        if not plain_options(self.setup, annealing=True) or not keeps_program(model, VAE, (
                "model", "guide", "posterior", "posterior_parameters", "prior", "decode",
                "decoder_log_prob", "_kl_scale", "default_loss")):
            return None
        annealed = type(loss) is AnnealedELBO  # one particle a call, closed-form KL
        num_particles = 1 if annealed else loss.num_particles
        if type(loss) not in (TraceMeanField_ELBO, Trace_ELBO, IWAE, AnnealedELBO) or (
                num_particles > 1 and not loss.vectorize_particles):
            return None
        iwae = type(loss) is IWAE
        analytic_kl = annealed or type(loss) is TraceMeanField_ELBO

        def objective(x: torch.Tensor, y: torch.Tensor | None = None, *, beta: float = 1.0,
                      free_bits: float = 0.0) -> torch.Tensor:
            beta = beta * model.beta if model.training else beta
            loc, log_scale = model.posterior_parameters(x, y)
            log_likelihood = (model.decoder_log_prob if y is None
                              else functools.partial(model.decoder_log_prob, y=y))
            if iwae:
                return vae_loss.iwae_bound(loc, log_scale, x, log_likelihood,
                                           num_particles=num_particles, beta=beta).sum()
            return vae_loss.elbo(loc, log_scale, x, log_likelihood, num_particles=num_particles,
                                 analytic_kl=analytic_kl, beta=beta, free_bits=free_bits)
        return objective


_act = activation

