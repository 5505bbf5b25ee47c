"""EM for Gaussian mixtures as a ``probgen.fit`` method: two matrix products per iteration."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor

from probgen.infer.method import TrainingSetup
from probgen.models.mixture.base import MixtureEM
from probgen.models.mixture.model import GaussianMixture, GaussianMixturePrior, log_prior

__all__ = ["EM", "ComponentCollapseWarning", "initial_parameters"]

INITS = ("kmeans++", "random_points", "model")


class ComponentCollapseWarning(UserWarning):
    """A mixture component shrank onto too few points; its covariance is held up by regularization."""


# --- sufficient statistics in standardized coordinates ---------------------------------------
def _features(x: Tensor, full: bool) -> Tensor:
    r"""φ(x), one row per example: φ(x) = [1, x, upper(x xᵀ)] (full) or [1, x, x²] (diag), so
    that log π N(x | μ, Σ) = η·φ(x). Shape ``(N, F)``: of the layouts MKL's skinny products were
    timed on (K = 16 rows against N = 100,000), ``η φᵀ`` (K, N) and ``R φ`` (K, F) on a
    row-major (N, F) are the fastest pair, about 25% faster than on (F, N); the column of ones
    puts the constants in the E-step's product and the counts in the M-step's."""
    num_examples, num_features = x.shape
    squares = num_features * (num_features + 1) // 2 if full else num_features
    phi = x.new_empty(num_examples, 1 + num_features + squares)
    phi[:, 0] = 1.0
    phi[:, 1:1 + num_features] = x
    if not full:
        torch.mul(x, x, out=phi[:, 1 + num_features:])
        return phi  # (N, 1 + 2D)
    start = 1 + num_features
    for i in range(num_features):  # x_i x_j for j >= i, in triu_indices order
        torch.mul(x[:, i:i + 1], x[:, i:], out=phi[:, start:start + num_features - i])
        start += num_features - i
    return phi  # (N, 1 + D + D(D+1)/2)


def _natural_parameters(log_weights: Tensor, locs: Tensor, scale_tril: Tensor,
                        full: bool) -> Tensor:
    """η (K, F) with log π_k N(x | μ_k, Σ_k) = φ(x)·η_k (its first column: the constants)."""
    num_features = locs.shape[-1]
    if full:
        precision = torch.cholesky_inverse(scale_tril)  # (K, D, D)
        precision_loc = (precision @ locs.unsqueeze(-1)).squeeze(-1)  # (K, D)
        rows, cols = torch.triu_indices(num_features, num_features, device=locs.device)
        # -½ xᵀΛx = Σ_{i<j} -Λ_ij x_i x_j + Σ_i -½ Λ_ii x_i²
        quadratic = -precision[:, rows, cols] * torch.where(rows == cols, 0.5, 1.0).to(locs)
        log_det = scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # ½ log|Σ|, (K,)
    else:
        precision_diag = scale_tril.pow(-2)  # scale_tril holds the (K, D) scales here
        precision_loc = precision_diag * locs
        quadratic = -0.5 * precision_diag
        log_det = scale_tril.log().sum(-1)
    const = (log_weights - 0.5 * (locs * precision_loc).sum(-1) - log_det
             - 0.5 * num_features * math.log(2 * math.pi))
    return torch.cat([const[:, None], precision_loc, quadratic], dim=-1)  # (K, F)


def _second_moments(stats: Tensor, num_features: int, full: bool) -> Tensor:
    """Unpack mean upper(x xᵀ) (K, T) into symmetric (K, D, D), or return (K, D) for diag."""
    if not full:
        return stats
    rows, cols = torch.triu_indices(num_features, num_features, device=stats.device)
    moments = stats.new_zeros(stats.shape[0], num_features, num_features)
    moments[:, rows, cols] = stats
    moments[:, cols, rows] = stats
    return moments


# --- initialization --------------------------------------------------------------------------
def _kmeans_plus_plus(x: Tensor, num_components: int, generator: torch.Generator,
                      lloyd_iters: int = 10) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007) then a few Lloyd steps; (K, D) centers."""
    first = torch.randint(x.shape[0], (1,), generator=generator, device=x.device)
    centers = [x[first[0]]]
    min_dist = ((x - centers[0]) ** 2).sum(-1)  # (N,)
    for _ in range(1, num_components):
        probs = min_dist.clamp_min(0)
        if float(probs.sum()) <= 0:  # fewer distinct points than components
            probs = torch.ones_like(probs)
        index = torch.multinomial(probs, 1, generator=generator)[0]
        centers.append(x[index])
        min_dist = torch.minimum(min_dist, ((x - x[index]) ** 2).sum(-1))
    centers_t = torch.stack(centers)  # (K, D)
    for _ in range(lloyd_iters):
        labels = torch.cdist(x, centers_t).argmin(1)  # (N,)
        one_hot = torch.nn.functional.one_hot(labels, num_components).to(x.dtype)  # (N, K)
        counts = one_hot.sum(0)
        sums = one_hot.T @ x
        centers_t = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centers_t)
    return centers_t


