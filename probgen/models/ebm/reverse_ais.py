r"""RAISE, the reverse annealed importance sampling estimator (Burda, Grosse & Salakhutdinov, 2015).

AIS estimates log Z and so gives a test log-likelihood that is biased *high* when its schedule is
short. RAISE runs the same annealing path backwards, from each test example to the base-rate
model, and gives a stochastic lower bound on the log-likelihood of the *annealed model* p_ann
(below), not of the RBM: its result is labelled ``"estimate"`` of log p(x).

The annealed model. Forward AIS with transitions T_1..T_K (T_k: a block-Gibbs sweep
h ~ p_{β_k}(h | v), v' ~ p_{β_k}(v | h), reversible with respect to f_{β_k}(v)) is itself a
normalised generative model: v_0 ~ p_A, v_k ~ T_k(· | v_{k-1}), output v_K. Its marginal
p_ann(v_K) approaches p(v) as the schedule grows. For a test example v = v_K, the reverse chain
v_{k-1} ~ T_k(· | v_k) (T_k is its own reversal) is an importance proposal for the forward
path, with weight

    w = p_fwd(v_0..v_K) / q_rev(v_0..v_{K-1} | v_K)
      = p_A(v_0) Π_{k=1..K} f_k(v_k) / f_k(v_{k-1})
      = exp(-F(v)) / Z_A · Π_{j=0..K-1} f_j(v_j) / f_{j+1}(v_j),

so E[w] = p_ann(v) and E[log mean_m w_m] ≤ log p_ann(v) (Jensen). Term by term:

    log w  =  -F(v)                                       log f_K(v_K): the RBM at β_K = 1
            + Σ_{j=0}^{K-1} [log f_j(v_j) - log f_{j+1}(v_j)]   v_j ~ T_{j+1}(· | v_{j+1})
            - log Z_A                                     turns f_0(v_0) into the base p_A(v_0)

RAISE bounds the log-likelihood of p_ann, not of p itself: averaged over data drawn from the
model, E[log p_ann(v)] ≤ E[log p(v)] (Gibbs' inequality), and the paper finds it conservative
on real data, but on data unlike the model log p_ann(v) can exceed log p(v) on most examples
and on their mean: a 12×8 RBM with 3·N(0, 1) weights and centred biases, scored on 300 uniform
random vectors with 5 temperatures, gets a mean 1.97 nats above the exact one (273 of 300
examples above); the excess shrinks as the schedule grows (0.14 nats at 100 temperatures, 0.01
at 1,000). So it is no bracket for AIS: their gap measures how far the two disagree, not a
bound on either one's error.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from probgen.core.result import LogLikelihood, data_fingerprint
from probgen.models.ebm.ais import _seeded, beta_schedule, check_chains, weight_diagnostics
from probgen.models.ebm.model import RBMBase

__all__ = ["raise_log_weights", "evaluate_raise"]

_MEMORY_BUDGET = 2**22  # chains × examples × visible units held at once


def raise_log_weights(rbm: RBMBase, x: torch.Tensor, *, num_chains: int = 100,
                      num_betas: int = 1000, base_bias: torch.Tensor | None = None,
                      batch_size: int | None = None, seed: int | None = None) -> torch.Tensor:
    r"""RAISE log weights log w, shape ``(n, num_chains)``: ``num_chains`` reverse chains per example.

    log mean_m w_m is a stochastic lower bound on log p_ann(x_i) (see the module docstring).
    Chains run in parallel over examples × chains; the loop is over the β schedule only.
    ``batch_size`` examples are processed at a time (default: ~4M chain-units per chunk).
    """
    # every example's chains are held at once within a chunk: at least one example's
    num_chains = check_chains(num_chains, rbm.num_visible + rbm.num_hidden,
                              rbm.weight.element_size())
    weight = rbm.weight
    base_bias = (rbm.base_bias if base_bias is None else base_bias).detach().to(weight)
    betas = beta_schedule(num_betas, dtype=weight.dtype, device=weight.device)
    n = x.shape[0]
    if batch_size is None:
        batch_size = max(1, _MEMORY_BUDGET // (num_chains * rbm.num_visible))
    chunks = []
    with torch.no_grad(), _seeded(seed, weight.device):
        log_z_base = rbm.base_log_partition(base_bias)
        for start in range(0, n, batch_size):
            v = x[start:start + batch_size, None, :].expand(-1, num_chains, -1)  # (b, M, V)
            logits = rbm.hidden_logits(v)  # (b, M, H)
            # log f_K(v_K) = -F(v): the RBM's unnormalised log-probability of the test example
            log_w = (rbm.visible_log_factor(v, rbm.visible_bias) + F.softplus(logits).sum(-1))
            for k in range(len(betas) - 1, 0, -1):
                beta, beta_prev = betas[k], betas[k - 1]
                # v_{k-1} ~ T_k(· | v_k): Gibbs sweep at β_k (reversible w.r.t. f_{β_k})
                hidden = torch.bernoulli(torch.sigmoid(beta * logits))
                v = rbm.sample_visible(hidden, beta, base_bias)
                logits = rbm.hidden_logits(v)
                # + log f_{k-1}(v_{k-1}) - log f_k(v_{k-1})
                log_w += ((beta - beta_prev) * (rbm.visible_log_factor(v, base_bias)
                                                - rbm.visible_log_factor(v, rbm.visible_bias))
                          + (F.softplus(beta_prev * logits) - F.softplus(beta * logits)).sum(-1))
            chunks.append(log_w - log_z_base)  # - log Z_A: f_0 / Z_A is the base p_A(v_0)
    return torch.cat(chunks).to(torch.float64)


@RBMBase.estimator("raise", options=("num_chains", "num_betas", "batch_size", "seed"))
def evaluate_raise(model, batch: tuple[torch.Tensor, ...], *, num_chains: int = 100,
                   num_betas: int = 1000, batch_size: int | None = None,
                   seed: int | None = None) -> LogLikelihood:
    r"""Per-example RAISE value log (1/M) Σ_m w_m, an estimate of log p(x) (kind ``"estimate"``).

    In expectation over the chains it is at most log p_ann(x), the log-likelihood of the
    ``num_betas``-temperature annealed model (AIS's forward chain read as a generative model;
    Burda, Grosse & Salakhutdinov, 2015), which tends to log p(x) as ``num_betas`` grows. It is
    not a bound on log p(x): on data unlike the model it can exceed it (see the module
    docstring); averaged over data drawn from the model it is below it. ``settings`` name the
    model scored (``model_scored``) and the mean over examples of the per-example effective
    sample size (``ess``) and log-weight variance. Works for :class:`~probgen.models.ebm.RBM`
    and :class:`~probgen.models.ebm.GaussianRBM`.
    """
    if not batch:
        raise ValueError("evaluate_raise needs a batch with the data as its first tensor")
    if not isinstance(model, RBMBase):
        raise TypeError(f"evaluate_raise scores RBMs (RBM, GaussianRBM), not {type(model).__name__}")
    x = model.validate(batch[0])
    log_w = raise_log_weights(model, x, num_chains=num_chains, num_betas=num_betas,
                              batch_size=batch_size, seed=seed)
    per_example = torch.logsumexp(log_w, -1) - math.log(num_chains)
    ess, variance = weight_diagnostics(log_w)
    settings: dict[str, Any] = {"num_chains": num_chains, "num_betas": num_betas,
                                "model_scored": f"the {num_betas}-temperature annealed chain "
                                "from the base-rate model (a stochastic lower bound on its "
                                "log-likelihood, not on the RBM's)",
                                "ess": round(float(ess.mean()), 2),
                                "log_weight_variance": float(f"{float(variance.mean()):.4g}")}
    # Each example's chains are its own, so their noise is already in the spread over examples.
    return LogLikelihood(per_example, kind="estimate", estimator="raise",
                         num_dims=model.num_dims(x), data_space=model.data_space,
                         settings=settings, data_id=data_fingerprint(*batch))
