r"""Scaled forward and forward-backward passes on state-major emissions (Rabiner, 1989), no autograd.

Emissions are laid out ``(S, T, B)``: states, then time, then the batch. A time step is then one
contiguous (S, B) block, so a step of the recursion is two tensor operations
(α_t = diag(e_t) Aᵀ α_{t-1}, written in place); a reduction over states runs across the batch;
and the expected counts are single matrix products over every step of every sequence. The
vectorized emission work (shift, exponential) runs in blocks of ``BLOCK_STEPS`` time steps
that stay in cache, and may be computed block by block (:data:`EmissionBlocks`) so that a
forward pass never holds the whole ``(S, T, B)`` emission tensor.

A sequence whose scaled pass lost precision is reported in ``underflowed``; the callers in
:mod:`probgen.models.hmm.forward_backward` redo it in log space.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

__all__ = ["BLOCK_STEPS", "EmissionBlocks", "Workspace", "scaled_forward",
           "scaled_forward_backward", "single_thread_if_small"]

BLOCK_STEPS = 64  # time steps per block: (S, 64, B) emissions stay in L2 for the vectorized work

EmissionBlocks = Callable[[int, int], torch.Tensor]
"""``(start, stop) -> (S, stop - start, B)`` log p(x_t | z_t = s) for time steps start..stop-1."""


@contextlib.contextmanager
def single_thread_if_small(size: int, device: torch.device, limit: int = 2**22) -> Iterator[None]:
    """One CPU thread for work on at most ``limit`` elements (a no-op on GPUs).

    The per-step products of an HMM are tiny: intra-op threads there only add synchronization
    (20x slower on a loaded 2-core machine). Restores the thread count afterwards.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1 or size > limit:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def scaling_schedule(dtype: torch.dtype) -> tuple[int, float]:
    """Normalize every k steps; a scale below the threshold means precision may be lost."""
    finfo = torch.finfo(dtype)
    return (8 if finfo.bits >= 64 else 2), finfo.tiny / finfo.eps


