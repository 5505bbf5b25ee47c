"""The HMM's state-major fast paths against straightforward references: the blocked scaled
forward and forward-backward against log-space recursions, HMM.log_prob without autograd against
the differentiable path, and Baum-Welch's whole likelihood trajectory against a plain log-space
EM written here, for every emission, on ragged batches longer than one block of time steps."""

import math

import numpy as np
import pytest
import torch

import probgen
from probgen.data.sequences import lengths_to_mask
from probgen.models.hmm import HMM
from probgen.models.hmm.forward_backward import (
    _forward_backward_log,
    state_major_forward,
    state_major_forward_backward,
)
from probgen.models.hmm.state_major import BLOCK_STEPS, Workspace

CONFIGS = {
    "categorical": dict(emission="categorical", num_categories=4),
    "bernoulli": dict(emission="bernoulli", num_features=5),
    "gaussian-diag": dict(emission="gaussian", num_features=2),
    "gaussian-full": dict(emission="gaussian", num_features=3, covariance="full"),
}
TIME = 2 * BLOCK_STEPS + 22  # three blocks, the last one partial


def make_hmm(name: str, num_states: int = 3, seed: int = 0) -> HMM:
    torch.manual_seed(seed)
    hmm = HMM(num_states, **CONFIGS[name]).double()
    with torch.no_grad():
        for parameter in hmm.parameters():
            parameter.add_(0.7 * torch.randn_like(parameter))
    return hmm


def ragged(hmm: HMM, lengths=(TIME, 70, 1, BLOCK_STEPS, TIME - 1, 9), padding=float("nan")):
    lengths = torch.tensor(lengths)
    sequences = hmm.sample(len(lengths), TIME)
    mask = lengths_to_mask(lengths, TIME)
    fill = -1 if hmm.emission == "categorical" else padding
    observed = mask if hmm.emission == "categorical" else mask[..., None]
    return sequences.masked_fill(~observed, fill), lengths, mask


