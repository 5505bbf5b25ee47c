"""Plain Pyro programs (as a user would write them) that the demo fits with probgen.fit."""

from __future__ import annotations

import os

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from probgen.core.result import LogLikelihood
from probgen.demo.registry import DemoData, DemoEntry, register_demo
from probgen.evaluate.api import evaluate
from probgen.infer.fit import fit
from probgen.plots import plot_density_2d

__all__ = ["gaussian_mixture_program", "bernoulli_mixture_program", "demo_entries"]


def gaussian_mixture_program(num_components: int, num_features: int, prefix: str):
    r"""p(x) = Σ_k π_k N(x; μ_k, diag σ_k²), the assignment enumerated (a user-style program)."""

    def model(x: torch.Tensor) -> None:
        weights = pyro.param(f"{prefix}weights", torch.ones(num_components, dtype=x.dtype, device=x.device) / num_components,
                             constraint=constraints.simplex)
        locs = pyro.param(f"{prefix}locs", lambda: x[torch.randperm(len(x))[:num_components]]
                          .clone() if len(x) >= num_components else
                          torch.randn(num_components, num_features, dtype=x.dtype, device=x.device))
        scales = pyro.param(f"{prefix}scales", torch.ones(num_components, num_features,
                                                          dtype=x.dtype, device=x.device),
                            constraint=constraints.positive)
        with pyro.plate("data", len(x)):
            assignment = pyro.sample("assignment", dist.Categorical(weights),
                                     infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(locs[assignment], scales[assignment]).to_event(1), obs=x)

    return model


def bernoulli_mixture_program(num_components: int, num_features: int, prefix: str):
    r"""p(x) = Σ_k π_k Π_d Bernoulli(x_d; θ_kd), the assignment enumerated."""

    def model(x: torch.Tensor) -> None:
        weights = pyro.param(f"{prefix}weights", torch.ones(num_components, dtype=x.dtype, device=x.device) / num_components,
                             constraint=constraints.simplex)
        probs = pyro.param(f"{prefix}probs", lambda: 0.25 + 0.5 * torch.rand(
            num_components, num_features, dtype=x.dtype, device=x.device),
            constraint=constraints.unit_interval)
        with pyro.plate("data", len(x)):
            assignment = pyro.sample("assignment", dist.Categorical(weights),
                                     infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Bernoulli(probs[assignment]).to_event(1), obs=x)

    return model


def _fit_and_score(make, k: int, steps: int, lr: float):
    def run(data: DemoData, out_dir: str) -> LogLikelihood:
        x = data.train[0]
        model = make(k, x.shape[1], prefix=f"demo_{data.name}_{k}_")
        fit(model, x, num_steps=steps, optim=lr, seed=0, progress=False)
        if data.name == "iris" and k == 3:
            weights = pyro.param(f"demo_iris_{k}_weights").detach()
            locs = pyro.param(f"demo_iris_{k}_locs").detach()[:, :2]
            scales = pyro.param(f"demo_iris_{k}_scales").detach()[:, :2]

            def density(points):
                comp = dist.Normal(locs, scales).to_event(1).log_prob(points[:, None])
                return torch.logsumexp(comp + weights.log(), -1)

            plot_density_2d(density, x[:, :2], os.path.join(out_dir, "iris_mixture_density.png"),
                            title="iris training data under the 3-component diagonal mixture "
                                  "(marginal of the first two features)",
                            xlabel="sepal length (standardized)",
                            ylabel="sepal width (standardized)")
        return evaluate(model, data.test)

    return run


@register_demo(order=0)
def demo_entries(smoke: bool) -> list[DemoEntry]:
    steps = 60 if smoke else 400
    entries = [DemoEntry("iris", f"pyro program: diag mixture K={k}",
                         _fit_and_score(gaussian_mixture_program, k, steps, 0.05))
               for k in (1, 2, 3)]
    entries += [DemoEntry("digits", f"pyro program: Bernoulli mixture K={k}",
                          _fit_and_score(bernoulli_mixture_program, k, steps, 0.05))
                for k in (1, 10)]
    return entries
