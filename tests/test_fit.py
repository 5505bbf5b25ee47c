"""probgen.fit as the one trainer: Pyro schedulers, validation and early stopping, transforms,
DataLoaders, fresh parameters per seed, resume with a new learning rate, declared methods."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import zuko
from pyro import poutine
from pyro.contrib.zuko import ZukoToPyro
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from torch.distributions import constraints

import probgen
from probgen.core.checkpoint import CheckpointError, load_checkpoint
from probgen.infer.fit import TrainingDiverged
from probgen.infer.method import TrainingMethod


def normal_model(x):
    loc = pyro.param("loc", torch.tensor(0.0))
    scale = pyro.param("scale", torch.tensor(1.0), constraint=constraints.positive)
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(loc, scale), obs=x)


def latent_model(x):
    """y_n ~ N(z_n, 0.5), z_n ~ N(mu, 1): per-example latents, one global parameter."""
    mu = pyro.param("mu", torch.tensor(0.0))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(mu, 1.0))
        pyro.sample("x", dist.Normal(z, 0.5), obs=x)


def store_values() -> dict[str, torch.Tensor]:
    store = pyro.get_param_store()
    return {name: store[name].detach().clone() for name in sorted(store.keys())}


def assert_same_store(a, b, **tolerance):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], **tolerance)


def exponential(gamma: float = 0.9, lr: float = 0.1):
    return pyro.optim.ExponentialLR({"optimizer": torch.optim.Adam, "optim_args": {"lr": lr},
                                     "gamma": gamma})


# --- schedulers ------------------------------------------------------------------------------
def test_exponential_lr_matches_pyro_svi_loop_stepped_per_epoch():
    """Pyro's documented loop (svi.step per mini-batch, scheduler.step() per epoch) on the
    batches fit draws (a permutation seeded with seed + epoch, sites scaled by N/B)."""
    x = torch.randn(64) * 2 + 5
    scheduler = exponential()
    svi = SVI(poutine.scale(normal_model, scale=64 / 16), lambda x: None, scheduler, Trace_ELBO())
    for epoch in range(4):
        order = torch.randperm(64, generator=torch.Generator().manual_seed(0 + epoch))
        for start in range(0, 64, 16):
            svi.step(x[order[start:start + 16]])
        scheduler.step()
    reference = store_values()
    constant = probgen.fit(normal_model, x, epochs=4, batch_size=16, optim=0.1, seed=0,
                           progress=False)
    constant_values = store_values()
    result = probgen.fit(normal_model, x, epochs=4, batch_size=16, optim=exponential(), seed=0,
                         progress=False)
    assert result.num_steps == 16 and constant.num_steps == 16
    assert_same_store(store_values(), reference, atol=1e-6, rtol=0)
    assert abs(constant_values["loc"] - reference["loc"]) > 1e-2  # the schedule mattered


def test_scheduler_every_step_decays_per_step():
    x = torch.randn(32)
    scheduler = exponential(gamma=0.5)
    probgen.fit(normal_model, x, num_steps=6, batch_size=16, optim=scheduler,
                scheduler_every="step", seed=0, progress=False)
    lrs = [s.get_last_lr()[0] for s in scheduler.optim_objs.values()]
    assert lrs and all(math.isclose(lr, 0.1 * 0.5**6) for lr in lrs)


def test_reduce_on_plateau_is_fed_the_validation_loss():
    torch.manual_seed(0)
    x, held_out = torch.randn(40) + 3, torch.randn(40) + 3
    scheduler = pyro.optim.ReduceLROnPlateau({"optimizer": torch.optim.Adam,
                                              "optim_args": {"lr": 0.5}, "patience": 0,
                                              "factor": 0.1})
    result = probgen.fit(normal_model, x, num_steps=60, optim=scheduler, validation=held_out,
                         seed=0, progress=False)
    assert len(result.validation) == 60
    lrs = {s.optimizer.param_groups[0]["lr"] for s in scheduler.optim_objs.values()}
    assert max(lrs) < 0.5  # a validation loss that stopped improving cut the rate


# --- validation, early stopping, restore_best ---------------------------------------------------
def _flow_program(flow):
    def model(x):
        pyro.module("flow", flow)
        with pyro.plate("data", len(x)):
            pyro.sample("x", ZukoToPyro(flow()), obs=x)
    return model


def test_patience_stops_an_overfitting_flow_and_restores_the_best_parameters():
    torch.manual_seed(0)
    train, held_out = torch.randn(12, 2), torch.randn(200, 2)
    flow = zuko.flows.MAF(2, transforms=2, hidden_features=(64, 64))
    model = _flow_program(flow)
    result = probgen.fit(model, train, num_steps=3000, optim=1e-2, validation=held_out,
                         validate_every=10, patience=5, seed=0, progress=False)
    assert result.stopped_early and result.num_steps < 3000
    values = [v for _, v in result.validation]
    best = min(values)
    assert values[-1] > best  # it was overfitting when it stopped
    assert result.best_step == result.validation[values.index(best)][0]
    assert result.best_step < result.num_steps
    with torch.no_grad():
        restored = -ZukoToPyro(flow()).log_prob(held_out).mean().item()
    assert restored == pytest.approx(best, abs=1e-6)
    assert result.history[-1] < result.history[0]  # training loss kept falling


@pytest.mark.parametrize("optim", [1e-2, "pyro_adam"])
def test_patience_restores_the_best_parameters_of_a_bundled_family(optim):
    """The best snapshot of a bundled model is a copy: optimizers update parameters in place,
    so a view of them would 'restore' the last step's values (the MNIST MADE run did)."""
    from probgen.models.flow import FlowModel

    torch.manual_seed(0)
    train, held_out = torch.randn(12, 2), torch.randn(200, 2)
    flow = FlowModel(2, kind="maf", transforms=2, hidden=(64, 64))
    optimizer = pyro.optim.Adam({"lr": 1e-2}) if optim == "pyro_adam" else optim
    result = probgen.fit(flow, train, num_steps=3000, optim=optimizer, validation=held_out,
                         validate_every=10, patience=5, seed=0, progress=False)
    values = [v for _, v in result.validation]
    assert result.stopped_early and values[-1] > min(values) + 0.05
    with torch.no_grad():
        restored = -flow.log_prob(held_out).mean().item()
    assert restored == pytest.approx(min(values), abs=1e-5)


