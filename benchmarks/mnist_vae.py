"""Test NLL of probgen's VAE on binarized MNIST (ELBO and IWAE-5000), beside published rows.

Trains with ``probgen.fit``, on the same data and architecture as Burda et al. (2016)
(784-200-200-50, tanh, one stochastic layer): a VAE (ELBO, dynamic binarization), an
IWAE-trained VAE (k particles, dynamic binarization) and a VAE on the statically binarized MNIST
of Larochelle & Murray. Dynamic binarization is fit's ``transform=torch.bernoulli``; the cosine
learning rate (``--final-lr``) a Pyro ``CosineAnnealingLR`` stepped once per epoch; the last
10,000 training images (Larochelle & Murray's "valid" split for static MNIST) are fit's
``validation=``, scored every epoch, and the best epoch's parameters are kept, so model
selection never sees the test set. Each model then gets the ELBO on all 10,000 test images and
the IWAE bound with k=5000 on a seeded subset (``--num-test``; all 10,000 on a GPU). Results:
``--out``/mnist_vae.json (default benchmarks/results).

    python -m benchmarks.mnist_vae [--smoke] [--device cuda] [--epochs 3280] [--minutes 8,7,5]

Two stages (ELBO pre-training, then IWAE fine-tuning): ``--train-only`` saves the weights and a
training record; ``--init <weights.pt>`` starts from them and reports both stages' budget.
``--resume`` continues an interrupted run from fit's checkpoint in ``--save-dir``.
``--baseline <weights.pt>`` also scores other weights of the same architecture (with the
training record ``<weights>.json`` beside them) on the same test images with the same
estimators and seeds, and puts their numbers beside the new rows.
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

import probgen
from benchmarks._common import RESULTS, machine_info, print_table, write_results
from benchmarks._mnist import (
    describe_recipe,
    mnist_splits,
    model_budgets,
    parameter_count,
    planned_epochs,
    recipe,
    train,
)
from probgen.core.checkpoint import atomic_write_text
from probgen.models.vae import VAE

PUBLISHED = [
    {"model": "VAE, 1 stochastic layer (Burda et al. 2016)", "binarization": "dynamic",
     "estimator": "iwae", "k": 5000, "nll_nats": 86.76,
     "source": "Burda, Grosse & Salakhutdinov 2016, Table 1 (VAE, k=1 training)"},
    {"model": "IWAE k=50, 1 stochastic layer (Burda et al. 2016)", "binarization": "dynamic",
     "estimator": "iwae", "k": 5000, "nll_nats": 84.78,
     "source": "Burda, Grosse & Salakhutdinov 2016, Table 1 (IWAE, k=50 training)"},
]
MODELS = ("vae", "iwae", "vae_static")


def parse_hidden(text: str) -> tuple[int, ...]:
    """``--hidden 500,500`` as (500, 500)."""
    try:
        sizes = tuple(int(h) for h in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise SystemExit(f"--hidden {text!r}: give positive layer sizes separated by commas, "
                         "e.g. --hidden 500,500")
    return sizes


def build_vae(hidden: tuple[int, ...], activation: str, device: str, name: str) -> VAE:
    vae = VAE((784,), latent_dim=50, hidden_features=hidden, activation=activation,
              likelihood="bernoulli").to(device)
    # A stable param-store name (not the per-process instance counter's), so that fit's
    # checkpoint, keyed by these names, resumes with its optimizer state in a new process.
    vae.pyro_name = name
    return vae


def training_recipe(name: str, args: argparse.Namespace) -> dict:
    """The fit options of a model: IWAE-k (``loss="iwae"``) for "iwae", else the VAE's ELBO."""
    if name == "iwae":
        return recipe(lr=args.lr, final_lr=args.final_lr, loss="iwae", num_particles=args.iwae_k)
    return recipe(lr=args.lr, final_lr=args.final_lr)


