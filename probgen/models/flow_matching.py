r"""Flow matching: a velocity field trained by regression, scored by the instantaneous change of variables.

On the straight (rectified) path x_t = (1 - t) x_0 + t x_1 from x_0 ~ N(0, I) (t = 0) to the data
x_1 (t = 1), the conditional flow-matching loss E_{t, x_0, x_1} ||v(x_t, t) - (x_1 - x_0)||² has
the marginal velocity u_t(x) = E[x_1 - x_0 | x_t = x] as its minimizer (Lipman et al., 2023;
Liu et al., 2023). Sampling integrates dx/dt = v(x, t) from t = 0 to 1, and
log p_1(x_1) = log N(x_0; 0, I) - ∫_0^1 div v(x_t, t) dt (Chen et al., 2018; Grathwohl et al.,
2019): exact up to the solver tolerance with the exact divergence, or Hutchinson's estimate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torch.distributions import constraints
from zuko.utils import odeint

from probgen.core.chunks import eval_mode, map_chunks
from probgen.core.result import LogLikelihood, data_fingerprint
from probgen.core.standardize import config_floats
from probgen.core.validate import check_size
from probgen.data.transforms import LogitTransform, logit_transform
from probgen.evaluate.dequantized import dequantized_log_likelihood
from probgen.models.registry import register_model
from probgen.models.standardized import StandardizedVectorModel
from probgen.nn.velocity import MLPVelocity

__all__ = ["COUPLINGS", "EXACT_MAX_FEATURES", "FlowMatching", "GaussianVelocity",
           "cfm_loss", "evaluate_ode", "ode_log_prob", "ot_coupling"]

COUPLINGS = ("independent", "ot")
DOMAINS = ("real", "unit_interval")
EXACT_MAX_FEATURES = 16  # exact=None: the exact divergence up to this d, Hutchinson above

Velocity = Callable[[Tensor, Tensor], Tensor]  # v(x (..., d), t (...)) -> (..., d)


# --- the loss and the ODE ----------------------------------------------------------------------
def ot_coupling(noise: Tensor, data: Tensor) -> Tensor:
    r"""``noise`` reordered to minimize Σ_i ||noise_σ(i) - data_i||² over permutations σ: the
    exact minibatch OT coupling (Tong et al., 2024; Pooladian et al., 2023), O(n³) on the CPU."""
    cost = torch.cdist(data.detach().double(), noise.detach().double()).square()  # (n, n)
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return noise[torch.as_tensor(cols[rows.argsort()], device=noise.device)]


def cfm_loss(velocity: Velocity, data: Tensor, *, noise: Tensor | None = None,
             coupling: str = "independent") -> Tensor:
    r"""Per-example ||v(x_t, t) - (x_1 - x_0)||², x_t = (1 - t) x_0 + t x_1, t ~ U(0, 1), shape ``(n,)``.

    ``noise`` (x_0, shape of ``data``) pairs each example with its own noise (reflow); otherwise
    x_0 ~ N(0, I), coupled independently or by minibatch OT (``coupling="ot"``).
    """
    if noise is None:
        noise = torch.randn_like(data)
        if coupling == "ot":
            noise = ot_coupling(noise, data)
    t = torch.rand(data.shape[:-1], dtype=data.dtype, device=data.device)  # (n,)
    x_t = (1 - t[..., None]) * noise + t[..., None] * data
    return (velocity(x_t, t) - (data - noise)).square().sum(-1)


def _standard_normal_log_prob(x: Tensor) -> Tensor:
    return torch.distributions.Normal(torch.zeros((), dtype=x.dtype, device=x.device),
                                      1.0).log_prob(x).sum(-1)


def ode_log_prob(velocity: Velocity, x: Tensor, *, exact: bool = True, num_probes: int = 1,
                 atol: float = 1e-5, rtol: float = 1e-5,
                 generator: torch.Generator | None = None) -> Tensor:
    r"""log p_1(x) = log N(x_0; 0, I) - ∫_0^1 div v(x_t, t) dt, integrating x from t = 1 back to 0.

    Returns ``(num_probes, n)`` values: with ``exact`` every row is the same (the exact
    divergence, d vector-Jacobian products per evaluation); otherwise row j uses Rademacher
    probe ξ_j in Hutchinson's div v ≈ ξᵀ (∂v/∂x) ξ, all rows along the same trajectory.
    """
    n, d = x.shape
    if exact:
        basis = torch.eye(d, dtype=x.dtype, device=x.device).unsqueeze(1).expand(d, n, d)
    else:
        basis = torch.randint(0, 2, (num_probes, n, d), generator=generator, dtype=x.dtype,
                              device=x.device) * 2 - 1  # (probes, n, d)

    def augmented(t: Tensor, x_t: Tensor, _: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            x_t = x_t.detach().requires_grad_(True)
            v = velocity(x_t, t.expand(n))
            (vjps,) = torch.autograd.grad(v, x_t, basis, is_grads_batched=True)
        if exact:
            divergence = torch.einsum("ini->n", vjps).expand(1, n)  # trace of the Jacobian
        else:
            divergence = (vjps * basis).sum(-1)  # (probes, n)
        return v.detach(), -divergence.detach()

    start = x.new_zeros((1 if exact else num_probes, n))
    with torch.no_grad():
        x_0, integral = odeint(augmented, (x, start), 1.0, 0.0, atol=atol, rtol=rtol)
    # integral = ∫_1^0 -div dt = ∫_0^1 div dt
    return _standard_normal_log_prob(x_0) - integral


# --- the family ------------------------------------------------------------------------------
@register_model("flow_matching")
class FlowMatching(StandardizedVectorModel):
    r"""A continuous normalizing flow trained by conditional flow matching (Lipman et al., 2023).

    p(x) is the density of x = scale ⊙ x_1 + shift (with ``domain="unit_interval"``: of
    x = σ-squash(scale ⊙ x_1 + shift), the inverse of logit(α + (1-2α) x)), x_1 the time-1 value of
    dx/dt = v(x, t) started from N(0, I). Training regresses v on the straight path's velocity
    (the model program is ``pyro.factor(-loss)`` in training mode, like the diffusion family's
    ``loss="simple"``); in evaluation mode the program observes x under the ODE density with
    the exact divergence, and :func:`evaluate_ode` (estimator ``"ode"``, the default) scores it.

    Arguments:
        features: d.
        hidden_features, time_features: the velocity network (a residual MLP on (x, t)).
        coupling: ``"independent"`` noise, or ``"ot"``: minibatch optimal transport between
            noise and data (straighter paths, fewer ODE steps; Tong et al., 2024).
        shift, scale: data standardization (scalars or one value per feature), applied after
            the logit transform when ``domain="unit_interval"``.
        domain: ``"real"``, or ``"unit_interval"`` for data in [0, 1]^d (dequantized pixels): the
            flow then models logit(α + (1-2α) x), Jacobian included, as ``FlowModel`` does.
        logit_alpha: α for ``domain="unit_interval"``.
        atol, rtol: the ODE tolerances of the program's density and of sampling.
        dequantized: the data are dequantized integers (labels results ``dequantized``).

    A batch may carry a second tensor of noise paired with each example, ``fit(model, (x,
    x_0))``: the straight path between the given pairs is then regressed (the *reflow* step of
    rectified flow; :meth:`reflow_pairs` draws them from a trained model).

    Example:
        >>> model = FlowMatching(2, hidden_features=(16, 16))
        >>> model.log_prob_ode(torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    has_guide = True  # no latent sample sites: the empty guide is the right one
    default_estimator = "ode"

    def __init__(self, features: int, hidden_features: Sequence[int] = (128, 128, 128),
                 time_features: int = 32, coupling: str = "independent",
                 shift: float | Sequence[float] = 0.0, scale: float | Sequence[float] = 1.0,
                 atol: float = 1e-5, rtol: float = 1e-5, dequantized: bool = False,
                 domain: str = "real", logit_alpha: float = 1e-6) -> None:
        features = check_size("features", features)
        if domain not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
        if not 0.0 < logit_alpha < 0.5:
            raise ValueError(f"logit_alpha must be in (0, 0.5), got {logit_alpha}; e.g. 1e-6")
        if coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {COUPLINGS}, got {coupling!r}")
        if not (atol > 0 and rtol > 0):
            raise ValueError(f"atol and rtol must be positive, got {atol} and {rtol}")
        super().__init__(features=int(features), hidden_features=[int(h) for h in hidden_features],
                         time_features=int(time_features), coupling=coupling,
                         shift=config_floats(shift), scale=config_floats(scale), atol=float(atol),
                         rtol=float(rtol), dequantized=bool(dequantized), domain=domain,
                         logit_alpha=float(logit_alpha))
        self.velocity = MLPVelocity(int(features), hidden_features, time_features)
        self._register_standardization(int(features), shift, scale)

    def validate_batch(self, *batch: Tensor) -> tuple[Tensor, ...]:
        x = self.validate(batch[0])
        if len(batch) > 2:
            raise ValueError(f"a FlowMatching batch is x or (x, noise), got {len(batch)} tensors")
        if len(batch) == 2:
            noise = self.validate(batch[1], name="noise")
            if noise.shape != x.shape:
                raise ValueError(f"noise has shape {tuple(noise.shape)} but the data "
                                 f"{tuple(x.shape)}; reflow pairs each example with its noise")
            return x, noise
        return (x,)

    def standardize(self, x: Tensor) -> Tensor:
        """x_1, the flow's time-1 value for data x."""
        return self.to_flow(x)[0]

    def to_flow(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x_1 for data x and log |det ∂x_1/∂x| per example, shape ``(n,)``."""
        log_det = -torch.log(self.scale).sum().expand(x.shape[:-1])
        if self.config["domain"] == "unit_interval":
            # checked here, not by ``support``: evaluate(num_levels=K) takes integers 0..K-1
            if x.numel() and (x.min() < 0 or x.max() > 1):
                raise ValueError(f"data must lie in [0, 1] for domain='unit_interval' but span "
                                 f"[{float(x.min()):g}, {float(x.max()):g}]; rescale them (e.g. "
                                 "x / 255), or pass discrete data with num_levels=K to evaluate")
            x, logit_log_det = logit_transform(x, self.config["logit_alpha"])
            log_det = log_det + logit_log_det
        return (x - self.shift) / self.scale, log_det

    def from_flow(self, x_1: Tensor) -> Tensor:
        """Data x for the flow's time-1 value x_1 (the inverse of :meth:`standardize`)."""
        x = x_1 * self.scale + self.shift
        if self.config["domain"] == "unit_interval":
            x = LogitTransform(self.config["logit_alpha"]).inv(x).clamp(0, 1)
        return x

    def loss(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        """The per-example conditional flow-matching loss on standardized data, shape ``(n,)``."""
        return cfm_loss(self.velocity, self.standardize(x), noise=noise,
                        coupling=self.config["coupling"])

    def model(self, x: Tensor, noise: Tensor | None = None) -> None:
        pyro.module(self.pyro_name, self)
        with pyro.plate("data", x.shape[0]):
            if self.training:
                pyro.factor("cfm_loss", -self.loss(x, noise))
            else:
                pyro.sample("x", ODEDensity(self), obs=x)

    def log_prob_ode(self, x: Tensor, *, exact: bool = True, num_probes: int = 1,
                     atol: float | None = None, rtol: float | None = None,
                     generator: torch.Generator | None = None) -> Tensor:
        """log p(x) through the ODE, shape ``(n,)`` (Hutchinson: the mean over the probes)."""
        return self.log_prob_probes(x, exact=exact, num_probes=num_probes, atol=atol, rtol=rtol,
                                    generator=generator).mean(0)

    def log_prob_probes(self, x: Tensor, *, exact: bool = True, num_probes: int = 1,
                        atol: float | None = None, rtol: float | None = None,
                        generator: torch.Generator | None = None) -> Tensor:
        """log p(x) per probe, shape ``(num_probes, n)`` (one row when ``exact``)."""
        x_1, log_det = self.to_flow(x)
        values = ode_log_prob(self.velocity, x_1, exact=exact, num_probes=num_probes,
                              atol=atol or self.config["atol"], rtol=rtol or self.config["rtol"],
                              generator=generator)
        return values + log_det

    @torch.no_grad()
    def sample(self, num_samples: int, *, atol: float | None = None, rtol: float | None = None,
               noise: Tensor | None = None) -> Tensor:
        """Samples ``(num_samples, d)``: x_0 ~ N(0, I) (or ``noise``) carried to t = 1."""
        x_1 = self.transport(noise if noise is not None else torch.randn(
            num_samples, self.config["features"], dtype=self.shift.dtype, device=self.shift.device),
            atol=atol, rtol=rtol)
        return self.from_flow(x_1)

    @torch.no_grad()
    def transport(self, noise: Tensor, *, atol: float | None = None,
                  rtol: float | None = None) -> Tensor:
        """x_1: ``noise`` (x_0, ``(n, d)``) integrated from t = 0 to 1, in standardized units."""
        return odeint(lambda t, x: self.velocity(x, t.expand(x.shape[:-1])), noise, 0.0, 1.0,
                      atol=atol or self.config["atol"], rtol=rtol or self.config["rtol"])

    @torch.no_grad()
    def reflow_pairs(self, num_samples: int, **options: Any) -> tuple[Tensor, Tensor]:
        r"""(x, x_0): samples and the noise each came from, for a reflow step
        ``fit(FlowMatching(...), model.reflow_pairs(n))`` (Liu et al., 2023)."""
        noise = torch.randn(num_samples, self.config["features"], dtype=self.shift.dtype,
                            device=self.shift.device)
        return self.sample(num_samples, noise=noise, **options), noise


class ODEDensity(dist.TorchDistribution):
    r"""A :class:`FlowMatching` model's density as a Pyro distribution: log_prob through the ODE
    with the exact divergence (exact up to the model's solver tolerance)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, model: FlowMatching, batch_shape: torch.Size = torch.Size(),
                 validate_args: bool | None = None) -> None:
        self.flow_model = model
        super().__init__(torch.Size(batch_shape), torch.Size([model.config["features"]]),
                         validate_args=validate_args)

    def expand(self, batch_shape: Sequence[int], _instance: Any = None) -> ODEDensity:
        return ODEDensity(self.flow_model, torch.Size(batch_shape))

    def log_prob(self, value: Tensor) -> Tensor:
        flat = value.reshape(-1, value.shape[-1])  # (n, d)
        return self.flow_model.log_prob_ode(flat).reshape(value.shape[:-1])

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        draws = self.flow_model.sample(max(shape.numel(), 1))
        return draws.reshape(shape + self.event_shape)


class GaussianVelocity(nn.Module):
    r"""The optimal straight-path velocity for x_1 ~ N(μ, Σ), x_0 ~ N(0, I):
    u_t(x) = μ + (tΣ - (1-t) I) S_t^{-1} (x - tμ), S_t = (1-t)² I + t² Σ (the ground truth).

    Example:
        >>> v = GaussianVelocity(torch.zeros(2), torch.eye(2))
        >>> v(torch.ones(3, 2), torch.full((3,), 0.5)).shape
        torch.Size([3, 2])
    """

    def __init__(self, mean: Tensor, covariance: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("covariance", covariance)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
        s = t[..., None, None]  # (..., 1, 1)
        marginal_cov = (1 - s) ** 2 * eye + s**2 * self.covariance  # (..., d, d)
        gain = s * self.covariance - (1 - s) * eye
        centred = (x - t[..., None] * self.mean).unsqueeze(-1)  # (..., d, 1)
        return self.mean + (gain @ torch.linalg.solve(marginal_cov, centred)).squeeze(-1)



# --- estimators ------------------------------------------------------------------------------
@FlowMatching.estimator("ode", options=("exact", "num_probes", "atol", "rtol", "num_levels",
                                        "dequantizer", "num_samples", "k", "batch_size", "seed"))
def evaluate_ode(model: FlowMatching, batch: tuple[Tensor, ...], *, exact: bool | None = None,
                 num_probes: int = 4, atol: float | None = None, rtol: float | None = None,
                 num_levels: int | None = None, dequantizer: nn.Module | None = None,
                 num_samples: int = 1, k: int | None = None, batch_size: int | None = 1024,
                 seed: int | None = None) -> LogLikelihood:
    r"""log p(x) by the instantaneous change of variables.

    ``exact=True`` (the default up to d = 16): ``kind="exact"`` up to the ODE tolerance recorded
    in ``settings``; ``exact=False``: ``kind="estimate"``, each value the mean over
    ``num_probes`` Hutchinson probes, whose Monte Carlo error is ``estimator_stderr``.

    With ``num_levels=K`` the data are discrete, x ∈ {0, …, K-1}^D, and the result is the
    dequantization bound E_q[log p((x + u)/K) - D log K - log q(u | x)] with ``num_samples``
    (alias ``k``) draws u ~ q per example: ``dequantizer`` is uniform (the default) or a
    trained :class:`~probgen.guides.dequantizer.VariationalDequantizer`; a lower bound with the
    exact divergence, an estimate of it with Hutchinson's (one probe per draw).
    """
    if not isinstance(model, FlowMatching):
        raise TypeError(f"this estimator needs a FlowMatching model, got {type(model).__name__}")
    x = model.validate(batch[0] if isinstance(batch, tuple) else batch)
    exact = model.config["features"] <= EXACT_MAX_FEATURES if exact is None else bool(exact)
    num_probes = 1 if exact else check_size("num_probes", num_probes)
    atol, rtol = atol or model.config["atol"], rtol or model.config["rtol"]
    settings: dict[str, Any] = {"atol": atol, "rtol": rtol, "solver": "dopri5 (zuko.utils.odeint)",
                                "trace": "exact" if exact else "hutchinson"}
    if num_levels is not None:
        return _dequantized(model, x, settings, exact=exact, num_levels=num_levels,
                            dequantizer=dequantizer, num_samples=int(k or num_samples), seed=seed)
    with eval_mode(model, seed=seed):  # no no_grad: the divergence uses autograd
        probes = map_chunks(lambda chunk: model.log_prob_probes(
            chunk, exact=exact, num_probes=num_probes, atol=atol, rtol=rtol).T, x, batch_size)
    probes = probes.T  # (probes, n)
    estimator_stderr = 0.0
    if num_probes > 1:  # the probes' variance of each example's mean, over the data mean
        estimator_stderr = float((probes.double().var(0) / num_probes).sum().sqrt() / x.shape[0])
    if not exact:
        settings["num_probes"] = num_probes
    return LogLikelihood(probes.mean(0), kind="exact" if exact else "estimate", estimator="ode",
                         num_dims=x.shape[-1], data_space=model.data_space, settings=settings,
                         data_id=data_fingerprint(x), estimator_stderr=estimator_stderr)


def _dequantized(model: FlowMatching, x: Tensor, settings: dict[str, Any], *, exact: bool,
                 num_levels: int, dequantizer: nn.Module | None, num_samples: int,
                 seed: int | None) -> LogLikelihood:
    generator = None if seed is None else torch.Generator(device=x.device).manual_seed(seed)
    with eval_mode(model, seed=seed):
        ll = dequantized_log_likelihood(
            lambda y: model.log_prob_ode(y, exact=exact, atol=settings["atol"],
                                         rtol=settings["rtol"], generator=generator),
            x, num_levels=num_levels, dequantizer=dequantizer, num_samples=num_samples,
            generator=generator)
    settings = {**settings, **ll.settings, "dequantizer": ll.estimator}
    return LogLikelihood(ll.per_example, kind="lower_bound" if exact else "estimate",
                         estimator="ode", num_dims=ll.num_dims, data_space="dequantized",
                         settings=settings, data_id=ll.data_id)
