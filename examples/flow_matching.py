"""Flow matching on 2-D Gaussian-mixture data: train, score by the ODE, compare with a MAF.

Trains a FlowMatching velocity field by conditional flow matching (optionally with minibatch
OT coupling, then a reflow step), prints its ODE log-likelihood with the exact divergence
(`exact`, up to the solver tolerance) and with Hutchinson's estimator (`estimate` ± its Monte
Carlo error), a maximum-likelihood MAF's exact log-likelihood and the data's true log-density,
then saves a scatter of samples.

    python examples/flow_matching.py --smoke
    python examples/flow_matching.py --steps 5000 --coupling ot --reflow 2000
"""

import argparse

import pyro
import torch
from _common import ring_mixture, save_scatters

import probgen
from probgen.models.flow import FlowModel
from probgen.models.flow_matching import FlowMatching


def train(model, data, steps: int, smoke: bool):
    optim = pyro.optim.ClippedAdam({"lr": 2e-3, "clip_norm": 10.0, "lrd": 0.05 ** (1 / steps)})
    return probgen.fit(model, data, num_steps=steps, batch_size=256, optim=optim, seed=0,
                       progress=not smoke)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--coupling", default="independent", choices=("independent", "ot"))
    parser.add_argument("--reflow", type=int, default=0,
                        help="steps of a reflow model trained on the first model's "
                             "(sample, noise) pairs (0: none)")
    parser.add_argument("--out", default="flow_matching_samples.png")
    args = parser.parse_args()
    steps = 30 if args.smoke else args.steps
    torch.manual_seed(0)

    data = ring_mixture()
    train_x, test = data.sample((4000,)), data.sample((50 if args.smoke else 500,))
    train_x, test = train_x.to(args.device), test.to(args.device)
    model = FlowMatching(2, hidden_features=(128,) * 3, coupling=args.coupling,
                         shift=train_x.mean(0).tolist(),
                         scale=train_x.std(0).tolist()).to(args.device)
    result = train(model, train_x, steps, args.smoke)
    print(f"flow matching: {steps} steps in {result.seconds:.1f} s, final CFM loss "
          f"{result.history[-1]:.3f} per example")

    tolerance = 1e-3 if args.smoke else 1e-5
    exact = probgen.evaluate(model, test, atol=tolerance, rtol=tolerance)  # d = 2: exact div
    estimate = probgen.evaluate(model, test, exact=False, num_probes=4, seed=0,
                                atol=tolerance, rtol=tolerance)
    maf = FlowModel(2, kind="maf", transforms=5, hidden=(64, 64)).to(args.device)
    probgen.fit(maf, train_x, num_steps=steps, batch_size=256, optim=1e-3, seed=0,
                progress=not args.smoke)
    maf_ll = probgen.evaluate(maf, test)
    truth = float(data.log_prob(test.cpu()).mean())
    print(f"ODE, exact divergence   : {exact.mean:8.4f} ± {exact.stderr:.4f} nats  [{exact.label}]")
    print(f"ODE, Hutchinson (4)     : {estimate.mean:8.4f} ± {estimate.stderr:.4f} nats  "
          f"(probes' MC error {estimate.estimator_stderr:.4f})  [{estimate.label}]")
    print(f"MAF (max. likelihood)   : {maf_ll.mean:8.4f} ± {maf_ll.stderr:.4f} nats  "
          f"[{maf_ll.label}]")
    print(f"true log p(x)           : {truth:8.4f} nats  (the data's own density)")

    n = 200 if args.smoke else 2000
    draws = {"data": data.sample((n,)), f"flow matching ({args.coupling})": model.sample(n)}
    if args.reflow:
        reflow_steps = 30 if args.smoke else args.reflow
        student = FlowMatching(**model.config).to(args.device)
        student.load_state_dict(model.state_dict())  # start from the teacher
        train(student, model.reflow_pairs(4000), reflow_steps, args.smoke)
        rectified = probgen.evaluate(student, test, atol=tolerance, rtol=tolerance)
        print(f"after reflow ({reflow_steps} steps): {rectified.mean:8.4f} ± "
              f"{rectified.stderr:.4f} nats  [{rectified.label}]")
        with torch.no_grad():  # rectified paths are nearly straight: one Euler step
            noise = torch.randn(n, 2, device=args.device)
            x_1 = noise + student.velocity(noise, torch.zeros(n, device=args.device))
        draws["reflow, 1 Euler step"] = student.from_flow(x_1)
    save_scatters(draws, args.out, dpi=100)
    print(f"saved samples to {args.out}")


if __name__ == "__main__":
    main()
