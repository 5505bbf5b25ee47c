"""Training throughput: ``probgen.fit`` beside a hand-written torch loop of the same network.

For each model, one epoch over ``--batches`` mini-batches of MNIST (dynamic binarization,
``transform=torch.bernoulli``; random intensities of the same shape when MNIST is not found)
through ``probgen.fit`` and through the hand-written loop a user would write (same modules, same
fused Adam, same ELBO in plain torch), alternated over ``--rounds`` in one process. Models:

- ``vae``: Burda et al.'s 784-200-200-[50]-200-200-784 tanh VAE, Bernoulli, analytic KL;
- ``iwae``: the same network trained on the IWAE-k bound (``--particles``, default 50),
  vectorized over particles;
- ``made``: MADE 784-H-784 (``--made-hidden``, default 8000; e.g. 500 for a quick run);
- ``ladder``: the ladder VAE (top-down, precision-weighted inference) of the IAF/IWAE papers'
  two-stochastic-layer sizes, 784-100-100-[100]-50-50-[50] tanh, with fit's KL warm-up
  (``kl_warmup_epochs=10``) and free bits (0.1 nats), closed-form KL per layer;
- ``two_layer``: the same sizes with bottom-up inference (Burda et al.'s two-layer VAE);
- ``flow_vae``: the ``vae`` network with a two-step IAF posterior (200-200 made networks)
  from the encoder's Gaussian, one-sample KL (``Trace_ELBO``).

Times are CPU time of this process (``time.process_time``) with one torch thread, so load from
other jobs on the machine barely moves them; the VAE is also timed in wall time with 1 and 2
threads, and ``--device cuda`` times wall time on the GPU. Achieved GFLOP/s counts the matmul
FLOPs of one training step (``torch.utils.flop_counter``) and sits beside a one-thread float32
matmul peak measured in the same run. ``ratio`` is fit's best round over the hand loop's best;
``generic_ratio`` (``--generic``) the same for ``fit(method=SVI)``, Pyro's trace per step.

    python -m benchmarks.throughput [--batches 200] [--models vae,iwae,made,ladder] [--smoke]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable

import pyro
import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

import probgen
from benchmarks._common import print_table, write_results
from probgen.infer.objectives import kl_weight
from probgen.infer.svi import SVI
from probgen.models.autoregressive.made import MADE
from probgen.models.flow_vae import FlowVAE
from probgen.models.hierarchical import HierarchicalVAE, precision_weighted
from probgen.models.vae import VAE

HIERARCHICAL = {"latent_dims": (100, 50), "hidden_features": ((100, 100), (50, 50)),
                "activation": "tanh"}
LADDER_ANNEALING = {"kl_warmup_epochs": 10.0, "free_bits": 0.1}


def mnist(num_examples: int) -> tuple[torch.Tensor, str]:
    """MNIST training intensities (binarized per batch by the transform), or random ones."""
    from probgen.core.paths import find_data
    from probgen.data.mnist import load_mnist

    folder = find_data("mnist")
    if folder is not None:
        try:
            images = load_mnist("train", path=folder).flat()
            return images[:num_examples].float().contiguous(), "mnist"
        except (OSError, ValueError):
            pass
    return torch.rand(num_examples, 784, generator=torch.Generator().manual_seed(0)), "random"


# --- the models and their hand-written steps ---------------------------------------------------
def build(name: str, args: argparse.Namespace) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    if name in ("vae", "iwae"):
        return VAE((784,), latent_dim=50, hidden_features=(200, 200), activation="tanh")
    if name == "ladder":
        return HierarchicalVAE((784,), **HIERARCHICAL)
    if name == "two_layer":
        return HierarchicalVAE((784,), **HIERARCHICAL, inference="bottom_up")
    if name == "flow_vae":
        return FlowVAE((784,), latent_dim=50, hidden_features=(200, 200), activation="tanh",
                       posterior="iaf", flow_transforms=2, flow_hidden=(200, 200))
    return MADE(784, hidden_features=(args.made_hidden,))


def _gaussian(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    loc, log_scale = params.chunk(2, -1)
    return loc, log_scale.clamp(-10, 10).exp()


def _gaussian_kl(loc_q: torch.Tensor, scale_q: torch.Tensor, loc_p: torch.Tensor | float,
                 scale_p: torch.Tensor | float) -> torch.Tensor:
    """KL(N(μ_q, σ_q²) || N(μ_p, σ_p²)) summed over everything."""
    var_ratio = (scale_q / scale_p) ** 2
    return 0.5 * (var_ratio + ((loc_q - loc_p) / scale_p) ** 2 - 1 - var_ratio.log()).sum()


def hierarchical_hand_loss(model: HierarchicalVAE, steps_per_epoch: int
                           ) -> Callable[[torch.Tensor], torch.Tensor]:
    """The two-layer ladder (fit's warm-up and free bits) or bottom-up VAE's negative ELBO."""
    up0, up1 = model.up_bodies
    head0, head1 = model.up_heads
    warmup = round(LADDER_ANNEALING["kl_warmup_epochs"] * steps_per_epoch)
    step = [0]

    def ladder(x: torch.Tensor) -> torch.Tensor:
        d1 = up0(x)
        loc2, scale2 = _gaussian(head1(up1(d1)))
        z2 = loc2 + scale2 * torch.randn_like(loc2)
        loc_p, scale_p = _gaussian(model.down[0](z2))
        loc1, scale1 = precision_weighted(*_gaussian(head0(d1)), loc_p, scale_p)
        z1 = loc1 + scale1 * torch.randn_like(loc1)
        log_lik = -F.binary_cross_entropy_with_logits(model.decoder(z1), x, reduction="sum")
        floor = LADDER_ANNEALING["free_bits"] * len(x)
        kl = (torch.clamp_min(_gaussian_kl(loc2, scale2, 0.0, 1.0), floor * loc2.shape[-1])
              + torch.clamp_min(_gaussian_kl(loc1, scale1, loc_p, scale_p), floor * loc1.shape[-1]))
        beta = kl_weight(step[0], warmup)
        step[0] += 1
        return beta * kl - log_lik

    def bottom_up(x: torch.Tensor) -> torch.Tensor:
        loc1, scale1 = _gaussian(head0(up0(x)))
        z1 = loc1 + scale1 * torch.randn_like(loc1)
        loc2, scale2 = _gaussian(head1(up1(z1)))
        z2 = loc2 + scale2 * torch.randn_like(loc2)
        log_lik = -F.binary_cross_entropy_with_logits(model.decoder(z1), x, reduction="sum")
        kl = _gaussian_kl(loc2, scale2, 0.0, 1.0) + _gaussian_kl(
            loc1, scale1, *_gaussian(model.down[0](z2)))
        return kl - log_lik

    return ladder if model.inference == "ladder" else bottom_up


def flow_hand_loss(model: FlowVAE) -> Callable[[torch.Tensor], torch.Tensor]:
    """The IAF-posterior VAE's one-sample negative ELBO: log q(z | x) − log p(z) − log p(x | z)."""
    def elbo(x: torch.Tensor) -> torch.Tensor:
        h = model.encoder_body(x)
        loc, log_scale = h.split(model.latent_dim, -1)
        q = model.flow(h, base=(loc, log_scale.clamp(-10, 10).exp()))
        z = q.rsample()
        log_p = -0.5 * (z**2).sum() - 0.5 * z.numel() * math.log(2 * math.pi)
        log_lik = -F.binary_cross_entropy_with_logits(model.decoder_body(z), x, reduction="sum")
        return q.log_prob(z).sum() - log_p - log_lik
    return elbo


def hand_loss(name: str, model: torch.nn.Module, args: argparse.Namespace
              ) -> Callable[[torch.Tensor], torch.Tensor]:
    """The negative bound of one mini-batch, summed over examples, as a user writes it."""
    if name == "made":
        return lambda x: F.binary_cross_entropy_with_logits(model.net(x), x, reduction="sum")
    if name in ("ladder", "two_layer"):
        return hierarchical_hand_loss(model, math.ceil(args.num_examples / args.batch_size))
    if name == "flow_vae":
        return flow_hand_loss(model)
    latent_dim, k = model.latent_dim, args.particles

    def elbo(x: torch.Tensor) -> torch.Tensor:
        loc, log_scale = model.encoder_body(x).split(latent_dim, -1)
        z = loc + log_scale.exp() * torch.randn_like(loc)
        log_lik = -F.binary_cross_entropy_with_logits(model.decoder_body(z), x, reduction="sum")
        kl = 0.5 * (loc**2 + (2 * log_scale).exp() - 2 * log_scale - 1).sum()
        return kl - log_lik

    def iwae(x: torch.Tensor) -> torch.Tensor:
        loc, log_scale = model.encoder_body(x).split(latent_dim, -1)
        noise = torch.randn(k, *loc.shape, device=x.device)
        z = loc + log_scale.exp() * noise  # (k, batch, latent)
        logits = model.decoder_body(z)
        log_lik = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits),
                                                      reduction="none").sum(-1)
        log_weights = log_lik + (0.5 * noise**2 + log_scale - 0.5 * z**2).sum(-1)
        return -(torch.logsumexp(log_weights, 0) - math.log(k)).sum()

    return iwae if name == "iwae" else elbo


