"""How model families contribute to ``probgen demo``: entries grouped into one table per data set."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from probgen.core.result import LogLikelihood

__all__ = ["DemoData", "DemoEntry", "DemoUnavailable", "DEMO_ENTRIES", "HELPER_MODULES",
           "demo_modules", "entries_functions", "register_demo"]

EntriesFunction = Callable[[bool], "list[DemoEntry]"]

# modules of probgen.demo that hold no family's demo (every other one registers its entries)
HELPER_MODULES = frozenset({"registry", "run"})

# module name -> (order, entries function), filled by @register_demo as the modules are imported
DEMO_ENTRIES: dict[str, tuple[int, EntriesFunction]] = {}


def register_demo(*, order: int) -> Callable[[EntriesFunction], EntriesFunction]:
    """Decorator: declare ``function(smoke) -> list[DemoEntry]`` as its module's demo entries.

    ``order`` places the module's rows (and a new data set's table) among the others: lower
    first. One function per module (``probgen/demo/<family>.py``).
    """

    def declare(function: EntriesFunction) -> EntriesFunction:
        DEMO_ENTRIES[function.__module__] = (order, function)
        return function

    return declare


def demo_modules() -> tuple[str, ...]:
    """The demo modules under ``probgen/demo``, found on disk (all but :data:`HELPER_MODULES`)."""
    found = pkgutil.iter_modules([str(Path(__file__).parent)])
    return tuple(f"{__package__}.{module.name}" for module in sorted(found, key=lambda m: m.name)
                 if module.name not in HELPER_MODULES and not module.name.startswith("_"))


def entries_functions() -> list[EntriesFunction]:
    """Every demo module's entries function, imported once, in declared ``order``."""
    for name in demo_modules():
        importlib.import_module(name)
    return [function for _, function in sorted(DEMO_ENTRIES.values(), key=lambda pair: pair[0])]


class DemoUnavailable(RuntimeError):
    """Raised by an entries function (:func:`register_demo`) when a family's demo cannot run
    here (its data are absent and cannot be downloaded); the demo goes on without it and says
    so in one line."""


@dataclass(frozen=True)
class DemoData:
    """Train/test tuples (each a tuple of tensors sharing the first dim) and a description."""

    name: str
    train: tuple[torch.Tensor, ...]
    test: tuple[torch.Tensor, ...]
    description: str


@dataclass(frozen=True)
class DemoEntry:
    """One model in the demo: ``run(data, out_dir)`` fits it on data.train, returns test LL.

    Built-in data sets (``probgen.demo.DATASETS``): ``"iris"`` (standardized, continuous,
    120/30 split of 150×4) and ``"digits"`` (sklearn's 8×8 digits binarized at 8/16, discrete,
    1437/360 split of 1797×64). A family with another data set passes ``load(smoke)``.
    """

    dataset: str
    name: str
    run: Callable[[DemoData, str], LogLikelihood]
    load: Callable[[bool], DemoData] | None = None  # for data sets probgen.demo does not know
