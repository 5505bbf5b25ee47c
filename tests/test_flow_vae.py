"""FlowVAE: IWAE vs the exact pPCA marginal, a flow posterior beating a diagonal one, save/load."""

import pyro
import pytest
import torch
from torch.distributions import MultivariateNormal

import probgen
from probgen.models.flow_vae import FlowVAE
from probgen.models.vae import VAE

# z (2-d) -> x (3-d) linear-Gaussian (probabilistic PCA); nearly parallel columns of W make
# the exact posterior strongly correlated (correlation -0.98), which a diagonal Gaussian misses.
W = torch.tensor([[1.0, 0.9], [1.0, 1.1], [0.2, 0.0]], dtype=torch.float64)
B = torch.tensor([0.3, -0.1, 0.5], dtype=torch.float64)
SIGMA = 0.3
W_MILD = torch.tensor([[1.0, 0.5], [0.3, 1.0], [0.2, -0.4]], dtype=torch.float64)  # σ = 1


def exact_marginal(weight=W, sigma=SIGMA) -> MultivariateNormal:
    """x ~ N(b, W Wᵀ + σ² I) (Tipping & Bishop, 1999)."""
    return MultivariateNormal(B, weight @ weight.T + sigma**2 * torch.eye(3, dtype=torch.float64))


def linear_decoder(cls, weight=W, sigma=SIGMA, **options):
    vae = cls((3,), latent_dim=2, hidden_features=(), likelihood="gaussian",
              observation_scale=sigma, **options).double()
    with torch.no_grad():
        vae.decoder_body[0].weight.copy_(weight)
        vae.decoder_body[0].bias.copy_(B)
    return vae


def best_diagonal_gap() -> float:
    r"""min over diagonal q of KL(q || p(z|x)) = ½ (Σ log Λ_ii - log det Λ), Λ = I + WᵀW/σ²."""
    precision = torch.eye(2, dtype=torch.float64) + W.T @ W / SIGMA**2
    return float(0.5 * (precision.diagonal().log().sum() - torch.logdet(precision)))


@pytest.mark.parametrize("posterior", ["iaf", "nsf"])
def test_iwae_is_below_exact_and_converges(posterior):
    """An untrained flow q: ELBO <= IWAE-10 <= IWAE-3000 <= exact (+ ~3 MC standard deviations)."""
    # base N(0, I): the prior, a proposal IWAE-3000 corrects (the encoder's random Gaussian is not)
    vae = linear_decoder(FlowVAE, W_MILD, 1.0, posterior=posterior, flow_hidden=(16,),
                         gaussian_base=False)
    x = exact_marginal(W_MILD, 1.0).sample((40,))
    exact = float(exact_marginal(W_MILD, 1.0).log_prob(x).mean())
    elbo = probgen.evaluate(vae, x, estimator="elbo", k=200, seed=0)
    iwae10 = probgen.evaluate(vae, x, estimator="iwae", k=10, seed=0).mean
    iwae = probgen.evaluate(vae, x, estimator="iwae", k=3000, seed=0).mean
    assert elbo.kind == "lower_bound" and elbo.data_space == "continuous"
    # seed-to-seed sd of IWAE-3000 on this case: 0.003 (iaf), 0.015 (nsf)
    assert elbo.mean < iwae10 < iwae < exact + 0.05
    assert exact - elbo.mean > 1.0  # the untrained flow is a poor posterior...
    assert abs(exact - iwae) < 0.05 * (exact - elbo.mean)  # ...and IWAE-k closes most of the gap


def fit_encoder_only(vae, x, steps=80):
    """Adam on the posterior's parameters only; the decoder (the model) stays fixed."""
    params = [p for name, p in vae.named_parameters() if not name.startswith("decoder")]
    optimizer = torch.optim.Adam(params, lr=3e-2)
    elbo = pyro.infer.Trace_ELBO()
    for _ in range(steps):
        optimizer.zero_grad()
        elbo.differentiable_loss(vae.model, vae.guide, x).backward()
        optimizer.step()


