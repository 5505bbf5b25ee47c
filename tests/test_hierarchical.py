"""HierarchicalVAE: exact linear-Gaussian ground truth, L=1 == VAE, active units, warm-up/free bits."""

import math

import pyro
import pytest
import torch
from torch.distributions import MultivariateNormal

import probgen
from probgen.models.hierarchical import HierarchicalVAE, LadderELBO, precision_weighted
from probgen.models.vae import VAE

# z2 (1-d) -> z1 (2-d) -> x (3-d), all linear-Gaussian; W has orthogonal columns so the exact
# posterior q(z1 | z2, x) is a precision-weighted merge of diagonal Gaussians.
A = torch.tensor([[1.5], [-0.7]], dtype=torch.float64)
A_BIAS = torch.tensor([0.3, -0.2], dtype=torch.float64)
S1 = torch.tensor([0.8, 0.5], dtype=torch.float64)
W = torch.tensor([[1.0, 2.0], [2.0, -1.0], [0.5, 0.0]], dtype=torch.float64)
W[:, 1] -= (W[:, 0] @ W[:, 1]) / (W[:, 0] @ W[:, 0]) * W[:, 0]  # orthogonalize
B = torch.tensor([0.1, -0.4, 0.2], dtype=torch.float64)
SIGMA = 0.6


def exact_marginal() -> MultivariateNormal:
    """x ~ N(W a + b, W (A Aᵀ + S1²) Wᵀ + σ² I)."""
    cov = W @ (A @ A.T + torch.diag(S1**2)) @ W.T + SIGMA**2 * torch.eye(3, dtype=torch.float64)
    return MultivariateNormal(W @ A_BIAS + B, cov)


def linear_gaussian(top_posterior=None, exact_guide=True) -> HierarchicalVAE:
    """The hierarchy above with, when ``exact_guide``, the ladder set to the true posterior."""
    vae = HierarchicalVAE((3,), latent_dims=(2, 1), hidden_features=((), ()), likelihood="gaussian",
                          observation_scale=SIGMA, top_posterior=top_posterior).double()
    with torch.no_grad():
        down = vae.down[0][0]  # Linear(1, 4): [loc (2), log scale (2)]
        down.weight.zero_()
        down.weight[:2] = A
        down.bias.copy_(torch.cat([A_BIAS, S1.log()]))
        vae.decoder[0].weight.copy_(W)
        vae.decoder[0].bias.copy_(B)
        if exact_guide:
            norms = (W**2).sum(0)  # the likelihood in z1: N(z1_j; w_jᵀ(x - b)/|w_j|², σ²/|w_j|²)
            head1 = vae.up_heads[0]
            head1.weight.zero_()
            head1.weight[:2] = W.T / norms[:, None]
            head1.bias.copy_(torch.cat([-(W.T @ B) / norms, (SIGMA / norms.sqrt()).log()]))
        if exact_guide and top_posterior is None:  # a flow top layer keeps its random init
            cov_x = exact_marginal().covariance_matrix
            cross = (W @ A)[:, 0]  # Cov(x, z2)
            gain = torch.linalg.solve(cov_x, cross)
            head2 = vae.up_heads[1]
            head2.weight.zero_()
            head2.weight[0] = gain
            variance = 1.0 - cross @ gain
            head2.bias.copy_(torch.stack([-(gain @ (W @ A_BIAS + B)), 0.5 * variance.log()]))
    return vae


def test_precision_weighted_is_the_normalized_product():
    loc, scale = precision_weighted(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(-1.0),
                                    torch.tensor(1.0))
    grid = torch.linspace(-10, 10, 20001, dtype=torch.float64)
    density = torch.distributions.Normal(1.0, 2.0).log_prob(grid).exp() * \
        torch.distributions.Normal(-1.0, 1.0).log_prob(grid).exp()
    density = density / density.sum()
    mean = (grid * density).sum()
    assert float(loc) == pytest.approx(float(mean), abs=1e-6)
    assert float(scale) == pytest.approx(float(((grid - mean) ** 2 * density).sum().sqrt()), abs=1e-6)


