"""Triton kernel for the streaming passes of local linear attention (arXiv 2510.01450; book/lla.md, "The kernel").

Every pass over the keys after pass A has one shape: for each query row ``i``, with the final max ``m_i``,

``out_i = sum_{j <= i} exp(tau q_i.k_j - m_i) (a_i + b_i.k_j) u_j``

* a conjugate-gradient product ``sum_j w_ij (p_i.k_j) k_j``: ``a = 0``, ``b = p``, ``u = k``;
* pass B's numerator ``sum_j w_ij (1 + rho_i.q_i - rho_i.k_j) v_j``: ``a = 1 + rho.q``, ``b = -rho``, ``u = v``.

One program per (row, tile of ``BLOCK_Q`` queries) walks the causal key tiles: scores and ``b.k_j`` by two
``tl.dot``s (relative matmuls, no ``T x T x D`` tensor), the modulated weights by a third into a
``BLOCK_Q x BLOCK_U`` accumulator.  Accumulation is float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _modulated_sum_kernel(  # type: ignore[no-untyped-def]
    Q, K, U, M, A, B, OUT,
    T, D, DU, tau,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_U: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    qb = tl.program_id(1)
    offs_q = qb * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_d = tl.arange(0, BLOCK_D)
    offs_u = tl.arange(0, BLOCK_U)
    live_q = offs_q < T
    qd_mask = live_q[:, None] & (offs_d[None, :] < D)
    q = tl.load(Q + row * T * D + offs_q[:, None] * D + offs_d[None, :], mask=qd_mask, other=0.0)
    b = tl.load(B + row * T * D + offs_q[:, None] * D + offs_d[None, :], mask=qd_mask, other=0.0)
    a = tl.load(A + row * T + offs_q, mask=live_q, other=0.0)
    m = tl.load(M + row * T + offs_q, mask=live_q, other=0.0)
    acc = tl.zeros((BLOCK_Q, BLOCK_U), dtype=q.dtype)
    for j0 in range(0, (qb + 1) * BLOCK_Q, BLOCK_K):
        offs_k = j0 + tl.arange(0, BLOCK_K)
        live_k = offs_k < T
        k = tl.load(
            K + row * T * D + offs_k[:, None] * D + offs_d[None, :],
            mask=live_k[:, None] & (offs_d[None, :] < D),
            other=0.0,
        )
        u = tl.load(
            U + row * T * DU + offs_k[:, None] * DU + offs_u[None, :],
            mask=live_k[:, None] & (offs_u[None, :] < DU),
            other=0.0,
        )
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * tau
        keep = (offs_k[None, :] <= offs_q[:, None]) & live_k[None, :] & live_q[:, None]
        w = tl.where(keep, tl.exp(s - m[:, None]), 0.0)
        bk = tl.dot(b, tl.trans(k), input_precision="ieee")
        acc += tl.dot(w * (a[:, None] + bk), u, input_precision="ieee")
    tl.store(
        OUT + row * T * DU + offs_q[:, None] * DU + offs_u[None, :],
        acc,
        mask=live_q[:, None] & (offs_u[None, :] < DU),
    )


def _pow2(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def modulated_sum(q: Tensor, k: Tensor, u: Tensor, m: Tensor, a: Tensor, b: Tensor, tau: float) -> Tensor:
    """``out_i = sum_{j<=i} exp(tau q_i.k_j - m_i) (a_i + b_i.k_j) u_j`` for ``q, k, b: (R, T, D)``,
    ``u: (R, T, Du)``, ``m, a: (R, T)``; returns ``(R, T, Du)``."""
    r, t, d = q.shape
    du = u.shape[-1]
    out = torch.empty((r, t, du), dtype=q.dtype, device=q.device)
    block = 16
    grid = (r, triton.cdiv(t, block))
    _modulated_sum_kernel[grid](
        q.contiguous(), k.contiguous(), u.contiguous(), m.contiguous(), a.contiguous(), b.contiguous(), out,
        t, d, du, float(tau),
        BLOCK_Q=block, BLOCK_K=block, BLOCK_D=_pow2(d), BLOCK_U=_pow2(du),
    )  # fmt: skip
    return out