def initial_parameters(x: Tensor, num_components: int, *, covariance: str = "full",
                       init: str = "kmeans++", seed: int | None = None) -> dict[str, Tensor]:
    """Starting weights, locs and covariances (or variances) for EM, on ``x``'s device/dtype,
    shaped as :meth:`GaussianMixture.covariance_shape` for ``covariance``.

    ``"kmeans++"``: k-means++ centers refined by 10 Lloyd steps, hard-assignment weights and
    covariances shrunk toward the data's variances; ``"random_points"``: K distinct random data
    points as means, equal weights, the data covariance for every component.
    """
    num_examples, num_features = x.shape
    if num_components > num_examples:
        raise ValueError(f"num_components={num_components} exceeds the {num_examples} examples")
    generator = torch.Generator(device=x.device)
    generator.manual_seed(int(torch.randint(2**62, ()).item()) if seed is None else seed)
    centered = x - x.mean(0)
    data_cov = centered.T @ centered / num_examples  # (D, D)
    floor = data_cov.diagonal().clamp_min(torch.finfo(x.dtype).eps).diag()  # (D, D)
    if init == "random_points":
        index = torch.randperm(num_examples, generator=generator, device=x.device)[:num_components]
        locs = x[index]
        weights = torch.full((num_components,), 1.0 / num_components, device=x.device, dtype=x.dtype)
        covariances = (data_cov + 1e-6 * floor).expand(num_components, -1, -1).clone()
    elif init == "kmeans++":
        locs = _kmeans_plus_plus(x, num_components, generator)
        labels = torch.cdist(x, locs).argmin(1)
        one_hot = torch.nn.functional.one_hot(labels, num_components).to(x.dtype)  # (N, K)
        counts = one_hot.sum(0)  # (K,)
        diff = x.unsqueeze(1) - locs  # (N, K, D); init only, so one (N, K, D) buffer is fine
        scatter = torch.einsum("nk,nkd,nke->kde", one_hot, diff, diff)  # (K, D, D)
        # Shrink toward the data variances with the weight of D + 1 points: no singular start.
        prior_weight = num_features + 1.0
        covariances = (scatter + prior_weight * floor) / (counts + prior_weight)[:, None, None]
        weights = (counts + 1) / (num_examples + num_components)
    else:
        raise ValueError(f"unknown init {init!r}; choose 'kmeans++', 'random_points' or 'model'")
    params = {"weights": weights, "locs": locs}
    if covariance == "full":
        params["covariances"] = covariances
    elif covariance == "tied":  # pooled over components
        params["covariances"] = (weights[:, None, None] * covariances).sum(0) / weights.sum()
    elif covariance == "diag":
        params["variances"] = covariances.diagonal(dim1=-2, dim2=-1).clone()
    else:
        params["variances"] = covariances.diagonal(dim1=-2, dim2=-1).mean(-1)
    return params