def reference_log_emission(hmm: HMM, sequences: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, S) log p(x_t | s) from the distribution itself, padded steps set to log 1."""
    observed = mask if hmm.emission == "categorical" else mask[..., None]
    clean = sequences.masked_fill(~observed, 0)
    with torch.no_grad():
        log_emission = hmm.emission_distribution().log_prob(clean[:, :, None])
    return log_emission.masked_fill(~mask[..., None], 0.0)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_blocked_forward_backward_matches_log_space(name):
    hmm = make_hmm(name)
    sequences, lengths, mask = ragged(hmm)
    expected = _forward_backward_log(hmm.log_initial.detach(), hmm.log_transition.detach(),
                                     reference_log_emission(hmm, sequences, mask), mask)
    clean = hmm.fill_padding(sequences, mask)
    with torch.no_grad():
        blocks = hmm.state_emission_blocks(clean)
        forward = state_major_forward(hmm.log_initial, hmm.log_transition, blocks, mask, time=TIME)
        whole = blocks(0, TIME)  # the same emissions as one (S, T, B) tensor
        from_tensor = state_major_forward(hmm.log_initial, hmm.log_transition, whole, mask)
        log_likelihood, posteriors, counts = state_major_forward_backward(
            hmm.log_initial, hmm.log_transition, blocks, mask, time=TIME)
    torch.testing.assert_close(forward, expected[0], rtol=1e-12, atol=0)
    assert torch.equal(from_tensor, forward)
    torch.testing.assert_close(log_likelihood, expected[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(posteriors.permute(2, 1, 0), expected[1], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(counts, expected[2], rtol=1e-9, atol=1e-12)
    assert int(posteriors.sum().round()) == int(lengths.sum())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_log_prob_without_autograd_equals_the_differentiable_path(name):
    hmm = make_hmm(name, seed=1)
    sequences, lengths, _ = ragged(hmm)
    with torch.no_grad():
        fast = hmm.log_prob(sequences, lengths)  # state-major, blocked
    differentiable = hmm.log_prob(sequences, lengths)  # (B, T, S), autograd
    assert differentiable.requires_grad
    torch.testing.assert_close(fast, differentiable.detach(), rtol=1e-12, atol=0)
    posteriors = hmm.posterior(sequences, lengths)
    assert posteriors.shape == (len(lengths), TIME, 3)
    torch.testing.assert_close(posteriors.sum(-1), lengths_to_mask(lengths, TIME).double())


def test_one_underflowing_sequence_is_redone_in_log_space_the_others_stay_scaled():
    """Sequence 1 can only stay in a state that explains each step 800 nats worse: its scaled
    pass underflows, the others' do not; the result equals the log-space recursion for all."""
    log_initial = torch.tensor([0.0, -1000.0], dtype=torch.float64)
    log_transition = torch.tensor([[0.0, -1000.0], [-1000.0, 0.0]], dtype=torch.float64)
    log_emission = torch.randn(3, TIME, 2, dtype=torch.float64)
    log_emission[1] = torch.tensor([-800.0, 0.0], dtype=torch.float64)
    mask = lengths_to_mask(torch.tensor([TIME, TIME, 50]), TIME)
    masked = log_emission.masked_fill(~mask[..., None], 0.0)
    expected = _forward_backward_log(log_initial, log_transition, masked, mask)
    state_major = log_emission.permute(2, 1, 0)
    value = state_major_forward(log_initial, log_transition, state_major, mask)
    log_likelihood, posteriors, counts = state_major_forward_backward(
        log_initial, log_transition, state_major, mask)
    assert math.isfinite(float(value[1]))
    torch.testing.assert_close(value, expected[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(log_likelihood, expected[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(posteriors.permute(2, 1, 0), expected[1], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(counts, expected[2], rtol=1e-9, atol=1e-9)


def test_a_reused_workspace_gives_the_values_of_a_fresh_one():
    hmm = make_hmm("gaussian-diag")
    workspace = Workspace()
    for seed in range(3):  # a new batch each time, same shapes: the buffers are reused
        torch.manual_seed(seed)
        sequences, _, mask = ragged(hmm)
        blocks = hmm.state_emission_blocks(hmm.fill_padding(sequences, mask))
        with torch.no_grad():
            reused = state_major_forward_backward(hmm.log_initial, hmm.log_transition, blocks,
                                                  mask, time=TIME, workspace=workspace)
            fresh = state_major_forward_backward(hmm.log_initial, hmm.log_transition, blocks,
                                                 mask, time=TIME)
        for a, b in zip(reused, fresh):
            assert torch.equal(a, b)


# --- Baum-Welch against a plain log-space EM ------------------------------------------------------
def reference_em_step(hmm: HMM, sequences, mask, variance_prior: float) -> None:
    """One EM iteration written plainly: log-space forward-backward, then the closed-form
    M-step over the observed steps (hmmlearn's, with covars_prior for Gaussians)."""
    log_emission = reference_log_emission(hmm, sequences, mask)
    _, posteriors, counts = _forward_backward_log(hmm.log_initial.detach(),
                                                  hmm.log_transition.detach(), log_emission, mask)
    gamma = posteriors[mask]  # (N, S) over observed steps
    values = sequences[mask]
    totals = gamma.sum(0)
    updates = {"initial_probs": posteriors[:, 0].sum(0) / posteriors[:, 0].sum(),
               "transition_probs": counts / counts.sum(-1, keepdim=True)}
    if hmm.emission == "categorical":
        one_hot = torch.nn.functional.one_hot(values.long(), 4).double()
        updates["emission_probs"] = (gamma.T @ one_hot) / totals[:, None]
    elif hmm.emission == "bernoulli":
        updates["emission_probs"] = ((gamma.T @ values) / totals[:, None]).clamp(1e-10, 1 - 1e-10)
    else:
        means = (gamma.T @ values) / totals[:, None]
        centred = values[:, None, :] - means  # (N, S, D)
        if hmm.config["covariance"] == "diag":
            scatter = torch.einsum("ns,nsd->sd", gamma, centred**2)
            updates["variances"] = (scatter + variance_prior) / totals[:, None]
        else:
            scatter = torch.einsum("ns,nsd,nse->sde", gamma, centred, centred)
            eye = torch.eye(values.shape[-1], dtype=values.dtype)
            updates["covariances"] = (scatter + variance_prior * eye) / totals[:, None, None]
        updates["means"] = means
    hmm.set_parameters(**updates)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_baum_welch_trajectory_equals_a_plain_log_space_em(name):
    """Every iteration's log-likelihood and the final parameters: the blocked state-major
    E-step and the statistics-based M-step change no number beyond rounding."""
    fast = make_hmm(name, seed=2)
    reference = make_hmm(name, seed=2)
    sequences, lengths, mask = ragged(fast, padding=0.0)
    result = probgen.fit(fast, (sequences, lengths), method="baum_welch", num_steps=4, tol=None,
                         variance_prior=1e-2, progress=False)
    expected = []
    for _ in range(4):
        reference_em_step(reference, sequences, mask, variance_prior=1e-2)
        with torch.no_grad():
            expected.append(float(reference.log_prob(sequences, lengths).sum()))
    np.testing.assert_allclose([-loss for loss in result.losses], expected, rtol=1e-10)
    for ours, theirs in zip(fast.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-7, atol=1e-9)
