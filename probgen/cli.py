"""The probgen command line: a thin layer over fit, evaluate, sample, compare and demo."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import inspect
import json
import math
import os
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probgen.core.checkpoint import CheckpointError
from probgen.core.devices import check_device
from probgen.core.program import inspect_program
from probgen.core.result import LogLikelihood, data_fingerprint
from probgen.core.validate import (
    check_finite,
    check_num_samples,
    check_regular_file,
    validate_data,
)
from probgen.data.bundled import BUNDLED, load_dataset, train_test_split
from probgen.demo.run import run_demo
from probgen.evaluate import compare, evaluate
from probgen.infer import TrainingDiverged, fit
from probgen.infer.distributed import is_torchrun, launch_torchrun
from probgen.models.io import load, save
from probgen.models.registry import get_model_class
from probgen.plots import plot_sample_grid, plot_training_curve

__all__ = ["main", "load_data_arg", "in_data_units"]


class UsageError(ValueError):
    """A bad command line: reported as one line and exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line (no usage block) and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


SPLIT_SEED, TEST_FRACTION = 0, 0.2
PREP_FILE = "data.json"  # how a run's data were prepared: fit writes it, the others reuse it


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """A numeric CSV file; a first row that is not all numbers is a header (its names returned)."""
    with open(path, newline="") as f:
        first = next(csv.reader(f), [])
    header = bool(first) and not all(_is_number(field) for field in first)
    with warnings.catch_warnings():  # "input contained no data": reported below, on one line
        warnings.simplefilter("ignore", UserWarning)
        array = np.loadtxt(path, delimiter=",", ndmin=2, skiprows=int(header))
    if header and array.size and array.shape[1] != len(first):
        raise UsageError(f"--data {path}: its header row names {len(first)} columns but the rows "
                         f"have {array.shape[1]} values; give one name per column")
    return array, [field.strip() for field in first] if header else None


DATA_FILE = "a .npy, .npz, .pt or .csv file"


def _read_file(path: Path, key: str | None) -> tuple[torch.Tensor, list[str] | None]:
    columns = None
    try:
        check_regular_file("--data", path, what=DATA_FILE)  # a FIFO or /dev/zero never ends
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from None
    if key is not None and path.suffix != ".npz":
        raise UsageError(f"--key {key!r} names an array inside an .npz file, but --data {path} "
                         f"is a {path.suffix or 'suffix-less'} file; drop --key")
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            arrays = np.load(path, allow_pickle=False)
            if not arrays.files:
                raise UsageError(f"--data {path} holds no arrays; save one with "
                                 "np.savez(path, data=array)")
            name = key or arrays.files[0]
            if name not in arrays.files:
                raise UsageError(f"{path} has arrays {arrays.files}, not {name!r} (use --key)")
            array = arrays[name]
        elif path.suffix == ".pt":
            data = torch.load(path, weights_only=True, map_location="cpu")
            if not isinstance(data, torch.Tensor):
                raise UsageError(f"--data {path} must hold a single tensor, got "
                                 f"{type(data).__name__}; save one with torch.save(tensor, path)")
            if data.layout != torch.strided:
                raise UsageError(f"--data {path} holds a {data.layout} tensor; save a dense one "
                                 "with torch.save(tensor.to_dense(), path)")
            array = None
        elif path.suffix == ".csv":
            array, columns = _read_csv(path)
        else:
            raise UsageError(f"unsupported data file {path.suffix!r}; use .npy, .npz, .pt or .csv")
    except UsageError:
        raise
    except pickle.UnpicklingError as error:
        raise UsageError(f"refusing to load --data {path}: it holds objects other than tensors "
                         f"(weights_only load failed: {str(error).splitlines()[0][:150]}); save a "
                         "plain tensor with torch.save(tensor, path)") from None
    except IsADirectoryError:
        raise UsageError(f"--data {path} is a folder; pass a .npy, .npz, .pt or .csv file") from None
    except (ValueError, OSError, RuntimeError, EOFError, KeyError, IndexError,
            UnicodeDecodeError) as error:
        first = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise UsageError(f"cannot read --data {path} ({type(error).__name__}: {first}); "
                         "pass a numeric .npy, .npz, .pt or .csv file") from None
    if array is not None:
        if array.dtype == object or array.dtype.kind not in "biuf c".replace(" ", ""):
            raise UsageError(f"--data {path} holds {array.dtype} values; probgen needs numbers")
        if np.iscomplexobj(array):
            raise UsageError(f"--data {path} is complex ({array.dtype}); probgen models real data: "
                             "pass the real part, the magnitude, or both as features")
        data = torch.from_numpy(np.ascontiguousarray(array))
    if data.is_complex():
        raise UsageError(f"--data {path} is complex ({data.dtype}); probgen models real data: "
                         "pass the real part, the magnitude, or both as features")
    return data, columns


