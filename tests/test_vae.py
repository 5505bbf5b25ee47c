"""VAE family: ground truth from probabilistic PCA and from quadrature over a 1-D latent."""

import json
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from scipy import stats

import probgen
from probgen.demo.vae import demo_entries
from probgen.models.vae import VAE


# --- probabilistic PCA: a linear-Gaussian VAE whose log p(x) is closed form -------------------
def ppca_vae(seed: int = 0, num_dims: int = 5, latent_dim: int = 2, noise: float = 0.5):
    """A VAE set to pPCA x ~ N(b, W Wᵀ + s² I), its exact encoder, data and exact log p(x).

    W has orthogonal columns, so the posterior covariance s² (WᵀW + s² I)⁻¹ is diagonal and the
    VAE's diagonal-Normal encoder can represent the exact posterior.
    """
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(num_dims, latent_dim, generator=generator,
                                           dtype=torch.float64))
    weight = basis * torch.tensor([2.0, 0.7], dtype=torch.float64)[:latent_dim]
    bias = torch.randn(num_dims, generator=generator, dtype=torch.float64)
    vae = VAE((num_dims,), latent_dim=latent_dim, hidden_features=(), likelihood="gaussian",
              observation_scale=noise).double()
    precision = weight.T @ weight + noise**2 * torch.eye(latent_dim, dtype=torch.float64)
    gain = torch.linalg.solve(precision, weight.T)  # posterior mean = gain (x - b)
    posterior_std = noise / precision.diagonal().sqrt()
    with torch.no_grad():
        vae.decoder_body[0].weight.copy_(weight)
        vae.decoder_body[0].bias.copy_(bias)
        vae.encoder_body[0].weight.zero_()
        vae.encoder_body[0].weight[:latent_dim].copy_(gain)
        vae.encoder_body[0].bias[:latent_dim].copy_(-gain @ bias)
        vae.encoder_body[0].bias[latent_dim:].copy_(posterior_std.log())
    covariance = weight @ weight.T + noise**2 * torch.eye(num_dims, dtype=torch.float64)
    x = torch.from_numpy(stats.multivariate_normal(bias.numpy(), covariance.numpy()).rvs(
        200, random_state=seed))
    exact = stats.multivariate_normal(bias.numpy(), covariance.numpy()).logpdf(x.numpy())
    return vae, x, torch.from_numpy(exact)


def test_ppca_exact_encoder_makes_elbo_and_iwae_exact():
    vae, x, exact = ppca_vae()
    assert np.allclose(np.diag(vae.decoder_body[0].weight.detach().T @ vae.decoder_body[0].weight
                               .detach()), [4.0, 0.49])
    for estimator, k in (("elbo", 1), ("elbo", 7), ("iwae", 10)):
        ll = probgen.evaluate(vae, x, estimator=estimator, k=k, seed=0)
        assert ll.kind == "lower_bound" and ll.data_space == "continuous"
        # log p(x, z) - log q(z | x) = log p(x) for every z: no Monte Carlo error at all
        torch.testing.assert_close(ll.per_example, exact, atol=1e-9, rtol=0)


def expected_bound(vae, x, k: int, repeats: int, seed: int) -> torch.Tensor:
    """E[IWAE-k] per example, averaged over ``repeats`` independent draws (one vectorized call)."""
    ll = probgen.evaluate(vae, x.repeat(repeats, 1), estimator="iwae", k=k, seed=seed)
    return ll.per_example.reshape(repeats, len(x)).mean(0)


