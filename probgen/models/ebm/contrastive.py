"""Contrastive training methods of ``probgen.fit``: CD-k / PCD for RBMs, Langevin/HMC for neural EBMs."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from probgen.infer.method import TrainingMethod, TrainingSetup
from probgen.models.ebm.model import NeuralEBM, RBMBase
from probgen.models.ebm.samplers import ReplayBuffer, hmc_step, langevin_sample

__all__ = ["CD", "PCD", "Contrastive"]


def _positive(name: str, value: Any, kind: type = float) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or (
            kind is int and int(value) != value):
        raise ValueError(f"{name} must be a positive {'integer' if kind is int else 'number'}, "
                         f"got {value!r}")
    return kind(value)


def _learning_rate(optim: Any, default: float, method: str) -> float:
    if optim is None:
        return default
    if isinstance(optim, (int, float)) and not isinstance(optim, bool):
        return _positive("learning rate (optim=)", optim)
    raise TypeError(f"method {method!r} takes optim= as a learning rate (a number), got "
                    f"{type(optim).__name__}; its other settings are options of fit")


def _load_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Moments from the checkpoint, hyper-parameters (lr, momentum, ...) from this run."""
    groups = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, hyper in zip(optimizer.param_groups, groups):
        group.update(hyper)


class _FirstPass:
    """Sums of the training examples until all N have been seen: the base-rate model (chain
    starts, the AIS base) is fitted to the first mini-batch when training starts, and refitted
    to the whole training set once the first pass over it is complete."""

    def __init__(self, num_examples: int, refit) -> None:
        self.num_examples, self.refit = num_examples, refit
        self.count, self.total, self.squares = 0, None, None

    def add(self, x: torch.Tensor) -> None:
        if self.count >= self.num_examples:
            return
        x = x.detach().reshape(x.shape[0], -1)
        total, squares = x.sum(0), (x * x).sum(0)
        self.total = total if self.total is None else self.total + total
        self.squares = squares if self.squares is None else self.squares + squares
        self.count += x.shape[0]
        if self.count >= self.num_examples:
            self.refit(self.count, self.total, self.squares)

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "total": self.total, "squares": self.squares}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count, self.total, self.squares = state["count"], state["total"], state["squares"]


