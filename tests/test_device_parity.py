"""Device parity: the same fits and evaluations on "cpu" and (when present) "cuda", each pinned to
ground truth (closed forms, brute-force enumeration, scipy) and to the float64 CPU result.

The cuda arm skips on CPU-only machines. Results that leave the library (``LogLikelihood``) are
CPU float64 by contract, so a test cannot tell from them where the work ran: a TorchFunctionMode
audit records, while a call runs, the device of every tensor torch ops return, and each test
asserts that the work ran on the requested device (on CUDA also that CUDA kernels allocated
memory). The same audit records tensors that probgen code creates with a factory (zeros, ones,
arange, tensor, ...) and no ``device=``: on CUDA those are CPU tensors mixing with GPU data, and
every test asserts there are none.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import math
import weakref
from collections import Counter
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints
from torch.overrides import TorchFunctionMode

import probgen

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA is not available"))]
PACKAGE = Path(probgen.__file__).resolve().parent
FACTORIES = {"zeros", "ones", "empty", "full", "arange", "linspace", "logspace", "eye", "tensor",
             "as_tensor", "rand", "randn", "randint", "randperm", "zeros_like", "tril_indices",
             "triu_indices"}
MOVES = {"to", "cpu", "cuda", "detach", "clone", "contiguous", "numpy", "tolist", "item",
         "__get__", "__set__"}  # copies and attribute access: not where the work runs
PLACEMENTS = {"to", "cuda", "cpu"}
INSPECTIONS = {"__get__", "__set__", "__len__", "__repr__", "__format__", "size", "dim", "numel",
               "tolist", "item", "numpy", "__bool__", "__index__", "__int__", "__float__"}


def _tensors(value, depth: int = 0):
    """The tensors in an argument (nested tuples, lists and dicts, a few levels deep)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif depth < 3 and isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item, depth + 1)
    elif depth < 3 and isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item, depth + 1)


