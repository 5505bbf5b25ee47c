"""Test NLL of hierarchical (ladder) and flow-posterior VAEs on dynamically binarized MNIST.

Trains with ``probgen.fit`` (dynamic binarization as ``transform=torch.bernoulli``, the last
10,000 training images as ``validation=``, scored once per epoch, the best epoch kept; optional
cosine learning rate ``--final-lr``; resumable checkpoints ``--resume``), on the same data: a 2-layer ladder VAE (Burda et al. 2016's 2-stochastic-layer sizes,
784-100-100-[z1: 100]-50-50-[z2: 50], precision-weighted ladder inference, ReLU: with tanh this
ladder collapses to the prior in the first epochs), a 1-layer VAE with an IAF posterior
(784-200-200-[z: 50], tanh, 2 IAF steps) and the ladder with an IAF top posterior. Each model gets the ELBO on the evaluated test images and IWAE-k (k=5000) from the
generic ``probgen.evaluate`` path, beside the published rows. Results:
``--out``/hierarchical_mnist.json (default benchmarks/results).

    python -m benchmarks.hierarchical_mnist [--smoke] [--device cuda] [--epochs 3280]
        [--minutes 6,5,4] [--num-test 300] [--objective elbo|iwae] [--final-lr 2e-5]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
import time
from pathlib import Path

import pyro
import torch

import probgen
from benchmarks._common import RESULTS, machine_info, print_table, write_results
from benchmarks._mnist import (
    MiniBatchIWAE,
    epochs_for_budget,
    mnist_splits,
    model_budgets,
    parameter_count,
    read_plan,
    train,
    write_plan,
)
from probgen.models.flow_vae import FlowVAE
from probgen.models.hierarchical import HierarchicalVAE

PUBLISHED = [
    {"model": "IWAE, 2 stochastic layers (Burda et al. 2016)", "nll_nats": 82.90,
     "source": "Burda, Grosse & Salakhutdinov 2016, Table 1 (k=50 training, 3280 epochs)"},
    {"model": "Ladder VAE, 5 layers (Sønderby et al. 2016)", "nll_nats": 81.74,
     "source": "Sønderby et al. 2016, Table 1 (warm-up, batch norm, IWAE-5000 test)"},
    {"model": "IAF-VAE (Kingma et al. 2016)", "nll_nats": 79.10,
     "source": "Kingma et al. 2016, Table 2 (ResNet VAE with IAF)"},
    {"model": "NVAE (Vahdat & Kautz 2020)", "nll_nats": 78.01,
     "source": "Vahdat & Kautz 2020, Table 2 (dynamically binarized MNIST)"},
]
MODELS = ("ladder", "flow_vae", "ladder_iaf")
RESULT = RESULTS / "hierarchical_mnist.json"
COLUMNS = ["model", "binarization", "estimator", "k", "nll_nats", "stderr", "num_test", "epochs",
           "train_seconds"]


ARCHITECTURES = {
    "ladder": "784-100-100-[z1: 100]-50-50-[z2: 50] relu ladder, Bernoulli",
    "ladder_iaf": "784-100-100-[z1: 100]-50-50-[z2: 50] relu ladder, 2-step IAF (100-100) on z2, "
                  "Bernoulli",
    "flow_vae": "784-200-200-[z: 50] tanh, 2-step IAF (200-200) posterior, Bernoulli",
}


def build(name: str, warmup_steps: int, free_bits: float, pyro_name: str | None = None
          ) -> torch.nn.Module:
    model = _build(name, warmup_steps, free_bits)
    if pyro_name is not None:
        # A stable param-store name (not the per-process instance counter's), so that fit's
        # checkpoint, keyed by these names, resumes with its optimizer state in a new process.
        model.pyro_name = pyro_name
    return model


def _build(name: str, warmup_steps: int, free_bits: float) -> torch.nn.Module:
    ladder = {"latent_dims": (100, 50), "hidden_features": ((100, 100), (50, 50)),
              "activation": "relu", "warmup_steps": warmup_steps, "free_bits": free_bits}
    if name == "ladder":
        return HierarchicalVAE((784,), **ladder)
    if name == "ladder_iaf":
        return HierarchicalVAE((784,), **ladder, top_posterior="iaf", flow_transforms=2,
                               flow_hidden=(100, 100))
    if name == "flow_vae":
        return FlowVAE((784,), latent_dim=50, hidden_features=(200, 200), activation="tanh",
                       posterior="iaf", flow_transforms=2, flow_hidden=(200, 200))
    raise SystemExit(f"unknown model {name!r}; choose from {MODELS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--epochs", type=int, default=3280, help="max epochs per model")
    parser.add_argument("--minutes", default=None, help="training budget per model, e.g. 6,5,4")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--final-lr", type=float, default=None,
                        help="cosine decay of the learning rate to this value over training")
    parser.add_argument("--patience", type=int, default=None,
                        help="stop after this many epochs without a better validation loss")
    parser.add_argument("--objective", default="elbo", choices=("elbo", "iwae"))
    parser.add_argument("--train-k", type=int, default=50, help="particles for --objective iwae")
    parser.add_argument("--warmup-epochs", type=float, default=200.0,
                        help="ladder models: KL warm-up length (Sønderby et al. use 200)")
    parser.add_argument("--free-bits", type=float, default=0.0,
                        help="ladder models: free bits, nats per latent dimension")
    parser.add_argument("--append", action="store_true",
                        help="keep the measured rows of other models already in the JSON")
    parser.add_argument("--eval-k", type=int, default=5000)
    parser.add_argument("--num-test", type=int, default=None,
                        help="evaluate a seeded subset of this many test images (default: all)")
    parser.add_argument("--eval-batch", type=int, default=10, help="test images per IWAE chunk")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true",
                        help="continue from fit's checkpoint in --save-dir, if there is one")
    parser.add_argument("--out", default=str(RESULTS), help="folder of the results JSON")
    parser.add_argument("--save-dir",
                        default=str(Path(tempfile.gettempdir()) / "probgen_hierarchical_mnist"),
                        help="where checkpoints and trained state_dicts go (to resume, re-evaluate)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names, minutes = model_budgets(args.models, args.minutes)
    epochs, eval_k = (1, 20) if args.smoke else (args.epochs, args.eval_k)
    num_test = 8 if args.smoke else args.num_test
    splits = mnist_splits("dynamic", seed=args.seed, smoke=args.smoke, device=args.device)
    subset = torch.randperm(len(splits.test), generator=torch.Generator().manual_seed(args.seed))
    x_test = splits.test[subset[:num_test] if num_test else subset]
    steps_per_epoch = math.ceil(len(splits.train) / args.batch_size)
    warmup_steps = round(args.warmup_epochs * steps_per_epoch)
    save_dir = Path(args.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    result = Path(args.out) / RESULT.name
    rows: list[dict] = []
    if args.append and result.exists():
        rows = [row for row in json.loads(result.read_text()) if row.get("machine")]

    def make_loss(model: torch.nn.Module, n: int):
        return MiniBatchIWAE(args.train_k, n) if args.objective == "iwae" else model.default_loss()

    for name, budget in zip(names, minutes):
        if name not in MODELS:
            raise SystemExit(f"unknown model {name!r}; choose from {MODELS}")
        label = f"probgen {name}" + (f", free bits {args.free_bits:g}" if args.free_bits and
                                     name.startswith("ladder") else "")
        stem = re.sub(r"\W+", "_", label)
        pyro.clear_param_store()  # each model starts from an empty store (names are stable)
        plan = save_dir / f"{stem}.plan.json"
        planned = read_plan(plan) if args.resume and budget is not None else None
        if budget is not None and planned is None:
            planned = epochs_for_budget(
                lambda name=name, stem=stem: build(name, warmup_steps, args.free_bits,
                                                   f"{stem}_probe").to(args.device),
                make_loss, splits, minutes=budget, max_epochs=epochs,
                batch_size=args.batch_size, seed=args.seed)
            write_plan(plan, planned)
        planned = planned or epochs
        pyro.set_rng_seed(args.seed)
        vae = build(name, warmup_steps, args.free_bits, stem).to(args.device)
        loss = make_loss(vae, len(splits.train))
        if args.objective == "iwae":
            objective = f"iwae (k={args.train_k}, RenyiELBO alpha=0, per-example log-mean-exp)"
        else:
            objective = f"elbo ({type(loss).__name__}, warm-up {args.warmup_epochs:g} epochs)" \
                if name.startswith("ladder") else f"elbo ({type(loss).__name__})"
        training = train(vae, loss, splits, epochs=planned, batch_size=args.batch_size,
                         lr=args.lr, final_lr=args.final_lr, seed=args.seed,
                         checkpoint=save_dir / f"{stem}.fit.pt", resume=args.resume,
                         patience=args.patience)
        print(f"{name}: {training.epochs:g} epochs in {training.seconds:.0f} s, last train loss "
              f"{training.final_train_loss:.2f}, best validation epoch {training.best_epoch}")
        torch.save(vae.state_dict(), save_dir / f"{stem}.pt")
        common = {"model": label, "trainer": "probgen.fit", "binarization": "dynamic",
                  "architecture": ARCHITECTURES[name], "parameters": parameter_count(vae),
                  "epochs": training.epochs,
                  "budget": f"{planned} epochs" + (f" (what --minutes {budget:g} allowed)"
                                                   if budget is not None else ""),
                  "train_seconds": round(training.seconds, 1),
                  "train_cpu_seconds": round(training.cpu_seconds, 1),
                  "training_objective": objective, "lr": args.lr, "final_lr": args.final_lr,
                  "model_selection": training.model_selection,
                  "final_train_loss": training.final_train_loss,
                  "train_loss_per_epoch": training.train_loss_per_epoch,
                  "validation_loss_per_epoch": training.validation_per_epoch,
                  "config": vae.config,
                  "test_subset": f"torch.randperm(10000, seed={args.seed})[:{len(x_test)}]"}
        if name.startswith("ladder"):
            common["active_units"] = vae.active_units(x_test[:1000])
        for estimator, k in (("elbo", 1), ("iwae", eval_k)):
            started = time.perf_counter()
            ll = probgen.evaluate(vae, x_test, estimator=estimator, k=k, seed=args.seed,
                                  batch_size=args.eval_batch if estimator == "iwae" else None)
            rows = [row for row in rows if row["model"] != label or row["estimator"] != estimator]
            rows.append({**common, "estimator": estimator, "k": k, "nll_nats": ll.nll,
                         "stderr": ll.stderr, "num_test": ll.num_examples,
                         "eval_seconds": round(time.perf_counter() - started, 1)})
        print_table(rows[-2:], COLUMNS)
        if not args.smoke:  # written after every model, so a later failure loses nothing
            save(rows, args, eval_k)
    print_table(with_published(rows), COLUMNS)


def with_published(rows: list[dict]) -> list[dict]:
    machine = machine_info()
    published = [{**row, "binarization": "dynamic", "estimator": "iwae", "k": 5000,
                  "machine": None, "epochs": None, "train_seconds": None, "stderr": None}
                 for row in PUBLISHED]
    return [{**row, "machine": row.get("machine", machine)} for row in rows] + published


def save(rows: list[dict], args: argparse.Namespace, eval_k: int) -> None:
    write_results("hierarchical_mnist", with_published(rows), results_dir=args.out,
                  device=args.device, final_lr=args.final_lr,
                  batch_size=args.batch_size, lr=args.lr, seed=args.seed, objective=args.objective,
                  eval_k=eval_k, warmup_epochs=args.warmup_epochs,
                  torch_threads=torch.get_num_threads(),
                  goal="hierarchical <= 82.9 nats, flow posterior <= 84 (IWAE-5000, dynamic)")

if __name__ == "__main__":
    main()
