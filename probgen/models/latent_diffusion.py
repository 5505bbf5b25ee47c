r"""Latent-diffusion VAE: a VAE whose prior p(z) is a diffusion model, trained end to end.

The ELBO with the diffusion VLB in place of log p(z) is still a lower bound on log p(x):
log p(x) >= E_q[log p(x|z) + log p(z) - log q(z|x)] >= E_q[log p(x|z) + VLB(z) - log q(z|x)],
since VLB(z) <= log p(z) for every z (Vahdat et al., 2021, "Score-based generative modeling in
latent space"; Rombach et al., 2022). The IWAE bound needs unbiased weights, which a stochastic
VLB is not; ``evaluate_diffusion_iwae`` therefore samples over the extended latent (z and its
whole diffusion trajectory, :func:`probgen.diffusion.trajectory.trajectory_log_weight`), whose
weights are unbiased for p(x) of the hybrid with its prior as the T-step ancestral chain.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.optim
import torch
from torch import Tensor, nn

from probgen.core.chunks import eval_mode, map_chunks
from probgen.core.model import GenerativeModel
from probgen.core.result import LogLikelihood, data_fingerprint
from probgen.diffusion.schedules import make_schedule
from probgen.diffusion.trajectory import trajectory_log_weight
from probgen.distributions.diffusion import DiffusionPrior
from probgen.infer.method import TrainingSetup
from probgen.infer.svi import SVI
from probgen.models.registry import register_model
from probgen.nn.denoiser import GaussianResidualDenoiser, MLPDenoiser
from probgen.nn.mlp import MLP

__all__ = ["LatentDiffusionVAE", "PRIORS", "TwoStage", "evaluate_diffusion_elbo",
           "evaluate_diffusion_iwae"]

PRIORS = ("diffusion", "gaussian")


@register_model("latent_diffusion")
class LatentDiffusionVAE(GenerativeModel):
    r"""z ~ diffusion prior (or N(0, I)), x ~ Bernoulli(decoder(z)); guide z ~ N(μ(x), σ(x)).

    Arguments:
        features: data size (binary vectors).
        latent_features: size of z.
        hidden_features: encoder hidden sizes (the decoder mirrors them).
        denoiser_features: widths of the prior's residual ε-network.
        schedule, logsnr_min, logsnr_max, num_steps: the diffusion prior (see
            :class:`probgen.models.diffusion.DiffusionDensity`).
        prior: ``"diffusion"``, or ``"gaussian"`` for a plain VAE with the same networks.
        prior_samples: (t, ε) draws per z in the VLB during training and ELBO evaluation.
        gaussian_residual: the prior's ε-network predicts a residual on the N(0, I)-optimal
            denoiser (:class:`~probgen.nn.denoiser.GaussianResidualDenoiser`), so the hybrid
            starts as the plain VAE and its bound starts at the plain VAE's.

    Example:
        >>> vae = LatentDiffusionVAE(features=16, latent_features=2, hidden_features=(32,),
        ...                          denoiser_features=(32,))
        >>> vae.sample(3).shape
        torch.Size([3, 16])
    """

    has_guide = True
    data_space = "discrete"
    support = "binary"
    default_estimator = "diffusion_elbo"
    data_size_argument = "features"  # filled from the data by from_data and the CLI

    def __init__(self, features: int, latent_features: int = 8,
                 hidden_features: Sequence[int] = (256, 256),
                 denoiser_features: Sequence[int] = (128, 128), time_features: int = 32,
                 schedule: str = "cosine", logsnr_min: float = -10.0, logsnr_max: float = 10.0,
                 num_steps: int | None = None, prior: str = "diffusion",
                 prior_samples: int = 1, gaussian_residual: bool = True) -> None:
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
        super().__init__(features=int(features), latent_features=int(latent_features),
                         hidden_features=list(hidden_features),
                         denoiser_features=list(denoiser_features), time_features=time_features,
                         schedule=schedule, logsnr_min=logsnr_min, logsnr_max=logsnr_max,
                         num_steps=num_steps, prior=prior, prior_samples=int(prior_samples),
                         gaussian_residual=bool(gaussian_residual))
        self.encoder = MLP(features, 2 * latent_features, hidden_features, activation="silu")
        self.decoder = MLP(latent_features, features, tuple(reversed(list(hidden_features))),
                           activation="silu")
        self.denoiser = MLPDenoiser(latent_features, denoiser_features, time_features)
        self.schedule = make_schedule(schedule, logsnr_min, logsnr_max)
        self.stage = "joint"  # "vae": N(0, I) prior (two-stage, stage 1); "prior": AE frozen

    def event_shape(self) -> tuple[int, ...]:
        return (self.config["features"],)

    def uses_diffusion(self) -> bool:
        return self.config["prior"] == "diffusion" and self.stage != "vae"

    def prior_denoiser(self):
        """The ε-network of the diffusion prior, with the N(0, I)-optimal residual if configured."""
        if self.config.get("gaussian_residual", False):
            return GaussianResidualDenoiser(self.denoiser, self.schedule)
        return self.denoiser

    def prior_steps(self, num_steps: int | None = None) -> int | None:
        """T of the prior: ``num_steps`` if given, else the config's (None: continuous time)."""
        return self.config["num_steps"] if num_steps is None else int(num_steps)

    def prior(self, *, num_samples: int | None = None, sample_steps: int | None = None,
              num_steps: int | None = None):
        """p(z): the diffusion prior (log_prob is the VLB, of the ``num_steps``-step model when
        given), or N(0, I)."""
        latent = self.config["latent_features"]
        if not self.uses_diffusion():
            zeros = torch.zeros(latent, dtype=self.decoder[0].weight.dtype,
                                device=self.decoder[0].weight.device)
            return dist.Normal(zeros, 1.0).to_event(1)
        return DiffusionPrior(self.prior_denoiser(), self.schedule, latent,
                              num_steps=self.prior_steps(num_steps),
                              num_samples=num_samples or self.config["prior_samples"],
                              sample_steps=sample_steps)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z | x) parameters: loc and scale, each ``(..., latent_features)``."""
        loc, raw_scale = self.encoder(x).chunk(2, dim=-1)
        return loc, nn.functional.softplus(raw_scale) + 1e-4

    def _register(self) -> None:
        if self.stage == "prior":  # two-stage, stage 2: only the prior's denoiser trains
            pyro.module(f"{self.pyro_name}_prior", self.denoiser)
            if any(True for _ in self.schedule.parameters()):
                pyro.module(f"{self.pyro_name}_schedule", self.schedule)
        else:
            pyro.module(self.pyro_name, self)

    def model(self, x: Tensor) -> None:
        self._register()
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x: Tensor) -> None:
        self._register()
        loc, scale = self.encode(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def log_weights(self, x: Tensor, num_particles: int, *, prior_samples: int | None = None,
                    num_steps: int | None = None) -> Tensor:
        r"""log p(x|z) + log p̂(z) - log q(z|x) for z ~ q, shape ``(num_particles, n)``; log p̂ is
        the VLB estimate for the diffusion prior (of the ``num_steps``-step model when given)."""
        loc, scale = self.encode(x)
        posterior = dist.Normal(loc, scale).to_event(1)
        z = posterior.rsample((int(num_particles),))  # (particles, n, latent)
        log_lik = dist.Bernoulli(logits=self.decoder(z)).to_event(1).log_prob(x)
        log_prior = self.prior(num_samples=prior_samples, num_steps=num_steps).log_prob(z)
        return log_lik + log_prior - posterior.log_prob(z)

    def trajectory_log_weights(self, x: Tensor, num_particles: int, *, num_steps: int
                               ) -> Tensor:
        r"""log p(x|z) + log w_T(z, z_{0:1}) - log q(z|x), z ~ q(z|x) and one forward diffusion
        trajectory per z: exp of it is unbiased for p(x) of the hybrid whose prior is the
        ``num_steps``-step ancestral chain. Shape ``(num_particles, n)``."""
        loc, scale = self.encode(x)
        posterior = dist.Normal(loc, scale).to_event(1)
        z = posterior.sample((int(num_particles),))  # (particles, n, latent)
        log_lik = dist.Bernoulli(logits=self.decoder(z)).to_event(1).log_prob(x)
        if self.uses_diffusion():
            log_prior = trajectory_log_weight(self.prior_denoiser(), self.schedule, z,
                                              num_steps=num_steps)
        else:
            log_prior = self.prior().log_prob(z)
        return log_lik + log_prior - posterior.log_prob(z)

    @torch.no_grad()
    def sample(self, num_samples: int, *, mean: bool = False, sample_steps: int | None = None
               ) -> Tensor:
        """``(num_samples, features)`` binary samples (or Bernoulli means with ``mean=True``)."""
        z = self.prior(sample_steps=sample_steps).sample((int(num_samples),))
        probs = torch.sigmoid(self.decoder(z))
        return probs if mean else torch.bernoulli(probs)

    def freeze_autoencoder(self, frozen: bool = True) -> None:
        """Stop (or restart) gradients to the encoder and decoder (two-stage training)."""
        for module in (self.encoder, self.decoder):
            module.requires_grad_(not frozen)


@LatentDiffusionVAE.training_method("two_stage")
class TwoStage(SVI):
    r"""Two-stage latent diffusion (Vahdat et al., 2021; Rombach et al., 2022) as one fit.

    ``probgen.fit(model, x, method="two_stage", vae_steps=S, num_steps=S + P)``: the first
    ``vae_steps`` steps train the autoencoder as a plain VAE (``model.stage = "vae"``, prior
    N(0, I)); the remaining steps train the diffusion prior on q(z | x) with the encoder and
    decoder frozen (``model.stage = "prior"``), with an optimizer of their own (a fresh one, or
    the same per-parameter ``pyro.optim`` object). The stage follows the step count, which is
    checkpointed and rolled back with the parameters, so a resume past the boundary continues
    in stage two. When the fit ends the model is back to ``stage = "joint"``, unfrozen.

    The objective is the ELBO each stage defines, so ``FitResult.losses`` switches from the
    N(0, I)-prior bound to the diffusion-prior bound at step ``vae_steps``.
    """

    options = ("vae_steps",)

    def __init__(self, setup: TrainingSetup) -> None:
        model = setup.model
        if not isinstance(model, LatentDiffusionVAE) or model.config["prior"] != "diffusion":
            raise ValueError("method='two_stage' trains the diffusion prior of a "
                             "LatentDiffusionVAE built with prior='diffusion'")
        vae_steps = setup.options.get("vae_steps")
        if isinstance(vae_steps, bool) or not isinstance(vae_steps, int) or vae_steps < 1:
            raise ValueError("method='two_stage' needs vae_steps=S, a positive integer: the "
                             f"steps of stage one (the VAE), got {vae_steps!r}")
        self.model, self.vae_steps = model, vae_steps
        self.stage = "vae"
        model.stage = "vae"
        model.freeze_autoencoder(False)
        super().__init__(setup)
        # Stage two's optimizer: a fresh copy of stage one's before any step; a user's
        # pyro.optim object keeps state per parameter, so it is shared (and its schedule too).
        stage_two = (self.optimizer if isinstance(setup.optim, pyro.optim.PyroOptim)
                     else copy.deepcopy(self.optimizer))
        self.optimizers = {"vae": self.optimizer, "prior": stage_two}
        # steps taken, as a tensor: rollback on divergence restores it with the parameters
        self.steps_taken = torch.zeros((), dtype=torch.long)

    def _enter_stage(self) -> None:
        stage = "vae" if int(self.steps_taken) < self.vae_steps else "prior"
        if stage != self.stage:
            self.stage = stage
            self.optimizer = self.optimizers[stage]
        self.model.stage = stage
        self.model.freeze_autoencoder(stage == "prior")

    def step(self, batch: tuple[Tensor, ...], scale: float) -> float:
        self._enter_stage()
        loss = super().step(batch, scale)
        self.steps_taken += 1
        self._enter_stage()  # validation and checkpoints after this step see the next stage
        return loss

    def tensors(self) -> list[Tensor]:
        return super().tensors() + [self.steps_taken]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "steps_taken": int(self.steps_taken)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps_taken.fill_(int(state.get("steps_taken", 0)))
        self._enter_stage()
        super().load_state_dict(state)  # into the optimizer of the stage the run is in

    def finish(self) -> None:
        self.model.freeze_autoencoder(False)
        self.model.stage = "joint"


def _prepare(model: Any, batch: Any) -> Tensor:
    if not isinstance(model, LatentDiffusionVAE):
        raise TypeError(f"this estimator needs a LatentDiffusionVAE, got {type(model).__name__}")
    return model.validate(batch[0] if isinstance(batch, tuple) else batch)


def _run(model: LatentDiffusionVAE, x: Tensor, batch_size: int | None, seed: int | None,
         reduce) -> Tensor:
    with eval_mode(model, seed=seed), torch.no_grad():
        return map_chunks(reduce, x, batch_size)


@LatentDiffusionVAE.estimator("diffusion_elbo", options=("k", "num_particles", "prior_samples",
                                                         "num_steps", "batch_size", "seed"))
def evaluate_diffusion_elbo(model: LatentDiffusionVAE, batch: tuple[Tensor, ...], *,
                            k: int | None = None, num_particles: int = 16,
                            prior_samples: int = 4, num_steps: int | None = None,
                            batch_size: int | None = 256, seed: int | None = None
                            ) -> LogLikelihood:
    r"""ELBO with the diffusion VLB for log p(z), averaged over ``num_particles`` z ~ q(z|x):
    a lower bound on log p(x) (each value is an unbiased estimate of the example's bound).
    ``num_steps=T`` scores the hybrid whose prior is the T-step chain (default: the config's)."""
    x = _prepare(model, batch)
    particles = int(k or num_particles)
    values = _run(model, x, batch_size, seed, lambda chunk: model.log_weights(
        chunk, particles, prior_samples=prior_samples, num_steps=num_steps).mean(0))
    settings = {"num_particles": particles, "prior_samples": prior_samples,
                "prior": model.config["prior"], "prior_steps": model.prior_steps(num_steps)}
    return LogLikelihood(values, kind="lower_bound", estimator="diffusion_elbo",
                         num_dims=x.shape[-1], data_space="discrete", settings=settings,
                         data_id=data_fingerprint(x))


@LatentDiffusionVAE.estimator("diffusion_iwae", options=("k", "num_steps", "batch_size", "seed"))
def evaluate_diffusion_iwae(model: LatentDiffusionVAE, batch: tuple[Tensor, ...], *,
                            k: int = 100, num_steps: int | None = None,
                            batch_size: int | None = None, seed: int | None = None
                            ) -> LogLikelihood:
    r"""IWAE-k over the extended latent: log (1/k) Σ_j p(x|z_j) w_T(z_j) / q(z_j|x), with w_T one
    forward diffusion trajectory's weight (unbiased for p_T(z_j)) — a ``lower_bound`` on log p(x)
    of the hybrid whose prior is the T-step ancestral chain, growing with k.

    ``num_steps=T``: the chain's steps (default: the model's, or 1000 for a continuous-time
    prior; each weight costs T denoiser calls). With ``prior="gaussian"`` it is the plain IWAE-k.
    """
    x = _prepare(model, batch)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be a positive integer (importance samples), got {k!r}")
    particles = int(k)
    if num_steps is not None and (isinstance(num_steps, bool)
                                  or not isinstance(num_steps, numbers.Integral) or num_steps < 1):
        raise ValueError(f"num_steps must be a positive integer (steps of the prior's chain), "
                         f"got {num_steps!r}; leave it None for the model's own")
    steps = model.prior_steps(num_steps) or 1000
    chunk = batch_size or max(1, 2048 // particles)
    values = _run(model, x, chunk, seed, lambda rows: torch.logsumexp(
        model.trajectory_log_weights(rows, particles, num_steps=steps), 0) - math.log(particles))
    diffusion = model.uses_diffusion()
    settings = {"k": particles, "prior": model.config["prior"]}
    if diffusion:
        settings.update(prior_steps=steps, proposal="q(z|x) × forward diffusion q(z_{0:1}|z)",
                        model_scored=f"the hybrid with its prior as the {steps}-step ancestral "
                        "chain" + (" (trained in continuous time)"
                                   if model.config["num_steps"] is None else ""))
    return LogLikelihood(values, kind="lower_bound",
                         estimator="diffusion_iwae" if diffusion else "iwae",
                         num_dims=x.shape[-1], data_space="discrete", settings=settings,
                         data_id=data_fingerprint(x))
