"""Plots users expect: training curves, sample grids, 2-D densities, comparison charts, HMM states."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files, not windows: works on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

__all__ = ["plot_training_curve", "plot_sample_grid", "plot_density_2d", "plot_comparison",
           "plot_hmm_states", "KIND_COLOURS"]

KIND_COLOURS = {"exact": "#1b7837", "lower_bound": "#2166ac", "estimate": "#b2182b"}


def _finish(fig, path: str | None):
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


def plot_training_curve(losses: Sequence[float], path: str | None = None, *, smooth: int = 20,
                        ylabel: str = "loss (nats)",
                        validation: Sequence[tuple[int, float]] = ()):
    """Loss at steps 1..n with a running mean over ``smooth`` steps, and the ``(step, loss)``
    validation scores when given (then both should be per example).

    ``ylabel`` says what the loss is: e.g. ``"negative log-likelihood (nats)"`` for an exact
    likelihood (a flow, EM), ``"−ELBO (nats)"`` for a bound.
    """
    values = torch.as_tensor(list(losses), dtype=torch.float64)
    steps = torch.arange(1, len(values) + 1)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps.numpy(), values.numpy(), alpha=0.35, lw=0.8, label="training loss")
    if len(values) >= smooth > 1:
        kernel = torch.ones(smooth, dtype=torch.float64) / smooth
        running = torch.nn.functional.conv1d(values[None, None], kernel[None, None])[0, 0]
        ax.plot(steps[smooth - 1:].numpy(), running.numpy(), lw=1.5, label=f"mean of {smooth}")
    if validation:
        at, scores = zip(*validation)
        ax.plot(at, scores, "o-", ms=3, lw=1.0, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend()
    return _finish(fig, path)


def plot_sample_grid(images: torch.Tensor, path: str | None = None, *, shape: tuple[int, int] | None
                     = None, ncols: int = 8, title: str | None = None):
    """A grid of image samples; ``images`` is (n, H, W) or (n, H*W) with ``shape=(H, W)``."""
    images = torch.as_tensor(images).detach().cpu().float()
    if shape is not None:
        images = images.reshape(-1, *shape)
    if images.dim() == 4:
        images = images[:, 0] if images.shape[1] == 1 else images.permute(0, 2, 3, 1)
    n = images.shape[0]
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 0.9, nrows * 0.9), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i].numpy(), cmap="gray_r", interpolation="nearest")
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def plot_density_2d(log_density: Callable[[torch.Tensor], torch.Tensor], data: torch.Tensor,
                    path: str | None = None, *, grid: int = 100, title: str | None = None,
                    xlabel: str = "feature 1", ylabel: str = "feature 2"):
    """Filled contours of exp(log_density) over the data's 2-D range, the data on top, with a
    colour bar (density) and axis labels; a long ``title`` wraps instead of being cut."""
    data = torch.as_tensor(data).detach().cpu().double()
    low, high = data.min(0).values, data.max(0).values
    pad = 0.15 * (high - low)
    xs = torch.linspace(float(low[0] - pad[0]), float(high[0] + pad[0]), grid, dtype=torch.float64)
    ys = torch.linspace(float(low[1] - pad[1]), float(high[1] + pad[1]), grid, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    points = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)
    with torch.no_grad():
        density = log_density(points).reshape(grid, grid).exp().cpu()
    fig, ax = plt.subplots(figsize=(6, 4.8))
    filled = ax.contourf(gx.numpy(), gy.numpy(), density.numpy(), levels=20, cmap="viridis")
    fig.colorbar(filled, ax=ax, label="density")
    ax.scatter(data[:, 0].numpy(), data[:, 1].numpy(), s=6, c="white", edgecolors="black", lw=0.3,
               label="data")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(textwrap.fill(title, 55), fontsize=10)
    return _finish(fig, path)


def plot_comparison(table: Any, path: str | None = None, *, title: str | None = None):
    """Two panels: each model's mean log-likelihood (±2 stderr), and its **paired** difference to
    the best model (±2 paired stderr) — the comparison that decides a ranking, since the same
    test points make per-example noise cancel."""
    rows = list(table.rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 0.45 * len(rows) + 1.8), sharey=True)
    for i, row in enumerate(reversed(rows)):
        res, colour = row.result, KIND_COLOURS[row.result.kind]
        left.errorbar(res.mean, i, xerr=2 * res.stderr, fmt="o", color=colour, capsize=3)
        right.errorbar(-row.diff_to_best, i, xerr=2 * row.diff_stderr, fmt="o", color=colour,
                       capsize=3)
    right.axvline(0.0, color="grey", lw=0.8, ls="--")
    left.set_yticks(range(len(rows)), [r.name for r in reversed(rows)])
    left.set_xlabel("log-likelihood per example (nats), ±2 stderr")
    right.set_xlabel("paired difference to the best, ±2 paired stderr")
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=k)
               for k, c in KIND_COLOURS.items() if any(r.result.kind == k for r in rows)]
    left.legend(handles=handles, loc="best", fontsize=8, framealpha=0.6)
    fig.suptitle(title or f"held-out log-likelihood ({table.data_space} data)")
    return _finish(fig, path)


def plot_hmm_states(observations: torch.Tensor, states: torch.Tensor, path: str | None = None):
    """One sequence's observations (time × features) above its decoded state sequence."""
    observations = torch.as_tensor(observations).detach().cpu().double()
    states = torch.as_tensor(states).detach().cpu()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 4), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    if observations.dim() == 1:
        observations = observations[:, None]
    if observations.shape[1] > 8:
        top.imshow(observations.T.numpy(), aspect="auto", cmap="gray_r", origin="lower")
    else:
        top.plot(observations.numpy(), lw=0.8)
    bottom.imshow(states[None].numpy(), aspect="auto", cmap="tab10", interpolation="nearest")
    bottom.set_yticks([])
    bottom.set_xlabel("time step")
    top.set_ylabel("observation")
    return _finish(fig, path)