@RBMBase.training_method("cd")
class CD(TrainingMethod):
    r"""Contrastive divergence for RBMs (Hinton, 2002), run by ``probgen.fit(rbm, x)``:
    ∇θ ≈ ∇θ [mean F(v_data) − mean F(v⁻)] with v⁻ after ``k`` block-Gibbs sweeps from the
    mini-batch. SGD with momentum and L2 weight decay; ``optim=`` is the learning rate (0.05).

    ``losses[i]`` = N × (mean F(x⁺) − mean F(x⁻)) on step ``i``'s mini-batch: the contrastive
    surrogate whose gradient is the update, not a log-likelihood (score the model with
    ``probgen.evaluate(..., estimator="ais")``, or ``"exact"`` for a layer of <= 20 units). The
    base-rate model AIS anneals from (and PCD chains start from) is fitted to the first
    mini-batch, then to the whole training set after the first pass over it. Validation
    (``fit(validation=...)``) uses the exact log-likelihood, so it needs a narrow layer; else
    pass ``validation_estimator="ais"``.

    Options: ``k`` (Gibbs sweeps per update, 1), ``momentum`` (0.5), ``weight_decay`` (2e-4).
    """

    persistent: ClassVar[bool] = False
    options = ("k", "momentum", "weight_decay")

    def __init__(self, setup: TrainingSetup) -> None:
        super().__init__(setup)
        rbm = setup.model
        if not isinstance(rbm, RBMBase):
            raise TypeError(f"contrastive divergence trains an RBM, got {type(rbm).__name__}")
        options = {"k": 1, "momentum": 0.5, "weight_decay": 2e-4, "num_chains": None,
                   **setup.options}  # num_chains: PCD's option
        self.rbm, self.k = rbm, _positive("k (Gibbs sweeps per update)", options["k"], int)
        if not options["momentum"] >= 0 or not options["weight_decay"] >= 0:
            raise ValueError("momentum and weight_decay must be >= 0")
        lr = _learning_rate(setup.optim, 0.05, "pcd" if self.persistent else "cd")
        self.optimizer = torch.optim.SGD(rbm.parameters(), lr=lr, momentum=options["momentum"],
                                         weight_decay=options["weight_decay"])
        # the base rate (chain starts, AIS base) from all the data when it is in memory, else
        # from the first mini-batch, refitted once the first pass is complete
        rbm.set_base_rate(setup.data[0] if setup.data is not None else setup.example[0])
        self.first_pass = _FirstPass(0 if setup.data is not None else setup.num_examples,
                                     rbm.set_base_rate_from_sums)
        self.chains: torch.Tensor | None = None
        if self.persistent:
            num_chains = options["num_chains"] or setup.batch_size
            self.chains = rbm.init_chains(_positive("num_chains", num_chains, int))

    def step(self, batch: tuple[torch.Tensor, ...], scale: float) -> float:
        rbm, positive = self.rbm, batch[0]
        self.first_pass.add(positive)
        with torch.no_grad():
            negative = rbm.gibbs(self.chains if self.persistent else positive, self.k)
            if self.persistent:
                self.chains.copy_(negative)
        loss = rbm.free_energy(positive).mean() - rbm.free_energy(negative).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach()) * self.setup.num_examples

    def tensors(self) -> list[torch.Tensor]:
        return list(self.rbm.parameters()) + ([self.chains] if self.persistent else [])

    def validation_loss(self, batch: tuple[torch.Tensor, ...]) -> float:
        if not self.rbm.has_exact_partition:
            raise ValueError(f"this RBM's log Z cannot be enumerated ({self.rbm.num_visible} "
                             f"visible, {self.rbm.num_hidden} hidden units), so validation has no "
                             "exact loss; pass validation_estimator='ais' to fit")
        with torch.no_grad():
            return -float(self.rbm.log_prob(batch[0]).mean())

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "chains": self.chains,
                "first_pass": self.first_pass.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        _load_optimizer(self.optimizer, state["optimizer"])
        self.first_pass.load_state_dict(state["first_pass"])
        if self.persistent and state.get("chains") is not None:
            self.chains.copy_(state["chains"])


@RBMBase.training_method("pcd")
class PCD(CD):
    r"""Persistent contrastive divergence (Tieleman, 2008): :class:`CD` whose negatives come from
    ``num_chains`` Gibbs chains (default: the batch size) kept across updates and saved in
    checkpoints. Options: ``k``, ``num_chains``, ``momentum``, ``weight_decay``."""

    persistent = True
    options = ("k", "num_chains", "momentum", "weight_decay")


