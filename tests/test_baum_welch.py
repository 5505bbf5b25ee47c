"""probgen.fit(hmm, data, method="baum_welch"): monotone likelihood, losses equal to the forward
algorithm, parameter recovery, hmmlearn's EM step for step, the optimum SVI reaches, resume."""

import numpy as np
import pyro
import pytest
import torch

import probgen
from probgen.infer import FitState
from probgen.models.hmm import HMM, initialize_from_data

CONFIGS = {
    "categorical": dict(emission="categorical", num_categories=4),
    "bernoulli": dict(emission="bernoulli", num_features=5),
    "gaussian-diag": dict(emission="gaussian", num_features=2),
    "gaussian-full": dict(emission="gaussian", num_features=2, covariance="full"),
}


def baum_welch(hmm, sequences, lengths=None, **options):
    """Baum-Welch through the one trainer."""
    data = sequences if lengths is None else (sequences, lengths)
    return probgen.fit(hmm, data, method="baum_welch", progress=False, **options)


def simulated(name: str, num_sequences=12, length=30, seed=0):
    torch.manual_seed(seed)
    truth = HMM(3, **CONFIGS[name]).double()
    with torch.no_grad():
        for parameter in truth.parameters():
            parameter.add_(torch.randn_like(parameter))
    lengths = torch.randint(1, length + 1, (num_sequences,))
    lengths[0] = length
    return truth, truth.sample(num_sequences, length), lengths


def total_log_likelihood(hmm, sequences, lengths=None) -> float:
    with torch.no_grad():
        return float(hmm.log_prob(sequences, lengths).sum())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_em_never_decreases_the_likelihood(name):
    truth, sequences, lengths = simulated(name)
    hmm = initialize_from_data(HMM(3, **CONFIGS[name]).double(), sequences, lengths, seed=1)
    initial = total_log_likelihood(hmm, sequences, lengths)
    result = baum_welch(hmm, sequences, lengths, num_steps=15, tol=None, variance_prior=0.0)
    assert result.method == "baum_welch" and result.num_steps == 15 and not result.converged
    history = np.array([initial] + [-loss for loss in result.losses])
    assert len(history) == 16 and np.isfinite(history).all()
    assert (np.diff(history) >= -1e-8 * np.abs(history[:-1])).all(), np.diff(history)
    assert history[-1] > history[0]
    expected = total_log_likelihood(hmm, sequences, lengths)
    assert -result.losses[-1] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", ["categorical", "gaussian-full"])
def test_every_loss_is_minus_the_forward_log_likelihood_of_that_steps_parameters(name):
    """Step i's loss is −log p(data) by the forward algorithm (hmm.log_prob, not the
    forward-backward pass EM uses) at the parameters the model holds after step i."""
    _, sequences, lengths = simulated(name, seed=6)
    hmm = initialize_from_data(HMM(3, **CONFIGS[name]).double(), sequences, lengths, seed=0)
    forward = []

    def callback(state: FitState) -> None:
        assert isinstance(state, FitState) and state.loss == state.losses[-1]
        forward.append(-total_log_likelihood(hmm, sequences, lengths))

    result = baum_welch(hmm, sequences, lengths, num_steps=8, tol=None, pseudocount=0.5,
                        callbacks=[callback])
    np.testing.assert_allclose(result.losses, forward, rtol=1e-12, atol=0)
    assert len(set(result.losses)) == 8  # every step moved the parameters


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
    result = baum_welch(hmm, sequences, num_steps=200, tol=1e-9)
    assert result.converged and result.num_steps < 200
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
    initial = total_log_likelihood(hmm, sequences, lengths)
    result = baum_welch(hmm, sequences, lengths, num_steps=5, tol=None, variance_prior=1e-2)
    history = [initial] + [-loss for loss in result.losses]  # at the parameters after 0..5 steps
    np.testing.assert_allclose(history[:5], learn.monitor_.history, rtol=1e-10)
    np.testing.assert_allclose(history[5], learn.score(flat, lengths.tolist()), rtol=1e-10)
    np.testing.assert_allclose(hmm.log_transition.exp().detach().numpy(), learn.transmat_,
                               atol=1e-10)
    if name == "categorical":
        np.testing.assert_allclose(torch.softmax(hmm.emission_logits, -1).detach().numpy(),
                                   learn.emissionprob_, atol=1e-10)
    else:
        np.testing.assert_allclose(hmm.means.detach().numpy(), learn.means_, atol=1e-10)
        np.testing.assert_allclose((2 * hmm.log_scales).exp().detach().numpy(),
                                   np.stack([np.diag(c) for c in learn.covars_]), rtol=1e-9)


