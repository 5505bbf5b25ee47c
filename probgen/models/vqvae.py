r"""VQ-VAE: a grid of discrete codes, a decoder likelihood, and any exact-likelihood prior over codes.

For the deterministic one-hot posterior q(z | x) = δ(z = z_q(x)) the ELBO has no entropy term:
log p(x) ≥ log p(x | z_q(x)) + log p(z_q(x)) (van den Oord et al., 2017). Summing p(x, z) over
any set of distinct codes that holds z_q(x) is a tighter bound, still below log p(x) = log Σ_z
p(x, z); :func:`evaluate_code_sum` sums over z_q(x) and its single-position neighbours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.distributions import constraints

from probgen.core.chunks import eval_mode, map_chunks
from probgen.core.model import GenerativeModel
from probgen.core.result import LogLikelihood, data_fingerprint
from probgen.distributions.likelihoods import PARAMS_PER_DIM, check_bins, observation_distribution
from probgen.infer.method import TrainingSetup
from probgen.infer.svi import SVI
from probgen.models.registry import get_model_class, register_model
from probgen.models.vae import ObservationCapabilities
from probgen.nn import MLP, activation
from probgen.nn.quantize import CODEBOOK_UPDATES, Codebook

__all__ = ["VQVAE", "PositionCategorical", "CodePrior", "AutoencoderStage", "PriorStage",
           "evaluate_vq_bound", "evaluate_code_sum", "neighbour_codes", "PRIORS"]

PRIORS = ("categorical", "made", "pixelcnn")
LIKELIHOODS = ("bernoulli", "discretized_logistic")


class PositionCategorical(nn.Module):
    r"""p(z) = Π_p Categorical(z_p | softmax(θ_p)): independent codes, the baseline prior.

    Exact ``log_prob`` of code grids ``(n, P)`` (long), shape ``(n,)``; ``sample(n)``.
    """

    has_exact_log_prob = True
    support = "categorical"

    def __init__(self, num_positions: int, num_categories: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(int(num_positions), int(num_categories)))

    def log_prob(self, codes: Tensor) -> Tensor:
        log_probs = self.logits.log_softmax(-1)  # (P, K)
        index = codes.long().unsqueeze(-1)  # (n, P, 1)
        return log_probs.expand(*codes.shape, -1).gather(-1, index).squeeze(-1).sum(-1)

    def sample(self, num_samples: int) -> Tensor:
        return dist.Categorical(logits=self.logits).sample((int(num_samples),))


class CodePrior(dist.TorchDistribution):
    """A prior family's exact p(z) over flat code grids as a distribution, event shape ``(P,)``."""

    arg_constraints: ClassVar[dict] = {}
    has_enumerate_support = False

    def __init__(self, vq: VQVAE, batch_shape: torch.Size | tuple[int, ...] = (),
                 validate_args: bool | None = False) -> None:
        self.vq = vq
        super().__init__(torch.Size(batch_shape), torch.Size([vq.num_positions]),
                         validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.integer_interval(0, self.vq.num_codes - 1), 1)

    def expand(self, batch_shape: torch.Size | tuple[int, ...], _instance: Any = None) -> CodePrior:
        return CodePrior(self.vq, batch_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        return self.vq.prior_log_prob(value)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        return self.vq.sample_codes(max(shape.numel(), 1))[: shape.numel()].reshape(
            *shape, self.vq.num_positions)


class _GridEncoder(nn.Module):
    """Images ``(n, C, H, W)`` -> code vectors ``(n, D, H/4, W/4)``: two stride-2 convolutions."""

    def __init__(self, in_channels: int, code_dim: int, channels: int, act: str) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), activation(act),
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1), activation(act),
            nn.Conv2d(2 * channels, code_dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _GridDecoder(nn.Module):
    """Code vectors ``(n, D, h, w)`` -> outputs ``(n, out_channels, 4h, 4w)``."""

    def __init__(self, code_dim: int, out_channels: int, channels: int, act: str) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(code_dim, 2 * channels, 3, padding=1), activation(act),
            nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1), activation(act),
            nn.ConvTranspose2d(channels, out_channels, 4, stride=2, padding=1))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


