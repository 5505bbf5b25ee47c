"""Gaussian mixture: a Pyro program with enumerated assignments, exact log p(x), the MAP prior."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from probgen.core.validate import check_finite, check_memory, check_size
from probgen.models.mixture.base import FiniteMixture
from probgen.models.registry import register_model

__all__ = ["GaussianMixture", "GaussianMixturePrior", "log_prior", "COVARIANCE_TYPES"]

_CHUNK_ELEMENTS = 2**24  # rows per chunk in log_prob: chunk * K * D <= this
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")  # scikit-learn's four


@register_model("gmm")
class GaussianMixture(FiniteMixture):
    r"""Gaussian mixture p(x) = Σ_k π_k N(x | μ_k, Σ_k) (Bishop, 2006, §9.2), with Σ_k full,
    tied (one full Σ shared by all components), diagonal or spherical (σ_k² I), as in scikit-learn.

    The Pyro program samples an assignment per example (enumerated in parallel, so
    ``TraceEnum_ELBO`` gives the exact marginal) and observes x under that component. Fit it with
    ``probgen.fit(gmm, x)``: EM by default (:class:`~probgen.models.mixture.em.EM`, options
    ``tol``, ``init``, ``prior``, ``dtype``), or ``method="svi"`` for gradient steps on the program.

    Parameters (unconstrained, so gradient fitting stays valid): ``logits`` ``(K,)``, ``locs``
    ``(K, D)``, and ``scale_tril_raw`` (strict lower triangle, log-diagonal) of shape
    ``(K, D, D)`` (full) or ``(1, D, D)`` (tied), or ``log_scales`` of shape ``(K, D)`` (diag) or
    ``(K, 1)`` (spherical).

    Arguments:
        num_components: K.
        num_features: D.
        covariance: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
        reg_covar: added to every covariance diagonal in maximum-likelihood EM (as scikit-learn
            does), so collapsing components stay positive definite.

    Example:
        >>> gmm = GaussianMixture(3, 2).double()
        >>> gmm.log_prob(torch.zeros(5, 2, dtype=torch.float64)).shape
        torch.Size([5])
    """

    data_space = "continuous"
    support = "real"
    data_size_argument = "num_features"  # filled from the data by from_data and the CLI

    def __init__(self, num_components: int, num_features: int, covariance: str = "full",
                 reg_covar: float = 1e-6) -> None:
        num_components = check_size("num_components", num_components)
        num_features = check_size("num_features", num_features)
        if covariance not in COVARIANCE_TYPES:
            raise ValueError(f"covariance must be one of {COVARIANCE_TYPES}, got {covariance!r}")
        reg_covar = check_finite("reg_covar", reg_covar, nonnegative=True)
        k, d = num_components, num_features
        scale_numel = {"full": k * d * d, "tied": d * d, "diag": k * d, "spherical": k}[covariance]
        check_memory(f"GaussianMixture({k}, {d}, covariance={covariance!r})",
                     k + k * d + scale_numel,
                     hint="use covariance='diag', fewer components or fewer features"
                     if covariance in ("full", "tied") else "use fewer components or features")
        super().__init__(num_components=int(num_components), num_features=int(num_features),
                         covariance=covariance, reg_covar=float(reg_covar))
        self.num_components, self.num_features = int(num_components), int(num_features)
        self.covariance = covariance
        k, d = self.num_components, self.num_features
        self.logits = nn.Parameter(torch.zeros(k))
        # Spread initial means so components differ; EM re-initializes from data (init="kmeans++").
        self.locs = nn.Parameter(torch.randn(k, d))
        if covariance in ("full", "tied"):
            self.scale_tril_raw = nn.Parameter(torch.zeros(k if covariance == "full" else 1, d, d))
        else:
            self.log_scales = nn.Parameter(torch.zeros(k, d if covariance == "diag" else 1))

    @property
    def is_diagonal(self) -> bool:
        """Σ_k diagonal: ``"diag"`` or ``"spherical"``."""
        return self.covariance in ("diag", "spherical")

    # --- parameters ----------------------------------------------------------------------
    @property
    def scales(self) -> Tensor:
        """Standard deviations of diagonal Σ_k, shape ``(K, D)`` (diag and spherical only)."""
        return self.log_scales.exp().expand(self.num_components, self.num_features)

    @property
    def scale_tril(self) -> Tensor:
        """Cholesky factors L_k of Σ_k = L_k L_kᵀ, shape ``(K, D, D)`` (diagonal for diag)."""
        if self.is_diagonal:
            return torch.diag_embed(self.scales)
        raw = self.scale_tril_raw
        tril = raw.tril(-1) + torch.diag_embed(raw.diagonal(dim1=-2, dim2=-1).exp())
        return tril.expand(self.num_components, -1, -1)

    @property
    def covariance_matrix(self) -> Tensor:
        """Σ_k, shape ``(K, D, D)``."""
        tril = self.scale_tril
        return tril @ tril.transpose(-1, -2)

    def covariance_shape(self) -> tuple[int, ...]:
        """Shape of the covariance argument, as scikit-learn's ``covariances_``: ``(K, D, D)``
        (full), ``(D, D)`` (tied), ``(K, D)`` variances (diag) or ``(K,)`` variances (spherical)."""
        k, d = self.num_components, self.num_features
        return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[
            self.covariance]

    def parameters_dict(self) -> dict[str, Tensor]:
        """``weights``, ``locs`` and ``covariances`` (full, tied) or ``variances`` (diag,
        spherical), detached, shaped as :meth:`covariance_shape`."""
        out = {"weights": self.weights.detach(), "locs": self.locs.detach()}
        if not self.is_diagonal:
            covariances = self.covariance_matrix.detach()
            out["covariances"] = covariances if self.covariance == "full" else covariances[0]
        else:
            variances = (2 * self.log_scales).exp().detach()
            out["variances"] = variances if self.covariance == "diag" else variances[:, 0]
        return out

    @torch.no_grad()
    def set_parameters(self, weights: Tensor, locs: Tensor, covariances: Tensor, *,
                       factored: bool = False) -> GaussianMixture:
        """Set π ``(K,)``, μ ``(K, D)`` and Σ shaped as :meth:`covariance_shape`; with
        ``factored=True`` full or tied Σ is given as Cholesky factors."""
        options = dict(device=self.logits.device, dtype=self.logits.dtype)
        weights, locs, covariances = (torch.as_tensor(t).to(**options)
                                      for t in (weights, locs, covariances))
        shape = (self.num_components, self.num_features)
        cov_shape = self.covariance_shape()
        if (tuple(weights.shape) != shape[:1] or tuple(locs.shape) != shape
                or tuple(covariances.shape) != cov_shape):
            raise ValueError(f"expected weights {shape[:1]}, locs {shape} and covariances "
                             f"{cov_shape}; got {tuple(weights.shape)}, {tuple(locs.shape)}, "
                             f"{tuple(covariances.shape)}")
        if (weights < 0).any() or abs(float(weights.sum()) - 1) > 1e-6:
            raise ValueError("weights must be non-negative and sum to 1")
        self.logits.copy_(weights.clamp_min(torch.finfo(weights.dtype).tiny).log())
        self.locs.copy_(locs)
        if self.is_diagonal:
            if (covariances <= 0).any():
                raise ValueError("variances must be > 0")
            self.log_scales.copy_(0.5 * covariances.log().reshape(self.log_scales.shape))
            return self
        tril = covariances if factored else torch.linalg.cholesky_ex(covariances)[0]
        diagonal = tril.diagonal(dim1=-2, dim2=-1)
        if not (diagonal > 0).all():
            raise ValueError("covariances must be symmetric positive definite")
        raw = tril.tril(-1) + torch.diag_embed(diagonal.log())
        self.scale_tril_raw.copy_(raw.reshape(self.scale_tril_raw.shape))
        return self

    def num_parameters(self) -> int:
        """Free parameters: (K-1) + KD + K·D(D+1)/2 (full), D(D+1)/2 (tied), KD (diag), K
        (spherical), as scikit-learn counts them for BIC."""
        k, d = self.num_components, self.num_features
        cov = {"full": k * d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": k * d,
               "spherical": k}[self.covariance]
        return (k - 1) + k * d + cov

    def event_shape(self) -> tuple[int, ...]:
        return (self.num_features,)

    # --- the Pyro program ----------------------------------------------------------------
    def component_distribution(self) -> dist.Distribution:
        """The K components as one batched distribution, batch shape ``(K,)``."""
        if self.is_diagonal:
            return dist.Normal(self.locs, self.scales).to_event(1)
        return dist.MultivariateNormal(self.locs, scale_tril=self.scale_tril)

    def model(self, x: Tensor) -> None:
        """z_n ~ Categorical(π) (enumerated), x_n | z_n ~ N(μ_z, Σ_z), in a plate over examples."""
        pyro.module(self.pyro_name, self)
        weights, locs = self.weights, self.locs
        scales = self.scales if self.is_diagonal else self.scale_tril
        with pyro.plate("data", x.shape[0]):
            assignment = pyro.sample("assignment", dist.Categorical(weights),
                                     infer={"enumerate": "parallel"})
            # Valid by construction (exp'd diagonals), so no argument check: run without
            # enumeration (fit tracing the program, predictive draws) the factors are (N, D, D).
            if self.is_diagonal:
                likelihood = dist.Normal(locs[assignment], scales[assignment],
                                         validate_args=False).to_event(1)
            else:
                likelihood = dist.MultivariateNormal(locs[assignment], scale_tril=scales[assignment],
                                                     validate_args=False)
            pyro.sample("obs", likelihood, obs=x)

    # --- exact fast paths ----------------------------------------------------------------
    def _component_log_probs(self, x: Tensor) -> Tensor:
        """log π_k + log N(x_n | μ_k, Σ_k), shape ``(N, K)``: one matmul for all Mahalanobis terms."""
        k, d = self.num_components, self.num_features
        log_weights = torch.log_softmax(self.logits, -1)
        if self.is_diagonal:
            inverse = torch.diag_embed(1 / self.scales)  # (K, D, D)
            log_det = self.log_scales.expand(k, d).sum(-1)
        else:
            tril = self.scale_tril
            eye = torch.eye(d, device=tril.device, dtype=tril.dtype).expand(k, d, d)
            inverse = torch.linalg.solve_triangular(tril, eye, upper=False)  # L⁻¹, (K, D, D)
            log_det = tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        projection = inverse.transpose(-1, -2).permute(1, 0, 2).reshape(d, k * d)  # [L_k⁻ᵀ]_k
        shift = (inverse @ self.locs.unsqueeze(-1)).squeeze(-1)  # L_k⁻¹ μ_k, (K, D)
        chunk = max(1, _CHUNK_ELEMENTS // (k * d))
        parts = []
        for start in range(0, x.shape[0], chunk):
            white = (x[start:start + chunk] @ projection).view(-1, k, d) - shift  # (n, K, D)
            parts.append(-0.5 * white.square().sum(-1))
        mahalanobis = torch.cat(parts)  # (N, K)
        return mahalanobis + log_weights - log_det - 0.5 * d * math.log(2 * math.pi)

    def predict(self, x: Tensor) -> Tensor:
        """Most probable component per example, shape ``(N,)``."""
        return self.responsibilities(x).argmax(-1)

    def bic(self, x: Tensor) -> float:
        """Bayesian information criterion -2 Σ_n log p(x_n) + p log N (Schwarz, 1978); lower is better."""
        x = self.validate(x)
        with torch.no_grad():
            total = float(self.log_prob(x).sum())
        return -2 * total + self.num_parameters() * math.log(x.shape[0])

    @torch.no_grad()
    def sample(self, num_samples: int) -> Tensor:
        """Ancestral samples: z ~ Categorical(π), x = μ_z + L_z ε, ε ~ N(0, I); ``(n, D)``."""
        assignment = torch.multinomial(self.weights, num_samples, replacement=True)  # (n,)
        noise = torch.randn(num_samples, self.num_features, device=self.locs.device,
                            dtype=self.locs.dtype)
        if self.is_diagonal:
            return self.locs[assignment] + self.scales[assignment] * noise
        return self.locs[assignment] + (self.scale_tril[assignment] @ noise.unsqueeze(-1)).squeeze(-1)


# --- the conjugate prior for MAP EM ----------------------------------------------------------
@dataclass(frozen=True)
class GaussianMixturePrior:
    r"""Conjugate prior for MAP EM: π ~ Dir(α), Σ_k ~ IW(Ψ₀, ν₀), μ_k | Σ_k ~ N(m₀, Σ_k / κ₀).

    With diagonal covariances each variance gets the matching inverse gamma IG(ν₀/2, ψ₀/2), with
    spherical ones each σ_k² gets IG(ν₀/2, ψ₀/2) and μ_k | σ_k² ~ N(m₀, σ_k² I / κ₀), and a tied
    Σ gets one IW(Ψ₀, ν₀) shared by the K means' priors.
    Defaults follow Fraley & Raftery (2007), "Bayesian regularization for normal mixture
    estimation and model-based clustering": m₀ the data mean, κ₀ = 0.01, ν₀ = D + 2,
    Ψ₀ = cov(x) / K^(2/D).

    Arguments:
        weight_concentration: α >= 1 (1: flat prior on the weights, as in ML).
        mean_precision: κ₀ > 0.
        mean: m₀, shape ``(D,)``; None: the data mean.
        degrees_of_freedom: ν₀ > D - 1; None: D + 2.
        scale: Ψ₀, shape ``(D, D)`` (full, tied), ``(D,)`` (diag) or ``()`` (spherical); None:
            cov(x) / K^(2/D), its diagonal, or the mean of its diagonal (a constant feature's
            variance floored at 1e-6 of the mean variance, so Ψ₀ stays positive definite).
    """

    weight_concentration: float = 1.0
    mean_precision: float = 0.01
    mean: Tensor | None = None
    degrees_of_freedom: float | None = None
    scale: Tensor | None = None

    def resolve(self, x: Tensor, num_components: int, covariance: str) -> dict[str, Tensor]:
        """Fill the data-dependent defaults; tensors on ``x``'s device and dtype."""
        num_features = x.shape[1]
        options = dict(device=x.device, dtype=x.dtype)
        if self.weight_concentration < 1:
            raise ValueError(f"weight_concentration must be >= 1 for a MAP estimate to exist, got "
                             f"{self.weight_concentration}")
        if self.mean_precision <= 0:
            raise ValueError(f"mean_precision must be > 0, got {self.mean_precision}")
        dof = num_features + 2.0 if self.degrees_of_freedom is None else float(self.degrees_of_freedom)
        if dof <= num_features - 1:
            raise ValueError(f"degrees_of_freedom must exceed num_features - 1 = {num_features - 1}, "
                             f"got {dof}")
        mean = x.mean(0) if self.mean is None else torch.as_tensor(self.mean, **options)
        if self.scale is None:
            centered = x - x.mean(0)
            data_cov = centered.T @ centered / max(x.shape[0] - 1, 1)  # (D, D)
            # a constant feature (e.g. a digit's border pixel) would make Ψ₀ singular: floor
            # its variance at 1e-6 of the mean variance (other features are left as they are)
            variances = data_cov.diagonal()
            floor = 1e-6 * (float(variances.mean()) or 1.0)
            data_cov = data_cov + torch.diag((floor - variances).clamp(min=0))
            scale = data_cov / num_components ** (2.0 / num_features)
            if covariance in ("diag", "spherical"):
                scale = scale.diagonal().clone()
            if covariance == "spherical":
                scale = scale.mean()
        else:
            scale = torch.as_tensor(self.scale, **options)
        want = {"full": (num_features, num_features), "tied": (num_features, num_features),
                "diag": (num_features,), "spherical": ()}[covariance]
        if tuple(mean.shape) != (num_features,) or tuple(scale.shape) != want:
            raise ValueError(f"prior mean must have shape ({num_features},) and scale {want} for "
                             f"{covariance} covariances; got {tuple(mean.shape)} and "
                             f"{tuple(scale.shape)}")
        return {"concentration": torch.tensor(float(self.weight_concentration), **options),
                "mean_precision": torch.tensor(float(self.mean_precision), **options),
                "mean": mean, "dof": torch.tensor(dof, **options), "scale": scale}