def test_validation_estimator_scores_with_evaluate():
    torch.manual_seed(0)
    x, held_out = torch.randn(50) + 1, torch.randn(30) + 1
    result = probgen.fit(normal_model, x, num_steps=20, optim=0.1, validation=held_out,
                         validation_estimator="exact", validate_every=5, seed=0, progress=False,
                         restore_best=False)
    expected = -dist.Normal(pyro.param("loc"), pyro.param("scale")).log_prob(held_out).mean()
    assert [s for s, _ in result.validation] == [5, 10, 15, 20]
    assert result.validation[-1][1] == pytest.approx(float(expected), abs=1e-5)


def test_validation_is_checked_like_data():
    with pytest.raises(ValueError, match="validation.*NaN"):
        probgen.fit(normal_model, torch.randn(10), num_steps=2, progress=False,
                    validation=torch.tensor([1.0, float("nan")]))


# --- transforms --------------------------------------------------------------------------------
def test_transform_sees_every_batch_and_resume_repeats_it(tmp_path):
    probs = torch.rand(60, 5)

    def bernoulli_model(x):
        logits = pyro.param("logits", torch.zeros(5))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    seen = []

    def binarize(x):
        seen.append(x)
        return torch.bernoulli(x)

    probgen.fit(bernoulli_model, probs, num_steps=12, batch_size=20, transform=binarize, seed=3,
                progress=False)
    uninterrupted = store_values()
    assert len(seen) == 12 and all(b.shape == (20, 5) for b in seen)
    assert all(((b > 0) & (b < 1)).any() for b in seen)  # transform got the raw probabilities
    path = tmp_path / "run.pt"
    probgen.fit(bernoulli_model, probs, num_steps=12, batch_size=20, transform=binarize, seed=3,
                progress=False, checkpoint=path, callbacks=[lambda s: s.step == 6])
    probgen.fit(bernoulli_model, probs, num_steps=12, batch_size=20, transform=binarize, seed=3,
                progress=False, checkpoint=path, resume=True)
    assert_same_store(store_values(), uninterrupted, atol=0, rtol=0)


