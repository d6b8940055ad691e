"""Input validation and backend choice shared by every public fast function.

A public fast function validates its inputs once, here, then runs either the
vectorized torch path or a Triton kernel.  Errors name the argument and say
what was expected; nothing is broadcast or truncated silently.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Literal

import torch
from torch import Tensor

Backend = Literal["torch", "triton", "triton_tiled"]
BACKENDS: tuple[Backend, ...] = ("torch", "triton", "triton_tiled")
"""``triton_tiled`` forces the Triton scan's sequence-tiled path (``triton`` picks it by occupancy)."""
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def require_tensor(name: str, value: object) -> Tensor:
    """Return ``value`` if it is a tensor, else raise ``TypeError`` naming ``name``."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    return value


def require_float(name: str, value: Tensor) -> None:
    """Raise ``TypeError`` unless ``value`` is float16, bfloat16, float32 or float64."""
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float16, bfloat16, float32 or float64, got {value.dtype}")


def require_same(names: tuple[str, str], a: Tensor, b: Tensor) -> None:
    """Raise unless ``a`` and ``b`` share dtype (``TypeError``) and device (``ValueError``)."""
    if a.dtype != b.dtype:
        raise TypeError(f"{names[1]}: expected the dtype of {names[0]} ({a.dtype}), got {b.dtype}")
    if a.device != b.device:
        raise ValueError(f"{names[1]}: expected the device of {names[0]} ({a.device}), got {b.device}")


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other float type accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def triton_usable(device: torch.device) -> bool:
    """Triton runs on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1``."""
    if importlib.util.find_spec("triton") is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def select_backend(
    backend: str | None, device: torch.device, choices: tuple[Backend, ...] = ("torch", "triton")
) -> Backend:
    """Resolve ``backend`` among the caller's ``choices``: ``None`` picks Triton on CUDA and torch elsewhere."""
    if backend is None:
        return "triton" if device.type == "cuda" and triton_usable(device) else "torch"
    if backend not in choices:
        named = ", ".join(repr(c) for c in choices[:-1])
        raise ValueError(f"backend: expected None, {named} or {choices[-1]!r}, got {backend!r}")
    if backend != "torch" and not triton_usable(device):
        raise ValueError(
            f"backend: {backend!r} needs triton installed and CUDA tensors (or TRITON_INTERPRET=1); "
            f"got tensors on {device}"
        )
    return backend
