"""fit returns every bundled model in evaluation mode: dropout off, log_prob deterministic and
normalized, however the run ends (finished, early stop, divergence, resume)."""

import math
import warnings

import pytest
import torch

import probgen
from probgen.infer.result import TrainingDiverged
from probgen.models.ebm.partition import binary_states
from probgen.models.registry import get_model_class


def binary(n: int, features: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, features), 0.3), generator=generator)


def continuous(n: int, features: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, features, generator=torch.Generator().manual_seed(seed))


# Every registered family, as small as it goes, with data it accepts.
TINY = {
    "bernoulli_mixture": (lambda cls: cls(2, 4), lambda: binary(16, 4)),
    "diffusion": (lambda cls: cls(2, hidden_features=(8,), time_features=4),
                  lambda: continuous(16, 2)),
    "ebm": (lambda cls: cls(2, hidden_sizes=(8,)), lambda: continuous(16, 2)),
    "flow": (lambda cls: cls(2, transforms=1, hidden=(8,)), lambda: continuous(16, 2)),
    "flow_matching": (lambda cls: cls(2, hidden_features=(8,), time_features=4),
                      lambda: continuous(16, 2)),
    "flow_vae": (lambda cls: cls((4,), flow_transforms=1, flow_hidden=(8,)),
                 lambda: binary(16, 4)),
    "gaussian_rbm": (lambda cls: cls(2, 3), lambda: continuous(16, 2)),
    "gmm": (lambda cls: cls(2, 2), lambda: continuous(16, 2)),
    "hierarchical_vae": (lambda cls: cls((4,), latent_dims=(2, 2), hidden_features=((8,), (8,))),
                         lambda: binary(16, 4)),
    "hmm": (lambda cls: cls(2, "gaussian", num_features=2),
            lambda: continuous(20, 2).reshape(4, 5, 2)),
    "latent_diffusion": (lambda cls: cls(4, latent_features=2, hidden_features=(8,),
                                         denoiser_features=(8,)), lambda: binary(16, 4)),
    "made": (lambda cls: cls(4, (8,), dropout=0.3), lambda: binary(16, 4)),
    "pixelcnn": (lambda cls: cls((3, 3), channels=4, layers=2),
                 lambda: binary(8, 9).reshape(8, 1, 3, 3)),
    "rbm": (lambda cls: cls(4, 3), lambda: binary(16, 4)),
    "vae": (lambda cls: cls((4,), latent_dim=2, hidden_features=(8,)), lambda: binary(16, 4)),
    "vqvae": (lambda cls: cls((4,), num_codes=3, num_positions=2, hidden_features=(8,)),
              lambda: binary(16, 4)),
}


def test_every_registered_family_has_a_tiny_case():
    from probgen.models.registry import MODEL_REGISTRY, import_families

    import_families()
    assert set(TINY) == {n for n in MODEL_REGISTRY if not n.startswith("test_")}


@pytest.mark.parametrize("name", sorted(TINY))
def test_fit_returns_every_bundled_model_in_eval_mode(name):
    make, data = TINY[name]
    model = make(get_model_class(name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probgen.fit(model, data(), num_steps=3, seed=0, progress=False)
    assert [n for n, m in model.named_modules() if m.training] == []


def made_on_7_bits(dropout: float = 0.3) -> tuple[torch.nn.Module, torch.Tensor]:
    made = get_model_class("made")(7, (32,), dropout=dropout).double()
    return made, binary(64, 7).double()


def assert_normalized_and_deterministic(made) -> None:
    states = binary_states(7, dtype=torch.float64)
    with torch.no_grad():
        first, second = made.log_prob(states), made.log_prob(states)
    assert torch.equal(first, second)
    assert abs(float(torch.logsumexp(first, 0))) < 1e-6  # Σ_x p(x) = 1 over all 2^7 inputs


def test_made_with_dropout_after_fit_has_a_deterministic_normalized_log_prob():
    made, x = made_on_7_bits()
    probgen.fit(made, x, num_steps=50, batch_size=16, optim=0.01, seed=0, progress=False)
    assert_normalized_and_deterministic(made)


def test_made_is_in_eval_mode_after_early_stop_and_on_resume(tmp_path):
    made, x = made_on_7_bits()
    path = tmp_path / "made.pt"
    probgen.fit(made, x, num_steps=200, batch_size=16, optim=0.05, seed=0, progress=False,
                validation=x[:16], validate_every=1, patience=1, checkpoint=path)
    assert not made.training
    assert_normalized_and_deterministic(made)
    made.train()  # a resume from a checkpoint at its last step takes no step
    probgen.fit(made, x, num_steps=200, batch_size=16, optim=0.05, seed=0, progress=False,
                checkpoint=path, resume=True)
    assert_normalized_and_deterministic(made)


def test_made_is_in_eval_mode_after_divergence():
    made, x = made_on_7_bits()

    def diverge(state) -> None:
        if state.step == 4:
            with torch.no_grad():
                next(made.parameters()).fill_(math.nan)

    with pytest.raises(TrainingDiverged):
        probgen.fit(made, x, num_steps=20, batch_size=16, seed=0, progress=False,
                    callbacks=[diverge])
    assert [n for n, m in made.named_modules() if m.training] == []
    assert_normalized_and_deterministic(made)