def family(module: str):
    """Import a bundled family's module, or skip when that family is not in this checkout."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name == module:
            pytest.skip(f"{module} is not in this checkout")
        raise


class DeviceAudit(TorchFunctionMode):
    """Record where torch ops ran, and CPU tensors probgen code makes and then computes with.

    ``devices`` counts, per device type, the non-scalar tensors torch ops returned (copies such
    as ``.to``/``.cpu`` excluded). ``findings`` maps ``"path:line"`` to the factory names
    (zeros, arange, tensor, ...) called there without ``device=`` whose tensor then entered a
    computation without first being placed with ``.to(...)``: on a CUDA run, a CPU tensor
    meeting GPU data. (0-dim tensors mix with CUDA tensors without error: only tensors with
    dimensions count.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.findings: dict[str, set[str]] = {}
        self.devices: Counter[str] = Counter()
        self.cuda_allocations: int | None = None
        self.checked = False
        self._unplaced: dict[int, tuple[weakref.ref, str, str]] = {}  # id -> (tensor, site, name)

    def __enter__(self):
        if self.cuda_allocations is None and torch.cuda.is_available():
            torch.cuda.synchronize()
            self.cuda_allocations = torch.cuda.memory_stats().get("allocation.all.allocated", 0)
        return super().__enter__()

    def _site(self) -> str | None:
        """``path:line`` of the probgen code that called the current torch function, if any."""
        frame = inspect.currentframe().f_back.f_back
        while frame is not None and f"{Path('torch')}{'/'}" in frame.f_code.co_filename:
            frame = frame.f_back  # torch's own wrappers
        path = Path(frame.f_code.co_filename).resolve() if frame is not None else None
        if path is None or PACKAGE not in path.parents:
            return None
        return f"{path.relative_to(PACKAGE.parent)}:{frame.f_lineno}"

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in PLACEMENTS:  # the code chose a device for this tensor: fine from here on
            for tensor in _tensors(args[:1]):
                self._unplaced.pop(id(tensor), None)
        elif name not in INSPECTIONS:
            for tensor in _tensors((args, kwargs)):
                entry = self._unplaced.pop(id(tensor), None)
                if entry is not None and entry[0]() is tensor:
                    self.findings.setdefault(entry[1], set()).add(entry[2])
        result = func(*args, **kwargs)
        if name not in MOVES:
            for output in _tensors(result):
                if output.dim() > 0:
                    self.devices[output.device.type] += 1
        from_tensor = bool(args) and isinstance(args[0], torch.Tensor)  # keeps its device
        if name in FACTORIES and "device" not in kwargs and not from_tensor \
                and isinstance(result, torch.Tensor) and result.dim() > 0:
            site = self._site()
            if site is not None:  # made by probgen code itself
                self._unplaced[id(result)] = (weakref.ref(result), site, name)
        return result

    def assert_ran_on(self, device: str) -> None:
        """Most tensors the audited calls computed live on ``device`` (on CUDA: kernels ran)."""
        total = sum(self.devices.values())
        assert self.devices[device] > 0 and self.devices[device] > 0.5 * total, \
            f"expected the work on {device}; tensors computed per device: {dict(self.devices)}"
        if device == "cuda":
            torch.cuda.synchronize()
            allocations = torch.cuda.memory_stats().get("allocation.all.allocated", 0)
            assert allocations > (self.cuda_allocations or 0), "no CUDA allocation: no kernel ran"

    def assert_clean(self) -> None:
        """No probgen code made a non-scalar tensor with a factory and no ``device=``."""
        self.checked = True
        sites = [f"{site} {sorted(names)}" for site, names in sorted(self.findings.items())]
        assert not sites, "tensors created without device= in probgen code (CPU tensors on " \
            "a CUDA run):\n  " + "\n  ".join(sites)


@pytest.fixture
def audit(request):
    """Audit each test's calls; a test that did not check the findings is checked here."""
    mode = DeviceAudit()
    yield mode
    for site, names in sorted(mode.findings.items()):
        request.node.user_properties.append(("cpu_factory", f"{site} {sorted(names)}"))
    if not mode.checked:
        mode.assert_clean()


def test_audit_finds_cpu_tensors_that_probgen_code_computes_with():
    """The audit itself can fail: code compiled as if it lived in probgen/ makes a CPU tensor
    without ``device=`` and adds it to the data (flagged), or places it first (not flagged)."""
    source = ("import torch\n"
              "def bad(x):\n    return x + torch.ones(3)\n"
              "def placed(x):\n    return x + torch.ones(3).to(x.device)\n"
              "def given(x):\n    return x + torch.ones(3, device=x.device)\n")
    namespace: dict = {}
    exec(compile(source, str(PACKAGE / "audit_example.py"), "exec"), namespace)  # noqa: S102
    mode = DeviceAudit()
    with mode:
        namespace["placed"](torch.zeros(3))
        namespace["given"](torch.zeros(3))
    assert mode.findings == {}
    mode.assert_ran_on("cpu")
    with pytest.raises(AssertionError, match="expected the work on cuda"):
        mode.assert_ran_on("cuda")
    with mode:
        namespace["bad"](torch.zeros(3))
    assert mode.findings == {f"{Path(PACKAGE.name) / 'audit_example.py'}:3": {"ones"}}
    with pytest.raises(AssertionError, match="audit_example.py:3"):
        mode.assert_clean()


def to64(value: torch.Tensor) -> torch.Tensor:
    return value.detach().to("cpu", torch.float64)


# --- generic machinery on programs written here ----------------------------------------------
def normal_model(x):
    loc = pyro.param("loc", torch.tensor(0.0, dtype=x.dtype, device=x.device))
    scale = pyro.param("scale", torch.tensor(1.0, dtype=x.dtype, device=x.device),
                       constraint=constraints.positive)
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(loc, scale), obs=x)


