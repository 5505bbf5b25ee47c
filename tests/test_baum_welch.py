"""Baum-Welch EM: monotone likelihood, parameter recovery, and hmmlearn's EM step for step."""

import numpy as np
import pytest
import torch

from probgen.models.hmm.baum_welch import baum_welch, initialize_from_data
from probgen.models.hmm import HMM

CONFIGS = {
    "categorical": dict(emission="categorical", num_categories=4),
    "bernoulli": dict(emission="bernoulli", num_features=5),
    "gaussian-diag": dict(emission="gaussian", num_features=2),
    "gaussian-full": dict(emission="gaussian", num_features=2, covariance="full"),
}


def simulated(name: str, num_sequences=12, length=30, seed=0):
    torch.manual_seed(seed)
    truth = HMM(3, **CONFIGS[name]).double()
    with torch.no_grad():
        for parameter in truth.parameters():
            parameter.add_(torch.randn_like(parameter))
    lengths = torch.randint(1, length + 1, (num_sequences,))
    lengths[0] = length
    return truth, truth.sample(num_sequences, length), lengths


@pytest.mark.parametrize("name", list(CONFIGS))
def test_em_never_decreases_the_likelihood(name):
    truth, sequences, lengths = simulated(name)
    hmm = initialize_from_data(HMM(3, **CONFIGS[name]).double(), sequences, lengths, seed=1)
    result = baum_welch(hmm, sequences, lengths, num_iterations=15, tol=None, variance_prior=0.0)
    history = np.array(result.log_likelihoods + [result.final_log_likelihood])
    assert len(history) == 16 and np.isfinite(history).all()
    assert (np.diff(history) >= -1e-8 * np.abs(history[:-1])).all(), np.diff(history)
    assert history[-1] > history[0]
    expected = float(hmm.log_prob(sequences, lengths).detach().sum())
    assert result.final_log_likelihood == pytest.approx(expected, rel=1e-12)


def test_em_recovers_parameters_up_to_label_permutation():
    torch.manual_seed(0)
    truth = HMM(3, "gaussian", num_features=2).double()
    truth.set_parameters(
        initial_probs=torch.tensor([0.5, 0.3, 0.2]),
        transition_probs=torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]),
        means=torch.tensor([[-4.0, 0.0], [0.0, 4.0], [4.0, -2.0]]),
        variances=torch.tensor([[1.0, 0.5], [0.5, 1.0], [1.0, 1.0]]))
    sequences = truth.sample(60, 100)
    hmm = initialize_from_data(HMM(3, "gaussian", num_features=2).double(), sequences, seed=3)
    result = baum_welch(hmm, sequences, num_iterations=200, tol=1e-9)
    assert result.converged
    order = hmm.means[:, 0].argsort()  # the truth is sorted by the first mean coordinate
    torch.testing.assert_close(hmm.means[order].detach(), truth.means.detach(), atol=0.1, rtol=0)
    variances = (2 * hmm.log_scales).exp()[order].detach()
    torch.testing.assert_close(variances, (2 * truth.log_scales).exp().detach(), atol=0.1, rtol=0)
    transition = hmm.log_transition.exp()[order][:, order].detach()
    torch.testing.assert_close(transition, truth.log_transition.exp().detach(), atol=0.03, rtol=0)


def _to_hmmlearn(hmm: HMM, covars_prior: float):
    hmmlearn = pytest.importorskip("hmmlearn.hmm")
    if hmm.emission == "categorical":
        learn = hmmlearn.CategoricalHMM(hmm.num_states, init_params="", params="ste", n_iter=5,
                                        tol=-np.inf, emissionprob_prior=1.0)
        learn.emissionprob_ = torch.softmax(hmm.emission_logits, -1).detach().numpy()
        learn.n_features = hmm.config["num_categories"]
    else:
        learn = hmmlearn.GaussianHMM(hmm.num_states, covariance_type="diag", init_params="",
                                     params="stmc", n_iter=5, tol=-np.inf, covars_prior=covars_prior)
        learn.means_ = hmm.means.detach().numpy().copy()
        learn.covars_ = (2 * hmm.log_scales).exp().detach().numpy()
    learn.startprob_ = hmm.log_initial.exp().detach().numpy()
    learn.transmat_ = hmm.log_transition.exp().detach().numpy()
    return learn


@pytest.mark.parametrize("name", ["categorical", "gaussian-diag"])
def test_em_matches_hmmlearn_on_ragged_sequences(name):
    """Same start, 5 iterations: same parameters and likelihoods (padding handled exactly)."""
    _, sequences, lengths = simulated(name, num_sequences=8, length=25, seed=4)
    hmm = initialize_from_data(HMM(3, **CONFIGS[name]).double(), sequences, lengths, seed=2)
    learn = _to_hmmlearn(hmm, covars_prior=1e-2)
    steps = [sequences[b, :n].numpy() for b, n in enumerate(lengths.tolist())]
    flat = np.concatenate(steps)
    flat = flat[:, None] if hmm.emission == "categorical" else flat
    learn.fit(flat, lengths.tolist())
    result = baum_welch(hmm, sequences, lengths, num_iterations=5, tol=None, variance_prior=1e-2)
    np.testing.assert_allclose(result.log_likelihoods, learn.monitor_.history, rtol=1e-10)
    np.testing.assert_allclose(result.final_log_likelihood, learn.score(flat, lengths.tolist()),
                               rtol=1e-10)
    np.testing.assert_allclose(hmm.log_transition.exp().detach().numpy(), learn.transmat_,
                               atol=1e-10)
    if name == "categorical":
        np.testing.assert_allclose(torch.softmax(hmm.emission_logits, -1).detach().numpy(),
                                   learn.emissionprob_, atol=1e-10)
    else:
        np.testing.assert_allclose(hmm.means.detach().numpy(), learn.means_, atol=1e-10)
        np.testing.assert_allclose((2 * hmm.log_scales).exp().detach().numpy(),
                                   np.stack([np.diag(c) for c in learn.covars_]), rtol=1e-9)


def test_tol_stops_early_and_callback_sees_every_iteration():
    _, sequences, lengths = simulated("gaussian-diag", seed=5)
    hmm = initialize_from_data(HMM(3, "gaussian", num_features=2).double(), sequences, lengths)
    seen = []
    result = baum_welch(hmm, sequences, lengths, num_iterations=500, tol=1e-3,
                        callback=lambda i, ll: seen.append((i, ll)))
    assert result.converged and result.num_iterations < 500
    assert [ll for _, ll in seen] == result.log_likelihoods
    assert result.num_steps == int(lengths.sum())
