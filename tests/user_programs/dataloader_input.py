"""Data given the PyTorch way: ``fit`` and ``evaluate`` both take a ``DataLoader`` over a
``TensorDataset`` of (features, targets), a Poisson regression log λ = xᵀw + b.

Exact; checked against scipy's Poisson log-mass on the loader's tensors.
"""

from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import scipy.stats
import torch
from torch.utils.data import DataLoader, TensorDataset

KIND = "exact"
FIT = dict(num_steps=150, optim=0.05, seed=0)
EVALUATE: dict = {}


def model(features, counts):
    weight = pyro.param("weight", torch.zeros(2))
    bias = pyro.param("bias", torch.tensor(0.0))
    with pyro.plate("data", len(counts)):
        pyro.sample("counts", dist.Poisson((features @ weight + bias).exp()), obs=counts)


def make_data(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(300, 2, generator=generator)
    counts = torch.poisson((features @ torch.tensor([0.5, -0.3]) + 1.0).exp(), generator=generator)
    train = DataLoader(TensorDataset(features[:250], counts[:250]), batch_size=50, shuffle=True,
                       generator=torch.Generator().manual_seed(seed))
    test = DataLoader(TensorDataset(features[250:], counts[250:]), batch_size=20)
    return train, test


def build() -> SimpleNamespace:
    return SimpleNamespace(model=model, guide=None)


def reference(program, test) -> torch.Tensor:
    features, counts = (t.double() for t in test.dataset.tensors)
    rate = (features @ pyro.param("weight").detach().double() + pyro.param("bias").item()).exp()
    return torch.as_tensor(scipy.stats.poisson.logpmf(counts.numpy(), rate.numpy()))


def check_samples(program, guide, test) -> None:
    features, counts = test.dataset.tensors
    samples = pyro.infer.Predictive(pyro.poutine.uncondition(model), num_samples=3,
                                    return_sites=["counts"])(features, counts)
    assert samples["counts"].shape == (3, len(counts)) and (samples["counts"] >= 0).all()
