"""Guides for any model: flow autoguides and amortized flow posteriors."""

from probgen.guides.amortized import AmortizedFlowPosterior
from probgen.guides.flow_guide import FlowGuide

__all__ = ["AmortizedFlowPosterior", "FlowGuide"]
