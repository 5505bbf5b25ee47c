"""Gaussian mixtures: choose K by held-out exact log-likelihood and BIC, fit by EM, check paths.

EM is the mixture's training method of ``probgen.fit`` (``method="em"``, the default).

    python examples/gmm.py                      # iris (4-D), K = 1..6, full covariances
    python examples/gmm.py --data simulated --plot gmm.png
    python examples/gmm.py --smoke              # seconds
"""

from __future__ import annotations

import argparse
import time

import pyro
import torch

import probgen
from probgen.data.bundled import load_dataset, train_test_split
from probgen.models.mixture import (
    GaussianMixture,
    GaussianMixturePrior,
    heldout_log_likelihood,
    select_num_components,
)


def load(name: str, seed: int) -> torch.Tensor:
    if name == "iris":
        data = load_dataset("iris").data
        return (data - data.mean(0)) / data.std(0)
    truth = GaussianMixture(3, 2).double()  # a known 2-D mixture of three components
    truth.set_parameters(torch.tensor([0.5, 0.3, 0.2]),
                         torch.tensor([[0.0, 0.0], [4.0, 3.0], [-3.0, 4.0]]),
                         torch.tensor([[[1.0, 0.6], [0.6, 1.0]], [[0.5, -0.2], [-0.2, 0.4]],
                                       [[0.3, 0.0], [0.0, 1.5]]]))
    torch.manual_seed(seed)
    return truth.sample(1500)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["iris", "simulated"], default="iris")
    parser.add_argument("--max-components", type=int, default=6)
    parser.add_argument("--covariance", choices=["full", "tied", "diag", "spherical"],
                        default="full")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default=None, help="save a density plot (2-D data) to this file")
    parser.add_argument("--smoke", action="store_true", help="tiny run, seconds")
    args = parser.parse_args()
    if args.smoke:
        args.max_components, args.iters = 3, 20

    x = load(args.data, args.seed).to(args.device, torch.float64)
    train_index, test_index = train_test_split(len(x), 0.25, seed=args.seed)
    train, test = x[train_index.to(x.device)], x[test_index.to(x.device)]
    print(f"{args.data}: {len(train)} train / {len(test)} test examples, {x.shape[1]} features")

    # 1. Model selection over K: held-out exact log-likelihood and training BIC.
    candidates = tuple(range(1, args.max_components + 1))
    selection = select_num_components(train, test, candidates, covariance=args.covariance,
                                      num_steps=args.iters, seed=args.seed)
    print(f"{'model':<14} {'held-out mean log p(x)':>24} {'BIC':>10}")
    for name, ll in selection.heldout.items():
        print(f"{name:<14} {ll.mean:>14.4f} ± {ll.stderr:<7.4f} {selection.bic[name]:>10.1f}")
    print(f"best by held-out likelihood: {selection.best_by_heldout}; "
          f"best by BIC: {selection.best_by_bic}")
    print(probgen.compare(selection.heldout))

    # 2. The chosen K, by maximum likelihood and by MAP under the conjugate prior.
    best = selection.models[selection.best_by_heldout]
    for label, prior in [("ML", None), ("MAP", GaussianMixturePrior())]:
        model = GaussianMixture(best.num_components, x.shape[1], args.covariance)
        model = model.to(x.device, torch.float64)
        start = time.perf_counter()
        result = probgen.fit(model, train, method="em", num_steps=args.iters, prior=prior,
                             seed=args.seed, progress=False)
        ll = heldout_log_likelihood(model, test)
        train_ll = float(model.log_prob(train).detach().mean())
        print(f"{label:>3} EM: {result.num_steps} iterations in {time.perf_counter() - start:.3f} s "
              f"(converged: {result.converged}), train {train_ll:.4f}, "
              f"held-out {ll.mean:.4f} nats/example ({ll.label})")

    # 3. The fast path and the generic Pyro program (assignments enumerated) agree.
    enumerated = -pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).loss(model.model, model.guide, test)
    fast = float(model.log_prob(test).detach().sum())
    print(f"log p(test): enumerated Pyro program {enumerated:.6f}, fast path {fast:.6f}")

    if args.plot and x.shape[1] == 2:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        grid = torch.stack(torch.meshgrid(torch.linspace(-6, 8, 200), torch.linspace(-5, 9, 200),
                                          indexing="xy"), -1).reshape(-1, 2).double()
        density = model.log_prob(grid.to(x.device)).detach().exp().cpu().reshape(200, 200)
        plt.contourf(grid[:, 0].reshape(200, 200), grid[:, 1].reshape(200, 200), density, 30)
        plt.scatter(*train.cpu().T, s=2, c="white", alpha=0.5)
        plt.title(f"{selection.best_by_heldout} fitted by EM")
        plt.savefig(args.plot, dpi=120)
        print(f"saved {args.plot}")


if __name__ == "__main__":
    main()
