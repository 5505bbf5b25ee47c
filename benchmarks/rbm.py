"""RBM (500 hidden) on binarized MNIST: CD training, test log-likelihood by AIS, beside published rows.

    python -m benchmarks.rbm --minutes 12          # the run in docs/models/ebm.md
    python -m benchmarks.rbm --smoke
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from benchmarks._common import print_table, write_results
from probgen.core.paths import find_data
from probgen.infer import fit
from probgen.models.ebm import RBM
from probgen.models.ebm.ais import ais_log_partition, evaluate_ais

# Salakhutdinov & Murray (2008), "On the quantitative analysis of deep belief networks", ICML,
# Table 2 (MNIST, 500 hidden units, AIS estimate of the average test log-probability).
PUBLISHED = [
    {"model": "RBM CD1 (500 hidden), S&M 2008", "test_ll": -125.53},
    {"model": "RBM CD3 (500 hidden), S&M 2008", "test_ll": -105.50},
    {"model": "RBM CD25 (500 hidden), S&M 2008", "test_ll": -86.34},
]


def load_binarized_mnist() -> dict[str, np.ndarray]:
    """The statically binarized MNIST arrays, from the data folders probgen searches."""
    path = find_data("binarized_mnist/binarized_mnist.npz")
    if path is None:
        raise SystemExit("binarized_mnist/binarized_mnist.npz is in none of the data folders "
                         "($PROBGEN_DATA, the cache, $PROBGEN_SHARED_DATA or ../shared/data)")
    with np.load(path) as archive:
        return {name: archive[name] for name in ("train", "valid", "test")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="seconds-long run on a subset")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--minutes", type=float, default=12.0, help="CD training budget")
    parser.add_argument("--num-hidden", type=int, default=500)
    parser.add_argument("--k", type=int, default=1, help="Gibbs sweeps per CD update")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--num-chains", type=int, default=100)
    parser.add_argument("--num-betas", type=int, default=14500)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke:
        args.minutes, args.num_hidden, args.num_chains, args.num_betas = 0.05, 50, 20, 200

    data = load_binarized_mnist()
    train = torch.from_numpy(data["train"]).float().to(args.device)
    test = torch.from_numpy(data["test"]).float().to(args.device)
    if args.smoke:
        train, test = train[:2000], test[:500]

    rbm = RBM(train.shape[1], args.num_hidden, seed=args.seed).to(args.device)
    with torch.no_grad():  # start the visible biases at the pixel log-odds (Hinton's guide)
        rbm.visible_bias.copy_(rbm.base_rate_bias(train))
    epochs, start = 0, time.perf_counter()
    while time.perf_counter() - start < 60 * args.minutes:
        momentum = 0.5 if epochs < 5 else 0.9
        fit(rbm, train, method="cd", k=args.k, epochs=1, batch_size=args.batch_size,
            optim=args.lr, momentum=momentum, weight_decay=2e-4, seed=args.seed + epochs,
            progress=False)
        epochs += 1
        print(f"epoch {epochs}: {time.perf_counter() - start:.0f} s")
    train_seconds = time.perf_counter() - start

    ais_seconds = time.perf_counter()
    log_z = ais_log_partition(rbm, num_chains=args.num_chains, num_betas=args.num_betas,
                              seed=args.seed)
    ais_seconds = time.perf_counter() - ais_seconds
    ll = evaluate_ais(rbm, (test,), log_partition=log_z)
    train_ll = evaluate_ais(rbm, (train[:10000],), log_partition=log_z)

    rows = [dict(row, kind="estimate (AIS)", source="published") for row in PUBLISHED]
    rows.append({
        "model": f"RBM CD{args.k} ({args.num_hidden} hidden), probgen", "source": "measured",
        "kind": ll.kind + " (AIS)", "test_ll": ll.mean, "test_ll_stderr": ll.stderr,
        "log_z": log_z.log_z, "log_z_stderr": log_z.stderr,
        "ais_effective_chains": log_z.effective_sample_size, "train_ll_10k": train_ll.mean,
        "epochs": epochs, "train_minutes": train_seconds / 60, "ais_seconds": ais_seconds,
        "num_chains": args.num_chains, "num_betas": args.num_betas,
        "ais_ms_per_beta": 1000 * ais_seconds / args.num_betas,
    })
    print_table(rows, ["model", "kind", "test_ll", "test_ll_stderr", "epochs", "train_minutes",
                       "ais_seconds"])
    if not args.smoke:
        write_results("rbm", rows, minutes=args.minutes, num_hidden=args.num_hidden, k=args.k,
                      lr=args.lr, batch_size=args.batch_size, num_chains=args.num_chains,
                      num_betas=args.num_betas, device=args.device, seed=args.seed,
                      threads=torch.get_num_threads(),
                      data="binarized MNIST (Larochelle & Murray 2011 fixed binarization), "
                           "50k train / 10k test")
    assert math.isfinite(ll.mean)


if __name__ == "__main__":
    main()
