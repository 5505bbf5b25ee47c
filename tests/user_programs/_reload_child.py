"""The new process of the corpus: for each request line {"name", "path"} on stdin, import the
program by path, build it afresh (fresh networks, fresh random initial weights), probgen.load the
saved fit, evaluate, recompute the independent reference, draw samples; one JSON line back."""

import json
import sys
import traceback

import pyro
import torch
from _load import import_program

import probgen


def reload_and_score(name: str, path: str) -> dict:
    module = import_program(name)
    pyro.clear_param_store()
    pyro.set_rng_seed(12345)  # initial weights unlike the parent's: only the load restores them
    _, test = module.make_data(0)
    program = module.build()
    result = probgen.load(path, model=program.model, guide=program.guide)
    held_out = probgen.evaluate(program.model, test, guide=result.guide, **module.EVALUATE)
    reply = {"kind": held_out.kind, "per_example": held_out.per_example.tolist(),
             "reference": module.reference(program, test).tolist(), "samples": None}
    try:
        module.check_samples(program, result.guide, test)
    except Exception:  # reported, and failed in the parent's test
        reply["samples"] = traceback.format_exc(limit=-3)
    return reply


def main() -> None:
    torch.set_num_threads(1)
    replies, sys.stdout = sys.stdout, sys.stderr  # whatever a program prints stays off the replies
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = reload_and_score(request["name"], request["path"])
        except Exception:
            reply = {"error": traceback.format_exc(limit=-4)}
        print(json.dumps(reply), file=replies, flush=True)


if __name__ == "__main__":
    main()
