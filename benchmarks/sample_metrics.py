"""Sample quality beside held-out likelihood: eight families on binarized 8×8 digits.

Each family is trained through ``probgen.fit`` on the bundled digits (pixels >= 8, the 80/20
seeded split), scored on the held-out images with ``probgen.evaluate`` (its kind label:
exact, lower bound, ...), and 1000 of its samples are compared with the held-out images by
``probgen.metrics`` on raw pixels: improved precision and recall (k=3), MMD² (RBF kernel, one
bandwidth for every row: the median heuristic on the test images) with its jackknife stderr, the
Vendi score (same RBF kernel) and FID. A generative classifier per family (one model per digit,
``GenerativeClassifier``) gives a test accuracy. The "training images" row is the reference: 1000
real images that are not the test images.

    python -m benchmarks.sample_metrics            # full run (about 4 minutes on 1 CPU thread)
    python -m benchmarks.sample_metrics --smoke    # seconds; writes nothing
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import probgen  # noqa: E402
from benchmarks._common import print_table, write_results  # noqa: E402
from probgen.data.bundled import load_dataset, train_test_split  # noqa: E402
from probgen.metrics import RBF, fid, median_bandwidth, mmd2, precision_recall, vendi  # noqa: E402
from probgen.models.autoregressive import MADE  # noqa: E402
from probgen.models.classifier import GenerativeClassifier  # noqa: E402
from probgen.models.ebm import RBM  # noqa: E402
from probgen.models.flow import FlowModel  # noqa: E402
from probgen.models.flow_matching import FlowMatching  # noqa: E402
from probgen.models.latent_diffusion import LatentDiffusionVAE  # noqa: E402
from probgen.models.mixture import BernoulliMixture  # noqa: E402
from probgen.models.vae import VAE  # noqa: E402
from probgen.models.vqvae import VQVAE  # noqa: E402

DEQUANTIZATION_COPIES = 4  # uniform noise draws per training image for the flow


@dataclass(frozen=True)
class Family:
    """How one family is built, trained, scored and read back as bits."""

    name: str
    build: Callable[[], Any]
    fit_options: dict[str, Any]  # for probgen.fit: the same for the model and for each class
    evaluate_options: dict[str, Any] = field(default_factory=dict)
    dequantized: bool = False  # trained on (bits + u) / 2; its samples are floored back to bits
    then: dict[str, Any] | None = None  # a second probgen.fit (a two-stage family's prior)


def families(args) -> list[Family]:
    epochs = dict(epochs=args.epochs, batch_size=64, optim=1e-3)  # a class has >= 126 images
    return [
        Family("Bernoulli mixture K=20 (EM)", lambda: BernoulliMixture(20, 64).double(),
               dict(num_steps=3 if args.smoke else 100)),
        Family("MADE (256 hidden)", lambda: MADE(64, (256,)), epochs),
        Family("VAE (z=8, 256-256)", lambda: VAE((64,), latent_dim=8, hidden_features=(256, 256)),
               epochs, dict(estimator="iwae", k=args.k)),
        Family("latent diffusion VAE (z=8)", lambda: LatentDiffusionVAE(
            features=64, latent_features=8, hidden_features=(256, 256),
            denoiser_features=(128, 128, 128), prior_samples=4), dict(epochs, epochs=max(1, args.epochs // 2))),
        Family("RBM (20 hidden, CD-1)", lambda: RBM(64, 20),
               dict(method="cd", epochs=max(1, args.epochs // 4), batch_size=32, optim=0.05),
               dict(estimator="exact")),
        Family("flow (MAF, dequantized)", lambda: FlowModel(
            64, kind="maf", transforms=4, hidden=(128, 128), domain="unit_interval"),
            dict(epochs, epochs=max(1, args.epochs // 4), batch_size=256),
            dict(estimator="dequantized", num_levels=2, k=args.k // 4), dequantized=True),
        Family("flow matching (dequantized)", lambda: FlowMatching(
            64, hidden_features=(256, 256), domain="unit_interval"),
            dict(epochs, epochs=max(1, args.epochs // 4), batch_size=256),
            dict(num_levels=2, exact=False, num_probes=4), dequantized=True),
        Family("VQ-VAE (8 codes of 32, MADE prior)", lambda: VQVAE(
            (64,), num_codes=32, code_dim=16, num_positions=8, hidden_features=(256, 256),
            prior="made", prior_options={"hidden_features": [128]}),
            dict(epochs, epochs=max(1, args.epochs // 2)),
            then=dict(method="prior", epochs=max(1, args.epochs // 4), batch_size=64, optim=2e-3)),
    ]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def training_data(family: Family, x: torch.Tensor, y: torch.Tensor, seed: int):
    """The bits (and labels), or DEQUANTIZATION_COPIES uniform dequantizations of them."""
    if not family.dequantized:
        return x, y
    generator = torch.Generator().manual_seed(seed)
    copies = x.repeat(DEQUANTIZATION_COPIES, 1)
    return (copies + torch.rand(copies.shape, generator=generator)) / 2, y.repeat(DEQUANTIZATION_COPIES)


def sample_bits(family: Family, model: Any, num_samples: int, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    with torch.no_grad():
        samples = model.sample(num_samples).double()
    return (2 * samples).floor().clamp(0, 1) if family.dequantized else samples


def sample_metrics(test: torch.Tensor, samples: torch.Tensor, kernel: RBF) -> dict[str, Any]:
    precision, recall = precision_recall(test, samples, k=3)
    mmd = mmd2(test, samples, kernel=kernel)
    return {"precision": precision.value, "recall": recall.value, "mmd2": mmd.value,
            "mmd2_stderr": mmd.stderr, "vendi": vendi(samples, kernel=kernel).value,
            "fid": fid(test, samples).value}


def run_family(family: Family, data: dict[str, torch.Tensor], kernel: RBF, args
               ) -> tuple[dict[str, Any], Any]:
    pyro.clear_param_store()
    torch.manual_seed(args.seed)
    model = family.build()
    dtype = next(model.parameters()).dtype
    x, _ = training_data(family, data["train"].to(dtype), data["train_labels"], args.seed)
    start = time.perf_counter()
    probgen.fit(model, x, seed=args.seed, progress=False, **family.fit_options)
    if family.then is not None:
        probgen.fit(model, x, seed=args.seed, progress=False, **family.then)
    train_seconds = time.perf_counter() - start
    test = data["test"].to(dtype)
    ll = probgen.evaluate(model, test, seed=args.seed, **family.evaluate_options)
    samples = sample_bits(family, model, args.samples, args.seed + 1)
    row = {"model": family.name, "kind": ll.kind, "estimator": ll.estimator, "nats": ll.mean,
           "stderr": ll.stderr, "bits_per_dim": ll.bits_per_dim,
           **sample_metrics(data["test"], samples, kernel), "train_s": round(train_seconds, 1),
           "fit_options": family.fit_options, "evaluate_options": family.evaluate_options,
           "num_parameters": sum(p.numel() for p in model.parameters())}
    if args.classifier and family.then is None:  # GenerativeClassifier fits one stage
        row["classifier_accuracy"] = classifier_accuracy(family, data, dtype, args)
    shown = ("precision", "recall", "fid", "classifier_accuracy")
    log(f"{family.name}: {ll!r}; " + ", ".join(f"{k}={row[k]:.4g}" for k in shown if k in row))
    return row, ll


def classifier_accuracy(family: Family, data: dict[str, torch.Tensor], dtype: torch.dtype,
                        args) -> float:
    """Test accuracy of argmax_c log p(x | c) + log p(c), one model of the family per digit."""
    pyro.clear_param_store()
    torch.manual_seed(args.seed)
    x, y = training_data(family, data["train"].to(dtype), data["train_labels"], args.seed)
    classifier = GenerativeClassifier(lambda c: family.build(), num_classes=10)
    classifier.fit(x, y, seed=args.seed, progress=False, **family.fit_options)
    options = dict(family.evaluate_options)
    options.setdefault("seed", args.seed)
    return classifier.score(data["test"].to(dtype), data["test_labels"], **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="seconds-long run; writes nothing")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (SVI families)")
    parser.add_argument("--samples", type=int, default=None, help="model samples per family")
    parser.add_argument("--k", type=int, default=None, help="IWAE particles")
    parser.add_argument("--no-classifier", dest="classifier", action="store_false",
                        help="skip the generative-classifier accuracy column")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.epochs = args.epochs or (2 if args.smoke else 80)
    args.samples = args.samples or (200 if args.smoke else 1000)
    args.k = args.k or (8 if args.smoke else 256)
    torch.set_num_threads(args.threads)

    digits = load_dataset("digits")
    train_index, test_index = train_test_split(len(digits.data), 0.2, seed=args.seed)
    bits = (digits.data >= 8).float()  # (1797, 64) as benchmarks/diffusion.py binarizes
    data = {"train": bits[train_index], "test": bits[test_index],
            "train_labels": digits.labels[train_index], "test_labels": digits.labels[test_index]}
    kernel = RBF(median_bandwidth(data["test"].double()))  # one kernel for every row
    generator = torch.Generator().manual_seed(args.seed)
    real = data["train"][torch.randperm(len(data["train"]), generator=generator)[:args.samples]]
    rows = [{"model": "training images (reference)", "kind": "-",
             **sample_metrics(data["test"], real.double(), kernel)}]
    results = {}
    for family in families(args):
        row, results[family.name] = run_family(family, data, kernel, args)
        rows.append(row)
    if not args.classifier:
        log("generative-classifier column skipped (--no-classifier)")
    table = probgen.compare(results)  # paired differences on the same test images
    for comparison in table.rows:
        row = next(r for r in rows if r["model"] == comparison.name)
        row.update(rank=comparison.rank, diff_to_best=comparison.diff_to_best,
                   diff_stderr=comparison.diff_stderr)
    columns = ["model", "kind", "nats", "stderr", "bits_per_dim", "precision", "recall", "mmd2",
               "mmd2_stderr", "vendi", "fid", "classifier_accuracy", "train_s"]
    print_table(rows, columns)
    for note in table.notes:
        print(f"note: {note}")
    if not args.smoke:  # smoke runs check the script; they never overwrite the results
        write_results("sample_metrics", rows, epochs=args.epochs, num_samples=args.samples,
                      iwae_k=args.k, seed=args.seed, threads=torch.get_num_threads(),
                      bandwidth=kernel.bandwidth, k_nearest=3, num_test=len(data["test"]),
                      data="bundled UCI 8x8 digits, binarized >= 8, 80/20 split (seed 0)")


if __name__ == "__main__":
    main()
