r"""Exact HMM inference on batched sequences: forward, forward-backward, Viterbi.

Inputs are log_initial (S,), log_transition (S, S) and log_emission (B, T, S), with an optional
mask (B, T) for ragged sequences; every kernel is vectorized over the batch and the states.
Without autograd on a CPU the scaled passes run state-major, on ``(S, T, B)`` emissions
(:mod:`probgen.models.hmm.state_major`); :func:`state_major_forward` and
:func:`state_major_forward_backward` add the log-space redo of sequences that underflowed.
"""

from __future__ import annotations

import torch

from probgen.models.hmm.state_major import (
    EmissionBlocks,
    Workspace,
    as_blocks,
    scaled_forward,
    scaled_forward_backward,
    single_thread_if_small,
)

__all__ = ["forward_log_likelihood", "forward_backward", "viterbi", "single_thread_if_small",
           "state_major_forward", "state_major_forward_backward"]


# --- kernels on (log_initial (S,), log_transition (S, S), log_emission (B, T, S)) ---------------
def _masked(log_emission: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A masked step is an unobserved step: its emission factor is 1 (log 0)."""
    if mask is None or bool(mask.all()):
        return log_emission
    return log_emission.masked_fill(~mask[..., None], 0.0)  # (B, T, S)


def _small_step_threads(tensor: torch.Tensor):
    """For a time loop over ``tensor`` (B, ..., S): one thread when B·S² is small."""
    return single_thread_if_small(tensor.shape[0] * tensor.shape[-1] ** 2, tensor.device, 2**18)


def _forward_scaled(log_initial, log_transition, log_emission):
    """Sequential forward pass with per-step normalization (Rabiner, 1989): fast, matmul based."""
    shift = log_emission.detach().amax(-1, keepdim=True).clamp(min=torch.finfo(log_emission.dtype).min)
    emission = (log_emission - shift).exp()  # (B, T, S), max 1 per step
    transition = log_transition.exp()
    alpha = log_initial.exp() * emission[:, 0]  # (B, S)
    norms = [alpha.sum(-1, keepdim=True)]
    alpha = alpha / norms[0]
    with _small_step_threads(emission):
        for t in range(1, emission.shape[1]):
            alpha = (alpha @ transition) * emission[:, t]
            norms.append(alpha.sum(-1, keepdim=True))
            alpha = alpha / norms[-1]
    return torch.cat(norms, -1).log().sum(-1) + shift.sum((-2, -1))  # (B,)


def _forward_log(log_initial, log_transition, log_emission):
    """Sequential forward pass in log space: slower, never underflows."""
    log_alpha = log_initial + log_emission[:, 0]  # (B, S)
    with _small_step_threads(log_emission):
        for t in range(1, log_emission.shape[1]):
            log_alpha = torch.logsumexp(log_alpha[:, :, None] + log_transition, 1) + log_emission[:, t]
    return torch.logsumexp(log_alpha, dim=-1)


def _logmatmulexp(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log(exp(x) @ exp(y)) with per-row/column shifts (as pyro.distributions.hmm)."""
    finfo = torch.finfo(x.dtype)
    x_shift = x.detach().amax(-1, keepdim=True).clamp(min=finfo.min)
    y_shift = y.detach().amax(-2, keepdim=True).clamp(min=finfo.min)
    return torch.log(torch.matmul((x - x_shift).exp(), (y - y_shift).exp())) + x_shift + y_shift


def _forward_parallel(log_initial, log_transition, log_emission):
    """Forward pass as a tree of log-matrix products: O(log T) depth (parallel scan form)."""
    start = log_initial + log_emission[:, 0]  # (B, S)
    if log_emission.shape[1] == 1:
        return torch.logsumexp(start, -1)
    matrices = log_transition + log_emission[:, 1:, None, :]  # (B, T-1, S_from, S_to)
    while matrices.shape[1] > 1:
        pairs = matrices.shape[1] // 2
        product = _logmatmulexp(matrices[:, 0:2 * pairs:2], matrices[:, 1:2 * pairs:2])
        matrices = torch.cat([product, matrices[:, 2 * pairs:]], dim=1)
    return torch.logsumexp(start[:, :, None] + matrices[:, 0], dim=(-2, -1))


def state_major_forward(
    log_initial: torch.Tensor,
    log_transition: torch.Tensor,
    state_log_emission: torch.Tensor | EmissionBlocks,
    mask: torch.Tensor | None = None,
    *,
    time: int | None = None,
) -> torch.Tensor:
    r"""log p(x_{1:T}) per sequence from state-major emissions: the scaled forward pass
    (:func:`~probgen.models.hmm.state_major.scaled_forward`), no autograd.

    Arguments:
        state_log_emission: ``(S, T, B)`` log p(x_t | z_t = s), states first, or emission
            blocks ``(start, stop) -> (S, stop - start, B)`` with ``time`` (never all held).
        mask: ``(B, T)`` bool, False at unobserved (padded) steps.

    Returns:
        ``(B,)`` log-likelihoods; a sequence whose scaled pass underflowed is redone in log space.
    """
    with torch.no_grad():
        result, bad = scaled_forward(log_initial, log_transition, state_log_emission, mask,
                                     time=time)
        if bad.any():
            log_emission = _masked(_whole(state_log_emission, time).permute(2, 1, 0), mask)
            redo = _forward_log(log_initial, log_transition, log_emission[bad])
            result = result.masked_scatter(bad, redo)
        return result


def state_major_forward_backward(
    log_initial: torch.Tensor,
    log_transition: torch.Tensor,
    state_log_emission: torch.Tensor | EmissionBlocks,
    mask: torch.Tensor | None = None,
    *,
    time: int | None = None,
    workspace: Workspace | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Posterior marginals γ_t(s) = p(z_t = s | x) and expected transition counts Σ_t ξ_t from
    state-major emissions (as :func:`state_major_forward`), no autograd.

    Returns:
        ``log_likelihood`` (B,), ``posteriors`` (S, T, B) (zero at masked steps; a buffer of
        ``workspace`` when given) and ``transition_counts`` (S, S): Σ_{b, t observed}
        p(z_{t-1} = i, z_t = j | x_b). Sequences whose scaled pass underflowed are redone in
        log space.
    """
    with torch.no_grad():
        log_likelihood, posteriors, counts, bad = scaled_forward_backward(
            log_initial, log_transition, state_log_emission, mask, time=time, workspace=workspace)
        if bad.any():
            log_emission = _masked(_whole(state_log_emission, time).permute(2, 1, 0), mask)
            redo = _forward_backward_log(log_initial, log_transition, log_emission[bad],
                                         None if mask is None else mask[bad])
            log_likelihood = log_likelihood.masked_scatter(bad, redo[0])
            posteriors[..., bad] = redo[1].permute(2, 1, 0)
            counts = counts + redo[2]
        return log_likelihood, posteriors, counts


def _whole(state_log_emission: torch.Tensor | EmissionBlocks, time: int | None) -> torch.Tensor:
    """All ``(S, T, B)`` log-emissions (the log-space redo reads them whole)."""
    blocks, time = as_blocks(state_log_emission, time)
    return blocks(0, time)


def forward_log_likelihood(
    log_initial: torch.Tensor,
    log_transition: torch.Tensor,
    log_emission: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    parallel: bool | None = None,
) -> torch.Tensor:
    r"""log p(x_{1:T}) = log Σ_z π_{z_1} Π_t A_{z_{t-1} z_t} Π_t p(x_t | z_t) (Rabiner, 1989).

    Arguments:
        log_initial: ``(S,)`` log initial state probabilities.
        log_transition: ``(S, S)`` log transition probabilities, rows "from", columns "to".
        log_emission: ``(B, T, S)`` log p(x_t | z_t = s).
        mask: ``(B, T)`` bool, False at unobserved (padded) steps, whose emission is dropped.
        parallel: use the parallel-scan form (default: when the tensors are on a GPU).

    Returns:
        ``(B,)`` per-sequence log-likelihoods. The sequential form rescales as it goes and
        redoes in log space any sequence whose scaled pass underflowed; without autograd it is
        :func:`state_major_forward`.
    """
    if parallel is None:
        parallel = log_emission.is_cuda
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (log_initial, log_transition, log_emission))
    if not parallel and not needs_grad:
        return state_major_forward(log_initial, log_transition, log_emission.permute(2, 1, 0),
                                   mask)
    log_emission = _masked(log_emission, mask)
    if parallel:
        return _forward_parallel(log_initial, log_transition, log_emission)
    result = _forward_scaled(log_initial, log_transition, log_emission)
    bad = ~torch.isfinite(result)
    if bad.any():
        redo = _forward_log(log_initial, log_transition, log_emission[bad])
        result = result.masked_scatter(bad, redo)
    return result


def forward_backward(
    log_initial: torch.Tensor,
    log_transition: torch.Tensor,
    log_emission: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Posterior marginals γ_t(s) = p(z_t = s | x) and expected transition counts Σ_t ξ_t.

    Returns:
        ``log_likelihood`` (B,), ``posteriors`` (B, T, S) (zero at masked steps) and
        ``transition_counts`` (S, S): Σ_{b, t observed} p(z_{t-1} = i, z_t = j | x_b).
        :func:`state_major_forward_backward` on the transposed emissions.
    """
    log_likelihood, posteriors, counts = state_major_forward_backward(
        log_initial, log_transition, log_emission.detach().permute(2, 1, 0), mask)
    return log_likelihood, posteriors.permute(2, 1, 0).contiguous(), counts


def _forward_backward_log(log_initial, log_transition, log_emission, mask):
    """Log-space forward-backward, the fallback when the scaled pass underflows."""
    time = log_emission.shape[1]
    log_alphas = [log_initial + log_emission[:, 0]]
    for t in range(1, time):
        log_alphas.append(torch.logsumexp(log_alphas[-1][:, :, None] + log_transition, 1)
                          + log_emission[:, t])
    log_betas = [torch.zeros_like(log_alphas[0])]
    for t in range(time - 1, 0, -1):
        log_betas.insert(0, torch.logsumexp(log_transition + (log_emission[:, t] + log_betas[0])[:, None],
                                            -1))
    log_alpha, log_beta = torch.stack(log_alphas, 1), torch.stack(log_betas, 1)  # (B, T, S)
    log_likelihood = torch.logsumexp(log_alpha[:, -1], -1)
    posteriors = (log_alpha + log_beta - log_likelihood[:, None, None]).exp()
    xi = (log_alpha[:, :-1, :, None] + log_transition + (log_emission + log_beta)[:, 1:, None, :]
          - log_likelihood[:, None, None, None]).exp()  # (B, T-1, S, S)
    if mask is not None:
        posteriors = posteriors * mask[..., None]
        xi = xi * mask[:, 1:, None, None]
    return log_likelihood, posteriors, xi.nan_to_num(0.0).sum((0, 1))


def viterbi(
    log_initial: torch.Tensor,
    log_transition: torch.Tensor,
    log_emission: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Most probable state paths argmax_z p(z, x) by max-product dynamic programming (Viterbi).

    Returns ``paths`` (B, T) long (-1 at masked steps) and their ``log_joint`` log p(z*, x) (B,).
    The mask must be a prefix mask (padding at the end): a sequence stops at its length.
    """
    batch, time, num_states = log_emission.shape
    delta = log_initial + log_emission[:, 0]  # (B, S)
    stay = torch.arange(num_states, device=log_emission.device).expand(batch, num_states)
    backpointers = []
    for t in range(1, time):  # elementwise max-plus: no BLAS threads involved
        best, argbest = (delta[:, :, None] + log_transition).max(1)  # (B, S_to)
        if mask is None:
            delta = best + log_emission[:, t]
        else:
            keep = mask[:, t, None]
            delta = torch.where(keep, best + log_emission[:, t], delta)
            argbest = torch.where(keep, argbest, stay)
        backpointers.append(argbest)
    log_joint, state = delta.max(-1)
    path = [state]
    for argbest in reversed(backpointers):
        state = argbest.gather(1, state[:, None]).squeeze(1)
        path.append(state)
    paths = torch.stack(path[::-1], 1)  # (B, T)
    if mask is not None:
        paths = paths.masked_fill(~mask, -1)
    return paths, log_joint