def load_data_arg(spec: str, *, split: str = "all", standardize: bool = False,
                  binarize: float | None = None, key: str | None = None,
                  stats: dict[str, Any] | None = None, return_prep: bool = False):
    """A bundled data set name or a file (.npy, .npz, .pt, .csv) as a float tensor.

    ``standardize`` uses the training split's mean and std (or ``stats``, a run's recorded
    ones); ``binarize`` thresholds after that. With ``return_prep`` also returns how the data
    were prepared (what ``probgen fit`` records in the run folder's data.json): the split, the
    statistics, a CSV header's column names, and for standardized continuous data the
    transform's log-Jacobian −Σ_d log σ_d (log p_x(x) = log p_y((x − μ)/σ) − Σ_d log σ_d) and
    the raw data's fingerprint, so that densities are reported in the data's units.
    """
    if binarize is not None and not math.isfinite(binarize):
        raise UsageError(f"--binarize must be a finite threshold, got {binarize}; e.g. "
                         "--binarize 0.5")
    columns = None
    if spec in BUNDLED:
        if key is not None:
            raise UsageError(f"--key {key!r} names an array inside an .npz file, but --data "
                             f"{spec} is a bundled data set; drop --key")
        data = load_dataset(spec).data
    else:
        if not spec:
            raise UsageError("--data is empty; pass a bundled data set "
                             f"({', '.join(sorted(BUNDLED))}) or a file")
        path = Path(spec)
        if not path.exists():
            raise UsageError(f"--data {spec!r} is neither a bundled data set "
                             f"({', '.join(sorted(BUNDLED))}) nor an existing file")
        data, columns = _read_file(path, key)
    if data.dim() == 0 or len(data) == 0:
        raise UsageError(f"--data {spec} holds no examples (shape {tuple(data.shape)})")
    data = data.to(torch.float64) if not data.is_floating_point() else data
    _check_raw_values(data, spec)
    if split != "all":
        if len(data) < 2:
            raise UsageError(f"--split {split} needs at least 2 examples; {spec} has {len(data)}")
        train_index, test_index = train_test_split(len(data), TEST_FRACTION, seed=SPLIT_SEED)
        reference = data[train_index]
        data = reference if split == "train" else data[test_index]
    else:
        reference = data
    prep: dict[str, Any] = {"data": spec, "key": key, "split": split, "split_seed": SPLIT_SEED,
                            "test_fraction": TEST_FRACTION, "standardize": bool(standardize),
                            "binarize": binarize}
    if columns is not None:
        prep["columns"] = columns
    if standardize:
        if stats is not None:
            mean = torch.tensor(stats["mean"], dtype=data.dtype)
            std = torch.tensor(stats["std"], dtype=data.dtype)
            if mean.shape != data.shape[1:]:
                raise UsageError(f"the run standardized examples of shape {tuple(mean.shape)} "
                                 f"but --data {spec} has {tuple(data.shape[1:])}")
        else:
            mean, std = reference.mean(0), reference.std(0).clamp_min(1e-12)
            if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
                raise UsageError(f"--standardize: the mean or standard deviation of --data {spec} "
                                 f"overflows (values up to {float(reference.abs().max()):.3g}); "
                                 "rescale the data (e.g. divide by a power of 10) first")
        if binarize is None:  # a density of standardized data: back to the data's units
            prep.update(log_jacobian=-float(std.log().sum()), raw_data_id=data_fingerprint(data))
        data = (data - mean) / std
        prep.update(mean=mean.tolist(), std=std.tolist())
    if binarize is not None:
        data = (data >= binarize).to(torch.float64)
    return (data, prep) if return_prep else data


def _check_raw_values(data: torch.Tensor, spec: str) -> None:
    """NaN/Inf in the data as given (before standardizing spreads a NaN over every row)."""
    validate_data(data, name=f"--data {spec}", min_rank=0, allow_empty=True)


def to_model_dtype(data: torch.Tensor, dtype: torch.dtype | None, spec: str) -> torch.Tensor:
    """``data`` in the model's dtype; values beyond that dtype's range are refused by name
    rather than becoming Inf (and reported as Inf in the data)."""
    if dtype is None or data.dtype == dtype:
        return data
    if dtype.is_floating_point and data.numel():
        largest = float(data.abs().max())
        limit = torch.finfo(dtype).max
        if math.isfinite(largest) and largest > limit:
            raise UsageError(f"--data {spec} has values up to {largest:.3g}, beyond the range of "
                             f"the model's {str(dtype).replace('torch.', '')} ({limit:.3g}); "
                             "rescale the data (e.g. --standardize)")
    return data.to(dtype)