# --- data as a Dataset / DataLoader --------------------------------------------------------------
def test_dataloader_fit_equals_tensor_fit_with_the_same_batches():
    torch.manual_seed(0)
    x = torch.randn(90) * 3 + 1
    tensor_fit = probgen.fit(latent_model, x, num_steps=12, batch_size=30, shuffle=False,
                             seed=5, progress=False, guide=_amortized_guide)
    expected = store_values()
    pyro.clear_param_store()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=30)
    loader_fit = probgen.fit(latent_model, loader, num_steps=12, seed=5, progress=False,
                             guide=_amortized_guide)
    assert loader_fit.losses == pytest.approx(tensor_fit.losses, abs=1e-5)
    assert loader_fit.num_examples == 90
    assert_same_store(store_values(), expected, atol=1e-6, rtol=0)


def _amortized_guide(x):
    weight = pyro.param("q_weight", torch.tensor(0.5))
    log_scale = pyro.param("q_log_scale", torch.tensor(-1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(weight * x, log_scale.exp()))


def test_iterable_of_batches_needs_num_examples_and_scales_by_it():
    batches = [torch.randn(10) for _ in range(3)]
    with pytest.raises(TypeError, match="num_examples"):
        probgen.fit(normal_model, iter(batches), num_steps=2, progress=False)

    class Batches:
        def __iter__(self):
            return iter(batches)

    result = probgen.fit(normal_model, Batches(), num_examples=1000, num_steps=1, optim=1e-9,
                         progress=False, seed=0)
    loc, scale = torch.tensor(0.0), torch.tensor(1.0)
    expected = -100 * dist.Normal(loc, scale).log_prob(batches[0]).sum()  # N/B = 1000/10
    assert result.losses[0] == pytest.approx(float(expected), rel=1e-5)


# --- seeds and fresh parameters -----------------------------------------------------------------
@pytest.mark.parametrize("program,guide", [(normal_model, None), (latent_model, "auto"),
                                           (latent_model, _amortized_guide)])
def test_same_seed_same_result_without_clearing_the_param_store(program, guide):
    x = torch.randn(40) + 2
    runs = []
    for _ in range(2):
        result = probgen.fit(program, x, num_steps=25, optim=0.05, seed=11, progress=False,
                             guide=None if guide == "auto" else guide)
        runs.append((result.losses, store_values()))
    assert runs[0][0] == runs[1][0]
    assert_same_store(runs[0][1], runs[1][1], atol=0, rtol=0)


def test_warm_start_continues_from_the_current_values():
    x = torch.full((20,), 4.0)
    probgen.fit(normal_model, x, num_steps=50, optim=0.1, seed=0, progress=False)
    after_first = float(pyro.param("loc"))
    probgen.fit(normal_model, x, num_steps=1, optim=1e-6, seed=0, progress=False,
                warm_start=True)
    assert float(pyro.param("loc")) == pytest.approx(after_first, abs=1e-4)
    probgen.fit(normal_model, x, num_steps=1, optim=1e-6, seed=0, progress=False)
    assert abs(float(pyro.param("loc"))) < 1e-3  # fresh: back to the initial value


def test_autonormal_guide_is_rebuilt_fresh():
    x = torch.randn(30) + 1
    first = probgen.fit(latent_model, x, num_steps=30, optim=0.05, seed=2, progress=False)
    second = probgen.fit(latent_model, x, num_steps=30, optim=0.05, seed=2, progress=False)
    assert first.guide is not second.guide and isinstance(second.guide, AutoNormal)
    assert first.losses == second.losses


# --- resume ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("first,second", [
    (0.1, 0.01),
    (lambda: pyro.optim.Adam({"lr": 0.1}), lambda: pyro.optim.Adam({"lr": 0.01})),
], ids=["rate", "pyro.optim"])
def test_resume_with_a_new_learning_rate_keeps_moments_and_applies_the_rate(tmp_path, first,
                                                                            second):
    x = torch.randn(50) + 3
    path = tmp_path / "run.pt"
    probgen.fit(normal_model, x, num_steps=10, optim=first() if callable(first) else first,
                seed=0, progress=False, checkpoint=path)
    resumed = probgen.fit(normal_model, x, num_steps=20, seed=0, progress=False,
                          optim=second() if callable(second) else second,
                          checkpoint=path, resume=True)
    # Reference: the same 10 steps, then the same Adam state with its rate set to 0.01.
    pyro.clear_param_store()
    params = {"loc": torch.tensor(0.0, requires_grad=True),
              "scale": torch.tensor(0.0, requires_grad=True)}  # log-space scale
    adam = torch.optim.Adam(list(params.values()), lr=0.1)
    losses = []
    for step in range(20):
        if step == 10:
            adam.param_groups[0]["lr"] = 0.01
        loss = -dist.Normal(params["loc"], params["scale"].exp()).log_prob(x).sum()
        adam.zero_grad()
        loss.backward()
        adam.step()
        losses.append(float(loss))
    assert resumed.losses == pytest.approx(losses, rel=1e-5)


