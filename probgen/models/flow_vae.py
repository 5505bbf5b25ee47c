"""A VAE whose posterior is an amortized normalizing flow (IAF or NSF) conditioned on the encoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from probgen.guides.amortized import AmortizedFlowPosterior
from probgen.infer.objectives import IWAE, AnnealedELBO
from probgen.models.lean_svi import LeanSVI, Objective, keeps_program, plain_options
from probgen.models.registry import register_model
from probgen.models.vae import VAE
from probgen.models.vae_loss import expanded, site_bound

__all__ = ["FlowVAE", "FlowVAESVI", "POSTERIORS"]

POSTERIORS = ("iaf", "nsf")


@register_model("flow_vae")
class FlowVAE(VAE):
    r"""A VAE with q(z | x) = flow(z; h(x)): z = f_K ∘ ... ∘ f_1(ε; h), ε ~ N(0, I) (Kingma et al., 2016).

    The model is :class:`~probgen.models.vae.VAE`'s (z ~ N(0, I), x ~ p(x | z)); only the
    posterior changes: the encoder's ``2·latent_dim`` outputs h(x) are the context of an
    :class:`~probgen.guides.amortized.AmortizedFlowPosterior` (``"iaf"``: inverse
    autoregressive affine steps; ``"nsf"``: inverse rational-quadratic spline steps, Durkan
    et al., 2019), so q can be skewed, correlated and multi-modal where a diagonal Gaussian
    cannot. Sampling q and scoring its own samples is one pass, so the ELBO and IWAE-k cost
    about what they cost for a Gaussian posterior.

    Arguments:
        posterior: ``"iaf"`` or ``"nsf"``.
        flow_transforms: the number of flow steps.
        flow_hidden: hidden widths of each step's autoregressive network.
        gaussian_base: the flow starts from the encoder's Gaussian N(μ(x), σ(x)) (Kingma et al.,
            2016: z_0 = μ + σ ⊙ ε, then the flow steps), so an untrained flow posterior is the
            plain VAE's; False starts from N(0, I) and leaves everything to the steps.
        kwargs: everything :class:`~probgen.models.vae.VAE` takes (``data_shape``,
            ``latent_dim``, ``hidden_features``, ``likelihood``, ``network``, ...).

    Example:
        >>> vae = FlowVAE((64,), latent_dim=4, hidden_features=(32,), posterior="iaf")
        >>> vae.posterior(torch.zeros(5, 64)).batch_shape
        torch.Size([5])
    """

    saved_config_defaults = {"gaussian_base": False}  # files saved before the option: N(0, I)

    def __init__(self, data_shape: Sequence[int] = (784,), *, posterior: str = "iaf",
                 flow_transforms: int = 2, flow_hidden: Sequence[int] = (128, 128),
                 gaussian_base: bool = True, **vae_options: Any) -> None:
        if posterior not in POSTERIORS:
            raise ValueError(f"posterior must be one of {POSTERIORS}, got {posterior!r}")
        if int(flow_transforms) < 1 or not flow_hidden or min(flow_hidden) <= 0:
            raise ValueError(f"flow_transforms must be >= 1 and flow_hidden non-empty positive "
                             f"widths, got {flow_transforms}, {tuple(flow_hidden)}")
        super().__init__(data_shape, **vae_options)
        if self.num_classes is not None:
            raise ValueError("FlowVAE is unconditional; use VAE(num_classes=...) for labels")
        flow_config = {"posterior": posterior, "flow_transforms": int(flow_transforms),
                       "flow_hidden": [int(w) for w in flow_hidden],
                       "gaussian_base": bool(gaussian_base)}
        self.config.update(flow_config)  # so probgen.load rebuilds the flow too
        self.posterior_kind = posterior
        self.gaussian_base = bool(gaussian_base)
        self.flow = AmortizedFlowPosterior(self.latent_dim, 2 * self.latent_dim, posterior,
                                           transforms=int(flow_transforms),
                                           hidden=tuple(flow_config["flow_hidden"]))

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder output h(x), ``(*batch, 2·latent_dim)``: the flow's context."""
        x = self._encoder_input(x)
        batch_shape = x.shape[: x.dim() - len(self.data_shape)]
        if self.network == "mlp":
            return self.encoder_body(x.reshape(*batch_shape, -1))
        return self.encoder_head(self.encoder_body(x))

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        """q(z | x): the amortized flow with context h(x); batch ``x``'s batch, event ``(latent_dim,)``."""
        h = self.context(x)
        if not self.gaussian_base:
            return self.flow(h)
        loc, log_scale = h.split(self.latent_dim, -1)
        return self.flow(h, base=(loc, log_scale.clamp(-10.0, 10.0).exp()))

    def default_loss(self) -> pyro.infer.ELBO:
        """Trace_ELBO: the flow's KL has no closed form (log q is scored on q's own samples)."""
        return pyro.infer.Trace_ELBO()

    @torch.no_grad()
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None, *,
               num_samples: int = 64) -> torch.Tensor:
        """A Monte Carlo posterior mean of z given x (``num_samples`` draws), ``(n, latent_dim)``."""
        return self.posterior(x).sample((num_samples,)).mean(0)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None, *,
                    sample: bool = False) -> torch.Tensor:
        """E[x | z] at the Monte Carlo posterior mean of z (``sample=True``: a draw of z and x)."""
        z = self.posterior(x).sample() if sample else self.encode(x)
        likelihood = self.decode(z)
        return likelihood.sample() if sample else self._mean(likelihood)


# what the plain-torch bound assumes of the program (no override of these)
_PROGRAM = ("model", "guide", "posterior", "context", "prior", "decode", "decoder_log_prob",
            "_kl_scale", "default_loss")


@FlowVAE.training_method("svi")
class FlowVAESVI(LeanSVI):
    r"""SVI for the flow-posterior VAE, in plain torch where it can be.

    With the model's own program, its default ``Trace_ELBO`` (or ``"mean_field"``, ``"iwae"``,
    particles vectorized, or fit's KL warm-up and free bits) and no user guide (data
    parallelism included), a step draws z through the flow as the guide would (its log q kept from the
    draw) and evaluates :func:`probgen.models.vae_loss.site_bound` with the one-sample
    log q(z | x) − log p(z) (the flow's KL has no closed form): the same values, gradients and
    Adam step as :class:`~probgen.infer.svi.SVI`, without Pyro's traces.
    """

    def lean_objective(self) -> Objective | None:
        model, loss = self.setup.model, self.elbo
        if not plain_options(self.setup, annealing=True) or not keeps_program(
                model, FlowVAE, _PROGRAM):
            return None
        if type(loss) not in (TraceMeanField_ELBO, Trace_ELBO, IWAE, AnnealedELBO):
            return None
        annealed = type(loss) is AnnealedELBO  # one particle a call
        particles = 1 if annealed else loss.num_particles
        if particles > 1 and not loss.vectorize_particles:
            return None
        iwae = type(loss) is IWAE

        def objective(x: torch.Tensor, *, beta: float = 1.0, free_bits: float = 0.0
                      ) -> torch.Tensor:
            beta = beta * model.beta if model.training else beta
            q = expanded(model.posterior(x), particles)
            z = q.rsample()
            prior = expanded(model.prior(x.shape[:1]), particles)
            return site_bound(model.decoder_log_prob(x, z), [(q, prior, z)],
                              particles=particles, iwae=iwae, beta=beta, free_bits=free_bits)
        return objective