def in_data_units(result: LogLikelihood, prep: dict[str, Any]) -> LogLikelihood:
    r"""``result`` on standardized data as a density of the data the user gave.

    log p_x(x) = log p_y((x − μ)/σ) − Σ_d log σ_d, as a flow's change of variables; the
    transform is recorded in ``settings`` and the fingerprint is the raw data's, so runs with
    and without ``--standardize`` compare on the same data. Other results pass through.
    """
    if "log_jacobian" not in prep or result.data_space == "discrete":
        return result
    shifted = result.shifted(prep["log_jacobian"])
    settings = dict(result.settings, transform="standardize",
                    log_jacobian=round(prep["log_jacobian"], 6))
    return dataclasses.replace(shifted, settings=settings, data_id=prep["raw_data_id"])


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        if key in options:
            raise UsageError(f"--set {key} is given twice ({options[key]!r}, then {value}); "
                             "pass it once")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _build_model(name: str, data: torch.Tensor, options: dict[str, Any]):
    cls = get_model_class(name)
    # the family's declared data-size argument, read from the data unless --set gives it
    declared = cls.data_size_options(data)
    options.update({key: value for key, value in declared.items() if key not in options})
    try:
        return cls(**options)
    except TypeError as error:
        parameters = inspect.signature(cls.__init__).parameters
        accepted = [p for p in parameters if p != "self"]
        raise UsageError(f"cannot build model {name!r} with {options} ({error}); it takes "
                         f"{accepted}: pass them with --set key=value") from None


def _check_seed(seed: Any) -> None:
    if seed is not None and not 0 <= seed <= 2**32 - 1:
        raise UsageError(f"--seed must be in 0 .. 2**32 - 1 (4294967295), got {seed}")


def _check_device(device: str | None) -> None:
    try:
        check_device(device, name="--device")  # the same check as fit's and evaluate's device=
    except ValueError as error:
        raise UsageError(str(error)) from None


def _out_folder(value: str, flag: str = "--out") -> Path:
    """A run folder we can write to: not '', not an existing file, writable."""
    if not value or not value.strip():
        raise UsageError(f"{flag} is empty; name a folder such as {flag} runs/gmm")
    out = Path(value)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{flag} {value} is an existing file; it must name a folder for the "
                         "run (model.pt, checkpoint.pt, fit.json)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".probgen-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"{flag} {value} is not writable ({error.strerror or error}); choose "
                         "another folder or fix its permissions") from None
    return out


def _out_file(value: str | None, flag: str = "--out") -> Path | None:
    """A file we can write: not '', not a folder, its folder writable."""
    if value is None:
        return None
    if not value or not value.strip():
        raise UsageError(f"{flag} is empty; name a file such as {flag} result.json")
    out = Path(value)
    if out.is_dir() or value.endswith(os.sep):
        raise UsageError(f"{flag} {value} is a folder; name a file inside it, e.g. "
                         f"{out / 'result.json'}")
    if out.exists() and not out.is_file():
        raise UsageError(f"{flag} {value} is a pipe, socket or device, not a regular file "
                         "(writing to it would wait for a reader); name a file")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"{flag} {value}: cannot create its folder ({error.strerror or error})"
                         ) from None
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UsageError(f"{flag} {value} is not writable; choose another path")
    return out


def _read_prep(run: str) -> tuple[dict[str, Any] | None, Path | None]:
    """The data preparation a run recorded (data.json next to its model.pt), if any."""
    path = Path(run)
    folder = path if path.is_dir() else path.parent
    prep_path = folder / PREP_FILE
    if not prep_path.exists():
        return None, prep_path
    try:
        check_regular_file("the run's data preparation", prep_path,
                           what="the data.json probgen fit wrote", max_bytes=64 * 2**20)
    except (ValueError, TypeError) as error:
        raise UsageError(f"{error}; or delete it to go on without it") from None
    try:
        prep = json.loads(prep_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{prep_path} is unreadable ({error}); delete it to evaluate without "
                         "the run's recorded data preparation") from None
    if not isinstance(prep, dict):
        raise UsageError(f"{prep_path} is not a data-preparation record; delete it")
    problem = _prep_problem(prep)
    if problem:
        raise UsageError(f"{prep_path} is damaged: {problem}; fit the run again, or delete "
                         "data.json to go on without the run's data preparation")
    return prep, prep_path


def _finite_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        for v in value)


def _prep_problem(prep: dict[str, Any]) -> str | None:
    """What is wrong with a recorded data preparation (data.json), or None."""
    if prep.get("split", "all") not in ("all", "train", "test"):
        return f"split is {prep.get('split')!r}, not 'all', 'train' or 'test'"
    binarize = prep.get("binarize")
    if binarize is not None and (isinstance(binarize, bool) or not isinstance(
            binarize, (int, float)) or not math.isfinite(binarize)):
        return f"binarize is {binarize!r}, not a finite threshold or null"
    if prep.get("standardize") and (prep.get("mean") is not None or prep.get("std") is not None):
        mean, std = prep.get("mean"), prep.get("std")
        if not _finite_list(mean) or not _finite_list(std):
            return "its mean and std must be lists of finite numbers"
        if len(mean) != len(std):
            return f"its mean has {len(mean)} values but its std {len(std)}"
        if any(v <= 0 for v in std):
            return (f"its std has a value <= 0 (feature {next(i for i, v in enumerate(std) if v <= 0)}"
                    "); a standard deviation recorded by fit is positive")
    jacobian = prep.get("log_jacobian")
    if jacobian is not None and (isinstance(jacobian, bool) or not isinstance(
            jacobian, (int, float)) or not math.isfinite(jacobian)):
        return f"log_jacobian is {jacobian!r}, not a finite number"
    return None


