"""Fit a ladder VAE with two stochastic layers beside a one-layer VAE; compare their IWAE bounds.

    python examples/hierarchical_vae.py                  # binarized 8x8 digits (bundled), ~2 min CPU
    python examples/hierarchical_vae.py --data mnist --device cuda --steps 100000
    python examples/hierarchical_vae.py --smoke          # seconds

The ladder VAE (Sønderby et al., 2016) generates top-down, z2 -> z1 -> x, and infers with a
bottom-up pass whose Gaussian terms are merged, layer by layer, with the top-down prior
(precision weighting). KL warm-up keeps the upper layer from collapsing onto its prior early in
training; it acts only in training, so every number printed here is a true bound on log p(x).
"""

from __future__ import annotations

import argparse

import pyro
import torch

import probgen
from probgen.data import load_dataset, train_test_split
from probgen.models.hierarchical import HierarchicalVAE
from probgen.models.vae import VAE


def load(name: str, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary train/test vectors."""
    if name == "digits":
        digits = load_dataset("digits").data
        train_index, test_index = train_test_split(len(digits), test_fraction=0.2, seed=0)
        binary = (digits >= 8).float()  # 17 grey levels -> black/white
        return binary[train_index].to(device), binary[test_index].to(device)
    from probgen.data.mnist import DynamicBinarizer, load_mnist

    binarize = DynamicBinarizer(seed=0)  # one fixed binarization (benchmarks/ re-draws per batch)
    return (binarize(load_mnist("train").flat()).to(device),
            binarize(load_mnist("test").flat()).to(device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=["digits", "mnist"], default="digits")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=1000, help="KL warm-up steps")
    parser.add_argument("--free-bits", type=float, default=0.0, help="nats per latent dim")
    parser.add_argument("--top-posterior", choices=["gaussian", "iaf", "nsf"], default="gaussian")
    parser.add_argument("--k", type=int, default=1000, help="IWAE particles")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.k, args.warmup = 40, 20, 20
    train, test = load(args.data, args.device)
    if args.smoke:
        train, test = train[:256], test[:64]
    wide = args.data == "mnist"
    latent_dims = (64, 32) if wide else (16, 8)
    hidden = ((512, 512), (256, 256)) if wide else ((128,), (64,))
    top = None if args.top_posterior == "gaussian" else args.top_posterior

    pyro.set_rng_seed(0)
    ladder = HierarchicalVAE((train.shape[1],), latent_dims=latent_dims, hidden_features=hidden,
                             warmup_steps=args.warmup, free_bits=args.free_bits,
                             top_posterior=top).to(args.device)
    flat = VAE((train.shape[1],), latent_dim=latent_dims[0],
               hidden_features=hidden[0]).to(args.device)
    results = {}
    for name, model in (("ladder vae (2 layers)", ladder), ("vae (1 layer)", flat)):
        fitted = probgen.fit(model, train, num_steps=args.steps, batch_size=args.batch_size,
                             optim={"lr": args.lr}, seed=0, progress=not args.smoke)
        print(f"{name}: {fitted.num_steps} steps in {fitted.seconds:.1f} s")
        results[name] = probgen.evaluate(model, test, estimator="iwae", k=args.k, seed=0)
    print(probgen.compare(results))

    # Which latent units carry information: Cov_x(E_q[z | x]) > 0.01 (Burda et al., 2016).
    active = ladder.active_units(test)
    for layer, (count, size) in enumerate(zip(active, latent_dims), start=1):
        print(f"layer z{layer}: {count} of {size} units active")
    elbo = probgen.evaluate(ladder, test, estimator="elbo", k=10, seed=0)
    print(f"ladder: ELBO {elbo.mean:.2f}, IWAE-{args.k} {results['ladder vae (2 layers)'].mean:.2f}"
          f" nats per example ({len(test)} test examples)")
    samples = ladder.sample(4)
    print(f"4 samples from the ladder: mean pixel {float(samples.mean()):.3f} "
          f"(data: {float(test.mean()):.3f})")


if __name__ == "__main__":
    main()
