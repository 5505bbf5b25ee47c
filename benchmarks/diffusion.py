"""Diffusion benchmark: bits/dim on dequantized 8×8 digits (diffusion vs GMM vs flow), the
latent-diffusion VAE's bound vs a plain VAE with the same budget, and sampling time per step count.

    python benchmarks/diffusion.py            # full run (CPU, several minutes)
    python benchmarks/diffusion.py --smoke    # seconds
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import probgen  # noqa: E402
from benchmarks._common import print_table, timed, write_results  # noqa: E402
from probgen.data.bundled import load_dataset, train_test_split  # noqa: E402
from probgen.models.diffusion import DiffusionDensity, evaluate_ode, evaluate_vlb  # noqa: E402
from probgen.models.flow import FlowModel  # noqa: E402
from probgen.models.latent_diffusion import (  # noqa: E402
    LatentDiffusionVAE,
    evaluate_diffusion_elbo,
    evaluate_diffusion_iwae,
)
from probgen.models.mixture import (  # noqa: E402
    GaussianMixture,
    GaussianMixturePrior,
    heldout_log_likelihood,
)

LEVELS = 17  # the digits have grey levels 0..16
RESULT = Path(__file__).resolve().parent / "results" / "diffusion.json"
TASKS = {"density": "digits 8x8 dequantized", "latent": "digits 8x8 binarized",
         "latent_mnist": "binarized MNIST", "sampling": "sampling digits"}
REFERENCES = [  # published CIFAR-10 test bits/dim, for GPU runs of the same estimators
    {"task": "cifar10 (reference)", "model": "DDPM (Ho et al., 2020)", "kind": "lower_bound",
     "bits_per_dim": 3.70, "note": "paper, <= 3.70 (L_simple model: 3.75)"},
    {"task": "cifar10 (reference)", "model": "VDM (Kingma et al., 2021)", "kind": "lower_bound",
     "bits_per_dim": 2.65, "note": "paper, no augmentation"},
]


def digits(device: str, seed: int = 0):
    data = load_dataset("digits").data.to(torch.float32)
    train_index, test_index = train_test_split(len(data), 0.2, seed=seed)
    return data[train_index].to(device), data[test_index].to(device)


def dequantize(counts: torch.Tensor, copies: int, generator: torch.Generator) -> torch.Tensor:
    """k + u, u ~ U(0, 1)^d: a density on [0, 17)^d whose bits/dim bound the discrete ones."""
    repeated = counts.repeat(copies, 1)
    noise = torch.rand(repeated.shape, generator=generator).to(counts.device)
    return repeated + noise


def train(model, data, num_steps: int, **options):
    """probgen.fit with the settings every digits model here shares: batches of 256, Adam with
    element-wise gradient clipping (lr 2e-3, clip 10), seed 0."""
    return probgen.fit(model, data, num_steps=num_steps, batch_size=256, seed=0, progress=False,
                       optim=pyro.optim.ClippedAdam({"lr": 2e-3, "clip_norm": 10.0}), **options)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def row(task, name, ll, seconds, **extra):
    log(f"{name}: {ll!r} (train {seconds:.0f} s)")
    return {"task": task, "model": name, "kind": ll.kind, "estimator": ll.estimator,
            "nats": ll.mean, "stderr": ll.stderr, "bits_per_dim": ll.bits_per_dim,
            "num_test": ll.num_examples,
            "train_s": round(seconds, 1), "estimator_settings": ll.settings, **extra}


def density_rows(args, train_x, test_x):
    generator = torch.Generator().manual_seed(0)
    train_deq = dequantize(train_x, 1 if args.smoke else 8, generator)
    test_deq = dequantize(test_x, 1, generator)
    task = "digits 8x8 dequantized (17 levels)"
    rows = []

    pyro.clear_param_store()
    torch.manual_seed(0)
    model = DiffusionDensity(features=64, hidden_features=(256,) * 3, shift=LEVELS / 2,
                             scale=LEVELS / 2, dequantized=True, logsnr_max=8.0,
                             logsnr_min=-10.0).to(args.device)
    seconds, _ = timed(lambda: train(model, train_deq, args.steps))
    ll_vlb = evaluate_vlb(model, (test_deq,), num_samples=4 if args.smoke else 32, seed=0)
    rows.append(row(task, "diffusion (VDM, continuous)", ll_vlb, seconds))
    ll_t = evaluate_vlb(model, (test_deq,), num_samples=4 if args.smoke else 32,
                        num_steps=1000, seed=0)
    rows.append(row(task, "diffusion, same net, T=1000 bound", ll_t, 0.0))
    subset = test_deq[: 8 if args.smoke else 50]
    ode_seconds, ll_ode = timed(lambda: evaluate_ode(model, (subset,), exact=False, atol=1e-4,
                                                     rtol=1e-4, seed=0))
    rows.append(row(task, f"diffusion, prob-flow ODE (n={len(subset)})", ll_ode, 0.0,
                    eval_s=round(ode_seconds, 1)))

    for k in (1, 10):
        gmm = GaussianMixture(k, 64, "full").double().to(args.device)
        seconds, _ = timed(lambda gmm=gmm: probgen.fit(  # MAP EM, the mixture's default method
            gmm, train_deq.double(), num_steps=10 if args.smoke else 100,
            prior=GaussianMixturePrior(), seed=0, progress=False))
        exact = heldout_log_likelihood(gmm, test_deq.double())
        rows.append(row(task, f"gmm full K={k} (MAP EM)", one_draw_bound(exact.per_example,
                                                                          x=test_deq), seconds))
    pyro.clear_param_store()
    torch.manual_seed(0)
    flow = FlowModel.standardized(train_deq.cpu(), kind="maf", transforms=4,
                                  hidden=(256, 256)).to(args.device)
    seconds, _ = timed(lambda: probgen.fit(flow, train_deq, num_steps=args.steps, batch_size=256,
                                           optim=1e-3, seed=0, progress=False))
    rows.append(row(task, "flow (MAF, 4 transforms)", flow_ll(flow, test_deq), seconds))
    return rows, model


def flow_ll(flow, x):
    with torch.no_grad():
        return one_draw_bound(flow.log_prob(x), x=x)


def one_draw_bound(values, *, x):
    """An exact density of one uniform dequantization draw of the test data: in expectation a
    lower bound on the discrete log-likelihood, labelled as such (as in flows.json)."""
    from probgen.core.result import LogLikelihood

    return LogLikelihood(values, kind="lower_bound", estimator="dequantized_density",
                         num_dims=x.shape[-1], data_space="dequantized",
                         settings={"dequantization_draws": 1})


IWAE_K, IWAE_STEPS = 32, 1000  # the hybrids' IWAE: k samples of (z, a 1000-step trajectory)


def latent_bounds(vae, test_x, *, k: int, particles: int, smoke: bool) -> dict:
    """The ELBO (continuous-time VLB for log p(z)), the ELBO and the IWAE-k of the hybrid with
    its prior as the T-step ancestral chain (the IWAE over z and the trajectory: a bound)."""
    steps = 20 if smoke else IWAE_STEPS
    bounds = {"ELBO": evaluate_diffusion_elbo(vae, (test_x,), num_particles=particles,
                                              prior_samples=4, seed=0)}
    started = time.perf_counter()
    iwae = evaluate_diffusion_iwae(vae, (test_x,), k=k, num_steps=steps, seed=0)
    seconds = time.perf_counter() - started
    if vae.uses_diffusion():
        bounds[f"ELBO, T={steps}"] = evaluate_diffusion_elbo(
            vae, (test_x,), num_particles=particles, prior_samples=4, num_steps=steps, seed=0)
        bounds[f"IWAE-{k}, T={steps}"] = iwae
    else:
        bounds[f"IWAE-{k}"] = iwae
    return {"bounds": bounds, "iwae_seconds": round(seconds, 1)}


def latent_rows(args, train_x, test_x):
    train_bin, test_bin = (train_x >= 8).float(), (test_x >= 8).float()
    task = "digits 8x8 binarized (>= 8)"
    settings = dict(features=64, latent_features=8, hidden_features=(256, 256),
                    denoiser_features=(128, 128, 128), prior_samples=4)
    rows = []
    for name, prior, two_stage in (("plain VAE (N(0,I) prior)", "gaussian", False),
                                   ("latent diffusion, end to end", "diffusion", False),
                                   ("latent diffusion, two-stage", "diffusion", True)):
        pyro.clear_param_store()
        torch.manual_seed(0)
        vae = LatentDiffusionVAE(prior=prior, **settings).to(args.device)
        # two-stage: the VAE for half the steps, then the prior with the autoencoder frozen
        options = {"method": "two_stage", "vae_steps": args.steps // 2} if two_stage else {}
        seconds, _ = timed(lambda vae=vae, options=options: train(vae, train_bin, args.steps,
                                                                   **options))
        scored = latent_bounds(vae, test_bin, k=4 if args.smoke else IWAE_K,
                               particles=4 if args.smoke else 32, smoke=args.smoke)
        for bound, ll in scored["bounds"].items():
            extra = {"eval_s": scored["iwae_seconds"]} if "IWAE" in bound else {}
            rows.append(row(task, f"{name}, {bound}", ll, seconds if bound == "ELBO" else 0.0,
                            **extra))
    return rows


def latent_mnist_rows(args):
    """Binarized MNIST (Larochelle & Murray, 50k/10k): the hybrid against the plain VAE.

    Same networks, batch and number of probgen.fit steps for every model; the two-stage hybrid
    splits its steps between the VAE and the prior. Test bound on all 10,000 test images.
    """
    from probgen.data.mnist import load_binarized_mnist  # $PROBGEN_DATA, the cache or shared data

    train_x = load_binarized_mnist("train").float().to(args.device)
    test_x = load_binarized_mnist("test").float().to(args.device)
    steps = args.mnist_steps
    if args.smoke:
        train_x, test_x, steps = train_x[:512], test_x[:64], 10
    task = "binarized MNIST (static, 10k test)"
    settings = dict(features=784, latent_features=args.mnist_latent, hidden_features=(512, 256),
                    denoiser_features=(256, 256, 256), prior_samples=1)

    rows = []
    for name in args.mnist_models.split(","):
        prior, two_stage = {"plain": ("gaussian", False), "hybrid": ("diffusion", False),
                            "two_stage": ("diffusion", True)}[name]
        label = {"plain": "plain VAE (N(0,I) prior)", "hybrid": "latent diffusion, end to end",
                 "two_stage": "latent diffusion, two-stage"}[name]
        pyro.clear_param_store()
        torch.manual_seed(0)
        vae = LatentDiffusionVAE(prior=prior, **settings).to(args.device)
        options = {"method": "two_stage", "vae_steps": steps // 2} if two_stage else {}
        seconds, _ = timed(lambda vae=vae, options=options: probgen.fit(
            vae, train_x, num_steps=steps, batch_size=128, optim=1e-3, seed=0, progress=False,
            **options))
        log(f"{label}: trained {steps} steps in {seconds:.0f} s")
        k = 4 if args.smoke else 16
        ll = evaluate_diffusion_elbo(vae, (test_x,), num_particles=k, prior_samples=4, seed=0)
        extra = {}
        if name == "plain":
            plain = ll
        elif "plain" in locals():  # paired over the same test images
            difference = ll.per_example - plain.per_example
            extra = {"minus_plain_nats": float(difference.mean()),
                     "minus_plain_stderr": float(difference.std() / len(difference) ** 0.5)}
        common = dict(train_steps=steps, batch_size=128, config=dict(vae.config))
        rows.append(row(task, f"{label}, ELBO", ll, seconds, **common, **extra))
        # the IWAE over (z, its 1000-step trajectory) costs k × T denoiser calls per image: a
        # seeded subset of the test set (the same images for every model)
        subset = torch.randperm(len(test_x), generator=torch.Generator().manual_seed(0))
        subset = subset[: 8 if args.smoke else args.mnist_iwae_test]
        scored = latent_bounds(vae, test_x[subset], k=4 if args.smoke else IWAE_K,
                               particles=k, smoke=args.smoke)
        for bound, value in scored["bounds"].items():
            if bound != "ELBO":
                extra = {"eval_s": scored["iwae_seconds"]} if "IWAE" in bound else {}
                rows.append(row(task, f"{label}, {bound}", value, 0.0, **common, **extra,
                                test_subset=f"torch.randperm(10000, seed=0)[:{len(subset)}]"))
        Path(tempfile.gettempdir(), f"diffusion_latent_mnist_{name}.json").write_text(json.dumps(rows[-1:], default=str))
    return rows


def sampling_rows(args, model):
    rows = []
    n = 256 if args.smoke else 1000
    for sampler, steps in (("ddim", 10), ("ddim", 50), ("ddim", 200), ("ancestral", 50),
                           ("ancestral", 200), ("ancestral", 1000)):
        if args.smoke and steps > 50:
            continue
        seconds, _ = timed(lambda s=sampler, k=steps: model.sample(n, sampler=s, num_steps=k))
        log(f"sampling {sampler} {steps}: {seconds:.2f} s")
        rows.append({"task": "sampling digits", "model": f"{sampler}, {steps} steps",
                     "num_samples": n, "seconds": round(seconds, 3),
                     "ms_per_step": round(1000 * seconds / steps, 2)})
    seconds, _ = timed(lambda: model.sample(n, sampler="ode", atol=1e-4, rtol=1e-4))
    rows.append({"task": "sampling digits", "model": "prob-flow ODE (dopri5, tol 1e-4)",
                 "num_samples": n, "seconds": round(seconds, 3)})
    return rows


def report(parts: dict[str, list[dict]], args) -> None:
    density, latent, sampling = (parts.get(k, []) for k in ("density", "latent", "sampling"))
    latent_mnist = parts.get("latent_mnist", [])
    likelihood_rows = density + latent + latent_mnist + [dict(r) for r in REFERENCES]
    print_table(likelihood_rows, ["task", "model", "kind", "nats", "stderr", "bits_per_dim",
                                  "train_s"])
    for r in latent_mnist:
        if "minus_plain_nats" in r:
            print(f"MNIST {r['model']} - plain VAE (paired, nats): {r['minus_plain_nats']:+.2f} "
                  f"± {r['minus_plain_stderr']:.2f}")
    plain = [r for r in latent if r["model"] == "plain VAE (N(0,I) prior), ELBO"]
    hybrid = [r for r in latent if r["model"] == "latent diffusion, end to end, ELBO"]
    if plain and hybrid:
        print(f"latent diffusion - plain VAE (ELBO, nats): {hybrid[0]['nats'] - plain[0]['nats']:+.2f}")
    if sampling:
        print_table(sampling, ["task", "model", "num_samples", "seconds", "ms_per_step"])
    if not args.smoke:  # smoke runs check the script; they never overwrite the results
        write_results("diffusion", likelihood_rows + sampling, steps=args.steps,
                      device=args.device, threads=torch.get_num_threads())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="seconds-long run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=None, help="training steps per model")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--mnist-steps", type=int, default=20000,
                        help="probgen.fit steps per model on binarized MNIST")
    parser.add_argument("--mnist-latent", type=int, default=16)
    parser.add_argument("--mnist-models", default="plain,hybrid,two_stage")
    parser.add_argument("--mnist-iwae-test", type=int, default=500,
                        help="test images for the MNIST IWAE rows (k x 1000 denoiser calls each)")
    parser.add_argument("--part", choices=("all", "density", "latent", "latent_mnist", "report"),
                        default="all",
                        help="run one part (writes /tmp/diffusion_PART.json), or merge them")
    args = parser.parse_args()
    args.steps = args.steps or (20 if args.smoke else 2000)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train_x, test_x = digits(args.device)
    parts: dict[str, list[dict]] = {}
    if args.part in ("all", "density"):
        parts["density"], model = density_rows(args, train_x, test_x)
        parts["sampling"] = sampling_rows(args, model)
    if args.part in ("all", "latent"):
        parts["latent"] = latent_rows(args, train_x, test_x)
    if args.part in ("all", "latent_mnist"):
        parts["latent_mnist"] = latent_mnist_rows(args)
    if args.part in ("density", "latent", "latent_mnist"):
        for name, rows in parts.items():
            Path(tempfile.gettempdir(), f"diffusion_{name}.json").write_text(json.dumps(rows, default=str))
        return
    if args.part == "report":  # merge the parts run separately; keep the rest as recorded
        previous = json.loads(RESULT.read_text()) if RESULT.exists() else []
        for name in ("density", "latent", "latent_mnist", "sampling"):
            path = Path(tempfile.gettempdir(), f"diffusion_{name}.json")
            if path.exists():
                parts[name] = json.loads(path.read_text())
            else:
                parts[name] = [r for r in previous if r.get("task", "").startswith(TASKS[name])]
    report(parts, args)


if __name__ == "__main__":
    main()