def test_following_the_divergence_advice_works(tmp_path):
    x = torch.randn(50) * 0.01 + 1.0
    path = tmp_path / "run.pt"

    def fragile(x):
        scale = pyro.param("scale", torch.tensor(1.0))  # no positive constraint
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(1.0, scale, validate_args=False), obs=x)

    with pytest.raises(TrainingDiverged, match=r"optim=1e-3") as caught:
        probgen.fit(fragile, x, num_steps=200, optim=5.0, seed=0, progress=False,
                    checkpoint=path)
    rolled_back = caught.value.step
    result = probgen.fit(fragile, x, num_steps=200, optim=1e-3, seed=0, progress=False,
                         checkpoint=path, resume=True)
    assert result.num_steps == 200 and all(math.isfinite(v) for v in result.losses)
    assert load_checkpoint(path)["step"] == 200 and rolled_back < 200


def test_resume_keeps_validation_history_and_best(tmp_path):
    torch.manual_seed(0)
    x, held_out = torch.randn(40) + 1, torch.randn(40) + 1
    path = tmp_path / "run.pt"
    whole = probgen.fit(normal_model, x, num_steps=30, optim=0.05, validation=held_out,
                        validate_every=5, seed=1, progress=False)
    expected = store_values()
    probgen.fit(normal_model, x, num_steps=30, optim=0.05, validation=held_out, validate_every=5,
                seed=1, progress=False, checkpoint=path, callbacks=[lambda s: s.step == 14])
    resumed = probgen.fit(normal_model, x, num_steps=30, optim=0.05, validation=held_out,
                          validate_every=5, seed=1, progress=False, checkpoint=path, resume=True)
    assert resumed.validation == whole.validation and resumed.best_step == whole.best_step
    assert_same_store(store_values(), expected, atol=0, rtol=0)


# --- methods -------------------------------------------------------------------------------------
class CountingMethod(TrainingMethod):
    """A user-written method: gradient-free, moves `loc` halfway to the batch mean each step."""

    uses_optim = False
    options = ("rate",)

    def __init__(self, setup):
        super().__init__(setup)
        self.rate = setup.options.get("rate", 0.5)
        self.loc = pyro.param("loc", torch.tensor(0.0))

    def step(self, batch, scale):
        with torch.no_grad():
            loc = pyro.get_param_store()._params["loc"]
            loc += self.rate * (batch[0].mean() - loc)
        return float(-dist.Normal(loc, 1.0).log_prob(batch[0]).sum() * scale)

    def tensors(self):
        return [pyro.get_param_store()._params["loc"]]

    def validation_loss(self, batch):
        return float(-dist.Normal(pyro.param("loc"), 1.0).log_prob(batch[0]).mean())


def test_fit_runs_a_user_written_method_in_the_same_loop():
    x = torch.full((10,), 8.0)
    seen = []
    result = probgen.fit(normal_model, x, method=CountingMethod, num_steps=5, rate=0.5,
                         progress=False, callbacks=[lambda s: seen.append(s.step)],
                         validation=x)
    assert float(pyro.param("loc")) == pytest.approx(8.0 * (1 - 0.5**5))
    assert seen == [0, 1, 2, 3, 4] and len(result.validation) == 5
    with pytest.raises(TypeError, match="unexpected options.*speed"):
        probgen.fit(normal_model, x, method=CountingMethod, num_steps=1, speed=2,
                    progress=False)


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match="unknown method 'em'.*svi"):
        probgen.fit(normal_model, torch.randn(5), method="em", num_steps=1, progress=False)


