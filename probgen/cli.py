"""The probgen command line: a thin layer over fit, evaluate, sample, compare and demo."""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probgen.core.checkpoint import CheckpointError
from probgen.core.result import LogLikelihood
from probgen.data.bundled import BUNDLED, load_dataset, train_test_split
from probgen.demo.run import run_demo
from probgen.evaluate import compare, evaluate
from probgen.infer import fit
from probgen.infer.distributed import is_torchrun, launch_torchrun
from probgen.models.io import load, save
from probgen.models.registry import get_model_class
from probgen.plots import plot_sample_grid, plot_training_curve

__all__ = ["main", "load_data_arg"]


class UsageError(ValueError):
    """A bad command line: reported as one line and exit code 2."""


def load_data_arg(spec: str, *, split: str = "all", standardize: bool = False,
                  binarize: float | None = None, key: str | None = None) -> torch.Tensor:
    """A bundled data set name or a file (.npy, .npz, .pt, .csv) as a float tensor."""
    if spec in BUNDLED:
        data = load_dataset(spec).data
    else:
        path = Path(spec)
        if not path.exists():
            raise UsageError(f"--data {spec!r} is neither a bundled data set "
                             f"({', '.join(sorted(BUNDLED))}) nor an existing file")
        if path.suffix == ".npy":
            data = torch.from_numpy(np.load(path, allow_pickle=False))
        elif path.suffix == ".npz":
            arrays = np.load(path, allow_pickle=False)
            name = key or arrays.files[0]
            if name not in arrays.files:
                raise UsageError(f"{path} has arrays {arrays.files}, not {name!r} (use --key)")
            data = torch.from_numpy(arrays[name])
        elif path.suffix == ".pt":
            data = torch.load(path, weights_only=True)
            if not isinstance(data, torch.Tensor):
                raise UsageError(f"{path} must hold a single tensor")
        elif path.suffix == ".csv":
            data = torch.from_numpy(np.loadtxt(path, delimiter=",", ndmin=2))
        else:
            raise UsageError(f"unsupported data file {path.suffix!r}; use .npy, .npz, .pt or .csv")
    data = data.to(torch.float64) if not data.is_floating_point() else data
    if split != "all":
        train_index, test_index = train_test_split(len(data), 0.2, seed=0)
        reference = data[train_index]
        data = reference if split == "train" else data[test_index]
    else:
        reference = data
    if standardize:
        data = (data - reference.mean(0)) / reference.std(0).clamp_min(1e-12)
    if binarize is not None:
        data = (data >= binarize).to(torch.float64)
    return data


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _build_model(name: str, data: torch.Tensor, options: dict[str, Any]):
    cls = get_model_class(name)
    parameters = inspect.signature(cls.__init__).parameters
    for feature_arg in ("num_features", "features", "input_dim", "num_visible", "data_dim"):
        if feature_arg in parameters and feature_arg not in options and data.dim() == 2:
            options[feature_arg] = int(data.shape[1])
    if "data_shape" in parameters and "data_shape" not in options:
        options["data_shape"] = list(data.shape[1:])
    try:
        return cls(**options)
    except TypeError as error:
        accepted = [p for p in parameters if p != "self"]
        raise UsageError(f"cannot build model {name!r} with {options} ({error}); it takes "
                         f"{accepted}: pass them with --set key=value") from None


def _data_options(args) -> dict[str, Any]:
    return {"split": args.split, "standardize": args.standardize, "binarize": args.binarize,
            "key": args.key}


