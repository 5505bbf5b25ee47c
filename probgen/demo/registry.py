"""How model families contribute to ``probgen demo``: entries grouped into one table per data set."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from probgen.core.result import LogLikelihood

__all__ = ["DemoData", "DemoEntry", "DemoUnavailable", "FAMILY_MODULES"]

# Modules that define ``demo_entries(smoke: bool) -> list[DemoEntry]``: one per family, all
# inside probgen.demo (the demo imports the families; no family imports the demo).
FAMILY_MODULES: tuple[str, ...] = (
    "probgen.demo.programs",
    "probgen.demo.mixture",
    "probgen.demo.flow",
    "probgen.demo.hmm",
    "probgen.demo.vae",
    "probgen.demo.ebm",
    "probgen.demo.diffusion",
    "probgen.demo.flow_matching",
    "probgen.demo.latent_diffusion",
    "probgen.demo.hierarchical",
    "probgen.demo.vqvae",
)


class DemoUnavailable(RuntimeError):
    """Raised by ``demo_entries`` when a family's demo cannot run here (its data are absent and
    cannot be downloaded); the demo goes on without it and says so in one line."""


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