def fit_normal(device: str, audit: DeviceAudit | None = None) -> dict:
    pyro.clear_param_store()
    x = 2.0 + 0.5 * torch.randn(500, generator=torch.Generator().manual_seed(0),
                                dtype=torch.float64)
    with audit or DeviceAudit():
        result = probgen.fit(normal_model, x, num_steps=200, optim=0.05, batch_size=100, seed=0,
                             device=device, progress=False)
    params = result.params
    return {"losses": torch.tensor(result.losses, dtype=torch.float64), "x": x,
            "device": params["loc"].device, **{k: to64(v) for k, v in params.items()}}


@pytest.mark.parametrize("device", DEVICES)
def test_fit_program(device, audit):
    run = fit_normal(device, audit)
    assert run["device"].type == device  # the parameters were created and updated there
    audit.assert_ran_on(device)
    audit.assert_clean()
    # Ground truth: the maximum-likelihood estimates (mean, biased std).
    assert abs(float(run["loc"]) - float(run["x"].mean())) < 0.02
    assert abs(float(run["scale"]) - float(run["x"].std(unbiased=False))) < 0.02
    reference = fit_normal("cpu")
    torch.testing.assert_close(run["losses"], reference["losses"], rtol=1e-9, atol=1e-7)
    torch.testing.assert_close(run["loc"], reference["loc"], rtol=1e-9, atol=1e-9)


def poisson_mixture(x):
    weights = torch.tensor([0.3, 0.7], dtype=torch.float64, device=x.device)
    rates = torch.tensor([2.0, 9.0], dtype=torch.float64, device=x.device)
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Poisson(rates[z]), obs=x)


@pytest.mark.parametrize("device", DEVICES)
def test_evaluate_exact_enumeration(device, audit):
    from scipy.stats import poisson

    x = torch.tensor([0.0, 1.0, 3.0, 7.0, 12.0, 20.0], dtype=torch.float64)
    with audit:
        ll = probgen.evaluate(poisson_mixture, x, estimator="exact", device=device)
    assert ll.kind == "exact" and ll.per_example.device.type == "cpu"  # results leave on the CPU
    audit.assert_ran_on(device)  # ... the enumeration ran on the device
    audit.assert_clean()
    truth = torch.tensor(0.3 * poisson.pmf(x.numpy(), 2.0) + 0.7 * poisson.pmf(x.numpy(), 9.0)).log()
    torch.testing.assert_close(to64(ll.per_example), truth, rtol=1e-12, atol=1e-12)


def gaussian_latent(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def posterior_guide(x, shift: float = 0.0):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(x / 2 + shift, math.sqrt(0.5)))


@pytest.mark.parametrize("device", DEVICES)
def test_evaluate_iwae(device, audit):
    """z ~ N(0, 1), x | z ~ N(z, 1): p(x) = N(0, 2). With the exact posterior as guide every
    importance weight equals p(x), so IWAE-k is exact on any device; with a shifted guide the
    ELBO sits KL = 0.49 below log p(x) and IWAE-k within its standard deviation of it."""
    x = torch.linspace(-3.0, 3.0, 7, dtype=torch.float64)
    truth = dist.Normal(torch.zeros_like(x), math.sqrt(2.0)).log_prob(x)
    with audit:
        exact_guide = probgen.evaluate(gaussian_latent, x, guide=posterior_guide,
                                       estimator="iwae", k=64, device=device, seed=0)
        shifted = lambda x: posterior_guide(x, 0.7)  # noqa: E731
        elbo = probgen.evaluate(gaussian_latent, x, guide=shifted, estimator="elbo", k=2000,
                                device=device, seed=0)
        iwae = probgen.evaluate(gaussian_latent, x, guide=shifted, estimator="iwae", k=2000,
                                device=device, seed=0)
    assert exact_guide.per_example.device.type == "cpu"  # results leave on the CPU
    audit.assert_ran_on(device)  # ... the k draws and weights were computed on the device
    audit.assert_clean()
    torch.testing.assert_close(to64(exact_guide.per_example), truth, rtol=1e-10, atol=1e-10)
    # ELBO gap = KL(q || p(z | x)) = 0.7² / (2 · 0.5) = 0.49 for every x.
    torch.testing.assert_close(to64(elbo.per_example), truth - 0.49, rtol=0, atol=0.05)
    assert (to64(elbo.per_example) < to64(iwae.per_example)).all()
    # IWAE-k is below log p(x) in expectation; one estimate has sd √((e^{0.7²/0.5} - 1) / k).
    iwae_sd = math.sqrt((math.exp(0.98) - 1) / 2000)
    assert (to64(iwae.per_example) - truth).abs().max() < 5 * iwae_sd