def hand_epoch(name: str, model: torch.nn.Module, data: torch.Tensor,
               args: argparse.Namespace) -> int:
    """One epoch of the hand-written loop: shuffle, binarize, step (fused Adam, as fit uses)."""
    loss_fn = hand_loss(name, model, args)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, fused=True)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))
    scale = len(data) / args.batch_size
    steps = 0
    for start in range(0, len(data), args.batch_size):
        x = torch.bernoulli(data[order[start:start + args.batch_size].to(data.device)])
        loss = loss_fn(x) * scale
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()
        steps += 1
    return steps


def fit_epoch(name: str, model: torch.nn.Module, data: torch.Tensor,
              args: argparse.Namespace, method: type | None = None) -> int:
    options = (dict(loss="iwae", num_particles=args.particles) if name == "iwae"
               else LADDER_ANNEALING if name == "ladder" else {})
    result = probgen.fit(model, data, epochs=1, batch_size=args.batch_size, optim=args.lr,
                         transform=torch.bernoulli, progress=False, seed=args.seed,
                         method=method, **options)
    return result.num_steps


def generic_epoch(name: str, model: torch.nn.Module, data: torch.Tensor,
                  args: argparse.Namespace) -> int:
    """``probgen.fit`` through Pyro's generic SVI (the trace per step), for comparison."""
    return fit_epoch(name, model, data, args, method=SVI)


