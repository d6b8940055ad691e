"""Paper-independent helpers for writing checks: calling code under test and judging its outputs.

Every call into an implementation under test goes through :func:`attnverify.evidence.invoke`
(directly or through :func:`call_pure`), so an exception it raises, or an output of the wrong
type or shape, is recorded against the implementation and never mistaken for a bug in the check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from attnverify.evidence import ImplementationError, invoke
from attnverify.numerics import bitwise_mismatches
from attnverify.registry import CheckContext, Implementation, dtype_name, pair_name

__all__ = ["as_tensor", "as_tensors", "call_pure", "device_for", "dtype_name", "pair_name"]


def device_for(impl: Implementation, ctx: CheckContext) -> torch.device:
    """Where ``impl`` runs: its pinned device (references pin the CPU), else the check's device."""
    return torch.device(impl.device) if impl.device else ctx.device


def call_pure(fn: Callable[..., Any], *args: Tensor) -> tuple[Any, bool]:
    """Call ``fn`` on copies of ``args``; return its output and whether it left its inputs unchanged."""
    copies = [a.clone() for a in args]
    out = invoke(fn, *copies)
    unchanged = all(bitwise_mismatches(a, c) == 0 for a, c in zip(args, copies, strict=True))
    return out, unchanged


def as_tensor(out: Any, name: str, shape: torch.Size | Sequence[int] | None = None) -> Tensor:
    """``out`` if it is a tensor (of ``shape``, when given); otherwise the implementation ``name`` is at fault."""
    if not isinstance(out, Tensor):
        raise ImplementationError(f"{name} returned {type(out).__name__}, expected a Tensor")
    if shape is not None and tuple(out.shape) != tuple(shape):
        raise ImplementationError(f"{name} returned shape {tuple(out.shape)}, expected {tuple(shape)}")
    return out


def as_tensors(out: Any, name: str, shapes: Sequence[torch.Size | Sequence[int]]) -> tuple[Tensor, ...]:
    """``out`` as ``len(shapes)`` tensors of ``shapes``; otherwise the implementation ``name`` is at fault."""
    want = [tuple(s) for s in shapes]
    if not (isinstance(out, Sequence) and len(out) == len(want) and all(isinstance(t, Tensor) for t in out)):
        raise ImplementationError(f"{name} returned {type(out).__name__}, expected {len(want)} tensors")
    got = [tuple(t.shape) for t in out]
    if got != want:
        raise ImplementationError(f"{name} returned shapes {got}, expected {want}")
    return tuple(out)
