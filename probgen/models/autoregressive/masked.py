"""MADE's masked MLP: degrees, masks and masked layers (networks only, no probability)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from probgen.nn import activation

__all__ = ["made_degrees", "MaskedMLP"]


def made_degrees(features: int, hidden_features: Sequence[int], *, num_masks: int = 1,
                 order_agnostic: bool = True, natural_ordering: bool = True, seed: int = 0
                 ) -> tuple[Tensor, list[Tensor]]:
    r"""Seeded MADE degrees: m⁰ a permutation of 1..D, mˡ(k) ~ U{min mˡ⁻¹, ..., D-1} (Germain et al., 2015).

    Mask 0 uses the natural ordering 1..D when ``natural_ordering``; every other mask draws its
    own ordering (``order_agnostic``) or reuses mask 0's and differs in connectivity only.

    Returns:
        ``input_degrees`` of shape ``(num_masks, features)`` (the position of each input in its
        ordering, 1..D) and one ``(num_masks, width)`` tensor of hidden degrees per hidden layer.
    """
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    rows = []
    for index in range(num_masks):
        if index == 0 and natural_ordering:
            rows.append(torch.arange(1, features + 1, device="cpu"))
        elif index > 0 and not order_agnostic:
            rows.append(rows[0])
        else:
            rows.append(torch.randperm(features, generator=generator, device="cpu") + 1)
    input_degrees = torch.stack(rows)  # (masks, D)
    hidden_degrees = []
    previous = input_degrees
    for width in hidden_features:
        # a unit of degree k sees inputs of degree <= k; D-1 is the most any output may see
        low = previous.min(-1, keepdim=True).values.clamp(max=features - 1)  # (masks, 1)
        span = features - low  # values low .. D-1
        uniform = torch.rand(num_masks, width, generator=generator, device="cpu")
        degrees = low + (uniform * span).long().clamp(max=span - 1)  # (masks, width)
        hidden_degrees.append(degrees)
        previous = degrees
    return input_degrees, hidden_degrees


class MaskedMLP(nn.Module):
    r"""The masked autoencoder of MADE: D·K inputs -> hidden... -> D·K outputs, one mask set per index.

    Output d (its K entries) depends only on inputs that come before d in the ordering of the
    chosen mask set: hidden unit k of layer l sees unit k' of layer l-1 iff mˡ(k) >= mˡ⁻¹(k'),
    output d sees hidden unit k iff m⁰(d) > mᴸ(k), and (with ``direct``) input d' iff
    m⁰(d) > m⁰(d') (Germain et al., 2015, Eqs. 12-13).

    Arguments:
        features: D.
        hidden_features: the hidden layer widths (``()``: only direct connections).
        per_feature: K, the input and output units per feature (1 for Bernoulli logits, K
            one-hot inputs and K logits for K categories).
        num_masks, order_agnostic, natural_ordering, seed: see :func:`made_degrees`.
        direct: add masked direct input-output connections.
        dropout: the probability of zeroing each hidden unit in training (0: none).

    Example:
        >>> net = MaskedMLP(5, (16,))
        >>> net(torch.zeros(3, 5), 0).shape
        torch.Size([3, 5])
    """

    def __init__(self, features: int, hidden_features: Sequence[int] = (64,), *,
                 per_feature: int = 1, num_masks: int = 1, order_agnostic: bool = True,
                 natural_ordering: bool = True, direct: bool = False, activation_name: str = "relu",
                 seed: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.features, self.per_feature, self.num_masks = features, per_feature, num_masks
        widths = [features * per_feature, *hidden_features]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.output = nn.Linear(widths[-1], features * per_feature) if hidden_features else None
        self.direct = nn.Linear(features * per_feature, features * per_feature, bias=not
                                hidden_features) if direct else None
        self.activation = activation(activation_name)
        input_degrees, hidden_degrees = made_degrees(
            features, hidden_features, num_masks=num_masks, order_agnostic=order_agnostic,
            natural_ordering=natural_ordering, seed=seed)
        self.register_buffer("input_degrees", input_degrees)
        for index, degrees in enumerate(hidden_degrees):
            self.register_buffer(f"hidden_degrees_{index}", degrees)

    def orthogonal_init(self) -> None:
        """Semi-orthogonal weights of unit gain (orthonormal rows or columns), zero biases."""
        with torch.no_grad():
            for layer in [*self.hidden, self.output, self.direct]:
                if layer is None or layer.weight.device.type == "meta":
                    continue
                nn.init.orthogonal_(layer.weight)
                if layer.bias is not None:
                    layer.bias.zero_()

    def _degrees(self, index: int) -> list[Tensor]:
        """Degrees of every layer's units for mask set ``index``: inputs (repeated K times),
        hidden layers, outputs (the inputs' again)."""
        inputs = self.input_degrees[index].repeat_interleave(self.per_feature)  # (D·K,)
        hidden = [getattr(self, f"hidden_degrees_{i}")[index] for i in range(len(self.hidden))]
        return [inputs, *hidden]

    def masks(self, index: int) -> tuple[list[Tensor], Tensor | None, Tensor | None]:
        """The hidden-layer masks, the output mask and the direct mask (``(out, in)`` each)."""
        degrees = self._degrees(index)
        dtype = self.hidden[0].weight.dtype if len(self.hidden) else self.direct.weight.dtype
        hidden = [(after[:, None] >= before[None, :]).to(dtype)
                  for before, after in zip(degrees, degrees[1:])]
        output = ((degrees[0][:, None] > degrees[-1][None, :]).to(dtype)
                  if self.output is not None else None)
        direct = ((degrees[0][:, None] > degrees[0][None, :]).to(dtype)
                  if self.direct is not None else None)
        return hidden, output, direct

    def forward(self, inputs: Tensor, index: int = 0) -> Tensor:
        """Outputs ``(*batch, D·K)`` for inputs ``(*batch, D·K)`` under mask set ``index``."""
        hidden_masks, output_mask, direct_mask = self.masks(index)
        h = inputs
        for layer, mask in zip(self.hidden, hidden_masks):
            h = self.activation(F.linear(h, layer.weight * mask, layer.bias))
            if self.dropout is not None:
                h = self.dropout(h)
        out = F.linear(h, self.output.weight * output_mask, self.output.bias) \
            if self.output is not None else 0.0
        if self.direct is not None:
            out = out + F.linear(inputs, self.direct.weight * direct_mask, self.direct.bias)
        return out
