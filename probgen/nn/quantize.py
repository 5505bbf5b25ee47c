"""A vector-quantization codebook: nearest-code lookup, EMA updates and dead-code restarts."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Codebook", "CODEBOOK_UPDATES"]

CODEBOOK_UPDATES = ("ema", "straight_through")


class Codebook(nn.Module):
    r"""K code vectors e_k in R^D; a vector z_e maps to k* = argmin_k ||z_e - e_k||².

    ``update="ema"``: the codes are buffers moved by exponential moving averages of the vectors
    assigned to them, N_k ← γ N_k + (1-γ) n_k, m_k ← γ m_k + (1-γ) Σ_{z_e → k} z_e,
    e_k = m_k / Ñ_k with Laplace-smoothed counts Ñ_k (van den Oord et al., 2017, appendix A.1).
    ``update="straight_through"``: the codes are parameters trained by the codebook loss
    ||sg(z_e) - e_k||² of the caller. In both, a code whose usage N_k falls below
    ``restart_threshold`` is restarted at a random vector of the current batch (Dhariwal et
    al., 2020, Jukebox), so no code stays dead; :meth:`update` does both, without gradients.

    Written here rather than taken from ``vector-quantize-pytorch``: that package brings four
    dependencies (einops, einx, loguru, torch-einops-utils) for ~80 lines this needs.

    References:
        | Neural Discrete Representation Learning (van den Oord et al., 2017)
        | https://arxiv.org/abs/1711.00937

    Example:
        >>> codebook = Codebook(8, 2)
        >>> codebook.nearest(torch.randn(5, 3, 2)).shape
        torch.Size([5, 3])
    """

    def __init__(self, num_codes: int, code_dim: int, *, update: str = "ema",
                 decay: float = 0.99, epsilon: float = 1e-5,
                 restart_threshold: float = 1.0) -> None:
        super().__init__()
        if update not in CODEBOOK_UPDATES:
            raise ValueError(f"update must be one of {CODEBOOK_UPDATES}, got {update!r}")
        if not 0 <= decay < 1:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        self.num_codes, self.code_dim, self.update_rule = int(num_codes), int(code_dim), update
        self.decay, self.epsilon, self.restart_threshold = float(decay), float(epsilon), \
            float(restart_threshold)
        codes = torch.randn(self.num_codes, self.code_dim)
        if update == "ema":
            self.register_buffer("codes", codes)
            self.register_buffer("code_sums", codes.clone())
        else:
            self.codes = nn.Parameter(codes)
        # usage N_k (vectors per batch, EMA); zero at first, so the first update restarts every
        # code at the batch's vectors: a data-dependent initialization
        self.register_buffer("usage", torch.zeros(self.num_codes))

    def distances(self, vectors: Tensor) -> Tensor:
        """||z_e - e_k||² for every code: ``(*batch, K)`` for vectors ``(*batch, D)``."""
        codes = self.codes.to(vectors.dtype)
        return (vectors.pow(2).sum(-1, keepdim=True) - 2 * vectors @ codes.T
                + codes.pow(2).sum(-1))

    def nearest(self, vectors: Tensor) -> Tensor:
        """The index of the nearest code, ``(*batch,)`` (long) for vectors ``(*batch, D)``."""
        return self.distances(vectors).argmin(-1)

    def embed(self, indices: Tensor) -> Tensor:
        """The code vectors ``(*batch, D)`` of indices ``(*batch,)``."""
        return nn.functional.embedding(indices.long(), self.codes)

    @torch.no_grad()
    def update(self, vectors: Tensor, indices: Tensor) -> None:
        """One EMA step (``update="ema"``) and dead-code restarts from ``vectors`` ``(*batch, D)``
        assigned to ``indices`` ``(*batch,)``."""
        flat = vectors.detach().reshape(-1, self.code_dim).to(self.usage.dtype)  # (m, D)
        onehot = nn.functional.one_hot(indices.reshape(-1), self.num_codes).to(flat.dtype)
        counts = onehot.sum(0)  # (K,)
        self.usage.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.update_rule == "ema":
            self.code_sums.mul_(self.decay).add_(onehot.T @ flat, alpha=1 - self.decay)
            total = self.usage.sum()
            smoothed = (self.usage + self.epsilon) / (total + self.num_codes * self.epsilon) * total
            self.codes.copy_(self.code_sums / smoothed.clamp_min(self.epsilon)[:, None])
        dead = (self.usage < self.restart_threshold).nonzero().flatten()
        if len(dead) and len(flat):
            picks = torch.randint(len(flat), (len(dead),), device=flat.device)
            self.codes.data[dead] = flat[picks].to(self.codes.dtype)
            self.usage[dead] = self.restart_threshold
            if self.update_rule == "ema":
                self.code_sums[dead] = flat[picks] * self.restart_threshold
