"""The docs' figures, from real runs: every family fitted on small data with fixed seeds.

    python docs/figures.py                 # a few minutes on one core; writes docs/img/*.png
    python docs/figures.py --smoke         # seconds-long fits, into a temporary directory
    python docs/figures.py --only vae,hmm  # some figure groups only

Each model is fitted with ``probgen.fit``, scored with ``probgen.evaluate`` and ranked with
``probgen.compare``; pictures come from ``probgen.plots`` where it has one. Every figure's
caption, with the likelihood row of the model it shows, goes to ``captions.json`` beside the
PNGs (the docs pages quote it). PNGs are small: 80 dpi, 256 colours, optimized.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import probgen  # noqa: E402
from probgen.data import load_dataset, train_test_split  # noqa: E402
from probgen.plots import (  # noqa: E402
    KIND_COLOURS,
    plot_density_2d,
    plot_hmm_states,
    plot_training_curve,
)

ROOT = Path(__file__).resolve().parents[1]
DPI = 80
MAX_BYTES = 150_000


@dataclass
class Run:
    """Where figures go, how long fits run, and the captions written so far."""

    out: Path
    smoke: bool
    captions: dict[str, str] = field(default_factory=dict)

    def steps(self, full: int, smoke: int = 10) -> int:
        return smoke if self.smoke else full

    def save(self, figure: plt.Figure, name: str, caption: str) -> None:
        """Write ``name``.png from a figure at 80 dpi (see :meth:`save_image`)."""
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
        plt.close(figure)
        buffer.seek(0)
        self.save_image(Image.open(buffer), name, caption)

    def save_image(self, image: Image.Image, name: str, caption: str, width: int = 0) -> None:
        """Write ``name``.png quantized to 256 colours and optimized (at most 150 KB), resized
        to ``width`` pixels when given."""
        if width and image.width > width:
            image = image.resize((width, round(image.height * width / image.width)),
                                 Image.Resampling.LANCZOS)
        path = self.out / f"{name}.png"
        image.convert("RGB").quantize(colors=256).save(path, optimize=True)
        if path.stat().st_size > MAX_BYTES:
            raise RuntimeError(f"{path} is {path.stat().st_size:,} bytes (limit {MAX_BYTES:,})")
        self.captions[name] = caption
        print(f"  {name}.png  {caption}")


def row(ll: probgen.LogLikelihood) -> str:
    """A likelihood row: mean ± stderr nats, its kind and estimator."""
    if ll.settings.get("k"):
        estimator = f"{ll.estimator}, k={ll.settings['k']}"
    elif ll.settings.get("num_samples"):
        estimator = f"{ll.estimator}, {ll.settings['num_samples']} samples"
    else:
        estimator = ll.estimator
    kind = ll.kind.replace("_", " ")
    label = kind if estimator == ll.kind else f"{kind} ({estimator})"
    return (f"{ll.mean:.2f} ± {ll.stderr:.2f} nats per example on {ll.num_examples} held-out "
            f"examples, {label}")


# ------------------------------------------------------------------------------- data


def iris_petals() -> tuple[torch.Tensor, torch.Tensor]:
    """Iris petal length and width (2-D), standardized with the training rows' statistics."""
    data = load_dataset("iris").data[:, 2:4]
    train_index, test_index = train_test_split(len(data), 0.2, seed=0)
    mean, std = data[train_index].mean(0), data[train_index].std(0)
    return (data[train_index] - mean) / std, (data[test_index] - mean) / std