def _resolve_prep(args, prep: dict[str, Any] | None, where: Path | None) -> dict[str, Any]:
    """The run's recorded data preparation, with the command line's flags checked against it."""
    options = {"split": args.split or "all", "standardize": bool(args.standardize),
               "binarize": args.binarize, "key": args.key, "stats": None}
    if prep is None:
        return options
    same_data = prep.get("data") == args.data
    if args.standardize is not None and bool(args.standardize) != bool(prep.get("standardize")):
        raise UsageError(f"--standardize conflicts with the run, fitted on unstandardized data "
                         f"({where}); drop --standardize")
    options["standardize"] = bool(prep.get("standardize"))
    if options["standardize"]:
        options["stats"] = {"mean": prep.get("mean"), "std": prep.get("std")}
        if options["stats"]["mean"] is None or options["stats"]["std"] is None:
            options["stats"] = None
    if args.binarize is not None and args.binarize != prep.get("binarize"):
        raise UsageError(f"--binarize {args.binarize} conflicts with the run's recorded "
                         f"--binarize {prep.get('binarize')} ({where}); drop the flag to reuse it")
    options["binarize"] = prep.get("binarize")
    if args.key is None and same_data:
        options["key"] = prep.get("key")
    if args.split is None:
        options["split"] = "test" if same_data and prep.get("split") == "train" else "all"
    elif args.split == "train" and same_data and prep.get("split") == "train":
        pass  # training-set likelihood, asked for explicitly
    return options


def _progress(args) -> bool:
    if args.quiet and args.progress:
        raise UsageError("--quiet and --progress contradict each other; pass one")
    return bool(args.progress) or (not args.quiet and sys.stderr.isatty())  # tqdm's stream


