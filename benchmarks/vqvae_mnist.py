"""VQ-VAE on statically binarized MNIST: the one-hot bound with categorical, MADE and PixelCNN
priors over the same codes, beside a plain VAE trained in the same process.

Larochelle & Murray's split (50,000 train / 10,000 valid / 10,000 test). Stage one trains the
conv autoencoder and its EMA codebook (``probgen.fit(vq, x)``, uniform prior, validated on the
uniform-prior bound); stage two fits each prior on the frozen codes (``probgen.fit(vq, x,
method="prior")``, validated on the held-out bound itself). Every model keeps the parameters of
its best validation epoch; the test set is scored once: the bound log p(x | z_q) + log p(z_q) on
all 10,000 images (``probgen.evaluate``), and the tighter sum over z_q and its 49
single-position neighbours (``estimator="code_sum"``) on the first ``--code-sum`` images.

    python -m benchmarks.vqvae_mnist [--smoke] [--ae-epochs 5] [--prior-epochs 3]
        [--vae-epochs 20] [--num-codes 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pyro
import torch

import probgen
from benchmarks._common import RESULTS, machine_info, print_table, write_results
from benchmarks._mnist import mnist_splits, parameter_count, recipe, train
from probgen.models.vae import VAE
from probgen.models.vqvae import VQVAE

PRIORS = {
    "categorical": {},
    "made": {"hidden_features": [256]},
    "pixelcnn": {"channels": 24, "layers": 5, "kernel_size": 3, "first_kernel_size": 5,
                 "head_channels": 64},  # reaches 6 columns: all of a 7-wide grid
}
# the categorical prior's MLE is far from its uniform start (rare codes need logits near -10):
# at the shared rate Adam moves each logit by at most ~lr per step, so it gets a larger one
PRIOR_LR = {"categorical": 5e-2}
COLUMNS = ["model", "estimator", "nll_nats", "stderr", "num_test", "perplexity", "epochs",
           "train_seconds"]


def build_vq(args: argparse.Namespace, prior: str, name: str) -> VQVAE:
    vq = VQVAE((1, 28, 28), network="conv", num_codes=args.num_codes, code_dim=args.code_dim,
               channels=args.channels, prior=prior, prior_options=PRIORS[prior])
    vq.pyro_name = name  # stable parameter names
    return vq


def row(label: str, ll: probgen.LogLikelihood, **extra) -> dict:
    return {"model": label, "estimator": ll.estimator, "kind": ll.kind, "nll_nats": ll.nll,
            "stderr": ll.stderr, "num_test": ll.num_examples, "settings_of_estimator":
            dict(ll.settings), **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run (no JSON)")
    parser.add_argument("--ae-epochs", type=int, default=5, help="stage one (autoencoder)")
    parser.add_argument("--prior-epochs", type=int, default=3, help="stage two, per prior")
    parser.add_argument("--vae-epochs", type=int, default=20, help="the plain VAE")
    parser.add_argument("--priors", default=",".join(PRIORS))
    parser.add_argument("--num-codes", type=int, default=64)
    parser.add_argument("--code-dim", type=int, default=16)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--code-sum", type=int, default=1000,
                        help="test images scored with estimator='code_sum' (0: none)")
    parser.add_argument("--vae-k", type=int, default=100, help="IWAE-k of the plain VAE")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS), help="folder of the results JSON")
    parser.add_argument("--figure", default=None,
                        help="draw the bounds as a bar chart to this PNG (from --out's JSON "
                             "with --figure-only)")
    parser.add_argument("--figure-only", action="store_true", help="no training: only --figure")
    args = parser.parse_args()
    if args.figure_only:
        draw(json.loads((Path(args.out) / "vqvae_mnist.json").read_text()), args.figure)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke:
        args.ae_epochs = args.prior_epochs = args.vae_epochs = 1
        args.num_codes, args.channels, args.code_sum, args.vae_k = 8, 4, 16, 5
    splits = mnist_splits("static", seed=args.seed, smoke=args.smoke)
    images = type(splits)(*(t.reshape(-1, 1, 28, 28) for t in (splits.train, splits.validation,
                                                                 splits.test)),
                          None, splits.binarization, splits.validation_source)
    options = recipe(lr=args.lr)
    rows: list[dict] = []
    started = time.perf_counter()

    # stage one: one autoencoder and codebook, shared by every prior
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    stage_one = build_vq(args, "categorical", "vq_autoencoder")
    ae = train(stage_one, images, epochs=args.ae_epochs, batch_size=args.batch_size,
               seed=args.seed, report_every=1, **options)
    shared = {k: v for k, v in stage_one.state_dict().items() if not k.startswith("prior.")}
    perplexity = stage_one.codebook_perplexity(images.test)
    print(f"stage one: {ae.seconds:.0f} s, test codebook perplexity {perplexity:.1f} of "
          f"{args.num_codes}", flush=True)
    architecture = (f"conv encoder 1x28x28 -> 4x4/2 conv {args.channels} -> 4x4/2 conv "
                    f"{2 * args.channels} -> 1x1 conv {args.code_dim}: a 7x7 grid of codes from "
                    f"{args.num_codes}; decoder mirrors it (3x3 conv, two 4x4/2 transposed "
                    "convs), Bernoulli; EMA codebook (decay 0.99, dead-code restarts), β=0.25")

    for prior in args.priors.split(","):
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        vq = build_vq(args, prior, f"vq_{prior}")
        vq.load_state_dict({**vq.state_dict(), **shared})
        prior_options = {**options, "optim": {"lr": PRIOR_LR.get(prior, args.lr)}}
        fitted = train(vq, images, epochs=args.prior_epochs, batch_size=args.batch_size,
                       seed=args.seed, method="prior", report_every=1, **prior_options)
        common = {"prior": prior, "prior_options": PRIORS[prior], "perplexity": perplexity,
                  "prior_lr": prior_options["optim"]["lr"],
                  "architecture": architecture, "parameters": parameter_count(vq),
                  "epochs": f"{ae.epochs:g} (stage one) + {fitted.epochs:g} (prior)",
                  "train_seconds": round(ae.seconds + fitted.seconds, 1),
                  "model_selection": f"stage one: {ae.model_selection}; prior: "
                                     f"{fitted.model_selection}",
                  "validation_per_epoch": fitted.validation_per_epoch}
        label = f"VQ-VAE, {prior} prior"
        rows.append(row(label, probgen.evaluate(vq, images.test, batch_size=500), **common))
        if args.code_sum:  # the tighter sum and the one-hot bound on the same images
            subset = images.test[:args.code_sum]
            one_hot = probgen.evaluate(vq, subset)
            summed = probgen.evaluate(vq, subset, estimator="code_sum", batch_size=50)
            gain = (summed.per_example - one_hot.per_example).double()
            rows.append(row(label, summed, **common, vq_bound_nll_same_images=one_hot.nll,
                            gain_over_vq_bound_nats=float(gain.mean()),
                            gain_stderr=float(gain.std() / len(gain) ** 0.5)))
        print_table(rows[-2:], COLUMNS)

    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    vae = VAE((784,), latent_dim=50, hidden_features=(400,))
    vae.pyro_name = "plain_vae"
    fitted = train(vae, splits, epochs=args.vae_epochs, batch_size=args.batch_size,
                   seed=args.seed, report_every=1, **options)
    common = {"architecture": "VAE 784-400-50 relu MLPs, Bernoulli, N(0, I) prior",
              "parameters": parameter_count(vae), "epochs": f"{fitted.epochs:g}",
              "train_seconds": round(fitted.seconds, 1),
              "model_selection": fitted.model_selection}
    rows.append(row("VAE (plain)", probgen.evaluate(vae, splits.test, estimator="elbo",
                                                    seed=args.seed), **common))
    rows.append(row("VAE (plain)", probgen.evaluate(vae, splits.test, estimator="iwae",
                                                    k=args.vae_k, batch_size=100,
                                                    seed=args.seed), **common))
    print_table(rows, COLUMNS)
    print(f"total {time.perf_counter() - started:.0f} s", flush=True)
    if not args.smoke:
        path = write_results("vqvae_mnist", rows, results_dir=args.out,
                             budget={"ae_epochs": args.ae_epochs,
                                     "prior_epochs": args.prior_epochs,
                                     "vae_epochs": args.vae_epochs,
                                     "batch_size": args.batch_size, "lr": args.lr},
                             data="statically binarized MNIST (Larochelle & Murray), "
                                  "50,000 / 10,000 / 10,000", machine=machine_info())
        print(f"wrote {path}")
    if args.figure:
        draw(rows, args.figure)


def draw(rows: list[dict], path: str) -> None:
    """Test NLL (the negative bound) per model, with two standard errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["estimator"] in ("vq_bound", "iwae") and r["num_test"] > 1000]
    labels = [r["model"].replace("VQ-VAE, ", "VQ-VAE\n") + f"\n({r['estimator']})"
              for r in shown]
    figure, axis = plt.subplots(figsize=(6, 2.8))
    axis.barh(labels, [r["nll_nats"] for r in shown], xerr=[2 * r["stderr"] for r in shown],
              color=["#4c72b0" if r["estimator"] == "vq_bound" else "#dd8452" for r in shown])
    for y, r in enumerate(shown):
        axis.text(r["nll_nats"], y, f" {r['nll_nats']:.1f}", va="center", fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("test NLL bound, nats (lower is better)")
    axis.tick_params(labelsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