def binary_digits(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """The bundled 8×8 digits binarized at 8/16: 1437 train, 360 test images of 64 pixels."""
    binary = (load_dataset("digits").data >= 8).float()
    train_index, test_index = train_test_split(len(binary), 0.2, seed=0)
    train, test = binary[train_index], binary[test_index]
    return (train[:200], test[:60]) if run.smoke else (train, test)


def two_moons(n: int, seed: int, noise: float = 0.08) -> torch.Tensor:
    """Two interleaving half circles with Gaussian noise, (n, 2)."""
    generator = torch.Generator().manual_seed(seed)
    upper = torch.rand(n, generator=generator) < 0.5
    angle = torch.pi * torch.rand(n, generator=generator)
    x = torch.where(upper, angle.cos(), 1 - angle.cos())
    y = torch.where(upper, angle.sin(), 0.5 - angle.sin())
    return torch.stack([x, y], -1) + noise * torch.randn(n, 2, generator=generator)


def moons(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    return two_moons(300 if run.smoke else 1000, seed=0), two_moons(100 if run.smoke else 500, 1)


# ---------------------------------------------------------------------------- pictures


def curve(result: probgen.FitResult, title: str, *, ylabel: str = "loss per example (nats)",
          smooth: int = 20) -> plt.Figure:
    """Training loss per example with its running mean, validation losses on top."""
    figure = plot_training_curve(result.history, smooth=smooth)
    axis = figure.axes[0]
    if result.validation:
        steps, values = zip(*result.validation)
        axis.plot(steps, values, "o-", color="black", ms=3, lw=1, label="validation")
    if result.best_step is not None:
        axis.axvline(result.best_step, color="grey", ls=":", lw=1, label="best validation")
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=8)
    figure.set_size_inches(6, 3)
    return figure


def image_panels(panels: dict[str, torch.Tensor], shape: tuple[int, int] = (8, 8),
                 ncols: int = 12) -> plt.Figure:
    """Rows of images, one labelled block per entry: training data beside model samples."""
    rows = [(name, images[i:i + ncols]) for name, images in panels.items()
            for i in range(0, len(images), ncols)]
    figure, axes = plt.subplots(len(rows), ncols, figsize=(ncols * 0.6, len(rows) * 0.66),
                                squeeze=False)
    labelled = set()
    for (name, images), line in zip(rows, axes):
        for i, axis in enumerate(line):
            axis.set_xticks([])
            axis.set_yticks([])
            axis.spines[:].set_visible(False)
            if i < len(images):
                axis.imshow(images[i].reshape(shape).detach().cpu().float().numpy(),
                            cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        if name not in labelled:
            line[0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
            labelled.add(name)
    figure.subplots_adjust(wspace=0.05, hspace=0.05)
    return figure


def scatter_panels(panels: dict[str, torch.Tensor], size: float = 3.0) -> plt.Figure:
    figure, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size),
                                sharex=True, sharey=True)
    for axis, (name, points) in zip(axes, panels.items()):
        points = points.detach().cpu()
        axis.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5)
        axis.set_title(name, fontsize=9)
        axis.set_aspect("equal")
    return figure


# ----------------------------------------------------------------------- the families


def mixture(run: Run) -> None:
    from probgen.models.mixture import GaussianMixture, GaussianMixturePrior

    train, test = iris_petals()
    gmm = GaussianMixture(3, 2, "full").double()
    result = probgen.fit(gmm, train, method="em", num_steps=run.steps(100), tol=0.0,
                         prior=GaussianMixturePrior(), validation=test, validate_every=1,
                         seed=0, progress=False)
    ll = probgen.evaluate(gmm, test)
    plot = plot_density_2d(lambda x: gmm.log_prob(x), train,
                           title="GMM K=3, full covariance, MAP EM")
    plot.axes[0].set(xlabel="petal length (standardized)", ylabel="petal width (standardized)")
    run.save(plot, "mixture_density", f"Density of a 3-component Gaussian mixture fitted by MAP "
             f"EM to iris petals (120 flowers, white dots); test log-likelihood {row(ll)}.")
    run.save(curve(result, "MAP EM on iris petals", smooth=1), "mixture_curve",
             f"Negative log-likelihood per flower, per EM iteration, on the training rows and "
             f"on the 30 held-out rows; final test log-likelihood {row(ll)}.")


def hmm(run: Run) -> None:
    from probgen.models.hmm import HMM, initialize_from_data

    torch.manual_seed(0)
    truth = HMM(3, "gaussian", num_features=2).double()
    angles = 2 * torch.pi * torch.arange(3, dtype=torch.float64) / 3
    truth.set_parameters(transition_probs=0.85 * torch.eye(3) + 0.05,
                         means=2.0 * torch.stack([angles.cos(), angles.sin()], -1))
    sequences, states = truth.sample(60 if run.smoke else 200, 80, return_states=True)
    train, test = sequences[:-40], sequences[-40:]
    model = initialize_from_data(HMM(3, "gaussian", num_features=2).double(), train, seed=0)
    result = probgen.fit(model, train, method="baum_welch", num_steps=run.steps(40, 5), tol=0.0,
                         validation=test, validate_every=1, seed=0, progress=False)
    ll = probgen.evaluate(model, test)
    paths, _ = model.viterbi(test[:1])
    # label the decoded states by the true state they overlap most, so colours line up
    overlap = torch.zeros(3, 3)
    overlap.index_put_((paths[0], states[-40]), torch.ones(()), accumulate=True)
    relabel = overlap.argmax(1)
    figure = plot_hmm_states(test[0], relabel[paths[0]])
    top, bottom = figure.axes
    top.set_title("one held-out sequence (2 features) and its Viterbi path", fontsize=10)
    bottom.set_ylabel("state", rotation=0, ha="right", va="center")
    agreement = float((relabel[paths[0]] == states[-40]).double().mean())
    run.save(figure, "hmm_states",
             f"A 3-state Gaussian HMM fitted by Baum–Welch on {len(train)} simulated sequences: "
             f"a held-out sequence and its decoded state path ({agreement:.0%} of steps match "
             f"the true states); test log-likelihood {row(ll)}.")
    run.save(curve(result, "Baum–Welch", smooth=1), "hmm_curve",
             f"Negative log-likelihood per sequence (80 steps) per Baum–Welch iteration, "
             f"training and held-out; test log-likelihood {row(ll)}.")