def test_exact_posterior_makes_every_bound_exact():
    """With the true posterior in the ladder, log p(x,z) - log q(z|x) = log p(x) for every z."""
    vae = linear_gaussian()
    x = exact_marginal().sample((50,))
    exact = exact_marginal().log_prob(x)
    for estimator, k in (("elbo", 3), ("iwae", 7)):
        ll = probgen.evaluate(vae, x, estimator=estimator, k=k, seed=0)
        assert ll.kind == "lower_bound" and ll.data_space == "continuous"
        torch.testing.assert_close(ll.per_example, exact, atol=1e-9, rtol=0)


@pytest.mark.parametrize("top_posterior", [None, "iaf", "nsf"])
def test_iwae_is_below_exact_and_converges(top_posterior):
    """A perturbed guide: ELBO <= IWAE-10 <= IWAE-3000 <= exact, the gap closing with k."""
    vae = linear_gaussian(top_posterior)
    with torch.no_grad():
        vae.up_heads[0].bias[:2] += 0.7  # a wrong lower-layer posterior mean
        if top_posterior is None:
            vae.up_heads[1].bias[1] -= 0.5  # a too-narrow top posterior
    x = exact_marginal().sample((40,))
    exact = float(exact_marginal().log_prob(x).mean())
    elbo = probgen.evaluate(vae, x, estimator="elbo", k=200, seed=0).mean
    iwae10 = probgen.evaluate(vae, x, estimator="iwae", k=10, seed=0).mean
    iwae = probgen.evaluate(vae, x, estimator="iwae", k=3000, seed=0).mean
    assert elbo < iwae10 < iwae < exact + 1e-3
    assert exact - elbo > 0.1  # the perturbation is visible...
    assert exact - iwae < 0.1 * (exact - elbo)  # ...and IWAE-k closes most of the gap


def bottom_up_linear_gaussian() -> tuple[HierarchicalVAE, MultivariateNormal]:
    """z2 -> z1 -> x linear-Gaussian with A = (1.5, 0)ᵀ, so p(z1) is diagonal and the exact
    posterior p(z1 | x) p(z2 | z1) is a bottom-up chain of diagonal Gaussians; the guide is set
    to it. Returns the model and the exact marginal of x."""
    a = torch.tensor([[1.5], [0.0]], dtype=torch.float64)
    prior_var = (a**2)[:, 0] + S1**2  # p(z1) = N(A_BIAS, diag(prior_var))
    vae = HierarchicalVAE((3,), latent_dims=(2, 1), hidden_features=((), ()),
                          likelihood="gaussian", observation_scale=SIGMA,
                          inference="bottom_up").double()
    post_var = 1.0 / (1.0 / prior_var + (W**2).sum(0) / SIGMA**2)  # p(z1 | x): diagonal
    gain = a[:, 0] / prior_var  # p(z2 | z1) = N(gain·(z1 - A_BIAS), 1 - a·gain)
    with torch.no_grad():
        down = vae.down[0][0]
        down.weight.zero_()
        down.weight[:2] = a
        down.bias.copy_(torch.cat([A_BIAS, S1.log()]))
        vae.decoder[0].weight.copy_(W)
        vae.decoder[0].bias.copy_(B)
        head1, head2 = vae.up_heads
        head1.weight.zero_()
        head1.weight[:2] = post_var[:, None] * W.T / SIGMA**2
        head1.bias.copy_(torch.cat([post_var * (A_BIAS / prior_var - W.T @ B / SIGMA**2),
                                    0.5 * post_var.log()]))
        head2.weight.zero_()
        head2.weight[0] = gain
        head2.bias.copy_(torch.stack([-(gain @ A_BIAS), 0.5 * (1 - a[:, 0] @ gain).log()]))
    cov = W @ (a @ a.T + torch.diag(S1**2)) @ W.T + SIGMA**2 * torch.eye(3, dtype=torch.float64)
    return vae, MultivariateNormal(W @ A_BIAS + B, cov)


