"""Energy-based models: Bernoulli and Gaussian RBMs, and a neural EBM on an energy network."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import constraints

from probgen.core.model import GenerativeModel
from probgen.core.validate import check_finite, check_memory, check_num_samples, check_size
from probgen.models.ebm.partition import exact_log_partition, exact_partition_layer
from probgen.models.ebm.samplers import mala_sample
from probgen.models.registry import register_model
from probgen.nn.energy import EnergyMLP

__all__ = ["RBMBase", "RBM", "GaussianRBM", "NeuralEBM"]


def _as_beta(beta: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(beta, dtype=like.dtype, device=like.device)


class _Unnormalized(dist.TorchDistribution):
    """The factor exp(-energy) of a model whose log Z cannot be computed, as an observed site.

    Running the program works (``probgen.fit`` traces it to find its parameters); scoring it
    (``log_prob``, as SVI or an exact estimator would) raises ``error(message)``.
    """

    arg_constraints: dict = {}
    support = constraints.real

    def __init__(self, batch_shape: torch.Size, error: type[Exception], message: str) -> None:
        self.error, self.message = error, message
        super().__init__(torch.Size(batch_shape), validate_args=False)

    def expand(self, batch_shape, _instance=None) -> _Unnormalized:
        return _Unnormalized(torch.Size(batch_shape), self.error, self.message)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        raise self.error(self.message)


class RBMBase(GenerativeModel):
    r"""Restricted Boltzmann machine p(v, h) = exp(-E(v, h)) / Z with binary hidden units h.

    The visible term decides the family (Bernoulli: E = -v·b - v·W·h - h·c; Gaussian:
    E = |v - b|²/2σ² - (v/σ)·W·h - h·c). Shapes: ``v`` is ``(*batch, V)``, ``h`` is
    ``(*batch, H)``; every method is vectorised over leading dimensions (chains, examples).

    Subclasses define ``visible_log_factor``, ``sample_visible``, ``log_marginal_hidden``,
    ``base_log_partition``, ``sample_base`` and ``base_rate_from_sums``; AIS
    (:mod:`probgen.models.ebm.ais`) and CD (:mod:`probgen.models.ebm.contrastive`) use only these.
    """

    has_exact_log_prob: ClassVar[bool] = False
    default_estimator: ClassVar[str | None] = "ais"
    default_method: ClassVar[str] = "cd"  # probgen.fit(rbm, x): CD-1 (also "pcd")
    data_size_argument: ClassVar[str | None] = "num_visible"  # filled by from_data, the CLI
    # Enumerate at most 2**this many states for the exact partition function.
    max_exact_units: ClassVar[int] = 20

    def __init__(self, num_visible: int, num_hidden: int, *, init_scale: float = 0.01,
                 seed: int | None = 0, **extra: Any) -> None:
        if isinstance(num_visible, (int, float)) and not isinstance(num_visible, bool) and \
                isinstance(num_hidden, (int, float)) and not isinstance(num_hidden, bool) and \
                (num_visible <= 0 or num_hidden <= 0):
            raise ValueError(f"an RBM needs num_visible > 0 and num_hidden > 0, got "
                             f"{num_visible} and {num_hidden}")
        num_visible = check_size("num_visible", num_visible)
        num_hidden = check_size("num_hidden", num_hidden)
        init_scale = check_finite("init_scale", init_scale, nonnegative=True)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                                 or not 0 <= seed < 2**63):
            raise ValueError(f"seed must be None or an integer in 0 .. 2**63 - 1, got {seed!r}")
        check_memory(f"{type(self).__name__}({num_visible}, {num_hidden})",
                     num_visible * num_hidden + 3 * num_visible + num_hidden,
                     hint="use fewer visible or hidden units")
        super().__init__(num_visible=num_visible, num_hidden=num_hidden, init_scale=init_scale,
                         seed=seed, **extra)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.weight = nn.Parameter(init_scale * torch.randn(num_visible, num_hidden,
                                                            generator=generator))
        self.visible_bias = nn.Parameter(torch.zeros(num_visible))
        self.hidden_bias = nn.Parameter(torch.zeros(num_hidden))
        # Visible biases of the base-rate model AIS anneals from (set from training data).
        self.register_buffer("base_bias", torch.zeros(num_visible))

    @property
    def num_visible(self) -> int:
        return self.weight.shape[0]

    @property
    def num_hidden(self) -> int:
        return self.weight.shape[1]

    def event_shape(self) -> tuple[int, ...]:
        return (self.num_visible,)

    # --- the energy ----------------------------------------------------------------------
    def visible_scale(self) -> torch.Tensor | float:
        """σ for Gaussian visibles (1 for Bernoulli): the hidden units see v / σ."""
        return 1.0

    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        r"""c + (v/σ)·W, shape ``(*batch, H)``: logits of p(h_j = 1 | v)."""
        return self.hidden_bias + (v / self.visible_scale()) @ self.weight

    def visible_log_factor(self, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """The visible-only term of -E(v, h) under visible biases ``bias``, shape ``(*batch,)``."""
        raise NotImplementedError

    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        r"""E(v, h) = -visible_log_factor(v, b) - h·(c + (v/σ)·W), shape ``(*batch,)``."""
        return -self.visible_log_factor(v, self.visible_bias) - (h * self.hidden_logits(v)).sum(-1)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        r"""F(v) = -log Σ_h exp(-E(v, h)) = -visible_log_factor(v, b) - Σ_j softplus(c_j + (v/σ)·W_j)."""
        return -self.visible_log_factor(v, self.visible_bias) - F.softplus(
            self.hidden_logits(v)).sum(-1)

    def log_marginal_hidden(self, h: torch.Tensor) -> torch.Tensor:
        """log Σ_v (or ∫ dv) exp(-E(v, h)), shape ``(*batch,)``: the hidden layer's free energy."""
        raise NotImplementedError

    # --- sampling ------------------------------------------------------------------------
    def sample_hidden(self, v: torch.Tensor, beta: float | torch.Tensor = 1.0) -> torch.Tensor:
        """h ~ p_β(h | v) = Bernoulli(sigmoid(β (c + (v/σ)·W)))."""
        return torch.bernoulli(torch.sigmoid(_as_beta(beta, v) * self.hidden_logits(v)))

    def sample_visible(self, h: torch.Tensor, beta: float | torch.Tensor = 1.0,
                       base_bias: torch.Tensor | None = None) -> torch.Tensor:
        """v ~ p_β(v | h) on the AIS path (1-β)·base + β·RBM (β = 1: the RBM's p(v | h))."""
        raise NotImplementedError

    def gibbs(self, v: torch.Tensor, num_steps: int = 1) -> torch.Tensor:
        """Run ``num_steps`` sweeps of block Gibbs (h | v then v | h) on every chain of ``v``."""
        with torch.no_grad():
            for _ in range(num_steps):
                v = self.sample_visible(self.sample_hidden(v))
        return v

    def init_chains(self, num_chains: int) -> torch.Tensor:
        """Independent draws from the base-rate model, shape ``(num_chains, V)``; a number of
        chains whose states (visible and hidden) cannot fit in memory is refused first."""
        num_chains = check_num_samples("num_chains", num_chains,
                                       per_sample=self.num_visible + self.num_hidden,
                                       element_bytes=self.weight.element_size(),
                                       fix="use at most {largest} chains (a few hundred to a few "
                                           "thousand is usual)")
        return self.sample_base(self.base_bias, num_chains)

    def sample(self, num_samples: int, *, num_steps: int = 1000) -> torch.Tensor:
        """``num_samples`` parallel Gibbs chains run ``num_steps`` sweeps from the base-rate model."""
        return self.gibbs(self.init_chains(num_samples), num_steps)

    # --- the AIS base-rate model (W = 0, c = 0) -------------------------------------------
    def base_rate_bias(self, x: torch.Tensor) -> torch.Tensor:
        """Visible biases of the base-rate model fitted to data ``x`` (Salakhutdinov & Murray, 2008)."""
        return self.base_rate_from_sums(x.sum(0), x.shape[0])

    def base_rate_from_sums(self, total: torch.Tensor, count: int) -> torch.Tensor:
        """:meth:`base_rate_bias` from the data's sum ``(V,)`` over ``count`` examples."""
        raise NotImplementedError

    def base_log_partition(self, base_bias: torch.Tensor) -> torch.Tensor:
        """log Z of the base-rate model with visible biases ``base_bias`` and H free hidden units."""
        raise NotImplementedError

    def sample_base(self, base_bias: torch.Tensor, num_samples: int) -> torch.Tensor:
        raise NotImplementedError

    def set_base_rate(self, x: torch.Tensor) -> None:
        """Fit the AIS base-rate model (and the chains' initial distribution) to data ``x``."""
        with torch.no_grad():
            self.base_bias.copy_(self.base_rate_bias(x.to(self.base_bias)))

    def set_base_rate_from_sums(self, count: int, total: torch.Tensor,
                                squares: torch.Tensor) -> None:
        """:meth:`set_base_rate` from the data's sum (and sum of squares) over ``count`` rows."""
        with torch.no_grad():
            self.base_bias.copy_(self.base_rate_from_sums(total.to(self.base_bias), count))

    def annealed_log_prob(self, v: torch.Tensor, beta: float | torch.Tensor,
                          base_bias: torch.Tensor) -> torch.Tensor:
        r"""log f_β(v) = (1-β)·vis(v; b_A) + β·vis(v; b) + Σ_j softplus(β (c_j + (v/σ)·W_j)) (S&M 2008)."""
        beta = _as_beta(beta, v)
        return ((1 - beta) * self.visible_log_factor(v, base_bias)
                + beta * self.visible_log_factor(v, self.visible_bias)
                + F.softplus(beta * self.hidden_logits(v)).sum(-1))

    # --- the Pyro programs ---------------------------------------------------------------
    @property
    def has_exact_partition(self) -> bool:
        """A layer has at most ``max_exact_units`` units to enumerate: log Z is exact."""
        return exact_partition_layer(self) is not None

    def log_partition(self) -> torch.Tensor:
        """Exact log Z by enumeration (differentiable); raises when both layers are too wide."""
        return exact_log_partition(self)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(v) = -F(v) - log Z (only for RBMs with a layer of <= 20 units)."""
        x = self.validate(x)
        return -self.free_energy(x) - self.log_partition()

    def model(self, x: torch.Tensor) -> None:
        """The normalised program: a factor -F(x) - log Z per example (needs the exact log Z).

        Wide RBMs have no tractable log Z: the program still runs, but scoring it raises. Train
        them with ``probgen.fit(rbm, x, method="cd")`` (or ``"pcd"``) and score them with the
        ``"ais"`` estimator.
        """
        pyro.module(self.pyro_name, self)
        if not self.has_exact_partition:
            with pyro.plate("data", x.shape[0]):
                pyro.sample("log_prob", _Unnormalized(
                    (x.shape[0],), ValueError,
                    f"this {type(self).__name__} has {self.num_visible} visible and "
                    f"{self.num_hidden} hidden units: its log Z cannot be enumerated, so its "
                    "program has no tractable density. Train it with probgen.fit(rbm, x, "
                    "method='cd' or 'pcd') and score it with estimator='ais'"),
                    obs=x.new_zeros(x.shape[0]))
            return
        log_z = self.log_partition()
        with pyro.plate("data", x.shape[0]):
            pyro.factor("log_prob", -self.free_energy(x) - log_z)

    def energy_program(self) -> Callable[[], torch.Tensor]:
        """A Pyro program whose only latent is v ~ exp(-F(v)) (for HMC/NUTS on continuous v)."""
        raise TypeError(f"{type(self).__name__} has discrete visible units, which HMC/NUTS cannot "
                        "sample; use rbm.sample (block Gibbs) instead")


@register_model("rbm")
class RBM(RBMBase):
    r"""Bernoulli-Bernoulli RBM: E(v, h) = -v·b - h·c - v·W·h, v ∈ {0,1}^V, h ∈ {0,1}^H (Hinton, 2002).

    Example:
        >>> rbm = RBM(6, 3).double()
        >>> x = torch.bernoulli(torch.full((4, 6), 0.5, dtype=torch.float64))
        >>> rbm.log_prob(x).shape
        torch.Size([4])
    """

    data_space: ClassVar[str] = "discrete"
    support: ClassVar[str] = "binary"

    def visible_log_factor(self, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return v @ bias

    def log_marginal_hidden(self, h: torch.Tensor) -> torch.Tensor:
        r"""h·c + Σ_i softplus(b_i + (W·h)_i)."""
        return h @ self.hidden_bias + F.softplus(self.visible_bias + h @ self.weight.T).sum(-1)

    def sample_visible(self, h: torch.Tensor, beta: float | torch.Tensor = 1.0,
                       base_bias: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.visible_bias + h @ self.weight.T  # (*batch, V)
        if base_bias is not None:
            beta = _as_beta(beta, h)
            logits = (1 - beta) * base_bias + beta * logits
        return torch.bernoulli(torch.sigmoid(logits))

    def base_rate_from_sums(self, total: torch.Tensor, count: int) -> torch.Tensor:
        # Smoothed pixel marginals, so pixels never on in the data keep a finite bias.
        mean = (total + 0.5) / (count + 1.0)
        return torch.logit(mean)

    def base_log_partition(self, base_bias: torch.Tensor) -> torch.Tensor:
        return F.softplus(base_bias).sum() + self.num_hidden * math.log(2.0)

    def sample_base(self, base_bias: torch.Tensor, num_samples: int) -> torch.Tensor:
        return torch.bernoulli(torch.sigmoid(base_bias).expand(num_samples, -1))


@register_model("gaussian_rbm")
class GaussianRBM(RBMBase):
    r"""Gaussian-Bernoulli RBM: E(v, h) = |v - b|²/2σ² - (v/σ)·W·h - h·c, fixed σ (Hinton, 2012).

    Standardise the data first (σ = 1 then means unit-variance visibles given h).

    Example:
        >>> rbm = GaussianRBM(3, 4).double()
        >>> rbm.log_prob(torch.randn(5, 3, dtype=torch.float64)).shape
        torch.Size([5])
    """

    data_space: ClassVar[str] = "continuous"
    support: ClassVar[str] = "real"
    max_exact_units: ClassVar[int] = 20

    def __init__(self, num_visible: int, num_hidden: int, *, sigma: float = 1.0,
                 init_scale: float = 0.01, seed: int | None = 0) -> None:
        sigma = check_finite("sigma", sigma, positive=True)
        super().__init__(num_visible, num_hidden, init_scale=init_scale, seed=seed, sigma=sigma)
        self.register_buffer("sigma", torch.tensor(float(sigma)))

    def visible_scale(self) -> torch.Tensor:
        return self.sigma

    def visible_log_factor(self, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return -0.5 * (((v - bias) / self.sigma) ** 2).sum(-1)

    def log_marginal_hidden(self, h: torch.Tensor) -> torch.Tensor:
        r"""h·c + Σ_i [b_i a_i/σ + a_i²/2 + ½ log 2πσ²] with a = W·h (the Gaussian integral over v)."""
        a = h @ self.weight.T  # (*batch, V)
        per_visible = self.visible_bias * a / self.sigma + 0.5 * a**2
        constant = 0.5 * self.num_visible * torch.log(2 * math.pi * self.sigma**2)
        return h @ self.hidden_bias + per_visible.sum(-1) + constant

    def sample_visible(self, h: torch.Tensor, beta: float | torch.Tensor = 1.0,
                       base_bias: torch.Tensor | None = None) -> torch.Tensor:
        beta = _as_beta(beta, h)
        bias = self.visible_bias if base_bias is None else (1 - beta) * base_bias + beta * self.visible_bias
        mean = bias + beta * self.sigma * (h @ self.weight.T)
        return mean + self.sigma * torch.randn_like(mean)

    def base_rate_from_sums(self, total: torch.Tensor, count: int) -> torch.Tensor:
        return total / count

    def base_log_partition(self, base_bias: torch.Tensor) -> torch.Tensor:
        return (0.5 * self.num_visible * torch.log(2 * math.pi * self.sigma**2)
                + self.num_hidden * math.log(2.0))

    def sample_base(self, base_bias: torch.Tensor, num_samples: int) -> torch.Tensor:
        return base_bias + self.sigma * torch.randn(num_samples, self.num_visible,
                                                    dtype=base_bias.dtype, device=base_bias.device)

    def energy_program(self) -> Callable[[], torch.Tensor]:
        """A program with latent ``v`` ~ exp(-F(v)) / Z, for ``run_mcmc`` or Pyro's NUTS."""
        scale = self.sigma.expand(self.num_visible)
        return _energy_program(self.free_energy, self.visible_bias, scale)