def vae(run: Run) -> dict:
    from probgen.models.vae import VAE

    train, test = binary_digits(run)
    pyro.set_rng_seed(0)
    model = VAE((64,), latent_dim=8, hidden_features=(128,))
    result = probgen.fit(model, train, num_steps=run.steps(3000), batch_size=128, optim=3e-3,
                         validation=test, validate_every=run.steps(150, 5), seed=0,
                         progress=False)
    ll = probgen.evaluate(model, test, estimator="iwae", k=run.steps(500, 5), seed=0)
    model.eval()
    with torch.no_grad():
        samples = model.sample(24, mean=True)
    run.save(image_panels({"data": test[:12], "samples": samples}), "vae_samples",
             f"Held-out digits (top) and the means of p(x | z), z ~ N(0, I), from a VAE (latent 8, "
             f"hidden 128) on binarized 8×8 digits; test log-likelihood {row(ll)}.")
    run.save(curve(result, "VAE on binarized digits"), "vae_curve",
             f"Negative ELBO per image while training (mini-batches of 128) and on the held-out "
             f"images; final test log-likelihood {row(ll)}.")
    return {"vae, Gaussian q (latent 8)": ll}


def hierarchical(run: Run, plain: dict) -> None:
    from probgen.models.flow_vae import FlowVAE
    from probgen.models.hierarchical import HierarchicalVAE

    train, test = binary_digits(run)
    pyro.set_rng_seed(0)
    ladder = HierarchicalVAE((64,), latent_dims=(16, 8), hidden_features=((128,), (64,)),
                             warmup_steps=run.steps(500, 5))
    result = probgen.fit(ladder, train, num_steps=run.steps(3000), batch_size=128, optim=2e-3,
                         validation=test, validate_every=run.steps(150, 5), seed=0,
                         progress=False)
    k = run.steps(500, 5)
    ll = probgen.evaluate(ladder, test, estimator="iwae", k=k, seed=0)
    ladder.eval()
    with torch.no_grad():
        samples = ladder.sample(24)
    run.save(image_panels({"data": test[:12], "samples": samples}), "hierarchical_samples",
             f"Held-out digits (top) and samples of a two-layer ladder VAE (z₁ 16, z₂ 8) on "
             f"binarized 8×8 digits; test log-likelihood {row(ll)}.")
    run.save(curve(result, "ladder VAE, KL warm-up over the first 500 steps"),
             "hierarchical_curve",
             f"Training loss (negative ELBO with the KL weight warming up) and the held-out "
             f"negative ELBO per image; final test log-likelihood {row(ll)}.")
    pyro.set_rng_seed(0)
    flow_vae = FlowVAE((64,), posterior="iaf", latent_dim=8, hidden_features=(128,),
                       flow_transforms=2, flow_hidden=(32, 32))
    probgen.fit(flow_vae, train, num_steps=run.steps(3000), batch_size=128, optim=3e-3, seed=0,
                progress=False)
    table = probgen.compare({**plain, "vae, IAF q (latent 8)":
                             probgen.evaluate(flow_vae, test, estimator="iwae", k=k, seed=0),
                             "ladder vae (16, 8)": ll})
    figure = table.plot()
    figure.suptitle(f"binarized digits: IWAE-{k} bounds")
    run.save(figure, "hierarchical_compare",
             f"probgen.compare on the same {len(test)} held-out digits: a VAE with a Gaussian "
             f"posterior, the same VAE with a 2-step IAF posterior, and the ladder VAE (all "
             f"IWAE-{k} lower bounds; right: paired differences to the best).")


def flow(run: Run) -> dict:
    from probgen.models.flow import FlowModel

    train, test = moons(run)
    model = FlowModel(2, kind="nsf", transforms=3, hidden=(64, 64))
    result = probgen.fit(model, train, num_steps=run.steps(1500), batch_size=256, optim=3e-3,
                         validation=test, validate_every=run.steps(100, 5), seed=0,
                         progress=False)
    ll = probgen.evaluate(model, test)
    model.eval()
    run.save(plot_density_2d(lambda x: model.log_prob(x.float()), train,
                             title="NSF flow on two moons"),
             "flow_density",
             f"Density of a neural spline flow (3 transforms) fitted to {len(train)} two-moons "
             f"points (white dots); test log-likelihood {row(ll)}.")
    run.save(curve(result, "NSF flow on two moons"), "flow_curve",
             f"Negative log-likelihood per point, training mini-batches and held-out points; "
             f"final test log-likelihood {row(ll)}.")
    return {"NSF flow": ll}


def flow_matching(run: Run) -> None:
    from probgen.models.flow_matching import FlowMatching

    train, test = moons(run)
    model = FlowMatching(2, hidden_features=(64, 64), shift=train.mean(0).tolist(),
                         scale=train.std(0).tolist())
    result = probgen.fit(model, train, num_steps=run.steps(1500), batch_size=256, optim=2e-3,
                         seed=0, progress=False)
    ll = probgen.evaluate(model, test[: run.steps(200, 20)])
    model.eval()
    run.save(plot_density_2d(lambda x: probgen.evaluate(model, x.float()).per_example,
                             train, title="flow matching on two moons", grid=run.steps(40, 8)),
             "flow_matching_density",
             f"ODE density of a flow-matching model (straight path, exact divergence) fitted to "
             f"{len(train)} two-moons points (white dots); test log-likelihood {row(ll)}.")
    run.save(curve(result, "flow matching on two moons", ylabel="CFM loss per example"),
             "flow_matching_curve",
             f"The conditional-flow-matching regression loss on training mini-batches (not a "
             f"likelihood); the held-out ODE log-likelihood after training is {row(ll)}.")


