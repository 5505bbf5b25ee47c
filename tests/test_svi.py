"""probgen.fit on programs written here: parameter recovery, mini-batches, guides, divergence."""


import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

import probgen
from probgen.infer.fit import ROLLBACK_EVERY, TrainingDiverged


def normal_model(x):
    loc = pyro.param("loc", torch.tensor(0.0))
    scale = pyro.param("scale", torch.tensor(1.0), constraint=constraints.positive)
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(loc, scale), obs=x)


def poisson_mixture(x):
    weights = pyro.param("weights", torch.tensor([0.5, 0.5]), constraint=constraints.simplex)
    rates = pyro.param("rates", torch.tensor([1.0, 4.0]), constraint=constraints.positive)
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Poisson(rates[z]), obs=x)


@pytest.mark.parametrize("batch_size", [None, 64])
def test_recovers_normal_parameters(batch_size):
    torch.manual_seed(0)
    x = 2.0 + 0.5 * torch.randn(1000)
    result = probgen.fit(normal_model, x, num_steps=600, optim=0.05, batch_size=batch_size,
                         seed=0, progress=False)
    assert len(result.losses) == 600
    assert abs(pyro.param("loc").item() - x.mean().item()) < 0.05
    assert abs(pyro.param("scale").item() - x.std().item()) < 0.05


@pytest.mark.parametrize("batch_size", [None, 200])
def test_recovers_mixture_with_enumerated_assignments(batch_size):
    torch.manual_seed(0)
    z = torch.bernoulli(torch.full((3000,), 0.3)).long()
    x = dist.Poisson(torch.tensor([2.0, 10.0])[z]).sample()
    probgen.fit(poisson_mixture, x, num_steps=500, optim=0.05, batch_size=batch_size, seed=0,
                progress=False)
    weights, rates = pyro.param("weights"), pyro.param("rates")
    assert abs(weights[1].item() - 0.3) < 0.04
    assert abs(rates[0].item() - 2.0) < 0.25 and abs(rates[1].item() - 10.0) < 0.4


def test_minibatch_scaling_leaves_global_prior_unscaled():
    """With a global latent, the mini-batch loss must estimate the full-data loss (N/B on the
    data plate only): its average over batches equals the full-batch loss of the same params."""
    torch.manual_seed(0)
    x = torch.randn(100) + 1.0

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x):
        pyro.sample("mu", dist.Delta(torch.tensor(0.7)))

    from probgen.core.program import DataPlateScale

    elbo = pyro.infer.Trace_ELBO()
    full = elbo.loss(model, guide, x)
    parts = [elbo.loss(DataPlateScale("data", 4.0)(model), DataPlateScale("data", 4.0)(guide),
                       x[i:i + 25]) for i in range(0, 100, 25)]
    assert sum(parts) / 4 == pytest.approx(full, rel=1e-5)


def test_auto_normal_guide_for_global_continuous_latent():
    torch.manual_seed(0)
    x = torch.randn(200) + 3.0

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    result = probgen.fit(model, x, num_steps=800, optim=0.05, seed=0, progress=False)
    posterior_mean = x.sum() / (len(x) + 1 / 100)
    assert abs(result.guide.median()["mu"].item() - posterior_mean.item()) < 0.05


def test_local_latents_with_minibatches_need_amortized_guide():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(ValueError, match="amortized guide"):
        probgen.fit(model, torch.randn(50), batch_size=10, num_steps=2, progress=False)


def test_seed_makes_runs_reproducible():
    x = torch.randn(300) * 2
    a = probgen.fit(normal_model, x, num_steps=50, batch_size=32, seed=3, progress=False).losses
    pyro.clear_param_store()
    b = probgen.fit(normal_model, x, num_steps=50, batch_size=32, seed=3, progress=False).losses
    assert a == b


def test_callback_can_stop_early():
    result = probgen.fit(normal_model, torch.randn(20), num_steps=100, progress=False,
                         callbacks=[lambda state: state.step >= 9])
    assert result.stopped_early and len(result.losses) == 10