def flops_per_step(name: str, model: torch.nn.Module, data: torch.Tensor,
                   args: argparse.Namespace) -> int:
    """Matmul FLOPs of one training step, forward and backward."""
    x = torch.bernoulli(data[:args.batch_size])
    with FlopCounterMode(display=False) as counter:
        hand_loss(name, model, args)(x).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


# --- timing ----------------------------------------------------------------------------------
def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def clock(wall: bool) -> float:
    return time.perf_counter() if wall else time.process_time()


def compare(name: str, data: torch.Tensor, args: argparse.Namespace, *, threads: int,
            wall: bool) -> dict:
    """Best-of-rounds seconds of fit and of the hand loop, alternating which goes first."""
    torch.set_num_threads(threads)
    sides = {"fit": fit_epoch, "hand": hand_epoch}
    if name in args.generic.split(","):
        sides["generic"] = generic_epoch
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    for side in sides.values():  # warm-up: lazy imports, allocator, kernels
        sides_args = argparse.Namespace(**{**vars(args), "seed": args.seed + 1})
        side(name, build(name, args).to(args.device), data[:2 * args.batch_size], sides_args)
    steps = 0
    for round_index in range(args.rounds):
        order = list(sides) if round_index % 2 == 0 else list(sides)[::-1]
        for side in order:
            pyro.clear_param_store()
            model = build(name, args).to(args.device)
            sync(args.device)
            start = clock(wall)
            steps = sides[side](name, model, data, args)
            sync(args.device)
            seconds[side].append(clock(wall) - start)
    flops = flops_per_step(name, build(name, args).to(args.device), data, args)
    fit, hand = min(seconds["fit"]), min(seconds["hand"])
    return {"model": name, "threads": threads, "clock": "wall" if wall else "cpu",
            "steps": steps, "fit_s": fit, "hand_s": hand, "ratio": fit / hand,
            "fit_gflops": flops * steps / fit / 1e9, "hand_gflops": flops * steps / hand / 1e9,
            "flops_per_step": flops, "fit_rounds": seconds["fit"],
            "hand_rounds": seconds["hand"],
            **({"generic_s": min(seconds["generic"]),
                "generic_ratio": min(seconds["generic"]) / hand,
                "generic_rounds": seconds["generic"]} if "generic" in seconds else {})}


