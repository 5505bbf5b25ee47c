"""The base of the families that model ``(features,)`` vectors through a per-feature
standardization (diffusion, flow matching)."""

from __future__ import annotations

from collections.abc import Sequence

from probgen.core.model import GenerativeModel
from probgen.core.standardize import standardization_buffers

__all__ = ["StandardizedVectorModel"]


class StandardizedVectorModel(GenerativeModel):
    """A density over ``(features,)`` vectors of continuous or dequantized data, with ``shift`` and
    ``scale`` buffers and ``features`` and ``dequantized`` in its config."""

    data_size_argument = "features"  # filled from the data by from_data and the CLI

    def _register_standardization(self, features: int, shift: float | Sequence[float],
                                  scale: float | Sequence[float]) -> None:
        """Register ``shift`` and ``scale`` as ``(features,)`` buffers; refuses scale <= 0."""
        shift_t, scale_t = standardization_buffers(features, shift, scale)
        self.register_buffer("shift", shift_t)
        self.register_buffer("scale", scale_t)

    @property
    def data_space(self) -> str:
        """``"dequantized"`` for dequantized integers, else ``"continuous"``."""
        return "dequantized" if self.config["dequantized"] else "continuous"

    def event_shape(self) -> tuple[int, ...]:
        return (self.config["features"],)
