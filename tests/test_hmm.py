"""HMM fast paths against brute-force enumeration, hmmlearn and the generic Pyro-program path."""

import itertools
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from pyro.ops.indexing import Vindex

from probgen.data.sequences import lengths_to_mask
from probgen.models.hmm import HMM, evaluate_forward
from probgen.models.hmm.forward_backward import (
    _forward_log,
    forward_backward,
    forward_log_likelihood,
)
from probgen.models.registry import get_model_class

ROOT = Path(__file__).resolve().parents[1]
EMISSION_CONFIGS = {
    "categorical": dict(emission="categorical", num_categories=4),
    "bernoulli": dict(emission="bernoulli", num_features=5),
    "gaussian-diag": dict(emission="gaussian", num_features=2),
    "gaussian-full": dict(emission="gaussian", num_features=3, covariance="full"),
}


def make_hmm(name: str, num_states: int = 3, seed: int = 0) -> HMM:
    torch.manual_seed(seed)
    hmm = HMM(num_states, **EMISSION_CONFIGS[name]).double()
    with torch.no_grad():  # random, non-uniform parameters (the defaults are too symmetric)
        for parameter in hmm.parameters():
            parameter.add_(0.7 * torch.randn_like(parameter))
    return hmm


def ragged_batch(hmm: HMM, lengths=(6, 4, 1, 5, 6, 2)):
    lengths = torch.tensor(lengths)
    sequences = hmm.sample(len(lengths), int(lengths.max()))
    return sequences, lengths


def all_paths(num_states: int, length: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(num_states), repeat=length)))  # (P, length)


def brute_force_joint(hmm: HMM, sequences, lengths):
    """log p(z, x) for every state path of every sequence: a list of ((P,) values, paths)."""
    log_emission = hmm.emission_log_prob(hmm.validate_batch(sequences, lengths)[0]).detach()
    log_initial, log_transition = hmm.log_initial.detach(), hmm.log_transition.detach()
    out = []
    for b, length in enumerate(lengths.tolist()):
        paths = all_paths(hmm.num_states, length)
        joint = log_initial[paths[:, 0]] + log_emission[b, torch.arange(length), paths].sum(-1)
        if length > 1:
            joint = joint + log_transition[paths[:, :-1], paths[:, 1:]].sum(-1)
        out.append((joint, paths))
    return out