def test_bottom_up_inference_with_the_exact_posterior_makes_every_bound_exact():
    vae, marginal = bottom_up_linear_gaussian()
    x = marginal.sample((50,))
    for estimator, k in (("elbo", 3), ("iwae", 7)):
        ll = probgen.evaluate(vae, x, estimator=estimator, k=k, seed=0)
        torch.testing.assert_close(ll.per_example, marginal.log_prob(x), atol=1e-9, rtol=0)
    with torch.no_grad():
        vae.up_heads[1].bias[0] += 0.6  # a wrong q(z2 | z1): ELBO < IWAE-10 < IWAE-2000 <= exact
    exact = float(marginal.log_prob(x).mean())
    elbo = probgen.evaluate(vae, x, estimator="elbo", k=100, seed=0).mean
    iwae10 = probgen.evaluate(vae, x, estimator="iwae", k=10, seed=0).mean
    iwae = probgen.evaluate(vae, x, estimator="iwae", k=2000, seed=0).mean
    assert elbo < iwae10 < iwae < exact + 1e-3 and exact - elbo > 0.1


def test_bottom_up_q_z2_sees_z1_only():
    vae, marginal = bottom_up_linear_gaussian()
    x = marginal.sample((4,))
    z1 = torch.randn(4, 2, dtype=torch.float64)
    sites = []
    for data in (x, x + 5.0):
        trace = pyro.poutine.trace(pyro.poutine.condition(vae.guide, {"z1": z1})).get_trace(data)
        sites.append(trace.nodes["z2"]["fn"].base_dist)
    torch.testing.assert_close(sites[0].loc, sites[1].loc)  # x moved, z1 held: q(z2) unmoved
    torch.testing.assert_close(sites[0].scale, sites[1].scale)


def test_bottom_up_posterior_means_and_active_units_match_the_closed_form():
    vae, marginal = bottom_up_linear_gaussian()
    x = marginal.sample((400,))
    head1, head2 = (head.requires_grad_(False) for head in vae.up_heads)
    mean1 = x @ head1.weight[:2].T + head1.bias[:2]  # E[z1 | x] = M x + c
    post_var1 = (2 * head1.bias[2:]).exp()
    gain = head2.weight[0]
    mean2 = mean1 @ gain + head2.bias[0]  # E[z2 | x] = g·E[z1 | x] + h
    (m1, noise1), (m2, noise2) = vae.posterior_means(x, num_samples=200)
    torch.testing.assert_close(m1, mean1.detach())
    assert float(noise1.abs().max()) == 0.0
    error_sd = float((gain**2 @ post_var1 / 200).sqrt())  # the Monte Carlo error of m2
    assert float((m2[:, 0] - mean2).abs().max()) < 5 * error_sd
    assert float(noise2.mean()) == pytest.approx(error_sd**2, rel=0.3)
    cov_x = marginal.covariance_matrix
    spread = [torch.diagonal(head1.weight[:2] @ cov_x @ head1.weight[:2].T),  # Var_x E[z_l | x]
              (gain @ head1.weight[:2] @ cov_x @ head1.weight[:2].T @ gain)[None]]
    for threshold in (1e-2, 0.5, 1.0):  # the spreads are 2.82, 0.19 (z1) and 0.76 (z2)
        expected = [int((v > threshold).sum()) for v in spread]
        assert vae.active_units(x, threshold, num_samples=200) == expected, threshold


def test_single_layer_equals_the_plain_vae():
    """L=1 with the VAE's weights gives the same ELBO/IWAE values and training loss."""
    torch.manual_seed(0)
    vae = VAE((12,), latent_dim=3, hidden_features=(16, 8), activation="tanh").double()
    ladder = HierarchicalVAE((12,), latent_dims=(3,), hidden_features=((16, 8),),
                             activation="tanh").double()
    linears = [m for m in vae.encoder_body if isinstance(m, torch.nn.Linear)]
    targets = [ladder.up_bodies[0][0], ladder.up_bodies[0][2], ladder.up_heads[0]]
    with torch.no_grad():
        for source, target in zip(linears, targets, strict=True):
            target.weight.copy_(source.weight)
            target.bias.copy_(source.bias)
    ladder.decoder.load_state_dict(vae.decoder_body.state_dict())
    x = torch.bernoulli(torch.full((30, 12), 0.4, dtype=torch.float64))
    for estimator, k in (("elbo", 1), ("iwae", 50)):
        expected = probgen.evaluate(vae, x, estimator=estimator, k=k, seed=3).per_example
        got = probgen.evaluate(ladder, x, estimator=estimator, k=k, seed=3).per_example
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)
    pyro.set_rng_seed(5)
    expected_loss = vae.default_loss().loss(vae.model, vae.guide, x)  # analytic-KL ELBO
    pyro.set_rng_seed(5)
    assert ladder.default_loss().loss(ladder.model, ladder.guide, x) == pytest.approx(expected_loss,
                                                                                       abs=1e-9)