class Workspace:
    """Buffers kept between passes over batches of one shape (Baum-Welch reuses them every
    iteration): fresh multi-megabyte tensors on every pass cost a page fault per 4 KiB."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}
        self._steps: dict[str, tuple[torch.Tensor, ...]] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialized ``shape`` tensor with ``like``'s dtype and device, reused by name."""
        buffer = self._buffers.get(name)
        if (buffer is None or buffer.shape != shape or buffer.dtype != like.dtype
                or buffer.device != like.device):
            buffer = self._buffers[name] = like.new_empty(shape)
            self._steps.pop(name, None)
        return buffer

    def steps(self, name: str, shape: tuple[int, int, int],
              like: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """:meth:`get` of a ``(S, T, B)`` buffer and its T ``(S, B)`` step views (making 500
        views costs as much as a vectorized pass, so they are kept too)."""
        buffer = self.get(name, shape, like)
        if name not in self._steps:
            self._steps[name] = buffer.unbind(1)
        return buffer, self._steps[name]


def as_blocks(state_log_emission: torch.Tensor | EmissionBlocks,
              time: int | None) -> tuple[EmissionBlocks, int]:
    """Emission blocks and the number of time steps, from a ``(S, T, B)`` tensor or blocks."""
    if isinstance(state_log_emission, torch.Tensor):
        tensor = state_log_emission
        return (lambda start, stop: tensor[:, start:stop]), tensor.shape[1]
    if time is None:
        raise TypeError("emission blocks need time= (the number of time steps)")
    return state_log_emission, time


def _observed_by_time(mask: torch.Tensor | None) -> torch.Tensor | None:
    """``(T, B)`` mask when some step is padded, else None (nothing to mask)."""
    return None if mask is None or bool(mask.all()) else mask.T


def _emission_block(log_block: torch.Tensor, observed: torch.Tensor | None, emission: torch.Tensor,
                    shift: torch.Tensor) -> None:
    """exp(log p(x_t | s) - max_s log p(x_t | s)) of one block into ``emission`` (S, n, B) and
    the shifts into ``shift`` (n, B); an unobserved step emits 1 (log 0) in every state."""
    if observed is not None:
        log_block = log_block.masked_fill(~observed, 0.0)
    torch.amax(log_block, 0, out=shift)
    shift.clamp_(min=torch.finfo(shift.dtype).min)  # all -inf: the step is impossible
    torch.sub(log_block, shift, out=emission).exp_()  # max 1 per step


def _underflowed(scales: torch.Tensor) -> torch.Tensor:
    """``(B,)`` True where a scaled pass (one row of scales per normalizing step) lost
    precision."""
    _, threshold = scaling_schedule(scales.dtype)
    return ~(scales.amin(0) >= threshold)  # also catches NaN


def _step_threads(batch: int, num_states: int, device: torch.device):
    """For a time loop over (S, B) steps: one thread when B·S² is small."""
    return single_thread_if_small(batch * num_states**2, device, 2**18)


def scaled_forward(
    log_initial: torch.Tensor,
    log_transition: torch.Tensor,
    state_log_emission: torch.Tensor | EmissionBlocks,
    mask: torch.Tensor | None = None,
    *,
    time: int | None = None,
    workspace: Workspace | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""log p(x_{1:T}) by the scaled forward recursion, holding one block of emissions at a time.

    Arguments:
        state_log_emission: ``(S, T, B)`` log p(x_t | z_t = s), or :data:`EmissionBlocks`
            (then ``time`` is required).
        mask: ``(B, T)`` bool, False at unobserved (padded) steps.

    Returns:
        ``log_likelihood`` (B,) and ``underflowed`` (B,) bool: where the scaled pass lost
        precision, the value is not to be trusted.
    """
    blocks, time = as_blocks(state_log_emission, time)
    workspace = workspace or Workspace()
    first = blocks(0, min(BLOCK_STEPS, time))
    num_states, _, batch = first.shape
    every, _ = scaling_schedule(first.dtype)
    observed = _observed_by_time(mask)
    transition_t = log_transition.exp().T.contiguous()
    initial = log_initial.exp()[:, None]
    # Only the normalizing steps t = 0, every, 2 every, ..., time - 1 have a scale: row ⌈t / every⌉
    scales = workspace.get("scales", (-(-(time - 1) // every) + 1, batch), first).fill_(1.0)
    scale_rows = scales.unbind(0)
    shift_total = first.new_zeros(batch)
    block = workspace.get("block", (num_states, min(BLOCK_STEPS, time), batch), first)
    shift = workspace.get("shift", (min(BLOCK_STEPS, time), batch), first)
    alpha = workspace.get("alpha", (num_states, batch), first)
    spare = workspace.get("spare", (num_states, batch), first)
    with _step_threads(batch, num_states, first.device):
        for start in range(0, time, BLOCK_STEPS):
            stop = min(time, start + BLOCK_STEPS)
            emission = block[:, :stop - start]
            _emission_block(first if start == 0 else blocks(start, stop),
                            None if observed is None else observed[start:stop], emission,
                            shift[:stop - start])
            shift_total += shift[:stop - start].sum(0)
            for t, step in enumerate(emission.unbind(1), start):
                if t == 0:
                    torch.mul(initial, step, out=alpha)
                else:
                    torch.mm(transition_t, alpha, out=spare).mul_(step)
                    alpha, spare = spare, alpha
                if t % every == 0 or t == time - 1:
                    alpha.div_(torch.sum(alpha, 0, out=scale_rows[-(-t // every)]))
    return scales.log().sum(0) + shift_total, _underflowed(scales)


def scaled_forward_backward(
    log_initial: torch.Tensor,
    log_transition: torch.Tensor,
    state_log_emission: torch.Tensor | EmissionBlocks,
    mask: torch.Tensor | None = None,
    *,
    time: int | None = None,
    workspace: Workspace | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Posterior marginals γ_t(s) = p(z_t = s | x) and expected transition counts Σ_t ξ_t.

    The backward pass keeps β_t and the weights w_t = e_t β_t / c_t (β_{t-1} = A w_t, c_t the
    forward scales), so that γ_t = α_t ⊙ β_t and ξ_t(i, j) = α_{t-1}(i) A_ij w_t(j).

    Returns:
        ``log_likelihood`` (B,), ``posteriors`` (S, T, B) (zero at masked steps; a buffer of
        ``workspace`` when one is given, so valid until its next pass), ``transition_counts``
        (S, S) over observed steps, and ``underflowed`` (B,): those sequences lost precision and
        are left out of the posteriors (zero) and the counts.
    """
    blocks, time = as_blocks(state_log_emission, time)
    workspace = workspace or Workspace()
    first = blocks(0, min(BLOCK_STEPS, time))
    num_states, _, batch = first.shape
    every, _ = scaling_schedule(first.dtype)
    observed = _observed_by_time(mask)
    transition = log_transition.exp()
    transition_t = transition.T.contiguous()
    initial = log_initial.exp()[:, None]
    shape = (num_states, time, batch)
    emission, emission_steps = workspace.steps("emission", shape, first)
    alphas, alpha_steps = workspace.steps("alphas", shape, first)
    betas, beta_steps = workspace.steps("betas", shape, first)
    weights, weight_steps = workspace.steps("weights", shape, first)
    scales = workspace.get("scales", (-(-(time - 1) // every) + 1, batch), first).fill_(1.0)
    shift = workspace.get("shift", (min(BLOCK_STEPS, time), batch), first)
    shift_total = first.new_zeros(batch)
    scale_rows = scales.unbind(0)
    with _step_threads(batch, num_states, first.device):
        for start in range(0, time, BLOCK_STEPS):
            stop = min(time, start + BLOCK_STEPS)
            _emission_block(first if start == 0 else blocks(start, stop),
                            None if observed is None else observed[start:stop],
                            emission[:, start:stop], shift[:stop - start])
            shift_total += shift[:stop - start].sum(0)
            for t in range(start, stop):
                if t == 0:
                    alpha = torch.mul(initial, emission_steps[0], out=alpha_steps[0])
                else:
                    alpha = torch.mm(transition_t, alpha, out=alpha_steps[t]).mul_(emission_steps[t])
                if t % every == 0 or t == time - 1:
                    alpha.div_(torch.sum(alpha, 0, out=scale_rows[-(-t // every)]))
        beta_steps[-1].fill_(1.0)
        torch.div(emission_steps[-1], scale_rows[-1], out=weight_steps[-1])
        for t in range(time - 1, 0, -1):
            beta = torch.mm(transition, weight_steps[t], out=beta_steps[t - 1])
            weight = torch.mul(beta, emission_steps[t - 1], out=weight_steps[t - 1])
            if (t - 1) % every == 0:
                weight.div_(scale_rows[(t - 1) // every])
    log_likelihood = scales.log().sum(0) + shift_total
    underflowed = _underflowed(scales)
    if observed is not None:  # a transition into an unobserved step is not counted
        weights[:, 1:].mul_(observed[1:])
    if underflowed.any():  # scales of 0 or NaN: keep those sequences out, as zeros
        for buffer in (alphas, betas, weights):
            buffer[..., underflowed] = 0.0
    counts = alphas[:, :-1].reshape(num_states, -1) @ weights[:, 1:].reshape(num_states, -1).T
    posteriors = alphas.mul_(betas)  # γ_t = α_t β_t, in place
    if observed is not None:
        posteriors.mul_(observed)
    return log_likelihood, posteriors, counts * transition, underflowed
