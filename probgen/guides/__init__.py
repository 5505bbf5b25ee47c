"""Guides for any model: flow autoguides, amortized flow posteriors and dequantizers q(u | x)."""

from probgen.guides.amortized import AmortizedFlowPosterior
from probgen.guides.dequantizer import UniformDequantizer, VariationalDequantizer
from probgen.guides.flow_guide import FlowGuide

__all__ = ["AmortizedFlowPosterior", "FlowGuide", "UniformDequantizer", "VariationalDequantizer"]
