"""GenerativeClassifier: naive Bayes against scikit-learn (GaussianNB, BernoulliNB), user Pyro
programs per class, mixtures beating naive Bayes on the 8x8 digits, the kind label of the joint
log-likelihood, and errors at the boundary."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoNormal
from sklearn.naive_bayes import BernoulliNB, GaussianNB
from torch.distributions import constraints

from probgen.data.bundled import load_dataset, train_test_split
from probgen.models.classifier import GenerativeClassifier
from probgen.models.mixture import BernoulliMixture, BernoulliMixturePrior, GaussianMixture
from probgen.models.vae import VAE

VAR_SMOOTHING = 1e-9
GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "classifier.md"


def gaussian_classes(num_examples: int = 300, features: int = 4, num_classes: int = 3,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Classes with different means and per-feature scales, unequal class sizes (float64)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(num_classes, size=num_examples, p=np.linspace(1, 2, num_classes) /
                   np.linspace(1, 2, num_classes).sum())
    locs = rng.normal(0, 1.5, size=(num_classes, features))
    scales = rng.uniform(0.5, 2.0, size=(num_classes, features))
    return locs[y] + scales[y] * rng.normal(size=(num_examples, features)), y


def binary_classes(num_examples: int = 400, features: int = 12, num_classes: int = 3,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, size=num_examples)
    probs = rng.uniform(0.05, 0.95, size=(num_classes, features))
    return (rng.random((num_examples, features)) < probs[y]).astype(np.float64), y


def gaussian_naive_bayes(x: np.ndarray, num_classes: int) -> GenerativeClassifier:
    """One diagonal Gaussian per class by EM (maximum likelihood: one M-step), with GaussianNB's
    variance floor var_smoothing · max_d Var(x_d) as reg_covar."""
    reg_covar = VAR_SMOOTHING * x.var(0).max()
    return GenerativeClassifier(
        lambda c: GaussianMixture(1, x.shape[1], "diag", reg_covar=reg_covar).double(), num_classes)


# --- naive Bayes is the independent-feature special case ------------------------------------
def test_diagonal_gaussian_per_class_is_gaussian_naive_bayes():
    x, y = gaussian_classes()
    x_test, _ = gaussian_classes(seed=1)
    classifier = gaussian_naive_bayes(x, 3).fit(x, y, num_steps=3, progress=False)
    reference = GaussianNB(var_smoothing=VAR_SMOOTHING).fit(x, y)
    np.testing.assert_allclose(classifier.predict_joint_log_proba(x_test).numpy(),
                               reference.predict_joint_log_proba(x_test), rtol=0, atol=1e-4)
    np.testing.assert_allclose(classifier.predict_log_proba(x_test).numpy(),
                               reference.predict_log_proba(x_test), rtol=0, atol=1e-4)
    np.testing.assert_allclose(classifier.predict_proba(x_test).numpy(),
                               reference.predict_proba(x_test), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(classifier.predict(x_test).numpy(), reference.predict(x_test))
    assert classifier.score(x, y) == pytest.approx(reference.score(x, y))


@pytest.mark.parametrize("prior_smoothing", [0.0, 3.0])
def test_bernoulli_per_class_is_bernoulli_naive_bayes(prior_smoothing):
    """Laplace smoothing (BernoulliNB(alpha=1)) is MAP EM under Beta(2, 2); a smoothed class
    prior is (N_c + α) / (N + Cα), given to scikit-learn as class_prior."""
    x, y = binary_classes()
    x_test, _ = binary_classes(seed=1)
    classifier = GenerativeClassifier(lambda c: BernoulliMixture(1, 12).double(), 3,
                                      prior_smoothing=prior_smoothing)
    classifier.fit(x, y, num_steps=3, prior=BernoulliMixturePrior(), progress=False)
    counts = np.bincount(y) + prior_smoothing
    reference = BernoulliNB(alpha=1.0, class_prior=counts / counts.sum()).fit(x, y)
    np.testing.assert_allclose(classifier.predict_joint_log_proba(x_test).numpy(),
                               reference.predict_joint_log_proba(x_test), rtol=0, atol=1e-4)
    np.testing.assert_allclose(classifier.predict_log_proba(x_test).numpy(),
                               reference.predict_log_proba(x_test), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(classifier.predict(x_test).numpy(), reference.predict(x_test))


def test_heldout_joint_is_each_rows_own_class_column():
    x, y = gaussian_classes()
    x_test, y_test = gaussian_classes(seed=1)
    classifier = gaussian_naive_bayes(x, 3).fit(x, y, num_steps=3, progress=False)
    joint = classifier.evaluate(x_test, y_test)
    reference = GaussianNB(var_smoothing=VAR_SMOOTHING).fit(x, y)
    expected = reference.predict_joint_log_proba(x_test)[np.arange(len(y_test)), y_test]
    np.testing.assert_allclose(joint.per_example.numpy(), expected, rtol=0, atol=1e-4)
    assert (joint.kind, joint.estimator, joint.data_space, joint.num_dims) == (
        "exact", "exact", "continuous", 4)
    per_class = joint.settings["per_class"]
    assert [entry["class"] for entry in per_class] == [0, 1, 2]
    assert sum(entry["num_examples"] for entry in per_class) == len(y_test)


# --- user programs ---------------------------------------------------------------------------
def independent_gaussian(c: int):
    """Class c's program: a diagonal Gaussian whose parameters carry the class in their names."""
    def model(x):
        loc = pyro.param(f"loc_{c}", lambda: x.mean(0))  # each class starts at its data's mean
        scale = pyro.param(f"scale_{c}", torch.ones(x.shape[1], dtype=x.dtype),
                           constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, scale).to_event(1), obs=x)

    return model