def test_active_units_on_a_constructed_encoder():
    """Encoder means that ignore x in known dimensions: those units are inactive."""
    torch.manual_seed(0)
    vae = HierarchicalVAE((6,), latent_dims=(4, 3), hidden_features=((), ()),
                          likelihood="gaussian").double()
    with torch.no_grad():
        head1, head2 = vae.up_heads
        head1.weight.normal_(0.0, 1.0)
        head1.weight[[1, 3]] = 0.0  # z1 dims 1 and 3: mean ignores x
        head1.bias[4:] = -8.0  # sharp bottom-up terms: the merged mean follows them
        head1.weight[4:] = 0.0
        head2.weight.normal_(0.0, 1.0)
        head2.weight[[0, 2]] = 0.0  # z2 dims 0 and 2: mean ignores x
        head2.weight[3:] = 0.0
        vae.down[0][0].weight[4:] = 0.0  # top-down scales exp(0) = 1 >> bottom-up exp(-8)
        vae.down[0][0].bias[4:] = 0.0
    x = torch.randn(500, 6, dtype=torch.float64)
    assert vae.active_units(x) == [2, 1]
    assert vae.active_units(x, threshold=1e6) == [0, 0]
    with pytest.raises(ValueError, match="at least 2 examples"):
        vae.active_units(x[:1])


def test_active_units_are_not_fooled_by_monte_carlo_noise():
    """A flow top layer that ignores x (all-zero flow weights: q = N(0, I)) has no active unit,
    although the variance over x of a 50-draw mean estimate is 1/50 > the 0.01 threshold."""
    vae = HierarchicalVAE((6,), latent_dims=(4, 3), hidden_features=((8,), (8,)),
                          likelihood="gaussian", top_posterior="iaf", flow_hidden=(8,)).double()
    with torch.no_grad():
        for parameter in vae.top_flow.parameters():
            parameter.zero_()
    x = torch.randn(500, 6, dtype=torch.float64)
    (_, _), (top_mean, top_noise) = vae.posterior_means(x, num_samples=50)
    assert float(top_mean.var(0).min()) > 0.01  # the raw estimate would count every unit
    torch.testing.assert_close(top_noise.mean(0), torch.full((3,), 1 / 50, dtype=torch.float64),
                               atol=3e-3, rtol=0)
    assert vae.active_units(x, num_samples=50)[1] == 0


def test_warmup_weights_the_kl_and_eval_reports_the_true_bound():
    """loss(β) = -E log p(x|z) + β KL with the same draws: recover KL and check the β=1 loss."""
    vae = HierarchicalVAE((8,), latent_dims=(3, 2), hidden_features=((16,), (8,)),
                          warmup_steps=4).double()
    x = torch.bernoulli(torch.full((20, 8), 0.3, dtype=torch.float64))
    loss = LadderELBO(vae)

    def value(seed):
        pyro.set_rng_seed(seed)
        return loss.loss(vae.model, vae.guide, x)

    vae.train()
    assert vae.kl_weight() == 0.25
    quarter = value(0)
    loss.loss_and_grads(vae.model, vae.guide, x)  # one step: training_steps 0 -> 1
    assert int(vae.training_steps) == 1 and vae.kl_weight() == 0.5
    half = value(0)
    kl = 4.0 * (half - quarter)
    assert kl > 0
    vae.eval()
    assert vae.kl_weight() == 1.0
    assert value(0) == pytest.approx(half + 0.5 * kl, rel=1e-10)
    vae.train()
    vae.training_steps.fill_(10)
    assert value(0) == pytest.approx(value(0), rel=0) == pytest.approx(half + 0.5 * kl, rel=1e-10)


