"""probgen.testing.check_model: every registered family keeps the contract; planted breaks fail it."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import probgen
from probgen.core.model import GenerativeModel
from probgen.models.registry import MODEL_REGISTRY, import_families, register_model
from probgen.testing import ContractBroken, check_model

import_families()

_binary = torch.bernoulli(torch.full((24, 6), 0.4, dtype=torch.float64),
                          generator=torch.Generator().manual_seed(0)).float()
_real = torch.randn(24, 2, generator=torch.Generator().manual_seed(1))

# every registered family, a tiny configuration and data it accepts
FAMILIES = {
    "gmm": (lambda: MODEL_REGISTRY["gmm"](2, 2), _real),
    "bernoulli_mixture": (lambda: MODEL_REGISTRY["bernoulli_mixture"](2, 6), _binary),
    "hmm": (lambda: MODEL_REGISTRY["hmm"](2, num_features=2), _real.reshape(6, 4, 2)),
    "vae": (lambda: MODEL_REGISTRY["vae"]((6,), latent_dim=2, hidden_features=(8,)), _binary),
    "vqvae": (lambda: MODEL_REGISTRY["vqvae"]((6,), num_codes=3, num_positions=2,
                                              hidden_features=(8,)), _binary),
    "hierarchical_vae": (lambda: MODEL_REGISTRY["hierarchical_vae"](
        (6,), latent_dims=(3, 2), hidden_features=((8,), (8,))), _binary),
    "flow_vae": (lambda: MODEL_REGISTRY["flow_vae"]((6,), latent_dim=2, hidden_features=(8,),
                                                    flow_hidden=(8,)), _binary),
    "flow": (lambda: MODEL_REGISTRY["flow"](2, transforms=2, hidden=(8,)), _real),
    "made": (lambda: MODEL_REGISTRY["made"](6, (12,), dropout=0.2), _binary),
    "pixelcnn": (lambda: MODEL_REGISTRY["pixelcnn"]((3, 3), channels=4, layers=2, head_channels=8),
                 _binary[:, :1].repeat(1, 9).reshape(24, 1, 3, 3)),
    "rbm": (lambda: MODEL_REGISTRY["rbm"](6, 3), _binary),
    "gaussian_rbm": (lambda: MODEL_REGISTRY["gaussian_rbm"](2, 3), _real),
    "ebm": (lambda: MODEL_REGISTRY["ebm"](2, hidden_sizes=(8,)), _real),
    "diffusion": (lambda: MODEL_REGISTRY["diffusion"](2, hidden_features=(16,), num_steps=20), _real),
    "flow_matching": (lambda: MODEL_REGISTRY["flow_matching"](2, hidden_features=(8,)), _real),
    "latent_diffusion": (lambda: MODEL_REGISTRY["latent_diffusion"](
        6, latent_features=2, hidden_features=(8,), denoiser_features=(8,), num_steps=20), _binary),
}
METHOD_OPTIONS = {"two_stage": {"vae_steps": 1}}


def test_every_registered_family_has_a_case():
    bundled = {name for name, cls in MODEL_REGISTRY.items() if cls.__module__.startswith("probgen.")}
    assert set(FAMILIES) == bundled, "add the new family to FAMILIES"


def test_a_reloaded_model_scores_like_the_saved_one(tmp_path):
    """probgen.load returns the model in evaluation mode, as fit does (dropout off)."""
    made = MODEL_REGISTRY["made"](6, (12,), dropout=0.3).eval()
    probgen.save(made, tmp_path / "made.pt")
    loaded = probgen.load(tmp_path / "made.pt")
    assert not loaded.training
    assert torch.equal(loaded.log_prob(_binary), made.log_prob(_binary))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_keeps_the_contract(name):
    factory, data = FAMILIES[name]
    report = check_model(factory, data, method_options=METHOD_OPTIONS, new_process=True)
    assert report.passed, str(report)
    statuses = {check.name: check.status for check in report.checks}
    assert statuses["save/load"] == "passed" and statuses["training methods"] == "passed"


# --- planted breaks: each must be caught by the check named -----------------------------------

class _Bernoulli(GenerativeModel):
    """Independent Bernoulli pixels: an exact model small enough to plant breaks in."""

    has_exact_log_prob = True
    data_space = "discrete"
    support = "binary"

    def __init__(self, features: int = 6) -> None:
        super().__init__(features=features)
        self.logits = nn.Parameter(torch.linspace(-1, 1, features))

    def event_shape(self) -> tuple[int, ...]:
        return (self.config["features"],)

    def model(self, x: torch.Tensor) -> None:
        pyro.module(self.pyro_name, self)
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Bernoulli(logits=self.logits).to_event(1), obs=x)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return dist.Bernoulli(logits=self.logits).to_event(1).log_prob(x)

    def sample(self, num_samples: int) -> torch.Tensor:
        return dist.Bernoulli(logits=self.logits).sample((num_samples,))


register_model("test_check_model_bernoulli")(_Bernoulli)


class _NotNormalized(_Bernoulli):
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return super().log_prob(x) + 0.05  # p sums to e^0.05 = 1.05


class _UnusedParameter(_Bernoulli):
    def __init__(self, features: int = 6) -> None:
        super().__init__(features)
        self.temperature = nn.Parameter(torch.ones(()))  # never reaches the likelihood


class _DropsABuffer(_Bernoulli):
    def __init__(self, features: int = 6) -> None:
        super().__init__(features)
        self.register_buffer("shift", torch.zeros(features), persistent=False)  # not saved
        with torch.no_grad():
            self.shift.add_(0.3)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return dist.Bernoulli(logits=self.logits + self.shift).to_event(1).log_prob(x)


def test_a_correct_model_passes():
    report = check_model(_Bernoulli(), _binary, new_process=False)
    assert report.passed, str(report)


@pytest.mark.parametrize(("broken", "check"), [
    (_NotNormalized, "normalized"), (_UnusedParameter, "gradients"), (_DropsABuffer, "save/load"),
], ids=["not normalized", "parameter without gradient", "save drops a buffer"])
def test_planted_breaks_are_caught(broken, check):
    report = check_model(broken(), _binary, new_process=False)
    failed = {c.name: c.detail for c in report.failed}
    assert check in failed, str(report)
    with pytest.raises(ContractBroken, match=check):
        check_model(broken(), _binary, new_process=False, raise_on_failure=True)


def test_a_model_left_in_training_mode_is_caught():
    class _Dropout(_Bernoulli):
        def __init__(self, features: int = 6) -> None:
            super().__init__(features)
            self.drop = nn.Dropout(0.5)

        def log_prob(self, x: torch.Tensor) -> torch.Tensor:
            return dist.Bernoulli(logits=self.drop(self.logits)).to_event(1).log_prob(x)

    model = _Dropout().train()
    report = check_model(model, _binary, new_process=False)  # check_model evaluates in eval()
    assert {c.name for c in report.failed} <= {"save/load"}, str(report)


def test_refuses_what_is_not_a_model():
    with pytest.raises(TypeError, match="takes a probgen GenerativeModel"):
        check_model(3, _binary)
    with pytest.raises(TypeError, match="takes a probgen GenerativeModel"):
        check_model(lambda x: None, _binary)


def test_a_deep_copy_trains_under_a_name_of_its_own():
    """Two copies fitted in one process (an ensemble) each train their own parameters."""
    import copy

    original = MODEL_REGISTRY["vae"]((6,), latent_dim=2, hidden_features=(8,))
    twin = copy.deepcopy(original)
    assert twin.pyro_name != original.pyro_name
    before = [p.detach().clone() for p in twin.parameters()]
    probgen.fit(original, _binary, num_steps=3, progress=False, seed=0)
    probgen.fit(twin, _binary, num_steps=3, progress=False, seed=0)  # store not cleared
    assert all(not torch.equal(b, p) for b, p in zip(before, twin.parameters()))
    for a, b in zip(original.parameters(), twin.parameters()):  # same start, same seed
        torch.testing.assert_close(a, b)
