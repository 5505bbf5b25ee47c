"""VQ-VAE: the one-hot bound against log p(x) summed over every code grid, and the two stages."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

import probgen
from probgen.models.vqvae import VQVAE, neighbour_codes
from probgen.nn.quantize import Codebook

SHARPNESS = 40.0  # decoder logits ±40: p(x | z) < e^-40 unless x is z's pattern


def all_grids(vq: VQVAE) -> torch.Tensor:
    """Every code grid, ``(K^P, P)``."""
    return torch.tensor(list(itertools.product(range(vq.num_codes), repeat=vq.num_positions)))


def exact_log_prob(vq: VQVAE, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log Σ_z p(x | z) p(z), summed over all K^P grids."""
    grids = all_grids(vq)[:, None].expand(-1, len(x), -1)  # (K^P, n, P)
    with torch.no_grad():
        return torch.logsumexp(vq.joint_log_prob(x, grids), 0)


def tiny_vq(prior: str = "categorical", **options) -> VQVAE:
    """2 positions × 3 codes (9 grids) over 4 bits, linear networks, float64."""
    torch.manual_seed(0)
    vq = VQVAE((4,), num_codes=3, code_dim=2, num_positions=2, hidden_features=(),
               prior=prior, **options).double()
    return vq.eval()


def sharp_vq(prior: str = "categorical", **options) -> VQVAE:
    """A VQ-VAE whose posterior is a point mass: code k of a position is the 2-bit pattern
    (00, 01, 10)[k], its vector 2·bits - 1; the decoder's logits are ±40 times the vectors and
    the encoder maps a pattern to its own vector, so z_q(x) is the one code grid that explains x."""
    vq = tiny_vq(prior, **options)
    bits = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    encoder, decoder = (next(m for m in net.modules() if isinstance(m, nn.Linear))
                        for net in (vq.encoder, vq.decoder))
    with torch.no_grad():
        vq.codebook.codes.copy_(2 * bits - 1)
        encoder.weight.copy_(2 * torch.eye(4)), encoder.bias.fill_(-1)
        decoder.weight.copy_(SHARPNESS * torch.eye(4)), decoder.bias.zero_()
    return vq


def patterns(grids: torch.Tensor) -> torch.Tensor:
    """The 4-bit data whose code grid is ``grids`` ``(n, 2)`` under :func:`sharp_vq`."""
    bits = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    return bits[grids].reshape(len(grids), 4)


def every_input() -> torch.Tensor:
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=4)), dtype=torch.float64)


def test_the_bound_is_below_log_p_x_summed_over_every_code_grid():
    vq = tiny_vq()
    with torch.no_grad():
        vq.prior.logits.copy_(torch.randn(2, 3, dtype=torch.float64))
    x = every_input()
    exact = exact_log_prob(vq, x)
    assert abs(float(torch.logsumexp(exact, 0))) < 1e-10  # p(x) sums to one over the 16 inputs
    bound = probgen.evaluate(vq, x)
    assert bound.kind == "lower_bound" and bound.estimator == "vq_bound"
    assert bound.settings["posterior"] == "deterministic one-hot"
    assert (bound.per_example <= exact + 1e-12).all()
    assert float((exact - bound.per_example).max()) > 1e-3  # a blurry decoder: strictly below
    # the one-hot bound is the ELBO of the program with its own guide (entropy 0)
    elbo = probgen.evaluate(vq, x, estimator="elbo", seed=0)
    assert torch.allclose(elbo.per_example, bound.per_example, atol=1e-10)
    # summing p(x, z) over z_q(x) and its neighbours: between the two
    summed = probgen.evaluate(vq, x, estimator="code_sum", num_alternatives=2)
    assert (summed.per_example >= bound.per_example - 1e-12).all()
    assert (summed.per_example <= exact + 1e-12).all()
    assert summed.settings["codes_summed"] == 5


def test_the_bound_equals_log_p_x_when_the_posterior_is_a_point_mass():
    vq = sharp_vq()
    with torch.no_grad():
        vq.prior.logits.copy_(torch.randn(2, 3, dtype=torch.float64))
    grids = all_grids(vq)
    x = patterns(grids)
    assert torch.equal(vq.codes(x), grids)
    bound = probgen.evaluate(vq, x).per_example
    exact = exact_log_prob(vq, x)
    assert torch.allclose(bound, exact, atol=1e-12, rtol=0)
    assert torch.allclose(bound, vq.prior_log_prob(grids), atol=1e-12)  # p(x | z_q) = 1


def test_the_bound_tightens_as_the_prior_improves_from_categorical_to_made():
    """Codes with z_1 = z_2: independent positions give each pair 1/9, a MADE learns 1/3."""
    grids = torch.arange(3).repeat(40)[:, None].expand(-1, 2)
    x = patterns(grids)
    bounds = {}
    for prior, options in (("categorical", {}), ("made", {"prior_options": {"hidden_features": [16]}})):
        vq = sharp_vq(prior, **options)
        probgen.fit(vq, x, method="prior", num_steps=300, optim=0.05, seed=0, progress=False)
        bound = probgen.evaluate(vq, x)
        assert torch.allclose(bound.per_example, exact_log_prob(vq, x), atol=1e-9)
        bounds[prior] = bound.mean
    assert bounds["categorical"] == pytest.approx(-2 * torch.log(torch.tensor(3.0)).item(), abs=0.02)
    assert bounds["made"] > bounds["categorical"] + 0.9  # log 3 = 1.10 nats better
    assert bounds["made"] == pytest.approx(-torch.log(torch.tensor(3.0)).item(), abs=0.1)


