"""Checkpoints: atomic, weights_only, exact resume, crafted pickles refused, save/load models."""

import os
import pickle
import tempfile

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn
from torch.distributions import constraints

import probgen
from probgen.core.checkpoint import CheckpointError, atomic_save, load_checkpoint
from probgen.core.model import GenerativeModel
from probgen.models.registry import register_model


def model(x):
    loc = pyro.param("loc", torch.zeros(2))
    scale = pyro.param("scale", torch.ones(2), constraint=constraints.positive)
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(loc, scale).to_event(1), obs=x)


def test_atomic_save_leaves_no_temp_files(tmp_path):
    path = tmp_path / "c.pt"
    atomic_save({"format": "x", "a": torch.ones(3)}, path)
    atomic_save({"format": "x", "a": torch.zeros(3)}, path)
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]
    assert torch.equal(load_checkpoint(path)["a"], torch.zeros(3))


# where the crafted pickle would write if it ran (never an absolute machine path)
MARKER = os.path.join(tempfile.gettempdir(), "probgen_pwned_marker")


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def test_crafted_pickle_is_refused_and_never_runs(tmp_path):
    marker = MARKER
    if os.path.exists(marker):
        os.unlink(marker)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "probgen-fit", "payload": _Exploit()}, f)
    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint(path)
    torch.save({"format": "probgen-model", "payload": _Exploit()}, tmp_path / "evil2.pt")
    with pytest.raises(CheckpointError, match="refusing"):
        probgen.load(tmp_path / "evil2.pt")
    assert not os.path.exists(marker)


def test_resume_continues_exactly(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(300, 2) * 3 + 1
    full = probgen.fit(model, x, num_steps=40, batch_size=64, seed=7, optim=0.05, progress=False)
    expected = {k: v.clone() for k, v in full.params.items()}
    pyro.clear_param_store()
    path = tmp_path / "run.pt"
    probgen.fit(model, x, num_steps=20, batch_size=64, seed=7, optim=0.05, progress=False,
                checkpoint=path)
    pyro.clear_param_store()  # as in a fresh process
    resumed = probgen.fit(model, x, num_steps=40, batch_size=64, seed=7, optim=0.05,
                          progress=False, checkpoint=path, resume=True)
    assert resumed.num_steps == 40 and resumed.losses[:20] == full.losses[:20]
    for name, value in expected.items():
        torch.testing.assert_close(resumed.params[name], value)


def test_resume_with_other_settings_is_refused(tmp_path):
    x = torch.randn(50, 2)
    path = tmp_path / "run.pt"
    probgen.fit(model, x, num_steps=5, batch_size=10, progress=False, checkpoint=path)
    with pytest.raises(CheckpointError, match="batch_size"):
        probgen.fit(model, x, num_steps=10, batch_size=20, progress=False, checkpoint=path,
                    resume=True)


@register_model("test_normal_latent")
class NormalLatentModel(GenerativeModel):
    """mu ~ N(0, prior_scale); x ~ N(mu, noise): a global latent, so fit builds AutoNormal."""

    def __init__(self, num_features: int = 2, prior_scale: float = 10.0):
        super().__init__(num_features=num_features, prior_scale=prior_scale)
        self.log_noise = nn.Parameter(torch.zeros(num_features))

    def event_shape(self):
        return (self.config["num_features"],)

    def model(self, x):
        pyro.module(self.pyro_name, self)
        d = self.config["num_features"]
        mu = pyro.sample("mu", dist.Normal(torch.zeros(d), self.config["prior_scale"]).to_event(1))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, self.log_noise.exp()).to_event(1), obs=x)


def test_save_and_load_model_with_its_guide(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(200, 2) * 0.5 + torch.tensor([2.0, -1.0])
    fitted = NormalLatentModel()
    probgen.fit(fitted, x, num_steps=300, optim=0.05, seed=0, progress=False)
    median = {k: v.clone() for k, v in fitted.autoguide.median().items()}
    noise = fitted.log_noise.detach().clone()
    probgen.save(fitted, tmp_path / "m.pt")
    pyro.clear_param_store()  # as in a fresh process
    loaded = probgen.load(tmp_path / "m.pt")
    assert isinstance(loaded, NormalLatentModel) and loaded.config == fitted.config
    torch.testing.assert_close(loaded.log_noise.detach(), noise)
    torch.testing.assert_close(loaded.autoguide.median(x)["mu"], median["mu"])


def test_save_of_a_bare_program_says_to_save_the_fit_result(tmp_path):
    with pytest.raises(TypeError, match="FitResult of probgen.fit"):
        probgen.save(model, tmp_path / "x.pt")


def test_checkpoints_follow_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        probgen.fit(model, torch.randn(10, 2), num_steps=2, progress=False,
                    checkpoint=tmp_path / "r.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.pt").stat().st_mode) == 0o644


def test_evaluate_uses_the_guide_fit_attached_to_a_bundled_model(tmp_path):
    """A bundled model without its own guide gets fit's AutoNormal; evaluate uses it, also after
    save/load, without guide=."""
    torch.manual_seed(0)
    x = torch.randn(100, 2) * 0.5 + torch.tensor([2.0, -1.0])
    fitted = NormalLatentModel()
    probgen.fit(fitted, x, num_steps=200, optim=0.05, seed=0, progress=False)
    implicit = probgen.evaluate(fitted, x, seed=3)  # predictive over the guide's posterior draws
    explicit = probgen.evaluate(fitted, x, seed=3, guide=fitted.autoguide)
    assert implicit.settings["posterior"].startswith("AutoNormal guide")
    torch.testing.assert_close(implicit.per_example, explicit.per_example)
    probgen.save(fitted, tmp_path / "m.pt")
    pyro.clear_param_store()
    loaded = probgen.load(tmp_path / "m.pt")
    again = probgen.evaluate(loaded, x, seed=3)
    torch.testing.assert_close(again.per_example, implicit.per_example)
