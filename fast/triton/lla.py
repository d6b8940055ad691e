"""Triton kernels for the streaming passes of local linear attention (arXiv 2510.01450; book/lla.md, "The kernel").

The rows are the query tile at positions ``i0 .. i0 + n - 1`` (``q: (R, n, D)``) against the causal keys
``k: (R, T, D)``; weights ``w_ij = exp(tau q_i.k_j - m_i)``, ``j <= i``.  Three kernels:

* :func:`moments` (pass A): the online max ``m_i``, ``omega_i = sum_j w_ij`` and ``mut_i = sum_j w_ij k_j``,
  rescaling ``omega`` and ``mut`` by ``exp(m_old - m_new)`` as the max grows;
* :func:`modulated_sum`: ``out_i = sum_j w_ij (a_i + b_i.k_j) u_j`` with the final ``m``, the shape of every pass
  after pass A: a conjugate-gradient product ``sum_j w_ij (p_i.k_j) k_j`` (``a = 0``, ``b = p``, ``u = k``) and
  pass B's numerator ``sum_j w_ij (1 + rho_i.q_i - rho_i.k_j) v_j`` (``a = 1 + rho.q``, ``b = -rho``, ``u = v``);
* :func:`gram` (``solver="direct"``): ``sum_j w_ij k_j k_j^T`` per row, ``(R, n, D, D)`` for one query tile.

Scores and ``b.k_j`` are ``tl.dot``s (relative matmuls: no ``T x T x D`` tensor), accumulated in the input's
float dtype (float32, or float64 for float64 inputs).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _key_tile(K, row, j0, T, D, offs_d, BLOCK_K: tl.constexpr):  # type: ignore[no-untyped-def]
    """Key positions ``j0..j0+BLOCK_K``, which of them exist, and the tile ``(BLOCK_K, BLOCK_D)`` (0 padded)."""
    offs_k = j0 + tl.arange(0, BLOCK_K)
    live_k = offs_k < T
    k = tl.load(
        K + row * T * D + offs_k[:, None] * D + offs_d[None, :],
        mask=live_k[:, None] & (offs_d[None, :] < D),
        other=0.0,
    )
    return offs_k, live_k, k


@triton.jit
def _moments_kernel(  # type: ignore[no-untyped-def]
    Q, K, M, OMEGA, MUT,
    N, T, D, I0, tau,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    qb = tl.program_id(1)
    local = qb * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_q = I0 + local  # positions; padded rows (local >= N) are computed but never stored
    offs_d = tl.arange(0, BLOCK_D)
    live_q = local < N
    qd_mask = live_q[:, None] & (offs_d[None, :] < D)
    q = tl.load(Q + row * N * D + local[:, None] * D + offs_d[None, :], mask=qd_mask, other=0.0)
    m = tl.zeros((BLOCK_Q,), dtype=q.dtype) + float("-inf")
    omega = tl.zeros((BLOCK_Q,), dtype=q.dtype)
    mut = tl.zeros((BLOCK_Q, BLOCK_D), dtype=q.dtype)
    for j0 in range(0, I0 + (qb + 1) * BLOCK_Q, BLOCK_K):
        offs_k, live_k, k = _key_tile(K, row, j0, T, D, offs_d, BLOCK_K)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * tau
        s = tl.where((offs_k[None, :] <= offs_q[:, None]) & live_k[None, :], s, float("-inf"))
        # every row sees key 0 in the first tile, so m is finite from then on and alpha = 0 there
        m_new = tl.maximum(m, tl.max(s, 1))
        alpha = tl.exp(m - m_new)
        w = tl.exp(s - m_new[:, None])
        omega = omega * alpha + tl.sum(w, 1)
        mut = mut * alpha[:, None] + tl.dot(w, k, input_precision="ieee")
        m = m_new
    tl.store(M + row * N + local, m, mask=live_q)
    tl.store(OMEGA + row * N + local, omega, mask=live_q)
    tl.store(MUT + row * N * D + local[:, None] * D + offs_d[None, :], mut, mask=qd_mask)


@triton.jit
def _modulated_sum_kernel(  # type: ignore[no-untyped-def]
    Q, K, U, M, A, B, OUT,
    N, T, D, DU, I0, tau,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_U: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    qb = tl.program_id(1)
    local = qb * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_q = I0 + local
    offs_d = tl.arange(0, BLOCK_D)
    offs_u = tl.arange(0, BLOCK_U)
    live_q = local < N
    qd_mask = live_q[:, None] & (offs_d[None, :] < D)
    q = tl.load(Q + row * N * D + local[:, None] * D + offs_d[None, :], mask=qd_mask, other=0.0)
    b = tl.load(B + row * N * D + local[:, None] * D + offs_d[None, :], mask=qd_mask, other=0.0)
    a = tl.load(A + row * N + local, mask=live_q, other=0.0)
    m = tl.load(M + row * N + local, mask=live_q, other=0.0)
    acc = tl.zeros((BLOCK_Q, BLOCK_U), dtype=q.dtype)
    for j0 in range(0, I0 + (qb + 1) * BLOCK_Q, BLOCK_K):
        offs_k, live_k, k = _key_tile(K, row, j0, T, D, offs_d, BLOCK_K)
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
        OUT + row * N * DU + local[:, None] * DU + offs_u[None, :],
        acc,
        mask=live_q[:, None] & (offs_u[None, :] < DU),
    )


@triton.jit
def _gram_kernel(  # type: ignore[no-untyped-def]
    Q, K, M, OUT,
    N, T, D, I0, tau,
    BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    local = tl.program_id(1)  # one query row per program: its D x D sum is the accumulator
    i = I0 + local
    offs_d = tl.arange(0, BLOCK_D)
    live_d = offs_d < D
    q = tl.load(Q + (row * N + local) * D + offs_d, mask=live_d, other=0.0)
    m = tl.load(M + row * N + local)
    acc = tl.zeros((BLOCK_D, BLOCK_D), dtype=q.dtype)
    for j0 in range(0, i + 1, BLOCK_K):
        offs_k, live_k, k = _key_tile(K, row, j0, T, D, offs_d, BLOCK_K)
        s = tl.sum(k * q[None, :], 1) * tau
        w = tl.where((offs_k <= i) & live_k, tl.exp(s - m), 0.0)
        acc += tl.dot(tl.trans(k * w[:, None]), k, input_precision="ieee")
    tl.store(
        OUT + (row * N + local) * D * D + offs_d[:, None] * D + offs_d[None, :],
        acc,
        mask=live_d[:, None] & live_d[None, :],
    )


def _pow2(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _tile(block: int) -> int:
    """The kernels' query/key tile: ``block`` rounded up to a power of two, 16 to 64 (``tl.dot`` needs >= 16)."""
    return min(64, _pow2(block))


