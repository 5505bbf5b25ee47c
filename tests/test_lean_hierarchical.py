"""The plain-torch training path of the hierarchical (ladder and bottom-up) and flow-posterior
VAEs, and KL warm-up / free bits on the lean path, against Pyro's generic SVI on the same noise:
values, gradients, validation, whole fits; the learned priors held during warm-up on both."""

import copy
import functools

import pyro
import pytest
import torch

import probgen
from probgen.infer.method import TrainingSetup
from probgen.infer.objectives import in_kl_warmup, kl_warmup
from probgen.infer.svi import SVI
from probgen.models import hierarchical
from probgen.models.flow_vae import FlowVAE, FlowVAESVI
from probgen.models.hierarchical import HierarchicalSVI, HierarchicalVAE
from probgen.models.lean_svi import LeanSVI

HIERARCHICAL = {
    "ladder": dict(),
    "bottom_up": dict(inference="bottom_up"),
    "ladder_iaf": dict(top_posterior="iaf", flow_hidden=(8,)),
    "bottom_up_nsf": dict(inference="bottom_up", top_posterior="nsf", flow_hidden=(8,)),
    "own_warmup": dict(warmup_steps=5, free_bits=0.3),  # LadderELBO's own β and floor
    "ladder_layer_norm": dict(normalization="layer"),
    "bottom_up_layer_norm": dict(inference="bottom_up", normalization="layer"),
    "three_gaussian": dict(latent_dims=(3, 2, 2), hidden_features=(8, 8, (6,)),
                           likelihood="gaussian"),
}
FLOW = {
    "iaf": dict(),
    "nsf": dict(posterior="nsf"),
    "beta": dict(beta=2.0),
    "standard_base": dict(gaussian_base=False, likelihood="gaussian"),
}
LOSSES = {  # fit's options: the default loss, named bounds, warm-up (β < 1) and free bits
    "default": dict(),
    "trace": dict(loss="trace"),
    "mean_field_particles": dict(loss="mean_field", num_particles=3),
    "trace_particles": dict(loss="trace", num_particles=2),
    "iwae": dict(loss="iwae", num_particles=4),
    "warmup_free_bits": dict(kl_warmup_steps=10, free_bits=0.5),
    "free_bits_floor_active": dict(free_bits=3.0, num_particles=2),
}


def make(family: str, name: str):
    """A float64 model of ``family`` ("hierarchical" or "flow") and config ``name``, and data."""
    torch.manual_seed(0)
    if family == "hierarchical":
        options = dict(latent_dims=(3, 2), hidden_features=(8, (6,))) | HIERARCHICAL[name]
        model = HierarchicalVAE((6,), **options).double()
    else:
        model = FlowVAE((6,), latent_dim=3, hidden_features=(16,), flow_hidden=(8,),
                        **FLOW[name]).double()
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(10, 6, generator=generator, dtype=torch.float64)
    if model.likelihood == "bernoulli":
        x = torch.bernoulli(x, generator=generator)
    return model, x


def method(cls, model, x, **options):
    return cls(TrainingSetup(model, model.model, options.pop("guide", None), (x,), 40, len(x),
                             **options))


def gradients(model) -> list[torch.Tensor]:
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return grads


CASES = ([("hierarchical", name, loss) for name in HIERARCHICAL for loss in LOSSES]
         + [("flow", name, loss) for name in FLOW for loss in LOSSES])


@pytest.mark.filterwarnings("ignore:Failed to verify mean field")  # bottom-up: sites reordered
@pytest.mark.parametrize(("family", "name", "loss"), CASES)
def test_lean_bound_equals_the_generic_loss_on_the_same_noise(family, name, loss):
    model, x = make(family, name)
    lean_class = HierarchicalSVI if family == "hierarchical" else FlowVAESVI
    generic, lean = method(SVI, model, x, **LOSSES[loss]), method(lean_class, model, x, **LOSSES[loss])
    assert lean.objective is not None
    steps = model.training_steps.clone() if family == "hierarchical" else None
    for seed, step in ((1, 2), (2, 7)):  # β = 0.3 and 0.8 under a 10-step warm-up
        generic.begin_step(step)
        lean.begin_step(step)
        pyro.set_rng_seed(seed)
        expected = generic.elbo.loss_and_grads(model.model, model.guide, x)
        expected_grads = gradients(model)
        if steps is not None:  # LadderELBO counted a step: the lean bound sees the same β
            model.training_steps.copy_(steps)
        pyro.set_rng_seed(seed)
        value = -lean.bound((x,), True)
        value.backward()
        torch.testing.assert_close(value.item(), float(expected), rtol=1e-9, atol=1e-10)
        for got, want in zip(gradients(model), expected_grads):
            torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)
        if steps is not None:
            steps += 1
            model.training_steps.copy_(steps)
    model.eval()  # validation: the true bound (β = 1, no floor)
    pyro.set_rng_seed(3)
    expected = generic.validation_loss((x,))
    pyro.set_rng_seed(3)
    torch.testing.assert_close(lean.validation_loss((x,)), expected, rtol=1e-10, atol=0)


def down_gradients(model) -> list[torch.Tensor]:
    """The gradients of the top-down prior networks ``down`` (zeros where none reached them)."""
    return [torch.zeros_like(p) if p.grad is None else p.grad for p in model.down.parameters()]


