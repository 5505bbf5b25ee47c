"""Hierarchical (ladder) VAEs: L stochastic layers, top-down generation, precision-weighted inference."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from probgen.core.model import GenerativeModel
from probgen.distributions.likelihoods import (
    PARAMS_PER_DIM,
    check_bins,
    observation_distribution,
)
from probgen.guides.amortized import AmortizedFlowPosterior
from probgen.infer.objectives import IWAE, AnnealedELBO, in_kl_warmup, kl_weight
from probgen.models.lean_svi import LeanSVI, Objective, keeps_program, plain_options
from probgen.models.registry import register_model
from probgen.models.vae import ObservationCapabilities
from probgen.models.vae_loss import Gaussian, Site, expanded, site_bound
from probgen.nn import MLP, ConvDecoder, ConvEncoder, activation
from probgen.nn.mlp import NORMALIZATIONS, hidden_layer

__all__ = ["HierarchicalVAE", "HierarchicalSVI", "LadderELBO", "precision_weighted"]

LIKELIHOODS = ("bernoulli", "gaussian", "discretized_logistic")
TOP_POSTERIORS = (None, "iaf", "nsf")
INFERENCE = ("ladder", "bottom_up")
_LOG_SCALE_RANGE = (-10.0, 10.0)  # keeps precisions finite in float32; inactive in normal use


def _normal(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``(..., 2D)`` network outputs into a loc and a positive scale, each ``(..., D)``."""
    loc, log_scale = params.chunk(2, -1)
    return loc, log_scale.clamp(*_LOG_SCALE_RANGE).exp()


def precision_weighted(loc_up: torch.Tensor, scale_up: torch.Tensor, loc_down: torch.Tensor,
                       scale_down: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""σ² = 1 / (σ̂⁻² + σ_p⁻²), μ = (μ̂ σ̂⁻² + μ_p σ_p⁻²) σ² (Sønderby et al., 2016, eq. 19-20).

    Merges the bottom-up (data) Gaussian with the top-down (prior) Gaussian of one layer; the
    result is their normalized product. Shapes broadcast (particles × data × latent_dim).
    """
    precision_up, precision_down = scale_up.pow(-2), scale_down.pow(-2)
    variance = 1.0 / (precision_up + precision_down)
    return (loc_up * precision_up + loc_down * precision_down) * variance, variance.sqrt()


def _widths(entry: int | Sequence[int]) -> list[int]:
    return [int(entry)] if isinstance(entry, int) else [int(w) for w in entry]


class _Body(nn.Sequential):
    """Hidden layers only (each followed by the activation); the identity when ``widths`` is empty."""

    def __init__(self, in_features: int, widths: Sequence[int], act: str,
                 normalization: str | None = None) -> None:
        layers: list[nn.Module] = []
        for size_in, size_out in zip([in_features, *widths[:-1]], widths):
            layers += hidden_layer(size_in, size_out, act, normalization)
        super().__init__(*layers)
        self.out_features = widths[-1] if widths else in_features


def _check_networks(likelihood: str, network: str, data_shape: list[int],
                    latent_dims: list[int], hidden: list[list[int]]) -> None:
    """Raise ValueError for an unknown likelihood or network, empty or non-positive sizes, or a
    conv network without an image (in this order)."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}")
    if network not in ("mlp", "conv"):
        raise ValueError(f"network must be 'mlp' or 'conv', got {network!r}")
    if not latent_dims or min(latent_dims) <= 0:
        raise ValueError(f"latent_dims must list at least one positive size, got {latent_dims}")
    if len(hidden) != len(latent_dims):
        raise ValueError(f"hidden_features needs one entry per stochastic layer ({len(latent_dims)}"
                         f"), got {len(hidden)}: e.g. hidden_features=((512, 512), (256, 256))")
    if min(data_shape, default=0) <= 0 or any(w <= 0 for ws in hidden for w in ws):
        raise ValueError(f"data_shape and hidden widths must be positive, got {data_shape}, {hidden}")
    if network == "conv" and (len(data_shape) != 3 or not hidden[0]):
        raise ValueError("a conv hierarchical VAE needs data_shape (C, H, W) and a non-empty "
                         f"hidden_features[0] (its dense width); got {data_shape}, {hidden[0]}")


