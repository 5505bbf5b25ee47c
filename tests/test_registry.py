"""The family registry: every name builds a GenerativeModel, and a saved bundled VAE reloads."""

import torch

import probgen
from probgen.core.model import GenerativeModel
from probgen.models.registry import MODEL_REGISTRY, get_model_class, import_families
from probgen.models.vae import VAE


def test_every_registered_name_is_a_generative_model():
    import_families()
    assert len(MODEL_REGISTRY) >= 10
    for name, cls in MODEL_REGISTRY.items():
        assert isinstance(cls, type) and issubclass(cls, GenerativeModel), name
        assert get_model_class(name) is cls


def test_a_saved_vae_reloads_with_the_same_likelihood(tmp_path):
    torch.manual_seed(0)
    vae = VAE((12,), latent_dim=2, hidden_features=(8,), likelihood="bernoulli")
    x = torch.bernoulli(torch.full((20, 12), 0.3))
    probgen.save(vae, tmp_path / "vae.pt")
    loaded = probgen.load(tmp_path / "vae.pt")
    assert type(loaded) is VAE
    before = probgen.evaluate(vae, x, estimator="iwae", k=8, seed=0)
    after = probgen.evaluate(loaded, x, estimator="iwae", k=8, seed=0)
    assert torch.allclose(before.per_example, after.per_example)


def test_a_float64_model_reloads_in_float64(tmp_path):
    """load rebuilds in the saved dtype: rounding to float32 would move the scores by ~1e-7."""
    torch.manual_seed(0)
    vae = VAE((12,), latent_dim=2, hidden_features=(8,), likelihood="bernoulli").double()
    x = torch.bernoulli(torch.full((20, 12), 0.3, dtype=torch.float64))
    probgen.save(vae, tmp_path / "vae64.pt")
    loaded = probgen.load(tmp_path / "vae64.pt")
    assert loaded.dtype == torch.float64
    before = probgen.evaluate(vae, x, estimator="iwae", k=8, seed=0).per_example
    after = probgen.evaluate(loaded, x, estimator="iwae", k=8, seed=0).per_example
    assert after.dtype == torch.float64 and torch.equal(before, after)
