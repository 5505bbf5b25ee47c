"""VQ-VAE on binarized 8×8 digits: one autoencoder and codebook, then a per-position categorical
prior and a MADE prior over the same codes, each fitted as a second stage.

Prints each prior's held-out bound log p(x) ≥ log p(x | z_q(x)) + log p(z_q(x)) (the ELBO of the
deterministic one-hot posterior), the tighter sum over z_q(x) and its neighbouring code grids,
and the codebook's perplexity (how many of the K codes are in use).

    python examples/vqvae.py --smoke
    python examples/vqvae.py --steps 2000 --prior-steps 1500 --codes 32 --positions 8
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

import probgen  # noqa: E402
from probgen.data import load_dataset, train_test_split  # noqa: E402
from probgen.models.vqvae import VQVAE  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=2000, help="stage one: autoencoder")
    parser.add_argument("--prior-steps", type=int, default=1500, help="stage two, per prior")
    parser.add_argument("--codes", type=int, default=32, help="K, the codebook size")
    parser.add_argument("--positions", type=int, default=8, help="codes per image")
    parser.add_argument("--code-dim", type=int, default=8)
    parser.add_argument("--update", default="ema", choices=("ema", "straight_through"),
                        help="codebook update: EMA, or the codebook loss through gradients")
    parser.add_argument("--out", default="vqvae_digits.png")
    args = parser.parse_args()
    steps, prior_steps = (30, 30) if args.smoke else (args.steps, args.prior_steps)
    torch.manual_seed(0)
    pyro.set_rng_seed(0)

    digits = load_dataset("digits").data.float()
    binary = (digits >= 8).float().to(args.device)  # binarized at 8/16
    train_index, test_index = train_test_split(len(binary), 0.2, seed=0)
    train, test = binary[train_index], binary[test_index]
    train, validation = train[:-200], train[-200:]  # for choosing each prior's best step
    hidden = (64,) if args.smoke else (128,)

    def build(prior: str, **prior_options) -> VQVAE:
        return VQVAE((64,), num_codes=args.codes, code_dim=args.code_dim,
                     num_positions=args.positions, hidden_features=hidden,
                     codebook_update=args.update, prior=prior,
                     prior_options=prior_options).to(args.device)

    # stage one: encoder, decoder and codebook under a uniform prior (the default method),
    # the step with the best validation bound kept
    autoencoder = build("categorical")
    probgen.fit(autoencoder, train, num_steps=steps, batch_size=128, optim=2e-3, seed=0,
                validation=validation, validate_every=100, progress=not args.smoke)
    shared = {k: v for k, v in autoencoder.state_dict().items() if not k.startswith("prior.")}
    print(f"codebook perplexity on test: {autoencoder.codebook_perplexity(test):.1f} of "
          f"{args.codes} codes")

    # stage two: each prior fitted on the frozen codes, validated on the held-out bound
    priors = {"categorical": {}, "made": {"hidden_features": [64 if args.smoke else 128]}}
    bounds, models = {}, {}
    for name, options in priors.items():
        vq = build(name, **options)
        vq.load_state_dict({**vq.state_dict(), **shared})
        # the categorical's maximum-likelihood logits lie far from their uniform start
        probgen.fit(vq, train, method="prior", num_steps=prior_steps, batch_size=128,
                    optim=3e-2 if name == "categorical" else 2e-3, validation=validation,
                    validate_every=100, seed=0, progress=not args.smoke)
        bounds[name], models[name] = probgen.evaluate(vq, test), vq
        summed = probgen.evaluate(vq, test, estimator="code_sum", num_alternatives=2)
        print(f"{name:11s} prior: {bounds[name].mean:8.3f} ± {bounds[name].stderr:.3f} nats "
              f"[{bounds[name].label}]; summed over {summed.settings['codes_summed']} code "
              f"grids: {summed.mean:8.3f}")
    gain = bounds["made"].mean - bounds["categorical"].mean
    print(f"MADE prior - categorical prior: {gain:+.3f} nats (both lower bounds on log p(x))")

    rows = {"test images": test[:8], "reconstructions": autoencoder.reconstruct(test[:8]),
            "categorical-prior samples": models["categorical"].sample(8, mean=True),
            "MADE-prior samples": models["made"].sample(8, mean=True)}
    figure, axes = plt.subplots(4, 8, figsize=(8, 4.6))
    for axis_row, (title, images) in zip(axes, rows.items()):
        for axis, image in zip(axis_row, images.cpu()):
            axis.imshow(image.reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
            axis.axis("off")
        axis_row[0].set_title(title, fontsize=8, loc="left")
    figure.savefig(args.out, dpi=100)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
