"""Exact test NLL of MADE and a gated PixelCNN on statically binarized MNIST, beside the published rows.

Larochelle & Murray's split (50,000 train / 10,000 valid / 10,000 test). Each model trains with
``probgen.fit`` on the exact log-likelihood (no latents: Trace_ELBO is -log p(x)), is scored on
the 10,000 validation images once per epoch (the parameters of the best epoch are kept; training
stops after ``--patience`` epochs without improvement, the paper's "look-ahead" of 30), and is
scored once, exactly, on all 10,000 test images with ``probgen.evaluate``. With several masks
MADE's score is that of the uniform mixture over its orderings (what the paper reports). Results:
``--out``/autoregressive_mnist.json (default benchmarks/results; not written by ``--smoke``).

    python -m benchmarks.autoregressive_mnist [--smoke] [--models made,pixelcnn] [--device cuda]
        [--epochs 1000] [--minutes 60,240] [--hidden 500] [--num-masks 1] [--threads 1]
        [--save-dir DIR] [--resume]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import Trace_ELBO

import probgen
from benchmarks._common import RESULTS, machine_info, print_table, write_results
from benchmarks._mnist import (
    mnist_splits,
    model_budgets,
    parameter_count,
    planned_epochs,
    recipe,
    train,
)
from probgen.models.autoregressive import MADE, PixelCNN

PUBLISHED = [
    {"model": "MADE, 1 hidden layer, 1 mask (Germain et al. 2015)", "nll_nats": 88.40,
     "architecture": "784-[1 hidden layer]-784, one ordering (paper; width not checked here)",
     "source": "Germain, Gregor, Murray & Larochelle 2015, Table 6 (MADE 1hl, 1 mask)"},
    {"model": "MADE, 2 hidden layers, 32 masks (Germain et al. 2015)", "nll_nats": 86.64,
     "architecture": "784-8000-8000-784 ReLU, direct input-output connections, 32 orderings and "
                     "connectivities; Adagrad 0.01, batch 100, look-ahead 30 epochs (the authors' "
                     "command for this result, github.com/mgermain/MADE)",
     "source": "Germain, Gregor, Murray & Larochelle 2015, Table 6 (MADE 2hl, 32 masks)"},
    {"model": "PixelCNN (van den Oord et al. 2016)", "nll_nats": 81.30,
     "architecture": "masked convolutions (7x7 mask A, then 3x3 mask B), not gated (paper)",
     "source": "van den Oord, Kalchbrenner & Kavukcuoglu 2016, Pixel Recurrent Neural "
               "Networks, Table 4"},
]
MODELS = ("made", "pixelcnn")
COLUMNS = ["model", "estimator", "nll_nats", "stderr", "num_test", "epochs", "train_seconds",
           "seconds_per_epoch"]


def make(name: str, args: argparse.Namespace) -> torch.nn.Module:
    if name == "made":
        return MADE(784, args.hidden, num_masks=args.num_masks, direct_connections=args.direct,
                    natural_ordering=not args.random_order, seed=args.seed, init=args.init,
                    dropout=args.dropout)
    if name == "pixelcnn":
        return PixelCNN((28, 28), channels=args.channels, layers=args.layers,
                        head_channels=args.head_channels)
    raise SystemExit(f"unknown model {name!r}; choose from {MODELS}")


def build(name: str, args: argparse.Namespace, pyro_name: str) -> torch.nn.Module:
    model = make(name, args)
    model.pyro_name = pyro_name  # stable param names, so a checkpoint resumes in a new process
    return model.to(args.device)


def describe(name: str, model: torch.nn.Module) -> tuple[str, str]:
    """(row label, architecture) of a built model."""
    c = model.config
    if name == "made":
        masks = f"{c['num_masks']} mask" + ("s" if c["num_masks"] > 1 else "")
        widths = "-".join(str(h) for h in c["hidden_features"])
        order = "natural" if c["natural_ordering"] else "random"
        label = f"probgen MADE, {masks}"
        if widths != "2000" or c["direct_connections"] or not c["natural_ordering"]:
            # the first protocol row (784-2000-784, natural order) keeps its earlier label
            label += f", {widths} hidden" + (", direct" if c["direct_connections"] else "") \
                + ("" if c["natural_ordering"] else ", random order")
        return (label,
                f"784-{widths}-784 {c['activation']}, {masks} (orderings and connectivities, "
                f"seed {c['seed']}; mask 0 in {order} order)"
                + (", direct input-output" if c["direct_connections"] else "")
                + (f", {c['init']} init" if c.get("init", "default") != "default" else "")
                + (f", hidden dropout {c['dropout']:g} in training" if c.get("dropout") else ""))
    return (f"probgen gated PixelCNN, {c['layers']} layers",
            f"gated PixelCNN: {c['first_kernel_size']}x{c['first_kernel_size']} mask A + "
            f"{c['layers'] - 1} gated {c['kernel_size']}x{c['kernel_size']} layers, "
            f"{c['channels']} channels, 1x1 head {c['head_channels']}, Bernoulli")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run (no JSON)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=1000, help="max epochs per model")
    parser.add_argument("--minutes", default=None, help="training budget per model, e.g. 60,240")
    parser.add_argument("--patience", type=int, default=30,
                        help="stop after this many epochs without a better validation NLL")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    parser.add_argument("--optimizer", default="adam", choices=("adam", "adagrad"),
                        help="adam (fit's fused Adam) or adagrad (pyro.optim.Adagrad: the MADE "
                             "paper's code uses AdaGrad at 0.01)")
    parser.add_argument("--hidden", default="500", help="MADE hidden widths, e.g. 8000,8000")
    parser.add_argument("--num-masks", type=int, default=1, help="MADE orderings/connectivities")
    parser.add_argument("--direct", action="store_true", help="MADE direct input-output links")
    parser.add_argument("--init", default="default", choices=("default", "orthogonal"),
                        help="MADE weight init (orthogonal: the authors' released code)")
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="MADE: hidden-unit dropout in training (0: none)")
    parser.add_argument("--ema-decay", type=float, default=None,
                        help="fit(ema_decay=): validate and keep the parameters' moving average")
    parser.add_argument("--random-order", action="store_true",
                        help="MADE mask 0 in a seeded random pixel order (the paper's code "
                             "shuffles the order before training), not 1..784")
    parser.add_argument("--channels", type=int, default=32, help="PixelCNN stack width")
    parser.add_argument("--layers", type=int, default=6, help="PixelCNN gated layers")
    parser.add_argument("--head-channels", type=int, default=64)
    parser.add_argument("--eval-batch", type=int, default=500, help="test images per pass")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--append", action="store_true",
                        help="keep the measured rows of other models already in the JSON")
    parser.add_argument("--resume", action="store_true",
                        help="continue from fit's checkpoint in --save-dir, if there is one")
    parser.add_argument("--out", default=str(RESULTS), help="folder of the results JSON")
    parser.add_argument("--save-dir",
                        default=str(Path(tempfile.gettempdir()) / "probgen_autoregressive_mnist"),
                        help="where checkpoints and trained state_dicts go")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.hidden = [int(h) for h in args.hidden.split(",") if h]
    if args.smoke:  # tiny networks, one epoch, 512 / 128 / 64 images
        args.hidden, args.channels, args.layers, args.head_channels = [32], 4, 2, 8
        args.epochs, args.minutes = 1, None
    names, minutes = model_budgets(args.models, args.minutes)
    splits = mnist_splits("static", seed=args.seed, smoke=args.smoke, device=args.device)
    save_dir = Path(args.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    result = Path(args.out) / "autoregressive_mnist.json"
    rows: list[dict] = []
    if args.append and result.exists():
        rows = [row for row in json.loads(result.read_text()) if row.get("machine")]

    # no latents: the ELBO of the program is the exact -log p(x)
    options = recipe(lr=args.lr, loss=Trace_ELBO(), ema_decay=args.ema_decay)
    if args.optimizer == "adagrad":
        options["optim"] = pyro.optim.Adagrad({"lr": args.lr})

    for name, budget in zip(names, minutes):
        if name not in MODELS:
            raise SystemExit(f"unknown model {name!r}; choose from {MODELS}")
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        with torch.device("meta"):  # the configuration only, no memory
            label, arch = describe(name, make(name, args))
        if args.optimizer != "adam":
            label += f", {args.optimizer} {args.lr:g}"
        if name == "made" and args.init != "default":
            label += f", {args.init} init"
        if name == "made" and args.dropout:
            label += f", dropout {args.dropout:g}"
        if args.ema_decay:
            label += f", EMA {args.ema_decay:g}"
        stem = re.sub(r"\W+", "_", label)
        planned = planned_epochs(save_dir / f"{stem}.plan.json",
                                 lambda name=name, stem=stem: build(name, args, f"{stem}_p"),
                                 splits, minutes=budget, max_epochs=args.epochs,
                                 resume=args.resume, batch_size=args.batch_size, seed=args.seed,
                                 **options)
        pyro.set_rng_seed(args.seed)
        model = build(name, args, stem)
        training = train(model, splits, epochs=planned, batch_size=args.batch_size,
                         seed=args.seed, **options,
                         checkpoint=save_dir / f"{stem}.fit.pt", checkpoint_every=10,
                         resume=args.resume, patience=args.patience, report_every=1)
        torch.save(model.state_dict(), save_dir / f"{stem}.pt")
        common = {"model": label, "trainer": "probgen.fit", "binarization": "static",
                  "architecture": arch, "parameters": parameter_count(model),
                  "epochs": training.epochs, "budget": f"{planned} epochs, patience "
                  f"{args.patience}" + (f" (what --minutes {budget:g} allowed)" if budget else ""),
                  "train_seconds": round(training.seconds, 1),
                  "train_cpu_seconds": round(training.cpu_seconds, 1),
                  "seconds_per_epoch": round(training.seconds / max(training.epochs, 1e-9), 2),
                  "training_objective": "exact NLL (Trace_ELBO of a program with no latents)",
                  "model_selection": training.model_selection, **training.settings,
                  "optimizer": f"{args.optimizer}, lr {args.lr:g}"
                               + (f", EMA {args.ema_decay:g}" if args.ema_decay else ""),
                  "final_train_loss": training.final_train_loss,
                  "train_loss_per_epoch": training.train_loss_per_epoch,
                  "validation_loss_per_epoch": training.validation_per_epoch,
                  "config": model.config, "device": args.device}
        scores = [("auto", {})]
        if name == "made" and args.num_masks > 1:  # one ordering alone, to show the ensemble gain
            scores.append(("ordering", {"ordering": 0}))
        for estimator, options in scores:
            started = time.perf_counter()
            ll = probgen.evaluate(model, splits.test, estimator=estimator,
                                  batch_size=args.eval_batch, **options)
            rows = [r for r in rows if r["model"] != label or r["estimator"] != ll.estimator]
            rows.append({**common, "estimator": ll.estimator, "kind": ll.kind,
                         "estimator_settings": ll.settings, "nll_nats": ll.nll,
                         "stderr": ll.stderr, "bits_per_dim": ll.bits_per_dim,
                         "num_test": ll.num_examples,
                         "eval_seconds": round(time.perf_counter() - started, 1)})
        print_table(rows[-len(scores):], COLUMNS)
        if not args.smoke:  # written after every model, so a later failure loses nothing
            save(rows, args)
    print_table(with_published(rows), COLUMNS)


def with_published(rows: list[dict]) -> list[dict]:
    machine = machine_info()
    published = [{**row, "binarization": "static", "estimator": "exact", "kind": "exact",
                  "machine": None, "epochs": None, "train_seconds": None, "stderr": None}
                 for row in PUBLISHED]
    measured = [row for row in rows if row.get("source") is None]
    return [{**row, "machine": row.get("machine", machine)} for row in measured] + published


def save(rows: list[dict], args: argparse.Namespace) -> None:
    write_results("autoregressive_mnist", with_published(rows), results_dir=args.out,
                  device=args.device, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                  patience=args.patience, torch_threads=torch.get_num_threads(),
                  protocol="static binarized MNIST (Larochelle & Murray): validation split for "
                           "early stopping and model selection, exact NLL on all 10,000 test "
                           "images")


if __name__ == "__main__":
    main()
