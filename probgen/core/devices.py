"""A device name checked at the boundary: parsed by torch and present on this machine, so a
missing GPU is reported in the caller's terms, not as a driver error from deep inside torch."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["check_device"]


def check_device(device: Any, *, name: str = "device") -> Any:
    """``device`` unchanged (None passes) when torch parses it and this machine has it; else a
    ValueError naming ``name`` (an argument such as ``"device"``, or a flag such as
    ``"--device"``), what is missing and what to use instead.

    Example:
        >>> check_device("cpu")
        'cpu'
    """
    if device is None:
        return None
    flag = name.startswith("--")
    shown = f"{name} {device}" if flag else f"{name}={device!r}"
    use_cpu = f"{name} cpu" if flag else f"{name}='cpu'"
    if isinstance(device, bool) or not isinstance(device, (str, torch.device)):
        raise ValueError(f"{name} must be a device name such as 'cpu' or 'cuda', got "
                         f"{type(device).__name__}")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{name} {device!r} is not a device; use cpu, cuda, cuda:1 or mps" if flag
                         else f"{name}={device!r} is not a device; use 'cpu', 'cuda', 'cuda:1' "
                         "or 'mps'") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{shown}: CUDA is not available on this machine (torch "
                             f"{torch.__version__}); use {use_cpu}")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"{shown}: this machine has {torch.cuda.device_count()} CUDA "
                             f"device(s), numbered from 0")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{shown}: MPS is not available here; use {use_cpu}")
    elif parsed.type not in ("cpu", "cuda", "mps", "xpu"):
        raise ValueError(f"{name} {device!r}: use cpu, cuda, cuda:N or mps" if flag
                         else f"{name}={device!r}: use 'cpu', 'cuda', 'cuda:N' or 'mps'")
    elif parsed.type == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise ValueError(f"{shown}: XPU is not available here; use {use_cpu}")
    return device
