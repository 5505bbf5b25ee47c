"""Test NLL of hierarchical (ladder) and flow-posterior VAEs on dynamically binarized MNIST.

Trains, on the same data: a 2-layer ladder VAE (Burda et al. 2016's 2-stochastic-layer sizes,
784-100-100-[z1: 100]-50-50-[z2: 50], precision-weighted ladder inference, ReLU: with tanh this
ladder collapses to the prior in the first epochs), a 1-layer VAE with an IAF posterior
(784-200-200-[z: 50], tanh, 2 IAF steps) and the ladder with an IAF top posterior. Each model gets the ELBO on the evaluated test images and IWAE-k (k=5000) from the
generic ``probgen.evaluate`` path, beside the published rows. Results:
benchmarks/results/hierarchical_mnist.json.

    python -m benchmarks.hierarchical_mnist [--smoke] [--device cuda] [--epochs 3280]
        [--minutes 6,5,4] [--num-test 300] [--objective elbo|iwae]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import RenyiELBO

import probgen
from benchmarks._common import RESULTS, machine_info, print_table, write_results
from benchmarks._mnist import model_budgets, shared_data, train
from probgen.data.mnist import DynamicBinarizer, load_mnist
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


def build(name: str, warmup_steps: int, free_bits: float) -> torch.nn.Module:
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
    parser.add_argument("--save-dir", default="/tmp/probgen_hierarchical_mnist",
                        help="where trained state_dicts go (to re-evaluate)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names, minutes = model_budgets(args.models, args.minutes)
    epochs, eval_k = (1, 20) if args.smoke else (args.epochs, args.eval_k)
    num_test = 8 if args.smoke else args.num_test
    data = shared_data()
    folder = data / "mnist" if data else None
    x_train = load_mnist("train", path=folder).flat().to(args.device)
    # The test set is binarized once, with its own seed, and shared by every model.
    x_test = DynamicBinarizer(seed=10_000 + args.seed)(load_mnist("test", path=folder).flat())
    if args.smoke:
        x_train = x_train[:500]
    subset = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(args.seed))
    x_test = x_test[subset[:num_test] if num_test else subset].to(args.device)
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    rows: list[dict] = []
    if args.append and RESULT.exists():
        rows = [row for row in json.loads(RESULT.read_text()) if row.get("machine")]
    for name, budget in zip(names, minutes):
        pyro.set_rng_seed(args.seed)
        vae = build(name, round(args.warmup_epochs * steps_per_epoch), args.free_bits)
        vae = vae.to(args.device)
        label = f"probgen {name}" + (f", free bits {args.free_bits:g}" if args.free_bits and
                                     name.startswith("ladder") else "")
        if args.objective == "iwae":
            loss = RenyiELBO(alpha=0.0, num_particles=args.train_k, vectorize_particles=True,
                             max_plate_nesting=1)
            objective = f"iwae (k={args.train_k})"
        else:
            loss = vae.default_loss()
            objective = f"elbo ({type(loss).__name__}, warm-up {args.warmup_epochs:g} epochs)" \
                if name.startswith("ladder") else f"elbo ({type(loss).__name__})"
        done, seconds, history = train(vae, loss, x_train, DynamicBinarizer(seed=args.seed),
                                       epochs=epochs, minutes=budget, batch_size=args.batch_size,
                                       lr=args.lr, seed=args.seed)
        print(f"{name}: {done:.2f} epochs in {seconds:.0f} s, last train loss {history[-1]:.2f}")
        Path(args.save_dir).mkdir(parents=True, exist_ok=True)
        torch.save(vae.state_dict(), Path(args.save_dir) / f"{label.replace(' ', '_')}.pt")
        common = {"model": label, "binarization": "dynamic", "epochs": round(done, 3),
                  "train_seconds": round(seconds, 1), "training_objective": objective,
                  "train_loss_per_epoch": history, "config": vae.config,
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
    write_results("hierarchical_mnist", with_published(rows), device=args.device,
                  batch_size=args.batch_size, lr=args.lr, seed=args.seed, objective=args.objective,
                  eval_k=eval_k, warmup_epochs=args.warmup_epochs,
                  torch_threads=torch.get_num_threads(),
                  goal="hierarchical <= 82.9 nats, flow posterior <= 84 (IWAE-5000, dynamic)")

if __name__ == "__main__":
    main()
