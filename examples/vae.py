"""Fit a VAE, then score it: the ELBO and the IWAE bound (Burda et al., 2016) on held-out data.

    python examples/vae.py                      # binarized 8x8 digits (bundled), a minute on CPU
    python examples/vae.py --data mnist --device cuda --steps 20000
    python examples/vae.py --smoke              # seconds

Both numbers are lower bounds on log p(x); IWAE-k tightens toward log p(x) as k grows, so the
gap between them says how much the encoder q(z | x) misses the true posterior.
"""

from __future__ import annotations

import argparse

import pyro
import torch

import probgen
from probgen.data import load_dataset, train_test_split
from probgen.models.vae import VAE


def load(name: str, device: str) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """Binary train/test images and their shape."""
    if name == "digits":
        digits = load_dataset("digits").data
        train_index, test_index = train_test_split(len(digits), test_fraction=0.2, seed=0)
        binary = (digits >= 8).float()  # 17 grey levels -> black/white
        return binary[train_index].to(device), binary[test_index].to(device), (1, 8, 8)
    from probgen.data.mnist import DynamicBinarizer, load_mnist

    binarize = DynamicBinarizer(seed=0)  # one fixed binarization (see benchmarks/ for dynamic)
    train = binarize(load_mnist("train").flat()).to(device)
    test = binarize(load_mnist("test").flat()).to(device)
    return train, test, (1, 28, 28)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=["digits", "mnist"], default="digits")
    parser.add_argument("--network", choices=["mlp", "conv"], default="mlp")
    parser.add_argument("--latent", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--beta", type=float, default=1.0, help="KL weight in training (beta-VAE)")
    parser.add_argument("--k", type=int, default=1000, help="IWAE particles")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    parser.add_argument("--plot", default=None, help="save samples and reconstructions here (png)")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.k = 50, 20
    pyro.set_rng_seed(0)

    train, test, image_shape = load(args.data, args.device)
    if args.smoke:
        train, test = train[:256], test[:64]
    shape = image_shape if args.network == "conv" else (train.shape[1],)
    train, test = train.reshape(-1, *shape), test.reshape(-1, *shape)
    hidden = (256,) if args.data == "mnist" else (64,)
    vae = VAE(shape, latent_dim=args.latent, hidden_features=hidden, network=args.network,
              beta=args.beta).to(args.device)

    result = probgen.fit(vae, train, num_steps=args.steps, batch_size=args.batch_size,
                         optim={"lr": args.lr}, seed=0, progress=not args.smoke)
    print(f"trained {result.num_steps} steps in {result.seconds:.1f} s; "
          f"last loss {result.losses[-1] / len(train):.2f} nats/example (training ELBO, beta="
          f"{args.beta})")

    # Evaluation switches the model to eval mode, so beta is 1: the true bound on log p(x).
    elbo = probgen.evaluate(vae, test, estimator="elbo", k=100, seed=0)
    iwae = probgen.evaluate(vae, test, estimator="iwae", k=args.k, seed=0)
    print(probgen.compare({"elbo (k=100)": elbo, f"iwae (k={args.k})": iwae}))
    print(f"test NLL <= {iwae.nll:.2f} ± {iwae.stderr:.2f} nats ({iwae.bits_per_dim:.4f} bits/dim); "
          f"IWAE gains {iwae.mean - elbo.mean:.2f} nats over the ELBO")

    vae.eval()
    reconstruction = vae.reconstruct(test[:8])
    error = (reconstruction - test[:8]).abs().mean()
    print(f"mean absolute reconstruction error on 8 test images: {float(error):.3f}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [test[:8], reconstruction, vae.sample(8, mean=True),
                vae.interpolate(test[:1], test[1:2], num_steps=8)[:, 0]]
        figure, axes = plt.subplots(4, 8, figsize=(8, 4.4))
        for row, images in zip(axes, rows):
            for axis, image in zip(row, images):
                axis.imshow(image.reshape(image_shape[1:]).cpu(), cmap="gray", vmin=0, vmax=1)
                axis.axis("off")
        for axis, title in zip(axes[:, 0], ["data", "recon", "samples", "interp"]):
            axis.set_title(title, fontsize=8, loc="left")
        figure.savefig(args.plot, dpi=100, bbox_inches="tight")
        print(f"saved {args.plot}")


if __name__ == "__main__":
    main()
