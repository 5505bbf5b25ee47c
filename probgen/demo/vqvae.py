"""``probgen demo``: a VQ-VAE on binarized 8x8 digits, trained in two stages (autoencoder and
codebook, then a MADE prior on the frozen codes), scored by its one-hot-posterior bound."""

from __future__ import annotations

import pyro

from probgen.core.result import LogLikelihood
from probgen.demo.registry import DemoData, DemoEntry, register_demo
from probgen.evaluate.api import evaluate
from probgen.infer.fit import fit
from probgen.models.vqvae import VQVAE

__all__ = ["demo_entries"]


@register_demo(order=100)
def demo_entries(smoke: bool) -> list[DemoEntry]:
    def run(data: DemoData, out_dir: str) -> LogLikelihood:
        (x_train,), (x_test,) = data.train[:1], data.test[:1]
        pyro.set_rng_seed(0)
        model = VQVAE((x_train.shape[1],), num_codes=32, code_dim=8, num_positions=8,
                      hidden_features=(64,) if smoke else (256, 256), prior="made",
                      prior_options={"hidden_features": [64 if smoke else 256]}).to(x_train.dtype)
        steps = 40 if smoke else 3000
        fit(model, x_train, num_steps=steps, batch_size=128, optim=2e-3, seed=0, progress=False)
        fit(model, x_train, method="prior", num_steps=steps, batch_size=128, optim=2e-3, seed=0,
            progress=False)
        return evaluate(model, x_test)

    return [DemoEntry("digits", "vq-vae, made prior (one-hot bound)", run)]