@register_model("vqvae")
class VQVAE(ObservationCapabilities, GenerativeModel):
    r"""z ~ p(z) over a grid of P codes in 1..K; x ~ p(x | e_z); z_q(x) = nearest codes to enc(x).

    Training is two stages, both through ``probgen.fit`` on the data (van den Oord et al., 2017):
    ``fit(vq, x)`` (method ``"autoencoder"``) trains encoder, decoder and codebook with a uniform
    prior, straight-through gradients and the commitment loss β||z_e - sg(e)||²; then
    ``fit(vq, x, method="prior")`` fits the prior by maximum likelihood on the codes z_q(x) with
    the autoencoder frozen. ``method="svi"`` trains all of it jointly. ``evaluate`` reports the
    one-hot-posterior bound log p(x | z_q) + log p(z_q), labelled ``lower_bound``.

    References:
        | Neural Discrete Representation Learning (van den Oord et al., 2017)
        | https://arxiv.org/abs/1711.00937

    Arguments:
        data_shape: one example: ``(D,)`` for ``network="mlp"``, ``(C, H, W)`` for ``"conv"``
            (H, W multiples of 4; the code grid is H/4 × W/4).
        num_codes: K, the codebook size.
        code_dim: the size of each code vector.
        num_positions: the codes per example of the MLP network (the conv grid sets its own).
        hidden_features: the MLP's hidden widths (the decoder mirrors them).
        likelihood: ``"bernoulli"`` or ``"discretized_logistic"`` (integers 0..num_bins-1).
        codebook_update: ``"ema"`` (moving averages) or ``"straight_through"`` (the codebook
            loss ||sg(z_e) - e||² trains the codes); both restart dead codes.
        commitment: β of the commitment loss.
        decay, restart_threshold: the EMA decay; usage (vectors per batch) below which a code
            restarts at a batch vector.
        prior: ``"categorical"`` (independent positions), ``"made"``, ``"pixelcnn"`` (conv
            grids), or the name of any registered exact-likelihood family whose data are the
            ``(n, P)`` code grids.
        prior_options: keyword arguments of the prior family (e.g. ``{"hidden_features":
            [256]}``); ``num_categories`` and the size are filled in.

    Example:
        >>> vq = VQVAE((16,), num_codes=4, code_dim=2, num_positions=3, hidden_features=(16,))
        >>> vq.sample(2).shape
        torch.Size([2, 16])
        >>> vq.codes(torch.zeros(5, 16)).shape
        torch.Size([5, 3])
    """

    has_guide = True
    default_method = "autoencoder"
    default_estimator = "vq_bound"
    data_size_argument = "data_shape"  # filled from the data by from_data and the CLI

    def __init__(self, data_shape: Sequence[int] = (784,), *, num_codes: int = 64,
                 code_dim: int = 16, num_positions: int = 16,
                 hidden_features: Sequence[int] = (256,), network: str = "mlp",
                 channels: int = 32, activation: str = "relu", likelihood: str = "bernoulli",
                 num_bins: int = 256, codebook_update: str = "ema", commitment: float = 0.25,
                 decay: float = 0.99, restart_threshold: float = 1.0, prior: str = "categorical",
                 prior_options: dict | None = None) -> None:
        data_shape = [int(s) for s in data_shape]
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if network not in ("mlp", "conv"):
            raise ValueError(f"network must be 'mlp' or 'conv', got {network!r}")
        if codebook_update not in CODEBOOK_UPDATES:
            raise ValueError(f"codebook_update must be one of {CODEBOOK_UPDATES}, got "
                             f"{codebook_update!r}")
        if network == "conv" and (len(data_shape) != 3 or data_shape[1] % 4 or data_shape[2] % 4):
            raise ValueError(f"a conv VQVAE needs data_shape (C, H, W) with H and W multiples "
                             f"of 4, got {tuple(data_shape)}")
        if int(num_codes) < 2:
            raise ValueError(f"num_codes must be >= 2, got {num_codes}")
        if not commitment >= 0 or not 0 <= decay < 1:
            raise ValueError(f"commitment must be >= 0 and decay in [0, 1), got {commitment}, "
                             f"{decay}")
        super().__init__(data_shape=data_shape, num_codes=int(num_codes), code_dim=int(code_dim),
                         num_positions=int(num_positions),
                         hidden_features=[int(h) for h in hidden_features], network=network,
                         channels=int(channels), activation=activation, likelihood=likelihood,
                         num_bins=int(num_bins), codebook_update=codebook_update,
                         commitment=float(commitment), decay=float(decay),
                         restart_threshold=float(restart_threshold), prior=prior,
                         prior_options=dict(prior_options or {}))
        self.data_shape, self.likelihood = tuple(data_shape), likelihood
        self.num_codes, self.code_dim, self.num_bins = int(num_codes), int(code_dim), int(num_bins)
        self.network, self.commitment = network, float(commitment)
        per_dim = PARAMS_PER_DIM[likelihood]
        if network == "mlp":
            self.code_shape: tuple[int, ...] = (int(num_positions),)
            num_data = math.prod(self.data_shape)
            self.encoder: nn.Module = MLP(num_data, int(num_positions) * self.code_dim,
                                          hidden_features, activation)
            self.decoder: nn.Module = MLP(int(num_positions) * self.code_dim, per_dim * num_data,
                                          list(hidden_features)[::-1], activation)
        else:
            c, h, w = self.data_shape
            self.code_shape = (h // 4, w // 4)
            self.encoder = _GridEncoder(c, self.code_dim, int(channels), activation)
            self.decoder = _GridDecoder(self.code_dim, per_dim * c, int(channels), activation)
        self.num_positions = math.prod(self.code_shape)
        self.codebook = Codebook(self.num_codes, self.code_dim, update=codebook_update,
                                 decay=decay, restart_threshold=restart_threshold)
        self.prior = self._build_prior(prior, dict(prior_options or {}))
        self.stage = "joint"  # "autoencoder": uniform prior (stage one); "prior": stage two
        self._encoded: tuple[Tensor, Tensor, Tensor] | None = None

    def _build_prior(self, name: str, options: dict) -> nn.Module:
        if name == "categorical":
            return PositionCategorical(self.num_positions, self.num_codes)
        family = get_model_class(name)
        if not family.has_exact_log_prob:
            raise ValueError(f"the prior over codes must be an exact-likelihood family; "
                             f"{name!r} has no exact log_prob")
        options = {"num_categories": self.num_codes, **options}
        if name == "made":
            return family(self.num_positions, **options)
        if name == "pixelcnn":
            if len(self.code_shape) != 2:
                raise ValueError("prior='pixelcnn' needs a 2-D code grid: network='conv'")
            return family(self.code_shape, **options)
        return family(**options)

    # --- networks ------------------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """Code vectors z_e(x): ``(*batch, P, code_dim)``."""
        x = x.to(self.codebook.usage.dtype)
        if self.likelihood == "discretized_logistic":
            x = 2 * x / (self.num_bins - 1) - 1
        batch_shape = x.shape[: x.dim() - len(self.data_shape)]
        if self.network == "mlp":
            out = self.encoder(x.reshape(*batch_shape, -1))
            return out.reshape(*batch_shape, self.num_positions, self.code_dim)
        grid = self.encoder(x.reshape(-1, *self.data_shape))  # (n, D, h, w)
        return grid.permute(0, 2, 3, 1).reshape(*batch_shape, self.num_positions, self.code_dim)

    def decode_vectors(self, vectors: Tensor) -> dist.Distribution:
        """p(x | code vectors ``(*batch, P, code_dim)``), event shape ``data_shape``."""
        batch_shape = vectors.shape[:-2]
        if self.network == "mlp":
            out = self.decoder(vectors.reshape(*batch_shape, -1))
        else:
            grid = vectors.reshape(-1, *self.code_shape, self.code_dim).permute(0, 3, 1, 2)
            out = self.decoder(grid)  # (prod(batch), per_dim * C, H, W)
        return observation_distribution(out.reshape(*batch_shape, -1), batch_shape,
                                        self.data_shape, self.likelihood, num_bins=self.num_bins)

    def decode(self, codes: Tensor) -> dist.Distribution:
        """p(x | z) for code grids ``(*batch, P)``, event shape ``data_shape``."""
        return self.decode_vectors(self.codebook.embed(codes))

    @torch.no_grad()
    def codes(self, x: Tensor) -> Tensor:
        """z_q(x): the nearest code at each position, ``(n, P)`` (long); reshape to
        ``(n, *code_shape)`` for the grid."""
        return self.codebook.nearest(self.encode(x))

    def prior_log_prob(self, codes: Tensor) -> Tensor:
        """Exact log p(z) of code grids ``(*batch, P)`` under the prior family: ``batch``."""
        flat = codes.reshape(-1, self.num_positions)
        if getattr(self.prior, "support", "categorical") == "binary":  # a 2-code Bernoulli prior
            flat = flat.to(self.codebook.usage.dtype)
        return self.prior.log_prob(flat).reshape(codes.shape[:-1])

    @torch.no_grad()
    def sample_codes(self, num_samples: int) -> Tensor:
        """Code grids drawn from the prior: ``(num_samples, P)`` (long)."""
        drawn = self.prior.sample(int(num_samples))
        return drawn.reshape(int(num_samples), self.num_positions).long()

    # --- the program ---------------------------------------------------------------------
    def code_distribution(self, batch_shape: torch.Size | tuple[int, ...]) -> dist.Distribution:
        """p(z): the prior family, or uniform over the K^P grids in stage one (as in the paper)."""
        if self.stage == "autoencoder":
            logits = self.codebook.usage.new_zeros(*batch_shape, self.num_positions,
                                                   self.num_codes)
            return dist.Categorical(logits=logits, validate_args=False).to_event(1)
        return CodePrior(self, batch_shape)

    def set_stage(self, stage: str) -> None:
        """``"joint"``, ``"autoencoder"`` (uniform prior) or ``"prior"`` (autoencoder frozen)."""
        self.stage = stage
        for module in (self.encoder, self.decoder, self.codebook):
            module.requires_grad_(stage != "prior")

    def model(self, x: Tensor) -> None:
        r"""z ~ p(z); x ~ p(x | e_z). In training the decoder reads z_e + sg(e_z - z_e) (straight
        through) and a factor adds -β||z_e - sg(e_z)||² (and the codebook loss), both from the
        guide's encoding of this batch; in evaluation the program is the plain joint."""
        self.register_params()
        encoded = self._encoded if self.training else None
        self._encoded = None
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("codes", self.code_distribution(x.shape[:1]))
            vectors = self.codebook.embed(z)  # (n, P, code_dim)
            if encoded is not None and encoded[0] is x and torch.equal(encoded[2], z):
                z_e = encoded[1]
                if self.stage != "prior":
                    penalty = self.commitment * (z_e - vectors.detach()).pow(2).sum((-2, -1))
                    if self.codebook.update_rule == "straight_through":
                        penalty = penalty + (z_e.detach() - vectors).pow(2).sum((-2, -1))
                    pyro.factor("commitment", -penalty)
                vectors = z_e + (vectors - z_e).detach()
            pyro.sample("x", self.decode_vectors(vectors), obs=x)

    def guide(self, x: Tensor) -> None:
        """z = z_q(x) with probability one (a one-hot posterior; its entropy is 0). In training
        it also moves the codebook (EMA, dead-code restarts) toward this batch's encodings."""
        self.register_params()
        z_e = self.encode(x)  # (n, P, code_dim)
        z = self.codebook.nearest(z_e.detach())
        if self.training and torch.is_grad_enabled():
            if self.stage != "prior":
                self.codebook.update(z_e, z)
                z = self.codebook.nearest(z_e.detach())  # restarted codes may be nearer
            self._encoded = (x, z_e, z)  # the model's straight-through reads this batch's z_e
        with pyro.plate("data", x.shape[0]):
            pyro.sample("codes", dist.Delta(z, event_dim=1))

    def default_loss(self) -> pyro.infer.ELBO:
        """Trace_ELBO: the guide supplies z, so nothing is enumerated."""
        return pyro.infer.Trace_ELBO()

    # --- checks and use --------------------------------------------------------------------
    def event_shape(self) -> tuple[int, ...]:
        return self.data_shape

    def validate(self, x: Any, *, name: str = "data") -> Tensor:
        return check_bins(super().validate(x, name=name), self.likelihood, self.num_bins, name)

    def joint_log_prob(self, x: Tensor, codes: Tensor) -> Tensor:
        """log p(x | z) + log p(z) for code grids ``(*batch, n, P)`` and x ``(n, ...)``."""
        return self.decode(codes).log_prob(x) + self.prior_log_prob(codes)

    @torch.no_grad()
    def codebook_perplexity(self, x: Tensor) -> float:
        r"""exp(H(û)), û the codes' frequencies in z_q(x): K when all are used equally, 1 when one."""
        counts = torch.bincount(self.codes(x).flatten(), minlength=self.num_codes).double()
        frequencies = counts / counts.sum()
        return float(torch.exp(-(frequencies * frequencies.clamp_min(1e-300).log()).sum()))

    @torch.no_grad()
    def sample(self, num_samples: int, *, mean: bool = False) -> Tensor:
        """``num_samples`` examples x ~ p(x | z), z ~ p(z) (``mean=True``: the decoder's mean)."""
        likelihood = self.decode(self.sample_codes(num_samples))
        if not mean:
            return likelihood.sample()
        if self.likelihood == "bernoulli":
            return likelihood.base_dist.probs
        return ((likelihood.base_dist.loc.clamp(-1, 1) + 1) * (self.num_bins - 1) / 2).round()

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """The decoder's mean at z_q(x)."""
        likelihood = self.decode(self.codes(x))
        if self.likelihood == "bernoulli":
            return likelihood.base_dist.probs
        return ((likelihood.base_dist.loc.clamp(-1, 1) + 1) * (self.num_bins - 1) / 2).round()


@VQVAE.training_method("autoencoder")
class AutoencoderStage(SVI):
    r"""Stage one of a VQ-VAE: encoder, decoder and codebook under a uniform prior.

    The loss is -log p(x | z_q) + P log K + β||z_e - sg(e)||² (+ the codebook loss), with
    straight-through gradients to the encoder and EMA codebook updates; validation scores the
    uniform-prior bound. The model's own prior does not move.
    """

    stage: ClassVar[str] = "autoencoder"

    def __init__(self, setup: TrainingSetup) -> None:
        if not isinstance(setup.model, VQVAE):
            raise ValueError(f"method={self.stage!r} trains a VQVAE, got "
                             f"{type(setup.model).__name__}")
        self.model = setup.model
        self.model.set_stage(self.stage)
        super().__init__(setup)

    def finish(self) -> None:
        self.model.set_stage("joint")


@VQVAE.training_method("prior")
class PriorStage(AutoencoderStage):
    r"""Stage two: the prior family by maximum likelihood on the codes z_q(x), the autoencoder
    and codebook frozen. The loss is -(log p(x | z_q) + log p(z_q)), the negative bound that
    ``evaluate`` reports, so validation selects on the held-out bound itself."""

    stage: ClassVar[str] = "prior"


def _prepare(model: Any, batch: Any) -> Tensor:
    if not isinstance(model, VQVAE):
        raise TypeError(f"this estimator needs a VQVAE, got {type(model).__name__}")
    return model.validate(batch[0] if isinstance(batch, tuple) else batch)


def _settings(model: VQVAE) -> dict[str, Any]:
    return {"posterior": "deterministic one-hot", "prior": model.config["prior"],
            "num_codes": model.num_codes, "code_positions": model.num_positions}


@VQVAE.estimator("vq_bound", options=("batch_size",))
def evaluate_vq_bound(model: VQVAE, batch: tuple[Tensor, ...], *, batch_size: int | None = 1024
                      ) -> LogLikelihood:
    r"""log p(x) ≥ log p(x | z_q(x)) + log p(z_q(x)): the ELBO of the one-hot posterior."""
    x = _prepare(model, batch)
    with eval_mode(model), torch.no_grad():
        values = map_chunks(lambda rows: model.joint_log_prob(rows, model.codes(rows)), x,
                            batch_size)
    return LogLikelihood(values, kind="lower_bound", estimator="vq_bound",
                         num_dims=model.num_dims(x), data_space=model.data_space,
                         settings=_settings(model), data_id=data_fingerprint(x))


def neighbour_codes(model: VQVAE, x: Tensor, num_alternatives: int) -> Tensor:
    """z_q(x) and every grid that changes one position to its j-th nearest code, j = 2..m+1:
    ``(1 + P·m, n, P)`` distinct grids (long)."""
    z_e = model.encode(x)  # (n, P, code_dim)
    ranked = model.codebook.distances(z_e).argsort(-1)[..., : num_alternatives + 1]  # (n, P, m+1)
    nearest = ranked[..., 0]  # (n, P)
    n, positions = nearest.shape
    grids = nearest.expand(positions, num_alternatives, n, positions).clone()
    where = torch.arange(positions, device=x.device)
    for j in range(num_alternatives):  # grid (p, j): position p takes its (j+2)-th nearest code
        grids[where, j, :, where] = ranked[:, :, j + 1].T
    return torch.cat([nearest[None], grids.reshape(-1, n, positions)])


@VQVAE.estimator("code_sum", options=("num_alternatives", "batch_size"))
def evaluate_code_sum(model: VQVAE, batch: tuple[Tensor, ...], *, num_alternatives: int = 1,
                      batch_size: int | None = 256) -> LogLikelihood:
    r"""log Σ_{z ∈ S(x)} p(x, z) ≤ log p(x), S(x) = z_q(x) and its 1 + P·m single-position
    neighbours (m = ``num_alternatives`` next-nearest codes): distinct grids, so the sum is
    part of Σ_z p(x, z), and it holds z_q(x), so it is at least the one-hot bound."""
    x = _prepare(model, batch)
    m = int(num_alternatives)
    if isinstance(num_alternatives, bool) or m != num_alternatives or not 1 <= m < model.num_codes:
        raise ValueError(f"num_alternatives must be an integer in 1..{model.num_codes - 1}, got "
                         f"{num_alternatives!r}")

    def score(rows: Tensor) -> Tensor:
        return torch.logsumexp(model.joint_log_prob(rows, neighbour_codes(model, rows, m)), 0)

    with eval_mode(model), torch.no_grad():
        values = map_chunks(score, x, batch_size)
    settings = {**_settings(model), "posterior": "sum over z_q(x) and its neighbours",
                "num_alternatives": m, "codes_summed": 1 + model.num_positions * m}
    return LogLikelihood(values, kind="lower_bound", estimator="code_sum",
                         num_dims=model.num_dims(x), data_space=model.data_space,
                         settings=settings, data_id=data_fingerprint(x))
