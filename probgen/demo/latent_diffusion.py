"""``probgen demo``: a latent-diffusion VAE on binarized 8x8 digits, trained in two stages (the
VAE, then the diffusion prior on its frozen latents), scored by its ELBO (a lower bound)."""

from __future__ import annotations

import pyro

from probgen.core.result import LogLikelihood
from probgen.demo.registry import DemoData, DemoEntry, register_demo
from probgen.evaluate.api import evaluate
from probgen.infer.fit import fit
from probgen.models.latent_diffusion import LatentDiffusionVAE

__all__ = ["demo_entries"]


@register_demo(order=80)
def demo_entries(smoke: bool) -> list[DemoEntry]:
    def run(data: DemoData, out_dir: str) -> LogLikelihood:
        (x_train,), (x_test,) = data.train[:1], data.test[:1]
        pyro.set_rng_seed(0)
        model = LatentDiffusionVAE(features=x_train.shape[1], latent_features=8,
                                   hidden_features=(64,), denoiser_features=(64, 64),
                                   prior_samples=4).to(x_train.dtype)
        steps = 40 if smoke else 3000
        fit(model, x_train, method="two_stage", vae_steps=steps // 2, num_steps=steps,
            batch_size=128, optim=2e-3, seed=0, progress=False)
        return evaluate(model, x_test, estimator="diffusion_elbo",
                        k=4 if smoke else 32, seed=0)

    return [DemoEntry("digits", "latent diffusion vae, two-stage (elbo)", run)]