def test_free_bits_floor_each_layer_in_training_only():
    """λ = 100 nats/dim floors every layer: loss = -log p(x|z) + λ · (3 + 2) dims · 20 examples."""
    vae = HierarchicalVAE((8,), latent_dims=(3, 2), hidden_features=((16,), (8,)),
                          free_bits=100.0).double()
    x = torch.bernoulli(torch.full((20, 8), 0.3, dtype=torch.float64))
    loss = LadderELBO(vae)
    pyro.set_rng_seed(0)
    floored = loss.loss(vae.model, vae.guide, x)  # a new module is in training mode
    pyro.set_rng_seed(0)
    guide_trace = pyro.poutine.trace(vae.guide).get_trace(x)
    model_trace = pyro.poutine.trace(pyro.poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    log_likelihood = model_trace.nodes["x"]["fn"].log_prob(x).sum().item()
    assert floored == pytest.approx(-log_likelihood + 100.0 * 5 * 20, rel=1e-12)
    vae.eval()  # evaluation: the true negative ELBO, far below the floored loss
    pyro.set_rng_seed(0)
    true_loss = loss.loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(0)
    assert true_loss == pytest.approx(pyro.infer.TraceMeanField_ELBO().loss(
        vae.model, vae.guide, x), rel=1e-12)
    assert -log_likelihood < true_loss < floored - 1000


def test_fit_then_evaluate_conv_discretized():
    """The conv + discretized-logistic variant trains and is scored through the generic path."""
    vae = HierarchicalVAE((1, 8, 8), latent_dims=(4, 2), hidden_features=((16,), (8,)),
                          network="conv", likelihood="discretized_logistic", num_bins=16,
                          channels=4, warmup_steps=5)
    x = torch.randint(0, 16, (24, 1, 8, 8)).float()
    result = probgen.fit(vae, x, num_steps=6, batch_size=12, optim=1e-3, seed=0, progress=False)
    assert int(vae.training_steps) == 6 and len(result.losses) == 6
    elbo = probgen.evaluate(vae, x, estimator="elbo", k=20, seed=0)
    iwae = probgen.evaluate(vae, x, estimator="iwae", k=20, seed=0)
    assert elbo.data_space == "discrete" and iwae.num_dims == 64
    assert elbo.mean < iwae.mean < 0
    assert vae.sample(3).shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="bins"):
        probgen.evaluate(vae, x * 20, estimator="elbo")


@pytest.mark.parametrize("inference, normalization",
                         [("ladder", None), ("bottom_up", None), ("ladder", "layer")])
def test_save_load_round_trip(tmp_path, inference, normalization):
    vae = HierarchicalVAE((8,), latent_dims=(3, 2), hidden_features=((16,), (8,)),
                          top_posterior="iaf", flow_hidden=(8,), warmup_steps=3,
                          inference=inference, normalization=normalization)
    x = torch.bernoulli(torch.full((10, 8), 0.3))
    probgen.fit(vae, x, num_steps=2, progress=False, seed=0)
    probgen.save(vae, tmp_path / "ladder")
    loaded = probgen.load(tmp_path / "ladder")
    assert type(loaded) is HierarchicalVAE and int(loaded.training_steps) == 2
    assert loaded.inference == inference and loaded.normalization == normalization
    a = probgen.evaluate(vae, x, estimator="iwae", k=5, seed=1).per_example
    b = probgen.evaluate(loaded, x, estimator="iwae", k=5, seed=1).per_example
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kwargs, match", [
    ({"latent_dims": ()}, "latent_dims"),
    ({"latent_dims": (4, 2), "hidden_features": ((8,),)}, "one entry per stochastic layer"),
    ({"likelihood": "poisson"}, "likelihood"),
    ({"top_posterior": "maf"}, "top_posterior"),
    ({"inference": "top_down"}, "inference must be one of"),
    ({"network": "conv"}, "conv"),
    ({"free_bits": -1.0}, "free_bits"),
    ({"normalization": "batch"}, "normalization must be one of"),
])
def test_bad_arguments_name_the_problem(kwargs, match):
    options = {"latent_dims": (4,), "hidden_features": ((8,),), **kwargs}
    with pytest.raises(ValueError, match=match):
        HierarchicalVAE((8,), **options)


