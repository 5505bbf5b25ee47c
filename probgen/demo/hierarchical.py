"""``probgen demo``: a 2-layer ladder VAE on binarized 8x8 digits, scored with the IWAE bound."""

from __future__ import annotations

import pyro

from probgen.core.result import LogLikelihood
from probgen.demo.registry import DemoData, DemoEntry, register_demo
from probgen.evaluate.api import evaluate
from probgen.infer.fit import fit
from probgen.models.hierarchical import HierarchicalVAE

__all__ = ["demo_entries"]


@register_demo(order=90)
def demo_entries(smoke: bool) -> list[DemoEntry]:
    def run(data: DemoData, out_dir: str) -> LogLikelihood:
        (x_train,), (x_test,) = data.train[:1], data.test[:1]
        pyro.set_rng_seed(0)
        vae = HierarchicalVAE((x_train.shape[1],), latent_dims=(16, 8),
                              hidden_features=((64,), (32,)), warmup_steps=300).to(x_train.dtype)
        fit(vae, x_train, num_steps=150 if smoke else 3000, batch_size=128,
            optim=pyro.optim.Adam({"lr": 3e-3}), seed=0, progress=False)
        return evaluate(vae, x_test, estimator="iwae", k=50 if smoke else 1000, seed=0)

    return [DemoEntry("digits", "ladder vae, 2 layers (iwae bound)", run)]
