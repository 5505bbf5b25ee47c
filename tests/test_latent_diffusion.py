"""Latent-diffusion VAE: its ELBO (diffusion VLB for log p(z)) against the exact log p(x) by
quadrature over a 1-D latent, labels of its estimators, end-to-end gradients, and the
``two_stage`` training method of probgen.fit (equal to two plain fits; resumable)."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

import probgen
from probgen.diffusion import (
    CosineSchedule,
    GaussianMixtureDenoiser,
    gaussian_ancestral_marginal,
    vlb,
)
from probgen.diffusion.trajectory import trajectory_log_weight
from probgen.models.latent_diffusion import (
    LatentDiffusionVAE,
    evaluate_diffusion_elbo,
    evaluate_diffusion_iwae,
)
from probgen.models.registry import get_model_class

DT = torch.float64
PATTERNS = torch.tensor([[(i >> j) & 1 for j in range(3)] for i in range(8)], dtype=DT)


def one_dim_model(prior: str, num_steps: int | None = 50) -> LatentDiffusionVAE:
    torch.manual_seed(0)
    model = LatentDiffusionVAE(features=3, latent_features=1, hidden_features=(8,),
                               denoiser_features=(8,), time_features=8, num_steps=num_steps,
                               logsnr_min=-10.0, logsnr_max=8.0, prior=prior).double()
    # The prior's denoiser is optimal for N(0, 1) latents, so the T-step prior density is the
    # closed-form Gaussian of gaussian_ancestral_marginal.
    model.denoiser = GaussianMixtureDenoiser(torch.ones(1, dtype=DT), torch.zeros(1, 1, dtype=DT),
                                             torch.eye(1, dtype=DT)[None], model.schedule)
    return model.eval()


def exact_log_marginal(model: LatentDiffusionVAE, prior: torch.distributions.Distribution):
    """log ∫ p(x|z) p(z) dz for the 8 binary patterns, by quadrature on a fine grid."""
    grid = torch.linspace(-12, 12, 8001, dtype=DT)[:, None]  # (G, 1)
    with torch.no_grad():
        logits = model.decoder(grid)  # (G, 3)
        log_lik = dist.Bernoulli(logits=logits[:, None, :]).log_prob(PATTERNS).sum(-1)  # (G, 8)
        log_joint = log_lik + prior.log_prob(grid)[:, None]
    step = float(grid[1, 0] - grid[0, 0])
    return torch.logsumexp(log_joint, 0) + math.log(step)


def test_elbo_with_the_diffusion_vlb_bounds_exact_log_px():
    model = one_dim_model("diffusion", num_steps=50)
    prior = gaussian_ancestral_marginal(torch.zeros(1, dtype=DT), torch.eye(1, dtype=DT),
                                        model.schedule, 50)
    exact = exact_log_marginal(model, prior)
    torch.manual_seed(1)
    with torch.no_grad():
        weights = model.log_weights(PATTERNS, 4000, prior_samples=4)  # (particles, 8)
    elbo, stderr = weights.mean(0), weights.std(0) / math.sqrt(weights.shape[0])
    assert (elbo <= exact + 3 * stderr).all(), (elbo - exact, stderr)
    ll = evaluate_diffusion_elbo(model, (PATTERNS,), num_particles=64, seed=0)
    assert ll.kind == "lower_bound" and ll.estimator == "diffusion_elbo"
    assert ll.data_space == "discrete" and ll.num_dims == 3


def test_trajectory_weights_are_unbiased_for_the_T_step_density():
    """E_q[w] = p_T(x) (the closed-form ancestral marginal) and E_q[log w] = VLB_T(x)."""
    torch.manual_seed(0)
    schedule = CosineSchedule().double()
    mean, cov = torch.tensor([0.5, -1.0], dtype=DT), torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=DT)
    denoiser = GaussianMixtureDenoiser(torch.ones(1, dtype=DT), mean[None], cov[None], schedule)
    x = torch.tensor([[0.3, -0.5], [2.0, 1.0], [-1.0, -2.0]], dtype=DT)
    exact = gaussian_ancestral_marginal(mean, cov, schedule, 400).log_prob(x)
    log_w = trajectory_log_weight(denoiser, schedule, x.expand(3000, 3, 2), num_steps=400)
    ratio = torch.exp(log_w - exact)  # unbiased for 1
    stderr = ratio.std(0) / math.sqrt(len(ratio))
    assert ((ratio.mean(0) - 1).abs() < 4 * stderr).all(), (ratio.mean(0), stderr)
    assert (stderr < 0.1).all()  # the check has power: a 0.3-nat bias would fail it
    bound = vlb(denoiser, schedule, x.expand(3000, 3, 2), num_steps=400)
    difference = log_w.mean(0) - bound.mean(0)
    spread = (log_w.var(0) / 3000 + bound.var(0) / 3000).sqrt()
    assert (difference.abs() < 4 * spread).all(), (difference, spread)


def test_diffusion_iwae_is_a_lower_bound_that_grows_with_k():
    """Over the extended latent (z, its trajectory): ELBO_T ~ IWAE-1 < IWAE-10 < IWAE-100 <=
    exact log p(x) of the hybrid with its T-step prior (quadrature), and IWAE-100 is close."""
    steps = 1000
    model = one_dim_model("diffusion", num_steps=steps)
    prior = gaussian_ancestral_marginal(torch.zeros(1, dtype=DT), torch.eye(1, dtype=DT),
                                        model.schedule, steps)
    exact = exact_log_marginal(model, prior)
    assert abs(float(torch.logsumexp(exact, 0))) < 1e-6  # the reference sums to one
    bounds = {}
    for k in (1, 10, 100):
        runs = torch.stack([evaluate_diffusion_iwae(model, (PATTERNS,), k=k, seed=seed
                                                    ).per_example for seed in range(6)])
        bounds[k] = (runs.mean(0), runs.std(0) / math.sqrt(len(runs)))
    result = evaluate_diffusion_iwae(model, (PATTERNS,), k=10, seed=0)
    assert result.kind == "lower_bound" and result.estimator == "diffusion_iwae"
    assert result.settings["prior_steps"] == steps
    means = [float(bounds[k][0].mean()) for k in (1, 10, 100)]
    assert means[0] < means[1] < means[2], means
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="num_steps must be a positive integer"):
            evaluate_diffusion_iwae(model, (PATTERNS,), k=2, num_steps=bad)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        evaluate_diffusion_iwae(model, (PATTERNS,), k=0)
    value, stderr = bounds[100]
    assert (value <= exact + 4 * stderr + 1e-3).all(), (value - exact, stderr)
    assert float((exact - value).mean()) < 0.1
    elbo = evaluate_diffusion_elbo(model, (PATTERNS,), num_particles=2000, seed=0)
    gap = float(elbo.per_example.mean()) - means[0]
    assert abs(gap) < 4 * float(bounds[1][1].mean()) + 0.05, gap
    assert float(elbo.per_example.mean()) < means[2]


def test_plain_prior_orders_elbo_iwae_exact():
    """With the N(0, I) prior: ELBO <= IWAE-k <= exact log p(x) (quadrature), within the IWAE
    estimate's own standard error (delta method on the importance weights)."""
    model = one_dim_model("gaussian")
    exact = exact_log_marginal(model, dist.Normal(torch.zeros(1, dtype=DT), 1.0).to_event(1))
    torch.manual_seed(1)
    k = 2000
    with torch.no_grad():
        log_weights = model.log_weights(PATTERNS, k)  # (k, 8)
    elbo = log_weights.mean(0)
    iwae = torch.logsumexp(log_weights, 0) - math.log(k)
    weights = torch.exp(log_weights - log_weights.max(0).values)
    stderr = weights.std(0) / (weights.mean(0) * math.sqrt(k))
    assert (elbo <= iwae).all()
    assert (iwae <= exact + 4 * stderr + 1e-3).all(), (iwae - exact, stderr)
    assert ((exact - iwae) < 0.05).all()  # k=2000 in 1-D is nearly exact
    labelled = evaluate_diffusion_iwae(model, (PATTERNS,), k=16, seed=0)
    assert labelled.kind == "lower_bound" and labelled.estimator == "iwae"
    assert evaluate_diffusion_elbo(model, (PATTERNS,), num_particles=16).kind == "lower_bound"


