"""A discrete HMM written like Pyro's ``examples/hmm.py`` (``model_1``): a ``pyro.markov``
chain of enumerated states inside a plate of sequences at ``dim=-2``, a plate of tones at
``dim=-1``, Bernoulli emissions, ragged sequences masked by their lengths (observations masked,
latents not: padded steps then sum to one).

Exact; checked against a hand-written forward algorithm in float64.
"""

from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch.distributions import constraints

STATES, TONES, MAX_LENGTH = 3, 4, 10
KIND = "exact"
FIT = dict(num_steps=100, optim=0.05, batch_size=20, seed=0)
EVALUATE: dict = {}


def model(sequences, lengths):
    num_sequences, max_length, data_dim = sequences.shape
    probs_x = pyro.param("probs_x", 0.9 * torch.eye(STATES) + 0.1 / STATES,
                         constraint=constraints.simplex)
    probs_y = pyro.param("probs_y", torch.linspace(0.2, 0.8, STATES * data_dim)
                         .reshape(STATES, data_dim), constraint=constraints.unit_interval)
    tones_plate = pyro.plate("tones", data_dim, dim=-1)
    with pyro.plate("sequences", num_sequences, dim=-2) as batch:
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
    transition = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    emission = torch.rand(STATES, TONES, generator=generator)
    n = 60
    sequences = torch.zeros(n, MAX_LENGTH, TONES)
    state = torch.zeros(n, dtype=torch.long)
    for t in range(MAX_LENGTH):
        state = torch.multinomial(transition[state], 1, generator=generator).squeeze(-1)
        sequences[:, t] = torch.bernoulli(emission[state], generator=generator)
    lengths = torch.randint(3, MAX_LENGTH + 1, (n,), generator=generator)
    for row, length in enumerate(lengths):
        sequences[row, length:] = 0  # padding
    return (sequences[:40], lengths[:40]), (sequences[40:], lengths[40:])


def build() -> SimpleNamespace:
    return SimpleNamespace(model=model, guide=None)


def reference(program, test) -> torch.Tensor:
    """The forward algorithm, α_t(j) = Σ_i α_{t-1}(i) A_ij p(y_t | j), one sequence at a time."""
    sequences, lengths = test
    transition = pyro.param("probs_x").detach().double()
    emission = pyro.param("probs_y").detach().double()
    results = []
    for sequence, length in zip(sequences.double(), lengths.tolist()):
        log_alpha = transition[0].log()  # x_{-1} = 0
        for t in range(length):
            if t > 0:
                log_alpha = torch.logsumexp(log_alpha[:, None] + transition.log(), dim=0)
            y = sequence[t]
            log_alpha = log_alpha + (y * emission.log() + (1 - y) * (1 - emission).log()).sum(-1)
        results.append(torch.logsumexp(log_alpha, 0))
    return torch.stack(results)


def check_samples(program, guide, test) -> None:
    sequences, lengths = test
    samples = pyro.infer.Predictive(poutine.uncondition(model), num_samples=3)(sequences, lengths)
    assert samples["y_0"].shape == (3, len(sequences), TONES)
    assert samples["x_0"].shape[:2] == (3, len(sequences))
    assert set(samples["x_5"].unique().tolist()) <= set(range(STATES))
    assert set(samples["y_9"].unique().tolist()) <= {0.0, 1.0}