def test_neighbour_grids_are_distinct_and_hold_the_nearest():
    vq = tiny_vq()
    x = every_input()
    grids = neighbour_codes(vq, x, 2)  # (1 + 2·2, n, 2)
    assert grids.shape == (5, 16, 2)
    assert torch.equal(grids[0], vq.codes(x))
    for column in grids.permute(1, 0, 2):
        assert len({tuple(row) for row in column.tolist()}) == 5


def test_ema_moves_codes_to_cluster_means_and_restarts_dead_codes():
    torch.manual_seed(0)
    codebook = Codebook(3, 2, decay=0.0, restart_threshold=0.5)
    codebook.codes.copy_(torch.tensor([[0.0, 0.0], [5.0, 5.0], [100.0, 100.0]]))
    vectors = torch.cat([torch.randn(50, 2) * 0.1, 5 + torch.randn(50, 2) * 0.1])
    indices = codebook.nearest(vectors)
    codebook.update(vectors, indices)
    assert torch.allclose(codebook.codes[0], vectors[:50].mean(0), atol=1e-4)
    assert torch.allclose(codebook.codes[1], vectors[50:].mean(0), atol=1e-4)
    # code 2 had no vector: restarted at one of the batch's vectors
    assert (codebook.codes[2] == vectors).all(-1).any()


@pytest.mark.parametrize("update", ["ema", "straight_through"])
def test_stage_one_trains_the_autoencoder_and_stage_two_only_the_prior(update):
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((64, 12), 0.3))
    vq = VQVAE((12,), num_codes=8, code_dim=3, num_positions=3, hidden_features=(16,),
               codebook_update=update, prior="made", prior_options={"hidden_features": [16]})
    prior_before = copy.deepcopy(vq.prior.state_dict())
    before = probgen.evaluate(vq, x).mean
    result = probgen.fit(vq, x, num_steps=150, optim=0.01, batch_size=32, seed=0, progress=False)
    assert result.method == "autoencoder"
    assert all(torch.equal(v, vq.prior.state_dict()[k]) for k, v in prior_before.items())
    assert probgen.evaluate(vq, x).mean > before
    assert vq.codebook_perplexity(x) > 2
    autoencoder = {k: v.clone() for k, v in vq.state_dict().items() if not k.startswith("prior.")}
    stage_one = probgen.evaluate(vq, x).mean
    result = probgen.fit(vq, x, method="prior", num_steps=100, optim=0.01, seed=0,
                         validation=x, validate_every=25, progress=False)
    assert all(torch.equal(v, vq.state_dict()[k]) for k, v in autoencoder.items())
    bound = probgen.evaluate(vq, x).mean
    assert bound > stage_one
    # stage two validates on the bound evaluate reports, and keeps its best step
    assert min(value for _, value in result.validation) == pytest.approx(-bound, abs=1e-3)
    assert all(p.requires_grad for p in vq.parameters()) and vq.stage == "joint"


def test_a_conv_vqvae_with_a_pixelcnn_prior_saves_and_reloads(tmp_path):
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((16, 1, 8, 8), 0.3))
    vq = VQVAE((1, 8, 8), network="conv", num_codes=5, code_dim=3, channels=4,
               prior="pixelcnn", prior_options={"channels": 4, "layers": 2, "head_channels": 8})
    probgen.fit(vq, x, num_steps=3, seed=0, progress=False)
    probgen.fit(vq, x, method="prior", num_steps=3, seed=0, progress=False)
    assert vq.codes(x).shape == (16, 4) and vq.sample(2).shape == (2, 1, 8, 8)
    probgen.save(vq, tmp_path / "vq.pt")
    loaded = probgen.load(tmp_path / "vq.pt")
    assert torch.equal(probgen.evaluate(loaded, x).per_example, probgen.evaluate(vq, x).per_example)


def test_discretized_logistic_likelihood_and_refusals():
    x = torch.randint(0, 16, (8, 6))
    vq = VQVAE((6,), num_codes=4, code_dim=2, num_positions=2, hidden_features=(8,),
               likelihood="discretized_logistic", num_bins=16)
    probgen.fit(vq, x, num_steps=2, seed=0, progress=False)
    assert probgen.evaluate(vq, x).per_example.isfinite().all()
    with pytest.raises(ValueError, match="bins"):
        probgen.evaluate(vq, x + 16)
    with pytest.raises(ValueError, match="exact"):
        VQVAE((6,), prior="vae")
    with pytest.raises(ValueError, match="2-D code grid"):
        VQVAE((6,), prior="pixelcnn")


def test_the_demo_entry_runs_in_smoke_mode():
    from probgen.demo.registry import DemoData
    from probgen.demo.vqvae import demo_entries

    x = torch.bernoulli(torch.full((144, 64), 0.3), generator=torch.Generator().manual_seed(0))
    (entry,) = demo_entries(smoke=True)
    ll = entry.run(DemoData("digits", (x[:128],), (x[128:],), "random bits"), "")
    assert ll.kind == "lower_bound" and ll.num_examples == 16 and ll.settings["prior"] == "made"


def test_joint_svi_trains_every_part_and_scores_the_same_bound():
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((64, 12), 0.3))
    vq = VQVAE((12,), num_codes=8, code_dim=3, num_positions=3, hidden_features=(16,),
               codebook_update="straight_through")
    before = {k: v.clone() for k, v in vq.named_parameters()}
    result = probgen.fit(vq, x, method="svi", num_steps=20, optim=0.01, seed=0, progress=False)
    assert all(not torch.equal(before[k], v) for k, v in vq.named_parameters())
    assert all(torch.isfinite(torch.tensor(result.losses)))
    elbo = probgen.evaluate(vq, x, estimator="elbo", seed=0)
    assert torch.allclose(elbo.per_example, probgen.evaluate(vq, x).per_example, atol=1e-5)