def test_a_user_program_per_class_is_fitted_by_svi_to_gaussian_naive_bayes():
    x, y = gaussian_classes()
    classifier = GenerativeClassifier(independent_gaussian, 3)
    classifier.fit(x, y, num_steps=400, optim=0.05, seed=0, progress=False)
    reference = GaussianNB(var_smoothing=VAR_SMOOTHING).fit(x, y)
    store = pyro.get_param_store()
    np.testing.assert_allclose(store["scale_1"].detach().numpy() ** 2, reference.var_[1],
                               rtol=0.02)
    np.testing.assert_allclose(classifier.predict_log_proba(x).numpy(),
                               reference.predict_log_proba(x), atol=0.05)
    assert classifier.evaluate(x, y).kind == "exact"


def test_autoguides_fit_builds_for_one_program_stay_apart_per_class():
    """global_model has no pyro.param: fit builds an AutoNormal per class, named by the class's
    scoped sites (AutoNormal.locs.class0/loc), so class 1 does not reuse class 0's posterior."""
    x, y = gaussian_classes(num_examples=200, num_classes=2)
    classifier = GenerativeClassifier(lambda c: global_model, 2)
    classifier.fit(x, y, num_steps=300, optim=0.05, seed=0, progress=False)
    store = pyro.get_param_store()
    for c in (0, 1):
        posterior_mean = store[f"AutoNormal.locs.class{c}/loc"].detach().numpy()
        np.testing.assert_allclose(posterior_mean, x[y == c].mean(0), atol=0.1)
    joint = classifier.evaluate(x, y, num_draws=20, seed=0)
    assert joint.kind == "estimate" and joint.estimator == "predictive"


def test_programs_sharing_parameters_across_classes_are_refused():
    x, y = gaussian_classes()
    shared = independent_gaussian(0)  # one program, one "loc_0", for every class
    with pytest.raises(ValueError, match=r"classes 0 and 1 share the parameter\(s\) \['loc_0'"):
        GenerativeClassifier(lambda c: shared, 3).fit(x, y, num_steps=1, progress=False)


def latent_model(x):
    """x = z w + noise with a local latent z: a one-factor model."""
    weight = pyro.param("weight", 0.5 * torch.ones(x.shape[1], dtype=x.dtype))
    noise = pyro.param("noise", torch.ones((), dtype=x.dtype), constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=x.dtype), 1.0))
        pyro.sample("x", dist.Normal(z.unsqueeze(-1) * weight, noise).to_event(1), obs=x)


