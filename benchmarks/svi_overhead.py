"""Cost of one SVI step of probgen's VAE against a hand-written PyTorch ELBO step (same network).

Variants (all on the same VAE architecture, data and batch): the hand-written step; Pyro's SVI
with Trace_ELBO / TraceMeanField_ELBO / their Jit versions and ``pyro.optim.Adam`` (one torch
optimizer per parameter tensor); the same ELBOs' ``differentiable_loss`` stepped by one
``torch.optim.Adam`` over ``vae.parameters()`` (Pyro's semantics, one optimizer for all
tensors); ``probgen.fit`` itself with the VAE's ``default_loss()`` (timed by a callback); the
hand-written step with torch's fused Adam (``raw_pytorch_fused_adam``, the optimizer fit uses);
and diagnostics (``diag_*``) that each remove one piece of Pyro machinery or undo one piece of
fit's speed-up (fused Adam, snapshot every 10 steps, per-half registration), to price it.

Each step is timed in CPU time of this process (``time.process_time``) as well as wall time: on
a machine shared with other jobs, wall time measures the neighbours, CPU time measures the step.
With one torch thread (the default here) CPU time is the step's cost. Rounds interleave the
variants; the reported figure is the median step; ratios are of medians.

    python -m benchmarks.svi_overhead [--smoke] [--device cpu] [--steps 50] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import pyro
import torch
from pyro.infer import (
    SVI,
    JitTrace_ELBO,
    JitTraceMeanField_ELBO,
    Trace_ELBO,
    TraceMeanField_ELBO,
)

import probgen
from benchmarks._common import RESULTS, print_table, write_results
from probgen.models.vae import VAE

Timings = list[tuple[float, float]]  # (cpu_ms, wall_ms) per step
GOAL_RATIO = 1.2  # a probgen.fit step costs at most this many hand-written torch steps


def _clocks() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


def _loop(step: Callable[[], object], num_steps: int, sync: Callable[[], None]) -> Timings:
    out = []
    for _ in range(num_steps):
        cpu, wall = _clocks()
        step()
        sync()
        cpu_end, wall_end = _clocks()
        out.append(((cpu_end - cpu) * 1e3, (wall_end - wall) * 1e3))
    return out


def raw_step_fn(vae: VAE, x: torch.Tensor, lr: float, fused: bool = False) -> Callable[[], float]:
    """The hand-written ELBO step: encoder, reparameterized z, Bernoulli decoder, analytic KL."""
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr, **({"fused": True} if fused else {}))
    latent_dim = vae.latent_dim

    def step() -> float:
        loc, log_scale = vae.encoder_body(x).split(latent_dim, -1)
        z = loc + log_scale.exp() * torch.randn_like(loc)
        logits = vae.decoder_body(z)
        log_lik = -torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = 0.5 * (loc**2 + (2 * log_scale).exp() - 2 * log_scale - 1).sum()
        loss = kl - log_lik
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def svi_step_fn(vae: VAE, x: torch.Tensor, lr: float, elbo: pyro.infer.ELBO) -> Callable[[], float]:
    """pyro.infer.SVI with pyro.optim.Adam: what a Pyro user writes."""
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": lr}), elbo)
    return lambda: svi.step(x)


def torch_optim_step_fn(vae: VAE, x: torch.Tensor, lr: float,
                        elbo: pyro.infer.ELBO) -> Callable[[], float]:
    """The ELBO's differentiable_loss with one torch.optim.Adam over all parameters."""
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)

    def step() -> float:
        loss = elbo.differentiable_loss(vae.model, vae.guide, x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def without_pyro_module(vae: VAE) -> VAE:
    """Diagnostic only: the same program minus ``pyro.module`` (param-store registration)."""
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", vae.prior(x.shape[:1]))
            pyro.sample("x", vae.decode(z), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", vae.posterior(x))

    vae.model, vae.guide = model, guide  # instance attributes shadow the methods
    return vae


def validation_off(make: Callable[[], float]) -> Callable[[], float]:
    """Diagnostic: the step with Pyro's validation checks off."""
    def step() -> float:
        with pyro.validation_enabled(False):
            return make()
    return step


def stepper(make: Callable[..., Callable[[], float]]):
    """A variant that is a step function: time ``num_steps`` calls of it."""
    def build(vae: VAE, x: torch.Tensor, lr: float, sync, warmup: int):
        step = make(vae, x, lr)
        for _ in range(warmup):
            step()  # jit compilation, optimizer state, allocator
        return lambda num_steps: _loop(step, num_steps, sync)
    return build


def fit_variant(vae: VAE, x: torch.Tensor, lr: float, sync, warmup: int,
                optim: dict | None = None):
    """probgen.fit as users call it; a callback stamps the clocks after each step."""
    optim = optim or {"lr": lr}

    def run(num_steps: int) -> Timings:
        stamps = [_clocks()]

        def stamp(state) -> None:
            sync()
            stamps.append(_clocks())

        probgen.fit(vae, x, num_steps=num_steps + 1, optim=optim, seed=0, progress=False,
                    callbacks=[stamp])
        # The first step carries fit's setup (program inspection); drop it.
        return [((c1 - c0) * 1e3, (w1 - w0) * 1e3)
                for (c0, w0), (c1, w1) in zip(stamps[1:-1], stamps[2:])]
    run(warmup)
    return run


def whole_module_registration(vae: VAE) -> VAE:
    """Diagnostic: model and guide each register the whole VAE (``pyro.module(name, self)``)."""
    vae.register_params = lambda *args, **kwargs: pyro.module(vae.pyro_name, vae)
    return vae


def _rollback_module():
    """The module whose ``ROLLBACK_EVERY`` fit's training loop reads."""
    try:
        import probgen.infer.loop as module
    except ImportError:  # before fit's loop had a module of its own
        import probgen.infer.fit as module
    return module


def snapshot_every_step(run: Callable[[int], Timings]) -> Callable[[int], Timings]:
    """Diagnostic: fit's divergence snapshot copied every step instead of every 10."""
    module = _rollback_module()

    def timed(num_steps: int) -> Timings:
        saved, module.ROLLBACK_EVERY = module.ROLLBACK_EVERY, 1
        try:
            return run(num_steps)
        finally:
            module.ROLLBACK_EVERY = saved
    return timed


VARIANTS = {
    "raw_pytorch": stepper(raw_step_fn),
    # the same step with torch's fused Adam kernel, which probgen.fit uses where it applies
    "raw_pytorch_fused_adam": stepper(lambda v, x, lr: raw_step_fn(v, x, lr, fused=True)),
    "svi_trace_elbo": stepper(lambda v, x, lr: svi_step_fn(v, x, lr, Trace_ELBO())),
    "svi_meanfield": stepper(lambda v, x, lr: svi_step_fn(v, x, lr, TraceMeanField_ELBO())),
    "svi_jit_trace_elbo": stepper(lambda v, x, lr: svi_step_fn(v, x, lr, JitTrace_ELBO())),
    "svi_jit_meanfield": stepper(lambda v, x, lr: svi_step_fn(v, x, lr, JitTraceMeanField_ELBO())),
    "torch_adam_trace_elbo": stepper(lambda v, x, lr: torch_optim_step_fn(v, x, lr, Trace_ELBO())),
    "torch_adam_meanfield": stepper(
        lambda v, x, lr: torch_optim_step_fn(v, x, lr, TraceMeanField_ELBO())),
    "torch_adam_jit_meanfield": stepper(
        lambda v, x, lr: torch_optim_step_fn(v, x, lr, JitTraceMeanField_ELBO())),
    "probgen_fit": fit_variant,
    # probgen.fit with one piece of its speed-up undone, to price each
    "diag_fit_unfused_adam": lambda v, x, lr, sync, warmup: fit_variant(
        v, x, lr, sync, warmup, optim={"lr": lr, "foreach": False}),
    "diag_fit_snapshot_every_step": lambda v, x, lr, sync, warmup: snapshot_every_step(
        fit_variant(v, x, lr, sync, warmup)),
    "diag_fit_whole_module_registration": lambda v, x, lr, sync, warmup: fit_variant(
        whole_module_registration(v), x, lr, sync, warmup),
    # What probgen.fit could do: one torch optimizer, Pyro validation on the first step only.
    "proposed_fit_step_trace_elbo": stepper(
        lambda v, x, lr: validation_off(torch_optim_step_fn(v, x, lr, Trace_ELBO()))),
    "proposed_fit_step_meanfield": stepper(
        lambda v, x, lr: validation_off(torch_optim_step_fn(v, x, lr, TraceMeanField_ELBO()))),
    "diag_no_pyro_module_validation_off": stepper(
        lambda v, x, lr: validation_off(torch_optim_step_fn(without_pyro_module(v), x, lr,
                                                            Trace_ELBO()))),
    "diag_torch_adam_trace_elbo_no_pyro_module": stepper(
        lambda v, x, lr: torch_optim_step_fn(without_pyro_module(v), x, lr, Trace_ELBO())),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=400)
    parser.add_argument("--latent", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: CPU time per step is the step's cost)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    parser.add_argument("--no-validation", action="store_true",
                        help="pyro.enable_validation(False) (Pyro's default is on)")
    parser.add_argument("--out", default=str(RESULTS), help="folder of the results JSON")
    args = parser.parse_args()
    steps, rounds, warmup = (3, 1, 2) if args.smoke else (args.steps, args.rounds, 20)
    names = args.variants.split(",")
    if "raw_pytorch" not in names:
        names.insert(0, "raw_pytorch")
    pyro.enable_validation(not args.no_validation)
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    generator = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.rand(args.batch_size, 784, generator=generator)).to(args.device)

    pyro.clear_param_store()  # once: jitted losses look their parameters up by name later
    runners = {}
    for name in names:
        torch.manual_seed(0)
        vae = VAE((784,), latent_dim=args.latent, hidden_features=(args.hidden,)).to(args.device)
        runners[name] = VARIANTS[name](vae, x, 1e-3, sync, warmup)
    timings: dict[str, Timings] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            timings[name] += run(steps)

    def median(name: str, column: int) -> float:
        return statistics.median(t[column] for t in timings[name])

    def p10(name: str) -> float:  # interference only adds time: a low quantile is steadier
        return statistics.quantiles([t[0] for t in timings[name]], n=10)[0]

    raw_cpu, raw_wall, raw_p10 = median("raw_pytorch", 0), median("raw_pytorch", 1), p10("raw_pytorch")
    rows = []
    for name in runners:
        cpu, wall = median(name, 0), median(name, 1)
        rows.append({"variant": name, "cpu_ms": cpu, "cpu_ratio": cpu / raw_cpu,
                     "cpu_p10_ratio": p10(name) / raw_p10, "wall_ms": wall,
                     "wall_ratio": wall / raw_wall, "num_steps": len(timings[name]),
                     "cpu_ms_steps": [round(t[0], 3) for t in timings[name]]})
    print(f"VAE 784-{args.hidden}-{args.latent}, batch {args.batch_size}, {args.device}, "
          f"{torch.get_num_threads()} torch thread(s), {rounds} rounds x {steps} steps, "
          f"Pyro validation {'off' if args.no_validation else 'on'}; medians per step")
    print_table(rows, ["variant", "cpu_ms", "cpu_ratio", "cpu_p10_ratio", "wall_ms", "wall_ratio"])
    if "probgen_fit" in runners:
        ratio = median("probgen_fit", 0) / raw_cpu
        print(f"probgen.fit step / hand-written torch step: {ratio:.3f} (CPU time; goal <= "
              f"{GOAL_RATIO})")
    if not args.smoke:
        write_results("svi_overhead", rows, results_dir=args.out, batch_size=args.batch_size,
                      hidden=args.hidden, latent=args.latent, steps=steps, rounds=rounds,
                      device=args.device, threads=args.threads,
                      validation=not args.no_validation,
                      default_loss=type(VAE().default_loss()).__name__,
                      goal=f"probgen_fit cpu_ratio <= {GOAL_RATIO} (against raw_pytorch)",
                      timing="median per-step process CPU time (and wall time), rounds interleaved")


if __name__ == "__main__":
    main()
