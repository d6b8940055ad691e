"""Triton kernels for linear attention within each graph of a batch (arXiv 2301.11956, §3; our book chapter, "Triton").

What the virtual node computes, in two kernels over a sorted batch with offsets ``ptr``:

1. **accumulate** — one program per (graph, block of ``BLOCK_M`` features, block of ``BLOCK_V`` value
   columns) walks the graph's rows ``[ptr_g, ptr_{g+1})`` in masked tiles of ``BLOCK_N`` and sums
   ``S_g = Φ_Kᵀ V`` with ``tl.dot`` on each tile (and, in the first value block, ``z_g = Φ_Kᵀ 1``) in registers;
2. **readout** — one program per (graph, tile of ``BLOCK_N`` rows, block of value columns), exiting
   early past the graph's end, computes ``φ(q_i)ᵀ S_g`` (``tl.dot`` per feature block) ``/ φ(q_i)ᵀ z_g``.

No ``n²`` term; every input row is read once per value block, ``S`` and ``z`` are ``B m (d_v + 1)``
numbers.  Accumulation is float32 (float64 for float64 inputs), products in full precision
(``input_precision="ieee"``: no TF32).
The backward re-runs the torch segment path under autograd (:class:`SegmentAttention`).  Verified,
like the torch path, against ``attnverify.reference.mpnn_vn.linear_attention_layer``.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _accumulate_kernel(  # type: ignore[no-untyped-def]
    K_ptr,  # (N, M) φ(K)
    V_ptr,  # (N, DV)
    PTR_ptr,  # (B + 1,) graph offsets
    S_ptr,  # (B, M, DV) out
    Z_ptr,  # (B, M) out
    M,
    DV,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_V: tl.constexpr,
    IS_F64: tl.constexpr,
):
    g = tl.program_id(0).to(tl.int64)
    cols_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols_v = tl.program_id(2) * BLOCK_V + tl.arange(0, BLOCK_V)
    acc_dtype = tl.float64 if IS_F64 else tl.float32
    start = tl.load(PTR_ptr + g).to(tl.int64)
    end = tl.load(PTR_ptr + g + 1).to(tl.int64)
    S = tl.zeros((BLOCK_M, BLOCK_V), dtype=acc_dtype)
    z = tl.zeros((BLOCK_M,), dtype=acc_dtype)
    for first in range(start, end, BLOCK_N):
        rows = first + tl.arange(0, BLOCK_N)
        live = rows < end
        k = tl.load(K_ptr + rows[:, None] * M + cols_m[None, :], mask=live[:, None] & (cols_m[None, :] < M), other=0.0)
        v = tl.load(
            V_ptr + rows[:, None] * DV + cols_v[None, :], mask=live[:, None] & (cols_v[None, :] < DV), other=0.0
        )
        S += tl.dot(tl.trans(k.to(acc_dtype)), v.to(acc_dtype), input_precision="ieee")  # (BLOCK_M, BLOCK_V)
        z += tl.sum(k.to(acc_dtype), axis=0)
    s_mask = (cols_m[:, None] < M) & (cols_v[None, :] < DV)
    tl.store(S_ptr + g * M * DV + cols_m[:, None] * DV + cols_v[None, :], S, mask=s_mask)
    if tl.program_id(2) == 0:
        tl.store(Z_ptr + g * M + cols_m, z, mask=cols_m < M)


@triton.jit
def _readout_kernel(  # type: ignore[no-untyped-def]
    Q_ptr,  # (N, M) φ(Q)
    S_ptr,  # (B, M, DV)
    Z_ptr,  # (B, M)
    PTR_ptr,  # (B + 1,)
    O_ptr,  # (N, DV) out
    M,
    DV,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_V: tl.constexpr,
    IS_F64: tl.constexpr,
):
    g = tl.program_id(0).to(tl.int64)
    start = tl.load(PTR_ptr + g).to(tl.int64)
    end = tl.load(PTR_ptr + g + 1).to(tl.int64)
    first = start + tl.program_id(1) * BLOCK_N
    if first < end:  # early exit for tiles past this graph's last row
        acc_dtype = tl.float64 if IS_F64 else tl.float32
        rows = first + tl.arange(0, BLOCK_N)
        live = rows < end
        cols_v = tl.program_id(2) * BLOCK_V + tl.arange(0, BLOCK_V)
        num = tl.zeros((BLOCK_N, BLOCK_V), dtype=acc_dtype)
        den = tl.zeros((BLOCK_N,), dtype=acc_dtype)
        for m0 in range(0, M, BLOCK_M):
            cols_m = m0 + tl.arange(0, BLOCK_M)
            in_m = cols_m < M
            q = tl.load(Q_ptr + rows[:, None] * M + cols_m[None, :], mask=live[:, None] & in_m[None, :], other=0.0)
            s = tl.load(
                S_ptr + g * M * DV + cols_m[:, None] * DV + cols_v[None, :],
                mask=in_m[:, None] & (cols_v[None, :] < DV),
                other=0.0,
            )
            z = tl.load(Z_ptr + g * M + cols_m, mask=in_m, other=0.0)
            q = q.to(acc_dtype)
            num += tl.dot(q, s.to(acc_dtype), input_precision="ieee")  # (BLOCK_N, BLOCK_V)
            den += tl.sum(q * z.to(acc_dtype)[None, :], axis=1)
        out = num / tl.where(live, den, 1.0)[:, None]
        tl.store(O_ptr + rows[:, None] * DV + cols_v[None, :], out, mask=live[:, None] & (cols_v[None, :] < DV))


def _block(n: int, cap: int) -> int:
    return max(16, min(cap, triton.next_power_of_2(max(n, 1))))


def _forward(phi_q: Tensor, phi_k: Tensor, v: Tensor, batch: Tensor, B: int) -> Tensor:
    N, M = phi_k.shape
    DV = v.shape[1]
    counts = torch.bincount(batch, minlength=B)
    ptr = torch.zeros(B + 1, dtype=torch.int64, device=batch.device)
    ptr[1:] = torch.cumsum(counts, 0)
    phi_q, phi_k, v = phi_q.contiguous(), phi_k.contiguous(), v.contiguous()
    S = torch.zeros(B, M, DV, dtype=v.dtype, device=v.device)
    z = torch.zeros(B, M, dtype=v.dtype, device=v.device)
    out = torch.zeros(N, DV, dtype=v.dtype, device=v.device)
    if N == 0 or B == 0:
        return out
    is_f64 = v.dtype == torch.float64
    bm, bv = _block(M, 32), _block(DV, 32)
    _accumulate_kernel[(B, triton.cdiv(M, bm), triton.cdiv(DV, bv))](
        phi_k, v, ptr, S, z, M, DV, BLOCK_N=16, BLOCK_M=bm, BLOCK_V=bv, IS_F64=is_f64
    )
    n_max = int(counts.max())
    bn = _block(n_max, 32)
    _readout_kernel[(B, triton.cdiv(n_max, bn), triton.cdiv(DV, bv))](
        phi_q, S, z, ptr, out, M, DV, BLOCK_N=bn, BLOCK_M=bm, BLOCK_V=bv, IS_F64=is_f64
    )
    return out


class SegmentAttention(torch.autograd.Function):
    """Forward by the Triton kernels; backward by autograd through the torch segment path (same maths)."""

    @staticmethod
    def forward(ctx: Any, phi_q: Tensor, phi_k: Tensor, v: Tensor, batch: Tensor, B: int) -> Tensor:
        ctx.save_for_backward(phi_q, phi_k, v, batch)
        ctx.B = B
        return _forward(phi_q, phi_k, v, batch, B)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        from attnverify.fast.mpnn_vn import segment_attention_torch

        phi_q, phi_k, v, batch = ctx.saved_tensors
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_() for t in (phi_q, phi_k, v)]
            out = segment_attention_torch(*inputs, batch, ctx.B)
            grads = torch.autograd.grad(out, inputs, grad)
        return (*grads, None, None)


def segment_attention_triton(phi_q: Tensor, phi_k: Tensor, v: Tensor, batch: Tensor, B: int) -> Tensor:
    """``out_i = φ(q_i)ᵀ S_{b_i} / φ(q_i)ᵀ z_{b_i}`` by the two kernels; differentiable."""
    return SegmentAttention.apply(phi_q, phi_k, v, batch, B)