def test_registered_and_demo_entry_runs(tmp_path):
    from probgen.demo.hierarchical import demo_entries
    from probgen.demo.run import DATASETS
    from probgen.models.registry import get_model_class

    assert get_model_class("hierarchical_vae") is HierarchicalVAE
    (entry,) = demo_entries(smoke=True)
    data = DATASETS[entry.dataset](True)
    ll = entry.run(data, str(tmp_path))
    assert ll.kind == "lower_bound" and ll.estimator == "iwae"
    assert -64 * math.log(2) < ll.mean < 0


def test_capabilities_follow_the_config():
    for likelihood, expected in (("bernoulli", ("discrete", "binary")),
                                 ("gaussian", ("continuous", "real")),
                                 ("discretized_logistic", ("discrete", "count"))):
        vae = HierarchicalVAE((6,), latent_dims=(2,), hidden_features=((4,),),
                              likelihood=likelihood)
        assert (vae.data_space, vae.support) == expected
    with pytest.raises(AttributeError):
        vae.support = "real"


def test_warmup_with_held_priors_leaves_the_mean_image_plateau(monkeypatch):
    """Burda et al.'s two-layer tanh VAE (bottom-up inference) on the bundled binary digits,
    800 steps of a 100-epoch warm-up: a learnable p(z1 | z2) absorbs q(z1 | x) and the model stays
    on the mean-image plateau (-ELBO ≈ 24.6, no active unit); held while β < 1 it leaves it
    (20.8–22.0 nats and 2–4 active z1 units over seeds 0–3)."""
    from probgen.data import load_dataset
    from probgen.models import hierarchical

    x = (load_dataset("digits").data >= 8).float()
    train, validation = x[:1500], x[1500:]

    def trained() -> tuple[float, list[int]]:
        torch.manual_seed(0)
        vae = HierarchicalVAE((64,), latent_dims=(16, 8), hidden_features=((32, 32), (16, 16)),
                              activation="tanh", inference="bottom_up")
        result = probgen.fit(vae, train, num_steps=800, batch_size=100, optim=3e-3, seed=0,
                             kl_warmup_epochs=100, progress=False, validation=validation,
                             validate_every=800)
        return result.validation[-1][1], vae.eval().active_units(validation, num_samples=20)

    held, held_units = trained()
    top_down = hierarchical._top_down
    monkeypatch.setattr(hierarchical, "_top_down",
                        lambda vae, layer, z, hold: top_down(vae, layer, z, False))
    unheld, unheld_units = trained()
    assert unheld > 24.3 and unheld_units == [0, 0]  # the plateau
    assert held < unheld - 1.5 and held_units[0] >= 1


def test_layer_normalization_before_every_hidden_activation():
    """normalization="layer": a LayerNorm after each hidden Linear of the bottom-up bodies, the
    top-down priors and the decoder (none after an output layer); each example normalized
    alone, so a batch gives each row's single-example values."""
    vae = HierarchicalVAE((8,), latent_dims=(3, 2), hidden_features=((16, 12), (8,)),
                          normalization="layer", activation="tanh")
    plain = HierarchicalVAE((8,), latent_dims=(3, 2), hidden_features=((16, 12), (8,)),
                            activation="tanh")
    for normed, bare in ((vae.up_bodies, plain.up_bodies), (vae.down, plain.down),
                         (vae.decoder, plain.decoder)):
        hidden = [m for m in bare.modules() if isinstance(m, torch.nn.Tanh)]
        norms = [m for m in normed.modules() if isinstance(m, torch.nn.LayerNorm)]
        assert len(norms) == len(hidden) > 0
    layers = list(vae.decoder)
    for index, layer in enumerate(layers):
        if isinstance(layer, torch.nn.LayerNorm):
            assert isinstance(layers[index - 1], torch.nn.Linear)
            assert isinstance(layers[index + 1], torch.nn.Tanh)
    x = torch.bernoulli(torch.full((5, 8), 0.4))
    batch = vae.bottom_up(x)
    for row in range(5):
        for layer, features in enumerate(vae.bottom_up(x[row:row + 1])):
            torch.testing.assert_close(features[0], batch[layer][row])
    assert "normalization" not in HierarchicalVAE((8,), latent_dims=(2,),
                                                  hidden_features=((4,),)).config
