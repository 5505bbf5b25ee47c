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


# --- networks the user builds and registers with pyro.module (issue 29, item 1) ---------------
NETWORKS = textwrap.dedent('''
    """A regression network and a hand-written VAE, Pyro-tutorial style: the modules are built
    when this file is imported (a new process builds new ones, with other weights)."""
    import pyro
    import pyro.distributions as dist
    import torch
    from torch import nn
    from torch.distributions import constraints

    D, Z = 6, 2
    regressor = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))


    def regression(x, y):
        pyro.module("regressor", regressor)
        scale = pyro.param("scale", torch.tensor(1.0), constraint=constraints.positive)
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Normal(regressor(x).squeeze(-1), scale), obs=y)


    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = nn.Linear(D, 8)
            self.loc = nn.Linear(8, Z)
            self.log_scale = nn.Linear(8, Z)

        def forward(self, x):
            hidden = torch.tanh(self.hidden(x))
            return self.loc(hidden), self.log_scale(hidden).exp()


    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = Encoder()
            self.decoder = nn.Sequential(nn.Linear(Z, 8), nn.Tanh(), nn.Linear(8, D))

        def model(self, x):
            pyro.module("decoder", self.decoder)
            with pyro.plate("data", len(x)):
                z = pyro.sample("z", dist.Normal(x.new_zeros(Z), 1.0).to_event(1))
                pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

        def guide(self, x):
            pyro.module("encoder", self.encoder)
            with pyro.plate("data", len(x)):
                loc, scale = self.encoder(x)
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))


    vae = VAE()


    def data():
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(64, 2, generator=generator)
        y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(64, generator=generator)
        images = (torch.rand(48, D, generator=generator) < 0.3).float()
        return (x, y), images


    def weights():
        return {name: value.tolist() for name, value in
                [*regressor.state_dict().items(), *vae.state_dict().items()]}
''')

FIT_NETWORKS = textwrap.dedent('''
    import json, sys
    import torch
    import probgen
    from networks import data, regression, regressor, vae, weights
    (x, y), images = data()
    torch.manual_seed(1)
    fitted = probgen.fit(regression, (x, y), num_steps=300, optim=0.02, seed=0, progress=False)
    probgen.save(fitted, sys.argv[1] + "-regression.pt")
    score = probgen.evaluate(regression, (x, y))
    with torch.no_grad():  # the same score, by hand: log N(y | net(x), scale)
        by_hand = torch.distributions.Normal(regressor(x).squeeze(-1),
                                             fitted.params["scale"]).log_prob(y)
    fitted = probgen.fit(vae.model, images, guide=vae.guide, num_steps=300, optim=0.02, seed=0,
                         progress=False)
    probgen.save(fitted, sys.argv[1] + "-vae.pt")
    bound = probgen.evaluate(vae.model, images, guide=vae.guide, estimator="iwae", k=20, seed=3)
    print(json.dumps({"regression": score.per_example.tolist(), "by_hand": by_hand.tolist(),
                      "vae": bound.per_example.tolist(), "weights": weights()}))
''')

LOAD_NETWORKS = textwrap.dedent('''
    import json, sys
    import pyro
    import torch
    import probgen
    from networks import data, regression, vae, weights
    (x, y), images = data()
    built = weights()  # this process's own, untrained modules
    probgen.load(sys.argv[1] + "-regression.pt", model=regression)
    score = probgen.evaluate(regression, (x, y))
    pyro.clear_param_store()
    loaded = probgen.load(sys.argv[1] + "-vae.pt", model=vae.model, guide=vae.guide)
    bound = probgen.evaluate(vae.model, images, guide=loaded.guide, estimator="iwae", k=20,
                             seed=3)
    print(json.dumps({"regression": score.per_example.tolist(), "vae": bound.per_example.tolist(),
                      "weights": weights(), "built": built}))
''')