def six_gaussians(n: int, seed: int) -> torch.Tensor:
    """examples/diffusion.py's data: six Gaussians (σ 0.3) on a circle of radius 2."""
    generator = torch.Generator().manual_seed(seed)
    angles = torch.randint(6, (n,), generator=generator) * torch.pi / 3
    means = 2.0 * torch.stack([angles.cos(), angles.sin()], -1)
    return means + 0.3 * torch.randn(n, 2, generator=generator)


def diffusion(run: Run) -> None:
    from probgen.models.diffusion import DiffusionDensity

    train = six_gaussians(300 if run.smoke else 2000, seed=0)
    test = six_gaussians(100 if run.smoke else 500, seed=1)
    pyro.set_rng_seed(0)
    model = DiffusionDensity(features=2, hidden_features=(64, 64, 64))
    result = probgen.fit(model, train, num_steps=run.steps(2500), batch_size=256, optim=2e-3,
                         seed=0, progress=False)
    ll = probgen.evaluate(model, test, estimator="vlb", num_samples=run.steps(16, 2))
    model.eval()
    torch.manual_seed(0)
    n = 200 if run.smoke else 1000
    panels = {"held-out data": test,
              "ancestral, 256 steps": model.sample(n, sampler="ancestral", num_steps=256),
              "DDIM, 25 steps": model.sample(n, sampler="ddim", num_steps=25)}
    run.save(scatter_panels(panels), "diffusion_samples",
             f"A continuous-time diffusion model (denoiser 64-64-64) on six Gaussians: held-out "
             f"points and samples from two samplers; test log-likelihood {row(ll)}.")
    run.save(curve(result, "diffusion on six Gaussians", ylabel="diffusion loss per point (nats)",
                   smooth=50), "diffusion_curve",
             f"The training loss per point (a one-sample estimate of the negative VLB); final "
             f"test log-likelihood {row(ll)}.")
    run.save(trajectory(model, 500), "diffusion_trajectory",
             "Deterministic DDIM sampling (50 steps): the same 500 noise draws z₁ ~ N(0, I) "
             "carried from t = 1 to t = 0 by the trained denoiser; each panel shows the latent "
             "z_t, mapped to data units by the model's standardization.")


