"""Convolutional encoders and decoders for small images; they keep any leading batch shape."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from probgen.nn.mlp import activation as _activation

__all__ = ["ConvEncoder", "ConvDecoder"]


def _check_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) <= 0:
        raise ValueError(f"image_shape must be (channels, height, width), got {shape}")
    if shape[1] % 4 or shape[2] % 4:
        raise ValueError(f"height and width must be multiples of 4 (two stride-2 stages), "
                         f"got {shape[1:]}; pad the images (e.g. 28x28 works, 30x30 does not)")
    return shape  # type: ignore[return-value]


class ConvEncoder(nn.Module):
    r"""Images ``(*batch, C, H, W)`` -> features ``(*batch, out_features)``.

    Two stride-2 convolution stages (H, W -> H/4, W/4) followed by a linear layer.

    Example:
        >>> net = ConvEncoder((1, 28, 28), 10)
        >>> net(torch.randn(2, 3, 1, 28, 28)).shape
        torch.Size([2, 3, 10])
    """

    def __init__(self, image_shape: Sequence[int], out_features: int, channels: int = 32,
                 activation: str = "relu") -> None:
        super().__init__()
        self.image_shape = _check_image_shape(image_shape)
        c, h, w = self.image_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, channels, 4, stride=2, padding=1), _activation(activation),
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1), _activation(activation),
            nn.Flatten(),
        )
        self.linear = nn.Linear(2 * channels * (h // 4) * (w // 4), int(out_features))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch_shape = images.shape[:-3]
        if tuple(images.shape[-3:]) != self.image_shape:
            raise ValueError(f"expected images of shape (..., {self.image_shape}), got "
                             f"{tuple(images.shape)}")
        flat = images.reshape(-1, *self.image_shape)  # (prod(batch), C, H, W)
        return self.linear(self.features(flat)).reshape(*batch_shape, -1)


class ConvDecoder(nn.Module):
    r"""Features ``(*batch, in_features)`` -> images ``(*batch, out_channels, H, W)``.

    A linear layer to ``(2·channels, H/4, W/4)`` and two stride-2 transposed convolutions.

    Example:
        >>> net = ConvDecoder(10, (1, 28, 28), out_channels=2)
        >>> net(torch.randn(4, 10)).shape
        torch.Size([4, 2, 28, 28])
    """

    def __init__(self, in_features: int, image_shape: Sequence[int], out_channels: int | None = None,
                 channels: int = 32, activation: str = "relu") -> None:
        super().__init__()
        self.image_shape = _check_image_shape(image_shape)
        c, h, w = self.image_shape
        self.out_channels = int(out_channels or c)
        self.hidden_shape = (2 * channels, h // 4, w // 4)
        self.linear = nn.Sequential(nn.Linear(int(in_features), 2 * channels * (h // 4) * (w // 4)),
                                    _activation(activation))
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1), _activation(activation),
            nn.ConvTranspose2d(channels, self.out_channels, 4, stride=2, padding=1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch_shape = features.shape[:-1]
        hidden = self.linear(features.reshape(-1, features.shape[-1]))
        images = self.deconv(hidden.reshape(-1, *self.hidden_shape))  # (prod(batch), C', H, W)
        return images.reshape(*batch_shape, *images.shape[-3:])
