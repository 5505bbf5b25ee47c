"""The VAE's plain-torch training path against Pyro's ELBOs on the same noise: values, gradients,
whole fits (KL warm-up and free bits too, compiled or not); and the configurations that must
keep the generic path."""

import copy
import os

import pyro
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

import probgen
from probgen.infer.method import TrainingSetup
from probgen.infer.svi import SVI
from probgen.models.flow_vae import FlowVAE
from probgen.models.vae import VAE, VAESVI

CONFIGS = {
    "bernoulli": dict(hidden_features=(16, 16), activation="tanh"),
    "gaussian": dict(hidden_features=(16,), likelihood="gaussian"),
    "discretized": dict(hidden_features=(16,), likelihood="discretized_logistic", num_bins=8),
    "conditional": dict(hidden_features=(16,), num_classes=3),
    "beta": dict(hidden_features=(16,), beta=2.5),
    "conv": dict(hidden_features=(16,), network="conv", channels=4),
}
LOSSES = {  # (loss, num_particles)
    "mean_field": (None, 1),
    "mean_field_particles": ("mean_field", 3),
    "trace": ("trace", 1),
    "trace_particles": ("trace", 4),
    "iwae": ("iwae", 5),
}


def make(name: str, seed: int = 0):
    """A float64 VAE of config ``name`` and a batch for it (with labels when conditional)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (1, 4, 4) if name == "conv" else (6,)
    torch.manual_seed(seed)
    vae = VAE(shape, latent_dim=3, **CONFIGS[name]).double()
    x = torch.rand(10, *shape, generator=generator, dtype=torch.float64)
    if vae.likelihood == "bernoulli":
        x = torch.bernoulli(x, generator=generator)
    elif vae.likelihood == "discretized_logistic":
        x = (x * 7).round()
    batch = (x,) if vae.num_classes is None else (x, torch.randint(3, (10,), generator=generator))
    return vae, batch


def method(cls, vae, batch, loss=None, num_particles=1, **setup):
    return cls(TrainingSetup(vae, vae.model, setup.pop("guide", None), batch, 40, len(batch[0]),
                             loss=loss, num_particles=num_particles, **setup))


def gradients(vae) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in vae.parameters()]
    vae.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("name", list(CONFIGS))
def test_lean_objective_equals_pyros_elbo_on_the_same_noise(name, loss_name):
    vae, batch = make(name)
    loss, num_particles = LOSSES[loss_name]
    generic = method(SVI, vae, batch, loss, num_particles)
    lean = method(VAESVI, vae, batch, loss, num_particles)
    assert lean.objective is not None
    for seed in (1, 2):
        pyro.set_rng_seed(seed)
        expected = generic.elbo.loss_and_grads(vae.model, vae.guide, *batch)
        expected_grads = gradients(vae)
        pyro.set_rng_seed(seed)
        value = -lean.objective(*batch)
        value.backward()
        torch.testing.assert_close(value.item(), float(expected), rtol=1e-10, atol=1e-10)
        for got, want in zip(gradients(vae), expected_grads):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    vae.eval()  # validation: the true bound (beta = 1), IWAE in the generic path's chunks
    pyro.set_rng_seed(3)
    expected = generic.validation_loss(batch)
    pyro.set_rng_seed(3)
    torch.testing.assert_close(lean.validation_loss(batch), expected, rtol=1e-10, atol=0)


def test_lean_iwae_equals_the_generic_iwae_objective_in_chunks():
    vae, (x,) = make("bernoulli")
    x = x.repeat(3, 1)  # 30 examples, validated in chunks of 7
    generic = method(SVI, vae, (x,), "iwae", 6)
    lean = method(VAESVI, vae, (x,), "iwae", 6)
    generic.elbo.chunk = lean.elbo.chunk = 7
    vae.eval()
    pyro.set_rng_seed(0)
    expected = generic.validation_loss((x,))
    pyro.set_rng_seed(0)
    torch.testing.assert_close(lean.validation_loss((x,)), expected, rtol=1e-10, atol=0)


@pytest.mark.parametrize("options", [
    dict(), dict(loss="iwae", num_particles=4), dict(ema_decay=0.9, lr_schedule="cosine"),
])
def test_a_lean_fit_retraces_the_generic_fit(options):
    """Same seed, same steps: the same losses, validation and parameters (float64)."""
    vae, (x,) = make("bernoulli")
    x = torch.rand(60, 6, dtype=torch.float64)  # intensities, binarized by the transform
    generic_vae = copy.deepcopy(vae)
    settings = dict(num_steps=12, batch_size=20, optim=0.02, seed=4, progress=False,
                    transform=torch.bernoulli, validation=torch.bernoulli(x[:15]),
                    validate_every=4, **options)
    lean = probgen.fit(vae, x, **settings)
    pyro.clear_param_store()
    generic = probgen.fit(generic_vae, x, method=SVI, **settings)
    torch.testing.assert_close(lean.losses, generic.losses, rtol=1e-9, atol=0)
    assert [s for s, _ in lean.validation] == [s for s, _ in generic.validation]
    torch.testing.assert_close([v for _, v in lean.validation],
                               [v for _, v in generic.validation], rtol=1e-9, atol=0)
    for got, want in zip(vae.parameters(), generic_vae.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


def test_the_lean_path_is_the_vaes_default_and_resumes_a_generic_checkpoint(tmp_path):
    assert VAE.methods()["svi"] is VAESVI
    vae, (x,) = make("bernoulli")
    reference = copy.deepcopy(vae)
    path = tmp_path / "fit.pt"
    settings = dict(batch_size=5, optim=0.02, seed=1, progress=False)
    probgen.fit(reference, x, num_steps=8, **settings)
    pyro.clear_param_store()
    probgen.fit(vae, x, num_steps=4, method=SVI, checkpoint=path, **settings)  # Pyro's path
    resumed = probgen.fit(vae, x, num_steps=8, checkpoint=path, resume=True, **settings)
    assert resumed.num_steps == 8
    for got, want in zip(vae.parameters(), reference.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


def guide(x):
    pass


@pytest.mark.parametrize("case", ["user_guide", "elbo_object", "flow_posterior",
                                  "replaced_posterior"])
def test_what_the_closed_form_does_not_cover_keeps_the_generic_path(case):
    vae, batch = make("bernoulli")
    options = {}
    if case == "user_guide":
        options["guide"] = vae.guide
    elif case == "elbo_object":
        options["loss"] = TraceMeanField_ELBO()
    elif case == "flow_posterior":
        vae = FlowVAE((6,), latent_dim=3, hidden_features=(16,), flow_hidden=(8,)).double()
    else:
        vae.posterior = lambda x, y=None: VAE.posterior(vae, x, y)
    assert method(VAESVI, vae, batch, **options).objective is None
    result = probgen.fit(vae, batch[0], num_steps=3, progress=False, seed=0,
                         **{k: v for k, v in options.items() if k != "kl_warmup_steps"})
    assert len(result.losses) == 3 and all(torch.isfinite(torch.tensor(result.losses)))


ANNEALED = {  # TrainingSetup's warm-up (in steps) and free bits, particles one call each
    "warmup": dict(kl_warmup_steps=10),
    "free_bits": dict(free_bits=0.5),
    "floor_active_particles": dict(kl_warmup_steps=4, free_bits=2.0, num_particles=3),
}


@pytest.mark.parametrize("annealing", list(ANNEALED))
@pytest.mark.parametrize("name", ["bernoulli", "beta", "conditional"])
def test_kl_warmup_and_free_bits_on_the_lean_path_equal_the_annealed_elbo(name, annealing):
    vae, batch = make(name)
    generic = method(SVI, vae, batch, **ANNEALED[annealing])
    lean = method(VAESVI, vae, batch, **ANNEALED[annealing])
    assert lean.objective is not None
    for seed, step in ((1, 2), (2, 7)):  # β = 0.75 and 1 (4-step warm-up), 0.3 and 0.8 (10)
        generic.begin_step(step)
        lean.begin_step(step)
        pyro.set_rng_seed(seed)
        expected = generic.elbo.loss_and_grads(vae.model, vae.guide, *batch)
        expected_grads = gradients(vae)
        pyro.set_rng_seed(seed)
        value = -lean.bound(batch, True)
        value.backward()
        torch.testing.assert_close(value.item(), float(expected), rtol=1e-10, atol=1e-10)
        for got, want in zip(gradients(vae), expected_grads):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    vae.eval()
    pyro.set_rng_seed(3)
    expected = generic.validation_loss(batch)
    pyro.set_rng_seed(3)
    torch.testing.assert_close(lean.validation_loss(batch), expected, rtol=1e-10, atol=0)


def test_a_lean_fit_with_kl_warmup_and_free_bits_retraces_the_generic_fit():
    vae, (x,) = make("bernoulli")
    x = torch.rand(60, 6, dtype=torch.float64)
    generic_vae = copy.deepcopy(vae)
    settings = dict(num_steps=12, batch_size=20, optim=0.02, seed=4, progress=False,
                    transform=torch.bernoulli, validation=torch.bernoulli(x[:15]),
                    validate_every=4, kl_warmup_epochs=2, free_bits=0.3)
    lean = probgen.fit(vae, x, **settings)
    pyro.clear_param_store()
    generic = probgen.fit(generic_vae, x, method=SVI, **settings)
    torch.testing.assert_close(lean.losses, generic.losses, rtol=1e-9, atol=0)
    torch.testing.assert_close([v for _, v in lean.validation],
                               [v for _, v in generic.validation], rtol=1e-9, atol=0)
    for got, want in zip(vae.parameters(), generic_vae.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


def _compiled_and_eager_fits(vae, x):
    settings = dict(num_steps=6, batch_size=20, optim=0.02, seed=1, progress=False)
    eager_vae = copy.deepcopy(vae)
    compiled = probgen.fit(vae, x, compile=True, **settings)
    pyro.clear_param_store()
    eager = probgen.fit(eager_vae, x, **settings)
    return compiled.losses, eager.losses


@pytest.mark.parametrize("failure", ["at_wrap", "at_first_call"])
def test_compile_falls_back_to_eager_with_one_warning(failure, monkeypatch):
    """The compiler mocked to fail (a real compile takes ~40-100 s of CPU here): one warning,
    then the eager objective, the same trajectory."""
    def broken_compile(function, **options):
        if failure == "at_wrap":
            raise RuntimeError("no compiler")

        def run(*args, **kwargs):
            raise RuntimeError("backend failed")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    vae, _ = make("bernoulli")
    x = torch.bernoulli(torch.rand(60, 6, dtype=torch.float64))
    with pytest.warns(RuntimeWarning, match="compile=True") as caught:
        compiled, eager = _compiled_and_eager_fits(vae, x)
    assert len([w for w in caught if "compile=True" in str(w.message)]) == 1
    torch.testing.assert_close(compiled, eager, rtol=1e-12, atol=0)


@pytest.mark.skipif(not os.environ.get("PROBGEN_TEST_COMPILE"),
                    reason="a real torch.compile takes ~40-100 s of CPU; PROBGEN_TEST_COMPILE=1")
def test_compile_gives_the_eager_trajectory():
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is unavailable")
    vae, _ = make("bernoulli")
    x = torch.bernoulli(torch.rand(60, 6, dtype=torch.float64))
    compiled, eager = _compiled_and_eager_fits(vae, x)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=0)


@pytest.mark.parametrize("options", [dict(), dict(num_masks=3, dropout=0.2),
                                     dict(num_categories=3)])
def test_a_lean_made_fit_retraces_the_generic_fit(options):
    """MADE has no latent: its plain-torch step is −log p(x), with the same mask draws."""
    from probgen.models.autoregressive.made import MADE, MADESVI

    assert MADE.methods()["svi"] is MADESVI
    torch.manual_seed(0)
    made = MADE(5, hidden_features=(16,), **options).double()
    generic_made = copy.deepcopy(made)
    generator = torch.Generator().manual_seed(1)
    x = torch.randint(made.num_categories, (40, 5), generator=generator).double()
    settings = dict(num_steps=9, batch_size=10, optim=0.02, seed=2, progress=False,
                    validation=x[:10], validate_every=3)
    lean = probgen.fit(made, x, **settings)
    assert method(MADESVI, made, (x[:10],)).objective is not None
    pyro.clear_param_store()
    generic = probgen.fit(generic_made, x, method=SVI, **settings)
    torch.testing.assert_close(lean.losses, generic.losses, rtol=1e-10, atol=0)
    torch.testing.assert_close([v for _, v in lean.validation],
                               [v for _, v in generic.validation], rtol=1e-10, atol=0)
    for got, want in zip(made.parameters(), generic_made.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_decoder_log_prob_is_the_likelihoods_log_prob():
    for name in ("bernoulli", "gaussian", "conditional", "conv"):
        vae, batch = make(name)
        x, y = batch[0], (batch[1] if len(batch) > 1 else None)
        z = torch.randn(4, len(x), 3, dtype=torch.float64)  # (particles, batch, latent)
        expected = vae.decode(z, y).log_prob(x)
        torch.testing.assert_close(vae.decoder_log_prob(x, z, y), expected)
        torch.testing.assert_close(vae.decoder_log_prob(x, z, y, summed=True), expected.sum())


def test_throughput_benchmark_smoke(tmp_path):
    import json
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks import throughput

    rows = throughput.main(["--smoke", "--out", str(tmp_path)])
    assert {(r["model"], r["threads"], r["clock"]) for r in rows} >= {
        ("vae", 1, "cpu"), ("iwae", 1, "cpu"), ("made", 1, "cpu"), ("vae", 2, "wall")}
    saved = json.loads((tmp_path / "throughput.json").read_text())
    compared = [r for r in saved if "mechanism" not in r]  # fit beside the hand loop
    assert all(r["fit_s"] > 0 and r["hand_s"] > 0 and r["peak_gflops"] > 0 for r in compared)
    processes = [r for r in saved if "mechanism" in r]  # fit_in_processes: fit's time only
    assert [r["threads"] for r in processes] == ["2 processes x 1"]
    assert all(r["fit_s"] > 0 for r in processes)
    assert "load_average_before" in saved[0]["settings"] and "cpu" in saved[0]["machine"]