# --- bundled families -------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_gmm_em(device, audit):
    """EM from the same start on the device equals EM on the CPU; the fitted log_prob equals
    scipy's mixture density."""
    mixture = family("probgen.models.mixture")
    em = family("probgen.models.mixture.em")
    from scipy.stats import multivariate_normal

    generator = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(150, 2, generator=generator, dtype=torch.float64) + 3,
                   torch.randn(150, 2, generator=generator, dtype=torch.float64) * 0.5])

    def run(on: str, mode: DeviceAudit):
        torch.manual_seed(0)
        model = mixture.GaussianMixture(2, 2).double()
        start = em.initial_parameters(x, 2, covariance="full", init="kmeans++", seed=0)
        model.set_parameters(start["weights"], start["locs"], start["covariances"])
        model.to(on)
        with mode:
            result = probgen.fit(model, x.to(on), method="em", num_steps=15, tol=0.0,
                                 init="model", device=on, seed=0, progress=False)
            log_prob = model.log_prob(x.to(on))
        assert result.method == "em" and result.num_steps == 15
        return model, log_prob

    model, log_prob = run(device, audit)
    assert log_prob.device.type == device and model.device.type == device
    audit.assert_ran_on(device)
    audit.assert_clean()
    params = {k: to64(v) for k, v in model.parameters_dict().items()}
    reference, _ = run("cpu", DeviceAudit())
    for name, value in reference.parameters_dict().items():
        torch.testing.assert_close(params[name], to64(value), rtol=1e-8, atol=1e-10)
    density = sum(float(w) * multivariate_normal(m.numpy(), c.numpy()).pdf(x.numpy())
                  for w, m, c in zip(params["weights"], params["locs"], params["covariances"]))
    torch.testing.assert_close(to64(log_prob), torch.tensor(density).log(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_hmm_forward(device, audit):
    """The forward algorithm on the device equals brute-force enumeration of all state paths."""
    hmm_module = family("probgen.models.hmm")
    torch.manual_seed(0)
    hmm = hmm_module.HMM(3, "gaussian", num_features=2).double().to(device)
    x = hmm.sample(4, length=5).to(device)  # (4, 5, 2)
    lengths = torch.tensor([5, 4, 2, 1], device=device)
    with audit, torch.no_grad():
        log_prob = hmm.log_prob(x, lengths)
    assert log_prob.device.type == device
    audit.assert_ran_on(device)
    audit.assert_clean()
    cpu = hmm.to("cpu")
    x, lengths = x.cpu(), lengths.cpu()
    with torch.no_grad():
        emission = cpu.emission_log_prob(x)  # (B, T, S)
        truth = []
        for b in range(len(x)):
            paths = torch.tensor(list(itertools.product(range(3), repeat=int(lengths[b]))))
            total = cpu.log_initial[paths[:, 0]] + emission[b, 0, paths[:, 0]]
            for t in range(1, int(lengths[b])):
                total = total + cpu.log_transition[paths[:, t - 1], paths[:, t]] \
                    + emission[b, t, paths[:, t]]
            truth.append(torch.logsumexp(total, 0))
    torch.testing.assert_close(to64(log_prob), torch.stack(truth), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_vae_iwae(device, audit):
    """A VAE's IWAE-k on the device: ELBO <= IWAE-k, and the CPU bound to sampling noise."""
    vae_module = family("probgen.models.vae")
    torch.manual_seed(0)
    vae = vae_module.VAE((12,), latent_dim=2, hidden_features=(16,)).double()
    x = torch.bernoulli(torch.full((20, 12), 0.4, dtype=torch.float64),
                        generator=torch.Generator().manual_seed(0))
    reference = probgen.evaluate(vae, x, estimator="iwae", k=200, seed=0)
    vae.to(device)
    with audit:
        elbo = probgen.evaluate(vae, x.to(device), estimator="elbo", k=200, seed=0)
        iwae = probgen.evaluate(vae, x.to(device), estimator="iwae", k=200, seed=0)
    assert iwae.kind == "lower_bound" and iwae.per_example.device.type == "cpu"
    assert vae.device.type == device  # evaluate left the model where it ran
    audit.assert_ran_on(device)  # the encoder, decoder and k draws ran on the device
    audit.assert_clean()
    assert elbo.mean < iwae.mean
    # Same seed on the CPU: the same draws. On CUDA: other draws; the mean over 20 examples of
    # IWAE-200 moves by ~0.01 nats between streams, so 0.1 nats is a 10-sigma bound.
    tolerance = 1e-10 if device == "cpu" else 0.1
    assert abs(iwae.mean - reference.mean) < tolerance


@pytest.mark.parametrize("device", DEVICES)
def test_flow_log_prob(device, audit):
    """The flow's exact log_prob on the device equals the CPU one, and integrates to one."""
    flow_module = family("probgen.models.flow")
    torch.manual_seed(0)
    flow = flow_module.FlowModel(2, kind="maf", transforms=2, hidden=(16,)).double()
    grid = torch.linspace(-9, 9, 181, dtype=torch.float64)
    points = torch.cartesian_prod(grid, grid)  # (181², 2)
    with torch.no_grad():
        reference = flow.log_prob(points)
        flow.to(device)
        with audit:
            log_prob = flow.log_prob(points.to(device))
    assert log_prob.device.type == device
    audit.assert_ran_on(device)
    audit.assert_clean()
    torch.testing.assert_close(to64(log_prob), reference, rtol=1e-9, atol=1e-9)
    mass = float(to64(log_prob).exp().sum()) * float(grid[1] - grid[0]) ** 2
    assert abs(mass - 1.0) < 0.02


@pytest.mark.parametrize("device", DEVICES)
def test_rbm_free_energy_and_partition(device, audit):
    """F(v) = -log Σ_h exp(-E(v, h)) by enumerating h; log Z by enumeration equals AIS."""
    ebm = family("probgen.models.ebm")
    ais = family("probgen.models.ebm.ais")
    rbm = ebm.RBM(6, 5, init_scale=0.5, seed=0).double().to(device)
    v = torch.bernoulli(torch.full((8, 6), 0.5, dtype=torch.float64),
                        generator=torch.Generator().manual_seed(0)).to(device)
    hidden = torch.tensor(list(itertools.product([0.0, 1.0], repeat=5)), dtype=torch.float64,
                          device=device)  # (32, 5)
    with audit, torch.no_grad():
        free_energy = rbm.free_energy(v)
        log_z = ais.exact_log_partition(rbm)
        estimate = ais.ais_log_partition(rbm, num_chains=200, num_betas=300, seed=0)
        truth = -torch.logsumexp(-rbm.energy(v[:, None, :], hidden[None]), -1)
    assert free_energy.device.type == device
    audit.assert_ran_on(device)  # free energy, enumeration and the AIS chains
    audit.assert_clean()
    torch.testing.assert_close(to64(free_energy), to64(truth), rtol=1e-12, atol=1e-12)
    visible = torch.tensor(list(itertools.product([0.0, 1.0], repeat=6)), dtype=torch.float64,
                           device=device)
    with torch.no_grad():
        brute = torch.logsumexp(-rbm.free_energy(visible), 0)
    assert abs(float(log_z) - float(brute)) < 1e-10
    assert abs(estimate.log_z - float(brute)) < 0.05