def _check_resume(out: Path, name: str, model, prep: dict[str, Any], args: Any = None) -> None:
    """--resume continues the same run: same model family, config and data preparation."""
    record = out / "fit.json"
    if not record.is_file():
        return
    try:
        previous = json.loads(record.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return
    if previous.get("model") != name:
        raise UsageError(f"--resume: {out} holds a {previous.get('model')!r} run, not {name!r}; "
                         "use another --out for a new run")
    old_config = json.loads(json.dumps(previous.get("config")))
    new_config = json.loads(json.dumps(dict(model.config)))
    if old_config != new_config:
        changed = sorted(k for k in set(old_config or {}) | set(new_config)
                         if (old_config or {}).get(k) != new_config.get(k))
        raise UsageError(f"--resume: the run in {out} was fitted with a different config "
                         f"(changed: {', '.join(changed)}); pass the same --set options or use "
                         "another --out")
    if args is not None:
        recorded = dict(previous.get("settings") or {}, **(previous.get("run") or {}))
        for field, now in (("seed", args.seed), ("method", args.method), ("loss", args.loss),
                           ("num_particles", args.particles), ("batch_size", args.batch_size)):
            if field in recorded and now is not None and recorded[field] is not None \
                    and recorded[field] != now:
                raise UsageError(f"--resume: the run in {out} was fitted with {field}="
                                 f"{recorded[field]!r}, now {now!r}; pass the same flags or "
                                 "use another --out")
    old_prep = previous.get("data_prep")
    if isinstance(old_prep, dict):
        for field in ("data", "split", "standardize", "binarize", "key", "validation",
                      "validation_seed"):
            if old_prep.get(field) != prep.get(field):
                raise UsageError(f"--resume: the run in {out} prepared its data with {field}="
                                 f"{old_prep.get(field)!r}, now {prep.get(field)!r}; pass the "
                                 "same data flags or use another --out")


EXACT_METHODS = ("em", "baum_welch")  # closed-form methods whose loss is −log p(data)


def loss_label(model: Any, method: str, loss: str | None, example: torch.Tensor) -> str:
    """What a run's loss is: an exact negative log-likelihood, or −ELBO / −IWAE for bounds.

    SVI's −ELBO is exact when every latent is summed out (a flow, an enumerated mixture).
    """
    if method in EXACT_METHODS:
        return "negative log-likelihood"
    if method != "svi":
        return f"{method} loss"
    if loss == "iwae":
        return "−IWAE bound"
    try:
        info = inspect_program(model.model, (example,))
    except (ValueError, RuntimeError, NotImplementedError, TypeError, IndexError):
        return "−ELBO"
    return "negative log-likelihood" if info.exact_applies else "−ELBO"


def _fit_record(args, model, prep, result, label: str, diverged: str | None = None) -> str:
    """fit.json: config, data preparation, settings, and every loss in the data's units."""
    per_example = -prep.get("log_jacobian", 0.0)  # loss_x = loss_y + N Σ log σ
    offset = per_example * result.num_examples
    losses = [loss + offset for loss in result.losses]
    return json.dumps({
        "model": args.model, "config": model.config, "data": args.data, "data_prep": prep,
        "steps": result.num_steps, "loss": f"{label} of the training set, nats, in the data's "
        "units" + (f" (standardization's log-Jacobian added: {offset:.4f})" if offset else ""),
        "final_loss": losses[-1] if losses else None, "seconds": result.seconds,
        "losses": losses, "diverged": diverged,
        "settings": dict(result.settings, validation=args.validation, patience=args.patience,
                         validate_every=args.validate_every),
        "run": {"seed": args.seed, "method": result.method, "loss": args.loss,
                "num_particles": args.particles, "batch_size": args.batch_size},
        "validation": [[step, value + per_example] for step, value in result.validation],
        "best_step": result.best_step, "stopped_early": result.stopped_early}, indent=1)


def _validation_split(args, data: torch.Tensor, prep: dict[str, Any]
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """--validation FRACTION of the training rows held out (seeded by --seed) for --patience."""
    if args.patience is not None and args.validation is None:
        raise UsageError(f"--patience {args.patience} needs a validation split to watch; add "
                         "--validation 0.2 (a fraction of the training rows)")
    if args.patience is not None and args.patience <= 0:
        raise UsageError(f"--patience must be a positive number of validations, got "
                         f"{args.patience}")
    if args.validate_every is not None and args.validate_every <= 0:
        raise UsageError(f"--validate-every must be a positive number of steps, got "
                         f"{args.validate_every}")
    if args.validation is None:
        if args.validate_every is not None:
            raise UsageError("--validate-every needs a validation split; add --validation 0.2")
        return data, None
    if not 0 < args.validation < 1:
        raise UsageError(f"--validation must be a fraction in (0, 1) of the training rows, got "
                         f"{args.validation}; e.g. --validation 0.2")
    if len(data) < 2 or round(len(data) * args.validation) >= len(data):
        raise UsageError(f"--validation {args.validation} leaves no training rows out of "
                         f"{len(data)}; use a smaller fraction or more data")
    train_index, validation_index = train_test_split(len(data), args.validation, seed=args.seed)
    prep.update(validation=args.validation, validation_seed=args.seed,
                num_validation=len(validation_index))
    if args.validate_every is None:  # once per epoch, but no more often than every 10 steps
        args.validate_every = max(math.ceil(len(train_index) / (args.batch_size or
                                                                 len(train_index))), 10)
    return data[train_index], data[validation_index]


def _check_fit_flags(args) -> None:
    """Learning rates, free bits and warm-up as finite numbers in range: an Inf --lr would
    otherwise train to NaN and be reported as a divergence."""
    checks = (("--lr", args.lr, {"positive": True}), ("--final-lr", args.final_lr,
              {"nonnegative": True}), ("--free-bits", args.free_bits, {"nonnegative": True}),
              ("--kl-warmup-epochs", args.kl_warmup_epochs, {"nonnegative": True}))
    for flag, value, bounds in checks:
        if value is not None:
            try:
                check_finite(flag, value, **bounds)
            except ValueError as error:
                raise UsageError(f"{error}; e.g. {flag} {EXAMPLE_VALUES[flag]}") from None
    if args.ema_decay is not None and not 0 < args.ema_decay < 1:
        raise UsageError(f"--ema-decay must be a number in (0, 1), got {args.ema_decay}; e.g. "
                         "--ema-decay 0.999")


EXAMPLE_VALUES = {"--lr": "1e-3", "--final-lr": "1e-5", "--free-bits": "0.5",
                  "--kl-warmup-epochs": "10"}


def _check_method_flags(args, model, data: torch.Tensor) -> None:
    """Flags an exact method has no use for are refused, not ignored; particles are capped."""
    method = args.method or type(model).default_method
    if method in EXACT_METHODS:
        given = [flag for flag, value in (("--loss", args.loss), ("--free-bits", args.free_bits
                 or None), ("--kl-warmup-epochs", args.kl_warmup_epochs)) if value is not None]
        if args.particles != 1:
            given.append("--particles")
        if given:
            raise UsageError(f"{', '.join(given)} shape{'s' if len(given) == 1 else ''} an SVI "
                             f"objective, but {args.model} trains with {method} (exact "
                             f"updates); drop {'it' if len(given) == 1 else 'them'} or pass "
                             "--method svi")
    per_particle = (args.batch_size or len(data)) * max(int(data[0].numel()), 1)
    try:
        check_num_samples("--particles", args.particles, per_sample=per_particle,
                          fix="each particle copies the batch: use at most {largest} particles or a "
                              "smaller --batch-size")
    except ValueError as error:
        raise UsageError(str(error)) from None


def _cmd_fit(args) -> None:
    _check_fit_flags(args)
    out = _out_folder(args.out)
    prepare = dict(standardize=bool(args.standardize), binarize=args.binarize, key=args.key,
                   return_prep=True)
    if args.split is not None:
        data, prep = load_data_arg(args.data, split=args.split, **prepare)
    else:  # the CLI holds out a test split of every data set: fit on the rest by default
        try:
            data, prep = load_data_arg(args.data, split="train", **prepare)
        except UsageError as error:
            if "needs at least 2 examples" not in str(error):
                raise
            data, prep = load_data_arg(args.data, split="all", **prepare)
    prep.pop("raw_data_id", None)  # the held-out data's fingerprint is evaluate's business
    data, validation = _validation_split(args, data, prep)
    options = _parse_options(args.set)
    progress = _progress(args)
    torch.manual_seed(args.seed)  # the model's initial parameters are part of the run
    model = _build_model(args.model, data, options)
    _check_method_flags(args, model, data)
    if args.resume:
        _check_resume(out, args.model, model, prep, args)
    if args.device:
        model.to(args.device)
    if model.dtype is not None:
        data = to_model_dtype(data, model.dtype, args.data)
        validation = validation.to(model.dtype) if validation is not None else None
    distributed = is_torchrun()
    if not args.resume and os.environ.get("RANK", "0") == "0":
        # recorded before training, so a killed run's --resume is checked against it too
        (out / "fit.json").write_text(json.dumps({
            "model": args.model, "config": model.config, "data": args.data, "data_prep": prep,
            "steps": 0, "status": "running", "run": {
                "seed": args.seed, "method": args.method or type(model).default_method,
                "loss": args.loss, "num_particles": args.particles,
                "batch_size": args.batch_size}}, indent=1))
        (out / PREP_FILE).write_text(json.dumps(prep, indent=1))
    diverged = None
    try:
        warnings.filterwarnings("ignore", message="Encountered NaN")  # reported below, once
        result = fit(model, data, method=args.method, num_steps=args.steps, epochs=args.epochs,
                     batch_size=args.batch_size, optim=args.lr, seed=args.seed,
                     loss=args.loss, num_particles=args.particles,
                     lr_schedule=args.lr_schedule, final_lr=args.final_lr,
                     kl_warmup_epochs=args.kl_warmup_epochs, free_bits=args.free_bits,
                     ema_decay=args.ema_decay, validation=validation, patience=args.patience,
                     validate_every=args.validate_every,
                     device=args.device, checkpoint=out / "checkpoint.pt",
                     checkpoint_every=args.checkpoint_every, resume=args.resume,
                     progress=progress, distributed=distributed)
    except TrainingDiverged as error:
        diverged, result = str(error).splitlines()[0], error.result
    if distributed and torch.distributed.get_rank() != 0:
        return
    label = loss_label(model, result.method, args.loss, data[:2])
    save(model, out / "model.pt")
    (out / "fit.json").write_text(_fit_record(args, model, prep, result, label, diverged))
    (out / PREP_FILE).write_text(json.dumps(prep, indent=1))
    if diverged is not None:
        raise UsageError(f"training diverged ({diverged}); wrote the rolled-back parameters "
                         f"to {out}/model.pt and fit.json; lower --lr "
                         "or standardize the data")
    record = json.loads((out / "fit.json").read_text())
    size = max(result.num_examples, 1)
    plot_training_curve([loss / size for loss in record["losses"]],
                        str(out / "training_curve.png"), validation=record["validation"],
                        ylabel=f"{label} per example (nats)")
    final = (f"{record['final_loss'] / result.num_examples:.4f} nats per example"
             if result.losses and result.num_examples else "n/a")
    units = ", in the data's units" if "log_jacobian" in prep else ""
    best = ""
    if record["validation"]:
        scores = dict((step, value) for step, value in record["validation"])
        chosen = result.best_step if result.best_step in scores else max(scores)
        best = (f"; validation {scores[chosen]:.4f} per example at step {chosen}"
                + (" (best, restored)" if result.best_step is not None else "")
                + (", stopped early" if result.stopped_early else ""))
    print(f"fitted {args.model} for {result.num_steps} steps on the {prep['split']} split "
          f"(final {label} {final}{units}{best}); wrote {out}/model.pt, checkpoint.pt, "
          "fit.json, data.json, training_curve.png")


def _load_run(run: str):
    if not run:
        raise UsageError("the run is empty; pass a run folder (from probgen fit) or a model.pt")
    path = Path(run)
    path = path / "model.pt" if path.is_dir() else path
    if path.exists():  # a missing file: load's own message
        try:
            check_regular_file("the run's model", path, what="a model.pt written by probgen fit")
        except (ValueError, TypeError) as error:
            raise UsageError(str(error)) from None
    return load(path)


def _cmd_evaluate(args) -> None:
    out = _out_file(args.out)
    prep, where = _read_prep(args.run)
    options = _resolve_prep(args, prep, where)
    model = _load_run(args.run)
    data, data_prep = load_data_arg(args.data, return_prep=True, **options)
    data = to_model_dtype(data, model.dtype, args.data)
    if args.device:
        model.to(args.device)
    if args.k is not None and args.k > 0:
        try:
            check_num_samples("--k", args.k, per_sample=(args.batch_size or len(data)) * max(
                int(data[0].numel()), 1), fix="each of the k particles copies the batch: use "
                "at most {largest} (IWAE-5000 is the usual ceiling) or a smaller --batch-size")
        except ValueError as error:
            raise UsageError(str(error)) from None
    result = evaluate(model, data, estimator=args.estimator, k=args.k,
                      batch_size=args.batch_size, device=args.device, seed=args.seed)
    result = in_data_units(result, data_prep)
    print(result)
    if "log_jacobian" in data_prep:
        print(f"in the data's units: includes the standardization's log-Jacobian −Σ log σ = "
              f"{data_prep['log_jacobian']:.4f} nats per example")
    if out is not None:
        result.to_json(out)
        print(f"wrote {out}")


def _cmd_sample(args) -> None:
    if args.num_samples <= 0:
        raise UsageError(f"-n must be a positive number of samples, got {args.num_samples}")
    out = _out_file(args.out)
    if out.suffix not in SAMPLE_FORMATS:
        raise UsageError(f"--out {out}: unknown suffix {out.suffix!r}; name a "
                         f"{', '.join(SAMPLE_FORMATS)} file ({'; '.join(SAMPLE_FORMATS.values())})")
    prep, _ = _read_prep(args.run) if args.run else (None, None)
    model = _load_run(args.run)
    shape = model.event_shape()
    try:
        check_num_samples("-n", args.num_samples, per_sample=math.prod(shape) if shape else 1,
                          element_bytes=8)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.device:
        model.to(args.device)
    torch.manual_seed(args.seed)
    with torch.no_grad():
        samples = model.sample(args.num_samples)
    units = ""
    if prep and prep.get("standardize") and prep.get("binarize") is None and not args.standardized \
            and prep.get("mean") is not None:
        mean = torch.tensor(prep["mean"], dtype=samples.dtype, device=samples.device)
        std = torch.tensor(prep["std"], dtype=samples.dtype, device=samples.device)
        if mean.shape == samples.shape[1:]:
            samples = samples * std + mean  # back to the data's units (run's recorded stats)
            units = " in the data's units (the run's standardization undone; --standardized keeps it)"
    if out.suffix == ".png":
        side = int(round(samples[0].numel() ** 0.5))
        if side * side != samples[0].numel():
            raise UsageError(f"--out {out}: a .png grid needs square examples, these have "
                             f"{samples[0].numel()} values; write a .pt file instead")
        plot_sample_grid(samples.reshape(len(samples), side, side), str(out))
    elif out.suffix == ".csv":
        if samples.dim() != 2:
            raise UsageError(f"--out {out}: a .csv holds one example per row, but these samples "
                             f"have shape {tuple(samples.shape)}; write a .npy or .pt file")
        columns = (prep or {}).get("columns")
        header = ",".join(columns) if columns and len(columns) == samples.shape[1] else ""
        np.savetxt(out, samples.cpu().double().numpy(), delimiter=",", header=header,
                   comments="", fmt="%.10g")
    elif out.suffix == ".npy":
        np.save(out, samples.cpu().numpy())
    else:
        torch.save(samples.cpu(), out)
    print(f"wrote {args.num_samples} samples to {out}{units}")


SAMPLE_FORMATS = {".csv": ".csv: one example per row (the data's header, if it had one)",
                  ".npy": ".npy: a NumPy array", ".pt": ".pt: a torch tensor",
                  ".png": ".png: an image grid"}


def _default_names(paths: list[str]) -> list[str]:
    """Each result named by its run folder (evaluate --out runs/gmm/test.json -> "gmm"); longer
    path tails only where folder names collide."""
    resolved = [Path(p).resolve() for p in paths]
    for depth in range(1, 1 + max(len(p.parts) for p in resolved)):
        names = []
        for p in resolved:
            tail = p.parent.parts[-depth:] if p.parent.parts[-depth:] else (p.stem,)
            names.append("/".join(tail) if p.parent != Path(p.anchor) else p.stem)
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in resolved]


PLOT_FORMATS = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff",
                ".webp")