def matmul_peak(size: int = 1024, seconds: float = 0.5) -> float:
    """One-thread float32 matmul GFLOP/s (CPU time), the ceiling the models are read against."""
    torch.set_num_threads(1)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    count, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        a @ b
        count += 1
    return 2 * size**3 * count / (time.process_time() - start) / 1e9


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vae,iwae,made")
    parser.add_argument("--batches", type=int, default=200,
                        help="mini-batches in the epoch (default: 20,000 images, issue #32's "
                             "epoch; 0: all 60,000 training images)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--particles", type=int, default=50, help="k of the IWAE model")
    parser.add_argument("--made-hidden", type=int, default=8000)
    parser.add_argument("--generic", default="vae",
                        help="models also fitted through Pyro's generic SVI (method=SVI)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--smoke", action="store_true", help="seconds: 5 batches, small MADE")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batches, args.made_hidden, args.rounds, args.particles = 5, 64, 1, 5
    num_examples = args.batches * args.batch_size if args.batches > 0 else 60_000
    data, source = mnist(num_examples)
    args.num_examples = len(data)  # the ladder's hand loop warms up over fit's epochs
    data = data.to(args.device)
    load_before = os.getloadavg()
    peak = matmul_peak()
    wall = args.device == "cuda"
    rows = [compare(name, data, args, threads=1, wall=wall) for name in args.models.split(",")]
    if "vae" in args.models.split(",") and args.device == "cpu":
        rows += [compare("vae", data, args, threads=threads, wall=True) for threads in (1, 2)]
        # both cores as two processes of one thread each (docs/guide/cores.md)
        from benchmarks.data_parallel import processes_row
        rows.append(processes_row(lambda: build("vae", args), data, args))
    torch.set_num_threads(1)
    for row in rows:
        row["peak_gflops"] = peak
    print(f"data: {source}, {len(data)} examples, batch {args.batch_size}; one-thread float32 "
          f"matmul peak {peak:.1f} GFLOP/s; load average {load_before[0]:.2f} -> "
          f"{os.getloadavg()[0]:.2f}")
    print_table(rows, ["model", "threads", "clock", "steps", "fit_s", "hand_s", "ratio",
                       "generic_ratio", "fit_gflops", "hand_gflops", "peak_gflops"])
    write_results("throughput", rows, results_dir=args.out, data=source,
                  num_examples=len(data), batch_size=args.batch_size, particles=args.particles,
                  made_hidden=args.made_hidden, rounds=args.rounds, lr=args.lr,
                  device=args.device, load_average_before=list(load_before),
                  load_average_after=list(os.getloadavg()),
                  adam="torch.optim.Adam(fused=True) on both sides")
    return rows


if __name__ == "__main__":
    main()
