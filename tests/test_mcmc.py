"""run_mcmc: NUTS against conjugate posteriors; enumerated pointwise log-likelihoods; arviz LOO."""

import math
import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.ops.indexing import Vindex

from probgen.infer.mcmc import loo_compare, pointwise_log_likelihood, run_mcmc


def normal_normal(x):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 10.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.Normal(mu, 2.0), obs=x)


def beta_bernoulli(x):
    p = pyro.sample("p", dist.Beta(torch.tensor(2.0, dtype=x.dtype), 3.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.Bernoulli(p), obs=x)


def gmm(x, num_components=2):
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(num_components, dtype=x.dtype)))
    with pyro.plate("components", num_components):
        locs = pyro.sample("locs", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 5.0))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(Vindex(locs)[..., z], 1.0), obs=x)


def gmm_event(x, num_components=2):
    """The same mixture with the component axis as an event dim: batchable over draws."""
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(num_components, dtype=x.dtype)))
    locs = pyro.sample("locs", dist.Normal(torch.zeros(num_components, dtype=x.dtype), 5.0)
                       .to_event(1))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(Vindex(locs)[..., z], 1.0), obs=x)


def hmm(x, num_states=2):
    """x: (sequences, time); a Gaussian-emission HMM with Dirichlet rows and enumerated states."""
    ones = torch.ones(num_states, num_states, dtype=x.dtype)
    transition = pyro.sample("transition", dist.Dirichlet(ones + 4 * torch.eye(num_states)).to_event(1))
    locs = pyro.sample("locs", dist.Normal(torch.zeros(num_states, dtype=x.dtype), 3.0).to_event(1))
    with pyro.plate("sequences", x.shape[0]):
        state = pyro.sample("state_0", dist.Categorical(torch.ones(num_states) / num_states))
        pyro.sample("x_0", dist.Normal(Vindex(locs)[..., state], 1.0), obs=x[:, 0])
        for t in pyro.markov(range(1, x.shape[1])):
            state = pyro.sample(f"state_{t}", dist.Categorical(Vindex(transition)[..., state, :]))
            pyro.sample(f"x_{t}", dist.Normal(Vindex(locs)[..., state], 1.0), obs=x[:, t])


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def test_nuts_matches_the_normal_normal_posterior():
    torch.manual_seed(0)
    x = 1.5 + 2.0 * torch.randn(20, dtype=torch.float64)
    precision = 1 / 10.0**2 + 20 / 2.0**2
    mean, sd = float(x.sum() / 2.0**2 / precision), math.sqrt(1 / precision)
    idata = quiet(run_mcmc, normal_normal, x, num_samples=300, warmup_steps=150, seed=0,
                  progress=False)
    draws = idata.posterior["mu"].values.ravel()
    ess = float(az.ess(idata)["mu"])
    assert abs(draws.mean() - mean) < 4 * sd / math.sqrt(ess)
    assert abs(draws.std() / sd - 1) < 4 / math.sqrt(2 * ess) + 0.05
    # the pointwise log-likelihood is log N(x_n; mu_s, 2) at each draw
    expected = dist.Normal(torch.tensor(draws)[:, None], 2.0).log_prob(x).numpy()
    assert abs(idata.log_likelihood["obs"].values.reshape(300, 20) - expected).max() < 1e-10


def test_hmc_matches_the_beta_bernoulli_posterior():
    x = torch.tensor([1.0] * 7 + [0.0] * 13, dtype=torch.float64)
    a, b = 2 + 7, 3 + 13
    mean, sd = a / (a + b), math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    idata = quiet(run_mcmc, beta_bernoulli, x, kernel="hmc", num_samples=200, warmup_steps=100,
                  seed=1, progress=False, step_size=0.5, num_steps=4)
    draws = idata.posterior["p"].values.ravel()
    ess = float(az.ess(idata)["p"])
    assert ess > 50
    assert abs(draws.mean() - mean) < 4 * sd / math.sqrt(ess)
    assert abs(draws.std() / sd - 1) < 4 / math.sqrt(2 * ess) + 0.05


def test_pointwise_log_likelihood_sums_out_enumerated_assignments():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(15) - 3, torch.randn(15) + 3]).double()
    samples = {"weights": dist.Dirichlet(torch.ones(2, dtype=torch.float64)).sample((5,)),
               "locs": 3 * torch.randn(5, 2, dtype=torch.float64)}
    expected = torch.logsumexp(samples["weights"].log()[:, None, :]
                               + dist.Normal(samples["locs"][:, None, :], 1.0).log_prob(x[:, None]), -1)
    # gmm falls back to a loop over draws (plate-batched locs); gmm_event is batched over draws
    for program in (gmm, gmm_event):
        name, pointwise = pointwise_log_likelihood(program, samples, (x,))
        assert name == "obs" and pointwise.shape == (5, 30)
        assert torch.allclose(pointwise, expected, atol=1e-10)