def _cmd_fit(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data_arg(args.data, **_data_options(args))
    options = _parse_options(args.set)
    torch.manual_seed(args.seed)  # the model's initial parameters are part of the run
    model = _build_model(args.model, data, options)
    if args.device:
        model.to(args.device)
    if model.dtype is not None:
        data = data.to(model.dtype)
    distributed = is_torchrun()
    result = fit(model, data, method=args.method, num_steps=args.steps, epochs=args.epochs,
                 batch_size=args.batch_size, optim=args.lr, seed=args.seed, device=args.device,
                 checkpoint=out / "checkpoint.pt", checkpoint_every=args.checkpoint_every,
                 resume=args.resume, progress=not args.quiet, distributed=distributed)
    if distributed and torch.distributed.get_rank() != 0:
        return
    save(model, out / "model.pt")
    (out / "fit.json").write_text(json.dumps({
        "model": args.model, "config": model.config, "data": args.data, "steps": result.num_steps,
        "final_loss": result.losses[-1] if result.losses else None, "seconds": result.seconds,
        "losses": result.losses}, indent=1))
    plot_training_curve(result.losses, str(out / "training_curve.png"))
    print(f"fitted {args.model} for {result.num_steps} steps "
          f"(final loss {result.losses[-1]:.4f}); wrote {out}/model.pt, checkpoint.pt, fit.json, "
          "training_curve.png")


def _load_run(run: str):
    path = Path(run)
    return load(path / "model.pt" if path.is_dir() else path)


def _cmd_evaluate(args) -> None:
    model = _load_run(args.run)
    data = load_data_arg(args.data, **_data_options(args))
    if model.dtype is not None:
        data = data.to(model.dtype)
    if args.device:
        model.to(args.device)
    result = evaluate(model, data, estimator=args.estimator, k=args.k,
                      batch_size=args.batch_size, device=args.device, seed=args.seed)
    print(result)
    if args.out:
        result.to_json(args.out)
        print(f"wrote {args.out}")


def _cmd_sample(args) -> None:
    if args.num_samples <= 0:
        raise UsageError(f"-n must be a positive number of samples, got {args.num_samples}")
    model = _load_run(args.run)
    if args.device:
        model.to(args.device)
    torch.manual_seed(args.seed)
    with torch.no_grad():
        samples = model.sample(args.num_samples)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".png":
        side = int(round(samples[0].numel() ** 0.5))
        plot_sample_grid(samples.reshape(len(samples), side, side), str(out))
    else:
        torch.save(samples.cpu(), out)
    print(f"wrote {args.num_samples} samples to {out}")


def _cmd_compare(args) -> None:
    names = args.names or [Path(p).stem for p in args.results]
    if len(names) != len(args.results):
        raise UsageError(f"--names has {len(names)} names for {len(args.results)} results")
    results = {}
    for name, path in zip(names, args.results):
        if not Path(path).exists():
            raise UsageError(f"no result file {path}; write one with probgen evaluate --out")
        try:
            results[name] = LogLikelihood.from_json(path)
        except (json.JSONDecodeError, KeyError) as error:
            raise UsageError(f"{path} is not a LogLikelihood JSON file ({error})") from None
    table = compare(results)
    print(table)
    if args.plot:
        table.plot(args.plot)
        print(f"wrote {args.plot}")
    if args.json:
        Path(args.json).write_text(table.to_json())


def _cmd_demo(args) -> None:
    if args.device:
        os.environ["PROBGEN_DEVICE"] = args.device
    run_demo(args.out, smoke=args.smoke, only=args.only)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="probgen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def data_args(p):
        p.add_argument("--data", required=True, help="bundled name (iris, wine, digits) or a file")
        p.add_argument("--split", choices=["all", "train", "test"], default="all")
        p.add_argument("--standardize", action="store_true", help="standardize with train stats")
        p.add_argument("--binarize", type=float, default=None, help="threshold for 0/1 data")
        p.add_argument("--key", default=None, help="array name inside an .npz file")
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ...")
        p.add_argument("--seed", type=int, default=0)

    fit_cmd = sub.add_parser("fit", help="fit a bundled model (its default method, or --method)")
    fit_cmd.add_argument("model", help="bundled model name, e.g. gmm, hmm, vae, flow, rbm")
    data_args(fit_cmd)
    fit_cmd.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="model constructor option (JSON value), repeatable")
    fit_cmd.add_argument("--method", default=None,
                         help="training method (default: the model's own, e.g. em for gmm; svi)")
    fit_cmd.add_argument("--steps", type=int, default=None)
    fit_cmd.add_argument("--epochs", type=int, default=None)
    fit_cmd.add_argument("--batch-size", type=int, default=None)
    fit_cmd.add_argument("--lr", type=float, default=None)
    fit_cmd.add_argument("--out", default="runs/fit")
    fit_cmd.add_argument("--checkpoint-every", type=int, default=None)
    fit_cmd.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    fit_cmd.add_argument("--quiet", action="store_true", help="no progress bar")
    fit_cmd.add_argument("--nproc", type=int, default=None,
                         help="train with N processes (torchrun; NCCL on GPUs, gloo on CPU)")
    fit_cmd.set_defaults(run_fn=_cmd_fit)

    evaluate_cmd = sub.add_parser("evaluate", help="labelled log-likelihood of data under a run")
    evaluate_cmd.add_argument("run", help="a run folder (from probgen fit) or a model.pt")
    data_args(evaluate_cmd)
    evaluate_cmd.add_argument("--estimator", default="auto")
    evaluate_cmd.add_argument("--k", type=int, default=None)
    evaluate_cmd.add_argument("--batch-size", type=int, default=None)
    evaluate_cmd.add_argument("--out", default=None, help="write the LogLikelihood as JSON")
    evaluate_cmd.set_defaults(run_fn=_cmd_evaluate)

    sample = sub.add_parser("sample", help="draw samples from a fitted model")
    sample.add_argument("run")
    sample.add_argument("-n", "--num-samples", type=int, default=16)
    sample.add_argument("--out", default="samples.pt", help=".pt tensor or .png grid")
    sample.add_argument("--device", default=None)
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(run_fn=_cmd_sample)

    comp = sub.add_parser("compare", help="one table from LogLikelihood JSON files")
    comp.add_argument("results", nargs="+")
    comp.add_argument("--names", nargs="*", default=None)
    comp.add_argument("--plot", default=None)
    comp.add_argument("--json", default=None)
    comp.set_defaults(run_fn=_cmd_compare)

    demo = sub.add_parser("demo", help="fit every family's demo models and compare them")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--smoke", action="store_true", help="seconds-long run")
    demo.add_argument("--only", default=None, help="one data set (iris, digits, ...)")
    demo.add_argument("--device", default=None)
    demo.set_defaults(run_fn=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "nproc", None):
        if args.nproc <= 0:
            print(f"probgen: error: --nproc must be positive, got {args.nproc}", file=sys.stderr)
            return 2
        if not is_torchrun():
            return launch_torchrun(list(argv if argv is not None else sys.argv[1:]), args.nproc)
    handler = args.run_fn
    try:
        handler(args)
    except (UsageError, ValueError, TypeError, CheckpointError, FileNotFoundError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"probgen: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