def test_ppca_suboptimal_encoder_bounds_increase_with_k_toward_exact():
    vae, x, exact = ppca_vae(seed=1)
    x, exact = x[:100], exact[:100]
    with torch.no_grad():  # a worse encoder: shifted means, three times the posterior std
        vae.encoder_body[0].bias[:2] += 0.5
        vae.encoder_body[0].bias[2:] += math.log(3.0)
    elbo = probgen.evaluate(vae, x, estimator="elbo", k=100, seed=0).per_example
    iwae_1 = expected_bound(vae, x, 1, repeats=20, seed=1)
    # IWAE-1 is a one-sample ELBO: the same expectation as the many-sample ELBO
    diff = iwae_1 - elbo
    assert abs(float(diff.mean())) < 4 * float(diff.std() / 10)
    chain = [elbo, expected_bound(vae, x, 5, repeats=40, seed=5),
             expected_bound(vae, x, 50, repeats=16, seed=50),
             expected_bound(vae, x, 500, repeats=4, seed=500), exact]
    for lower, upper in zip(chain[:-2], chain[1:-1]):  # ELBO < IWAE-5 < IWAE-50 < IWAE-500
        gap = upper - lower  # paired per example
        assert float(gap.mean()) > 4 * float(gap.std() / 10)
    excess = chain[3] - exact  # IWAE-500 <= exact in expectation
    assert float(excess.mean()) < 3 * float(excess.std() / 10)
    exact_gap_elbo = float((exact - elbo).mean())
    exact_gap_500 = float((exact - chain[3]).mean())
    assert exact_gap_elbo > 0.5  # the encoder really is suboptimal
    assert exact_gap_500 < 0.1 * exact_gap_elbo  # converging toward exact


def test_generic_iwae_on_a_user_written_model_and_guide():
    """A hand-written factor model (no probgen classes): z ~ N(0, 1), x | z ~ N(w z, s² I)."""
    w = torch.tensor([1.5, -0.5, 0.8], dtype=torch.float64)
    s = 0.6

    def model(x):
        with pyro.plate("rows", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=torch.float64), 1.0))
            pyro.sample("x", dist.Normal(z[..., None] * w, s).to_event(1), obs=x)

    def guide(x, widen=1.0):  # exact posterior at widen=1: N(wᵀx / (wᵀw + s²), s² / (wᵀw + s²))
        precision = w @ w + s**2
        with pyro.plate("rows", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ w / precision, widen * s / precision**0.5))

    torch.manual_seed(0)
    covariance = torch.outer(w, w) + s**2 * torch.eye(3, dtype=torch.float64)
    x = dist.MultivariateNormal(torch.zeros(3, dtype=torch.float64), covariance).sample((300,))
    exact = dist.MultivariateNormal(torch.zeros(3, dtype=torch.float64), covariance).log_prob(x)
    torch.testing.assert_close(probgen.evaluate(model, x, guide=guide, estimator="iwae", k=3,
                                                seed=0).per_example, exact)

    def wide_guide(x):
        return guide(x, widen=2.5)

    elbo = probgen.evaluate(model, x, guide=wide_guide, estimator="elbo", k=200, seed=1)
    iwae = probgen.evaluate(model, x, guide=wide_guide, estimator="iwae", k=1000, seed=2)
    assert elbo.mean < iwae.mean - 4 * (iwae.per_example - elbo.per_example).std() / 300**0.5
    assert abs(iwae.mean - float(exact.mean())) < 0.02


# --- nonlinear VAEs: exact log p(x) by quadrature over a 1-D latent ---------------------------
def quadrature_log_prob(vae: VAE, x: torch.Tensor, y=None, num_points: int = 4001) -> torch.Tensor:
    """log ∫ N(z; 0, 1) p(x | z) dz on a grid over [-9, 9] (trapezoid rule)."""
    grid = torch.linspace(-9, 9, num_points, dtype=torch.float64)
    with torch.no_grad():
        likelihood = vae.decode(grid[:, None, None].expand(-1, len(x), 1),
                                None if y is None else y)
        log_joint = likelihood.log_prob(x) + dist.Normal(0.0, 1.0).log_prob(grid)[:, None]
    weights = torch.full((num_points,), grid[1] - grid[0], dtype=torch.float64)
    weights[[0, -1]] /= 2
    return torch.logsumexp(log_joint + weights.log()[:, None], 0)


def make_data(vae: VAE, n: int, generator: torch.Generator) -> torch.Tensor:
    shape = (n, *vae.data_shape)
    if vae.likelihood == "bernoulli":
        return torch.bernoulli(torch.full(shape, 0.3, dtype=torch.float64), generator=generator)
    if vae.likelihood == "gaussian":
        return torch.randn(shape, generator=generator, dtype=torch.float64)
    return torch.randint(0, vae.num_bins, shape, generator=generator).double()