@pytest.mark.parametrize("name", list(EMISSION_CONFIGS))
def test_forward_matches_brute_force_enumeration(name):
    hmm = make_hmm(name)
    sequences, lengths = ragged_batch(hmm)
    expected = torch.stack([torch.logsumexp(j, 0) for j, _ in brute_force_joint(hmm, sequences, lengths)])
    differentiable = hmm.log_prob(sequences, lengths)  # autograd path
    with torch.no_grad():
        in_place = hmm.log_prob(sequences, lengths)  # in-place rescaled path
        parallel = hmm.log_prob(sequences, lengths, parallel=True)
    for value in (differentiable, in_place, parallel):
        torch.testing.assert_close(value.detach(), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", list(EMISSION_CONFIGS))
def test_posteriors_and_transition_counts_match_brute_force(name):
    hmm = make_hmm(name, seed=1)
    sequences, lengths = ragged_batch(hmm)
    x, lengths = hmm.validate_batch(sequences, lengths)
    mask = lengths_to_mask(lengths, x.shape[1])
    log_likelihood, posteriors, counts = forward_backward(
        hmm.log_initial.detach(), hmm.log_transition.detach(), hmm.emission_log_prob(x).detach(), mask)
    expected_counts = torch.zeros(3, 3, dtype=torch.float64)
    for b, (joint, paths) in enumerate(brute_force_joint(hmm, sequences, lengths)):
        weights = (joint - torch.logsumexp(joint, 0)).exp()  # p(path | x)
        torch.testing.assert_close(log_likelihood[b], torch.logsumexp(joint, 0))
        length = paths.shape[1]
        marginals = torch.zeros(length, 3, dtype=torch.float64)
        marginals.index_put_((torch.arange(length).expand_as(paths), paths),
                             weights[:, None].expand_as(paths), accumulate=True)
        torch.testing.assert_close(posteriors[b, :length], marginals, rtol=0, atol=1e-10)
        assert (posteriors[b, length:] == 0).all()
        if length > 1:
            expected_counts.index_put_((paths[:, :-1], paths[:, 1:]),
                                       weights[:, None].expand(-1, length - 1), accumulate=True)
    torch.testing.assert_close(counts, expected_counts, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", list(EMISSION_CONFIGS))
def test_viterbi_matches_brute_force_argmax(name):
    hmm = make_hmm(name, seed=2)
    sequences, lengths = ragged_batch(hmm)
    paths, log_joint = hmm.viterbi(sequences, lengths)
    for b, (joint, all_states) in enumerate(brute_force_joint(hmm, sequences, lengths)):
        best = int(joint.argmax())
        length = int(lengths[b])
        assert paths[b, :length].tolist() == all_states[best].tolist()
        assert (paths[b, length:] == -1).all()
        torch.testing.assert_close(log_joint[b], joint[best], rtol=0, atol=1e-10)


def test_parallel_scan_and_sequential_forward_agree_on_long_ragged_sequences():
    hmm = make_hmm("gaussian-diag", num_states=4)
    lengths = torch.tensor([65, 1, 30, 64, 3])  # odd and power-of-two tree sizes
    sequences = hmm.sample(5, 65)
    with torch.no_grad():
        sequential = hmm.log_prob(sequences, lengths, parallel=False)
        parallel = hmm.log_prob(sequences, lengths, parallel=True)
        x, _ = hmm.validate_batch(sequences, lengths)
        log_space = _forward_log(hmm.log_initial, hmm.log_transition,
                                 hmm.emission_log_prob(x).masked_fill(
                                     ~lengths_to_mask(lengths, 65)[..., None], 0.0))
    torch.testing.assert_close(parallel, sequential, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(log_space, sequential, rtol=1e-12, atol=1e-9)


def test_scaled_forward_falls_back_to_log_space_when_it_underflows():
    # State 0 explains every step 800 nats worse than state 1, but the chain cannot leave state
    # 0: every scaled quantity underflows to 0 in float64, the log-space value is finite.
    log_initial = torch.tensor([0.0, -1000.0], dtype=torch.float64)
    log_transition = torch.tensor([[0.0, -1000.0], [-1000.0, 0.0]], dtype=torch.float64)
    log_emission = torch.tensor([[-800.0, 0.0]], dtype=torch.float64).expand(2, 3, 2).clone()
    paths = all_paths(2, 3)
    joint = log_initial[paths[:, 0]] + log_emission[0, 0, paths].sum(-1) + \
        log_transition[paths[:, :-1], paths[:, 1:]].sum(-1)
    expected = torch.logsumexp(joint, 0)
    assert math.isfinite(float(expected))
    with torch.no_grad():
        value = forward_log_likelihood(log_initial, log_transition, log_emission)
        fb_value, posteriors, _ = forward_backward(log_initial, log_transition, log_emission)
    torch.testing.assert_close(value, expected.expand(2))
    torch.testing.assert_close(fb_value, expected.expand(2))
    assert torch.isfinite(posteriors).all()
    torch.testing.assert_close(posteriors.sum(-1), torch.ones(2, 3, dtype=torch.float64))


def test_log_prob_gradients_reach_every_parameter_and_match_log_space():
    hmm = make_hmm("gaussian-full")
    sequences, lengths = ragged_batch(hmm)
    hmm.log_prob(sequences, lengths).sum().backward()
    scaled = {n: p.grad.clone() for n, p in hmm.named_parameters()}
    hmm.zero_grad()
    x, lengths = hmm.validate_batch(sequences, lengths)
    log_emission = hmm.emission_log_prob(x).masked_fill(~lengths_to_mask(lengths)[..., None], 0.0)
    _forward_log(hmm.log_initial, hmm.log_transition, log_emission).sum().backward()
    for name, parameter in hmm.named_parameters():
        assert scaled[name].abs().sum() > 0, f"no gradient reaches {name}"
        torch.testing.assert_close(scaled[name], parameter.grad, rtol=1e-9, atol=1e-10)


def _hmmlearn_model(hmm: HMM):
    hmmlearn = pytest.importorskip("hmmlearn.hmm")
    startprob = hmm.log_initial.exp().detach().numpy()
    transmat = hmm.log_transition.exp().detach().numpy()
    if hmm.emission == "categorical":
        learn = hmmlearn.CategoricalHMM(hmm.num_states, init_params="", params="")
        learn.emissionprob_ = torch.softmax(hmm.emission_logits, -1).detach().numpy()
        learn.n_features = hmm.config["num_categories"]
    else:
        covariance = hmm.config["covariance"]
        learn = hmmlearn.GaussianHMM(hmm.num_states, covariance_type=covariance, init_params="",
                                     params="")
        learn.means_ = hmm.means.detach().numpy()
        if covariance == "diag":
            learn.covars_ = (2 * hmm.log_scales).exp().detach().numpy()
        else:
            learn.covars_ = (hmm.scale_tril @ hmm.scale_tril.mT).detach().numpy()
    learn.startprob_, learn.transmat_ = startprob, transmat
    return learn


@pytest.mark.parametrize("name", ["categorical", "gaussian-diag", "gaussian-full"])
def test_forward_matches_hmmlearn_score_on_the_same_parameters(name):
    hmm = make_hmm(name, num_states=4)
    lengths = torch.tensor([40, 17, 33, 1])
    sequences = hmm.sample(4, 40)
    learn = _hmmlearn_model(hmm)
    with torch.no_grad():
        ours = hmm.log_prob(sequences, lengths)
    for b, length in enumerate(lengths.tolist()):
        steps = sequences[b, :length].numpy()
        steps = steps[:, None] if hmm.emission == "categorical" else steps
        assert float(ours[b]) == pytest.approx(learn.score(steps), rel=1e-10, abs=1e-9)


def test_sample_shapes_and_initial_state_frequencies():
    hmm = make_hmm("categorical")
    sequences, states = hmm.sample(4000, 3, return_states=True)
    assert sequences.shape == (4000, 3) and states.shape == (4000, 3)
    assert hmm.sample(2, 5).shape == (2, 5)
    assert make_hmm("bernoulli").sample(2, 5).shape == (2, 5, 5)
    probs = hmm.log_initial.exp().detach()
    frequencies = torch.bincount(states[:, 0], minlength=3) / 4000.0
    stderr = (probs * (1 - probs) / 4000).sqrt()
    assert ((frequencies - probs).abs() < 4 * stderr + 1e-12).all()


def test_bad_input_raises_clear_errors():
    hmm = make_hmm("gaussian-diag")
    x = torch.zeros(2, 5, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="steps of shape"):
        hmm.log_prob(torch.zeros(2, 5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="lengths must lie in 1..5"):
        hmm.log_prob(x, torch.tensor([5, 6]))
    bad = x.clone()
    bad[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        hmm.log_prob(bad, torch.tensor([5, 5]))
    bad[1, 2:] = float("nan")  # NaN only in padding is fine
    assert torch.isfinite(hmm.log_prob(bad, torch.tensor([5, 2]))).all()
    with pytest.raises(ValueError, match="category 4"):
        make_hmm("categorical").log_prob(torch.full((1, 3), 4))
    with pytest.raises(ValueError, match="num_features"):
        HMM(3, "gaussian")
    with pytest.raises(ValueError, match="emission must be one of"):
        HMM(3, "poisson", num_features=2)


def test_config_rebuilds_the_model_and_registry_name():
    hmm = make_hmm("gaussian-full")
    assert get_model_class("hmm") is HMM
    clone = HMM(**hmm.config).double()
    clone.load_state_dict(hmm.state_dict())
    sequences, lengths = ragged_batch(hmm)
    torch.testing.assert_close(clone.log_prob(sequences, lengths), hmm.log_prob(sequences, lengths))


# --- the Pyro program and the generic path ------------------------------------------------------
def test_pyro_program_is_exact_under_ragged_lengths():
    """TraceEnum_ELBO with the empty guide is -Σ log p(x_b) when every latent is enumerated."""
    for name in EMISSION_CONFIGS:
        hmm = make_hmm(name)
        sequences, lengths = ragged_batch(hmm)
        x, lengths = hmm.validate_batch(sequences, lengths)
        loss = TraceEnum_ELBO(max_plate_nesting=1).loss(hmm.model, hmm.guide, x, lengths)
        expected = float(hmm.log_prob(x, lengths).detach().sum())
        assert -loss == pytest.approx(expected, rel=1e-10), name


def pyro_style_hmm(probs_initial, probs_transition, probs_tone, *, mask_latent: bool):
    """A program in Pyro's examples/hmm.py style (Bernoulli tones; pyro.markov + Vindex)."""

    def model(sequences, lengths):
        num_sequences, max_length, num_tones = sequences.shape
        tones_plate = pyro.plate("tones", num_tones, dim=-1)
        with pyro.plate("sequences", num_sequences, dim=-2):
            x = None
            for t in pyro.markov(range(max_length)):
                observed = (t < lengths).unsqueeze(-1)  # (sequences, 1)
                probs = probs_initial if x is None else Vindex(probs_transition)[x]
                with poutine.mask(mask=observed if mask_latent else True):
                    x = pyro.sample(f"x_{t}", dist.Categorical(probs),
                                    infer={"enumerate": "parallel"})
                with poutine.mask(mask=observed), tones_plate:
                    pyro.sample(f"y_{t}", dist.Bernoulli(Vindex(probs_tone)[x.squeeze(-1), :]),
                                obs=sequences[:, t])

    return model


def _pyro_style_setup():
    hmm = make_hmm("bernoulli", num_states=3)
    sequences, lengths = ragged_batch(hmm, lengths=(6, 3, 1, 5))
    x, lengths = hmm.validate_batch(sequences, lengths)
    params = (hmm.log_initial.exp().detach(), hmm.log_transition.exp().detach(),
              torch.sigmoid(hmm.emission_logits).detach())
    return hmm, x, lengths, params


def test_generic_exact_evaluate_equals_forward_on_a_pyro_style_program():
    evaluate = pytest.importorskip("probgen.evaluate").evaluate
    hmm, x, lengths, params = _pyro_style_setup()
    program = pyro_style_hmm(*params, mask_latent=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # masking only observations must not warn
        generic = evaluate(program, (x, lengths), estimator="exact")
    fast = evaluate_forward(hmm, (x, lengths))
    assert generic.kind == fast.kind == "exact"
    torch.testing.assert_close(generic.per_example, fast.per_example, rtol=0, atol=1e-6)
    # and the bundled program through the generic path (enumeration, not log_prob)
    bundled = evaluate(hmm, (x, lengths), estimator="exact", fast=False)
    torch.testing.assert_close(bundled.per_example, fast.per_example, rtol=0, atol=1e-6)


def test_masking_the_latent_is_refused_or_off_by_padded_steps_times_log_states():
    evaluate = pytest.importorskip("probgen.evaluate").evaluate
    hmm, x, lengths, params = _pyro_style_setup()
    program = pyro_style_hmm(*params, mask_latent=True)
    with pytest.raises(ValueError, match="x_.*Mask the observations"):
        evaluate(program, (x, lengths), estimator="exact")
    with pytest.warns(UserWarning, match="x_"):
        wrong = evaluate(program, (x, lengths), estimator="exact", allow_masked_latents=True)
    right = hmm.log_prob(x, lengths).detach()
    padded = (x.shape[1] - lengths).double()
    torch.testing.assert_close(wrong.per_example - right, padded * math.log(3), rtol=0, atol=1e-9)
    assert (padded > 0).any()


def test_evaluate_forward_labels_the_result():
    hmm = make_hmm("categorical")
    sequences, lengths = ragged_batch(hmm)
    result = evaluate_forward(hmm, (sequences, lengths))
    assert result.kind == "exact" and result.data_space == "discrete"
    assert result.settings["num_steps"] == int(lengths.sum())
    assert result.settings["log_likelihood_per_step"] == pytest.approx(
        float(result.per_example.sum()) / int(lengths.sum()))


@pytest.mark.slow  # a subprocess: imports alone take 3-20 s on a loaded 2-core machine
def test_example_runs_in_smoke_mode():
    completed = subprocess.run([sys.executable, str(ROOT / "examples" / "hmm.py"), "--smoke"],
                               capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "log-likelihood" in completed.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_picks_the_parallel_scan_and_matches_the_cpu_value():
    hmm = make_hmm("gaussian-diag", num_states=4)
    sequences, lengths = ragged_batch(hmm, lengths=(65, 1, 30, 64))
    with torch.no_grad():
        cpu = hmm.log_prob(sequences, lengths)
        gpu = hmm.to("cuda").log_prob(sequences.cuda(), lengths.cuda())
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-10, atol=1e-8)


def test_capabilities_come_from_the_config():
    for emission, space, support in [("gaussian", "continuous", "real"),
                                     ("bernoulli", "discrete", "binary"),
                                     ("categorical", "discrete", "categorical")]:
        options = {"num_categories": 3} if emission == "categorical" else {"num_features": 2}
        hmm = HMM(2, emission, **options)
        assert (hmm.data_space, hmm.support) == (space, support)
        assert "data_space" not in vars(hmm) and "support" not in vars(hmm)  # not per instance


def test_generic_svi_fit_on_the_program_raises_the_exact_likelihood():
    probgen = pytest.importorskip("probgen")
    truth = make_hmm("gaussian-diag", num_states=2)
    sequences, lengths = truth.sample(20, 10), torch.randint(3, 11, (20,))
    torch.manual_seed(1)
    hmm = HMM(2, "gaussian", num_features=2).double()
    before = float(hmm.log_prob(sequences, lengths).detach().sum())
    result = probgen.fit(hmm, (sequences, lengths), method="svi", num_steps=30, optim=0.05,
                         progress=False, seed=0)
    after = float(hmm.log_prob(sequences, lengths).detach().sum())
    assert after > before + 1.0
    # the SVI loss is the exact negative log-likelihood (every latent enumerated, empty guide)
    assert result.losses[-1] == pytest.approx(-after, rel=0.05)


def test_padding_may_hold_anything_as_documented():
    """NaN or -1 past each sequence's length is padding: fit and evaluate accept it and score
    exactly what zero padding scores; a NaN inside an observed step is still refused."""
    import probgen

    model = HMM(2, "gaussian", num_features=1)
    x = torch.randn(3, 5, 1)
    lengths = torch.tensor([5, 3, 2])
    padded = x.clone()
    padded[1, 3:] = float("nan")
    padded[2, 2:] = -1.0
    zeros = x.clone()
    zeros[1, 3:] = 0.0
    zeros[2, 2:] = 0.0
    expected = probgen.evaluate(model, (zeros, lengths))
    assert torch.equal(probgen.evaluate(model, (padded, lengths)).per_example,
                       expected.per_example)
    assert probgen.fit(model, (padded, lengths), num_steps=2, progress=False).num_steps >= 1
    padded[0, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        probgen.evaluate(model, (padded, lengths))
