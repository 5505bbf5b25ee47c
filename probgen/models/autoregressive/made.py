r"""MADE: a masked autoencoder whose outputs are the conditionals p(x_d | x_<d) (Germain et al., 2015)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor
from torch.distributions import constraints
from torch.nn import functional as F

from probgen.core.model import GenerativeModel
from probgen.core.result import LogLikelihood, data_fingerprint
from probgen.core.validate import check_seed, check_size
from probgen.models.autoregressive.masked import MaskedMLP
from probgen.models.lean_svi import LeanSVI, Objective, keeps_program, plain_options
from probgen.models.registry import register_model

__all__ = ["MADE", "MADESVI", "OrderingMixture"]


@register_model("made")
class MADE(GenerativeModel):
    r"""log p(x) = Σ_d log p(x_{o(d)} | x_{o(<d)}), every conditional from one masked pass (Germain et al., 2015).

    The program is ``pyro.sample("x", Bernoulli(logits=made(x)).to_event(1), obs=x)`` in a data
    plate (``Categorical`` with ``num_categories`` > 2): the masks make logit d depend only on
    the inputs before d in the ordering, so the whole chain is scored in one vectorized pass and
    the likelihood is exact.

    With ``num_masks`` > 1 the network holds a fixed, seeded set of orderings and
    connectivities; training draws one of them per mini-batch (order- and connectivity-agnostic
    training, as in the paper). The model that is scored is then the uniform mixture
    p(x) = (1/M) Σ_m p_m(x), whose log-likelihood is exact (log-mean-exp over the M orderings):
    ``evaluate`` labels it ``exact`` with ``settings["model"] = "mixture over M orderings"``
    (estimator ``"ensemble"``); estimator ``"ordering"`` scores one ordering's own model.

    References:
        | MADE: Masked Autoencoder for Distribution Estimation (Germain et al., 2015)
        | https://arxiv.org/abs/1502.03509

    Arguments:
        features: D, the number of variables (data of shape ``(n, D)``).
        hidden_features: hidden layer widths (``()``: a logistic autoregression, which needs
            ``direct_connections=True``).
        num_categories: 2 for binary data (Bernoulli), K > 2 for integers 0..K-1 (Categorical,
            one-hot inputs).
        num_masks: M, the number of orderings/connectivities.
        order_agnostic: each mask has its own ordering (else they share mask 0's ordering and
            differ only in connectivity).
        natural_ordering: mask 0 uses the ordering 1..D (else a random one).
        direct_connections: masked direct input-output connections (used in the paper's best
            results).
        activation: the hidden activation.
        seed: seeds the orderings and connectivities (not the weights).
        dropout: the probability of zeroing each hidden unit while training (a regularizer for
            wide layers; ``evaluate`` and fit's validation run in eval mode, without it).
        init: ``"default"`` (PyTorch's uniform fan-in init) or ``"orthogonal"`` (semi-orthogonal
            weights of unit gain, zero biases: the authors' released code; the weights are drawn
            from torch's RNG, which ``pyro.set_rng_seed`` seeds).

    Example:
        >>> made = MADE(6, hidden_features=(32,), num_masks=4)
        >>> made.log_prob(torch.zeros(3, 6)).shape
        torch.Size([3])
        >>> made.sample(5, ordering=2).shape
        torch.Size([5, 6])
    """

    has_exact_log_prob = True
    data_space = "discrete"
    data_size_argument = "features"  # filled from the data by from_data and the CLI

    def __init__(self, features: int, hidden_features: Sequence[int] = (500,), *,
                 num_categories: int = 2, num_masks: int = 1, order_agnostic: bool = True,
                 natural_ordering: bool = True, direct_connections: bool = False,
                 activation: str = "relu", seed: int = 0, init: str = "default",
                 dropout: float = 0.0) -> None:
        features = check_size("features", features)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        if init not in ("default", "orthogonal"):
            raise ValueError(f"init must be 'default' or 'orthogonal', got {init!r}")
        hidden_features = [check_size("hidden_features", h) for h in hidden_features]
        num_categories = check_size("num_categories", num_categories, minimum=2)
        num_masks = check_size("num_masks", num_masks)
        seed = check_seed(seed) or 0
        if not hidden_features and not direct_connections:
            raise ValueError("a MADE with no hidden layer has nothing to compute; pass "
                             "hidden_features=(500,) or direct_connections=True")
        super().__init__(features=features, hidden_features=hidden_features,
                         num_categories=num_categories, num_masks=num_masks,
                         order_agnostic=bool(order_agnostic),
                         natural_ordering=bool(natural_ordering),
                         direct_connections=bool(direct_connections), activation=activation,
                         seed=seed, init=init, dropout=float(dropout))
        self.features, self.num_categories, self.num_masks = features, num_categories, num_masks
        self.per_feature = 1 if num_categories == 2 else num_categories
        self.net = MaskedMLP(features, hidden_features, per_feature=self.per_feature,
                             num_masks=num_masks, order_agnostic=order_agnostic,
                             natural_ordering=natural_ordering, direct=direct_connections,
                             activation_name=activation, seed=seed, dropout=float(dropout))
        if init == "orthogonal":
            self.net.orthogonal_init()

    # --- capabilities ----------------------------------------------------------------------
    @property
    def support(self) -> str:
        """``"binary"`` for 2 categories, else ``"categorical"``."""
        return "binary" if self.num_categories == 2 else "categorical"

    @property
    def default_estimator(self) -> str | None:
        """``"ensemble"`` (the mixture's exact log-likelihood) with several masks, else the
        generic exact path."""
        return "ensemble" if self.num_masks > 1 else None

    def event_shape(self) -> tuple[int, ...]:
        return (self.features,)

    @property
    def orderings(self) -> Tensor:
        """``(num_masks, D)``: row m lists the variables in the order mask m generates them."""
        return self.net.input_degrees.argsort(-1)

    # --- the conditionals --------------------------------------------------------------------
    def _inputs(self, x: Tensor) -> Tensor:
        if self.num_categories == 2:
            return x.to(self.net.input_degrees.device, self._dtype())
        onehot = F.one_hot(x.long(), self.num_categories).to(self._dtype())  # (n, D, K)
        return onehot.reshape(*x.shape[:-1], -1)

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def logits(self, x: Tensor, ordering: int = 0) -> Tensor:
        """Logits of p(x_d | x_<d) under mask ``ordering``: ``(n, D)``, or ``(n, D, K)``."""
        out = self.net(self._inputs(x), ordering)
        return out if self.per_feature == 1 else out.reshape(*x.shape, self.num_categories)

    def _conditionals(self, logits: Tensor) -> dist.TorchDistribution:
        """Independent conditionals with event shape ``(D,)``; validated once at the boundary."""
        if self.num_categories == 2:
            return dist.Bernoulli(logits=logits, validate_args=False).to_event(1)
        return dist.Categorical(logits=logits, validate_args=False).to_event(1)

    def distribution(self, x: Tensor) -> dist.TorchDistribution:
        """What the program scores x with (valid for scoring x only: the logits read x).

        One mask: its conditionals. Several: in training, one mask drawn for the whole
        mini-batch (torch's RNG, which ``fit`` seeds); in evaluation, the uniform mixture
        (:class:`OrderingMixture`), so validation scores the model that is evaluated.
        """
        if self.num_masks == 1:
            return self._conditionals(self.logits(x, 0))
        if self.training:
            return self._conditionals(self.logits(x, int(torch.randint(self.num_masks, ()))))
        return OrderingMixture(self, x.shape[:-1])

    # --- the program -----------------------------------------------------------------------
    def model(self, x: Tensor) -> None:
        """x ~ p(x), in a plate ``"data"`` over the first dimension."""
        self.register_params()
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", self.distribution(x), obs=x)

    def log_prob_per_ordering(self, x: Tensor) -> Tensor:
        """log p_m(x) under each mask's own model: ``(n, num_masks)``."""
        return torch.stack([self._conditionals(self.logits(x, m)).log_prob(x)
                            for m in range(self.num_masks)], -1)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log p(x), shape ``(n,)``: log (1/M) Σ_m p_m(x) (one ordering: log p_0(x))."""
        per_ordering = self.log_prob_per_ordering(x)
        return torch.logsumexp(per_ordering, -1) - math.log(self.num_masks)

    @torch.no_grad()
    def sample(self, num_samples: int, *, ordering: int | None = None) -> Tensor:
        """Draw ``(num_samples, D)`` examples, D passes per ordering used.

        ``ordering=m`` samples mask m's model; ``None`` samples the model ``evaluate`` scores
        (one mask; or the mixture: each draw picks a mask uniformly). Categorical draws are
        integers (``long``).
        """
        num_samples = check_size("num_samples", num_samples)
        if ordering is not None:
            return self._sample_ordering(num_samples, self._check_ordering(ordering))
        if self.num_masks == 1:
            return self._sample_ordering(num_samples, 0)
        device = self.net.input_degrees.device
        choice = torch.randint(self.num_masks, (num_samples,), device=device)
        samples = None
        for m in choice.unique().tolist():
            rows = choice == m
            drawn = self._sample_ordering(int(rows.sum()), m)
            samples = drawn.new_zeros(num_samples, self.features) if samples is None else samples
            samples[rows] = drawn
        return samples

    def _sample_ordering(self, num_samples: int, ordering: int) -> Tensor:
        device = self.net.input_degrees.device
        categorical = self.num_categories > 2
        x = torch.zeros(num_samples, self.features, device=device,
                        dtype=torch.long if categorical else self._dtype())
        for d in self.orderings[ordering].tolist():  # x_d reads only earlier draws
            logits = self.logits(x, ordering)[:, d]
            x[:, d] = (dist.Categorical(logits=logits).sample() if categorical
                       else dist.Bernoulli(logits=logits).sample())
        return x

    def _check_ordering(self, ordering: Any) -> int:
        if isinstance(ordering, bool) or not isinstance(ordering, int) \
                or not 0 <= ordering < self.num_masks:
            raise ValueError(f"ordering must be an integer in 0..{self.num_masks - 1} (this MADE "
                             f"has num_masks={self.num_masks}), got {ordering!r}")
        return ordering


class OrderingMixture(dist.TorchDistribution):
    r"""p(x) = (1/M) Σ_m p_m(x): a MADE's M orderings as one distribution, event shape ``(D,)``.

    ``log_prob`` runs one masked pass per ordering, holding one ``(*batch, D)`` array at a time
    (not the ``(*batch, M, D)`` of a ``MixtureSameFamily``); ``sample`` draws from the mixture.
    """

    arg_constraints: dict = {}

    def __init__(self, made: MADE, batch_shape: torch.Size | tuple[int, ...] = (),
                 validate_args: bool | None = False) -> None:
        self.made = made
        super().__init__(torch.Size(batch_shape), torch.Size([made.features]),
                         validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:
        if self.made.num_categories == 2:
            return constraints.independent(constraints.boolean, 1)
        return constraints.independent(
            constraints.integer_interval(0, self.made.num_categories - 1), 1)

    def expand(self, batch_shape: torch.Size | tuple[int, ...], _instance: Any = None
               ) -> OrderingMixture:
        return OrderingMixture(self.made, batch_shape, validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        return self.made.log_prob(value)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        if shape.numel() == 0:
            return torch.zeros(*shape, self.made.features)
        return self.made.sample(shape.numel()).reshape(*shape, self.made.features)


@MADE.training_method("svi")
class MADESVI(LeanSVI):
    r"""SVI for MADE without Pyro's trace: the model has no latent, so every bound ``fit``
    builds from a named loss (``None``, ``"trace"``, ``"mean_field"``, ``"iwae"``) is the exact
    −Σ_n log p(x_n), here computed from :meth:`MADE.distribution` directly: the same value,
    gradient, mask draw and Adam step as :class:`~probgen.infer.svi.SVI`, which a user guide,
    a ``pyro.infer.ELBO`` object, KL annealing or an overridden program take (data-parallel
    runs keep this path).
    """

    def lean_objective(self) -> Objective | None:
        model = self.setup.model
        if not plain_options(self.setup) or not keeps_program(
                model, MADE, ("model", "distribution", "logits", "_conditionals")):
            return None
        return lambda x: model.distribution(x).log_prob(x).sum()


def _chunked(function, x: Tensor, batch_size: int | None) -> Tensor:
    size = batch_size or 4096
    return torch.cat([function(x[i:i + size]) for i in range(0, len(x), size)])


@MADE.estimator("ensemble", options=("batch_size",))
def ensemble_log_likelihood(model: MADE, batch: tuple[Tensor, ...], *,
                            batch_size: int | None = None) -> LogLikelihood:
    r"""Exact log p(x) of the uniform mixture over the M orderings: log (1/M) Σ_m p_m(x)."""
    x = batch[0]
    values = _chunked(model.log_prob, x, batch_size)
    described = (f"mixture over {model.num_masks} orderings" if model.num_masks > 1
                 else "one ordering")
    return LogLikelihood(values, kind="exact", estimator="ensemble", num_dims=model.num_dims(x),
                         data_space=model.data_space, data_id=data_fingerprint(x),
                         settings={"model": described, "num_orderings": model.num_masks})


@MADE.estimator("ordering", options=("ordering", "batch_size"))
def ordering_log_likelihood(model: MADE, batch: tuple[Tensor, ...], *, ordering: int = 0,
                            batch_size: int | None = None) -> LogLikelihood:
    r"""Exact log p_m(x) of mask m's own autoregressive model (one component of the mixture)."""
    x = batch[0]
    m = model._check_ordering(ordering)
    values = _chunked(lambda piece: model._conditionals(model.logits(piece, m)).log_prob(piece),
                      x, batch_size)
    return LogLikelihood(values, kind="exact", estimator="ordering", num_dims=model.num_dims(x),
                         data_space=model.data_space, data_id=data_fingerprint(x),
                         settings={"model": f"ordering {m} of {model.num_masks}", "ordering": m})