def test_end_to_end_gradients_reach_every_network():
    torch.manual_seed(2)
    model = LatentDiffusionVAE(features=6, latent_features=2, hidden_features=(16,),
                               denoiser_features=(16,))
    x = torch.bernoulli(torch.full((10, 6), 0.4))
    loss = Trace_ELBO().differentiable_loss(model.model, model.guide, x)
    loss.backward()
    for name, module in (("encoder", model.encoder), ("decoder", model.decoder),
                         ("denoiser", model.denoiser)):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name


def small_hybrid() -> LatentDiffusionVAE:
    pyro.clear_param_store()
    torch.manual_seed(3)
    return LatentDiffusionVAE(features=6, latent_features=2, hidden_features=(16,),
                              denoiser_features=(16,))


BINARY = torch.bernoulli(torch.full((40, 6), 0.4), generator=torch.Generator().manual_seed(0))


def parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def test_two_stage_method_equals_two_plain_fits(tmp_path):
    """method="two_stage" = SVI on stage "vae" for vae_steps, then SVI on stage "prior" with the
    autoencoder frozen (the second fit resuming the first's checkpoint, so the random stream
    and batch order continue): the same parameters, bit for bit."""
    vae_steps, prior_steps = 5, 4
    model = small_hybrid()
    result = probgen.fit(model, BINARY, method="two_stage", vae_steps=vae_steps,
                         num_steps=vae_steps + prior_steps, batch_size=16, seed=1, progress=False)
    assert len(result.losses) == vae_steps + prior_steps and result.method == "two_stage"
    assert model.stage == "joint" and all(p.requires_grad for p in model.parameters())

    reference = small_hybrid()
    initial = parameters(reference)
    checkpoint = tmp_path / "stages.pt"
    reference.stage = "vae"
    probgen.fit(reference, BINARY, num_steps=vae_steps, batch_size=16, seed=1, progress=False,
                checkpoint=checkpoint)
    after_vae = parameters(reference)
    reference.stage = "prior"
    reference.freeze_autoencoder(True)
    probgen.fit(reference, BINARY, num_steps=vae_steps + prior_steps, batch_size=16, seed=1,
                progress=False, checkpoint=checkpoint, resume=True)
    final = parameters(model)
    assert all(torch.equal(final[name], value) for name, value in parameters(reference).items())
    # stage one leaves the prior alone, stage two the autoencoder; each stage trains its part
    for name in final:
        part = name.split(".")[0]
        if part == "denoiser":
            assert torch.equal(after_vae[name], initial[name]), name
        else:
            assert torch.equal(final[name], after_vae[name]), name
    changed = {name.split(".")[0] for name in final if not torch.equal(final[name], initial[name])}
    assert changed == {"encoder", "decoder", "denoiser"}


