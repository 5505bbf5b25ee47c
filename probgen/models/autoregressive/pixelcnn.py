r"""PixelCNN: p(x) = Π_{i,j} p(x_ij | pixels before (i, j) in raster order), from one gated conv pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor
from torch.nn import functional as F

from probgen.core.model import GenerativeModel
from probgen.core.validate import check_size
from probgen.models.autoregressive.gated import GatedPixelCNN
from probgen.models.registry import register_model

__all__ = ["PixelCNN"]


@register_model("pixelcnn")
class PixelCNN(GenerativeModel):
    r"""log p(x) = Σ_{i,j} log p(x_ij | x_<ij), a gated PixelCNN (van den Oord et al., 2016).

    The program is ``pyro.sample("x", Bernoulli(logits=pixelcnn(x)).to_event(...), obs=x)``
    in a data plate (``Categorical`` with ``num_categories`` > 2): vertical and horizontal
    stacks make the logit of pixel (i, j) a function of the pixels before it in raster order
    only, with no blind spot, so one pass scores every conditional and the likelihood is exact.

    Single-channel images of ``image_shape`` = (H, W); data may be images ``(n, 1, H, W)`` or
    flat ``(n, H·W)`` (e.g. MNIST rows), and are scored in the shape given.

    References:
        | Conditional Image Generation with PixelCNN Decoders (van den Oord et al., 2016)
        | https://arxiv.org/abs/1606.05328
        | Pixel Recurrent Neural Networks (van den Oord et al., 2016)
        | https://arxiv.org/abs/1601.06759

    Arguments:
        image_shape: (H, W) or (1, H, W).
        num_categories: 2 for binary pixels (Bernoulli), K > 2 for integers 0..K-1 (Categorical,
            one-hot inputs).
        channels: width of the vertical and horizontal stacks.
        layers: gated layers (the first with mask A and ``first_kernel_size``).
        kernel_size, first_kernel_size: odd kernel sizes.
        head_channels: width of the per-pixel 1×1 output head.

    Example:
        >>> model = PixelCNN((4, 4), channels=8, layers=2)
        >>> model.log_prob(torch.zeros(3, 16)).shape
        torch.Size([3])
        >>> model.sample(2).shape
        torch.Size([2, 1, 4, 4])
    """

    has_exact_log_prob = True
    data_space = "discrete"
    data_size_argument = None  # image_shape: flat (n, H·W) rows do not say (H, W)

    def __init__(self, image_shape: Sequence[int] = (28, 28), *, num_categories: int = 2,
                 channels: int = 32, layers: int = 6, kernel_size: int = 3,
                 first_kernel_size: int = 7, head_channels: int = 64) -> None:
        shape = [check_size("image_shape", s) for s in image_shape]
        if len(shape) == 3 and shape[0] == 1:
            shape = shape[1:]
        if len(shape) != 2:
            raise ValueError(f"image_shape must be (H, W) or (1, H, W) for single-channel "
                             f"images, got {tuple(image_shape)}; this PixelCNN does not model "
                             "several channels")
        for name, value in (("kernel_size", kernel_size), ("first_kernel_size",
                                                            first_kernel_size)):
            if check_size(name, value) % 2 == 0:
                raise ValueError(f"{name} must be odd, got {value}; use e.g. {value + 1}")
        super().__init__(image_shape=shape, num_categories=check_size(
            "num_categories", num_categories, minimum=2), channels=check_size("channels", channels),
            layers=check_size("layers", layers), kernel_size=int(kernel_size),
            first_kernel_size=int(first_kernel_size),
            head_channels=check_size("head_channels", head_channels))
        self.height, self.width = shape
        self.num_categories = int(num_categories)
        categorical = self.num_categories > 2
        self.net = GatedPixelCNN(self.num_categories if categorical else 1,
                                 self.num_categories if categorical else 1,
                                 channels=channels, layers=layers, kernel_size=kernel_size,
                                 first_kernel_size=first_kernel_size, head_channels=head_channels)

    # --- capabilities ----------------------------------------------------------------------
    @property
    def support(self) -> str:
        """``"binary"`` for 2 categories, else ``"categorical"``."""
        return "binary" if self.num_categories == 2 else "categorical"

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """The example shapes accepted: ``(1, H, W)`` and ``(H·W,)``."""
        return (1, self.height, self.width), (self.height * self.width,)

    def validate(self, x: Any, *, name: str = "data") -> Tensor:
        x = super().validate(x, name=name)
        if tuple(x.shape[1:]) not in self.shapes:
            images, flat = self.shapes
            raise ValueError(f"{name} has examples of shape {tuple(x.shape[1:])} but this "
                             f"PixelCNN models {self.height}x{self.width} images: pass "
                             f"(n, {', '.join(map(str, images))}) or flat (n, {flat[0]}) data, "
                             f"e.g. x.reshape(-1, {', '.join(map(str, images))})")
        return x

    # --- the conditionals --------------------------------------------------------------------
    def logits(self, x: Tensor) -> Tensor:
        """Logits of p(x_ij | x_<ij): shaped like x (Bernoulli), or ``(*x.shape, K)``."""
        image = x.reshape(x.shape[0], 1, -1, self.width)  # (n, 1, rows, W); rows may be < H
        if self.num_categories == 2:
            out = self.net(2 * image.to(self._dtype()) - 1)  # zero padding differs from 0 and 1
            return out.reshape(x.shape)
        onehot = F.one_hot(image[:, 0].long(), self.num_categories)  # (n, rows, W, K)
        out = self.net(onehot.permute(0, 3, 1, 2).to(self._dtype()))  # (n, K, rows, W)
        return out.permute(0, 2, 3, 1).reshape(*x.shape, self.num_categories)

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def distribution(self, x: Tensor) -> dist.TorchDistribution:
        """The conditionals that score x, event shape ``x.shape[1:]`` (valid for x only)."""
        logits = self.logits(x)
        if self.num_categories == 2:
            return dist.Bernoulli(logits=logits, validate_args=False).to_event(x.dim() - 1)
        return dist.Categorical(logits=logits, validate_args=False).to_event(x.dim() - 1)

    # --- the program -----------------------------------------------------------------------
    def model(self, x: Tensor) -> None:
        """x ~ p(x), in a plate ``"data"`` over the first dimension."""
        self.register_params()
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", self.distribution(x), obs=x)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log p(x) per example, shape ``(n,)``."""
        return self.distribution(x).log_prob(x)

    @torch.no_grad()
    def sample(self, num_samples: int, *, flat: bool = False) -> Tensor:
        """Draw ``(num_samples, 1, H, W)`` images (``flat=True``: ``(num_samples, H·W)``), pixel
        by pixel: H·W passes, each over the rows drawn so far. Categorical draws are ``long``."""
        num_samples = check_size("num_samples", num_samples)
        categorical = self.num_categories > 2
        device = next(self.parameters()).device
        x = torch.zeros(num_samples, 1, self.height, self.width, device=device,
                        dtype=torch.long if categorical else self._dtype())
        for i in range(self.height):
            for j in range(self.width):
                # rows <= i depend only on rows <= i: the rows below need no computing
                logits = self.logits(x[:, :, : i + 1])[:, 0, i, j]
                x[:, 0, i, j] = (dist.Categorical(logits=logits).sample() if categorical
                                 else dist.Bernoulli(logits=logits).sample())
        return x.reshape(num_samples, -1) if flat else x

    def num_dims(self, x: Tensor, *side: Tensor) -> int:
        return self.height * self.width

    def receptive_field(self) -> int:
        """How far (in columns, to either side; in rows, above) the vertical stack reaches."""
        config = self.config
        return config["first_kernel_size"] // 2 + (config["layers"] - 1) * (
            config["kernel_size"] // 2)