CONFIGS = {
    "bernoulli-mlp": dict(data_shape=(12,)),
    "gaussian-learned-scale": dict(data_shape=(6,), likelihood="gaussian"),
    "gaussian-fixed-scale": dict(data_shape=(6,), likelihood="gaussian", observation_scale=0.7),
    "discretized-logistic": dict(data_shape=(5,), likelihood="discretized_logistic", num_bins=16),
    "bernoulli-conv": dict(data_shape=(1, 8, 8), network="conv", channels=4),
    "conditional-bernoulli": dict(data_shape=(10,), num_classes=3),
    "conditional-conv-discretized": dict(data_shape=(2, 4, 4), network="conv", channels=3,
                                         num_classes=3, likelihood="discretized_logistic",
                                         num_bins=8),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_bounds_against_quadrature_and_gradients(name):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    vae = VAE(**CONFIGS[name], latent_dim=1, hidden_features=(16,)).double()
    n = 12 if vae.network == "conv" else 40  # conv layers are slow on CPU
    x = make_data(vae, n, generator)
    y = torch.randint(0, 3, (n,), generator=generator) if vae.num_classes else None
    batch = (x,) if y is None else (x, y)
    # every parameter gets a gradient from the training loss
    loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide, *batch)
    loss.backward()
    for param_name, parameter in vae.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), param_name
    exact = quadrature_log_prob(vae, x, y)
    elbo = probgen.evaluate(vae, batch, estimator="elbo", k=100, seed=0)
    iwae = probgen.evaluate(vae, batch, estimator="iwae", k=2000, seed=0)
    assert elbo.data_space == vae.data_space and elbo.num_dims == math.prod(vae.data_shape)
    gap = iwae.per_example - elbo.per_example
    assert float(gap.mean()) > -4 * float(gap.std() / n**0.5)
    # IWAE-2000 with a 1-D latent is close to exact; it is below exact in expectation
    excess = iwae.per_example - exact
    assert float(excess.mean()) < 4 * float(excess.std() / n**0.5) + 1e-6
    assert float(excess.abs().mean()) < 0.03 and float(excess.abs().max()) < 0.15
    assert float((exact - elbo.per_example).mean()) > -1e-6


@pytest.mark.parametrize("name", list(CONFIGS))
def test_sample_encode_reconstruct_interpolate_shapes(name):
    torch.manual_seed(0)
    vae = VAE(**CONFIGS[name], latent_dim=3, hidden_features=(8,))
    x = make_data(vae, 4, torch.Generator().manual_seed(0)).float()
    y = torch.tensor([0, 1, 2, 0]) if vae.num_classes else None
    shape = vae.data_shape
    assert vae.sample(4, y).shape == (4, *shape)
    assert vae.sample(4, y, mean=True).shape == (4, *shape)
    assert vae.encode(x, y).shape == (4, 3)
    assert vae.reconstruct(x, y).shape == (4, *shape)
    assert vae.reconstruct(x, y, sample=True).shape == (4, *shape)
    path = vae.interpolate(x[:2], x[2:], num_steps=5, y=None if y is None else y[:2])
    assert path.shape == (5, 2, *shape)
    samples = vae.sample(50, None if y is None else y.repeat(13)[:50])
    vae.validate(samples)  # samples lie in the likelihood's support


def test_beta_scales_the_kl_in_training_only():
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((16, 12), 0.4))
    vae = VAE((12,), latent_dim=3, hidden_features=(8,), beta=4.0)
    losses = {}
    for mode in ("train", "eval"):
        getattr(vae, mode)()
        pyro.set_rng_seed(0)
        losses[mode] = TraceMeanField_ELBO().loss(vae.model, vae.guide, x)
    with torch.no_grad():
        kl = torch.distributions.kl_divergence(vae.posterior(x).base_dist, dist.Normal(0.0, 1.0))
    assert losses["train"] - losses["eval"] == pytest.approx(3.0 * float(kl.sum()), rel=1e-4)