def log_prior(params: dict[str, Tensor], prior: dict[str, Tensor]) -> Tensor:
    r"""log p(θ) of mixture parameters under a resolved :class:`GaussianMixturePrior`.

    params: ``weights (K,)``, ``locs (K, D)``, and ``covariances`` ``(K, D, D)`` (full) or
    ``(D, D)`` (tied), or ``variances`` ``(K, D)`` (diag) or ``(K,)`` (spherical).
    log IW(Σ | Ψ, ν) = ν/2 log|Ψ| - νD/2 log 2 - log Γ_D(ν/2) - (ν+D+1)/2 log|Σ| - tr(ΨΣ⁻¹)/2.
    """
    weights, locs = params["weights"], params["locs"]
    num_components, num_features = locs.shape
    alpha, kappa, dof = prior["concentration"], prior["mean_precision"], prior["dof"]
    log_dirichlet = (torch.lgamma(num_components * alpha) - num_components * torch.lgamma(alpha)
                     + torch.xlogy(alpha - 1, weights).sum())
    if "covariances" in params:
        covariances = params["covariances"]  # (K, D, D), or (D, D) when tied
        scale_tril = torch.linalg.cholesky(covariances)
        log_normal = torch.distributions.MultivariateNormal(
            prior["mean"], scale_tril=scale_tril / kappa.sqrt()).log_prob(locs).sum()
        log_det_cov = 2 * scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (K,)
        log_det_scale = torch.linalg.slogdet(prior["scale"])[1]
        trace = torch.cholesky_solve(prior["scale"].expand_as(covariances),
                                     scale_tril).diagonal(dim1=-2, dim2=-1).sum(-1)  # (K,)
        log_iw = (dof / 2 * log_det_scale - dof * num_features / 2 * math.log(2.0)
                  - torch.special.multigammaln(dof / 2, num_features)
                  - (dof + num_features + 1) / 2 * log_det_cov - trace / 2)
        return log_dirichlet + log_normal + log_iw.sum()
    variances = params["variances"]  # (K, D), or (K,) when spherical
    mean_variances = variances if variances.dim() == 2 else variances[:, None]
    log_normal = torch.distributions.Normal(prior["mean"], (mean_variances / kappa).sqrt()).log_prob(locs)
    shape, rate = dof / 2, prior["scale"] / 2
    log_ig = shape * rate.log() - torch.lgamma(shape) - (shape + 1) * variances.log() - rate / variances
    return log_dirichlet + log_normal.sum() + log_ig.sum()