# --- resume accepts only what it should; one writer per checkpoint ------------------------------
def test_resume_refuses_other_data_another_model_and_a_missing_file(tmp_path):
    x = torch.randn(30)
    path = tmp_path / "run.pt"
    with pytest.raises(FileNotFoundError, match="no checkpoint.*if_exists"):
        probgen.fit(normal_model, x, num_steps=4, progress=False, checkpoint=path, resume=True)
    probgen.fit(normal_model, x, num_steps=4, progress=False, checkpoint=path,
                resume="if_exists")
    with pytest.raises(CheckpointError, match="other data"):
        probgen.fit(normal_model, torch.randn(30), num_steps=8, progress=False, checkpoint=path,
                    resume=True)
    from probgen.models.mixture import GaussianMixture

    with pytest.raises(CheckpointError, match="fit of program, not of GaussianMixture"):
        probgen.fit(GaussianMixture(2, 1), x[:, None], method="svi", num_steps=8,
                    progress=False, checkpoint=path, resume=True)
    with pytest.raises(CheckpointError, match="at step 4 but num_steps=2"):
        probgen.fit(normal_model, x, num_steps=2, progress=False, checkpoint=path, resume=True)


def test_one_writer_per_checkpoint(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "run.pt"
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path.with_name("run.pt.lock").write_text(str(writer.pid))
        with pytest.raises(CheckpointError, match=f"another process \\(pid {writer.pid}\\)"):
            probgen.fit(normal_model, torch.randn(10), num_steps=2, progress=False,
                        checkpoint=path)
        assert not path.exists()
    finally:
        writer.kill()
        writer.wait()
    orphan = tmp_path / ".run.pt.abc123.tmp"  # a killed write's leftover
    orphan.write_bytes(b"partial")
    result = probgen.fit(normal_model, torch.randn(10), num_steps=2, progress=False,
                         checkpoint=path)  # the dead writer's lock is taken over
    assert result.num_steps == 2 and path.exists()
    assert not orphan.exists() and not path.with_name("run.pt.lock").exists()


def test_bundled_model_resumes_exactly_in_the_same_process(tmp_path):
    """A second model instance has other param-store names (an instance number); the saved
    optimizer state still reaches its parameters."""
    from probgen.models.mixture import GaussianMixture

    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))

    def run(steps, **options):
        torch.manual_seed(1)
        return probgen.fit(GaussianMixture(3, 2), x, method="svi", num_steps=steps,
                           batch_size=50, optim=0.05, seed=0, progress=False, **options)

    uninterrupted = run(40).losses
    run(20, checkpoint=tmp_path / "run.pt")
    resumed = run(40, checkpoint=tmp_path / "run.pt", resume=True).losses
    assert resumed == uninterrupted


def test_transform_output_is_what_a_bundled_model_checks():
    """Dynamic binarization of intensities for a Bernoulli VAE: the raw data are intensities,
    the transformed batches are bits; a transform that makes non-binary data is refused."""
    from probgen.models.vae import VAE

    vae = VAE((12,), latent_dim=2, hidden_features=(8,))
    intensities = torch.rand(40, 12)
    result = probgen.fit(vae, intensities, epochs=1, batch_size=20, transform=torch.bernoulli,
                         seed=0, progress=False)
    assert result.num_steps == 2
    with pytest.raises(ValueError, match="binary likelihood"):
        probgen.fit(vae, intensities, num_steps=1, transform=lambda x: 0.5 * x, progress=False)
    with pytest.raises(ValueError, match="binary likelihood"):  # no transform: data are checked
        probgen.fit(vae, intensities, num_steps=1, progress=False)


