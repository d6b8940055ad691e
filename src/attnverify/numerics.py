"""Error metrics and the tolerance policy (CONTRIBUTING.md, "Numerics and tolerances").

Ground truth is a float64 reference on CPU.  Errors are measured per row and relative to
that row's scale (``max |v|`` for attention outputs, which lie in the convex hull of the
values), so a batch whose rows differ in scale cannot hide an error in its small rows.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

UNIT_ROUNDOFF = {
    torch.float64: 2.0**-53,
    torch.float32: 2.0**-24,
    torch.bfloat16: 2.0**-8,
    torch.float16: 2.0**-11,
}
"""Unit roundoff ``u`` of each floating dtype (half an ulp at 1)."""

BASE_TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}
"""Relative tolerance of an exact identity in each accumulation dtype (CONTRIBUTING.md, "Numerics and tolerances")."""

TINY = 1e-300


def identity_tolerance(dtype: torch.dtype, n: int = 1) -> float:
    """Tolerance for an exact identity computed in ``dtype`` over sequences of length ``n``.

    float64: ``1e-12``; float32: ``1e-5``; both times ``sqrt(n / 4096)`` above ``n = 4096``
    (rounding in sums of ``n`` terms grows like ``sqrt(n)``).  float16/bfloat16 accumulate in
    float32 and round the output once: ``2u`` plus the float32 tolerance.
    """
    growth = max(1.0, math.sqrt(n / 4096))
    if dtype in BASE_TOLERANCE:
        return BASE_TOLERANCE[dtype] * growth
    if dtype in UNIT_ROUNDOFF:
        return 2 * UNIT_ROUNDOFF[dtype] + BASE_TOLERANCE[torch.float32] * growth
    raise TypeError(f"dtype: no tolerance defined for {dtype}")


def scaled_error(out: Tensor, ref: Tensor, scale: Tensor | float) -> float:
    """``max |out - ref| / scale`` in float64; ``inf`` when anything is NaN (NaN never passes).

    ``scale`` broadcasts against ``out`` (e.g. one entry per row); it is floored at ``1e-300``.
    """
    if out.shape != ref.shape:
        return math.inf
    if out.numel() == 0:
        return 0.0
    scale_t = torch.as_tensor(scale, dtype=torch.float64, device=out.device).clamp_min(TINY)
    err = (out.detach().to(torch.float64) - ref.detach().to(device=out.device, dtype=torch.float64)).abs() / scale_t
    if torch.isnan(err).any():
        return math.inf
    return float(err.max())


def row_scale(values: Tensor) -> Tensor:
    """``max |v|`` over the last two dimensions (tokens, features), kept for broadcasting."""
    v = values.detach().to(torch.float64)
    if v.numel() == 0:
        return torch.ones(*v.shape[:-2], 1, 1, dtype=torch.float64)
    return v.abs().amax(dim=(-2, -1), keepdim=True)


def bitwise_mismatches(a: Tensor, b: Tensor) -> int:
    """How many entries differ bit for bit (NaN never equals anything; shapes must match)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return max(a.numel(), b.numel(), 1)
    return int((a.detach() != b.detach()).sum())