@register_model("hierarchical_vae")
class HierarchicalVAE(ObservationCapabilities, GenerativeModel):
    r"""A ladder VAE: p(x, z) = p(z_L) Π_{l<L} p(z_l | z_{l+1}) p(x | z_1) (Sønderby et al., 2016).

    Generation runs top-down: z_L ~ N(0, I), z_l ~ N(μ_p(z_{l+1}), σ_p(z_{l+1})), x ~ p(x | z_1).
    Inference is a ladder: a bottom-up pass d_l = f_l(d_{l-1}) gives Gaussian "data" terms
    (μ̂_l, σ̂_l) at every layer; q(z_L | x) = N(μ̂_L, σ̂_L) (or an IAF/NSF flow conditioned on
    d_L, ``top_posterior``), and each lower q(z_l | z_{l+1}, x) is the precision-weighted merge
    of (μ̂_l, σ̂_l) with the generative top-down N(μ_p(z_{l+1}), σ_p(z_{l+1})), whose networks
    the model and guide share. Sites are ``"z1"`` (next to the data) ... ``"zL"`` and ``"x"``.

    KL warm-up and free bits (posterior-collapse counter-measures) live in :class:`LadderELBO`,
    the loss ``probgen.fit`` uses by default, and act only while ``self.training``, so
    ``probgen.evaluate`` (which calls ``model.eval()``) always reports the true bound. While
    the KL weight β < 1 (this model's or fit's warm-up) the learned priors p(z_l | z_{l+1})
    are *held*: their networks ``down`` get no gradient (the bound's value is unchanged), so
    they cannot absorb q(z_l | x) while the KL is down-weighted (:meth:`top_down`).

    Arguments:
        data_shape: the shape of one example, ``(D,)`` or ``(C, H, W)`` (``network="conv"``).
        latent_dims: the size of each stochastic layer, bottom (z_1) to top (z_L).
        hidden_features: per layer, the hidden widths of its deterministic block (an int is one
            layer, ``()`` a linear map); the top-down and output networks use them reversed.
        likelihood: ``"bernoulli"``, ``"gaussian"`` or ``"discretized_logistic"``.
        network: ``"mlp"`` or ``"conv"`` (convolutional first block and output network).
        observation_scale: Gaussian likelihood: fixed std, or None to learn one per dimension.
        warmup_steps: KL weight β rises linearly from 0 to 1 over this many training steps.
        free_bits: minimum KL per latent dimension and example, in nats, per layer (Kingma
            et al., 2016): a layer's KL below λ·D_l gets no gradient.
        top_posterior: None (Gaussian), ``"iaf"`` or ``"nsf"`` for q(z_L | x).
        inference: ``"ladder"`` (the precision-weighted merge above) or ``"bottom_up"``:
            q(z | x) = q(z_1 | x) Π_{l>1} q(z_l | z_{l-1}), each a diagonal Normal from an MLP of
            the sample below (Burda et al., 2016's two-stochastic-layer VAE/IWAE).
        normalization: None, or ``"layer"``: layer normalization before every hidden activation
            of the MLPs (Sønderby et al. needed batch normalization; layer normalization is its
            per-example stand-in, the same function in training and evaluation).

    Example:
        >>> vae = HierarchicalVAE((64,), latent_dims=(8, 4), hidden_features=(32, 16))
        >>> vae.sample(3).shape
        torch.Size([3, 64])
    """

    has_guide = True
    data_size_argument = "data_shape"  # filled from the data by from_data and the CLI

    def __init__(self, data_shape: Sequence[int] = (784,), *, latent_dims: Sequence[int] = (64, 32),
                 hidden_features: Sequence[int | Sequence[int]] = ((512, 512), (256, 256)),
                 likelihood: str = "bernoulli", network: str = "mlp", activation: str = "relu",
                 channels: int = 32, observation_scale: float | None = None, num_bins: int = 256,
                 warmup_steps: int = 0, free_bits: float = 0.0, top_posterior: str | None = None,
                 flow_transforms: int = 2, flow_hidden: Sequence[int] = (128, 128),
                 inference: str = "ladder", normalization: str | None = None) -> None:
        data_shape = [int(s) for s in (data_shape if isinstance(data_shape, Sequence) else [data_shape])]
        latent_dims = [int(d) for d in latent_dims]
        hidden = [_widths(entry) for entry in hidden_features]
        _check_networks(likelihood, network, data_shape, latent_dims, hidden)
        if top_posterior not in TOP_POSTERIORS:
            raise ValueError(f"top_posterior must be one of {TOP_POSTERIORS}, got {top_posterior!r}")
        if inference not in INFERENCE:
            raise ValueError(f"inference must be one of {INFERENCE}, got {inference!r}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        if int(warmup_steps) < 0 or not float(free_bits) >= 0:
            raise ValueError(f"warmup_steps and free_bits must be >= 0, got {warmup_steps}, {free_bits}")
        if observation_scale is not None and not observation_scale > 0:
            raise ValueError(f"observation_scale must be > 0 or None (learned), got {observation_scale}")
        super().__init__(data_shape=data_shape, latent_dims=latent_dims, hidden_features=hidden,
                         likelihood=likelihood, network=network, activation=activation,
                         channels=int(channels), observation_scale=observation_scale,
                         num_bins=int(num_bins), warmup_steps=int(warmup_steps),
                         free_bits=float(free_bits), top_posterior=top_posterior,
                         flow_transforms=int(flow_transforms),
                         flow_hidden=[int(w) for w in flow_hidden], inference=inference,
                         **({"normalization": normalization} if normalization else {}))
        self.inference, self.normalization = inference, normalization
        self.data_shape, self.latent_dims = tuple(data_shape), tuple(latent_dims)
        self.num_layers = len(latent_dims)
        self.likelihood, self.network, self.num_bins = likelihood, network, int(num_bins)
        self.observation_scale = observation_scale
        self.warmup_steps, self.free_bits = int(warmup_steps), float(free_bits)
        self.top_posterior = top_posterior
        features = self._build_inference(hidden, activation, int(channels))
        if top_posterior is not None:
            self.top_flow = AmortizedFlowPosterior(latent_dims[-1], features, top_posterior,
                                                   transforms=int(flow_transforms),
                                                   hidden=tuple(int(w) for w in flow_hidden))
        self._build_generation(hidden, activation, int(channels))
        if likelihood == "gaussian" and observation_scale is None:
            self.log_observation_scale = nn.Parameter(torch.zeros(self.data_shape))
        self.register_buffer("training_steps", torch.zeros((), dtype=torch.long))  # for warm-up
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    def _build_inference(self, hidden: list[list[int]], act: str, channels: int) -> int:
        """The bottom-up bodies and heads; returns the width of the top body's features."""
        # ladder: d_l = body_l(d_{l-1}), (μ̂_l, log σ̂_l) = head_l(d_l); bottom-up: the body of
        # layer l > 1 reads the sample z_{l-1} instead of d_{l-1}
        self.up_bodies, self.up_heads = nn.ModuleList(), nn.ModuleList()
        features = math.prod(self.data_shape)
        for layer, (size, widths) in enumerate(zip(self.latent_dims, hidden)):
            if layer > 0 and self.inference == "bottom_up":
                features = self.latent_dims[layer - 1]
            if layer == 0 and self.network == "conv":
                body: nn.Module = nn.Sequential(ConvEncoder(self.data_shape, widths[-1], channels,
                                                            act), _activation(act))
                body.out_features = widths[-1]
            else:
                body = _Body(features, widths, act, self.normalization)
            features = body.out_features
            self.up_bodies.append(body)
            top_is_flow = layer == self.num_layers - 1 and self.top_posterior is not None
            self.up_heads.append(nn.Identity() if top_is_flow else nn.Linear(features, 2 * size))
        return features

    def _build_generation(self, hidden: list[list[int]], act: str, channels: int) -> None:
        """The top-down networks of p(z_l | z_{l+1}) for l < L, and the decoder of p(x | z_1)."""
        dims = self.latent_dims
        self.down = nn.ModuleList(MLP(dims[layer + 1], 2 * dims[layer], hidden[layer][::-1], act,
                                      self.normalization)
                                  for layer in range(self.num_layers - 1))
        outputs = PARAMS_PER_DIM[self.likelihood] * math.prod(self.data_shape)
        if self.network == "mlp":
            self.decoder: nn.Module = MLP(dims[0], outputs, hidden[0][::-1], act,
                                          self.normalization)
        else:
            c, h, w = self.data_shape
            self.decoder = ConvDecoder(dims[0], (PARAMS_PER_DIM[self.likelihood] * c, h, w),
                                       channels=channels, activation=act)

    @property
    def latent_names(self) -> tuple[str, ...]:
        """Sample-site names bottom to top: ``("z1", ..., "zL")``."""
        return tuple(f"z{layer + 1}" for layer in range(self.num_layers))

    # --- networks ----------------------------------------------------------------------
    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        """x as the first body reads it: rescaled bins, flattened for an MLP."""
        x = x.to(self._zero.dtype)
        if self.likelihood == "discretized_logistic":
            x = 2.0 * x / (self.num_bins - 1) - 1.0
        batch_shape = x.shape[: x.dim() - len(self.data_shape)]
        return x if self.network == "conv" else x.reshape(*batch_shape, -1)

    def bottom_up(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Deterministic features d_1..d_L of the ladder's bottom-up pass, each ``(*batch, F_l)``."""
        features = self._inputs(x)
        out = []
        for body in self.up_bodies:
            features = body(features)
            out.append(features)
        return out

    def top_down(self, layer: int, z_above: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) of p(z_l | z_{l+1}) for 0-based ``layer`` < L - 1; held (from detached
        parameters: the same value, no gradient to ``down``) during KL warm-up, i.e. inside
        :func:`probgen.infer.objectives.kl_warmup` (an annealed bound with β < 1)."""
        return _top_down(self, layer, z_above, in_kl_warmup())

    def prior(self, batch_shape: torch.Size | tuple[int, ...]) -> dist.Distribution:
        """p(z_L) = N(0, I), event shape ``(latent_dims[-1],)``."""
        zeros = self._zero.expand(*batch_shape, self.latent_dims[-1])
        return dist.Normal(zeros, torch.ones_like(zeros), validate_args=False).to_event(1)

    def top_posterior_dist(self, features: list[torch.Tensor]) -> dist.Distribution:
        """q(z_L | x): a diagonal Normal from d_L, or the amortized flow with context d_L."""
        if self.top_posterior is not None:
            return self.top_flow(features[-1])
        loc, scale = _normal(self.up_heads[-1](features[-1]))
        return dist.Normal(loc, scale, validate_args=False).to_event(1)

    def chained_posterior(self, layer: int, below: torch.Tensor) -> dist.Distribution:
        """Bottom-up inference: q(z_l | z_{l-1}) (q(z_1 | x) for layer 0, ``below`` the
        prepared x), a diagonal Normal, or the top layer's flow, from body_l(below)."""
        features = self.up_bodies[layer](below)
        if layer == self.num_layers - 1:
            return self.top_posterior_dist([features])
        loc, scale = _normal(self.up_heads[layer](features))
        return dist.Normal(loc, scale, validate_args=False).to_event(1)

    def merged_posterior(self, layer: int, features: list[torch.Tensor],
                         z_above: torch.Tensor) -> dist.Distribution:
        """q(z_l | z_{l+1}, x): the precision-weighted merge of bottom-up and top-down Gaussians."""
        loc, scale = precision_weighted(*_normal(self.up_heads[layer](features[layer])),
                                        *self.top_down(layer, z_above))
        return dist.Normal(loc, scale, validate_args=False).to_event(1)

    def decode(self, z1: torch.Tensor) -> dist.Distribution:
        """p(x | z_1), event shape ``data_shape``, batch shape ``z1.shape[:-1]``."""
        batch_shape = z1.shape[:-1]
        out = self.decoder(z1)
        return observation_distribution(
            out, batch_shape, self.data_shape, self.likelihood,
            observation_scale=self.observation_scale,
            log_observation_scale=getattr(self, "log_observation_scale", None),
            num_bins=self.num_bins)

    def decoder_log_prob(self, x: torch.Tensor, z1: torch.Tensor, *,
                         summed: bool = False) -> torch.Tensor:
        """log p(x | z_1) summed over the data dimensions, shape ``z1.shape[:-1]`` (x broadcasts
        over leading particles); ``summed``: the total, a scalar (a Bernoulli likelihood in
        one fused kernel, the value ``decode(z1).log_prob(x)`` gives)."""
        if self.likelihood != "bernoulli":
            log_prob = self.decode(z1).log_prob(x)
            return log_prob.sum() if summed else log_prob
        batch_shape = z1.shape[:-1]
        logits = self.decoder(z1).reshape(*batch_shape, -1)
        x = x.reshape(*x.shape[: x.dim() - len(self.data_shape)], -1).to(logits.dtype)
        if x.shape != logits.shape:
            x = x.expand_as(logits)
        if summed:
            return -nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        return -nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)

    # --- the program -------------------------------------------------------------------
    def model(self, x: torch.Tensor) -> None:
        """z_L ~ N(0, I); z_l ~ p(z_l | z_{l+1}); x ~ p(x | z_1), in a plate ``"data"``."""
        pyro.module(self.pyro_name, self)
        names = self.latent_names
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample(names[-1], self.prior(x.shape[:1]))
            for layer in reversed(range(self.num_layers - 1)):
                loc, scale = self.top_down(layer, z)
                z = pyro.sample(names[layer], dist.Normal(loc, scale, validate_args=False).to_event(1))
            pyro.sample("x", self.decode(z), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """Ladder: z_L ~ q(z_L | x), then z_l ~ q(z_l | z_{l+1}, x) down the ladder; bottom-up:
        z_1 ~ q(z_1 | x), then z_l ~ q(z_l | z_{l-1}) up the hierarchy."""
        pyro.module(self.pyro_name, self)
        names = self.latent_names
        if self.inference == "bottom_up":
            with pyro.plate("data", x.shape[0]):
                z = self._inputs(x)
                for layer in range(self.num_layers):
                    z = pyro.sample(names[layer], self.chained_posterior(layer, z))
            return
        features = self.bottom_up(x)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample(names[-1], self.top_posterior_dist(features))
            for layer in reversed(range(self.num_layers - 1)):
                z = pyro.sample(names[layer], self.merged_posterior(layer, features, z))

    def default_loss(self) -> LadderELBO:
        """:class:`LadderELBO`: analytic per-layer KLs, with warm-up and free bits in training."""
        return LadderELBO(self)

    def kl_weight(self) -> float:
        """β of the KL term at the current training step (1 in eval mode or without warm-up)."""
        return kl_weight(int(self.training_steps), self.warmup_steps) if self.training else 1.0

    # --- checks and use ----------------------------------------------------------------
    def event_shape(self) -> tuple[int, ...]:
        return self.data_shape

    def validate(self, x: Any, *, name: str = "data") -> torch.Tensor:
        return check_bins(super().validate(x, name=name), self.likelihood, self.num_bins, name)

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        """Ancestral samples x ~ p(x | z_1), z ~ p(z) down the hierarchy, ``(n, *data_shape)``."""
        z = self.prior((num_samples,)).sample()
        for layer in reversed(range(self.num_layers - 1)):
            loc, scale = self.top_down(layer, z)
            z = dist.Normal(loc, scale).sample()
        return self.decode(z).sample()

    @torch.no_grad()
    def posterior_means(self, x: torch.Tensor, *, num_samples: int = 100
                        ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        r"""E_q[z_l | x] per layer (bottom to top) and its Monte Carlo variance, each ``(n, D_l)``.

        Exact (variance 0) for a Gaussian top layer; below it, and for a flow top layer, the
        mean over ``num_samples`` draws of z_{l+1} of the merged mean μ_q(z_{l+1})
        (Rao-Blackwellized), whose estimator variance is the sample variance / num_samples.
        """
        if self.inference == "bottom_up":
            return self._chained_means(x, num_samples)
        features = self.bottom_up(x)
        top = self.top_posterior_dist(features)
        z = top.sample((num_samples,))  # (S, n, D_L)
        if self.top_posterior is None:
            estimates = [(top.mean, torch.zeros_like(top.mean))]
        else:
            estimates = [(z.mean(0), z.var(0) / num_samples)]
        for layer in reversed(range(self.num_layers - 1)):
            posterior = self.merged_posterior(layer, features, z)
            means = posterior.mean  # (S, n, D_l)
            estimates.insert(0, (means.mean(0), means.var(0) / num_samples))
            z = posterior.sample()
        return estimates

    def _chained_means(self, x: torch.Tensor, num_samples: int
                       ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """posterior_means for bottom-up inference: E_q[z_1 | x] exactly (a Gaussian), each
        higher layer's mean averaged over draws of the layer below (Rao-Blackwellized)."""
        estimates = []
        below = self._inputs(x)
        for layer in range(self.num_layers):
            posterior = self.chained_posterior(layer, below)
            flow = layer == self.num_layers - 1 and self.top_posterior is not None
            below = posterior.sample((num_samples,) if layer == 0 else ())  # (S, n, D_l)
            if layer == 0 and not flow:  # a Gaussian of x alone: its mean is exact
                estimates.append((posterior.mean, torch.zeros_like(posterior.mean)))
                continue
            means = below if flow else posterior.mean
            estimates.append((means.mean(0), means.var(0) / num_samples))
        return estimates

    def active_units(self, x: torch.Tensor, threshold: float = 1e-2, *,
                     num_samples: int = 100) -> list[int]:
        r"""Active units per layer: #{u : Cov_x(E_q[u | x]) > threshold} (Burda et al., 2016).

        Where E_q[u | x] is a Monte Carlo estimate, the estimator's own variance (averaged over
        x) is subtracted from the variance over x, so noise does not count as activity.
        """
        x = self.validate(x)
        if x.shape[0] < 2:
            raise ValueError("active_units needs at least 2 examples to estimate a variance over x")
        return [int((mean.var(0) - noise.mean(0) > threshold).sum())
                for mean, noise in self.posterior_means(x, num_samples=num_samples)]


_activation = activation


class LadderELBO(AnnealedELBO):
    r"""The generic :class:`~probgen.infer.objectives.AnnealedELBO` driven by the model's own
    ``warmup_steps`` / ``free_bits`` (saved with it): β_t = ``vae.kl_weight()``.

    Both act only while ``vae.training`` (``loss`` follows the mode too: ``probgen.evaluate``
    and fit's validation call ``model.eval()`` and get the true bound); ``loss_and_grads``
    advances ``vae.training_steps``. ``fit(kl_warmup_epochs=, free_bits=)`` replaces this loss with the
    generic one, whose warm-up follows fit's step count instead. Either way, while β < 1 the
    learned priors p(z_l | z_{l+1}) are held (:meth:`HierarchicalVAE.top_down`).
    """

    def __init__(self, vae: HierarchicalVAE, num_particles: int = 1) -> None:
        super().__init__(vae.warmup_steps, vae.free_bits, num_particles=num_particles)
        self.vae = vae

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        free_bits = self.vae.free_bits if self.vae.training else 0.0
        return self.objective(model, guide, *args, beta=self.vae.kl_weight(),
                              free_bits=free_bits, **kwargs)

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = super().loss_and_grads(model, guide, *args, **kwargs)
        if self.vae.training:
            self.vae.training_steps += 1
        return loss


# what a plain-torch bound of HierarchicalVAE assumes of the program (no override of these)
_PROGRAM = ("model", "guide", "_inputs", "bottom_up", "top_down", "prior", "top_posterior_dist",
            "chained_posterior", "merged_posterior", "decode", "decoder_log_prob", "default_loss",
            "kl_weight")


def _top_down(vae: HierarchicalVAE, layer: int, z_above: torch.Tensor, held: bool
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(loc, scale) of p(z_l | z_{l+1}); ``held`` (KL warm-up, β < 1): from detached
    parameters, so that p(z_l | z_{l+1}) cannot absorb q(z_l | x)'s offset while the KL is
    down-weighted (gradients still flow through ``z_above``)."""
    net = vae.down[layer]
    if not held:
        return _normal(net(z_above))
    params = {name: value.detach() for name, value in net.named_parameters()}
    return _normal(torch.func.functional_call(net, params, (z_above,)))


def _ladder_sites(vae: HierarchicalVAE, x: torch.Tensor, particles: int, held: bool = False
                  ) -> tuple[list[Site], torch.Tensor]:
    """(q, p, z) per latent, top first, and z_1: the guide's draws down the ladder, each
    layer's top-down N(μ_p, σ_p) computed once (the merge's prior half and p(z_l | z_{l+1}));
    ``held``: from detached parameters (:meth:`HierarchicalVAE.top_down` in KL warm-up)."""
    features = vae.bottom_up(x)
    q = expanded(_top_posterior(vae, features[-1]), particles)
    z = q.rsample()
    sites = [(q, expanded(_standard_normal(vae, x), particles), z)]
    for layer in reversed(range(vae.num_layers - 1)):
        loc_p, scale_p = _top_down(vae, layer, z, held)
        q = Gaussian(*precision_weighted(*_normal(vae.up_heads[layer](features[layer])),
                                         loc_p, scale_p))
        z = q.rsample()
        sites.append((q, Gaussian(loc_p, scale_p), z))
    return sites, z


def _chained_sites(vae: HierarchicalVAE, x: torch.Tensor, particles: int, held: bool = False
                   ) -> tuple[list[Site], torch.Tensor]:
    """(q, p, z) per latent, top first, and z_1, for bottom-up inference: z_l ~ q(z_l | z_{l-1});
    ``held``: p(z_l | z_{l+1}) from detached parameters (no gradient reaches ``vae.down``)."""
    below, posteriors, draws = vae._inputs(x), [], []
    for layer in range(vae.num_layers):
        features = vae.up_bodies[layer](below)
        q = (_top_posterior(vae, features) if layer == vae.num_layers - 1
             else Gaussian(*_normal(vae.up_heads[layer](features))))
        q = expanded(q, particles) if layer == 0 else q
        below = q.rsample()
        posteriors.append(q)
        draws.append(below)
    sites = [(posteriors[-1], expanded(_standard_normal(vae, x), particles), draws[-1])]
    for layer in reversed(range(vae.num_layers - 1)):
        prior = Gaussian(*_top_down(vae, layer, draws[layer + 1], held))
        sites.append((posteriors[layer], prior, draws[layer]))
    return sites, draws[0]


def _top_posterior(vae: HierarchicalVAE, features: torch.Tensor) -> dist.Distribution | Gaussian:
    """q(z_L | x) from the top features: :class:`Gaussian` (``top_posterior_dist``'s Normal) or
    the flow itself."""
    if vae.top_posterior is not None:
        return vae.top_posterior_dist([features])
    return Gaussian(*_normal(vae.up_heads[-1](features)))


def _standard_normal(vae: HierarchicalVAE, x: torch.Tensor) -> Gaussian:
    """p(z_L) = N(0, I) over x's examples (``prior``'s Normal)."""
    zeros = vae._zero.expand(x.shape[0], vae.latent_dims[-1])
    return Gaussian(zeros, torch.ones_like(zeros))


@HierarchicalVAE.training_method("svi")
class HierarchicalSVI(LeanSVI):
    r"""SVI for the hierarchical VAEs (ladder and bottom-up), in plain torch where it can be.

    With the model's own program and :class:`LadderELBO` (its default: the model's warm-up and
    free bits), fit's annealed ELBO (``kl_warmup_epochs=``, ``free_bits=``),
    ``TraceMeanField_ELBO``, ``Trace_ELBO`` or ``"iwae"`` (particles vectorized), and no user
    guide or data parallelism, a step draws every layer's z with the same noise the guide
    would and evaluates :func:`probgen.models.vae_loss.site_bound` (Gaussian KLs in closed
    form where the loss takes them so, a flow's log q − log p on its own draw): the same values,
    gradients and Adam step as :class:`~probgen.infer.svi.SVI`, without Pyro's traces; while
    β < 1 it holds the top-down priors as the program does (:meth:`HierarchicalVAE.top_down`).
    """

    def lean_objective(self) -> Objective | None:
        vae, loss = self.setup.model, self.elbo
        if not plain_options(self.setup, annealing=True) or not keeps_program(
                vae, HierarchicalVAE, _PROGRAM):
            return None
        if type(loss) not in (TraceMeanField_ELBO, Trace_ELBO, IWAE, AnnealedELBO, LadderELBO):
            return None
        annealed = isinstance(loss, AnnealedELBO)  # one particle a call
        particles = 1 if annealed else loss.num_particles
        if particles > 1 and not loss.vectorize_particles:
            return None
        sites_of = _chained_sites if vae.inference == "bottom_up" else _ladder_sites
        iwae, analytic = type(loss) is IWAE, annealed or type(loss) is TraceMeanField_ELBO

        def objective(x: torch.Tensor, *, beta: float = 1.0, free_bits: float = 0.0
                      ) -> torch.Tensor:
            sites, z1 = sites_of(vae, x, particles, held=beta < 1.0)  # as top_down in warm-up
            log_likelihood = vae.decoder_log_prob(x, z1, summed=not iwae)
            return site_bound(log_likelihood, sites, particles=particles,
                              iwae=iwae, analytic_kl=analytic, beta=beta, free_bits=free_bits)
        return objective

    def kl_terms(self, training: bool) -> tuple[float, float]:
        """:class:`LadderELBO`'s β and free bits follow the model (its steps, its mode)."""
        if isinstance(self.elbo, LadderELBO):
            vae = self.elbo.vae
            return vae.kl_weight(), (vae.free_bits if vae.training else 0.0)
        return super().kl_terms(training)

    def step(self, batch: tuple[torch.Tensor, ...], scale: float) -> float:
        value = super().step(batch, scale)
        if self.objective is not None and isinstance(self.elbo, LadderELBO) and self.elbo.vae.training:
            self.elbo.vae.training_steps += 1  # as LadderELBO.loss_and_grads counts
        return value
