"""fit's training recipes on user-written programs: IWAE-k (loss="iwae"), the ELBO with KL
warm-up and free bits (kl_warmup_epochs=, free_bits=), learning-rate schedules (lr_schedule=)."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO

import probgen
from probgen.infer.objectives import IWAE, AnnealedELBO, kl_weight
from probgen.infer.schedules import LRSchedule


# --- programs written here --------------------------------------------------------------------
def local_model(x):
    """z_n ~ N(0, 1), x_n | z_n ~ N(z_n + loc, 1): x_n ~ N(loc, 2) exactly."""
    loc = pyro.param("loc", torch.tensor(0.0, dtype=x.dtype))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(z + loc, 1.0), obs=x)


def local_guide(x):
    """q(z_n | x_n) = N(a x_n + b, s): amortized by three parameters."""
    a = pyro.param("a", torch.tensor(0.2, dtype=x.dtype))
    b = pyro.param("b", torch.tensor(0.0, dtype=x.dtype))
    s = pyro.param("s", torch.tensor(0.9, dtype=x.dtype), constraint=dist.constraints.positive)
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(a * x + b, s))


def narrow_guide(x):
    """q(z_n | x_n) = N(a x_n + b, 0.3): narrower than the posterior N(·, 1/2), so IWAE-k gains."""
    a = pyro.param("a", torch.tensor(0.2, dtype=x.dtype))
    b = pyro.param("b", torch.tensor(0.0, dtype=x.dtype))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(a * x + b, 0.3))


def global_local_model(x):
    """mu ~ N(0, I_2) (global), z_n ~ N(mu, I_2), x_n ~ N(z_n, 0.5² I_2)."""
    mu = pyro.sample("mu", dist.Normal(torch.zeros(2, dtype=x.dtype), 1.0).to_event(1))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(mu.expand(len(x), 2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)


def global_local_guide(x):
    m = pyro.param("m", torch.zeros(2, dtype=x.dtype))
    a = pyro.param("a2", torch.tensor(0.5, dtype=x.dtype))
    pyro.sample("mu", dist.Normal(m, 0.3).to_event(1))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(a * x, 0.6).to_event(1))


@pytest.fixture(autouse=True)
def _clean_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def _log_likelihood(model, guide, x, seed):
    """log p(x | z) at the guide's draw under ``seed`` (the observed sites of the replayed model)."""
    pyro.set_rng_seed(seed)
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    return float(model_trace.nodes["x"]["fn"].log_prob(x).sum().detach())


def _seeded(fn, seed, *args):
    pyro.set_rng_seed(seed)
    return fn(*args)


# --- IWAE --------------------------------------------------------------------------------------
def test_iwae_is_renyi_alpha_zero_and_chunks_do_not_change_it():
    x = torch.randn(10, dtype=torch.float64)
    expected = _seeded(RenyiELBO(alpha=0, num_particles=50, vectorize_particles=True,
                                 max_plate_nesting=1).loss, 0, local_model, local_guide, x)
    whole = _seeded(IWAE(50).loss, 0, local_model, local_guide, x)
    assert whole == pytest.approx(expected, rel=1e-12)
    chunked = IWAE(2000, chunk=3).loss(local_model, local_guide, x)  # 4 chunks, large k
    reference = IWAE(2000).loss(local_model, local_guide, x)
    assert chunked == pytest.approx(reference, rel=2e-3)
    with pytest.raises(ValueError, match="k >= 1"):
        IWAE(0)


def test_fit_iwae_trains_and_its_bound_sits_between_elbo_and_exact():
    """fit(loss="iwae"): validation is the IWAE-k bound; ELBO < IWAE-k ≤ exact (x ~ N(loc, 2))."""
    torch.manual_seed(0)
    x = (torch.randn(2000, dtype=torch.float64) * math.sqrt(2.0) + 3.0)
    result = probgen.fit(local_model, x, guide=narrow_guide, loss="iwae", num_particles=20,
                         epochs=15, batch_size=200, optim=0.05, seed=0, progress=False,
                         validation=x[:500])
    loc = float(pyro.param("loc").detach())
    assert loc == pytest.approx(float(x.mean()), abs=0.1)  # the MLE of a N(loc, 2) mean
    exact = float(dist.Normal(loc, math.sqrt(2.0)).log_prob(x[:500]).mean())
    pyro.set_rng_seed(1)
    iwae = -IWAE(20).loss(local_model, narrow_guide, x[:500]) / 500
    pyro.set_rng_seed(1)
    elbo = -Trace_ELBO(num_particles=20, vectorize_particles=True, max_plate_nesting=1).loss(
        local_model, narrow_guide, x[:500]) / 500
    assert elbo + 0.05 < iwae < exact + 1e-3
    assert -result.validation[-1][1] == pytest.approx(iwae, abs=0.01)  # validation = IWAE-20