def _cmd_compare(args) -> None:
    if args.names is not None and len(args.names) == 0:
        raise UsageError("--names needs one name per result file")
    names = args.names or _default_names(args.results)
    if len(names) != len(args.results):
        raise UsageError(f"--names has {len(names)} names for {len(args.results)} results")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"duplicate result names {duplicates}; give each result its own name "
                         "with --names (or pass each file once)")
    plot, json_out = _out_file(args.plot, "--plot"), _out_file(args.json, "--json")
    if plot is not None and plot.suffix.lower() not in PLOT_FORMATS:
        raise UsageError(f"--plot {plot}: unknown image suffix {plot.suffix!r}; name a "
                         f"{', '.join(PLOT_FORMATS)} file")
    results = {}
    for name, path in zip(names, args.results):
        if not Path(path).exists():
            raise UsageError(f"no result file {path}; write one with probgen evaluate --out")
        if Path(path).is_dir():
            raise UsageError(f"{path} is a folder; pass the JSON file probgen evaluate --out wrote")
        try:
            results[name] = LogLikelihood.from_json(path)
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError, TypeError,
                AttributeError) as error:
            raise UsageError(f"{path} is not a LogLikelihood JSON file ({error})") from None
    table = compare(results)
    print(table)
    if plot:
        table.plot(str(plot))
        print(f"wrote {plot}")
    if json_out:
        json_out.write_text(table.to_json())


