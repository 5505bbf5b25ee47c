"""Declared, not probed: family and demo registration, data-size arguments, chosen classes."""

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
import torch
from torch import nn

import probgen.demo
import probgen.models
from probgen.core.model import GenerativeModel
from probgen.demo.registry import DEMO_ENTRIES, demo_modules, entries_functions
from probgen.demo.registry import HELPER_MODULES as DEMO_HELPERS
from probgen.distributions.flow import Flow, flow_kinds
from probgen.distributions.flow_backends import NflowsBackend, ZukoBackend
from probgen.models.hmm import HMM
from probgen.models.hmm.emissions import (
    BernoulliEmission,
    CategoricalEmission,
    DiagonalGaussianEmission,
    FullGaussianEmission,
)
from probgen.models.registry import FAMILIES, HELPER_MODULES, MODEL_REGISTRY, import_families

import_families()
BUNDLED = {name: cls for name, cls in MODEL_REGISTRY.items() if cls.__module__.startswith("probgen.")}


def _on_disk(package) -> set[str]:
    return {module.name for module in pkgutil.iter_modules(package.__path__)}


# --- families ------------------------------------------------------------------------------
def test_every_family_module_registers_a_model():
    assert set(FAMILIES) == _on_disk(probgen.models) - HELPER_MODULES
    for family in FAMILIES:
        prefix = f"probgen.models.{family}"
        registered = [name for name, cls in BUNDLED.items()
                      if cls.__module__ == prefix or cls.__module__.startswith(prefix + ".")]
        assert registered, (f"{prefix} registers no model: decorate its class with "
                            "@register_model, or add it to registry.HELPER_MODULES")


def test_helper_modules_exist_and_register_nothing():
    assert HELPER_MODULES <= _on_disk(probgen.models), "a stale name in HELPER_MODULES"
    for helper in HELPER_MODULES:
        importlib.import_module(f"probgen.models.{helper}")
        assert not [name for name, cls in BUNDLED.items()
                    if cls.__module__ == f"probgen.models.{helper}"], helper


def test_every_registered_model_lives_in_a_family_module():
    for name, cls in BUNDLED.items():
        assert cls.__module__.split(".")[2] in FAMILIES, (name, cls.__module__)


# --- data-size arguments -------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_data_size_argument_is_declared_and_a_constructor_parameter(name):
    cls = BUNDLED[name]
    declared_on = [klass for klass in cls.__mro__ if "data_size_argument" in klass.__dict__]
    assert declared_on[0] is not GenerativeModel, f"{cls.__name__} declares no data_size_argument"
    argument = cls.data_size_argument
    if argument is not None:
        assert argument in inspect.signature(cls.__init__).parameters, (name, argument)


def test_from_data_fills_the_declared_argument():
    gmm = MODEL_REGISTRY["gmm"].from_data(torch.zeros(10, 3), num_components=2)
    assert gmm.config["num_features"] == 3
    vae = MODEL_REGISTRY["vae"].from_data(torch.zeros(5, 6), latent_dim=2, hidden_features=(8,))
    assert list(vae.config["data_shape"]) == [6]
    given = MODEL_REGISTRY["flow"].from_data(torch.zeros(4, 3), features=3, transforms=1, hidden=(8,))
    assert given.config["features"] == 3
    assert MODEL_REGISTRY["pixelcnn"].data_size_options(torch.zeros(2, 16)) == {}
    assert MODEL_REGISTRY["hmm"].data_size_options(torch.zeros(2, 5, 3)) == {}  # not 2-D


# --- demo entries --------------------------------------------------------------------------
def test_every_demo_module_registers_its_entries_once():
    functions = entries_functions()
    assert set(demo_modules()) == {f"probgen.demo.{name}"
                                   for name in _on_disk(probgen.demo) - DEMO_HELPERS}
    assert set(DEMO_ENTRIES) >= set(demo_modules()), "a demo module without @register_demo"
    for module_name in demo_modules():
        module = importlib.import_module(module_name)
        assert DEMO_ENTRIES[module_name][1] is module.demo_entries
    orders = [order for order, _ in DEMO_ENTRIES.values()]
    assert len(set(orders)) == len(orders), "two demo modules share an order"
    assert len(functions) == len(DEMO_ENTRIES)


def test_demo_modules_keep_their_order():
    order = [function.__module__.rsplit(".", 1)[1] for function in entries_functions()]
    assert order == ["programs", "mixture", "flow", "hmm", "vae", "ebm", "diffusion",
                     "flow_matching", "latent_diffusion", "hierarchical", "vqvae"]


# --- the autoguide -------------------------------------------------------------------------
def test_autoguide_is_declared_and_held_as_a_submodule():
    model = MODEL_REGISTRY["gmm"](2, 2)
    assert model.autoguide is None and model.autoguide_example == ()
    guide = nn.Linear(2, 2)
    model.autoguide = guide
    assert model.autoguide is guide
    assert any(key.startswith("autoguide.") for key in model.state_dict())
    model.autoguide = None
    assert model.autoguide is None
    assert "autoguide" in GenerativeModel.__dict__ and "autoguide_example" in GenerativeModel.__dict__


# --- classes chosen once -------------------------------------------------------------------
def test_flow_backend_is_chosen_once():
    assert isinstance(Flow(2, transforms=1, hidden=(8,)).backend_impl, ZukoBackend)
    flow = Flow(2, backend="nflows", kind="maf", transforms=1, hidden=(8, 8))
    assert isinstance(flow.backend_impl, NflowsBackend) and flow.backend == "nflows"
    assert flow_kinds("nflows") == ("maf", "nsf", "realnvp")
    with pytest.raises(ValueError, match="unknown flow backend 'tf'; choose one of"):
        Flow(2, backend="tf")
    with pytest.raises(ValueError, match="unknown flow backend"):
        flow_kinds("tf")
    source = Path(inspect.getfile(Flow)).read_text()
    assert "backend ==" not in source and "backend !=" not in source


@pytest.mark.parametrize("options, kind", [
    ({"emission": "categorical", "num_categories": 3}, CategoricalEmission),
    ({"emission": "bernoulli", "num_features": 3}, BernoulliEmission),
    ({"emission": "gaussian", "num_features": 3}, DiagonalGaussianEmission),
    ({"emission": "gaussian", "num_features": 3, "covariance": "full"}, FullGaussianEmission),
])
def test_hmm_emission_is_chosen_once(options, kind):
    hmm = HMM(2, **options)
    assert type(hmm.emission_impl) is kind
    assert hmm.support == kind.support and hmm.data_space == kind.data_space


def test_baum_welch_does_not_switch_on_the_emission():
    import probgen.models.hmm.baum_welch as baum_welch

    source = inspect.getsource(baum_welch)
    assert "emission ==" not in source and '"covariance"' not in source