# --- the annealed ELBO -----------------------------------------------------------------------
def test_annealed_elbo_at_beta_one_is_the_mean_field_elbo_on_a_global_and_local_program():
    x = torch.randn(30, 2, dtype=torch.float64)
    for seed in range(3):
        ours = _seeded(AnnealedELBO().loss, seed, global_local_model, global_local_guide, x)
        pyro_value = _seeded(TraceMeanField_ELBO().loss, seed, global_local_model,
                             global_local_guide, x)
        assert ours == pytest.approx(pyro_value, rel=1e-12)


def test_warmup_weights_the_kl_and_free_bits_floor_each_site():
    x = torch.randn(30, 2, dtype=torch.float64)
    log_likelihood = _log_likelihood(global_local_model, global_local_guide, x, seed=4)
    true_loss = _seeded(AnnealedELBO().loss, 4, global_local_model, global_local_guide, x)
    kl = true_loss + log_likelihood
    assert kl > 0
    objective = AnnealedELBO(warmup_steps=4)
    for step, beta in ((0, 0.25), (1, 0.5), (3, 1.0), (9, 1.0)):
        objective.step = step
        assert objective.beta() == beta == kl_weight(step, 4)
        value = _seeded(objective.loss_and_grads, 4, global_local_model, global_local_guide, x)
        assert value == pytest.approx(-log_likelihood + beta * kl, rel=1e-10)
        # validation (loss) is the true bound whatever the step
        assert _seeded(objective.loss, 4, global_local_model, global_local_guide, x) == \
            pytest.approx(true_loss, rel=1e-12)
    floored = AnnealedELBO(free_bits=100.0)  # 100 nats × 2 dims × (1 global + 30 local)
    value = _seeded(floored.loss_and_grads, 4, global_local_model, global_local_guide, x)
    assert value == pytest.approx(-log_likelihood + 100.0 * 2 * (1 + 30), rel=1e-10)


def test_sites_without_a_closed_form_kl_use_log_q_minus_log_p():
    """A Student-t prior has no closed-form KL to a Normal: the one-sample term = Trace_ELBO."""
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.StudentT(3.0, torch.zeros_like(x), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    x = torch.randn(25, dtype=torch.float64)
    for seed in range(3):
        ours = _seeded(AnnealedELBO().loss, seed, model, local_guide, x)
        assert ours == pytest.approx(_seeded(Trace_ELBO().loss, seed, model, local_guide, x),
                                     rel=1e-12)


def test_fit_follows_the_warmup_per_step_and_a_resume_continues_it(tmp_path):
    x = torch.randn(40, 2, dtype=torch.float64)
    seen = []
    objective = AnnealedELBO(warmup_steps=4)

    def record(state):
        seen.append(objective.beta())

    kw = dict(guide=global_local_guide, batch_size=10, optim=0.01, seed=3, progress=False)
    probgen.fit(global_local_model, x, loss=objective, num_steps=6, callbacks=[record], **kw)
    assert seen == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    # fit's own option: warm-up over 1.5 epochs of 4 steps = 6 steps, resumed half way
    straight = probgen.fit(global_local_model, x, kl_warmup_epochs=1.5, num_steps=10, **kw)
    pyro.clear_param_store()
    path = tmp_path / "fit.pt"
    probgen.fit(global_local_model, x, kl_warmup_epochs=1.5, num_steps=10, checkpoint=path,
                callbacks=[lambda state: state.step == 4], **kw)
    pyro.clear_param_store()
    resumed = probgen.fit(global_local_model, x, kl_warmup_epochs=1.5, num_steps=10,
                          checkpoint=path, resume=True, **kw)
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-12)
    pyro.clear_param_store()
    plain = probgen.fit(global_local_model, x, num_steps=10, **kw)
    assert straight.losses[0] < plain.losses[0]  # β = 1/6 on the same draws: a smaller loss
    assert straight.losses[-1] == pytest.approx(
        plain.losses[-1], rel=0.5)  # after warm-up, the same objective


