"""Generative classifiers: a density model per class (naive Bayes, mixtures, a VAE) beside
scikit-learn's GaussianNB, BernoulliNB and LogisticRegression, on the 8x8 digits and binarized
MNIST: test accuracy and held-out log p(x, y) in nats per example, with its kind.

Every probgen model trains through probgen.fit (GenerativeClassifier.fit). Each task has a
train / validation / test split: the number of components is chosen by validation log p(x, y)
of models trained on the train split, and the test split is used only to report.

    python benchmarks/classifier.py            # full run (about 3 minutes on one CPU thread)
    python benchmarks/classifier.py --smoke    # seconds; writes nothing
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import BernoulliNB, GaussianNB

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import print_table, write_results  # noqa: E402
from probgen.core.paths import find_data  # noqa: E402
from probgen.core.result import LogLikelihood  # noqa: E402
from probgen.data.bundled import load_dataset, train_test_split  # noqa: E402
from probgen.data.mnist import load_mnist  # noqa: E402
from probgen.models.classifier import GenerativeClassifier  # noqa: E402
from probgen.models.mixture import (  # noqa: E402
    BernoulliMixture,
    BernoulliMixturePrior,
    ComponentCollapseWarning,
    GaussianMixture,
    GaussianMixturePrior,
)
from probgen.models.vae import VAE  # noqa: E402

VAR_SMOOTHING = 1e-9  # GaussianNB's default; the probgen diagonal Gaussian uses the same floor


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def splits(x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> dict[str, tuple]:
    """Test: 20% (seed 0, as in the tests and docs); validation: 20% of the rest (seed 1)."""
    rest, test = train_test_split(len(x), 0.2, seed=seed)
    train, validation = (rest[i] for i in train_test_split(len(rest), 0.2, seed=seed + 1))
    return {"train": (x[train], y[train]), "validation": (x[validation], y[validation]),
            "test": (x[test], y[test])}


def row(task: str, model: str, accuracy: float, num_test: int, joint: LogLikelihood | None,
        seconds: float, **extra) -> dict:
    """One table row: accuracy ± its binomial stderr, log p(x, y) ± stderr and its kind."""
    result = {"task": task, "model": model, "accuracy": accuracy,
              "accuracy_stderr": math.sqrt(accuracy * (1 - accuracy) / num_test),
              "nats": joint.mean if joint else None, "stderr": joint.stderr if joint else None,
              "kind": joint.kind if joint else "n/a", "estimator": joint.estimator if joint else None,
              "data_space": joint.data_space if joint else None, "train_s": round(seconds, 1),
              "num_test": num_test, **extra}
    shown = f"{result['nats']:.2f} ± {result['stderr']:.2f} nats" if joint else "n/a"
    log(f"{task} | {model}: accuracy {accuracy:.4f}, log p(x, y) {shown} ({seconds:.0f} s)")
    return result


def naive_bayes_row(task: str, reference, data: dict, data_space: str) -> dict:
    """scikit-learn's naive Bayes: its joint log-probability at the true label is an exact
    log p(x, y) of its model."""
    (x, y), (x_test, y_test) = data["train"], data["test"]
    started = time.perf_counter()
    reference.fit(x.numpy(), y.numpy())
    seconds = time.perf_counter() - started
    joint = reference.predict_joint_log_proba(x_test.numpy())[np.arange(len(y_test)), y_test.numpy()]
    ll = LogLikelihood(torch.from_numpy(joint), kind="exact", estimator="closed_form",
                       num_dims=x.shape[1], data_space=data_space)
    accuracy = reference.score(x_test.numpy(), y_test.numpy())
    return row(task, f"sklearn {type(reference).__name__}", accuracy, len(y_test), ll, seconds)


def logistic_row(task: str, data: dict, max_iter: int) -> dict:
    (x, y), (x_test, y_test) = data["train"], data["test"]
    started = time.perf_counter()
    with warnings.catch_warnings():  # stopping at max_iter is the setting recorded
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(max_iter=max_iter).fit(x.numpy(), y.numpy())
    seconds = time.perf_counter() - started
    return row(task, "sklearn LogisticRegression (discriminative)",
               model.score(x_test.numpy(), y_test.numpy()), len(y_test), None, seconds,
               note="models p(y | x) only: no log p(x, y)")


def probgen_row(task: str, name: str, factory, data: dict, *, score_options=None,
                **fit_options) -> dict:
    started = time.perf_counter()
    classifier = GenerativeClassifier(factory, 10).fit(*data["train"], progress=False,
                                                        **fit_options)
    return scored_row(task, name, classifier, time.perf_counter() - started, data,
                      score_options or {})


def scored_row(task: str, name: str, classifier: GenerativeClassifier, seconds: float,
               data: dict, score_options: dict) -> dict:
    x_test, y_test = data["test"]
    accuracy = classifier.score(x_test, y_test, **score_options)
    joint = classifier.evaluate(x_test, y_test, **score_options)
    return row(task, name, accuracy, len(y_test), joint, seconds)


def selected_row(task: str, name: str, family, candidates: list[int], data: dict,
                 **fit_options) -> dict:
    """Classifiers with K components per class, trained on the train split; the one with the
    highest validation log p(x, y) is scored on the test split (its name gets K)."""
    (x_val, y_val), fitted, scores = data["validation"], {}, {}
    for k in candidates:
        started = time.perf_counter()
        classifier = GenerativeClassifier(lambda c, k=k: family(k), 10)
        classifier.fit(*data["train"], progress=False, **fit_options)
        fitted[k] = classifier, time.perf_counter() - started
        scores[k] = {"validation_nats": classifier.evaluate(x_val, y_val).mean,
                     "validation_accuracy": classifier.score(x_val, y_val)}
        log(f"{task}: K={k} validation {scores[k]}")
    best = max(scores, key=lambda k: scores[k]["validation_nats"])
    return scored_row(task, name.format(best), *fitted[best], data, {}) | {"selection": scores}


def binary_rows(task: str, data: dict, args, *, candidates: list[int], em_steps: int,
                vae: bool) -> list[dict]:
    features = data["train"][0].shape[1]
    map_em = {"num_steps": em_steps, "prior": BernoulliMixturePrior(), "seed": 0}
    rows = [naive_bayes_row(task, BernoulliNB(alpha=1.0), data, "discrete")]
    rows.append(probgen_row(task, "probgen naive Bayes (BernoulliMixture K=1, MAP EM)",
                            lambda c: BernoulliMixture(1, features).double(), data, **map_em))
    rows.append(selected_row(task, "probgen BernoulliMixture K={} per class (MAP EM)",
                             lambda k: BernoulliMixture(k, features).double(), candidates, data,
                             **map_em))
    if vae:
        k = 20 if args.smoke else 200
        family = lambda c: VAE((features,), latent_dim=8, hidden_features=(128,))  # noqa: E731
        floats = {name: (x.float(), y) for name, (x, y) in data.items()}
        rows.append(probgen_row(
            task, f"probgen VAE per class (IWAE-{k})", family, floats,
            validation=floats["validation"], num_steps=args.vae_steps, optim=3e-3, validate_every=50, patience=4, seed=0,
            score_options={"estimator": "iwae", "k": k, "seed": 0})
            | {"selection": "per class, the step with the lowest validation loss"})
    rows.append(logistic_row(task, data, args.logistic_iters))
    return rows


def choose_var_smoothing(data: dict, candidates: list[float]) -> tuple[float, dict]:
    """GaussianNB's variance floor s · max_d Var(x_d), by validation log p(x, y): a pixel that
    is constant within a class otherwise gets a density spike (variance 1e-9 · max var)."""
    (x, y), (x_val, y_val) = data["train"], data["validation"]
    scores = {}
    for smoothing in candidates:
        model = GaussianNB(var_smoothing=smoothing).fit(x.numpy(), y.numpy())
        joint = model.predict_joint_log_proba(x_val.numpy())[np.arange(len(y_val)), y_val.numpy()]
        scores[smoothing] = {"validation_nats": float(joint.mean()),
                             "validation_accuracy": model.score(x_val.numpy(), y_val.numpy())}
    return max(scores, key=lambda s: scores[s]["validation_nats"]), scores


def gaussian_rows(task: str, data: dict, args) -> list[dict]:
    x = data["train"][0]
    features = x.shape[1]
    smoothing, smoothing_scores = choose_var_smoothing(data, [1e-9, 1e-3, 1e-2, 1e-1])
    reg_covar = smoothing * float(x.var(0, unbiased=False).max())
    rows = [naive_bayes_row(task, GaussianNB(var_smoothing=smoothing), data, "continuous")
            | {"selection": {"var_smoothing": smoothing_scores}}]
    with warnings.catch_warnings():  # a pixel constant in a class sits at the floor, as in sklearn
        warnings.simplefilter("ignore", ComponentCollapseWarning)
        rows.append(probgen_row(task, "probgen naive Bayes (GaussianMixture K=1 diag, EM)",
                                lambda c: GaussianMixture(1, features, "diag", reg_covar).double(),
                                data, num_steps=5, seed=0) | {"reg_covar": reg_covar})
    # The default prior scale is cov(x_c) / K^(2/D), singular where a pixel is constant in a
    # class; one shared scale instead: the training variances, floored at one grey level².
    prior = GaussianMixturePrior(scale=torch.diag(x.var(0).clamp_min(1.0)))
    options = {"num_steps": 10 if args.smoke else 100, "prior": prior, "seed": 0}
    rows.append(selected_row(task, "probgen GaussianMixture K={} full per class (MAP EM)",
                             lambda k: GaussianMixture(k, features, "full").double(),
                             [1, 2] if args.smoke else [1, 2, 4], data, **options))
    rows.append(logistic_row(task, data, args.logistic_iters))
    return rows


def mnist_data(smoke: bool) -> dict | None:
    """MNIST with labels, binarized at intensity > 0.5: train = the first 50,000 training
    images, validation = the last 10,000, test = the 10,000 test images."""
    folder = find_data("mnist")
    try:
        train, test = load_mnist("train", path=folder), load_mnist("test", path=folder)
    except (OSError, ValueError) as error:  # no local copy and no network
        log(f"MNIST unavailable ({error}); skipping it")
        return None
    x, x_test = ((split.flat(torch.float64) > 0.5).double() for split in (train, test))
    data = {"train": (x[:50_000], train.labels[:50_000]),
            "validation": (x[50_000:], train.labels[50_000:]), "test": (x_test, test.labels)}
    if smoke:
        data = {name: (x[:size], y[:size]) for (name, (x, y)), size in
                zip(data.items(), (2000, 500, 500))}
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="seconds-long run, writes nothing")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--vae-steps", type=int, default=None, help="fit steps per class VAE")
    parser.add_argument("--logistic-iters", type=int, default=None)
    parser.add_argument("--skip-mnist", action="store_true", help="the digits only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.vae_steps = args.vae_steps or (20 if args.smoke else 1500)
    args.logistic_iters = args.logistic_iters or (20 if args.smoke else 200)
    torch.manual_seed(0)

    digits = load_dataset("digits")
    rows = binary_rows("digits 8x8 binarized (>= 8)",
                       splits((digits.data >= 8).double(), digits.labels), args,
                       candidates=[2, 4] if args.smoke else [2, 4, 8, 16, 32],
                       em_steps=10 if args.smoke else 100, vae=True)
    rows += gaussian_rows("digits 8x8, 17 grey levels (Gaussian)",
                          splits(digits.data.double(), digits.labels), args)
    mnist = None if args.skip_mnist else mnist_data(args.smoke)
    if mnist is not None:
        sizes = "/".join(f"{len(y):,}" for _, y in mnist.values())
        rows += binary_rows(f"MNIST binarized (> 0.5), {sizes}", mnist, args,
                            candidates=[5, 10] if args.smoke else [5, 10, 20, 40, 80],
                            em_steps=5 if args.smoke else 50, vae=False)
    print_table(rows, ["task", "model", "accuracy", "accuracy_stderr", "nats", "stderr", "kind",
                       "train_s"])
    if not args.smoke:  # smoke runs check the script; they never overwrite the results
        write_results("classifier", rows, threads=torch.get_num_threads(),
                      vae_steps=args.vae_steps, logistic_iters=args.logistic_iters,
                      binarization="digits: grey level >= 8 of 0..16; MNIST: intensity > 0.5",
                      selection="K by validation log p(x, y); models trained on the train split")


if __name__ == "__main__":
    main()
