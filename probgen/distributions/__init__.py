"""Pyro-compatible distributions that probgen adds."""

from probgen.distributions.discretized import DiscretizedLogistic, DiscretizedNormal

__all__ = ["DiscretizedLogistic", "DiscretizedNormal"]
