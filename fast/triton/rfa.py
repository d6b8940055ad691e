"""Triton kernel for the random-feature attention features (arXiv 2307.11353, Sec. 2; book/rfa.md, "The code").

One program per (input row ``b``, block of ``BLOCK_H`` heads): it forms ``q_{bm} = W_mᵀ x~0`` for its
heads in registers (a ``BLOCK_H x BLOCK_D`` tile), then walks the ``N`` keys, adding
``relu(<q_{bm}, x~i>) x~i`` to an accumulator of the same shape, and stores ``acc / N``.  The
scores are never written to memory: the only output is ``(n, M D)``.  ``D = d + 1`` is padded to a
power of two with zeros, in ``W`` and in the augmented tokens alike (the masked loads), so the
padding adds nothing.  Accumulation is float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _features_kernel(  # type: ignore[no-untyped-def]
    X0_ptr,  # (n, d)
    X_ptr,  # (n, N, d)
    W_ptr,  # (M, D, D)
    OUT_ptr,  # (n, M * D)
    N,
    d,
    M,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
    EXP: tl.constexpr,
    IS_F64: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    cols = tl.arange(0, BLOCK_D)
    acc_dtype = tl.float64 if IS_F64 else tl.float32
    D = d + 1
    live_h = heads < M
    live_c = cols < D
    q = tl.zeros((BLOCK_H, BLOCK_D), dtype=acc_dtype)
    for k in range(0, D):  # q[h, :] = sum_k x~0[k] W[h, k, :]
        x0k = tl.load(X0_ptr + b * d + k, mask=k < d, other=1.0).to(acc_dtype)  # the augmented 1 at k = d
        w = tl.load(
            W_ptr + heads[:, None] * D * D + k * D + cols[None, :], mask=live_h[:, None] & live_c[None, :], other=0.0
        )
        q += x0k * w.to(acc_dtype)
    acc = tl.zeros((BLOCK_H, BLOCK_D), dtype=acc_dtype)
    for i in range(0, N):
        xi = tl.load(X_ptr + (b * N + i) * d + cols, mask=cols < d, other=0.0).to(acc_dtype)
        xi = tl.where(cols == d, 1.0, xi)  # [x_i; 1], zeros past D
        s = tl.sum(q * xi[None, :], axis=1)
        a = tl.exp(s) if EXP else tl.maximum(s, 0.0)
        acc += a[:, None] * xi[None, :]
    out = acc / N
    ptrs = OUT_ptr + b * M * D + heads[:, None] * D + cols[None, :]
    tl.store(ptrs, out.to(OUT_ptr.dtype.element_ty), mask=live_h[:, None] & live_c[None, :])


def triton_features(x0: Tensor, X: Tensor, W: Tensor, activation: str) -> Tensor:
    """``(n, M*D)`` features from the kernel; inputs already validated by the public function."""
    n, N, d = X.shape
    M, D = W.shape[0], W.shape[-1]
    out = torch.empty((n, M * D), dtype=x0.dtype, device=x0.device)
    if n == 0:
        return out
    block_d = triton.next_power_of_2(D)
    block_h = max(1, min(64, triton.next_power_of_2(M), 4096 // block_d))
    grid = (n, triton.cdiv(M, block_h))
    _features_kernel[grid](
        x0.contiguous(),
        X.contiguous(),
        W.contiguous(),
        out,
        N,
        d,
        M,
        BLOCK_H=block_h,
        BLOCK_D=block_d,
        EXP=activation == "exp",
        IS_F64=x0.dtype == torch.float64,
    )
    return out
