"""Networks only (no probability): MLPs and convolutional encoders/decoders."""

from probgen.nn.conv import ConvDecoder, ConvEncoder
from probgen.nn.mlp import MLP, activation

__all__ = ["MLP", "ConvDecoder", "ConvEncoder", "activation"]