def test_renyi_bound_is_scaled_after_its_log_mean_exp_on_mini_batches():
    """IWAE-k on a mini-batch of B of N examples: N/B · Σ_n log (1/k) Σ_i w_ni, not the
    log-mean-exp of N/B-scaled weights."""
    from pyro.infer import RenyiELBO

    x = torch.randn(1000)

    def iwae():
        return RenyiELBO(alpha=0.0, num_particles=50, vectorize_particles=True,
                         max_plate_nesting=1)

    result = probgen.fit(latent_model, x, guide=_amortized_guide, loss=iwae(), num_steps=1,
                         batch_size=10, shuffle=False, optim=1e-9, seed=3, progress=False)
    pyro.clear_param_store()
    pyro.set_rng_seed(3)
    batch_bound = iwae().loss(latent_model, _amortized_guide, x[:10])
    assert result.losses[0] == pytest.approx(100 * batch_bound, rel=1e-5)


# --- users' own programs: data-dependent initialization, a sweep of new networks ---------------
K = 3


@pyro.infer.config_enumerate
def gmm(data):
    """Pyro's GMM tutorial (pyro.ai/examples/gmm.html) as a MAP fit: the centres start at K
    random data rows, as the tutorial initialises them."""
    weights = pyro.param("weights", data.new_ones(K) / K, constraint=constraints.simplex)
    scale = pyro.param("scale", (data.var() / 2).sqrt(), constraint=constraints.positive)
    locs = pyro.param("locs", data[torch.randperm(len(data))[:K]])
    with pyro.plate("data", len(data)):
        assignment = pyro.sample("assignment", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[assignment], scale), obs=data)


def _mixture_data(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.tensor([-4.0, 0.0, 5.0], dtype=torch.float64)
    which = torch.randint(0, K, (n,), generator=generator)
    return centres[which] + 0.7 * torch.randn(n, generator=generator, dtype=torch.float64)


def test_gmm_tutorial_with_centres_drawn_from_the_data_fits_and_scores_exactly():
    """The dtype probe runs the program on two rows; the K = 3 centres it would draw from them
    must not stay in the param store (they made the fit fail with an IndexError)."""
    from scipy.special import logsumexp
    from scipy.stats import norm

    train, test = _mixture_data(200, 0), _mixture_data(50, 1)
    result = probgen.fit(gmm, train, num_steps=300, optim=0.1, seed=0, progress=False)
    assert result.losses[-1] < result.losses[0]
    score = probgen.evaluate(gmm, test)
    assert score.kind == "exact"
    weights, locs, scale = (pyro.param(name).detach().numpy() for name in
                            ("weights", "locs", "scale"))
    assert locs.shape == (K,)
    by_hand = logsumexp(np.log(weights) + norm.logpdf(test.numpy()[:, None], locs, scale), axis=1)
    assert score.per_example.numpy() == pytest.approx(by_hand, abs=1e-8)


@pyro.infer.config_enumerate
def gmm_with_priors(data):
    """The tutorial's model itself: global latents under priors, fitted with its AutoDelta."""
    weights = pyro.sample("weights", dist.Dirichlet(0.5 * data.new_ones(K)))
    scale = pyro.sample("scale", dist.LogNormal(data.new_zeros(()), 2.0))
    with pyro.plate("components", K):
        locs = pyro.sample("locs", dist.Normal(data.new_zeros(()), 10.0))
    with pyro.plate("data", len(data)):
        assignment = pyro.sample("assignment", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[assignment], scale), obs=data)


def test_gmm_tutorial_with_its_autodelta_guide_scores_exactly_at_the_point_estimate():
    from pyro.infer.autoguide import AutoDelta
    from scipy.special import logsumexp
    from scipy.stats import norm

    train, test = _mixture_data(200, 0), _mixture_data(50, 1)

    def init_loc_fn(site):
        if site["name"] == "weights":
            return train.new_ones(K) / K
        if site["name"] == "scale":
            return (train.var() / 2).sqrt()
        return train[torch.multinomial(torch.ones(len(train)) / len(train), K)]

    guide = AutoDelta(poutine.block(gmm_with_priors, expose=["weights", "locs", "scale"]),
                      init_loc_fn=init_loc_fn)
    result = probgen.fit(gmm_with_priors, train, guide=guide, num_steps=200, optim=0.1, seed=0,
                         progress=False)
    score = probgen.evaluate(gmm_with_priors, test, guide=result.guide)
    assert score.kind == "exact"
    point = {name: value.detach().numpy() for name, value in guide.median().items()}
    by_hand = logsumexp(np.log(point["weights"]) + norm.logpdf(
        test.numpy()[:, None], point["locs"], point["scale"]), axis=1)
    assert score.per_example.numpy() == pytest.approx(by_hand, abs=1e-8)