def test_config_roundtrip_and_state_dict():
    vae = VAE((1, 8, 8), latent_dim=2, hidden_features=(16,), network="conv", channels=4,
              likelihood="gaussian", num_classes=2)
    config = json.loads(json.dumps(vae.config))
    copy = VAE(**config)
    copy.load_state_dict(vae.state_dict())
    x = torch.randn(3, 1, 8, 8)
    y = torch.tensor([0, 1, 1])
    torch.testing.assert_close(copy.encode(x, y), vae.encode(x, y))
    assert "log_observation_scale" in dict(vae.named_parameters())


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="likelihood"):
        VAE(likelihood="poisson")
    with pytest.raises(ValueError, match="channels, height, width"):
        VAE((784,), network="conv")
    with pytest.raises(ValueError, match="beta"):
        VAE(beta=0.0)
    vae = VAE((4,), latent_dim=2, hidden_features=(8,))
    with pytest.raises(ValueError, match="binary"):
        vae.validate(torch.full((2, 4), 0.5))
    with pytest.raises(ValueError, match="shape"):
        vae.validate(torch.zeros(2, 5))
    pixels = VAE((4,), likelihood="discretized_logistic", hidden_features=(8,))
    with pytest.raises(ValueError, match="256 bins"):
        pixels.validate(torch.full((2, 4), 300.0))
    conditional = VAE((4,), hidden_features=(8,), num_classes=3)
    with pytest.raises(ValueError, match="pass labels"):
        conditional.model(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="0..2"):
        conditional.sample(2, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="sample"):
        conditional.sample(2)


def test_fit_uses_default_loss_and_improves_the_bound():
    digits = probgen.data.load_dataset("digits").data[:300]
    x = (digits >= 8).float()
    vae = VAE((64,), latent_dim=4, hidden_features=(32,))
    before = probgen.evaluate(vae, x, estimator="elbo", k=10, seed=0)
    result = probgen.fit(vae, x, num_steps=100, batch_size=100, optim={"lr": 1e-2}, seed=0,
                         progress=False)
    after = probgen.evaluate(vae, x, estimator="elbo", k=10, seed=0)
    assert result.num_steps == 100 and not vae.training  # fit returns it in eval mode
    assert after.mean > before.mean + 10


def test_demo_entry_scores_digits_with_the_iwae_bound(tmp_path):
    from probgen.demo.registry import DemoData

    entries = demo_entries(smoke=True)
    assert [e.dataset for e in entries] == ["digits"]
    digits = probgen.data.load_dataset("digits").data
    x = (digits >= 8).float()
    data = DemoData("digits", (x[:300],), (x[300:360],), "binarized digits")
    ll = entries[0].run(data, str(tmp_path))
    assert ll.kind == "lower_bound" and ll.estimator == "iwae" and ll.data_space == "discrete"
    assert -64 * math.log(2) < ll.mean < 0


def test_model_and_guide_register_every_parameter_once_between_them():
    """The model registers the decoder side, the guide the rest: Pyro's own SVI trains them all."""
    vae = VAE((12,), latent_dim=2, hidden_features=(8,), likelihood="gaussian")
    x = torch.randn(16, 12)
    traces = [pyro.poutine.trace(half, param_only=True).get_trace(x)
              for half in (vae.model, vae.guide)]
    names = [set(trace.nodes) for trace in traces]
    expected = {f"{vae.pyro_name}$$${name}" for name, _ in vae.named_parameters()}
    assert names[0].isdisjoint(names[1]) and names[0] | names[1] == expected
    assert f"{vae.pyro_name}$$$log_observation_scale" in names[0]
    before = [p.detach().clone() for p in vae.parameters()]
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    svi.step(x)
    assert all(not torch.equal(b, p) for b, p in zip(before, vae.parameters()))


@pytest.mark.parametrize("likelihood, data_space, support", [
    ("bernoulli", "discrete", "binary"), ("gaussian", "continuous", "real"),
    ("discretized_logistic", "discrete", "count")])
def test_capabilities_follow_the_config_and_are_declared_once(likelihood, data_space, support):
    vae = VAE((6,), latent_dim=2, hidden_features=(4,), likelihood=likelihood)
    rebuilt = VAE(**vae.config)
    assert (vae.data_space, vae.support) == (rebuilt.data_space, rebuilt.support) == (
        data_space, support)
    with pytest.raises(AttributeError):
        vae.data_space = "continuous"
