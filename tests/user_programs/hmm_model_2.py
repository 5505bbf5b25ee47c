"""Pyro's ``examples/hmm.py`` ``model_2`` shape: global transition and emission probabilities
drawn from Dirichlet and Beta priors, a ``pyro.markov`` chain of enumerated states in a plate
of sequences at ``dim=-2`` that subsamples itself (``subsample_size``), Bernoulli tones, and the
``AutoDelta`` over the globals that the example trains (``poutine.block(expose_fn=...)``).
Observations, not latents, are masked by the lengths (probgen refuses masked enumerated
latents: each would add log(number of states)).

Exact at the guide's point mass; checked against a hand-written forward algorithm.
"""

from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoDelta

STATES, TONES, MAX_LENGTH, SUBSAMPLE = 3, 4, 8, 10
KIND = "exact"
FIT = dict(num_steps=100, optim=0.05, seed=0)
EVALUATE: dict = {}


def model(sequences, lengths):
    num_sequences, max_length, data_dim = sequences.shape
    probs_x = pyro.sample("probs_x", dist.Dirichlet(0.9 * torch.eye(STATES) + 0.1).to_event(1))
    probs_y = pyro.sample("probs_y", dist.Beta(0.5, 0.5).expand([STATES, data_dim]).to_event(2))
    tones_plate = pyro.plate("tones", data_dim, dim=-1)
    with pyro.plate("sequences", num_sequences, SUBSAMPLE, dim=-2) as batch:
        lengths = lengths[batch]
        x = 0
        for t in pyro.markov(range(max_length)):
            x = pyro.sample(f"x_{t}", dist.Categorical(probs_x[x]),
                            infer={"enumerate": "parallel"})
            with tones_plate, poutine.mask(mask=(t < lengths).unsqueeze(-1)):
                pyro.sample(f"y_{t}", dist.Bernoulli(probs_y[x.squeeze(-1)]),
                            obs=sequences[batch, t])


def make_data(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    transition = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.1, 0.6]])
    emission = torch.rand(STATES, TONES, generator=generator)
    n = 53
    sequences = torch.zeros(n, MAX_LENGTH, TONES)
    state = torch.zeros(n, dtype=torch.long)
    for t in range(MAX_LENGTH):
        state = torch.multinomial(transition[state], 1, generator=generator).squeeze(-1)
        sequences[:, t] = torch.bernoulli(emission[state], generator=generator)
    lengths = torch.randint(2, MAX_LENGTH + 1, (n,), generator=generator)
    for row, length in enumerate(lengths):
        sequences[row, length:] = 0
    return (sequences[:30], lengths[:30]), (sequences[30:], lengths[30:])  # 23: not a multiple


def build() -> SimpleNamespace:
    guide = AutoDelta(poutine.block(model, expose_fn=lambda msg: msg["name"].startswith("probs_")))
    return SimpleNamespace(model=model, guide=guide)


def reference(program, test) -> torch.Tensor:
    """The forward algorithm at the guide's point, one sequence at a time, in float64."""
    sequences, lengths = test
    point = program.guide.median(sequences, lengths)
    transition = point["probs_x"].detach().double()
    emission = point["probs_y"].detach().double()
    results = []
    for sequence, length in zip(sequences.double(), lengths.tolist()):
        log_alpha = transition[0].log()
        for t in range(length):
            if t > 0:
                log_alpha = torch.logsumexp(log_alpha[:, None] + transition.log(), dim=0)
            y = sequence[t]
            log_alpha = log_alpha + (y * emission.log() + (1 - y) * (1 - emission).log()).sum(-1)
        results.append(torch.logsumexp(log_alpha, 0))
    return torch.stack(results)


def check_samples(program, guide, test) -> None:
    sequences, lengths = test
    samples = pyro.infer.Predictive(poutine.uncondition(model), guide=guide, num_samples=2,
                                    return_sites=["probs_x", "x_3", "y_3"])(sequences, lengths)
    assert samples["y_3"].shape == (2, SUBSAMPLE, TONES)  # one subsample of the plate per draw
    assert set(samples["x_3"].unique().tolist()) <= set(range(STATES))
    rows = samples["probs_x"].reshape(2, -1, STATES)  # Predictive keeps the plates' dims
    torch.testing.assert_close(rows.sum(-1), torch.ones_like(rows[..., 0]))