@pytest.mark.parametrize("interrupt", [3, 5, 7])
@pytest.mark.parametrize("adam", ["fused", "pyro"])
def test_two_stage_resume_across_the_boundary_equals_an_uninterrupted_run(tmp_path, interrupt,
                                                                          adam):
    """Interrupted before, at or after the stage boundary (step 5), a resumed run ends where an
    uninterrupted one does: the stage and its optimizer's moments come back with the step."""
    def run(num_steps, **options):
        optim = 3e-3 if adam == "fused" else pyro.optim.ClippedAdam({"lr": 3e-3, "clip_norm": 10.0})
        return probgen.fit(model, BINARY, method="two_stage", vae_steps=5, num_steps=num_steps,
                           batch_size=16, optim=optim, seed=2, progress=False, **options)

    model = small_hybrid()
    whole = run(9)
    expected = parameters(model)
    model = small_hybrid()
    checkpoint = tmp_path / "two_stage.pt"
    run(interrupt, checkpoint=checkpoint)
    assert model.stage == "joint" and all(p.requires_grad for p in model.parameters())
    resumed = run(9, checkpoint=checkpoint, resume=True)
    assert resumed.losses == whole.losses
    assert all(torch.equal(value, expected[name]) for name, value in parameters(model).items())


def test_two_stage_needs_vae_steps_and_a_diffusion_prior():
    model = small_hybrid()
    with pytest.raises(ValueError, match="vae_steps"):
        probgen.fit(model, BINARY, method="two_stage", num_steps=2, progress=False)
    with pytest.raises(TypeError, match="prior_steps"):
        probgen.fit(model, BINARY, method="two_stage", vae_steps=1, prior_steps=1, progress=False)
    plain = LatentDiffusionVAE(features=6, latent_features=2, hidden_features=(8,),
                               denoiser_features=(8,), prior="gaussian")
    with pytest.raises(ValueError, match="prior='diffusion'"):
        probgen.fit(plain, BINARY, method="two_stage", vae_steps=1, num_steps=2, progress=False)
    assert model.stage == "joint"


def test_registry_config_samples_and_errors():
    assert get_model_class("latent_diffusion") is LatentDiffusionVAE
    model = LatentDiffusionVAE(features=5, latent_features=2, hidden_features=(8,),
                               denoiser_features=(8,))
    clone = LatentDiffusionVAE(**model.config)
    clone.load_state_dict(model.state_dict())
    assert model.sample(4, sample_steps=10).shape == (4, 5)
    assert set(model.sample(4, sample_steps=10).unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="prior"):
        LatentDiffusionVAE(features=5, prior="vamp")
    with pytest.raises(ValueError, match="binary"):
        evaluate_diffusion_elbo(model, (torch.full((2, 5), 0.5),))
    pyro.clear_param_store()


def test_gaussian_residual_prior_starts_as_the_plain_vae():
    """Untrained, the residual diffusion prior's VLB is log N(z; 0, I) to 1e-2 nats for any z."""
    torch.manual_seed(0)
    hybrid = LatentDiffusionVAE(features=20, latent_features=8, hidden_features=(16,),
                                denoiser_features=(16,))
    z = torch.randn(500, 8) * 1.7 + 0.3  # far from N(0, I), where a plain 0-network is wrong
    exact = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    with torch.no_grad():
        gap = exact - hybrid.prior().log_prob(z)
    assert gap.abs().max() < 1e-2
    plain_net = LatentDiffusionVAE(features=20, latent_features=8, hidden_features=(16,),
                                   denoiser_features=(16,), gaussian_residual=False)
    plain_net.load_state_dict(hybrid.state_dict())
    with torch.no_grad():
        assert (exact - plain_net.prior().log_prob(z)).mean() > 1.0  # ε̂ = 0 is far off


def test_demo_entry_trains_in_two_stages_and_reports_a_bound(tmp_path):
    from probgen.demo.latent_diffusion import demo_entries
    from probgen.demo.run import DATASETS

    (entry,) = demo_entries(smoke=True)
    ll = entry.run(DATASETS[entry.dataset](True), str(tmp_path))
    assert ll.kind == "lower_bound" and ll.estimator == "diffusion_elbo"
    assert -64 * math.log(2) < ll.mean < 0
