"""The built-in estimators are declared records, and "auto" is a resolver over the program's facts."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from probgen.core.program import inspect_program
from probgen.evaluate import evaluate
from probgen.evaluate.api import estimator_names
from probgen.evaluate.builtin import BUILTIN_ESTIMATORS, BuiltinEstimator, resolve
from probgen.models.diffusion import DiffusionDensity

X = torch.randn(6, 3)


def no_latents(x):
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(0.0, 1.0).expand([3]).to_event(1), obs=x)


def mixture(x):
    """An enumerable discrete latent per row: exact by summing it out."""
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Categorical(torch.ones(2) / 2))
        loc = torch.tensor([-1.0, 1.0])[c].unsqueeze(-1)
        pyro.sample("x", dist.Normal(loc, torch.ones(3)).to_event(1), obs=x)


def local_gaussian(x):
    """A continuous latent per row: IWAE with a guide."""
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z.unsqueeze(-1), torch.ones(3)).to_event(1), obs=x)


def local_guide(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(0.0, 1.0))


def global_mean(x):
    """A latent shared by every row: the held-out predictive density."""
    mean = pyro.sample("mean", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(mean, 1.0).expand([len(x), 3]).to_event(1), obs=x)


def facts(program):
    return inspect_program(program, (X,))


def test_each_builtin_is_a_declared_record():
    assert tuple(BUILTIN_ESTIMATORS) == ("exact", "elbo", "iwae", "predictive")
    for name, record in BUILTIN_ESTIMATORS.items():
        assert isinstance(record, BuiltinEstimator)
        assert record.name == name and callable(record.function)
        assert record.options == ()  # no keyword beyond evaluate's own arguments
    assert "fast" in BUILTIN_ESTIMATORS["exact"].reads
    assert {"guide", "k", "refit_steps"} <= set(BUILTIN_ESTIMATORS["iwae"].reads)
    assert {"posterior", "num_draws"} <= set(BUILTIN_ESTIMATORS["predictive"].reads)
    assert estimator_names(no_latents)[:5] == ("auto", "exact", "elbo", "iwae", "predictive")


@pytest.mark.parametrize("program, guide, expected", [
    (no_latents, None, "exact"),
    (mixture, None, "exact"),
    (local_gaussian, local_guide, "iwae"),
    (global_mean, None, "predictive"),
])
def test_auto_resolves_over_the_programs_facts(program, guide, expected):
    assert resolve("auto", facts(program), guide=guide) == expected


def test_auto_without_a_guide_for_continuous_latents_is_refused():
    with pytest.raises(ValueError, match="continuous latents and no guide was given"):
        resolve("auto", facts(local_gaussian))


def test_auto_is_a_bundled_models_default_before_any_inspection():
    assert DiffusionDensity.default_estimator == "vlb"
    assert resolve("auto", default=DiffusionDensity.default_estimator) == "vlb"
    assert resolve("auto", facts(no_latents), default="vlb") == "vlb"
    assert resolve("exact", default="vlb") == "exact"  # only "auto" takes the default


def test_explicit_names_the_facts_redirect():
    assert resolve("exact", facts(global_mean)) == "predictive"
    assert resolve("elbo", facts(no_latents), posterior={"mean": torch.zeros(2)}) == "predictive"
    with pytest.raises(ValueError, match="a per-example iwae bound does not apply"):
        resolve("iwae", facts(global_mean))


@pytest.mark.parametrize("program, estimator, guide, expected", [
    (no_latents, "auto", None, "exact"), (mixture, "auto", None, "exact"),
    (local_gaussian, "auto", local_guide, "iwae"), (local_gaussian, "elbo", local_guide, "elbo")])
def test_evaluate_runs_the_resolved_record(program, estimator, guide, expected):
    result = evaluate(program, X, estimator=estimator, guide=guide, k=4, seed=0)
    assert result.estimator == expected


@pytest.mark.parametrize("program, estimator, name", [
    (no_latents, "exact", "exact"), (no_latents, "auto", "exact"),
    (local_gaussian, "elbo", "elbo"), (global_mean, "auto", "predictive")])
def test_an_unknown_option_for_a_builtin_is_refused(program, estimator, name):
    guide = local_guide if program is local_gaussian else None
    with pytest.raises(TypeError, match=rf"^unexpected options for estimator '{name}': "
                                        r"\['bogus'\]$"):
        evaluate(program, X, estimator=estimator, guide=guide, bogus=1)