def _cmd_demo(args) -> None:
    from probgen.demo.run import collect_entries

    if args.only is not None:
        skipped: list[str] = []
        known = sorted({entry.dataset for entry in collect_entries(args.smoke, skipped)})
        unavailable = [reason for reason in skipped if reason.startswith(f"{args.only} ")]
        if unavailable:
            raise UsageError(f"--only {args.only}: cannot run here: {unavailable[0]}")
        if args.only not in known:
            raise UsageError(f"--only {args.only!r} is not a demo data set; choose one of "
                             f"{', '.join(known)}")
    _out_folder(args.out)
    if args.device:
        os.environ["PROBGEN_DEVICE"] = args.device
    run_demo(args.out, smoke=args.smoke, only=args.only)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="probgen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def data_args(p):
        p.add_argument("--data", required=True, help="bundled name (iris, wine, digits) or a file")
        p.add_argument("--split", choices=["all", "train", "test"], default=None,
                       help="fit: train (default); evaluate: the run's held-out test split")
        p.add_argument("--standardize", action="store_true", default=None,
                       help="standardize with train stats (evaluate/sample reuse the run's)")
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
    fit_cmd.add_argument("--lr-schedule", choices=["cosine", "linear", "exponential"],
                         default=None, help="decay the learning rate to --final-lr over the run")
    fit_cmd.add_argument("--final-lr", type=float, default=None)
    fit_cmd.add_argument("--loss", choices=["trace", "mean_field", "iwae"], default=None,
                         help="SVI objective (default: the model's); iwae: IWAE-k, k=--particles")
    fit_cmd.add_argument("--particles", type=int, default=1, help="particles per estimate (k)")
    fit_cmd.add_argument("--kl-warmup-epochs", type=float, default=None,
                         help="KL weight rises from 0 to 1 over these epochs")
    fit_cmd.add_argument("--free-bits", type=float, default=0.0,
                         help="floor on each latent site's KL, nats per dimension and example")
    fit_cmd.add_argument("--ema-decay", type=float, default=None,
                         help="validate and keep the parameters' moving average, e.g. 0.999")
    fit_cmd.add_argument("--validation", type=float, default=None, metavar="FRACTION",
                         help="hold out this fraction of the training rows (seeded by --seed) "
                              "and score it during training")
    fit_cmd.add_argument("--patience", type=int, default=None, metavar="N",
                         help="stop after N validations without improvement; the best "
                              "parameters are restored (needs --validation)")
    fit_cmd.add_argument("--validate-every", type=int, default=None, metavar="STEPS",
                         help="steps between validations (default: once per epoch, at least "
                              "10 steps apart)")
    fit_cmd.add_argument("--out", default="runs/fit")
    fit_cmd.add_argument("--checkpoint-every", type=int, default=None)
    fit_cmd.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    fit_cmd.add_argument("--quiet", action="store_true", help="no progress bar")
    fit_cmd.add_argument("--progress", action="store_true",
                         help="progress bar even when stderr is not a terminal")
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
    sample.add_argument("--out", default="samples.pt",
                        help=".csv rows, .npy array, .pt tensor or .png grid")
    sample.add_argument("--device", default=None)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--standardized", action="store_true",
                        help="keep samples standardized (default: the run's data units)")
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