@NeuralEBM.training_method("contrastive")
class Contrastive(TrainingMethod):
    r"""Contrastive training of a neural EBM (Du & Mordatch, 2019), run by ``probgen.fit(ebm, x)``:
    ∇θ [mean E(x⁺) − mean E(x⁻) + α (mean E(x⁺)² + mean E(x⁻)²)] with Adam (``optim=``: a
    learning rate, default 1e-3, or a dict of Adam options).

    Negatives x⁻ (one per example in the mini-batch) come from ``sampler_steps`` of Langevin
    dynamics (``sampler="langevin"``, step ``step_size``, noise ``noise_scale`` = √(2·step) by
    default) or HMC transitions (``"hmc"``, ``num_leapfrog`` leapfrog steps of size
    ``step_size``), started from a replay buffer of ``buffer_size`` past negatives (restarting
    from the Gaussian base with probability ``reinit_prob``); α is ``energy_reg``. The base is
    fitted to the first mini-batch, then to the whole training set after the first pass.

    ``losses[i]`` = N × (mean E(x⁺) − mean E(x⁻)) on step ``i``'s mini-batch (a surrogate, not a
    log-likelihood; score with ``estimator="ais"``, which validation needs too:
    ``validation_estimator="ais"``).
    """

    options = ("sampler", "sampler_steps", "step_size", "noise_scale", "num_leapfrog",
               "buffer_size", "reinit_prob", "energy_reg")

    def __init__(self, setup: TrainingSetup) -> None:
        super().__init__(setup)
        ebm = setup.model
        if not isinstance(ebm, NeuralEBM):
            raise TypeError(f"method 'contrastive' trains a NeuralEBM, got {type(ebm).__name__}")
        options = {"sampler": "langevin", "sampler_steps": 20, "step_size": 0.01,
                   "noise_scale": None, "num_leapfrog": 5, "buffer_size": 10000,
                   "reinit_prob": 0.05, "energy_reg": 0.1, **setup.options}
        if options["sampler"] not in ("langevin", "hmc"):
            raise ValueError(f"sampler must be 'langevin' or 'hmc', got {options['sampler']!r}")
        self.ebm, self.sampler = ebm, options["sampler"]
        self.sampler_steps = _positive("sampler_steps", options["sampler_steps"], int)
        self.step_size = _positive("step_size", options["step_size"])
        self.noise_scale, self.energy_reg = options["noise_scale"], float(options["energy_reg"])
        self.num_leapfrog = _positive("num_leapfrog", options["num_leapfrog"], int)
        if isinstance(setup.optim, dict):
            adam = {"lr": 1e-3, **setup.optim}
        else:
            adam = {"lr": _learning_rate(setup.optim, 1e-3, "contrastive")}
        self.optimizer = torch.optim.Adam(ebm.parameters(), **adam)
        # the base rate (chain starts, AIS base) from all the data when it is in memory, else
        # from the first mini-batch, refitted once the first pass is complete
        ebm.set_base_rate(setup.data[0] if setup.data is not None else setup.example[0])
        self.first_pass = _FirstPass(0 if setup.data is not None else setup.num_examples,
                                     ebm.set_base_rate_from_sums)
        self.buffer = ReplayBuffer(_positive("buffer_size", options["buffer_size"], int),
                                   lambda n: ebm.base_distribution().sample((n,)),
                                   reinit_prob=options["reinit_prob"])

    def step(self, batch: tuple[torch.Tensor, ...], scale: float) -> float:
        ebm, positive = self.ebm, batch[0]
        self.first_pass.add(positive)
        negative = self.buffer.draw(positive.shape[0])
        if self.sampler == "langevin":
            negative = langevin_sample(ebm.energy, negative, num_steps=self.sampler_steps,
                                       step_size=self.step_size, noise_scale=self.noise_scale)
        else:
            for _ in range(self.sampler_steps):
                negative, _ = hmc_step(ebm.energy, negative, self.step_size, self.num_leapfrog)
        self.buffer.push(negative)
        energy_pos, energy_neg = ebm.energy(positive), ebm.energy(negative)
        contrast = energy_pos.mean() - energy_neg.mean()
        loss = contrast + self.energy_reg * ((energy_pos**2).mean() + (energy_neg**2).mean())
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(contrast.detach()) * self.setup.num_examples

    def tensors(self) -> list[torch.Tensor]:
        return list(self.ebm.parameters())

    def validation_loss(self, batch: tuple[torch.Tensor, ...]) -> float:
        raise ValueError("a neural EBM has no exact loss to validate with (Z is intractable); "
                         "pass validation_estimator='ais' to fit")

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "buffer": self.buffer.state_dict(),
                "first_pass": self.first_pass.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        _load_optimizer(self.optimizer, state["optimizer"])
        self.first_pass.load_state_dict(state["first_pass"])
        self.buffer.load_state_dict(state["buffer"])
