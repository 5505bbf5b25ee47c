"""Exact-likelihood autoregressive models: MADE (masked MLP) and a gated PixelCNN."""

from probgen.models.autoregressive.gated import GatedLayer, GatedPixelCNN
from probgen.models.autoregressive.made import (
    MADE,
    OrderingMixture,
    ensemble_log_likelihood,
    ordering_log_likelihood,
)
from probgen.models.autoregressive.masked import MaskedMLP, made_degrees
from probgen.models.autoregressive.pixelcnn import PixelCNN

__all__ = ["MADE", "PixelCNN", "OrderingMixture", "MaskedMLP", "GatedPixelCNN", "GatedLayer",
           "made_degrees", "ensemble_log_likelihood", "ordering_log_likelihood"]