def test_probes_leave_nothing_in_the_param_store():
    """The dtype probe and evaluate's two-row inspection run on a scratch store; evaluate on a
    fresh store then initialises the centres from the data it scores, as the program says."""
    from probgen.core.dtypes import program_dtype

    data = _mixture_data(30, 2)
    assert program_dtype(gmm, (data,)) == torch.float64
    assert list(pyro.get_param_store().keys()) == []
    score = probgen.evaluate(gmm, data)
    assert score.kind == "exact" and pyro.param("locs").shape == (K,)


def test_a_sweep_that_builds_a_new_network_per_run_under_one_name_trains_each():
    """Each run registers a new nn.Linear as "regressor"; the one an earlier run left in the
    param store must not shadow it. Same seed, same result; each fit reaches least squares."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(80, 2, generator=generator)
    y = x @ torch.tensor([1.5, -2.0]) + 0.5 + 0.1 * torch.randn(80, generator=generator)
    least_squares = torch.linalg.lstsq(torch.cat([x, torch.ones(80, 1)], 1), y[:, None]).solution
    runs = []
    for _ in range(3):
        torch.manual_seed(0)
        regressor = torch.nn.Linear(2, 1)  # a new network, same name, same initial weights

        def model(x, y, regressor=regressor):
            pyro.module("regressor", regressor)
            with pyro.plate("data", len(x)):
                pyro.sample("y", dist.Normal(regressor(x).squeeze(-1), 0.1), obs=y)

        result = probgen.fit(model, (x, y), num_steps=300, optim=0.05, seed=0, progress=False)
        trained = torch.cat([regressor.weight.detach().ravel(), regressor.bias.detach()])
        assert trained == pytest.approx(least_squares.ravel(), abs=1e-3)
        assert pyro.get_param_store()._params["regressor$$$weight"] is regressor.weight
        runs.append((result.losses, trained))
    assert runs[1][0] == runs[0][0] and runs[2][0] == runs[0][0]
    assert torch.equal(runs[1][1], runs[0][1]) and torch.equal(runs[2][1], runs[0][1])


def test_warm_start_puts_the_stored_weights_into_a_new_network():
    torch.manual_seed(0)
    x = torch.randn(40, 2)
    y = x.sum(-1)

    def model_for(regressor):
        def model(x, y):
            pyro.module("regressor", regressor)
            with pyro.plate("data", len(x)):
                pyro.sample("y", dist.Normal(regressor(x).squeeze(-1), 0.1), obs=y)
        return model

    first = torch.nn.Linear(2, 1)
    probgen.fit(model_for(first), (x, y), num_steps=200, optim=0.05, seed=0, progress=False)
    second = torch.nn.Linear(2, 1)
    result = probgen.fit(model_for(second), (x, y), num_steps=1, optim=1e-9, seed=0,
                         progress=False, warm_start=True)
    assert torch.allclose(second.weight, first.weight, atol=1e-6)
    assert result.losses[0] == pytest.approx(
        -float(dist.Normal(first(x).squeeze(-1), 0.1).log_prob(y).sum()), rel=1e-5)


def test_fit_on_a_missing_cuda_device_says_so():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="device='cuda': CUDA is not available on this machine"):
        probgen.fit(normal_model, torch.randn(10), device="cuda", num_steps=1, progress=False)


def test_probgen_fit_is_the_function_and_the_module():
    """``probgen.fit(...)`` trains; ``import probgen.infer.fit`` still reaches the module."""
    import inspect

    import probgen.infer.fit as module

    assert module.TrainingDiverged is probgen.TrainingDiverged
    assert "num_steps" in inspect.signature(probgen.fit).parameters
    from probgen.infer.fit import fit as function

    assert inspect.isfunction(function)

    def model(x):
        loc = pyro.param("loc", torch.zeros(()))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    probgen.fit(model, torch.full((10,), 3.0), num_steps=200, optim=0.1, progress=False)
    assert abs(float(pyro.param("loc")) - 3.0) < 1e-2  # the MLE, the data's mean
