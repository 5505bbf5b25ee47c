"""Observation models p(x | decoder output) shared by the VAE family."""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch

from probgen.distributions.discretized import DiscretizedLogistic

__all__ = ["LIKELIHOODS", "MIN_LOG_SCALE", "check_bins", "observation_distribution"]

LIKELIHOODS = ("bernoulli", "gaussian", "discretized_logistic")
DATA_SPACE = {"bernoulli": "discrete", "gaussian": "continuous", "discretized_logistic": "discrete"}
SUPPORT = {"bernoulli": "binary", "gaussian": "real", "discretized_logistic": "count"}
PARAMS_PER_DIM = {"bernoulli": 1, "gaussian": 1, "discretized_logistic": 2}  # network outputs
MIN_LOG_SCALE = -7.0  # discretized logistic: a floor on log s, as in PixelCNN++


def observation_distribution(out: torch.Tensor, batch_shape: torch.Size, data_shape: Sequence[int],
                             likelihood: str, *, observation_scale: float | None = None,
                             log_observation_scale: torch.Tensor | None = None,
                             num_bins: int = 256) -> dist.Distribution:
    r"""p(x | out) with batch shape ``batch_shape`` and event shape ``data_shape``.

    Bernoulli(logits=out); Normal(out, σ) with σ fixed or exp(log σ) learned per dimension;
    discretized logistic with (loc, log s) = out split in two (Salimans et al., 2017).
    """
    event_dims = len(data_shape)
    if likelihood == "bernoulli":
        logits = out.reshape(*batch_shape, *data_shape)
        return dist.Bernoulli(logits=logits, validate_args=False).to_event(event_dims)
    if likelihood == "gaussian":
        loc = out.reshape(*batch_shape, *data_shape)
        if observation_scale is None:
            scale = log_observation_scale.exp().expand_as(loc)
        else:
            scale = torch.full_like(loc, float(observation_scale))
        return dist.Normal(loc, scale, validate_args=False).to_event(event_dims)
    params = out.reshape(*batch_shape, 2, -1)  # (*batch, 2, prod(data_shape))
    loc = params[..., 0, :].reshape(*batch_shape, *data_shape)
    log_scale = params[..., 1, :].reshape(*batch_shape, *data_shape).clamp(min=MIN_LOG_SCALE)
    return DiscretizedLogistic(loc, log_scale.exp(), num_bins,
                               validate_args=False).to_event(event_dims)


def check_bins(x: torch.Tensor, likelihood: str, num_bins: int, name: str = "data") -> torch.Tensor:
    """Refuse pixel values beyond the discretized likelihood's ``num_bins`` bins; returns x."""
    if likelihood == "discretized_logistic" and (x > num_bins - 1).any():
        raise ValueError(f"{name} has values up to {float(x.max()):g} but the discretized "
                         f"likelihood has {num_bins} bins (0..{num_bins - 1}); pass integer "
                         "pixel values (not rescaled to [0, 1])")
    return x
