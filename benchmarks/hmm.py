"""Gaussian HMM: Baum-Welch EM and forward scoring, probgen vs hmmlearn vs pomegranate.

8 states, 4-D diagonal Gaussian emissions, 200 sequences x 500 steps, 20 EM iterations from
the same initial parameters for every tool (probgen: ``probgen.fit(hmm, x,
method="baum_welch")``, the trainer included in the time); then forward-only scoring of the
fitted model.

    python benchmarks/hmm.py            # full run (~1 min on 2 cores)
    python benchmarks/hmm.py --smoke    # seconds
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import probgen  # noqa: E402
from benchmarks._common import print_table, timed, write_results  # noqa: E402
from probgen.models.hmm import HMM  # noqa: E402


def make_data(args, rng: np.random.Generator):
    """Sequences from a random true HMM, and one shared EM start (also random)."""
    torch.manual_seed(args.seed)
    truth = HMM(args.states, "gaussian", num_features=args.features).double()
    truth.set_parameters(
        initial_probs=torch.tensor(rng.dirichlet(np.ones(args.states))),
        transition_probs=torch.tensor(rng.dirichlet(np.ones(args.states) * 0.5, args.states)),
        means=torch.tensor(rng.normal(0, 3, (args.states, args.features))),
        variances=torch.tensor(rng.uniform(0.5, 2.0, (args.states, args.features))))
    sequences = truth.sample(args.sequences, args.length)  # (B, T, D) float64
    flat = sequences.reshape(-1, args.features).numpy()
    start = {
        "startprob": np.full(args.states, 1.0 / args.states),
        "transmat": rng.dirichlet(np.ones(args.states) * 5, args.states),
        "means": flat[rng.choice(len(flat), args.states, replace=False)],
        "covars": np.tile(flat.var(0), (args.states, 1)),
    }
    return sequences, start


def run_probgen(sequences, start, args, device):
    hmm = HMM(args.states, "gaussian", num_features=args.features).double().to(device)
    hmm.set_parameters(initial_probs=torch.tensor(start["startprob"]),
                       transition_probs=torch.tensor(start["transmat"]),
                       means=torch.tensor(start["means"]), variances=torch.tensor(start["covars"]))
    x = sequences.to(device)
    seconds, result = timed(lambda: probgen.fit(hmm, x, method="baum_welch",
                                                num_steps=args.iterations, tol=None,
                                                variance_prior=args.covars_prior, progress=False))
    return hmm, seconds, result


def run_hmmlearn(sequences, start, args):
    from hmmlearn.hmm import GaussianHMM

    model = GaussianHMM(args.states, covariance_type="diag", n_iter=args.iterations, tol=0,
                        init_params="", params="stmc", covars_prior=args.covars_prior)
    model.startprob_, model.transmat_ = start["startprob"].copy(), start["transmat"].copy()
    model.means_, model.covars_ = start["means"].copy(), start["covars"].copy()
    flat = sequences.reshape(-1, args.features).numpy()
    lengths = [args.length] * args.sequences
    seconds, _ = timed(lambda: model.fit(flat, lengths))
    return model, seconds, flat, lengths


def run_pomegranate(sequences, start, args):
    from pomegranate.distributions import Normal
    from pomegranate.hmm import DenseHMM

    emissions = [Normal(torch.tensor(start["means"][s]), torch.tensor(start["covars"][s]),
                        covariance_type="diag") for s in range(args.states)]
    model = DenseHMM(emissions, edges=torch.tensor(start["transmat"]),
                     starts=torch.tensor(start["startprob"]), max_iter=args.iterations, tol=0,
                     verbose=False).to(torch.float64)
    seconds, _ = timed(lambda: model.fit(sequences))
    log_likelihood = float(model.log_probability(sequences).sum())
    return seconds, log_likelihood


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--states", type=int, default=8)
    parser.add_argument("--features", type=int, default=4)
    parser.add_argument("--sequences", type=int, default=200)
    parser.add_argument("--length", type=int, default=500)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--covars-prior", type=float, default=1e-2, help="hmmlearn's default")
    parser.add_argument("--repeat", type=int, default=5, help="scoring: best of this many")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: same footing as hmmlearn's single-threaded C)")
    parser.add_argument("--no-pomegranate", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="do not write results JSON")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sequences, args.length, args.iterations, args.repeat = 10, 50, 3, 1
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    sequences, start = make_data(args, np.random.default_rng(args.seed))

    hmm, pg_em_seconds, em = run_probgen(sequences, start, args, device)
    learn, hl_em_seconds, flat, lengths = run_hmmlearn(sequences, start, args)
    hl_final = float(learn.score(flat, lengths))
    x = sequences.to(device)

    def score() -> float:
        with torch.no_grad():
            value = float(hmm.log_prob(x).sum())
        if device.type == "cuda":
            torch.cuda.synchronize()
        return value

    pg_score_seconds, pg_score = timed(score, repeat=args.repeat)
    hl_score_seconds, hl_score = timed(lambda: float(learn.score(flat, lengths)), repeat=args.repeat)
    # Same parameters in both tools for the scoring comparison: hmmlearn's fitted ones.
    scorer = HMM(args.states, "gaussian", num_features=args.features).double().to(device)
    scorer.set_parameters(initial_probs=torch.tensor(learn.startprob_),
                          transition_probs=torch.tensor(learn.transmat_),
                          means=torch.tensor(learn.means_),
                          variances=torch.tensor(np.stack([np.diag(c) for c in learn.covars_])))
    with torch.no_grad():
        pg_on_hl_params = float(scorer.log_prob(x).sum())

    def rel(a: float, b: float) -> float:
        return abs(a - b) / abs(b)

    common = {"states": args.states, "features": args.features, "sequences": args.sequences,
              "length": args.length}
    em_final = -em.losses[-1]  # log p(data) at the fitted parameters
    rows = [
        {"tool": "probgen", "task": "em", "seconds": pg_em_seconds, "log_likelihood": em_final,
         "iterations": em.num_steps, "speedup_vs_hmmlearn": hl_em_seconds / pg_em_seconds,
         "rel_diff_vs_hmmlearn": rel(em_final, hl_final), "device": str(device), **common},
        {"tool": "hmmlearn", "task": "em", "seconds": hl_em_seconds, "log_likelihood": hl_final,
         "iterations": int(learn.monitor_.iter), "speedup_vs_hmmlearn": 1.0,
         "rel_diff_vs_hmmlearn": 0.0, "device": "cpu", **common},
        {"tool": "probgen", "task": "score", "seconds": pg_score_seconds, "log_likelihood": pg_score,
         "speedup_vs_hmmlearn": hl_score_seconds / pg_score_seconds,
         "rel_diff_vs_hmmlearn": rel(pg_on_hl_params, hl_score), "device": str(device), **common},
        {"tool": "hmmlearn", "task": "score", "seconds": hl_score_seconds, "log_likelihood": hl_score,
         "speedup_vs_hmmlearn": 1.0, "rel_diff_vs_hmmlearn": 0.0, "device": "cpu", **common},
    ]
    if not args.no_pomegranate:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pm_seconds, pm_ll = run_pomegranate(sequences, start, args)
            rows.append({"tool": "pomegranate", "task": "em", "seconds": pm_seconds,
                         "log_likelihood": pm_ll, "iterations": args.iterations,
                         "speedup_vs_hmmlearn": hl_em_seconds / pm_seconds,
                         "rel_diff_vs_hmmlearn": rel(pm_ll, hl_final), "device": "cpu", **common})
        except Exception as error:  # a peer failing is a result, not a crash
            rows.append({"tool": "pomegranate", "task": "em", "seconds": None,
                         "log_likelihood": None, "error": f"{type(error).__name__}: {error}",
                         **common})
    print_table(rows, ["tool", "task", "seconds", "log_likelihood", "iterations",
                       "speedup_vs_hmmlearn", "rel_diff_vs_hmmlearn"])
    if not args.no_write and not args.smoke:
        write_results("hmm", rows, load_average_1min=os.getloadavg()[0], **vars(args))
    return rows


if __name__ == "__main__":
    main()