def _energy_program(energy: Callable[[torch.Tensor], torch.Tensor], base_loc: torch.Tensor,
                    base_scale: torch.Tensor) -> Callable[[], torch.Tensor]:
    def program() -> torch.Tensor:
        # A proper Gaussian draw (so Pyro can initialise), reweighted by a factor to exp(-E(x)).
        base = dist.Normal(base_loc.detach(), base_scale.detach()).to_event(1)
        x = pyro.sample("x", base)
        pyro.factor("neg_energy", -energy(x) - base.log_prob(x))
        return x

    return program


@register_model("ebm")
class NeuralEBM(GenerativeModel):
    r"""p_θ(x) = exp(-E_θ(x)) / Z_θ with an energy network E_θ (Du & Mordatch, 2019).

    Trained by ``probgen.fit(ebm, x)`` (method ``"contrastive"``, with Langevin or HMC negative
    samples); scored by AIS from a diagonal Gaussian base fitted to the training data.

    Example:
        >>> ebm = NeuralEBM(2, hidden_sizes=(8,))
        >>> ebm.energy(torch.randn(3, 2)).shape
        torch.Size([3])
    """

    data_space: ClassVar[str] = "continuous"
    support: ClassVar[str] = "real"
    default_estimator: ClassVar[str | None] = "ais"
    default_method: ClassVar[str] = "contrastive"
    data_size_argument: ClassVar[str | None] = "num_features"  # filled by from_data, the CLI

    def __init__(self, num_features: int, *, hidden_sizes: tuple[int, ...] | list[int] = (64, 64),
                 spectral_norm: bool = False, seed: int | None = 0) -> None:
        num_features = check_size("num_features", num_features)
        if isinstance(hidden_sizes, (str, bytes)) or not hasattr(hidden_sizes, "__iter__"):
            raise ValueError(f"hidden_sizes must be a list of layer widths, got {hidden_sizes!r}")
        hidden_sizes = [check_size("hidden_sizes[]", h) for h in hidden_sizes]
        widths = [num_features, *hidden_sizes, 1]
        check_memory(f"NeuralEBM({num_features}, hidden_sizes={hidden_sizes})",
                     sum(a * b + b for a, b in zip(widths, widths[1:])),
                     hint="use narrower hidden layers")
        super().__init__(num_features=num_features, hidden_sizes=list(hidden_sizes),
                         spectral_norm=spectral_norm, seed=seed)
        if seed is not None:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                self.energy_net = EnergyMLP(num_features, hidden_sizes, spectral_norm=spectral_norm)
        else:
            self.energy_net = EnergyMLP(num_features, hidden_sizes, spectral_norm=spectral_norm)
        # Diagonal Gaussian base for sampling starts and AIS (set from training data).
        self.register_buffer("base_loc", torch.zeros(num_features))
        self.register_buffer("base_scale", torch.ones(num_features))

    def event_shape(self) -> tuple[int, ...]:
        return (self.energy_net.num_features,)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E_θ(x), shape ``(*batch,)``."""
        return self.energy_net(x)

    def set_base_rate(self, x: torch.Tensor) -> None:
        """Fit the diagonal Gaussian base (chain starts, AIS base) to data ``x``."""
        with torch.no_grad():
            self.base_loc.copy_(x.mean(0))
            self.base_scale.copy_(x.std(0).clamp_min(1e-3) if x.shape[0] > 1 else 1.0)

    def set_base_rate_from_sums(self, count: int, total: torch.Tensor,
                                squares: torch.Tensor) -> None:
        """:meth:`set_base_rate` from the data's sum and sum of squares over ``count`` rows."""
        with torch.no_grad():
            mean = total / count
            self.base_loc.copy_(mean)
            if count > 1:
                variance = ((squares - count * mean**2) / (count - 1)).clamp_min(0)
                self.base_scale.copy_(variance.sqrt().clamp_min(1e-3))
            else:
                self.base_scale.fill_(1.0)

    def base_distribution(self) -> dist.Distribution:
        return dist.Normal(self.base_loc, self.base_scale).to_event(1)

    def sample(self, num_samples: int, *, num_steps: int = 500, step_size: float | None = None
               ) -> torch.Tensor:
        """Metropolis-adjusted Langevin chains (exact in the limit) started from the base."""
        start = self.base_distribution().sample((num_samples,))
        step = step_size if step_size is not None else 0.1 * float(self.base_scale.mean())
        return mala_sample(self.energy, start, num_steps=num_steps, step_size=step)

    def model(self, x: torch.Tensor) -> None:
        """Unnormalised: there is no tractable Z. The program runs (registering the energy
        network) but scoring it raises; evaluate with the ``"ais"`` estimator."""
        pyro.module(self.pyro_name, self)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("log_prob", _Unnormalized(
                (x.shape[0],), NotImplementedError,
                "a neural EBM has no normalised Pyro program (Z is intractable); train it with "
                "probgen.fit(ebm, x, method='contrastive'), score it with estimator='ais', and "
                "sample it with energy_program()"), obs=x.new_zeros(x.shape[0]))

    def energy_program(self) -> Callable[[], torch.Tensor]:
        """A program with latent ``x`` ~ exp(-E(x)) / Z, for ``run_mcmc`` or Pyro's NUTS."""
        return _energy_program(self.energy, self.base_loc, self.base_scale)
