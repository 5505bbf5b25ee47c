"""Pyro's Gaussian mixture tutorial (``tutorial/source/gmm.ipynb``): global latents (weights,
scale, locs) with ``@config_enumerate`` assignments, and a ``poutine.block``-ed ``AutoDelta``
whose ``init_loc_fn`` starts the locations at data rows (data-dependent initialization).

With the point-mass guide the held-out number is exact: log Σ_k w_k N(x | μ_k, σ), checked
against scipy at the guide's point (``AutoDelta.median``).
"""

from types import SimpleNamespace

import numpy as np
import pyro
import pyro.distributions as dist
import scipy.special
import scipy.stats
import torch
from pyro import poutine
from pyro.infer import config_enumerate
from pyro.infer.autoguide import AutoDelta

K = 2
KIND = "exact"
FIT = dict(num_steps=150, optim=0.1, seed=0)
EVALUATE: dict = {}


def make_data(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.tensor([0.0, 10.0])[torch.randint(2, (160,), generator=generator)]
    data = centres + torch.randn(160, generator=generator)
    return data[:120], data[120:]


data, _ = make_data(0)  # the tutorial's global data set, which init_loc_fn reads


@config_enumerate
def model(data):
    weights = pyro.sample("weights", dist.Dirichlet(0.5 * torch.ones(K)))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 2.0))
    with pyro.plate("components", K):
        locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(data)):
        assignment = pyro.sample("assignment", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[assignment], scale), obs=data)


def init_loc_fn(site):
    if site["name"] == "weights":
        return torch.ones(K) / K  # initialize weights to uniform
    if site["name"] == "scale":
        return (data.var() / 2).sqrt()
    if site["name"] == "locs":
        return data[torch.multinomial(torch.ones(len(data)) / len(data), K)]
    raise ValueError(site["name"])


def build() -> SimpleNamespace:
    global_guide = AutoDelta(poutine.block(model, expose=["weights", "locs", "scale"]),
                             init_loc_fn=init_loc_fn)
    return SimpleNamespace(model=model, guide=global_guide)


def reference(program, test) -> torch.Tensor:
    point = {name: value.detach().double().numpy()
             for name, value in program.guide.median(test).items()}
    per_component = np.log(point["weights"]) + scipy.stats.norm.logpdf(
        test.double().numpy()[:, None], point["locs"], point["scale"])
    return torch.as_tensor(scipy.special.logsumexp(per_component, axis=1))


def check_samples(program, guide, test) -> None:
    samples = pyro.infer.Predictive(poutine.uncondition(model), guide=guide, num_samples=5,
                                    return_sites=["assignment", "obs", "locs"])(test)
    assert samples["obs"].shape == (5, len(test))
    assert torch.isfinite(samples["obs"]).all()
    assert set(samples["assignment"].unique().tolist()) <= set(range(K))
    # the point-mass guide gives every draw the same locations
    assert torch.equal(samples["locs"][0], samples["locs"][-1])
