"""Gated PixelCNN layers: vertical and horizontal stacks, no blind spot (networks only)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["GatedLayer", "GatedPixelCNN"]


def _gate(features: Tensor) -> Tensor:
    """tanh(a) ⊙ σ(b) for the two halves of the channels."""
    value, gate = features.chunk(2, dim=1)
    return torch.tanh(value) * torch.sigmoid(gate)


class GatedLayer(nn.Module):
    r"""One gated layer: y = tanh(W_f * x) ⊙ σ(W_g * x) on two stacks (van den Oord et al., 2016).

    The vertical stack at row i sees rows <= i (a ``(k//2+1) × k`` convolution, padded above);
    the horizontal stack at (i, j) sees its row up to column j (mask B) or j-1 (``first``, mask
    A), plus the vertical stack shifted down one row. So (i, j) reads only pixels before it in
    raster order, and, unlike masked 3×3 convolutions, every one of them once deep enough.

    Arguments:
        in_channels: input channels (of both stacks).
        channels: output channels (of both stacks).
        kernel_size: k, odd.
        first: mask A (the current pixel excluded); no residual connection.
    """

    def __init__(self, in_channels: int, channels: int, kernel_size: int, *, first: bool) -> None:
        super().__init__()
        self.half, self.first = kernel_size // 2, first
        self.vertical = nn.Conv2d(in_channels, 2 * channels, (self.half + 1, kernel_size))
        self.horizontal = nn.Conv2d(in_channels, 2 * channels, (1, self.half + 1))
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.horizontal_out = nn.Conv2d(channels, channels, 1)

    def forward(self, vertical: Tensor, horizontal: Tensor) -> tuple[Tensor, Tensor]:
        """Both stacks ``(n, C, H, W)`` in, ``(n, channels, H, W)`` out."""
        height, width = vertical.shape[-2:]
        half = self.half
        v = self.vertical(F.pad(vertical, (half, half, half, 0)))  # row i: rows i-half .. i
        below = F.pad(v, (0, 0, 1, 0))[..., :height, :]  # row i: rows <= i-1
        if self.first:  # (i, j): columns j-half-1 .. j-1
            h = self.horizontal(F.pad(horizontal, (half + 1, 0, 0, 0)))[..., :width]
        else:  # (i, j): columns j-half .. j
            h = self.horizontal(F.pad(horizontal, (half, 0, 0, 0)))
        h = self.horizontal_out(_gate(h + self.vertical_to_horizontal(below)))
        return _gate(v), h if self.first else h + horizontal


class GatedPixelCNN(nn.Module):
    r"""A gated PixelCNN: a mask-A layer, mask-B layers, then a 1×1 ReLU head per pixel.

    Output (i, j) is a function of the input pixels before (i, j) in raster order only
    (van den Oord et al., 2016, "Conditional Image Generation with PixelCNN Decoders").

    Arguments:
        in_channels: channels of the encoded image.
        out_channels: outputs per pixel (1 Bernoulli logit, or K category logits).
        channels: width of both stacks.
        layers: gated layers, the first one of kernel ``first_kernel_size`` (mask A).
        head_channels: width of the 1×1 output head.

    Example:
        >>> net = GatedPixelCNN(1, 1, channels=8, layers=2)
        >>> net(torch.zeros(2, 1, 5, 5)).shape
        torch.Size([2, 1, 5, 5])
    """

    def __init__(self, in_channels: int, out_channels: int, *, channels: int = 32,
                 layers: int = 6, kernel_size: int = 3, first_kernel_size: int = 7,
                 head_channels: int = 64) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [GatedLayer(in_channels, channels, first_kernel_size, first=True)]
            + [GatedLayer(channels, channels, kernel_size, first=False)
               for _ in range(layers - 1)])
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, head_channels, 1), nn.ReLU(),
                                  nn.Conv2d(head_channels, out_channels, 1))

    def features(self, image: Tensor) -> Tensor:
        """The horizontal stack's output, ``(n, channels, H, W)`` (the head is per pixel)."""
        vertical = horizontal = image
        for layer in self.layers:
            vertical, horizontal = layer(vertical, horizontal)
        return horizontal

    def forward(self, image: Tensor) -> Tensor:
        """``(n, in_channels, H, W)`` -> ``(n, out_channels, H, W)``."""
        return self.head(self.features(image))
