"""probgen.save(fit_result) / probgen.load(path, model=program) for your own programs, checked
in a new process: evaluate gives exactly the same numbers."""

import json
import subprocess
import sys
import textwrap

import pytest

PROGRAMS = textwrap.dedent('''
    import pyro
    import pyro.distributions as dist
    import torch
    from torch import nn

    D, Q = 4, 2


    def ppca(x):
        weight = pyro.param("W", 0.1 * torch.ones(D, Q))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([Q]).to_event(1))
            pyro.sample("x", dist.Normal(z @ weight.T, 0.5).to_event(1), obs=x)


    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(D, 2 * Q)

        def forward(self, x):
            pyro.module("encoder", self)
            loc, log_scale = self.net(x).chunk(2, -1)
            with pyro.plate("data", len(x)):
                pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


    def data():
        generator = torch.Generator().manual_seed(0)
        return torch.randn(120, D, generator=generator), torch.randn(30, D, generator=generator)
''')

FIT = textwrap.dedent('''
    import json, sys
    import pyro
    import probgen
    from programs import Encoder, data, ppca
    train, test = data()
    scores = {}
    for kind in ("encoder", "autonormal"):
        pyro.clear_param_store()
        guide = Encoder() if kind == "encoder" else None
        result = probgen.fit(ppca, train, guide=guide, num_steps=50, optim=0.02, seed=0,
                             progress=False)
        probgen.save(result, f"{sys.argv[1]}-{kind}.pt")
        held_out = probgen.evaluate(ppca, test, guide=result.guide, k=50, seed=3, refit_steps=30)
        scores[kind] = held_out.per_example.tolist()
    print(json.dumps(scores))
''')

LOAD = textwrap.dedent('''
    import json, sys
    import pyro
    import probgen
    from programs import Encoder, data, ppca
    _, test = data()
    scores = {}
    for kind in ("encoder", "autonormal"):
        pyro.clear_param_store()
        guide = Encoder() if kind == "encoder" else None
        result = probgen.load(f"{sys.argv[1]}-{kind}.pt", model=ppca, guide=guide)
        held_out = probgen.evaluate(ppca, test, guide=result.guide, k=50, seed=3, refit_steps=30)
        scores[kind] = held_out.per_example.tolist()
    print(json.dumps(scores))
''')


def _run(tmp_path, script: str, *args: str) -> dict[str, list[float]]:
    (tmp_path / "programs.py").write_text(PROGRAMS)
    (tmp_path / "script.py").write_text(script)
    completed = subprocess.run([sys.executable, "script.py", *args], cwd=tmp_path,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_a_saved_program_reloads_in_a_new_process_with_identical_scores(tmp_path):
    """An encoder guide (module state) and a fit-built AutoNormal (rebuilt by class)."""
    path = str(tmp_path / "ppca")
    before = _run(tmp_path, FIT, path)
    after = _run(tmp_path, LOAD, path)
    assert set(before) == {"encoder", "autonormal"}
    assert after == before


def test_loading_a_program_file_without_the_program_says_what_to_pass(tmp_path):
    import pyro
    import torch

    import probgen

    def model(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", pyro.distributions.Normal(loc, 1.0), obs=x)

    result = probgen.fit(model, torch.randn(10) + 5, num_steps=3, optim=0.5, progress=False,
                         seed=0)
    trained = float(pyro.param("loc"))
    assert trained > 1.0
    probgen.save(result, tmp_path / "run.pt")
    with pytest.raises(TypeError, match="model=program"):
        probgen.load(tmp_path / "run.pt")
    pyro.clear_param_store()
    loaded = probgen.load(tmp_path / "run.pt", model=model)
    assert float(pyro.param("loc")) == trained
    assert loaded.num_steps == 3 and loaded.losses == result.losses
