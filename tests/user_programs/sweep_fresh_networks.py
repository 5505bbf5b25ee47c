"""A sweep over fresh networks in one script: three classifiers p(label | x) of growing width,
each a new ``nn.Module`` registered under the *same* ``pyro.module`` name, fitted one after the
other without clearing the param store (a user's hyper-parameter loop); the last one is saved.

Exact (no latents); every run checked against a softmax of its own network's logits.
"""

from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import torch
from torch import nn

import probgen

WIDTHS = (4, 8, 16)
KIND = "exact"
FIT = dict(num_steps=60, optim=0.05, batch_size=60, seed=0)
EVALUATE: dict = {}


def make_program(width: int) -> SimpleNamespace:
    network = nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, 3))

    def model(features, labels):
        pyro.module("classifier", network)
        with pyro.plate("data", len(labels)):
            pyro.sample("label", dist.Categorical(logits=network(features)), obs=labels)

    return SimpleNamespace(model=model, guide=None, network=network)


def make_data(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(3, (240,), generator=generator)
    angle = 2.1 * labels + 0.3 * torch.randn(240, generator=generator)
    features = torch.stack([angle.cos(), angle.sin()], -1) + 0.2 * torch.randn(
        240, 2, generator=generator)
    return (features[:180], labels[:180]), (features[180:], labels[180:])


def build() -> SimpleNamespace:
    return make_program(WIDTHS[-1])


def reference(program, test) -> torch.Tensor:
    features, labels = test
    with torch.no_grad():
        log_probs = torch.log_softmax(program.network(features).double(), -1)
    return log_probs.gather(-1, labels[:, None]).squeeze(-1)


def train(program, data):
    """Every width is a fresh network; each run must train *its* network and score with it."""
    _, test = make_data(0)
    for width in WIDTHS[:-1]:
        earlier = make_program(width)
        before = [p.detach().clone() for p in earlier.network.parameters()]
        probgen.fit(earlier.model, data, progress=False, **FIT)
        assert all(not torch.equal(b, p) for b, p in zip(before, earlier.network.parameters()))
        held_out = probgen.evaluate(earlier.model, test)
        torch.testing.assert_close(held_out.per_example.double(), reference(earlier, test),
                                   atol=1e-5, rtol=0)
    before = [p.detach().clone() for p in program.network.parameters()]
    result = probgen.fit(program.model, data, progress=False, **FIT)
    assert all(not torch.equal(b, p) for b, p in zip(before, program.network.parameters()))
    return result


def check_samples(program, guide, test) -> None:
    features, labels = test
    samples = pyro.infer.Predictive(pyro.poutine.uncondition(program.model), num_samples=4,
                                    return_sites=["label"])(features, labels)
    assert samples["label"].shape == (4, len(labels))
    assert set(samples["label"].unique().tolist()) <= {0, 1, 2}
