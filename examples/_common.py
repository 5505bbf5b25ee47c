"""What the 2-D density examples share: their data (a ring of Gaussians) and their scatter figure.

Not an example itself: ``diffusion.py`` and ``flow_matching.py`` import it from this folder.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402


def ring_mixture() -> dist.Distribution:
    """Six Gaussians (scale 0.3) evenly spaced on the circle of radius 2, in 2-D."""
    angles = torch.arange(6) * torch.pi / 3
    means = 2.0 * torch.stack([angles.cos(), angles.sin()], -1)
    return dist.MixtureSameFamily(dist.Categorical(torch.ones(6)),
                                  dist.Normal(means, 0.3).to_event(1))


def save_scatters(draws: dict[str, torch.Tensor], path: str, *, dpi: int) -> None:
    """One equal-aspect scatter per named ``(n, 2)`` point set, side by side, saved to ``path``."""
    figure, axes = plt.subplots(1, len(draws), figsize=(4 * len(draws), 4), sharex=True,
                                sharey=True)
    for axis, (name, points) in zip(axes, draws.items()):
        points = points.cpu()
        axis.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5)
        axis.set_title(name)
        axis.set_aspect("equal")
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
