"""Pyro's VAE tutorial (``examples/vae/vae.py``): Encoder and Decoder ``nn.Module``s, a ``VAE``
module whose ``model`` and ``guide`` register them with ``pyro.module``; binarized 8×8 digits
and a 2-dimensional latent so that log p(x) can be computed without probgen.

IWAE-k is a lower bound: checked against log p(x) by quadrature over a 201 × 201 grid of z
(spacing 0.05 on [-5, 5]²; the prior's mass outside is < 1e-5).
"""

from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from probgen.data import load_dataset

Z_DIM, HIDDEN, PIXELS = 2, 32, 64
KIND = "lower_bound"
MAX_GAP = 0.3  # nats: IWAE-256 with the trained encoder was 0.01 below the quadrature
FIT = dict(num_steps=150, optim=0.01, batch_size=100, seed=0)
EVALUATE = dict(estimator="iwae", k=256, seed=0)


class Decoder(nn.Module):
    def __init__(self, z_dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, PIXELS)
        self.softplus = nn.Softplus()
        self.sigmoid = nn.Sigmoid()

    def forward(self, z):
        hidden = self.softplus(self.fc1(z))
        return self.sigmoid(self.fc21(hidden))


class Encoder(nn.Module):
    def __init__(self, z_dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(PIXELS, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, z_dim)
        self.fc22 = nn.Linear(hidden_dim, z_dim)
        self.softplus = nn.Softplus()

    def forward(self, x):
        x = x.reshape(-1, PIXELS)
        hidden = self.softplus(self.fc1(x))
        return self.fc21(hidden), torch.exp(self.fc22(hidden))


class VAE(nn.Module):
    def __init__(self, z_dim=Z_DIM, hidden_dim=HIDDEN):
        super().__init__()
        self.encoder = Encoder(z_dim, hidden_dim)
        self.decoder = Decoder(z_dim, hidden_dim)
        self.z_dim = z_dim

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
            z_scale = x.new_ones(torch.Size((x.shape[0], self.z_dim)))
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = self.decoder(z)
            pyro.sample("obs", dist.Bernoulli(loc_img, validate_args=False).to_event(1),
                        obs=x.reshape(-1, PIXELS))

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))


def make_data(seed: int = 0):
    images = (load_dataset("digits").data > 8).float()  # binarized, (1797, 64)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return images[order[:300]], images[order[300:340]]


def build() -> SimpleNamespace:
    vae = VAE()
    return SimpleNamespace(model=vae.model, guide=vae.guide, vae=vae)


def reference(program, test) -> torch.Tensor:
    """log p(x) = log ∫ N(z; 0, I) Π_d Bernoulli(x_d | p_d(z)) dz by a Riemann sum on a grid."""
    axis = torch.linspace(-5, 5, 201, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)  # (201², 2)
    with torch.no_grad():
        probs = program.vae.decoder(grid.float()).double()  # (201², 64)
    log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(grid).sum(-1)
    x = test.double()
    log_lik = x @ probs.log().T + (1 - x) @ torch.log1p(-probs).T  # (examples, 201²)
    cell = (axis[1] - axis[0]) ** 2
    return torch.logsumexp(log_lik + log_prior, dim=-1) + cell.log()


def check_samples(program, guide, test) -> None:
    samples = pyro.infer.Predictive(pyro.poutine.uncondition(program.model), num_samples=3,
                                    return_sites=["latent", "obs"])(test)
    assert samples["latent"].shape == (3, len(test), Z_DIM)
    assert samples["obs"].shape == (3, len(test), PIXELS)
    assert set(samples["obs"].unique().tolist()) <= {0.0, 1.0}