def test_flow_posterior_beats_the_diagonal_gaussian_on_a_correlated_posterior():
    x = exact_marginal().sample((64,))
    exact = float(exact_marginal().log_prob(x).mean())
    gaps = {}
    for name, cls, options in (("diagonal", VAE, {}),
                               ("iaf", FlowVAE, {"posterior": "iaf", "flow_hidden": (16, 16)})):
        torch.manual_seed(0)
        vae = linear_decoder(cls, **options)
        fit_encoder_only(vae, x)
        gaps[name] = exact - probgen.evaluate(vae, x, estimator="elbo", k=500, seed=0).mean
    floor = best_diagonal_gap()
    assert floor > 1.0
    assert gaps["diagonal"] > 0.9 * floor  # a diagonal q cannot go below the analytic floor
    assert gaps["iaf"] < 0.5 * floor  # the flow captures the correlation


def test_conv_bernoulli_and_save_load(tmp_path):
    vae = FlowVAE((1, 8, 8), latent_dim=3, hidden_features=(16,), network="conv", channels=4,
                  posterior="nsf", flow_hidden=(8,))
    x = torch.bernoulli(torch.full((16, 1, 8, 8), 0.3))
    probgen.fit(vae, x, num_steps=3, batch_size=8, optim=1e-3, seed=0, progress=False)
    assert vae.encode(x[:4]).shape == (4, 3) and vae.reconstruct(x[:2]).shape == (2, 1, 8, 8)
    assert vae.sample(2).shape == (2, 1, 8, 8)
    probgen.save(vae, tmp_path / "flow_vae")
    loaded = probgen.load(tmp_path / "flow_vae")
    assert type(loaded) is FlowVAE and loaded.config["posterior"] == "nsf"
    a = probgen.evaluate(vae, x, estimator="iwae", k=8, seed=1)
    b = probgen.evaluate(loaded, x, estimator="iwae", k=8, seed=1)
    torch.testing.assert_close(a.per_example, b.per_example)
    assert a.data_space == "discrete" and a.num_dims == 64


@pytest.mark.parametrize("options, match", [
    ({"posterior": "maf"}, "posterior must be one of"),
    ({"flow_transforms": 0}, "flow_transforms"),
    ({"num_classes": 3}, "unconditional"),
])
def test_bad_arguments_name_the_problem(options, match):
    with pytest.raises(ValueError, match=match):
        FlowVAE((8,), latent_dim=2, hidden_features=(4,), **options)


def test_registered():
    from probgen.models.registry import get_model_class

    assert get_model_class("flow_vae") is FlowVAE


@pytest.mark.parametrize("posterior", ["iaf", "nsf"])
def test_gaussian_base_scores_its_samples_consistently(posterior):
    """q = flow steps on N(μ(x), σ(x)): the density cached while sampling equals the inverse pass,
    and a base scale of 1e-4 pins q to the flow's image of μ(x) (the base is really used)."""
    vae = FlowVAE((6,), latent_dim=3, hidden_features=(8,), posterior=posterior,
                  flow_hidden=(8,)).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    q = vae.posterior(x)
    z = q.rsample((4,))
    cached = q.log_prob(z)
    fresh = vae.posterior(x).log_prob(z)  # a new distribution: no cache, the inverse pass
    torch.testing.assert_close(cached, fresh, rtol=1e-8, atol=1e-8)
    h = vae.context(x)
    loc = h[..., :3]
    narrow = vae.flow(h, base=(loc, torch.full_like(loc, 1e-4)))
    draws = narrow.rsample((50,))
    assert float(draws.std(0).max()) < 1e-2  # almost a point: the base's spread, transformed


def test_a_file_saved_before_gaussian_base_loads_with_the_posterior_it_was_trained_with(tmp_path):
    """Old files have no "gaussian_base": they meant N(0, I), not the new default."""
    vae = FlowVAE((6,), latent_dim=3, hidden_features=(8,), flow_hidden=(8,),
                  gaussian_base=False).double()
    path = probgen.save(vae, tmp_path / "old.pt")
    state = torch.load(path, weights_only=True)
    del state["config"]["gaussian_base"]  # as written before the option existed
    torch.save(state, path)
    loaded = probgen.load(path)
    assert loaded.gaussian_base is False
    x = torch.bernoulli(torch.full((5, 6), 0.4, dtype=torch.float64))
    before = probgen.evaluate(vae, x, estimator="iwae", k=8, seed=0).per_example
    after = probgen.evaluate(loaded, x, estimator="iwae", k=8, seed=0).per_example
    torch.testing.assert_close(before, after)
