"""Test NLL of probgen's VAE on binarized MNIST (ELBO and IWAE-5000), beside published rows.

Trains, on the same data and architecture as Burda et al. (2016) (784-200-200-50, tanh, one
stochastic layer): a VAE (ELBO, dynamic binarization), an IWAE-trained VAE (k particles,
dynamic binarization) and a VAE on the statically binarized MNIST of Larochelle & Murray. Each
model then gets the ELBO on all 10,000 test images and the IWAE bound with k=5000 on a seeded
subset (``--num-test``; all 10,000 on a GPU). Results: benchmarks/results/mnist_vae.json.

    python -m benchmarks.mnist_vae [--smoke] [--device cuda] [--epochs 3280] [--minutes 8,7,5]

Two stages (ELBO pre-training, then IWAE fine-tuning): ``--train-only`` saves the weights and a
training record; ``--init <checkpoint>`` starts from them and reports both stages' budget.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import RenyiELBO

import probgen
from benchmarks._common import RESULTS, machine_info, print_table, write_results
from benchmarks._mnist import model_budgets, shared_data, train
from probgen.core.checkpoint import atomic_write_text
from probgen.data.mnist import DynamicBinarizer, load_binarized_mnist, load_mnist
from probgen.models.vae import VAE

PUBLISHED = [
    {"model": "VAE, 1 stochastic layer (Burda et al. 2016)", "binarization": "dynamic",
     "estimator": "iwae", "k": 5000, "nll_nats": 86.76,
     "source": "Burda, Grosse & Salakhutdinov 2016, Table 1 (VAE, k=1 training)"},
    {"model": "IWAE k=50, 1 stochastic layer (Burda et al. 2016)", "binarization": "dynamic",
     "estimator": "iwae", "k": 5000, "nll_nats": 84.78,
     "source": "Burda, Grosse & Salakhutdinov 2016, Table 1 (IWAE, k=50 training)"},
    {"model": "IWAE, 1 stochastic layer", "binarization": "static", "estimator": "iwae",
     "k": 5000, "nll_nats": 87.10, "source": "published figure quoted in probgen issue 5"},
]
MODELS = ("vae", "iwae", "vae_static")


def load_data(name: str, device: str, smoke: bool, seed: int):
    """(train intensities or bits, test bits, binarize-per-batch or None)."""
    data = shared_data()
    if name == "vae_static":
        folder = data / "binarized_mnist" if data else None
        train = load_binarized_mnist("train", path=folder).float()
        test = load_binarized_mnist("test", path=folder).float()
        binarize = None
    else:
        folder = data / "mnist" if data else None
        train = load_mnist("train", path=folder).flat()
        # The test set is binarized once, with its own seed, and shared by every model.
        test = DynamicBinarizer(seed=10_000 + seed)(load_mnist("test", path=folder).flat())
        binarize = DynamicBinarizer(seed=seed)
    if smoke:
        train, test = train[:512], test[:64]
    return train.to(device), test.to(device), binarize


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--epochs", type=int, default=3280, help="max epochs per model "
                        "(Burda et al. train 3280 passes)")
    parser.add_argument("--minutes", default=None,
                        help="wall-clock training budget per model, comma-separated (e.g. 8,7,5)")
    parser.add_argument("--hidden", default="200,200",
                        help="hidden layer sizes of encoder and decoder (Burda et al.: 200,200)")
    parser.add_argument("--activation", default="tanh")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--final-lr", type=float, default=None,
                        help="cosine decay of the learning rate to this value over training")
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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-dir", default="/tmp/probgen_mnist_vae",
                        help="where trained state_dicts go (to re-evaluate)")
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
    epochs, eval_k = (1, 20) if args.smoke else (args.epochs, args.eval_k)
    num_test = 8 if args.smoke else args.num_test
    save_dir = Path(args.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for name, budget in zip(names, minutes):
        pyro.set_rng_seed(args.seed)
        x_train, x_test, binarize = load_data(name, args.device, args.smoke, args.seed)
        vae = VAE((784,), latent_dim=50, hidden_features=hidden, activation=args.activation,
                  likelihood="bernoulli").to(args.device)
        if args.init:
            vae.load_state_dict(torch.load(args.init, map_location=args.device, weights_only=True))
        if name == "iwae":
            loss = RenyiELBO(alpha=0.0, num_particles=args.iwae_k, vectorize_particles=True,
                             max_plate_nesting=1)
            objective = f"iwae (k={args.iwae_k}, RenyiELBO alpha=0)"
        else:
            loss = vae.default_loss()
            objective = f"elbo ({type(loss).__name__})"
        checkpoint = save_dir / (re.sub(r"\W+", "_", f"{name}{suffix}") + ".pt")
        done, seconds, history = train(vae, loss, x_train, binarize, epochs=epochs, minutes=budget,
                                       batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                       final_lr=args.final_lr, checkpoint=checkpoint)
        print(f"{name}: {done:.2f} epochs in {seconds:.0f} s, final train loss "
              f"{history[-1] if history else float('nan'):.2f}")
        stage = {"training_objective": objective, "epochs": round(done, 3),
                 "train_seconds": round(seconds, 1), "lr": args.lr, "final_lr": args.final_lr,
                 "final_train_loss": history[-1] if history else None,
                 "architecture": architecture, "machine": machine_info()}
        atomic_write_text(checkpoint.with_suffix(".json"), json.dumps(stage, indent=1))
        if args.train_only:
            continue
        subset = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(args.seed))
        subset = subset[:num_test] if num_test else subset
        common = {"model": f"probgen VAE ({name}{suffix})", "binarization":
                  "static" if name == "vae_static" else "dynamic", "epochs": round(done, 3),
                  "train_seconds": round(seconds, 1), "training_objective": objective,
                  "train_loss_per_epoch": history, "architecture": architecture}
        if pretraining:  # the budget is the sum of both stages
            common.update(epochs=round(done + pretraining["epochs"], 3),
                          train_seconds=round(seconds + pretraining["train_seconds"], 1),
                          training_objective=f"{pretraining['training_objective']} for "
                          f"{pretraining['epochs']:g} epochs, then {objective} for {done:g}",
                          stages=[pretraining, stage])
        started = time.perf_counter()
        elbo = probgen.evaluate(vae, x_test, estimator="elbo", k=1, seed=args.seed)
        rows.append({**common, "estimator": "elbo", "k": 1, "nll_nats": elbo.nll,
                     "stderr": elbo.stderr, "num_test": elbo.num_examples,
                     "eval_seconds": round(time.perf_counter() - started, 1)})
        started = time.perf_counter()
        iwae = probgen.evaluate(vae, x_test[subset], estimator="iwae", k=eval_k,
                                batch_size=args.eval_batch, seed=args.seed)
        paired = {}
        if iwae.num_examples > 2000:  # the same images as the rows on a 2000-image subset
            first = -iwae.per_example[:2000].double()
            paired = {"nll_nats_first_2000": float(first.mean()),
                      "stderr_first_2000": float(first.std() / 2000**0.5)}
        rows.append({**common, "estimator": "iwae", "k": eval_k, "nll_nats": iwae.nll,
                     "stderr": iwae.stderr, "num_test": iwae.num_examples, **paired,
                     "test_subset": f"torch.randperm(10000, seed={args.seed})[:{iwae.num_examples}]",
                     "eval_seconds": round(time.perf_counter() - started, 1)})
        print_table(rows[-2:], ["model", "estimator", "k", "nll_nats", "stderr", "num_test"])
        if not args.smoke:  # keep what is done if a later model fails
            (RESULTS / "mnist_vae.partial.json").write_text(json.dumps(
                rows, indent=1, default=str))
    if args.train_only:
        return
    machine = machine_info()
    if args.append and (RESULTS / "mnist_vae.json").exists():
        previous = json.loads((RESULTS / "mnist_vae.json").read_text())
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
        write_results("mnist_vae", rows, device=args.device, batch_size=args.batch_size,
                      lr=args.lr, final_lr=args.final_lr, seed=args.seed, iwae_k=args.iwae_k, eval_k=eval_k,
                      torch_threads=torch.get_num_threads(),
                      goal="probgen VAE <= 86.5 nats, IWAE-trained <= 84.5 (dynamic, IWAE-5000)")
        (RESULTS / "mnist_vae.partial.json").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