@pytest.mark.filterwarnings("ignore:Failed to verify mean field")
@pytest.mark.parametrize("name", ["ladder", "bottom_up", "own_warmup"])
@pytest.mark.parametrize("path", ["generic", "lean"])
def test_warmup_holds_the_learned_priors(name, path, monkeypatch):
    """β < 1: the same bound, but no gradient reaches p(z_l | z_{l+1}) (not from the KL, not
    through the ladder's merge); β = 1: the prior trains. Fit's warm-up and the model's own."""
    model, x = make("hierarchical", name)
    options = {} if name == "own_warmup" else dict(kl_warmup_steps=5)
    svi = method(SVI if path == "generic" else HierarchicalSVI, model, x, **options)
    assert (getattr(svi, "objective", None) is not None) == (path == "lean")

    def step(beta_step: int) -> tuple[float, list[torch.Tensor]]:
        """The training loss at 0-based step ``beta_step`` (seed 1) and ``down``'s gradients."""
        svi.begin_step(beta_step)
        model.training_steps.fill_(beta_step)
        pyro.set_rng_seed(1)
        if path == "generic":
            value = svi.elbo.loss_and_grads(model.model, model.guide, x)
        else:
            loss = -svi.bound((x,), True)
            loss.backward()
            value = loss.item()
        others = [p.grad for n, p in model.named_parameters() if not n.startswith("down.")]
        assert all(g is not None and g.abs().sum() > 0 for g in others)
        grads = [g.clone() for g in down_gradients(model)]
        model.zero_grad(set_to_none=True)
        return value, grads

    warm_value, warm_grads = step(1)  # β = 0.4 (5 steps, fit's or the model's own)
    assert model.kl_weight() == 0.4 or svi.elbo.beta() == 0.4
    assert all(torch.count_nonzero(g) == 0 for g in warm_grads)
    assert not in_kl_warmup()  # the hold ends with the step
    _, grads = step(4)  # β = 1: the prior gets the bound's gradient
    assert all(torch.count_nonzero(g) > 0 for g in grads)
    top_down = hierarchical._top_down  # never held: the same value, the prior's gradient back
    monkeypatch.setattr(hierarchical, "_top_down",
                        lambda vae, layer, z, held: top_down(vae, layer, z, False))
    unheld_value, unheld_grads = step(1)
    assert unheld_value == pytest.approx(warm_value, rel=1e-12)
    assert all(torch.count_nonzero(g) > 0 for g in unheld_grads)


def test_the_warmup_hold_is_a_context_and_top_down_reads_it():
    model, _ = make("hierarchical", "ladder")
    z = torch.randn(4, 2, dtype=torch.float64)
    free = model.top_down(0, z)
    with kl_warmup():
        assert in_kl_warmup()
        held = model.top_down(0, z)
        with kl_warmup(False):  # nested: fit's validation inside a warm-up step
            assert not in_kl_warmup()
        assert in_kl_warmup()
    assert not in_kl_warmup()
    for a, b in zip(free, held):
        assert torch.equal(a, b) and a.requires_grad and not b.requires_grad


def test_the_hierarchical_and_flow_families_declare_the_lean_method():
    assert HierarchicalVAE.methods()["svi"] is HierarchicalSVI
    assert FlowVAE.methods()["svi"] is FlowVAESVI


@pytest.mark.parametrize("case", ["user_guide", "elbo_object", "replaced_program"])
def test_what_the_lean_bound_does_not_cover_keeps_the_generic_path(case):
    for family, lean_class in (("hierarchical", HierarchicalSVI), ("flow", FlowVAESVI)):
        model, x = make(family, "ladder" if family == "hierarchical" else "iaf")
        options = {}
        if case == "user_guide":
            options["guide"] = model.guide
        elif case == "elbo_object":
            options["loss"] = pyro.infer.Trace_ELBO()
        else:
            model.decode = functools.partial(type(model).decode, model)
        assert method(lean_class, model, x, **options).objective is None


FITS = {  # family, config, fit options
    "ladder_own_warmup": ("hierarchical", "own_warmup", dict()),
    "bottom_up_fit_warmup": ("hierarchical", "bottom_up",
                             dict(kl_warmup_epochs=2, free_bits=0.2)),
    "ladder_iaf_iwae": ("hierarchical", "ladder_iaf", dict(loss="iwae", num_particles=3)),
    "flow_vae": ("flow", "iaf", dict()),
    "flow_vae_warmup": ("flow", "nsf", dict(kl_warmup_epochs=1, free_bits=0.5)),
}


@pytest.mark.parametrize("case", list(FITS))
def test_a_lean_fit_retraces_the_generic_fit(case, monkeypatch):
    """Same seed, same steps: the same losses, validation and parameters (float64)."""
    calls = []
    bound = LeanSVI.bound
    monkeypatch.setattr(LeanSVI, "bound", lambda self, *args: calls.append(1) or bound(self, *args))
    family, name, options = FITS[case]
    model, _ = make(family, name)
    generic_model = copy.deepcopy(model)
    x = torch.rand(60, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    transform = torch.bernoulli if model.likelihood == "bernoulli" else None
    settings = dict(num_steps=12, batch_size=20, optim=0.02, seed=4, progress=False,
                    transform=transform, validation=torch.bernoulli(x[:15]), validate_every=4,
                    **options)
    lean = probgen.fit(model, x, **settings)
    assert len(calls) >= 12  # every step took the lean path
    pyro.clear_param_store()
    generic = probgen.fit(generic_model, x, method=SVI, **settings)
    torch.testing.assert_close(lean.losses, generic.losses, rtol=1e-9, atol=0)
    torch.testing.assert_close([v for _, v in lean.validation],
                               [v for _, v in generic.validation], rtol=1e-9, atol=0)
    for got, want in zip(model.parameters(), generic_model.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)
    if family == "hierarchical":
        assert int(model.training_steps) == int(generic_model.training_steps)