@pytest.mark.parametrize("bad_step,good_step", [(5, 0), (10, 0), (11, 10), (13, 10)])
def test_divergence_stops_and_keeps_last_good_parameters(tmp_path, bad_step, good_step):
    assert ROLLBACK_EVERY == 10
    blow_up = {"now": False}
    seen = {-1: 0.0}  # loc after each step; step -1: the initial value

    def model(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)
        if blow_up["now"]:
            pyro.factor("blow_up", torch.tensor(-float("inf")))

    def remember(state):
        seen[state.step] = pyro.param("loc").item()
        blow_up["now"] = state.step + 1 >= bad_step

    checkpoint = tmp_path / "run.pt"
    with pytest.raises(TrainingDiverged, match=f"step {bad_step}.*rolled back to step "
                       f"{good_step}") as caught:
        probgen.fit(model, torch.full((10,), 5.0), num_steps=50, optim=0.1, progress=False,
                    checkpoint=checkpoint, callbacks=[remember])
    # The snapshot at good_step holds the parameters left by step good_step - 1 (finite loss).
    assert pyro.param("loc").item() == seen[good_step - 1]
    assert caught.value.step == bad_step and len(caught.value.result.losses) == bad_step
    saved = probgen.core.checkpoint.load_checkpoint(checkpoint)
    assert saved["step"] == good_step and len(saved["losses"]) == good_step
    assert saved["param_store"]["params"]["loc"].item() == seen[good_step - 1]


@pytest.mark.parametrize("kwargs,match", [
    ({"batch_size": 0}, "batch_size"), ({"batch_size": 10**6}, "exceeds"),
    ({"num_steps": -1}, "num_steps"), ({"num_steps": 5, "epochs": 1}, "not both"),
    ({"optim": -0.1}, "learning rate"), ({"loss": "bogus"}, "unknown loss"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        probgen.fit(normal_model, torch.randn(20), progress=False, **kwargs)


def test_model_without_data_plate_is_explained():
    def model(x):
        pyro.sample("x", dist.Normal(0.0, 1.0).expand([len(x)]).to_event(1), obs=x)

    with pytest.raises(ValueError, match="pyro.plate"):
        probgen.fit(model, torch.randn(8), num_steps=1, progress=False)


def test_fit_steps_only_the_parameters_its_program_used():
    pyro.param("bystander", torch.tensor(1.0))
    bystander = pyro.get_param_store().get_param("bystander").unconstrained()
    bystander.grad = torch.tensor(5.0)  # a stale gradient left by someone else's code
    probgen.fit(normal_model, torch.full((20,), 2.0), num_steps=30, optim=0.1, progress=False)
    assert pyro.param("bystander").item() == 1.0 and bystander.grad is None
    assert pyro.param("loc").item() > 1.5


def test_fit_matches_a_hand_written_adam_loop():
    """fit = Trace_ELBO gradients + Adam, step for step (fused kernel or not)."""
    x = torch.randn(30) + 1.0
    probgen.fit(normal_model, x, num_steps=40, optim=0.05, loss="trace", progress=False, seed=0)
    fitted = {name: pyro.param(name).detach().clone() for name in ("loc", "scale")}

    pyro.clear_param_store()
    loc = torch.tensor(0.0, requires_grad=True)
    log_scale = torch.tensor(0.0, requires_grad=True)
    optimizer = torch.optim.Adam([loc, log_scale], lr=0.05)
    for _ in range(40):
        loss = -dist.Normal(loc, log_scale.exp()).log_prob(x).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert fitted["loc"].item() == pytest.approx(loc.item(), abs=1e-6)
    assert fitted["scale"].item() == pytest.approx(log_scale.exp().item(), abs=1e-6)
    assert abs(loc.item() - 0.0) > 0.5  # 40 steps of lr 0.05 moved it


@pytest.mark.parametrize("args,expected", [
    ({"lr": 0.1}, True), ({"lr": 0.1, "foreach": True}, False), ({"lr": 0.1, "fused": False}, False),
])
def test_fused_kernel_only_where_it_applies(args, expected):
    from probgen.infer.svi import _TorchAdam

    real = torch.zeros(3, requires_grad=True)
    real.grad = torch.ones(3)
    adam = _TorchAdam(args)
    adam({"p": real})
    assert bool(adam.optimizer.defaults.get("fused")) is expected
    complex_param = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
    complex_param.grad = torch.ones(3, dtype=torch.complex64)
    adam = _TorchAdam({"lr": 0.1})
    adam({"p": complex_param})
    assert not adam.optimizer.defaults.get("fused")
