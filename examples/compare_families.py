"""Journey (b): several model families on one data set, one comparison table and chart.

Gaussian mixtures (EM), a normalizing flow and a user-written Pyro program are fitted on
standardized iris and scored on the same held-out rows: all exact log-densities, so they rank.
"""

import argparse
import os

import torch

import probgen
from probgen.data import load_dataset, train_test_split
from probgen.demo.programs import gaussian_mixture_program
from probgen.models.flow import FlowModel
from probgen.models.mixture import GaussianMixture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/compare_families")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    data = load_dataset("iris").data
    train_index, test_index = train_test_split(len(data), 0.2, seed=0)
    mean, std = data[train_index].mean(0), data[train_index].std(0)
    train = ((data[train_index] - mean) / std).to(args.device)
    test = ((data[test_index] - mean) / std).to(args.device)

    results = {}
    for k in (1, 2, 3):
        gmm = GaussianMixture(k, 4).double().to(args.device)
        probgen.fit(gmm, train, num_steps=20 if args.smoke else 200, seed=0,  # EM: its default
                    progress=False)
        results[f"GMM K={k} (EM)"] = probgen.evaluate(gmm, test)

    program = gaussian_mixture_program(3, 4, prefix="journey_")
    probgen.fit(program, train, num_steps=50 if args.smoke else 800, optim=0.05, seed=0,
                progress=False)
    results["my program: diag mixture K=3"] = probgen.evaluate(program, test)

    flow = FlowModel(features=4, kind="nsf").double().to(args.device)
    probgen.fit(flow, train, num_steps=30 if args.smoke else 1000, optim=3e-3, seed=0,
                progress=False)
    results["NSF flow"] = probgen.evaluate(flow, test)

    table = probgen.compare(results)
    print(table)
    table.plot(os.path.join(args.out, "comparison.png"))
    with open(os.path.join(args.out, "comparison.json"), "w") as f:
        f.write(table.to_json())
    print(f"wrote {args.out}/comparison.png and comparison.json")


if __name__ == "__main__":
    main()