def latent_guide(x):
    """An amortized guide: q(z | x) = N(x·a, softplus(s))."""
    encoder = pyro.param("encoder", 0.1 * torch.ones(x.shape[1], dtype=x.dtype))
    scale = pyro.param("guide_scale", 0.5 * torch.ones((), dtype=x.dtype),
                       constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x @ encoder, scale))


def global_model(x):
    """A global latent mean: held-out scores are the posterior predictive density."""
    loc = pyro.sample("loc", dist.Normal(torch.zeros(x.shape[1], dtype=x.dtype), 3.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)


def naive_gaussian(c: int):
    return GaussianMixture(1, 4, "diag").double()


def per_class_vae(c: int):
    return VAE((4,), latent_dim=2, hidden_features=(8,), likelihood="gaussian").double()


@pytest.mark.parametrize("families, kind", [
    ((naive_gaussian, naive_gaussian), "exact"),
    ((naive_gaussian, lambda c: (latent_model, latent_guide)), "lower_bound"),
    ((per_class_vae, per_class_vae), "lower_bound"),
    ((naive_gaussian, lambda c: (global_model, AutoNormal(global_model))), "estimate"),
    ((lambda c: (latent_model, latent_guide), lambda c: (global_model, AutoNormal(global_model))),
     "estimate"),
], ids=["exact", "exact+iwae", "vae-iwae", "exact+predictive", "iwae+predictive"])
def test_the_joint_is_as_weak_as_its_weakest_class(families, kind):
    x, y = gaussian_classes(num_examples=120, num_classes=2)
    classifier = GenerativeClassifier(lambda c: families[c](c), 2)
    # EM for the Gaussians, SVI (with a learning rate) for the rest
    options = [{} if family is naive_gaussian else {"optim": 0.01} for family in families]
    classifier.fit(x, y, num_steps=30, class_options=options, seed=0, progress=False)
    joint = classifier.evaluate(x, y, seed=0)
    assert joint.kind == kind
    parts = [entry["estimator"] for entry in joint.settings["per_class"]]
    assert joint.estimator == "+".join(sorted(set(parts)))
    assert classifier.log_joint(x, seed=0).shape == (len(x), 2)


def test_iwae_particles_pass_through_and_are_recorded():
    x, y = gaussian_classes(num_examples=120, num_classes=2)
    classifier = GenerativeClassifier(per_class_vae, 2).fit(x, y, num_steps=30, seed=0,
                                                            progress=False)
    joint = classifier.evaluate(x, y, estimator="iwae", k=7, seed=0)
    assert (joint.kind, joint.estimator) == ("lower_bound", "iwae")
    assert [entry["settings"]["k"] for entry in joint.settings["per_class"]] == [7, 7]
    assert all(result.method == "svi" and result.num_steps == 30
               for result in classifier.fit_results)


def test_validation_rows_are_split_by_class():
    x, y = gaussian_classes()
    x_val, y_val = gaussian_classes(seed=2)
    classifier = GenerativeClassifier(per_class_vae, 3)
    classifier.fit(x, y, validation=(x_val, y_val), num_steps=20, validate_every=10, seed=0,
                   progress=False)
    for result in classifier.fit_results:
        assert [step for step, _ in result.validation] == [10, 20]


# --- a richer family per class beats naive Bayes ----------------------------------------------
def test_bernoulli_mixtures_beat_naive_bayes_on_held_out_digits():
    digits = load_dataset("digits")
    x, y = (digits.data >= 8).double(), digits.labels
    train, test = train_test_split(len(x), 0.2, seed=0)

    def classifier(num_components: int) -> GenerativeClassifier:
        return GenerativeClassifier(lambda c: BernoulliMixture(num_components, 64).double(), 10
                                    ).fit(x[train], y[train], num_steps=100, seed=0,
                                          prior=BernoulliMixturePrior(), progress=False)

    naive, mixture = classifier(1), classifier(8)
    naive_correct = naive.predict(x[test]) == y[test]
    mixture_correct = mixture.predict(x[test]) == y[test]
    assert float(naive_correct.double().mean()) == pytest.approx(
        BernoulliNB().fit(x[train], y[train]).score(x[test], y[test]))
    # Paired over the same test rows: the gain must exceed two standard errors.
    gain = mixture_correct.double() - naive_correct.double()
    assert float(gain.mean()) > 2 * float(gain.std() / len(gain) ** 0.5)
    assert mixture.evaluate(x[test], y[test]).mean > naive.evaluate(x[test], y[test]).mean


# --- errors at the boundary ------------------------------------------------------------------
def fitted() -> tuple[GenerativeClassifier, np.ndarray, np.ndarray]:
    x, y = binary_classes(num_examples=60)
    classifier = GenerativeClassifier(lambda c: BernoulliMixture(1, 12).double(), 3)
    return classifier.fit(x, y, num_steps=2, progress=False), x, y


@pytest.mark.parametrize("call, error, message", [
    (lambda c, x, y: c.fit(x, np.r_[y[:-1], 3]), ValueError, "label 3 at row 59"),
    (lambda c, x, y: c.fit(x, np.r_[y[:-1], -1]), ValueError, "label -1"),
    (lambda c, x, y: c.fit(x, y + 0.5), ValueError, "integer class labels"),
    (lambda c, x, y: c.fit(x, y[:-1]), ValueError, "59 labels but x has 60 rows"),
    (lambda c, x, y: c.fit(x, y[:, None]), ValueError, "reshape"),
    (lambda c, x, y: c.fit(x, np.where(y == 2, 0, y)), ValueError, r"class\(es\) \[2\]"),
    (lambda c, x, y: c.fit(x, y.astype(str)), TypeError, "text"),
    (lambda c, x, y: c.fit(np.where(x > 0, np.nan, x), y), ValueError, "NaN"),
    (lambda c, x, y: c.fit(x * 2, y), ValueError, "binary"),
    (lambda c, x, y: c.fit(x, y, guide=lambda x: None), TypeError, "family_factory"),
    (lambda c, x, y: c.evaluate(x, y, guide=lambda x: None), TypeError, "guide"),
    (lambda c, x, y: c.fit(x, y, validation=x), TypeError, "pair"),
    (lambda c, x, y: c.fit(x, y, class_options=[{}]), TypeError, "list of 3 dicts"),
    (lambda c, x, y: c.fit(x, y, class_options=[{}, {}, {"guide": None}]), TypeError, "guide"),
    (lambda c, x, y: c.score(x, y[:10]), ValueError, "10 labels"),
])
def test_bad_inputs_name_the_problem_and_the_fix(call, error, message):
    classifier, x, y = fitted()
    with pytest.raises(error, match=message):
        call(classifier, x, y)


def test_bad_construction_and_unfitted_use():
    x, y = binary_classes(num_examples=30)
    with pytest.raises(TypeError, match="callable"):
        GenerativeClassifier(BernoulliMixture(1, 12), 3)
    with pytest.raises(ValueError, match="num_classes"):
        GenerativeClassifier(lambda c: BernoulliMixture(1, 12), 1)
    with pytest.raises(ValueError, match="prior_smoothing"):
        GenerativeClassifier(lambda c: BernoulliMixture(1, 12), 3, prior_smoothing=-1.0)
    with pytest.raises(RuntimeError, match="call fit"):
        GenerativeClassifier(lambda c: BernoulliMixture(1, 12), 3).predict(x)
    shared = BernoulliMixture(1, 12)
    with pytest.raises(ValueError, match="same model object"):
        GenerativeClassifier(lambda c: shared, 3).fit(x, y)
    with pytest.raises(TypeError, match="returned str"):
        GenerativeClassifier(lambda c: "gmm", 3).fit(x, y)
    with pytest.raises(TypeError, match="tuple of 3"):
        GenerativeClassifier(lambda c: (shared, None, None), 3).fit(x, y)


# --- the guide page runs -----------------------------------------------------------------------
def test_classifier_guide_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert len(blocks) == 3  # digits, a program per class, the VAE's kind
    namespace: dict = {}
    for index, block in enumerate(blocks):
        exec(compile(block, f"{GUIDE.name}[block {index}]", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "accuracy 0.891, log p(x, y) -20.21 ± 0.30 nats (exact)"  # BernoulliNB's
    assert printed[1].startswith("accuracy 0.930") and printed[1].endswith("(exact)")
    assert printed[2] == "exact"
    assert printed[3] == "lower_bound iwae {'k': 20}"