def _run_networks(tmp_path, script: str, *args: str) -> dict:
    (tmp_path / "networks.py").write_text(NETWORKS)
    (tmp_path / "script.py").write_text(script)
    completed = subprocess.run([sys.executable, "script.py", *args], cwd=tmp_path,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_pyro_module_networks_reload_into_the_users_modules_in_a_new_process(tmp_path):
    """probgen.load puts the saved weights into the nn.Modules a new process builds and
    registers with pyro.module (a regression MLP; a VAE's encoder and decoder)."""
    path = str(tmp_path / "fit")
    before = _run_networks(tmp_path, FIT_NETWORKS, path)
    after = _run_networks(tmp_path, LOAD_NETWORKS, path)
    assert before["regression"] == pytest.approx(before["by_hand"], abs=1e-6)
    assert after["built"] != before["weights"]  # the new process starts from other weights
    assert after["weights"] == before["weights"]
    assert after["regression"] == pytest.approx(before["regression"], abs=1e-6)
    assert after["vae"] == pytest.approx(before["vae"], abs=1e-6)


def _network_program():
    import pyro
    import torch

    networks = {"net": torch.nn.Linear(3, 1)}

    def model(x):
        pyro.module("net", networks["net"])
        with pyro.plate("data", len(x)):
            pyro.sample("y", pyro.distributions.Normal(networks["net"](x).squeeze(-1), 1.0),
                        obs=x.sum(-1))

    return networks, model


def test_load_fills_a_network_built_after_the_save_and_training_then_reaches_it(tmp_path):
    """What a new process does (a new nn.Module, an empty store), in this one."""
    import pyro
    import torch

    import probgen

    networks, model = _network_program()
    x = torch.randn(30, 3, generator=torch.Generator().manual_seed(0))
    result = probgen.fit(model, x, num_steps=100, optim=0.05, seed=0, progress=False)
    trained = {k: v.clone() for k, v in networks["net"].state_dict().items()}
    assert json.loads(json.dumps(result.settings)) == result.settings  # plain data
    probgen.save(result, tmp_path / "net.pt")
    pyro.clear_param_store()
    networks["net"] = torch.nn.Linear(3, 1)
    probgen.load(tmp_path / "net.pt", model=model)
    for name, value in networks["net"].state_dict().items():
        assert torch.allclose(value, trained[name], atol=1e-9)
    assert pyro.get_param_store()._params["net$$$weight"] is networks["net"].weight
    probgen.fit(model, x, num_steps=5, optim=0.05, seed=0, progress=False, warm_start=True)
    assert not torch.equal(networks["net"].weight, trained["weight"])  # it trains the new one


def test_loading_an_old_file_without_example_rows_warns_about_the_networks(tmp_path):
    import pyro
    import torch

    import probgen

    networks, model = _network_program()
    x = torch.randn(30, 3)
    probgen.save(probgen.fit(model, x, num_steps=3, progress=False, seed=0), tmp_path / "net.pt")
    state = torch.load(tmp_path / "net.pt", weights_only=True)
    del state["settings"]["example"]  # as written before probgen saved example rows
    torch.save(state, tmp_path / "old.pt")
    pyro.clear_param_store()
    with pytest.warns(UserWarning, match=r"no example rows.*update_module_params=True"):
        probgen.load(tmp_path / "old.pt", model=model)


def _bayesian_regression(x, y):
    import pyro
    import pyro.distributions as dist

    weight = pyro.sample("weight", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(x @ weight, 0.5), obs=y)


def _bayesian_factors(x, y):
    """Global loadings under a prior, a latent factor per example: AutoNormal holds both."""
    import pyro
    import pyro.distributions as dist

    weight = pyro.sample("weight", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    with pyro.plate("data", len(y)):
        factor = pyro.sample("factor", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(x @ weight + factor, 0.5), obs=y)


@pytest.mark.parametrize("program", [_bayesian_regression, _bayesian_factors])
def test_a_reloaded_autoguide_scores_as_before_with_the_same_seed(program, tmp_path):
    """The autoguide fit built is rebuilt and set up by load on the training shapes, without
    drawing from the seeded stream evaluate uses (its first call would, and would size the
    per-example latents by the held-out rows)."""
    import pyro
    import torch

    import probgen

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 2, generator=generator)
    y = x @ torch.tensor([1.0, -0.5]) + 0.5 * torch.randn(40, generator=generator)
    train, test = (x[:30], y[:30]), (x[30:], y[30:])
    result = probgen.fit(program, train, num_steps=50, optim=0.05, seed=0, progress=False)
    before = probgen.evaluate(program, test, guide=result.guide, num_draws=20, k=50, seed=0,
                              refit_steps=200)
    probgen.save(result, tmp_path / "fit.pt")
    pyro.clear_param_store()
    pyro.set_rng_seed(123)
    loaded = probgen.load(tmp_path / "fit.pt", model=program)
    after = probgen.evaluate(program, test, guide=loaded.guide, num_draws=20, k=50, seed=0,
                             refit_steps=200)
    assert after.kind == before.kind
    assert after.per_example.tolist() == pytest.approx(before.per_example.tolist(), abs=1e-6)
