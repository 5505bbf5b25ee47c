"""Exact per-example log p(x) for programs whose latents are absent or enumerable."""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from pyro import poutine
from pyro.infer import config_enumerate
from pyro.ops import packed
from pyro.ops.contract import contract_to_tensor
from pyro.ops.rings import LogRing
from pyro.poutine.util import site_is_subsample

from probgen.core.program import ProgramInfo, find_data_frame

__all__ = ["log_density_per_example", "exact_log_prob"]


def _ordinal(trace, site) -> frozenset:
    return frozenset(trace.plate_to_symbol[f.name] for f in site["cond_indep_stack"] if f.vectorized)


def log_density_per_example(trace, keep_plates: Sequence[str], *,
                            masked_latents: str = "refuse") -> torch.Tensor:
    r"""log Σ_{enumerated z} Π_sites p(site | parents), kept per element of ``keep_plates``.

    ``trace`` must come from ``poutine.trace(poutine.enum(...))`` (or have no enumerated sites).
    Plates not kept are product-contracted, enumerated dims sum-contracted (Pyro's
    ``contract_to_tensor``, the machinery of ``TraceEnum_ELBO``). Returns a tensor whose dims
    are the kept plates in the order given, e.g. ``(particles, data)``.

    A masked *enumerated* latent sums each masked entry over its states, adding log S per
    entry: ``masked_latents="refuse"`` raises, ``"allow"`` warns once, ``"ignore"`` (a guide's
    trace) says nothing.
    """
    masked: list[str] = []
    trace.compute_log_prob()
    trace.pack_tensors()
    keep_symbols = [trace.plate_to_symbol[name] for name in keep_plates]
    plate_sizes: dict[str, int] = {}
    tensor_tree: OrderedDict = OrderedDict()
    enum_dims: set = set()
    plate_symbols: set = set()
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        for f in site["cond_indep_stack"]:
            plate_sizes[f.name] = f.size
        ordinal = _ordinal(trace, site)
        plate_symbols |= ordinal
        term = packed.scale_and_mask(site["packed"]["unscaled_log_prob"], mask=site["packed"]["mask"])
        tensor_tree.setdefault(ordinal, []).append(term)
        if site["infer"].get("_enumerate_dim") is not None:
            enum_dims.update(site["packed"]["log_prob"]._pyro_dims)
            if not set(keep_symbols) <= ordinal:
                raise ValueError(
                    f"enumerated site '{name}' lies outside plate(s) {list(keep_plates)}: a global "
                    "discrete latent couples all examples, so per-example log p(x) is undefined; "
                    "move it inside the data plate or evaluate the joint with TraceEnum_ELBO")
            mask = site["mask"]
            if mask is not None and not (mask is True or bool(torch.as_tensor(mask).all())):
                masked.append(name)
    _check_masked(masked, masked_latents)
    enum_dims -= plate_symbols
    dim_to_size = {trace.plate_to_symbol[name]: size for name, size in plate_sizes.items()
                   if name in trace.plate_to_symbol}
    for terms in tensor_tree.values():
        for term in terms:
            dim_to_size.update(zip(term._pyro_dims, term.shape))
    result = contract_to_tensor(tensor_tree, enum_dims, target_ordinal=frozenset(keep_symbols),
                                ring=LogRing(dim_to_size=dim_to_size))
    dims = result._pyro_dims
    # Lay the kept plates out in the requested order; a plate no factor depends on broadcasts.
    sizes = [plate_sizes[name] for name in keep_plates]
    values = result.reshape(-1) if not dims else result
    index = [dims.index(s) for s in keep_symbols if s in dims]
    values = values.permute(index) if dims else values
    view = [size if symbol in dims else 1 for symbol, size in zip(keep_symbols, sizes)]
    return values.reshape(view).expand(sizes)


def _check_masked(masked: list[str], policy: str) -> None:
    if not masked or policy == "ignore":
        return
    shown = ", ".join(f"'{n}'" for n in masked[:3]) + (f" and {len(masked) - 3} more"
                                                        if len(masked) > 3 else "")
    message = (f"enumerated latent site(s) {shown} are masked: each masked entry adds log(number "
               "of states) instead of nothing, so the sum is not a normalized likelihood (too high "
               "by masked entries x log S). Mask the observations, not the latent (poutine.mask "
               "around the observed site only; see the HMM docs)")
    if policy == "refuse":
        raise ValueError(message + ", or pass allow_masked_latents=True to accept the inflated "
                         "value")
    warnings.warn(message, UserWarning, stacklevel=4)


def exact_log_prob(model: Callable, batch: tuple[torch.Tensor, ...], info: ProgramInfo, *,
                   masked_latents: str = "refuse") -> torch.Tensor:
    """Per-example exact log p(x_i), shape ``(len(batch[0]),)``, by enumerating discrete latents."""
    if info.continuous_latents:
        raise ValueError(f"exact evaluation needs no continuous latents, but the model has "
                         f"{list(info.continuous_latents)}; use estimator='iwae' with a guide")
    not_enumerable = sorted(set(info.discrete_latents) - set(info.enumerable))
    if not_enumerable:
        raise ValueError(f"discrete latents {not_enumerable} have infinite support and cannot be "
                         "enumerated; use estimator='iwae' with a guide")
    enum_model = poutine.enum(config_enumerate(model, default="parallel"),
                              first_available_dim=-info.max_plate_nesting - 1)
    trace = poutine.trace(enum_model).get_trace(*batch)
    find_data_frame(trace, info.data_plate, int(batch[0].shape[0]))
    per_example = log_density_per_example(trace, [info.data_plate], masked_latents=masked_latents)
    return per_example.reshape(-1)