@torch.no_grad()
def trajectory(model, num_samples: int, num_steps: int = 50) -> plt.Figure:
    """Snapshots of DDIM (η = 0) steps z_t → z_s = α_s x̂ + σ_s ε̂ (Song et al., 2021, eq. 12)."""
    torch.manual_seed(0)
    z = torch.randn(num_samples, 2)
    grid = torch.linspace(1.0, 0.0, num_steps + 1)
    logsnr = model.schedule.logsnr(grid)
    alpha, sigma = torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()
    snapshots = {}
    keep = {0, num_steps // 2, 3 * num_steps // 4, 7 * num_steps // 8, num_steps}
    for i in range(num_steps + 1):
        if i in keep:
            snapshots[f"t = {float(grid[i]):.2f}"] = z * model.scale + model.shift
        if i == num_steps:
            break
        eps = model.denoiser(z, grid[i].expand(num_samples))
        z = alpha[i + 1] * (z - sigma[i] * eps) / alpha[i] + sigma[i + 1] * eps
    figure = scatter_panels(snapshots, size=2.4)
    for axis in figure.axes:
        axis.set_xlim(-4, 4)
        axis.set_ylim(-4, 4)
    return figure


def latent_diffusion(run: Run) -> None:
    from probgen.models.latent_diffusion import LatentDiffusionVAE

    train, test = binary_digits(run)
    pyro.set_rng_seed(0)
    model = LatentDiffusionVAE(features=64, latent_features=8, hidden_features=(128,),
                               denoiser_features=(64, 64), prior="diffusion")
    steps = run.steps(3000)
    probgen.fit(model, train, method="two_stage", vae_steps=steps // 2, num_steps=steps,
                batch_size=128, optim=2e-3, seed=0, progress=False)
    ll = probgen.evaluate(model, test, estimator="diffusion_elbo", k=run.steps(8, 2), seed=0)
    model.eval()
    samples = model.sample(24, mean=True, sample_steps=run.steps(128, 8))
    run.save(image_panels({"data": test[:12], "samples": samples}), "latent_diffusion_samples",
             f"A VAE (latent 8) with a diffusion prior on z, trained in two stages on binarized "
             f"8×8 digits: held-out digits and decoded samples; test log-likelihood {row(ll)}.")


def ebm(run: Run) -> None:
    from probgen.models.ebm import RBM

    train, test = binary_digits(run)
    rbm = RBM(64, 16, seed=0)
    epochs = run.steps(40, 1)
    result = probgen.fit(rbm, train, method="cd", k=1, epochs=epochs, batch_size=50, optim=0.05,
                         momentum=0.9, validation=test, seed=0, progress=False)
    exact = probgen.evaluate(rbm, test, estimator="exact")
    with torch.no_grad():
        torch.manual_seed(0)
        samples = rbm.sample(24, num_steps=run.steps(1000, 20))
    run.save(image_panels({"data": test[:12], "samples": samples}), "ebm_samples",
             f"Held-out digits (top) and samples (1000 Gibbs sweeps) of an RBM with 16 hidden "
             f"units trained by CD-1 for {epochs} epochs; test log-likelihood {row(exact)}.")
    figure, axis = plt.subplots(figsize=(6, 3))
    steps, values = zip(*result.validation)
    axis.plot(steps, values, "o-", color="black", ms=3, lw=1)
    axis.set(xlabel="step", ylabel="held-out NLL per image (nats)",
             title="RBM, CD-1: exact held-out NLL after each epoch")
    run.save(figure, "ebm_curve",
             f"CD's loss is a surrogate, not a likelihood, so the curve is the exact held-out "
             f"negative log-likelihood (2¹⁶ hidden states summed) after each epoch; final test "
             f"log-likelihood {row(exact)}.")
    bracket(run, rbm, test[:50 if run.smoke else 120], exact)


def bracket(run: Run, rbm, test: torch.Tensor, exact_all: probgen.LogLikelihood) -> None:
    """AIS (estimate, biased high when short) and RAISE (a bound on the annealed model) against
    the exact value, as the number of intermediate temperatures grows."""
    exact = probgen.evaluate(rbm, test, estimator="exact")
    schedules = [10, 30] if run.smoke else [10, 30, 100, 300, 1000]
    chains = run.steps(100, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the short schedules' low-ESS warning is the point
        ais = [probgen.evaluate(rbm, test, estimator="ais", num_betas=b, num_chains=chains,
                                seed=0) for b in schedules]
    rev = [probgen.evaluate(rbm, test, estimator="raise", num_betas=b, num_chains=chains, seed=0)
           for b in schedules]
    # Both are compared with the exact value on the same digits: AIS's error is its log Ẑ's
    # (shared by every example), RAISE's the spread of its per-example gaps.
    gaps = {"AIS (estimate)": [(r.mean - exact.mean, r.estimator_stderr) for r in ais],
            "RAISE (annealed-model bound)": [
                (float((r.per_example - exact.per_example).mean()),
                 float((r.per_example - exact.per_example).std() / math.sqrt(len(test))))
                for r in rev]}
    figure, axis = plt.subplots(figsize=(6, 3.2))
    for (label, points), colour, shift in zip(gaps.items(), (KIND_COLOURS["estimate"],
                                                             KIND_COLOURS["lower_bound"]),
                                              (0.95, 1.05)):
        axis.errorbar([b * shift for b in schedules], [gap for gap, _ in points],
                      yerr=[2 * error for _, error in points], fmt="o-", color=colour,
                      capsize=3, ms=4, label=label)
    axis.axhline(0.0, color=KIND_COLOURS["exact"], lw=1.5, label=f"exact: {exact.mean:.2f} nats")
    axis.set_xscale("log")
    axis.set(xlabel="intermediate temperatures (num_betas)",
             ylabel="estimate − exact (nats per digit)",
             title=f"RBM, 16 hidden units: {len(test)} held-out digits, {chains} chains")
    axis.legend(fontsize=8)
    run.save(figure, "ebm_ais_raise",
             f"AIS and RAISE on an RBM with 16 hidden units (CD-1 on binarized digits) against "
             f"its exact test log-likelihood, "
             f"{exact.mean:.2f} nats ({len(test)} held-out digits, 2¹⁶ hidden states summed). "
             f"AIS estimates log Z, so its log p(x) is an estimate, biased high in expectation "
             f"when the schedule is short, though one run may land on either side: "
             f"{ais[0].mean:.2f} with {schedules[0]} temperatures, "
             f"{ais[-1].mean:.2f} with {schedules[-1]}. RAISE is a stochastic lower bound on "
             f"the annealed model, not on the RBM itself: {rev[0].mean:.2f} and "
             f"{rev[-1].mean:.2f}. Bars: ±2 stderr (AIS: of log Ẑ; RAISE: of the per-digit "
             f"gaps).")


def autoregressive(run: Run) -> None:
    from probgen.models.autoregressive import MADE

    train, test = binary_digits(run)
    pyro.set_rng_seed(0)
    made = MADE(64, hidden_features=(128,), direct_connections=True)
    result = probgen.fit(made, train, num_steps=run.steps(2000), batch_size=128, optim=3e-3,
                         validation=test, validate_every=run.steps(100, 5), seed=0,
                         progress=False)
    ll = probgen.evaluate(made, test)
    made.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        samples = made.sample(24)
    run.save(image_panels({"data": test[:12], "samples": samples}), "autoregressive_samples",
             f"Held-out digits (top) and exact ancestral samples of MADE (one ordering, hidden "
             f"128, direct connections) on binarized 8×8 digits; test log-likelihood {row(ll)}.")
    run.save(curve(result, "MADE on binarized digits"), "autoregressive_curve",
             f"Exact negative log-likelihood per image, training mini-batches and held-out "
             f"images (best validation step restored); test log-likelihood {row(ll)}.")


def vqvae(run: Run) -> None:
    """examples/vqvae.py's two stages: autoencoder and codebook, then a MADE prior on the codes."""
    from probgen.models.vqvae import VQVAE

    train, test = binary_digits(run)

    def build(prior: str, **prior_options) -> VQVAE:
        return VQVAE((64,), num_codes=32, code_dim=8, num_positions=8, hidden_features=(128,),
                     prior=prior, prior_options=prior_options)

    pyro.set_rng_seed(0)
    autoencoder = build("categorical")
    probgen.fit(autoencoder, train, num_steps=run.steps(2000), batch_size=128, optim=2e-3,
                seed=0, progress=False)
    shared = {k: v for k, v in autoencoder.state_dict().items() if not k.startswith("prior.")}
    model = build("made", hidden_features=[128])
    model.load_state_dict({**model.state_dict(), **shared})
    probgen.fit(model, train, method="prior", num_steps=run.steps(1500), batch_size=128,
                optim=2e-3, validation=test, validate_every=run.steps(100, 5), seed=0,
                progress=False)
    ll = probgen.evaluate(model, test)
    model.eval()
    torch.manual_seed(0)
    samples = model.sample(24, mean=True)
    perplexity = model.codebook_perplexity(test)
    run.save(image_panels({"data": test[:12], "samples": samples}), "vqvae_samples",
             f"Held-out digits (top) and decoded samples of a VQ-VAE (8 codes per image from a "
             f"codebook of 32, {perplexity:.1f} in use) with a MADE prior over the codes; test "
             f"log-likelihood {row(ll)}.")


# --------------------------------------------------------------------------- the guide


def comparison(run: Run, flow_result: dict) -> None:
    """compare(...).plot on two moons, and the paired differences behind its right panel."""
    from probgen.models.mixture import GaussianMixture

    train, test = moons(run)
    results = dict(flow_result)
    for k in (2, 8):
        gmm = GaussianMixture(k, 2, "full").double()
        probgen.fit(gmm, train.double(), method="em", num_steps=run.steps(200), seed=0,
                    progress=False)
        results[f"GMM K={k}"] = probgen.evaluate(gmm, test.double())
    table = probgen.compare(results)
    figure = table.plot()
    figure.suptitle("two moons: held-out log-likelihood")
    run.save(figure, "compare_moons",
             f"probgen.compare(...).plot on {len(test)} held-out two-moons points: the flow and "
             f"two Gaussian mixtures, all exact; left, each mean ±2 stderr; right, the paired "
             f"difference to the best ±2 paired stderr.")
    best, other = results["NSF flow"], results["GMM K=8"]
    difference = (best.per_example - other.per_example).double()
    mean = float(difference.mean())
    stderr = float(difference.std() / math.sqrt(len(difference)))
    unpaired = math.hypot(best.stderr, other.stderr)
    figure, axis = plt.subplots(figsize=(6, 3))
    axis.hist(difference.numpy(), bins=40, color="#999999")
    axis.axvline(0, color="black", lw=0.8)
    axis.axvspan(mean - 2 * stderr, mean + 2 * stderr, color=KIND_COLOURS["exact"], alpha=0.4,
                 label=f"paired mean {mean:+.3f} ± {2 * stderr:.3f}")
    axis.axvspan(mean - 2 * unpaired, mean + 2 * unpaired, color="grey", alpha=0.15,
                 label=f"unpaired ±{2 * unpaired:.3f}")
    axis.set(xlabel="log p_flow(x) − log p_GMM(x) per test point (nats)", ylabel="points",
             title="NSF flow vs GMM K=8 on the same points")
    axis.legend(fontsize=8)
    run.save(figure, "compare_paired",
             f"Per-point differences behind one comparison row: log p under the flow minus "
             f"log p under the 8-component mixture, mean {mean:+.3f} nats, paired stderr "
             f"{stderr:.3f} against "
             f"{unpaired:.3f} unpaired (the two means' own stderrs combined).")


def demo(run: Run) -> None:
    """The chart `make demo` writes for iris (the README's picture)."""
    from probgen.demo.run import run_demo

    with tempfile.TemporaryDirectory() as scratch:
        with contextlib.redirect_stdout(io.StringIO()):  # the demo prints its tables
            run_demo(scratch, smoke=run.smoke, only="iris")
        run.save_image(Image.open(Path(scratch) / "iris_comparison.png"), "demo_iris_comparison",
                       "`make demo` on iris (30 held-out flowers): each family's held-out "
                       "log-likelihood (green: exact, blue: lower bound) and its paired "
                       "difference to the best, drawn by `probgen.compare(...).plot`.",
                       width=800)


# ------------------------------------------------------------------ the examples' pictures


def examples(run: Run) -> None:
    """Pictures the example scripts draw themselves (their `--smoke` run in smoke mode)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    with tempfile.TemporaryDirectory() as scratch:
        smoke = ["--smoke"] if run.smoke else []
        jobs = [("gmm", ["--data", "simulated", "--plot", f"{scratch}/gmm.png"], "gmm.png",
                 "examples/gmm.py --data simulated --plot gmm.png: the held-out-selected mixture's "
                 "density over the simulated 2-D data."),
                ("compare_families", ["--out", scratch], "comparison.png",
                 "examples/compare_families.py: Gaussian mixtures, a user-written Pyro program "
                 "and an NSF flow on standardized iris, ranked by probgen.compare.")]
        for script, arguments, produced, caption in jobs:
            subprocess.run([sys.executable, str(ROOT / "examples" / f"{script}.py"), *arguments,
                            *smoke], check=True, env=env, cwd=scratch, stdout=subprocess.DEVNULL)
            run.save_image(Image.open(Path(scratch) / produced), f"example_{script}", caption,
                           width=640)


def custom_program(run: Run) -> None:
    """examples/custom_program.py's zero-inflated Poisson: held-out counts against the fit."""
    example = load_example("custom_program")
    counts, covariate = example.simulate(600 if run.smoke else 5000, torch.Generator().manual_seed(0))
    split = int(0.8 * len(counts))
    pyro.clear_param_store()
    probgen.fit(example.model, (counts[:split], covariate[:split]), num_steps=run.steps(1500),
                batch_size=min(512, split), optim=0.05, seed=0, progress=False)
    ll = probgen.evaluate(example.model, (counts[split:], covariate[split:]))
    zero, intercept, slope = (float(pyro.param(name).detach()) for name in ("zero_prob", "intercept",
                                                                   "slope"))
    values = torch.arange(0, 15)
    rates = torch.exp(intercept + slope * covariate[split:])
    poisson = torch.distributions.Poisson(rates[:, None]).log_prob(values.float()).exp()
    predicted = (1 - zero) * poisson.mean(0) + zero * (values == 0).float()
    observed = torch.bincount(counts[split:].long().clamp(max=14), minlength=15).float()
    figure, axis = plt.subplots(figsize=(6, 3))
    axis.bar(values, observed / observed.sum(), color="#cccccc", label="held-out counts")
    axis.plot(values, predicted, "o-", color=KIND_COLOURS["exact"], ms=4,
              label=f"fitted: zero_prob {zero:.2f}, slope {slope:.2f}")
    axis.set(xlabel="count", ylabel="fraction", title="zero-inflated Poisson regression")
    axis.legend(fontsize=8)
    run.save(figure, "example_custom_program",
             f"examples/custom_program.py's model (true zero_prob 0.3, slope 0.8) fitted with "
             f"probgen.fit: held-out count frequencies against the fitted mixture; test "
             f"log-likelihood {row(ll)}.")


def load_example(name: str):
    """Import examples/<name>.py as a module (its functions, not its main)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mcmc(run: Run) -> None:
    """NUTS on the MCMC examples' own programs (assignments and states enumerated)."""
    from probgen.infer.mcmc import run_mcmc

    settings = {"num_samples": run.steps(100, 4), "warmup_steps": run.steps(100, 4),
                "max_tree_depth": run.steps(4, 2), "seed": 0, "progress": False}
    train, _ = iris_petals()
    x = train[:: 8 if run.smoke else 2].double()
    gmm_example = load_example("mcmc_gmm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a short run: the ESS warning is expected
        idata = run_mcmc(lambda data: gmm_example.bayesian_gmm(data, 2), x, **settings)
    locs = torch.as_tensor(idata.posterior["locs"].values).reshape(-1, 2, 2)  # (draws, K, D)
    divergences = int(idata.sample_stats["diverging"].sum())
    figure, axis = plt.subplots(figsize=(4.5, 4))
    axis.scatter(x[:, 0], x[:, 1], s=8, c="#999999", label="data")
    for k, colour in enumerate(("#2166ac", "#b2182b")):
        axis.scatter(locs[:, k, 0], locs[:, k, 1], s=3, alpha=0.3, c=colour,
                     label=f"posterior draws of mean {k + 1}")
    axis.set(xlabel="petal length (standardized)", ylabel="petal width (standardized)",
             title="Bayesian GMM, K=2, NUTS")
    axis.legend(fontsize=7, markerscale=2)
    run.save(figure, "example_mcmc_gmm",
             f"examples/mcmc_gmm.py's Bayesian mixture (K=2, assignments enumerated) on {len(x)} "
             f"iris petals: {len(locs)} NUTS draws of the two component means "
             f"({divergences} divergent transitions).")

    hmm_example = load_example("mcmc_hmm")
    sequences = hmm_example.simulate(4 if run.smoke else 8, 8 if run.smoke else 15, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = run_mcmc(lambda data: hmm_example.bayesian_hmm(data, 2), sequences, **settings)
    means = torch.as_tensor(idata.posterior["locs"].values).reshape(-1, 2)
    figure, axis = plt.subplots(figsize=(6, 3))
    for k, colour in enumerate(("#2166ac", "#b2182b")):
        axis.hist(means[:, k], bins=30, color=colour, alpha=0.6, label=f"state {k + 1} mean")
    for truth in (-1.5, 1.5):
        axis.axvline(truth, color="black", ls="--", lw=1)
    axis.set(xlabel="emission mean", ylabel="draws",
             title="Bayesian HMM, 2 states, NUTS (dashed: true means)")
    axis.legend(fontsize=8)
    run.save(figure, "example_mcmc_hmm",
             f"examples/mcmc_hmm.py's Bayesian HMM (hidden states enumerated) on "
             f"{sequences.shape[0]} simulated sequences of {sequences.shape[1]} steps: "
             f"{len(means)} NUTS draws of the two emission means against the true ±1.5.")


# ------------------------------------------------------------------------------ main

GROUPS: dict[str, Callable[[Run, dict], None]] = {
    "mixture": lambda run, shared: mixture(run),
    "hmm": lambda run, shared: hmm(run),
    "vae": lambda run, shared: shared.update(vae=vae(run)),
    "hierarchical": lambda run, shared: hierarchical(run, shared.get("vae") or vae(run)),
    "flow": lambda run, shared: shared.update(flow=flow(run)),
    "comparison": lambda run, shared: comparison(run, shared.get("flow") or flow(run)),
    "diffusion": lambda run, shared: diffusion(run),
    "latent_diffusion": lambda run, shared: latent_diffusion(run),
    "ebm": lambda run, shared: ebm(run),
    "autoregressive": lambda run, shared: autoregressive(run),
    "vqvae": lambda run, shared: vqvae(run),
    "flow_matching": lambda run, shared: flow_matching(run),
    "demo": lambda run, shared: demo(run),
    "custom_program": lambda run, shared: custom_program(run),
    "examples": lambda run, shared: examples(run),
    "mcmc": lambda run, shared: mcmc(run),
}

# Every PNG a full run writes (tests/test_figures.py checks a smoke run writes each one).
FIGURES = {
    "mixture": ["mixture_density", "mixture_curve"],
    "hmm": ["hmm_states", "hmm_curve"],
    "vae": ["vae_samples", "vae_curve"],
    "hierarchical": ["hierarchical_samples", "hierarchical_curve", "hierarchical_compare"],
    "flow": ["flow_density", "flow_curve"],
    "comparison": ["compare_moons", "compare_paired"],
    "diffusion": ["diffusion_samples", "diffusion_curve", "diffusion_trajectory"],
    "latent_diffusion": ["latent_diffusion_samples"],
    "ebm": ["ebm_samples", "ebm_curve", "ebm_ais_raise"],
    "autoregressive": ["autoregressive_samples", "autoregressive_curve"],
    "vqvae": ["vqvae_samples"],
    "flow_matching": ["flow_matching_density", "flow_matching_curve"],
    "demo": ["demo_iris_comparison"],
    "custom_program": ["example_custom_program"],
    "examples": ["example_gmm", "example_compare_families"],
    "mcmc": ["example_mcmc_gmm", "example_mcmc_hmm"],
}


def main(argv: list[str] | None = None) -> dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny fits, into a temp directory")
    parser.add_argument("--out", default=None, help="default: docs/img (smoke: a temp directory)")
    parser.add_argument("--only", default=None, help="comma-separated groups: " + ", ".join(GROUPS))
    args = parser.parse_args(argv)
    out = Path(args.out or (tempfile.mkdtemp(prefix="probgen-figures-") if args.smoke
                            else ROOT / "docs" / "img"))
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    run = Run(out, args.smoke)
    chosen = args.only.split(",") if args.only else list(GROUPS)
    unknown = sorted(set(chosen) - set(GROUPS))
    if unknown:
        parser.error(f"unknown groups {unknown}; choose from {', '.join(GROUPS)}")
    index = out / "captions.json"
    # --only keeps the other figures' captions; the index is rewritten after every group, so
    # a run that fails part-way still describes the figures it drew
    kept = json.loads(index.read_text()) if index.exists() and args.only else {}
    shared: dict = {}
    for name in chosen:
        started = time.perf_counter()
        print(f"== {name}")
        GROUPS[name](run, shared)
        print(f"   {time.perf_counter() - started:.1f} s")
        captions = {**kept, **run.captions}
        index.write_text(json.dumps(dict(sorted(captions.items())), indent=1,
                                    ensure_ascii=False) + "\n")
    print(f"wrote {len(run.captions)} figures to {out}")
    return run.captions


if __name__ == "__main__":
    main()
