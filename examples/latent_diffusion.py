"""Latent-diffusion VAE on binarized 8×8 digits: a VAE whose prior is a diffusion model, trained
end to end (or in two stages), beside a plain VAE with the same networks and budget.

Prints each model's ELBO (with the diffusion VLB for log p(z): a lower bound on log p(x)) and
saves a grid of samples.

    python examples/latent_diffusion.py --smoke
    python examples/latent_diffusion.py --steps 3000 --two-stage --out latent_samples.png
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

import probgen  # noqa: E402
from probgen.data import load_dataset, train_test_split  # noqa: E402
from probgen.models.latent_diffusion import LatentDiffusionVAE  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--latent", type=int, default=8)
    parser.add_argument("--two-stage", action="store_true",
                        help="train the VAE first, then the diffusion prior on its latents")
    parser.add_argument("--out", default="latent_diffusion_samples.png")
    args = parser.parse_args()
    steps = 20 if args.smoke else args.steps
    torch.manual_seed(0)
    pyro.set_rng_seed(0)

    digits = load_dataset("digits").data.float()
    binary = (digits >= 8).float().to(args.device)  # binarized at 8/16
    train_index, test_index = train_test_split(len(binary), 0.2, seed=0)
    train, test = binary[train_index], binary[test_index]
    hidden = (64,) if args.smoke else (256, 256)

    results, models = {}, {}
    for prior in ("gaussian", "diffusion"):
        pyro.clear_param_store()
        model = LatentDiffusionVAE(features=64, latent_features=args.latent,
                                   hidden_features=hidden, prior=prior,
                                   denoiser_features=(64,) if args.smoke else (128,) * 3,
                                   prior_samples=4).to(args.device)
        # two stages: the VAE for half the steps, then the diffusion prior on its frozen latents
        two_stage = {"method": "two_stage", "vae_steps": steps // 2} if (
            prior == "diffusion" and args.two_stage) else {}
        probgen.fit(model, train, num_steps=steps, batch_size=256, optim=2e-3,
                    progress=not args.smoke, seed=0, **two_stage)
        k = 4 if args.smoke else 32
        results[prior] = probgen.evaluate(model, test, estimator="diffusion_elbo", k=k, seed=0)
        models[prior] = model
        ll = results[prior]
        print(f"{prior:9s} prior: {ll.mean:8.3f} ± {ll.stderr:.3f} nats  [{ll.label}]")
    gain = results["diffusion"].mean - results["gaussian"].mean
    print(f"diffusion prior - plain VAE: {gain:+.3f} nats (both lower bounds on log p(x))")

    figure, axes = plt.subplots(2, 8, figsize=(8, 2.3))
    for row, prior in enumerate(("gaussian", "diffusion")):
        images = models[prior].sample(8, mean=True, sample_steps=50 if args.smoke else 256)
        for axis, image in zip(axes[row], images.cpu()):
            axis.imshow(image.reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
            axis.axis("off")
        axes[row][0].set_title(f"{prior} prior", fontsize=8, loc="left")
    figure.savefig(args.out, dpi=100)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