_BAD_INPUT = (UsageError, ValueError, TypeError, CheckpointError, FileNotFoundError, OSError,
              pickle.UnpicklingError, KeyError, IndexError, UnicodeDecodeError, MemoryError)


def _one_line(error: BaseException) -> str:
    if isinstance(error, KeyError) and error.args:
        return f"missing entry {error.args[0]!r} (KeyError)"
    text = str(error).strip()
    first = text.splitlines()[0].strip() if text else ""
    if not first:
        return type(error).__name__
    if isinstance(error, (ValueError, TypeError, OSError)):
        return first
    return f"{first} ({type(error).__name__})"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; any bad input gives one line on stderr and exit code 2."""
    try:
        args = _parser().parse_args(argv)
        if getattr(args, "nproc", None) is not None and args.nproc <= 0:
            raise UsageError(f"--nproc must be a positive number of processes, got {args.nproc}")
        _check_seed(getattr(args, "seed", None))
        _check_device(getattr(args, "device", None))
        if getattr(args, "nproc", None) and not is_torchrun():
            return launch_torchrun(list(argv if argv is not None else sys.argv[1:]), args.nproc)
        args.run_fn(args)
    except _BAD_INPUT as error:
        print(f"probgen: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:  # a bug, not bad input: still one line, exit 1
        if os.environ.get("PROBGEN_DEBUG"):
            raise
        print(f"probgen: internal error: {type(error).__name__}: {_one_line(error)} "
              "(set PROBGEN_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
