"""What the MNIST benchmarks share: the splits (train / validation / test) and training through
``probgen.fit`` (dynamic binarization as ``transform=``, a cosine learning rate as a Pyro
scheduler, validation-based model selection, resumable checkpoints)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch

import probgen
from probgen.core.checkpoint import atomic_write_text
from probgen.core.paths import find_data
from probgen.data.mnist import DynamicBinarizer, load_binarized_mnist, load_mnist

VALIDATION_SIZE = 10_000  # the last 10,000 training images: model selection never sees the test set


def model_budgets(models: str, minutes: str | None) -> tuple[list[str], list[float | None]]:
    """``--models a,b`` and ``--minutes 6,5`` as (names, minutes per model or None)."""
    names = models.split(",")
    budgets = [float(m) for m in minutes.split(",")] if minutes else [None] * len(names)
    if len(budgets) != len(names):
        raise SystemExit("--minutes needs one budget per model")
    return names, budgets


# --- data ------------------------------------------------------------------------------------
@dataclass
class Splits:
    """Training data (intensities when ``transform`` binarizes each batch, else bits), a
    held-out validation set and the test set (both binarized once, with their own seeds)."""

    train: torch.Tensor
    validation: torch.Tensor
    test: torch.Tensor
    transform: Callable[[torch.Tensor], torch.Tensor] | None
    binarization: str
    validation_source: str


def mnist_splits(binarization: str, *, seed: int = 0, smoke: bool = False,
                 device: str = "cpu") -> Splits:
    """MNIST as the benchmarks use it, found with :func:`probgen.core.paths.find_data`.

    ``"dynamic"``: the first 50,000 training images as intensities, binarized afresh in every
    mini-batch (``transform=torch.bernoulli``), the last 10,000 as validation, the 10,000 test
    images binarized once (seed ``10_000 + seed``, the same test bits as the earlier rows).
    ``"static"``: Larochelle & Murray's train / valid / test split (50,000 / 10,000 / 10,000).
    """
    if binarization == "static":
        folder = find_data("binarized_mnist")
        train = load_binarized_mnist("train", path=folder).float()
        validation = load_binarized_mnist("valid", path=folder).float()
        test = load_binarized_mnist("test", path=folder).float()
        transform, source = None, "the 10,000 'valid' images of Larochelle & Murray's split"
    elif binarization == "dynamic":
        folder = find_data("mnist")
        images = load_mnist("train", path=folder).flat()
        cut = len(images) - VALIDATION_SIZE
        train = images[:cut]
        validation = DynamicBinarizer(seed=20_000 + seed)(images[cut:])
        test = DynamicBinarizer(seed=10_000 + seed)(load_mnist("test", path=folder).flat())
        transform = torch.bernoulli  # draws from torch's RNG, which fit seeds and checkpoints
        source = (f"the last {VALIDATION_SIZE:,} MNIST training images (binarized once, seed "
                  f"{20_000 + seed}); training uses the first {cut:,}")
    else:
        raise ValueError(f"binarization must be 'dynamic' or 'static', got {binarization!r}")
    if smoke:
        train, validation, test = train[:512], validation[:128], test[:64]
    return Splits(train.to(device), validation.to(device), test.to(device), transform,
                  binarization, source)


# --- recipes ----------------------------------------------------------------------------------
def recipe(*, lr: float, final_lr: float | None = None, loss: Any = None, num_particles: int = 1,
           kl_warmup_epochs: float | None = None, free_bits: float = 0.0,
           ema_decay: float | None = None) -> dict[str, Any]:
    """A training recipe as ``probgen.fit`` options: Adam at ``lr`` (cosine to ``final_lr``),
    the loss (None: the model's ELBO; ``"iwae"``: IWAE-k, k = ``num_particles``), KL warm-up,
    free bits and parameter averaging (``ema_decay``)."""
    options: dict[str, Any] = {"optim": {"lr": lr}, "loss": loss, "num_particles": num_particles}
    if final_lr is not None:
        options.update(lr_schedule="cosine", final_lr=final_lr)
    if kl_warmup_epochs:
        options["kl_warmup_epochs"] = kl_warmup_epochs
    if free_bits:
        options["free_bits"] = free_bits
    if ema_decay:
        options["ema_decay"] = ema_decay
    return options


def describe_recipe(options: dict[str, Any]) -> str:
    """The training objective of a recipe, in words, for the results rows."""
    if options.get("loss") == "iwae":
        text = f"iwae (k={options['num_particles']}, per-example log-mean-exp; fit loss='iwae')"
    else:
        loss = options.get("loss")
        text = "elbo" + (f" ({type(loss).__name__})" if loss is not None else "")
    extras = []
    if options.get("kl_warmup_epochs"):
        extras.append(f"KL warm-up {options['kl_warmup_epochs']:g} epochs")
    if options.get("free_bits"):
        extras.append(f"free bits {options['free_bits']:g} nats/dim")
    if options.get("lr_schedule"):
        extras.append(f"{options['lr_schedule']} lr {options['optim']['lr']:g} -> "
                      f"{options['final_lr']:g}")
    if options.get("ema_decay"):
        extras.append(f"parameter average (EMA {options['ema_decay']:g}) validated and kept")
    return text + (f", {', '.join(extras)}" if extras else "")


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- training ----------------------------------------------------------------------------------
@dataclass
class Training:
    """What a fit run did, per epoch, for the results rows."""

    epochs: float
    seconds: float
    cpu_seconds: float
    train_loss_per_epoch: list[float]
    validation_per_epoch: list[float]
    best_epoch: int | None
    model_selection: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def final_train_loss(self) -> float | None:
        return self.train_loss_per_epoch[-1] if self.train_loss_per_epoch else None


def _per_epoch(result: probgen.FitResult, steps_per_epoch: int) -> list[float]:
    history = result.history
    return [sum(history[i:i + steps_per_epoch]) / len(history[i:i + steps_per_epoch])
            for i in range(0, len(history), steps_per_epoch)]


def _forget(model: torch.nn.Module) -> None:
    """Drop a throw-away model's parameters from Pyro's param store."""
    store = pyro.get_param_store()
    prefix = f"{model.pyro_name}$$$"
    for name in [n for n in store.keys() if n.startswith(prefix)]:
        del store[name]


def epochs_for_budget(build: Callable[[], torch.nn.Module], splits: Splits, *,
                      minutes: float, max_epochs: int, batch_size: int, seed: int,
                      probe_steps: int = 30, **options: Any) -> int:
    """How many epochs fit ``minutes``, timed on ``probe_steps`` steps of a throw-away copy
    (plus 10% for validation), so the cosine schedule can span the whole run."""
    probe = build()
    stamps: list[float] = []
    size = min(len(splits.train), batch_size * (probe_steps + 1))
    probgen.fit(probe, splits.train[:size], num_steps=probe_steps + 1, batch_size=batch_size,
                **options, transform=splits.transform, seed=seed,
                progress=False, callbacks=[lambda state: stamps.append(time.perf_counter())])
    _forget(probe)
    step_seconds = (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)  # the first step sets up
    epoch_seconds = 1.1 * step_seconds * math.ceil(len(splits.train) / batch_size)
    planned = min(max_epochs, max(1, int(60 * minutes / epoch_seconds)))
    print(f"~{epoch_seconds:.1f} s per epoch: training {planned} epochs", flush=True)
    return planned


def train(model: torch.nn.Module, splits: Splits, *, epochs: int, batch_size: int, seed: int,
          checkpoint: Path | None = None, checkpoint_every: int = 50, resume: bool = False,
          patience: int | None = None, report_every: int = 25, distributed: bool = False,
          **options: Any) -> Training:
    """``probgen.fit`` for ``epochs`` epochs, validated once per epoch, the best epoch kept;
    ``options`` are the recipe's fit options (:func:`recipe`).

    With ``checkpoint``, fit writes a resumable checkpoint there every ``checkpoint_every``
    epochs and at the end; ``resume=True`` continues from it.
    """
    steps_per_epoch = math.ceil(len(splits.train) / batch_size)
    started = time.perf_counter()

    def report(state: probgen.FitState) -> None:
        if (state.step + 1) % (report_every * steps_per_epoch) == 0:
            epoch_losses = state.losses[-steps_per_epoch:]
            mean = sum(epoch_losses) / len(epoch_losses) / len(splits.train)
            valid = f", validation {state.validation[-1][1]:.2f}" if state.validation else ""
            print(f"epoch {state.epoch + 1}/{epochs}: loss {mean:.2f}{valid}, "
                  f"{time.perf_counter() - started:.0f} s", flush=True)

    cpu = time.process_time()
    result = probgen.fit(
        model, splits.train, epochs=epochs, batch_size=batch_size, **options,
        transform=splits.transform,
        validation=splits.validation, patience=patience, restore_best=True, seed=seed,
        checkpoint=checkpoint, checkpoint_every=checkpoint_every * steps_per_epoch,
        resume=resume, progress=False, callbacks=[report], distributed=distributed)
    cpu_seconds = time.process_time() - cpu
    best = result.best_step // steps_per_epoch if result.best_step is not None else None
    loss = options.get("loss")
    loss = loss if isinstance(loss, str) else type(loss).__name__ if loss is not None \
        else "the model's ELBO"
    selection = (f"parameters of the epoch with the lowest validation loss ({loss}"
                 f" per example, once per epoch) on {splits.validation_source}: epoch {best} of "
                 f"{len(result.losses) / steps_per_epoch:g}; the test set is used only to report")
    if result.run_seconds is not None:  # the whole run, every resumed call of it
        seconds, cpu_seconds = result.run_seconds, result.run_cpu_seconds
    else:  # resumed from a file that did not record the earlier calls' time
        seconds = result.seconds
        print("warning: the checkpoint does not record the earlier calls' time; train_seconds "
              "counts this call only", flush=True)
    return Training(len(result.losses) / steps_per_epoch, seconds, cpu_seconds,
                    _per_epoch(result, steps_per_epoch), [v for _, v in result.validation],
                    best, selection, {"optim": _optimizer_name(options.get("optim")) + (
                                          f", {options['lr_schedule']} lr to "
                                          f"{options['final_lr']:g} per step"
                                          if options.get("lr_schedule") else "")
                                      + (f", parameters averaged (EMA {options['ema_decay']:g}; "
                                         "the average is validated and kept)"
                                         if options.get("ema_decay") else ""),
                                      "batch_size": batch_size, "seed": seed,
                                      "num_train": len(splits.train),
                                      "num_validation": len(splits.validation)})


def _optimizer_name(optim: Any) -> str:
    """'Adam' for fit's own optimizer (a rate or options dict), else the Pyro optimizer's."""
    constructor = getattr(optim, "pt_optim_constructor", None)
    if constructor is None:
        return "Adam"
    arguments = getattr(optim, "pt_optim_args", {}) or {}
    return constructor.__name__ + (f" {arguments['lr']:g}" if "lr" in arguments else "")


def write_plan(path: Path, epochs: int) -> None:
    atomic_write_text(path, json.dumps({"epochs": epochs}))


def read_plan(path: Path) -> int | None:
    return int(json.loads(path.read_text())["epochs"]) if path.exists() else None


def planned_epochs(plan: Path, build: Callable[[], torch.nn.Module], splits: Splits, *,
                   minutes: float | None, max_epochs: int, resume: bool, batch_size: int,
                   seed: int, **options: Any) -> int:
    """``max_epochs``, or with a budget the epochs that fit ``minutes`` (:func:`epochs_for_budget`),
    written to ``plan`` so that a resumed run (``resume``) trains as many as it planned."""
    if minutes is None:
        return max_epochs
    planned = read_plan(plan) if resume else None
    if planned is None:
        planned = epochs_for_budget(build, splits, minutes=minutes, max_epochs=max_epochs,
                                    batch_size=batch_size, seed=seed, **options)
        write_plan(plan, planned)
    return planned