def score(vae: VAE, x_test: torch.Tensor, subset: torch.Tensor, eval_k: int, eval_batch: int,
          seed: int) -> dict[str, probgen.LogLikelihood | float]:
    """ELBO on every test image and IWAE-``eval_k`` on ``subset``, with fixed seeds."""
    started = time.perf_counter()
    elbo = probgen.evaluate(vae, x_test, estimator="elbo", k=1, seed=seed)
    elbo_seconds = time.perf_counter() - started
    started = time.perf_counter()
    iwae = probgen.evaluate(vae, x_test[subset], estimator="iwae", k=eval_k,
                            batch_size=eval_batch, seed=seed)
    return {"elbo": elbo, "elbo_seconds": elbo_seconds, "iwae": iwae,
            "iwae_seconds": time.perf_counter() - started}


def beside(new: probgen.LogLikelihood, old: probgen.LogLikelihood) -> dict:
    """The baseline's figure and the paired per-example difference (new - old, in NLL)."""
    difference = (old.per_example - new.per_example).double()  # NLL_new - NLL_old
    return {"nll_nats": old.nll, "stderr": old.stderr,
            "paired_difference_nats": float(difference.mean()),
            "paired_difference_stderr": float(difference.std() / len(difference) ** 0.5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--epochs", type=int, default=3280, help="max epochs per model "
                        "(Burda et al. train 3280 passes; 0 with --init: only evaluate)")
    parser.add_argument("--minutes", default=None,
                        help="wall-clock training budget per model, comma-separated (e.g. 8,7,5)")
    parser.add_argument("--hidden", default="200,200",
                        help="hidden layer sizes of encoder and decoder (Burda et al.: 200,200)")
    parser.add_argument("--activation", default="tanh")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--final-lr", type=float, default=None,
                        help="cosine decay of the learning rate to this value over training")
    parser.add_argument("--patience", type=int, default=None,
                        help="stop after this many epochs without a better validation loss")
    parser.add_argument("--iwae-k", type=int, default=50, help="particles for IWAE training")
    parser.add_argument("--eval-k", type=int, default=5000)
    parser.add_argument("--num-test", type=int, default=None,
                        help="IWAE-k on a seeded subset of this many test images (default: all)")
    parser.add_argument("--eval-batch", type=int, default=10, help="test images per IWAE chunk")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--append", action="store_true",
                        help="keep rows of other models already in mnist_vae.json")
    parser.add_argument("--init", default=None,
                        help="start from this state_dict (e.g. IWAE fine-tuning of a trained VAE; "
                        "with --epochs 0 it only evaluates)")
    parser.add_argument("--train-only", action="store_true",
                        help="save the trained state_dict and stop: no evaluation, no results")
    parser.add_argument("--resume", action="store_true",
                        help="continue from fit's checkpoint in --save-dir, if there is one")
    parser.add_argument("--baseline", default=None,
                        help="also score these weights (training record <weights>.json beside "
                        "them) with the same estimators and put their numbers beside the rows")
    parser.add_argument("--tag", default=None, help="added to the model names of the new rows")
    parser.add_argument("--note", default=None, help="a note stored in the new rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS), help="folder of the results JSON")
    parser.add_argument("--save-dir", default=str(Path(tempfile.gettempdir()) / "probgen_mnist_vae"),
                        help="where checkpoints and trained state_dicts go (to resume, re-evaluate)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names, minutes = model_budgets(args.models, args.minutes)
    hidden = parse_hidden(args.hidden)
    architecture = "-".join(map(str, (784, *hidden, 50))) + f" {args.activation}, Bernoulli"
    # Burda et al.'s network keeps the plain name; any other gets its architecture in the name.
    suffix = "" if (hidden, args.activation) == ((200, 200), "tanh") else ", " + "-".join(
        map(str, hidden)) + f" {args.activation}"
    pretraining = None
    if args.init:
        suffix += f", from {Path(args.init).stem}"
        record = Path(args.init).with_suffix(".json")  # how the initial weights were trained
        pretraining = json.loads(record.read_text()) if record.exists() else None
    baseline_record = None
    if args.baseline:
        record = Path(args.baseline).with_suffix(".json")
        baseline_record = json.loads(record.read_text()) if record.exists() else {}
    epochs, eval_k = (1, 20) if args.smoke else (args.epochs, args.eval_k)
    num_test = 8 if args.smoke else args.num_test
    out = Path(args.out)
    save_dir = Path(args.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for name, budget in zip(names, minutes):
        if name not in MODELS:
            raise SystemExit(f"unknown model {name!r}; choose from {MODELS}")
        splits = mnist_splits("static" if name == "vae_static" else "dynamic", seed=args.seed,
                              smoke=args.smoke, device=args.device)
        options = training_recipe(name, args)
        stem = re.sub(r"\W+", "_", f"{name}{suffix}")
        pyro.clear_param_store()  # each model starts from an empty store (names are stable)
        planned = planned_epochs(
            save_dir / f"{stem}.plan.json",
            lambda stem=stem: build_vae(hidden, args.activation, args.device, f"{stem}_probe"),
            splits, minutes=budget if epochs > 0 else None, max_epochs=epochs,
            resume=args.resume, batch_size=args.batch_size, seed=args.seed, **options)
        pyro.set_rng_seed(args.seed)  # the same initial weights whatever trains them
        vae = build_vae(hidden, args.activation, args.device, stem)
        objective = describe_recipe(options)
        if args.init:
            vae.load_state_dict(torch.load(args.init, map_location=args.device, weights_only=True))
        training = None
        if planned > 0:
            training = train(vae, splits, epochs=planned, batch_size=args.batch_size,
                             seed=args.seed, **options, checkpoint=save_dir / f"{stem}.fit.pt",
                             resume=args.resume, patience=args.patience)
            print(f"{name}: {training.epochs:g} epochs in {training.seconds:.0f} s, final train "
                  f"loss {training.final_train_loss:.2f}, best validation epoch "
                  f"{training.best_epoch}")
        elif not args.init:
            raise SystemExit("--epochs 0 only evaluates weights given with --init")
        torch.save(vae.state_dict(), save_dir / f"{stem}.pt")
        done = training.epochs if training else 0.0
        seconds = round(training.seconds, 1) if training else 0.0
        stage = {"trainer": "probgen.fit", "training_objective": objective, "epochs": done,
                 "train_seconds": seconds,
                 "train_cpu_seconds": round(training.cpu_seconds, 1) if training else 0.0,
                 "lr": args.lr, "final_lr": args.final_lr,
                 "final_train_loss": training.final_train_loss if training else None,
                 "best_epoch": training.best_epoch if training else None,
                 "architecture": architecture, "machine": machine_info()}
        atomic_write_text(save_dir / f"{stem}.json", json.dumps(stage, indent=1))
        if args.train_only:
            continue
        subset = torch.randperm(len(splits.test),
                                generator=torch.Generator().manual_seed(args.seed))
        subset = subset[:num_test] if num_test else subset
        label = f"probgen VAE ({name}{suffix}{', ' + args.tag if args.tag else ''})"
        common = {"model": label, "trainer": "probgen.fit",
                  "binarization": splits.binarization, "architecture": architecture,
                  "parameters": parameter_count(vae), "epochs": done,
                  "budget": f"{planned} epochs" + (f" (what --minutes {budget:g} allowed)"
                                                   if budget is not None else ""),
                  "train_seconds": seconds,
                  "train_cpu_seconds": stage["train_cpu_seconds"],
                  "training_objective": objective, "lr": args.lr, "final_lr": args.final_lr,
                  "model_selection": training.model_selection if training else
                  "the --init weights as given (no training in this run)",
                  "final_train_loss": stage["final_train_loss"],
                  "train_loss_per_epoch": training.train_loss_per_epoch if training else [],
                  "validation_loss_per_epoch": training.validation_per_epoch if training else []}
        if args.note:
            common["note"] = args.note
        if pretraining:  # the budget is the sum of both stages
            common.update(epochs=round(done + pretraining["epochs"], 3),
                          train_seconds=round(seconds + pretraining["train_seconds"], 1),
                          training_objective=f"{pretraining['training_objective']} for "
                          f"{pretraining['epochs']:g} epochs, then {objective} for {done:g}",
                          stages=[pretraining, stage])
        scores = score(vae, splits.test, subset, eval_k, args.eval_batch, args.seed)
        old = None
        if args.baseline:
            reference = build_vae(hidden, args.activation, args.device, f"{stem}_baseline")
            reference.load_state_dict(torch.load(args.baseline, map_location=args.device,
                                                 weights_only=True))
            old = score(reference, splits.test, subset, eval_k, args.eval_batch, args.seed)
        elbo, iwae = scores["elbo"], scores["iwae"]
        rows.append({**common, "estimator": "elbo", "k": 1, "nll_nats": elbo.nll,
                     "stderr": elbo.stderr, "num_test": elbo.num_examples,
                     "eval_seconds": round(scores["elbo_seconds"], 1)})
        paired = {}
        if iwae.num_examples > 2000:  # the same images as the rows on a 2000-image subset
            first = -iwae.per_example[:2000].double()
            paired = {"nll_nats_first_2000": float(first.mean()),
                      "stderr_first_2000": float(first.std() / 2000**0.5)}
        rows.append({**common, "estimator": "iwae", "k": eval_k, "nll_nats": iwae.nll,
                     "stderr": iwae.stderr, "num_test": iwae.num_examples, **paired,
                     "test_subset": f"torch.randperm(10000, seed={args.seed})[:{iwae.num_examples}]",
                     "eval_seconds": round(scores["iwae_seconds"], 1)})
        if old is not None:
            for row, key in ((rows[-2], "elbo"), (rows[-1], "iwae")):
                row["baseline"] = {**baseline_record, "weights": Path(args.baseline).name,
                                   **beside(scores[key], old[key])}
        print_table(rows[-2:], ["model", "estimator", "k", "nll_nats", "stderr", "num_test"])
        if old is not None:
            print_table([{"estimator": key, "fit": scores[key].nll, **beside(scores[key], old[key])}
                         for key in ("elbo", "iwae")],
                        ["estimator", "fit", "nll_nats", "paired_difference_nats",
                         "paired_difference_stderr"])
        if not args.smoke:  # keep what is done if a later model fails
            out.mkdir(parents=True, exist_ok=True)
            (out / "mnist_vae.partial.json").write_text(json.dumps(rows, indent=1, default=str))
    if args.train_only:
        return
    machine = machine_info()
    if args.append and (out / "mnist_vae.json").exists():
        previous = json.loads((out / "mnist_vae.json").read_text())
        done_models = {row["model"] for row in rows}
        rows = [row for row in previous if "source" not in row and row["model"] not in done_models
                ] + rows
    rows += [{**row, "machine": None, "epochs": None, "train_seconds": None, "stderr": None}
             for row in PUBLISHED]
    for row in rows:
        row.setdefault("machine", machine)
    print_table(rows, ["model", "binarization", "estimator", "k", "nll_nats", "stderr",
                       "num_test", "epochs", "train_seconds"])
    if not args.smoke:
        write_results("mnist_vae", rows, results_dir=out, device=args.device,
                      batch_size=args.batch_size, lr=args.lr, final_lr=args.final_lr,
                      seed=args.seed, iwae_k=args.iwae_k, eval_k=eval_k,
                      torch_threads=torch.get_num_threads(),
                      goal="probgen VAE <= 86.5 nats, IWAE-trained <= 84.5 (dynamic, IWAE-5000)")
        (out / "mnist_vae.partial.json").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
