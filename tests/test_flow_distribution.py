"""Flows from zuko and nflows behind one interface: change of variables, shapes, Pyro sites."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy import stats

from probgen.distributions.flow import Flow, FlowDistribution, flow_kinds

KINDS = [("zuko", kind) for kind in flow_kinds("zuko")] + [
    ("nflows", kind) for kind in flow_kinds("nflows")]
SLOW = {"cnf"}  # an ODE solve per Jacobian column
INVERTED_NUMERICALLY = {"cnf", "unaf", "naf"}  # sampling solves an ODE or bisects



@pytest.fixture(autouse=True)
def _clean_pyro():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    with pyro.validation_enabled(True):
        yield


def small_flow(backend: str, kind: str, context: int = 0, **options) -> Flow:
    return Flow(3, context, backend=backend, kind=kind, transforms=2, hidden=(8, 8),
                **options).double()


def numerical_log_prob(flow: Flow, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """log p_Z(f(x)) + log |det J_f(x)| with J_f from autograd, one example at a time."""
    values = []
    for i in range(x.shape[0]):
        c = None if context is None else context[i]
        jac = torch.autograd.functional.jacobian(lambda v, c=c: flow.transform(v, c)[0], x[i])
        z = flow.transform(x[i], c)[0]
        values.append(flow.base_log_prob(z, c) + torch.linalg.slogdet(jac).logabsdet)
    return torch.stack(values)


@pytest.mark.parametrize("context", [0, 2])
@pytest.mark.parametrize("backend,kind", KINDS)
def test_log_prob_is_change_of_variables(backend, kind, context):
    if kind in SLOW and context:
        pytest.skip("run with -m slow (test_log_prob_is_change_of_variables_slow_kinds)")
    _check_change_of_variables(backend, kind, context)


@pytest.mark.slow
@pytest.mark.parametrize("context", [0, 2])
@pytest.mark.parametrize("kind", sorted(SLOW))
def test_log_prob_is_change_of_variables_slow_kinds(kind, context):
    _check_change_of_variables("zuko", kind, context)


def _check_change_of_variables(backend, kind, context):
    torch.manual_seed(1)
    flow = small_flow(backend, kind, context)
    x = torch.randn(2, 3, dtype=torch.float64)
    c = torch.randn(2, context, dtype=torch.float64) if context else None
    expected = numerical_log_prob(flow, x, c)
    actual = flow(c).log_prob(x)
    # The CNF integrates an ODE (tolerance 1e-5); UNAF integrates its monotone network.
    atol = {"cnf": 1e-3, "unaf": 1e-4}.get(kind, 1e-8)
    torch.testing.assert_close(actual, expected, atol=atol, rtol=1e-6)


@pytest.mark.parametrize("backend,kind",
                         [(b, k) for b, k in KINDS if k not in INVERTED_NUMERICALLY])
def test_own_samples_score_like_fresh_points(backend, kind):
    """rsample's cached log-density (inverse pass) equals log_prob of the same points."""
    torch.manual_seed(2)
    flow = small_flow(backend, kind, 2)
    d = flow(torch.randn(4, 2, dtype=torch.float64))
    x = d.rsample((3,))
    assert x.shape == (3, 4, 3)
    cached = d.log_prob(x)
    fresh = d.log_prob(x.detach().clone())
    torch.testing.assert_close(cached, fresh, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("backend,kind", [("zuko", "maf"), ("zuko", "nsf"), ("nflows", "maf"),
                                          ("nflows", "realnvp")])
def test_shapes_and_gradients(backend, kind):
    torch.manual_seed(3)
    flow = small_flow(backend, kind, 2)
    context = torch.randn(5, 2, dtype=torch.float64)
    d = flow(context)
    assert d.batch_shape == (5,) and d.event_shape == (3,)
    assert d.sample((7,)).shape == (7, 5, 3) and not d.sample().requires_grad
    log_prob = d.log_prob(torch.randn(7, 5, 3, dtype=torch.float64))
    assert log_prob.shape == (7, 5)
    log_prob.sum().backward()
    missing = [n for n, p in flow.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing, f"no gradient reaches {missing}"
    flow.zero_grad()
    d.rsample((2,)).square().sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in flow.parameters())
    expanded = flow(context[:1]).expand((6, 5))
    assert expanded.sample().shape == (6, 5, 3)
    assert expanded.log_prob(torch.zeros(3, dtype=torch.float64)).shape == (6, 5)


def _set_affine(flow: Flow, shift: torch.Tensor, log_scale: torch.Tensor) -> None:
    """Make a one-transform MAF the affine map z = (x - m) / s, so x ~ N(m, s²) exactly."""
    with torch.no_grad():
        if flow.backend == "zuko":
            last = flow.network.transform.transforms[0].hyper[-1]
            last.weight.zero_()
            # zuko: z = x·exp(a) + b with a = u / (1 + |u / log 1e-3|); invert a = -log s.
            a = -log_scale
            u = a / (1 - a.abs() / abs(math.log(1e-3)))
            last.bias.copy_(torch.stack([-shift * torch.exp(a), u], -1).reshape(-1))
        else:
            made = flow.network._transform._transforms[1].autoregressive_net
            made.final_layer.weight.zero_()
            # nflows: z = x·(softplus(u) + 1e-3) + b, params interleaved (u, b) per feature.
            scale = torch.exp(-log_scale)
            u = torch.log(torch.expm1(scale - 1e-3))
            b = -shift * scale
            # the first layer is a reverse permutation, so feature i is input D-1-i
            made.final_layer.bias.copy_(torch.stack([u, b], -1).flip(0).reshape(-1))


@pytest.mark.parametrize("backend", ["zuko", "nflows"])
def test_affine_flow_samples_match_gaussian(backend):
    torch.manual_seed(4)
    flow = Flow(3, backend=backend, kind="maf", transforms=1, hidden=(8, 8)).double()
    mean = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    std = torch.tensor([0.5, 0.8, 0.3], dtype=torch.float64)
    _set_affine(flow, mean, std.log())
    x = flow().sample((20000,))
    n = x.shape[0]
    # means within 4 stderr; variances within 4 stderr (Var(s²) ≈ 2σ⁴/(n-1) for a Gaussian)
    assert ((x.mean(0) - mean).abs() < 4 * std / math.sqrt(n)).all()
    assert ((x.var(0) - std**2).abs() < 4 * std**2 * math.sqrt(2 / (n - 1))).all()
    points = torch.randn(5, 3, dtype=torch.float64)
    reference = stats.norm(mean.numpy(), std.numpy()).logpdf(points.numpy()).sum(-1)
    torch.testing.assert_close(flow().log_prob(points), torch.from_numpy(reference))


@pytest.mark.slow
def test_brief_fit_matches_gaussian_moments():
    torch.manual_seed(5)
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    target = dist.MultivariateNormal(torch.tensor([0.5, -0.5]), cov)
    data = target.sample((2000,))
    flow = Flow(2, kind="maf", transforms=2, hidden=(16, 16))
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        loss = -flow().log_prob(data).mean()
        loss.backward()
        optimizer.step()
    samples = flow().sample((20000,))
    torch.testing.assert_close(samples.mean(0), target.mean, atol=0.08, rtol=0)
    torch.testing.assert_close(torch.cov(samples.T), cov, atol=0.12, rtol=0)
    held_out = target.sample((4000,))
    with torch.no_grad():
        gap = float(target.log_prob(held_out).mean() - flow().log_prob(held_out).mean())
    assert -0.05 < gap < 0.05, f"KL estimate {gap:.3f} nats"


def test_pyro_site_scores_with_flow():
    torch.manual_seed(6)
    flow = small_flow("zuko", "nsf")
    x = torch.randn(10, 3, dtype=torch.float64)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", flow(), obs=x)

    trace = pyro.poutine.trace(model).get_trace(x)
    torch.testing.assert_close(trace.log_prob_sum(), flow().log_prob(x).sum())
    assert isinstance(flow(), FlowDistribution)
    assert flow().to_event(0).log_prob(x).shape == (10,)


@pytest.mark.parametrize("base", ["diag_normal", "student_t"])
def test_base_choices_are_normalized_densities(base):
    """A 1-D flow with any base integrates to one (quadrature on a wide grid)."""
    torch.manual_seed(7)
    flow = Flow(1, kind="nsf", transforms=2, hidden=(8, 8), base=base).double()
    grid = torch.linspace(-60, 60, 200001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        density = flow().log_prob(grid).exp()
    assert abs(float(torch.trapezoid(density, grid[:, 0])) - 1) < 2e-3
    assert any("base" in name for name, _ in flow.named_parameters())


def test_clear_errors():
    with pytest.raises(ValueError, match="context of shape"):
        Flow(2, 3)()
    with pytest.raises(ValueError, match="unconditional"):
        Flow(2)(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="expects 3"):
        Flow(2, 3)(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="unknown zuko flow kind"):
        Flow(2, kind="glow")
    with pytest.raises(ValueError, match="equal hidden widths"):
        Flow(2, backend="nflows", hidden=(16, 32))
    with pytest.raises(ValueError, match="backend"):
        Flow(2, backend="flowjax")
    with pytest.raises(ValueError, match="student_t"):
        Flow(2, backend="nflows", base="student_t")


def test_wraps_existing_networks():
    import zuko
    from nflows.flows import MaskedAutoregressiveFlow

    torch.manual_seed(8)
    x = torch.randn(4, 3)
    zuko_net = zuko.flows.MAF(3, transforms=2)
    wrapped = Flow(3, network=zuko_net)
    assert wrapped.backend == "zuko"
    torch.testing.assert_close(wrapped().log_prob(x), zuko_net().log_prob(x))
    nflows_net = MaskedAutoregressiveFlow(3, 16, 2, 2)
    wrapped = Flow(3, network=nflows_net)
    assert wrapped.backend == "nflows"
    torch.testing.assert_close(wrapped().log_prob(x), nflows_net.log_prob(x))


@pytest.mark.parametrize("backend", ["zuko", "nflows"])
def test_inverse_flow_is_still_a_density(backend):
    """IAF direction: sampling is one pass, and log_prob still matches the Jacobian."""
    torch.manual_seed(9)
    flow = small_flow(backend, "maf", 2, inverse=True)
    x = torch.randn(2, 3, dtype=torch.float64)
    c = torch.randn(2, 2, dtype=torch.float64)
    torch.testing.assert_close(flow(c).log_prob(x), numerical_log_prob(flow, x, c))
