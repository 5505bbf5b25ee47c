"""Hidden Markov models: fit by Baum-Welch EM and by SVI, score exactly, decode with Viterbi.

Simulates ragged sequences from a known Gaussian HMM, fits a fresh HMM two ways (the EM fast
path and generic SVI on the Pyro program), and compares held-out log-likelihoods per step with
the true model's. With --jsb it also fits Bernoulli HMMs to the JSB chorales.

    python examples/hmm.py --smoke
    python examples/hmm.py --states 4 --jsb
"""

from __future__ import annotations

import argparse
import time

import torch
from scipy.optimize import linear_sum_assignment

import probgen
from probgen.models.hmm import HMM, initialize_from_data


def per_step(model: HMM, sequences: torch.Tensor, lengths: torch.Tensor) -> float:
    with torch.no_grad():
        return float(model.log_prob(sequences, lengths).sum() / lengths.sum())


def viterbi_accuracy(model: HMM, truth_states, sequences, lengths) -> float:
    """Fraction of steps decoded right, after the best matching of model to true labels."""
    paths, _ = model.viterbi(sequences, lengths)
    observed = paths >= 0
    k = model.num_states
    confusion = torch.zeros(k, k)
    confusion.index_put_((paths[observed], truth_states[observed]), torch.ones(()), accumulate=True)
    rows, cols = linear_sum_assignment(-confusion.numpy())
    return float(confusion[rows, cols].sum() / observed.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=3)
    parser.add_argument("--features", type=int, default=2)
    parser.add_argument("--sequences", type=int, default=300)
    parser.add_argument("--length", type=int, default=60)
    parser.add_argument("--em-iterations", type=int, default=100)
    parser.add_argument("--restarts", type=int, default=3, help="EM runs from different starts")
    parser.add_argument("--svi-steps", type=int, default=150)
    parser.add_argument("--jsb", action="store_true", help="also fit the JSB chorales")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (HMM steps are small: more threads rarely help)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    args = parser.parse_args()
    if args.features < 2:
        parser.error("--features must be at least 2 (the true means lie on a circle)")
    if args.smoke:
        args.sequences, args.length, args.em_iterations, args.svi_steps = 40, 30, 10, 5
        args.restarts = 1
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    # A true HMM with sticky states and means spread on a circle of radius 4 (unit variances).
    truth = HMM(args.states, "gaussian", num_features=args.features).double().to(device)
    sticky = 0.8 * torch.eye(args.states) + 0.2 / args.states
    angles = 2 * torch.pi * torch.arange(args.states, dtype=torch.float64) / args.states
    means = torch.zeros(args.states, args.features, dtype=torch.float64)
    means[:, 0], means[:, 1] = 4 * angles.cos(), 4 * angles.sin()
    truth.set_parameters(transition_probs=sticky, means=means)
    sequences, states = truth.sample(args.sequences, args.length, return_states=True)
    lengths = torch.randint(args.length // 2, args.length + 1, (args.sequences,), device=device)
    split = int(0.8 * args.sequences)
    train, test = (sequences[:split], lengths[:split]), (sequences[split:], lengths[split:])
    print(f"data: {args.sequences} sequences of {args.length // 2}..{args.length} steps, "
          f"{args.states} states, {args.features}-D Gaussian emissions")
    print(f"true model      test log-likelihood per step: {per_step(truth, *test):.4f}")

    # 1. Baum-Welch EM (the fast path), a few restarts: EM finds a local optimum.
    start, best = time.perf_counter(), None
    for restart in range(args.restarts):
        candidate = HMM(args.states, "gaussian", num_features=args.features).double().to(device)
        initialize_from_data(candidate, *train, seed=args.seed + restart)
        result = probgen.fit(candidate, train, method="baum_welch", num_steps=args.em_iterations,
                             tol=1e-7, seed=args.seed, progress=False)
        if best is None or result.losses[-1] < best[1].losses[-1]:  # losses: -log p(train)
            best = (candidate, result)
    em_model, result = best
    print(f"Baum-Welch      test log-likelihood per step: {per_step(em_model, *test):.4f} "
          f"(best of {args.restarts} restarts, {result.num_steps} iterations, "
          f"{time.perf_counter() - start:.2f} s)")
    accuracy = viterbi_accuracy(em_model, states[split:], *test)
    print(f"                Viterbi accuracy on test steps: {accuracy:.3f}")

    # 2. Generic SVI on the Pyro program (states enumerated, TraceEnum_ELBO), same start.
    svi_model = HMM(args.states, "gaussian", num_features=args.features).double().to(device)
    initialize_from_data(svi_model, *train, seed=args.seed)
    start = time.perf_counter()
    probgen.fit(svi_model, train, method="svi", num_steps=args.svi_steps, optim=0.05,
                progress=False, seed=args.seed)
    exact = probgen.evaluate(svi_model, test, estimator="exact")
    steps = float(test[1].sum())
    print(f"SVI (Pyro)      test log-likelihood per step: {float(exact.per_example.sum()) / steps:.4f} "
          f"({args.svi_steps} steps, {time.perf_counter() - start:.2f} s, {exact.label})")

    if args.jsb:
        from probgen.data.jsb import load_jsb_chorales

        data = load_jsb_chorales()
        for num_states in (8, 32):
            hmm = HMM(num_states, "bernoulli", num_features=88).double()
            initialize_from_data(hmm, *data.train.as_tuple())
            probgen.fit(hmm, data.train.as_tuple(), method="baum_welch", num_steps=60, tol=1e-5,
                        pseudocount=0.1, seed=args.seed, progress=False)
            print(f"JSB chorales, {num_states:3d} states: test log-likelihood per step "
                  f"{per_step(hmm, *data.test.as_tuple()):.4f}")


if __name__ == "__main__":
    main()