def moments(q: Tensor, k: Tensor, tau: float, i0: int, block: int) -> tuple[Tensor, Tensor, Tensor]:
    """Pass A for query rows at ``i0..``: ``m, omega: (R, n)`` and ``mut: (R, n, D)``."""
    r, n, d = q.shape
    m = torch.empty((r, n), dtype=q.dtype, device=q.device)
    omega, mut = torch.empty_like(m), torch.empty_like(q)
    tile = _tile(block)
    _moments_kernel[(r, triton.cdiv(n, tile))](
        q.contiguous(), k.contiguous(), m, omega, mut,
        n, k.shape[1], d, i0, float(tau),
        BLOCK_Q=tile, BLOCK_K=tile, BLOCK_D=_pow2(d),
    )  # fmt: skip
    return m, omega, mut


def modulated_sum(
    q: Tensor, k: Tensor, u: Tensor, m: Tensor, a: Tensor, b: Tensor, tau: float, i0: int, block: int
) -> Tensor:
    """``out_i = sum_{j<=i} exp(tau q_i.k_j - m_i) (a_i + b_i.k_j) u_j`` for query rows ``q, b: (R, n, D)``
    at ``i0..``, keys ``k: (R, T, D)``, ``u: (R, T, Du)``, ``m, a: (R, n)``; returns ``(R, n, Du)``."""
    r, n, d = q.shape
    du = u.shape[-1]
    out = torch.empty((r, n, du), dtype=q.dtype, device=q.device)
    tile = _tile(block)
    _modulated_sum_kernel[(r, triton.cdiv(n, tile))](
        q.contiguous(), k.contiguous(), u.contiguous(), m.contiguous(), a.contiguous(), b.contiguous(), out,
        n, k.shape[1], d, du, i0, float(tau),
        BLOCK_Q=tile, BLOCK_K=tile, BLOCK_D=_pow2(d), BLOCK_U=_pow2(du),
    )  # fmt: skip
    return out


def gram(q: Tensor, k: Tensor, m: Tensor, tau: float, i0: int, block: int) -> Tensor:
    """``sum_{j<=i} exp(tau q_i.k_j - m_i) k_j k_j^T`` for query rows ``q: (R, n, D)`` at ``i0..``: ``(R, n, D, D)``."""
    r, n, d = q.shape
    out = torch.empty((r, n, d, d), dtype=q.dtype, device=q.device)
    _gram_kernel[(r, n)](
        q.contiguous(), k.contiguous(), m.contiguous(), out,
        n, k.shape[1], d, i0, float(tau),
        BLOCK_K=_tile(block), BLOCK_D=_pow2(d),
    )  # fmt: skip
    return out