def test_fit_warmup_and_free_bits_replace_a_bundled_models_default_loss():
    from probgen.models.hierarchical import HierarchicalVAE

    vae = HierarchicalVAE((8,), latent_dims=(3, 2), hidden_features=((16,), (8,)))
    x = torch.bernoulli(torch.full((40, 8), 0.3))
    result = probgen.fit(vae, x, num_steps=4, batch_size=20, kl_warmup_epochs=2, free_bits=0.5,
                         optim=1e-3, seed=0, progress=False, validation=x[:10])
    assert len(result.losses) == 4 and all(math.isfinite(v) for v in result.losses)
    assert int(vae.training_steps) == 0  # the generic loss ran, not the model's LadderELBO


# --- learning-rate schedules -------------------------------------------------------------------
def test_schedules_closed_forms():
    cosine = LRSchedule("cosine", 1e-4, 11)
    assert cosine.lr(0, 1e-2) == pytest.approx(1e-2)
    assert cosine.lr(5, 1e-2) == pytest.approx((1e-2 + 1e-4) / 2)
    assert cosine.lr(10, 1e-2) == pytest.approx(1e-4) == cosine.lr(50, 1e-2)
    assert LRSchedule("linear", 0.0, 11).lr(5, 1.0) == pytest.approx(0.5)
    assert LRSchedule("exponential", 1e-4, 11).lr(5, 1e-2) == pytest.approx(1e-3)
    assert LRSchedule("cosine", None, 11).lr(10, 1e-2) == pytest.approx(1e-4)  # default: 1/100
    assert LRSchedule("constant", None, 11).lr(7, 0.3) == 0.3


def test_fit_sets_the_scheduled_rate_every_step():
    """A loss whose gradient barely changes: each Adam step moves ``loc`` by lr_t exactly."""
    x = torch.full((10,), 1e4, dtype=torch.float64)

    def model(x):
        loc = pyro.param("loc", torch.tensor(0.0, dtype=x.dtype))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    values = []
    probgen.fit(model, x, num_steps=9, optim=0.1, lr_schedule="cosine", final_lr=0.01,
                progress=False, seed=0,
                callbacks=[lambda state: values.append(float(pyro.param("loc").detach()))])
    steps = torch.diff(torch.tensor([0.0] + values, dtype=torch.float64))
    expected = [LRSchedule("cosine", 0.01, 9).lr(t, 0.1) for t in range(9)]
    torch.testing.assert_close(steps, torch.tensor(expected, dtype=torch.float64), rtol=1e-4,
                               atol=0)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"final_lr": 1e-4}, ValueError, "final_lr= needs lr_schedule"),
    ({"lr_schedule": "warm"}, ValueError, "unknown lr_schedule"),
    ({"lr_schedule": "exponential", "final_lr": 0.0}, ValueError, "cannot reach final_lr=0"),
    ({"lr_schedule": "cosine", "final_lr": -1.0}, ValueError, "final_lr must be"),
    ({"lr_schedule": "cosine", "optim": pyro.optim.Adam({"lr": 0.1})}, ValueError,
     "brings its own schedule"),
    ({"kl_warmup_epochs": -1}, ValueError, "kl_warmup_epochs must be"),
    ({"free_bits": -0.5}, ValueError, "free_bits must be"),
    ({"kl_warmup_epochs": 2, "loss": "iwae"}, ValueError, "do not combine with loss="),
    ({"loss": "iwae"}, ValueError, "k >= 2 importance samples"),
])
def test_recipe_options_refuse_bad_values(kwargs, error, match):
    x = torch.randn(20, dtype=torch.float64)
    with pytest.raises(error, match=match):
        probgen.fit(local_model, x, guide=local_guide, num_steps=2, progress=False, **kwargs)


def test_methods_without_an_elbo_refuse_the_recipe_options():
    from probgen.models.mixture import GaussianMixture

    x = torch.randn(30, 3).double()
    with pytest.raises(TypeError, match="does not take lr_schedule"):
        probgen.fit(GaussianMixture(2, 3).double(), x, method="em", num_steps=2, lr_schedule="cosine",
                    progress=False)


def test_a_module_built_inside_the_program_gets_a_clear_error():
    """pyro.module of a fresh nn.Module per call trains a discarded copy: say so, do not crash."""
    def model(x):
        decoder = pyro.module("decoder", torch.nn.Linear(1, 1).double())
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(decoder(x[:, None])[:, 0], 1.0), obs=x)

    with pytest.raises(ValueError, match="build their nn.Modules anew"):
        probgen.fit(model, torch.randn(10, dtype=torch.float64), num_steps=2, progress=False)
