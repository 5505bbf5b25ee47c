"""Flows: (a) probgen's wrapper overhead vs raw zuko and raw nflows; (b) density estimation.

(a) One Adam training step (log_prob, backward, step) on a batch of 512 × D=8, for MAF and NSF
with 5 transforms and hidden (128, 128): the raw zuko flow, probgen's Flow around the same zuko
weights (target <= 1.05x raw zuko), probgen's FlowModel scored through a Pyro SVI step, and the
nflows flow of the same architecture. Runs are interleaved (rotated order) and the best of 6
repeats is kept (on shared cores, noise only adds time); the per-call cost on one example
isolates the Python-side overhead of each layer.

(b) Exact / bounded test log-likelihoods of each flow kind, trained through ``probgen.fit``
(Adam 1e-3, batches of 128, gradients clipped to a joint norm of 50 per example, the best of
every 100 steps on a held-out slice kept, patience 4), on
  - digits (bundled 8×8 UCI digits, 17 grey levels 0..16, 1438/359 split, 144 of train for
    early stopping): trained on uniformly dequantized (x + u) / 17 through a logit transform;
    reported as the dequantization lower
    bound on the discrete log-likelihood, in bits/dim on the [0, 17)^64 scale (k=1 and k=64);
    peer: independent per-pixel categorical (exact discrete log-likelihood).
  - MiniBooNE (partial: the MAF paper's val/test splits only): trained on 90% of val (10% for
    early stopping), tested on test; peer: a full-covariance Gaussian.
Each data set also gets (``--part``: ``digits``/``miniboone`` run them with the flows, or
``--kinds fm,zuko:cnf`` alone) two continuous flows: probgen's FlowMatching (conditional flow
matching, trained and scored through ``probgen.fit``/``probgen.evaluate``: the ODE
log-likelihood, Hutchinson's divergence at D = 43/64, so an ``estimate``) and zuko's CNF trained
by maximum likelihood (FFJORD; Hutchinson's trace while training and for early stopping, the
exact trace for the test scores), each on a CPU budget of steps (``FM_STEPS``, ``CNF_STEPS``).
The published MAF rows (MNIST 1.89 bits/dim; MiniBooNE -11.75 nats, full training set) are
reference rows from Papamakarios et al. (2017), not comparable runs.

    python benchmarks/flows.py            # full run (about 6 CPU-minutes; longer on shared cores)
    python benchmarks/flows.py --part digits --kinds zuko:nsf   # one piece; other rows kept
    python benchmarks/flows.py --smoke    # seconds
    python benchmarks/flows.py --device cuda
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import probgen  # noqa: E402
from benchmarks._common import print_table, write_results  # noqa: E402
from probgen.core.paths import data_dirs, find_data  # noqa: E402
from probgen.core.result import LogLikelihood  # noqa: E402
from probgen.data.bundled import load_dataset, train_test_split  # noqa: E402
from probgen.data.transforms import logit_transform  # noqa: E402
from probgen.distributions.flow import Flow  # noqa: E402
from probgen.evaluate.dequantized import dequantized_log_likelihood  # noqa: E402
from probgen.models.flow import FlowModel  # noqa: E402
from probgen.models.flow_matching import FlowMatching  # noqa: E402

LN2 = math.log(2.0)
FM_STEPS, CNF_STEPS = 3000, 450  # fixed budgets (steps of batch 128): seconds vs minutes a run
ODE_TOL = 1e-4  # atol = rtol of the test-time ODE solves (recorded with each row)
CLOCK = {"fn": time.perf_counter, "name": "wall (perf_counter)"}


def use_cpu_clock(device: str) -> None:
    """On CPU with one thread, time the process's CPU seconds: immune to other jobs' load."""
    if device == "cpu" and torch.get_num_threads() == 1:
        CLOCK.update(fn=time.process_time, name="process CPU time (1 thread)")


# --- (a) wrapper overhead ------------------------------------------------------------------
def step_time(log_prob, parameters, data: torch.Tensor, steps: int) -> float:
    optimizer = torch.optim.Adam(parameters, lr=1e-4)
    for _ in range(3):  # warm-up
        optimizer.zero_grad()
        (-log_prob(data).mean()).backward()
        optimizer.step()
    if data.is_cuda:
        torch.cuda.synchronize()
    start = CLOCK["fn"]()
    for _ in range(steps):
        optimizer.zero_grad()
        (-log_prob(data).mean()).backward()
        optimizer.step()
    if data.is_cuda:
        torch.cuda.synchronize()
    return (CLOCK["fn"]() - start) / steps


def svi_step_time(model: FlowModel, data: torch.Tensor, steps: int) -> float:
    from pyro.infer import SVI, Trace_ELBO

    pyro.clear_param_store()
    svi = SVI(model.model, lambda x: None, pyro.optim.Adam({"lr": 1e-4}), Trace_ELBO())
    for _ in range(3):
        svi.step(data)
    if data.is_cuda:
        torch.cuda.synchronize()
    start = CLOCK["fn"]()
    for _ in range(steps):
        svi.step(data)
    if data.is_cuda:
        torch.cuda.synchronize()
    return (CLOCK["fn"]() - start) / steps


def call_overhead_us(log_prob, x: torch.Tensor, calls: int) -> float:
    """Microseconds per log_prob call on one example: the Python-side cost of each layer."""
    with torch.no_grad():
        for _ in range(10):
            log_prob(x)
        start = CLOCK["fn"]()
        for _ in range(calls):
            log_prob(x)
    return 1e6 * (CLOCK["fn"]() - start) / calls


def overhead(device: str, smoke: bool) -> list[dict]:
    import zuko
    from nflows.flows import Flow as NflowsFlow  # noqa: F401  (import cost outside the timing)

    features, transforms, hidden, batch = 8, 5, (128, 128), 512
    steps, repeats, calls = (3, 1, 20) if smoke else (10, 6, 200)
    data = torch.randn(batch, features, device=device)
    rows = []
    for kind, zuko_cls in (("maf", zuko.flows.MAF), ("nsf", zuko.flows.NSF)):
        torch.manual_seed(0)
        raw = zuko_cls(features, transforms=transforms, hidden_features=hidden).to(device)
        wrapped = Flow(features, kind=kind, transforms=transforms, hidden=hidden).to(device)
        wrapped.network.load_state_dict(copy.deepcopy(raw.state_dict()))
        model = FlowModel(features, kind=kind, transforms=transforms, hidden=hidden).to(device)
        nflows = Flow(features, backend="nflows", kind=kind, transforms=transforms,
                      hidden=hidden).to(device)
        contenders = {
            "raw zuko": (lambda x, raw=raw: raw().log_prob(x), raw.parameters),
            "probgen Flow (zuko)": (lambda x, w=wrapped: w().log_prob(x), wrapped.parameters),
            "raw nflows": (lambda x, n=nflows.network: n.log_prob(x), nflows.parameters),
        }
        svi_name = "probgen FlowModel (Pyro SVI step)"
        times: dict[str, list[float]] = {name: [] for name in [*contenders, svi_name]}
        for repeat in range(repeats):  # interleaved and rotated: load hits every contender alike
            names = list(times)
            names = names[repeat % len(names):] + names[:repeat % len(names)]
            for name in names:
                if name == svi_name:
                    times[name].append(svi_step_time(model, data, steps))
                else:
                    log_prob, parameters = contenders[name]
                    times[name].append(step_time(log_prob, parameters(), data, steps))
        one = data[:1]
        per_call = {name: call_overhead_us(log_prob, one, calls)
                    for name, (log_prob, _) in contenders.items()}
        base = min(times["raw zuko"])
        for name, values in times.items():
            rows.append({"part": "overhead", "kind": kind, "implementation": name,
                         "ms_per_step": 1e3 * min(values), "ratio_vs_raw_zuko": min(values) / base,
                         "median_ms": 1e3 * statistics.median(values),
                         "us_per_call_batch1": per_call.get(name),
                         "all_ms": [1e3 * v for v in values]})
    return rows


# --- (b) density estimation ------------------------------------------------------------------
class JointNormClippedAdam(pyro.optim.PyroOptim):
    """Adam after scaling all gradients together to a joint norm <= ``max_norm``.

    Pyro's ``clip_args`` clip each parameter tensor on its own; this is torch's
    ``clip_grad_norm_`` over every parameter at once, the usual recipe for flows.
    """

    def __init__(self, lr: float, max_norm: float) -> None:
        super().__init__(torch.optim.Adam, {"lr": lr})
        self.max_norm = max_norm

    def __call__(self, params, *args, **kwargs) -> None:
        params = list(params)
        torch.nn.utils.clip_grad_norm_(params, self.max_norm)
        super().__call__(params, *args, **kwargs)


def train(model: FlowModel, data: torch.Tensor, validation: torch.Tensor, *, steps: int,
          lr: float, patience: int, transform=None, score=None) -> dict:
    """``probgen.fit``: Adam on -log p, batches of 128, the best of every 100 steps on validation.

    fit's loss is -(N/B) Σ_batch log p = -N × the batch mean, so clipping its gradient at a
    joint norm of 50 N clips the mean's at 50. ``score(model, batch, guide)``: validation
    log-likelihoods per example (default: fit's own, -log p per example).
    """
    start = CLOCK["fn"]()
    result = probgen.fit(model, data, batch_size=128, num_steps=steps, transform=transform,
                         optim=JointNormClippedAdam(lr, 50.0 * len(data)), validation=validation,
                         validate_every=100, validation_estimator=score, patience=patience,
                         restore_best=True, seed=0, progress=False)
    return {"train_seconds": CLOCK["fn"]() - start, "steps": result.num_steps,
            "best_val": -min(loss for _, loss in result.validation)}


def dequantized_score(levels: int):
    """Validation score for a flow fitted to x / K: the k=1 dequantization bound of x."""
    def score(model, batch, guide=None) -> torch.Tensor:
        x = (batch[0] * levels).round()
        return dequantized_log_likelihood(model.log_prob, x, num_levels=levels).per_example
    return score


def dequantization_noise(levels: int):
    """fit's per-batch transform: y = x / K plus fresh noise u / K, u ~ U[0, 1)^D."""
    return lambda y: y + torch.rand_like(y) / levels


def per_pixel_categorical(train_x: torch.Tensor, test_x: torch.Tensor, levels: int) -> LogLikelihood:
    """Peer: independent categorical per pixel, add-one smoothing; exact discrete log-mass."""
    counts = torch.stack([(train_x == v).sum(0) for v in range(levels)], -1).double() + 1.0
    log_probs = (counts / counts.sum(-1, keepdim=True)).log()  # (D, levels)
    pixels = torch.arange(test_x.shape[1])
    per_example = log_probs[pixels, test_x.long()].sum(-1)  # (n, D) -> (n,)
    return LogLikelihood(per_example, kind="exact", estimator="exact", num_dims=test_x.shape[1],
                         data_space="discrete")


def digits_rows(kinds, device: str, smoke: bool) -> list[dict]:
    levels = 17
    data = load_dataset("digits").data.float()
    train_index, test_index = train_test_split(len(data), 0.2, seed=0)
    train_x, test_x = data[train_index].to(device), data[test_index].to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    rows = []
    peer = per_pixel_categorical(train_x.cpu(), test_x.cpu(), levels)
    rows.append(row("digits", "per-pixel categorical (peer)", peer, levels=levels))
    for backend, kind in kinds:
        if (backend, kind) in CONTINUOUS:
            rows += CONTINUOUS[backend, kind](train_x[144:], train_x[:144], test_x, levels=levels,
                                             device=device, smoke=smoke)
            continue
        torch.manual_seed(0)
        model = FlowModel(64, backend=backend, kind=kind, transforms=5, hidden=(128, 128),
                          domain="unit_interval", logit_alpha=0.05).to(device)
        valid_x = train_x[:144]  # early stopping on a slice of train (test is never seen)
        fit_x = train_x[144:]
        info = train(model, fit_x / levels, valid_x / levels, steps=60 if smoke else 800,
                     lr=1e-3, patience=4, transform=dequantization_noise(levels),
                     score=dequantized_score(levels))
        model.eval()
        for k in (1,) if smoke else (1, 64):
            ll = dequantized_log_likelihood(model.log_prob, test_x, num_levels=levels,
                                            num_samples=k, generator=generator)
            rows.append(row("digits", f"{backend} {kind}", ll, levels=levels, **info))
    rows.append({"part": "density", "dataset": "digits", "model": "MAF (5), MNIST — published",
                 "bits_per_dim": 1.89, "kind": "reference",
                 "note": "Papamakarios et al. 2017, 28×28 MNIST, 256 levels: not the same data"})
    return rows


def miniboone_rows(kinds, device: str, smoke: bool, data_dir: Path) -> list[dict]:
    val = torch.from_numpy(np.load(data_dir / "val.npy")).float().to(device)
    test = torch.from_numpy(np.load(data_dir / "test.npy")).float().to(device)
    order = torch.randperm(len(val), generator=torch.Generator().manual_seed(0)).to(device)
    stop_x, fit_x = val[order[: len(val) // 10]], val[order[len(val) // 10:]]
    rows = []
    mean, cov = fit_x.double().mean(0), torch.cov(fit_x.double().T)
    gaussian = torch.distributions.MultivariateNormal(mean, cov + 1e-6 * torch.eye(43, device=device,
                                                                                  dtype=torch.float64))
    rows.append(row("miniboone", "full-cov Gaussian (peer)", LogLikelihood(
        gaussian.log_prob(test.double()), kind="exact", estimator="exact", num_dims=43,
        data_space="continuous")))
    for backend, kind in kinds:
        if (backend, kind) in CONTINUOUS:
            rows += CONTINUOUS[backend, kind](fit_x, stop_x, test, levels=None, device=device,
                                             smoke=smoke)
            continue
        torch.manual_seed(0)
        model = FlowModel(43, backend=backend, kind=kind, transforms=5,
                          hidden=(128, 128)).to(device)
        info = train(model, fit_x, stop_x, steps=60 if smoke else 800, lr=1e-3, patience=4)
        model.eval()
        with torch.no_grad():
            ll = LogLikelihood(model.log_prob(test), kind="exact", estimator="exact",
                               num_dims=43, data_space="continuous")
        rows.append(row("miniboone", f"{backend} {kind}", ll, **info))
    rows.append({"part": "density", "dataset": "miniboone", "model": "MAF (5) — published",
                 "mean_ll": -11.75, "stderr": 0.44, "kind": "reference",
                 "note": "Papamakarios et al. 2017, trained on the full train split"})
    return rows


# --- continuous flows: flow matching (probgen.fit/evaluate) and zuko's maximum-likelihood CNF ---
def _dataset(levels: int | None) -> str:
    return "digits" if levels else "miniboone"


def _standardization(fit_x: torch.Tensor, levels: int | None) -> tuple[list, list]:
    """Per-feature mean and std of the data (digits: of logit(0.05 + 0.9 y), y dequantized)."""
    y = logit_transform((fit_x + torch.rand_like(fit_x)) / levels, 0.05)[0] if levels else fit_x
    return y.mean(0).tolist(), y.std(0).clamp_min(1e-3).tolist()


def flow_matching_rows(fit_x, stop_x, test_x, *, levels, device, smoke) -> list[dict]:
    """FlowMatching through probgen.fit (the CFM loss) and probgen.evaluate (the ODE)."""
    torch.manual_seed(0)
    features = fit_x.shape[1]
    shift, scale = _standardization(fit_x, levels)
    domain = {"domain": "unit_interval", "logit_alpha": 0.05} if levels else {}
    model = FlowMatching(features, hidden_features=(256, 256, 256), time_features=32,
                         shift=shift, scale=scale, dequantized=bool(levels), **domain).to(device)
    steps = 60 if smoke else FM_STEPS
    # digits: fit sees x / K in [0, 1] and adds fresh noise u / K to every batch
    dequantize = (lambda y: y + torch.rand_like(y) / levels) if levels else None
    start = CLOCK["fn"]()
    probgen.fit(model, fit_x / levels if levels else fit_x, num_steps=steps, batch_size=128, seed=0, progress=False,
                transform=dequantize, optim=pyro.optim.ClippedAdam(
                    {"lr": 1e-3, "clip_norm": 10.0, "lrd": 0.05 ** (1 / steps)}))
    seconds = CLOCK["fn"]() - start
    start = CLOCK["fn"]()
    test = test_x[:64] if smoke else test_x
    options = {"num_levels": levels} if levels else {}
    ll = probgen.evaluate(model, test, atol=ODE_TOL, rtol=ODE_TOL, seed=0, **options)
    info = {"train_seconds": seconds, "steps": steps, "eval_seconds": CLOCK["fn"]() - start,
            "settings_ll": ll.settings, "early_stopping": "none (fixed budget)",
            "network": "MLPVelocity (256, 256, 256), Adam 1e-3 decayed x0.05"}
    return [row(_dataset(levels), "probgen FlowMatching (CFM)", ll, levels=levels, **info)]


def cnf_rows(fit_x, stop_x, test_x, *, levels, device, smoke) -> list[dict]:
    """zuko's CNF (FFJORD) by maximum likelihood: Hutchinson while training, exact to test."""
    torch.manual_seed(0)
    features = fit_x.shape[1]
    loc, scale = (None, None) if levels else _standardization(fit_x, levels)  # digits: logit
    domain = "unit_interval" if levels else "real"
    options = dict(kind="cnf", hidden=(128, 128), domain=domain, loc=loc, scale=scale)
    if levels:
        options["logit_alpha"] = 0.05
    model = FlowModel(features, exact=False, atol=ODE_TOL, rtol=ODE_TOL, **options).to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    steps = 10 if smoke else CNF_STEPS
    # Hutchinson's trace, as in training, for early stopping: as for the MAF rows
    if levels:
        info = train(model, fit_x / levels, stop_x / levels, steps=steps, lr=1e-3, patience=4,
                     transform=dequantization_noise(levels), score=dequantized_score(levels))
    else:
        info = train(model, fit_x, stop_x, steps=steps, lr=1e-3, patience=4)
    scorer = FlowModel(features, exact=True, atol=ODE_TOL, rtol=ODE_TOL, **options).to(device)
    scorer.load_state_dict(model.state_dict())
    scorer.eval()
    test = test_x[:64] if smoke else test_x
    start = CLOCK["fn"]()
    if levels:
        ll = dequantized_log_likelihood(scorer.log_prob, test, num_levels=levels,
                                        generator=generator)
    else:
        with torch.no_grad():
            ll = LogLikelihood(scorer.log_prob(test), kind="exact", estimator="exact",
                               num_dims=features, data_space="continuous",
                               settings={"atol": ODE_TOL, "rtol": ODE_TOL})
    info.update(eval_seconds=CLOCK["fn"]() - start,
                early_stopping="every 100 steps on the held-out slice (patience 4)",
                network="zuko CNF, hidden (128, 128), Adam 1e-3")
    return [row(_dataset(levels), "zuko CNF (max. likelihood)", ll, levels=levels, **info)]


CONTINUOUS = {("probgen", "fm"): flow_matching_rows, ("zuko", "cnf"): cnf_rows}


def row(dataset: str, model: str, ll: LogLikelihood, levels: int | None = None, **extra) -> dict:
    out = {"part": "density", "dataset": dataset, "model": model, "kind": ll.kind,
           "estimator": ll.estimator, "data_space": ll.data_space, "mean_ll": ll.mean,
           "stderr": ll.stderr, "bits_per_dim": ll.bits_per_dim,
           "bits_per_dim_stderr": ll.bits_per_dim_stderr, "k": ll.settings.get("num_samples")}
    if levels:
        out["levels"] = levels
    out.update(extra)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="seconds-long run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--part", choices=["all", "overhead", "density", "digits", "miniboone"],
                        default="all", help="run one part; rows of the others are kept")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--kinds", default=None,
                        help="comma-separated backend:kind list, e.g. zuko:maf,nflows:nsf; "
                             "fm is probgen's FlowMatching, zuko:cnf zuko's CNF")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    use_cpu_clock(args.device)
    kinds = [("zuko", "maf"), ("zuko", "nsf"), ("zuko", "realnvp"), ("nflows", "maf"),
             ("nflows", "nsf")]
    if args.smoke:
        kinds = [("zuko", "maf"), ("nflows", "maf")]
    kinds += [("probgen", "fm"), ("zuko", "cnf")]
    if args.kinds:
        kinds = [("probgen", "fm") if item == "fm" else tuple(item.split(":"))
                 for item in args.kinds.split(",")]
    rows: list[dict] = []
    if args.part in ("all", "overhead"):
        rows += overhead(args.device, args.smoke)
        print_table([r for r in rows if r["part"] == "overhead"],
                    ["kind", "implementation", "ms_per_step", "ratio_vs_raw_zuko", "median_ms",
                     "us_per_call_batch1"])
    if args.part in ("all", "density", "digits"):
        rows += digits_rows(kinds, args.device, args.smoke)
    if args.part in ("all", "density", "miniboone"):
        data_dir = find_data("miniboone_partial")  # $PROBGEN_DATA, the cache, ../shared/data
        if data_dir is not None and data_dir.is_dir():
            rows += miniboone_rows(kinds, args.device, args.smoke, data_dir)
        else:
            print("skipping MiniBooNE: no miniboone_partial folder in "
                  + ", ".join(str(d) for d in data_dirs()))
    if any(r["part"] == "density" for r in rows):
        print_table([r for r in rows if r["part"] == "density"],
                    ["dataset", "model", "kind", "data_space", "k", "mean_ll", "stderr",
                     "bits_per_dim", "steps", "train_seconds", "eval_seconds"])
    if args.smoke:  # keep the full run's results/flows.json
        print("smoke run: results/flows.json left unchanged")
        return
    if args.part != "all":  # keep the other part's rows from an earlier run
        import json

        from benchmarks._common import RESULTS

        previous = RESULTS / "flows.json"
        if previous.exists():
            def key(r: dict) -> tuple:
                return (r["part"], r.get("dataset"), r.get("kind") if r["part"] == "overhead"
                        else None, r.get("implementation"), r.get("model"), r.get("k"))

            new = {key(r) for r in rows}
            rows = [r for r in json.loads(previous.read_text()) if key(r) not in new] + rows
    write_results("flows", rows, smoke=args.smoke,
                  device=args.device, threads=torch.get_num_threads(), clock=CLOCK["name"],
                  overhead_setup="D=8, 5 transforms, hidden (128, 128), batch 512, Adam",
                  density_setup="5 transforms, hidden (128, 128), batch 128, Adam 1e-3, "
                                "early stopping every 100 steps (patience 4), max 800 steps "
                                "(a CPU budget on 2 shared cores, not convergence)",
                  continuous_setup=f"FlowMatching: {FM_STEPS} steps through probgen.fit, "
                                   f"evaluate(atol=rtol={ODE_TOL}); zuko CNF: {CNF_STEPS} steps "
                                   f"of maximum likelihood (best of every 100 on the held-out "
                                   f"slice), exact trace at test (atol=rtol={ODE_TOL})")


if __name__ == "__main__":
    main()
