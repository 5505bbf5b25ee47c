"""Train RBMs on binarized 8x8 digits by CD-k and PCD; score them exactly and by AIS.

A 16-hidden-unit RBM has an exact log-likelihood (2^16 hidden states enumerated), so AIS
can be checked against it; the wider RBM is scored by AIS alone (kind "estimate").

    python examples/rbm.py
    python examples/rbm.py --smoke
"""

from __future__ import annotations

import argparse

import torch

import probgen
from probgen.data.bundled import load_dataset, train_test_split
from probgen.models.ebm import RBM
from probgen.models.ebm.ais import ais_log_partition, evaluate_ais, evaluate_rbm_exact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="seconds-long run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hidden", type=int, nargs="+", default=[16, 100])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--persistent", action="store_true", help="PCD instead of CD-k")
    parser.add_argument("--num-chains", type=int, default=200)
    parser.add_argument("--num-betas", type=int, default=5000)
    parser.add_argument("--samples", default=None, help="save a grid of model samples (png)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.smoke:
        args.hidden, args.epochs, args.num_chains, args.num_betas = [8], 2, 32, 200

    digits = load_dataset("digits")
    x = torch.as_tensor(digits.data >= 8, dtype=torch.float32, device=args.device)
    train_index, test_index = train_test_split(x.shape[0], 0.2, seed=args.seed)
    train, test = x[train_index], x[test_index]
    print(f"digits: {train.shape[0]} train / {test.shape[0]} test, {x.shape[1]} binary pixels")

    algorithm = f"PCD-{args.k}" if args.persistent else f"CD-{args.k}"
    for num_hidden in args.hidden:
        rbm = RBM(x.shape[1], num_hidden, seed=args.seed).to(args.device)
        result = probgen.fit(rbm, train, method="pcd" if args.persistent else "cd", k=args.k,
                             epochs=args.epochs, batch_size=50, optim=0.05, momentum=0.9,
                             seed=args.seed, progress=not args.smoke)
        with torch.no_grad():  # one Gibbs round trip from the test images
            reconstruction = rbm.sample_visible(rbm.sample_hidden(test))
            error = float(((reconstruction - test) ** 2).mean())
        log_z = ais_log_partition(rbm, num_chains=args.num_chains, num_betas=args.num_betas,
                                  seed=args.seed)
        ais = evaluate_ais(rbm, (test,), log_partition=log_z)
        print(f"\nRBM {num_hidden} hidden, {algorithm}, {args.epochs} epochs "
              f"({result.num_steps} updates, {result.seconds:.1f} s); test reconstruction error "
              f"{error:.3f}")
        print(f"  AIS   log Z = {log_z.log_z:.3f} ± {log_z.stderr:.3f} "
              f"({log_z.effective_sample_size:.0f} effective chains of {args.num_chains})")
        print(f"  test  {ais}")
        if num_hidden <= RBM.max_exact_units:
            exact = evaluate_rbm_exact(rbm, (test,))
            gap = ais.mean - exact.mean
            print(f"  exact {exact}")
            print(f"  AIS - exact = {gap:+.4f} nats ({gap / max(log_z.stderr, 1e-12):+.1f} stderr)")
        if args.samples:
            import matplotlib.pyplot as plt

            samples = rbm.sample(64, num_steps=1000).reshape(64, 8, 8).cpu()
            grid = samples.reshape(8, 8, 8, 8).permute(0, 2, 1, 3).reshape(64, 64)
            plt.imsave(args.samples.replace(".png", f"_{num_hidden}.png"), grid, cmap="gray")


if __name__ == "__main__":
    main()