# --- the EM training method ------------------------------------------------------------------
@GaussianMixture.training_method("em")
class EM(MixtureEM):
    r"""EM for a :class:`~probgen.models.mixture.GaussianMixture` (Dempster et al., 1977), run by
    ``probgen.fit(gmm, x, method="em")`` (the mixture's default method).

    Each step is one iteration: the M-step from the responsibilities of the previous E-step,
    then the E-step at the new parameters, whose log-likelihood is the step's loss. Both are one
    matrix product over the data: log π_k N(x | μ_k, Σ_k) = φ(x)·η_k with
    φ(x) = [1, x, upper(x xᵀ)] (E-step) and the expected statistics Rᵀφ(X) (M-step). The data are
    standardized once (per-feature mean and scale) so that the moment form stays accurate; EM
    is affine-equivariant, so the iterates equal those on the raw data. Everything runs on the
    data's device, in ``dtype`` (default: the model's dtype; float64 is the careful choice).

    Losses: ``losses[i]`` is the negative log-likelihood of the whole training set (plus the
    negative log-prior under MAP) at the parameters after step ``i``; the last one is the
    returned model's. ``num_steps`` bounds the iterations; fit stops earlier when converged.

    Options (``probgen.fit(..., method="em", **options)``):
        tol: converged when the objective per example (mean log-likelihood, + log-prior / N
            under MAP) changes by less than this (default 1e-6; 0 runs all ``num_steps``).
        init: ``"kmeans++"`` (default), ``"random_points"`` (see :func:`initial_parameters`,
            drawn from the RNG ``fit`` seeds) or ``"model"`` (the model's current parameters).
        prior: a :class:`GaussianMixturePrior` for MAP EM. Then ``reg_covar`` is not added (the
            prior's scale regularizes), so each iteration provably increases the MAP objective.
            Without a prior, ``model.config["reg_covar"]`` is added to every covariance diagonal.
        dtype: compute in this dtype (e.g. float64 for a float32 model).

    A component that collapses onto too few points raises a :class:`ComponentCollapseWarning`
    (once per component).

    Example:
        >>> import probgen
        >>> from probgen.models.mixture import GaussianMixture
        >>> x = torch.randn(500, 2, dtype=torch.float64)
        >>> result = probgen.fit(GaussianMixture(2, 2).double(), x, num_steps=20, seed=0,
        ...                      progress=False)
        >>> result.method, result.losses[-1] <= result.losses[0]
        ('em', True)
    """

    family = GaussianMixture
    prior_type = GaussianMixturePrior
    inits = INITS
    init_choices = "'kmeans++', 'random_points' or 'model'"

    def __init__(self, setup: TrainingSetup) -> None:
        super().__init__(setup)
        model, init, prior = self.model, self.init, self.prior
        self.full = not model.is_diagonal  # full and tied Σ_k: Cholesky factors; else scales
        self.tied, self.spherical = model.covariance == "tied", model.covariance == "spherical"
        x = setup.example[0].to(self.dtype)
        num_features = x.shape[1]
        num_components = model.num_components
        if init == "model":
            params = {key: value.detach().to(self.dtype)
                      for key, value in model.parameters_dict().items()}
        else:
            params = initial_parameters(x, num_components, covariance=model.covariance, init=init)

        # Standardize: x' = (x - shift) / scale; parameters move with it. Spherical Σ_k stay
        # spherical only under one common scale.
        shift, scale = x.mean(0), x.std(0)
        if self.spherical:
            scale = scale.square().mean().sqrt().expand(num_features)
        self.shift, self.scale = shift, torch.where(scale > 0, scale, torch.ones_like(scale))
        self.outer_scale = (self.scale[:, None] * self.scale[None, :] if self.full
                            else self.scale**2)
        # Inside the loop Σ is always (K, D, D) factors or (K, D) scales; tied and spherical expand.
        self.cov_shape = (num_components, num_features, num_features)[:3 if self.full else 2]
        if self.full:
            scale_tril = torch.linalg.cholesky(params["covariances"].expand(self.cov_shape)
                                               / self.outer_scale)
        else:
            variances = params["variances"]
            variances = variances[:, None] if self.spherical else variances
            scale_tril = (variances.expand(self.cov_shape) / self.outer_scale).sqrt()
        # The iterate in standardized coordinates, updated in place (fit snapshots these).
        self.log_weights = params["weights"].log()
        self.locs = (params["locs"] - self.shift) / self.scale
        self.scale_tril = scale_tril.contiguous()
        self.reg = torch.as_tensor(float(model.config["reg_covar"]), device=x.device,
                                   dtype=self.dtype)
        self.reg_std = self.reg / self.scale**2  # (D,): reg_covar in standardized units
        self.resolved = None
        if prior is not None:
            self.resolved = prior.resolve(x, num_components, model.covariance)
            self.prior_mean = (self.resolved["mean"] - self.shift) / self.scale
            self.prior_scale = self.resolved["scale"] / self.outer_scale
        self.log_scale_sum = self.scale.log().sum()
        self.exp_floor = math.log(torch.finfo(self.dtype).tiny) + 1.0
        self.collapsed: set[int] = set()  # components already warned about
        self.iteration = 0
        self._use_data(setup.example[0])
        if init != "model":
            self._write_model()

    # --- the two halves ------------------------------------------------------------------------
    def _use_data(self, x: Tensor) -> None:
        """Features of ``x`` in the standardized coordinates, then the E-step on them."""
        self.source = x
        self.num_examples = x.shape[0]
        z = (x.to(self.dtype) - self.shift) / self.scale  # (N, D)
        self.phi = _features(z, self.full)  # (N, F)
        self._e_step()

    def _original(self) -> dict[str, Tensor]:
        """The iterate in the data's coordinates."""
        scale, shift = self.scale, self.shift
        out = {"weights": self.log_weights.exp(), "locs": self.locs * scale + shift}
        if self.full:
            tril = scale[:, None] * self.scale_tril  # S L is the Cholesky factor of S Σ S
            tril = tril[0] if self.tied else tril
            out["covariances"] = tril @ tril.transpose(-1, -2)
            out["scale_tril"] = tril
        else:
            variances = (self.scale_tril * scale) ** 2
            out["variances"] = variances[:, 0] if self.spherical else variances
        return out

    def _write_model(self) -> None:
        final = self._original()
        self.model.set_parameters(final["weights"], final["locs"],
                                  final.get("scale_tril", final.get("variances")), factored=True)

    @torch.no_grad()
    def _e_step(self) -> None:
        """Responsibilities ``(K, N)``, the total log-likelihood and the objective."""
        eta = _natural_parameters(self.log_weights, self.locs, self.scale_tril, self.full)
        # Components first: reductions over K become K-1 elementwise ops on length-N rows.
        log_joint = eta @ self.phi.T  # (K, N)
        peak = log_joint.amax(0)  # (N,)
        # In place (no second (K, N) buffer); the clamp keeps exp away from underflow, whose
        # slow scalar path costs 5-15x: e^-86 (float32) is already 0 next to the peak's 1.
        responsibilities = log_joint.sub_(peak).clamp_(min=self.exp_floor).exp_()
        normalizer = responsibilities.sum(0)  # (N,)
        log_marginal = peak + normalizer.log()  # (N,)
        responsibilities.mul_(normalizer.reciprocal_())  # K multiplies per point beat K divides
        total = float(log_marginal.sum()) - self.num_examples * float(self.log_scale_sum)
        objective = total
        if self.resolved is not None:
            current = self._original()
            current.pop("scale_tril", None)
            objective += float(log_prior(current, self.resolved))
        self.responsibilities, self.log_likelihood, self.objective = responsibilities, total, objective

    @torch.no_grad()
    def _m_step(self) -> None:
        """The new iterate from the expected sufficient statistics: one (K, N) @ (N, F) product."""
        dtype, full, tied, spherical = self.dtype, self.full, self.tied, self.spherical
        num_examples, (num_components, num_features) = self.num_examples, self.locs.shape
        responsibilities, cov_shape, reg_std = self.responsibilities, self.cov_shape, self.reg_std
        stats = responsibilities @ self.phi  # (K, F): [Σ r, Σ r x, Σ r upper(x xᵀ)]
        counts = stats[:, 0]  # (K,)
        safe_counts = counts.clamp_min(torch.finfo(dtype).tiny)[:, None]
        means = stats[:, 1:1 + num_features] / safe_counts  # (K, D)
        moments = _second_moments(stats[:, 1 + num_features:] / safe_counts, num_features, full)
        if full:
            scatter = moments - means.unsqueeze(-1) * means.unsqueeze(-2)  # (K, D, D)
        else:
            scatter = moments - means**2  # (K, D)
        empty = counts < 1e-10 * num_examples
        if self.resolved is None:
            new_log_weights = (counts / num_examples).clamp_min(torch.finfo(dtype).tiny).log()
            new_locs = means
            if tied:  # Σ = Σ_k N_k S_k / N
                scatter = (counts[:, None, None] * scatter).sum(0) / num_examples
            elif spherical:  # σ_k² = mean_d S_kd
                scatter = scatter.mean(-1, keepdim=True)
            new_cov = (scatter + (torch.diag(reg_std) if full else reg_std)).expand(cov_shape)
        else:
            resolved, prior_mean, prior_scale = self.resolved, self.prior_mean, self.prior_scale
            kappa, dof = resolved["mean_precision"], resolved["dof"]
            alpha = resolved["concentration"]
            total = num_examples + num_components * (alpha - 1)
            new_log_weights = ((counts + alpha - 1) / total).clamp_min(torch.finfo(dtype).tiny).log()
            new_locs = (counts[:, None] * means + kappa * prior_mean) / (counts[:, None] + kappa)
            offset = means - prior_mean  # (K, D)
            shrink = (kappa * counts / (kappa + counts))[:, None]
            # Modes of the conjugate posteriors: (Ψ + data and mean-prior scatter) / (their weight).
            if tied:
                numerator = prior_scale + (counts[:, None, None] * scatter + shrink[..., None]
                                           * offset.unsqueeze(-1) * offset.unsqueeze(-2)).sum(0)
                new_cov = (numerator / (dof + num_examples + num_features + 1 + num_components)
                           ).expand(cov_shape)
            elif full:
                numerator = (prior_scale + counts[:, None, None] * scatter + shrink[..., None]
                             * offset.unsqueeze(-1) * offset.unsqueeze(-2))
                new_cov = numerator / (dof + counts + num_features + 2)[:, None, None]
            elif spherical:
                numerator = prior_scale.mean() + (counts[:, None] * scatter + shrink * offset**2).sum(-1)
                new_cov = (numerator / (dof + 2 + (counts + 1) * num_features))[:, None].expand(
                    cov_shape)
            else:
                numerator = prior_scale + counts[:, None] * scatter + shrink * offset**2
                new_cov = numerator / (dof + counts + 3)[:, None]
            empty = torch.zeros_like(empty)  # the prior defines every component
        floor = reg_std if self.resolved is None else 0 * reg_std
        if tied:  # one shared Σ: factor it once; a collapse is reported as component 0's
            new_tril, collapsed = _factor(new_cov[:1], floor, full)
            new_tril = new_tril.expand(cov_shape)
            collapsed = torch.cat([collapsed, collapsed.new_zeros(num_components - 1)])
        else:
            new_tril, collapsed = _factor(new_cov, floor, full)
        if self.resolved is None:
            collapsed = collapsed & ~empty
        # An empty component keeps its parameters (its mean is 0/0); its weight goes to ~0.
        # A tied Σ is shared, so it always takes the new value.
        keep = torch.zeros_like(empty) if tied else empty
        keep = keep[:, None, None] if full else keep[:, None]
        new_locs = torch.where(empty[:, None], self.locs, new_locs)
        new_tril = torch.where(keep, self.scale_tril, new_tril)
        self.log_weights.copy_(new_log_weights)
        self.locs.copy_(new_locs)
        self.scale_tril.copy_(new_tril)
        self.iteration += 1
        flags = torch.stack([collapsed, empty]).cpu()  # one sync, with the E-step's
        new_collapsed = [k for k in flags[0].nonzero().flatten().tolist() if k not in self.collapsed]
        for k in new_collapsed:
            self.collapsed.add(k)
            what = ("The tied covariance (shared by all components)" if tied else
                    f"Gaussian mixture component {k}")
            points = num_examples if tied else float(counts[k])
            warnings.warn(
                f"{what} collapsed at EM iteration {self.iteration} "
                f"({points:.3g} effective points): reg_covar={float(self.reg):g} makes up at "
                "least half of its variance along some direction, so its density is degenerate. "
                "It is kept positive definite by regularization; increase reg_covar, fit with "
                "prior=GaussianMixturePrior(), or use fewer components.",
                ComponentCollapseWarning, stacklevel=2)

    # --- the TrainingMethod protocol -----------------------------------------------------------
    def tensors(self) -> list[Tensor]:
        return [*self.model.parameters(), self.log_weights, self.locs, self.scale_tril]

    def state_dict(self) -> dict[str, Any]:
        return {"log_weights": self.log_weights.clone(), "locs": self.locs.clone(),
                "scale_tril": self.scale_tril.clone(), "iteration": self.iteration,
                "collapsed": sorted(self.collapsed)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.log_weights.copy_(state["log_weights"])
        self.locs.copy_(state["locs"])
        self.scale_tril.copy_(state["scale_tril"])
        self.iteration = int(state["iteration"])
        self.collapsed = set(int(k) for k in state["collapsed"])
        self._e_step()


def _factor(covariances: Tensor, reg_std: Tensor, full: bool) -> tuple[Tensor, Tensor]:
    """Cholesky factors (or scales) and a (K,) collapse flag, in standardized coordinates.

    A component collapsed when reg_covar makes up at least half of a conditional variance, or
    when a conditional variance is below the moment form's rounding noise (1000 eps): then it
    gets a jitter of max(1e-6, 10^4 eps) times the data variance so that it stays invertible.
    """
    eps = torch.finfo(covariances.dtype).eps
    noise_floor, jitter = 1e3 * eps, max(1e-6, 1e4 * eps)
    if not full:
        degenerate = covariances < noise_floor  # (K, D)
        variances = torch.where(degenerate, covariances.clamp_min(0) + jitter, covariances)
        collapsed = degenerate.any(-1) | (variances < 2 * reg_std).any(-1)
        return variances.sqrt(), collapsed
    scale_tril, info = torch.linalg.cholesky_ex(covariances)
    conditional_variances = scale_tril.diagonal(dim1=-2, dim2=-1) ** 2  # (K, D)
    degenerate = (info != 0) | (conditional_variances < noise_floor).any(-1)
    if bool(degenerate.any()):
        eye = torch.eye(covariances.shape[-1], device=covariances.device, dtype=covariances.dtype)
        fixed, _ = torch.linalg.cholesky_ex(covariances + jitter * eye)
        scale_tril = torch.where(degenerate[:, None, None], fixed, scale_tril)
        conditional_variances = scale_tril.diagonal(dim1=-2, dim2=-1) ** 2
    collapsed = degenerate | (conditional_variances < 2 * reg_std).any(-1)
    return scale_tril, collapsed