def test_tol_stops_early_and_callbacks_see_every_iteration():
    _, sequences, lengths = simulated("gaussian-diag", seed=5)
    hmm = initialize_from_data(HMM(3, "gaussian", num_features=2).double(), sequences, lengths)
    seen = []
    result = baum_welch(hmm, sequences, lengths, num_steps=500, tol=1e-3,
                        callbacks=[lambda state: seen.append((state.step, state.loss))])
    assert result.converged and result.num_steps < 500 and not result.stopped_early
    assert seen == list(enumerate(result.losses))
    # converged: the last step improved log p per observed time step by less than tol
    assert (result.losses[-2] - result.losses[-1]) / int(lengths.sum()) < 1e-3


def test_fit_without_a_method_runs_baum_welch_and_init_kmeans_is_seeded():
    _, sequences, lengths = simulated("bernoulli", seed=7)
    runs = []
    for method in (None, "baum_welch"):
        hmm = HMM(3, **CONFIGS["bernoulli"]).double()
        result = probgen.fit(hmm, (sequences, lengths), method=method, num_steps=6, tol=None,
                             init="kmeans", seed=11, progress=False)
        runs.append((result, hmm))
    (default, a), (explicit, b) = runs
    assert HMM.default_method == "baum_welch" and default.method == "baum_welch"
    assert default.losses == explicit.losses
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_baum_welch_and_svi_reach_the_same_likelihood():
    """Fast path and generic path on a small problem, from the same start: the ELBO gradient
    of the enumerated program vanishes at Baum-Welch's fixed point, and SVI climbs to the same
    log-likelihood (never above it: a local maximum)."""
    torch.manual_seed(0)
    truth = HMM(2, "gaussian", num_features=2).double()
    truth.set_parameters(transition_probs=torch.tensor([[0.9, 0.1], [0.2, 0.8]]),
                         means=torch.tensor([[-2.0, 0.0], [2.0, 1.0]]))
    sequences, lengths = truth.sample(20, 8), torch.randint(4, 9, (20,))
    start = initialize_from_data(HMM(2, "gaussian", num_features=2).double(), sequences,
                                 lengths, seed=0).state_dict()

    def fresh() -> HMM:
        hmm = HMM(2, "gaussian", num_features=2).double()
        hmm.load_state_dict(start)
        return hmm

    by_em = fresh()
    assert baum_welch(by_em, sequences, lengths, num_steps=500, tol=1e-12,
                      variance_prior=0.0).converged
    by_em.zero_grad()
    pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(
        by_em.model, by_em.guide, sequences, lengths).backward()
    assert max(float(p.grad.abs().max()) for p in by_em.parameters()) < 1e-3
    by_svi = fresh()
    result = probgen.fit(by_svi, (sequences, lengths), method="svi", num_steps=100, optim=0.1,
                         seed=0, progress=False)
    assert result.method == "svi"
    em_ll = total_log_likelihood(by_em, sequences, lengths)
    svi_ll = total_log_likelihood(by_svi, sequences, lengths)
    assert svi_ll <= em_ll + 1e-8
    assert svi_ll == pytest.approx(em_ll, abs=0.01)  # 123 observed steps: 1e-4 nats per step


def test_checkpoint_resume_equals_an_uninterrupted_run(tmp_path):
    _, sequences, lengths = simulated("gaussian-full", seed=8)
    start = initialize_from_data(HMM(3, **CONFIGS["gaussian-full"]).double(), sequences,
                                 lengths, seed=0).state_dict()
    models = []
    for _ in range(3):
        hmm = HMM(3, **CONFIGS["gaussian-full"]).double()
        hmm.load_state_dict(start)
        models.append(hmm)
    reference = baum_welch(models[0], sequences, lengths, num_steps=12, tol=None, seed=0)
    path = tmp_path / "bw.pt"
    baum_welch(models[1], sequences, lengths, num_steps=5, tol=None, seed=0, checkpoint=path)
    resumed = baum_welch(models[2], sequences, lengths, num_steps=12, tol=None, seed=0,
                         checkpoint=path, resume=True)
    assert resumed.losses == reference.losses
    for p, q in zip(models[2].parameters(), models[0].parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_bad_options_raise_clear_errors():
    _, sequences, lengths = simulated("categorical")
    hmm = HMM(3, **CONFIGS["categorical"]).double()
    with pytest.raises(TypeError, match="unexpected options \\['num_iterations'\\]"):
        baum_welch(hmm, sequences, lengths, num_iterations=3)
    with pytest.raises(ValueError, match="init must be"):
        baum_welch(hmm, sequences, lengths, init="random")
    with pytest.raises(ValueError, match="batch_size=None"):
        baum_welch(hmm, sequences, lengths, batch_size=4)
    with pytest.raises(ValueError, match="length"):
        baum_welch(hmm, sequences, -lengths)