def test_pointwise_log_likelihood_of_an_hmm_matches_the_forward_algorithm():
    torch.manual_seed(0)
    x = torch.randn(4, 6, dtype=torch.float64)
    samples = {"transition": dist.Dirichlet(torch.ones(2, 2, dtype=torch.float64)).sample((3,)),
               "locs": torch.randn(3, 2, dtype=torch.float64)}
    name, pointwise = pointwise_log_likelihood(hmm, samples, (x,))
    assert name == "x" and pointwise.shape == (3, 4)
    # forward algorithm, vectorised over draws and sequences
    emissions = dist.Normal(samples["locs"][:, None, None, :], 1.0).log_prob(x[None, :, :, None])
    alpha = emissions[:, :, 0] - math.log(2)  # (draws, sequences, states)
    log_transition = samples["transition"].log()[:, None]  # (draws, 1, from, to)
    for t in range(1, 6):
        alpha = torch.logsumexp(alpha[..., :, None] + log_transition, -2) + emissions[:, :, t]
    assert torch.allclose(pointwise, torch.logsumexp(alpha, -1), atol=1e-10)


def test_loo_and_waic_run_on_a_fitted_gmm_and_hmm():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(12) - 3, torch.randn(12) + 3]).double()
    gmm_data = quiet(run_mcmc, gmm_event, x, num_samples=12, warmup_steps=8, num_chains=2,
                     seed=0, progress=False, max_tree_depth=2)
    assert gmm_data.log_likelihood["obs"].shape == (2, 12, 24)
    assert gmm_data.posterior["locs"].shape == (2, 12, 2)
    assert quiet(az.loo, gmm_data).elpd_loo < 0
    states = (torch.arange(6) // 3 % 2).double()
    sequences = (3 * states - 1.5 + torch.randn(3, 6)).double()
    hmm_data = quiet(run_mcmc, hmm, sequences, num_samples=12, warmup_steps=5, seed=0,
                     progress=False, max_tree_depth=2)
    assert hmm_data.log_likelihood["x"].shape == (1, 12, 3)
    assert quiet(az.waic, hmm_data).elpd_waic < 0
    assert "diverging" in hmm_data.sample_stats


def _fit(log_likelihood: torch.Tensor):
    return az.from_dict(posterior={"mu": torch.zeros(log_likelihood.shape[:2]).numpy()},
                        log_likelihood={"obs": log_likelihood.numpy()})


def test_loo_compare_matches_importance_sampled_loo_and_names_unreliable_fits():
    generator = torch.Generator().manual_seed(0)
    good = -1.0 + 0.05 * torch.randn(2, 400, 15, generator=generator, dtype=torch.float64)
    worse = good - 0.5
    heavy = good.clone()
    heavy[..., 0] = -40 * torch.rand(2, 400, generator=generator, dtype=torch.float64) ** 4
    # light tails: PSIS-LOO is plain importance sampling, elpd_n = -log mean_s exp(-ll_ns)
    exact = -(torch.logsumexp(-good.reshape(800, 15), 0) - math.log(800)).sum()
    with pytest.warns(UserWarning, match=r"heavy: 1 of 15 examples have Pareto k > 0.7"):
        table = loo_compare({"worse": _fit(worse), "good": _fit(good), "heavy": _fit(heavy)})
    assert list(table.index[:2]) == ["good", "worse"]
    assert table.loc["good", "elpd_loo"] == pytest.approx(float(exact), abs=1e-3)
    assert table.loc["worse", "elpd_diff"] == pytest.approx(7.5, abs=1e-3)
    with pytest.raises(ValueError, match="empty"):
        loo_compare({})


def test_run_mcmc_warns_naming_poorly_mixed_variables():
    x = torch.randn(10, dtype=torch.float64)
    with pytest.warns(UserWarning, match="effective sample size.*mu"):
        run_mcmc(normal_normal, x, num_samples=20, warmup_steps=10, seed=0, progress=False)


def test_run_mcmc_rejects_bad_arguments():
    x = torch.randn(5, dtype=torch.float64)
    with pytest.raises(ValueError, match="kernel"):
        run_mcmc(normal_normal, x, kernel="gibbs")
    with pytest.raises(TypeError, match="callable"):
        run_mcmc("not a program", x)
    with pytest.raises(ValueError, match="data_plate"):
        run_mcmc(normal_normal, x, num_samples=5, warmup_steps=5, data_plate="rows",
                 progress=False, min_ess=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mcmc_gmm.py", "mcmc_hmm.py"])
def test_mcmc_examples_smoke_run(name):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / name
    out = subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True, text=True,
                         timeout=600, check=True).stdout
    assert "elpd_loo" in out and "rank" in out


def test_inference_data_names_the_observation_and_keeps_deterministic_sites():
    def sequences_model(y):
        loc = pyro.sample("loc", dist.Normal(0.0, 3.0))
        pyro.deterministic("loc_squared", loc**2)
        with pyro.plate("sequences", len(y)):
            for t in range(y.shape[1]):
                pyro.sample(f"y_{t}", dist.Normal(loc, 1.0), obs=y[:, t])

    y = torch.randn(6, 3) + 1.0
    idata = run_mcmc(sequences_model, y, num_samples=20, warmup_steps=20, seed=0,
                     progress=False, min_ess=0, rhat_threshold=float("inf"))
    assert list(idata.log_likelihood.data_vars) == ["y"]
    assert list(idata.observed_data.data_vars) == ["y"]
    squared = idata.posterior["loc_squared"].values
    np.testing.assert_allclose(squared, idata.posterior["loc"].values ** 2, rtol=1e-5)
    assert np.unique(squared).size > 1  # recomputed per draw
