"""Triton kernel for the Aaren prefix scan (arXiv 2405.13956; book/aaren.md, "Triton kernel").

One program per (row, block of ``BLOCK_D`` value columns).  It walks the row in tiles of
``BLOCK_N`` tokens: loads the leaves ``(m_i, u_i, w_i)`` (``m = -inf``, ``u = w = 0`` past the
end), broadcasts ``m`` and ``u`` to the tile's ``(BLOCK_N, BLOCK_D)`` shape (the members of a
``tl.associative_scan`` tuple share one shape), scans axis 0 with the guarded ``⊕``, folds in the
prefix carried from earlier tiles, stores, and carries the tile's last row onward.

Cost: ``O(N Dv)`` work in one pass over the inputs, the traffic minimum
``N (2 Dv + 1)`` elements per row (forward), and a carry of ``Dv + 2`` numbers in registers.
Accumulation is float32 (float64 for float64 inputs).  Verified, like the torch path, against
``attnverify.reference.aaren.causal_constant_query_attention``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _combine(m_a, u_a, w_a, m_b, u_b, w_b):  # type: ignore[no-untyped-def]
    """``(m_a,u_a,w_a) ⊕ (m_b,u_b,w_b)`` with ``exp(m_x - m)`` replaced by 0 where ``m_x = -inf``."""
    m = tl.maximum(m_a, m_b)
    # Referencing an empty operand (m_x = -inf) to 0 gives exp(-inf) = 0 without forming -inf - -inf.
    alpha_a = tl.exp(m_a - tl.where(m_a == float("-inf"), 0.0, m))
    alpha_b = tl.exp(m_b - tl.where(m_b == float("-inf"), 0.0, m))
    return m, u_a * alpha_a + u_b * alpha_b, w_a * alpha_a + w_b * alpha_b


@triton.jit
def _scan_kernel(  # type: ignore[no-untyped-def]
    M_ptr,  # (R, N) leaf maxima (scores)
    LU_ptr,  # (R, N) leaf counts; read only when HAS_LU
    W_ptr,  # (R, N, D) leaf sums (values)
    Y_ptr,  # (R, N, D) out: w/u when NORMALIZE, else w
    RO_ptr,  # (R, N) out: running max r
    UO_ptr,  # (R, N) out: u
    IM_ptr,  # (R,) initial carry m; read only when HAS_INIT
    IU_ptr,  # (R,) initial carry u
    IW_ptr,  # (R, D) initial carry w
    N,
    D,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    REVERSE: tl.constexpr,
    NORMALIZE: tl.constexpr,
    HAS_LU: tl.constexpr,
    HAS_INIT: tl.constexpr,
    IS_F64: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    dblk = tl.program_id(1)
    acc = tl.float64 if IS_F64 else tl.float32
    cols = dblk * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    rows_in_tile = tl.arange(0, BLOCK_N)
    # Carried prefix, broadcast over columns: the initial state, or the identity e = (-inf, 0, 0).
    if HAS_INIT:
        carry_m = tl.zeros((BLOCK_D,), acc) + tl.load(IM_ptr + row).to(acc)
        carry_u = tl.zeros((BLOCK_D,), acc) + tl.load(IU_ptr + row).to(acc)
        carry_w = tl.load(IW_ptr + row * D + cols, mask=col_ok, other=0.0).to(acc)
    else:
        carry_m = tl.full((BLOCK_D,), float("-inf"), acc)
        carry_u = tl.zeros((BLOCK_D,), acc)
        carry_w = tl.zeros((BLOCK_D,), acc)
    for start in range(0, N, BLOCK_N):
        n = start + rows_in_tile
        ok = n < N
        pos = (N - 1 - n) if REVERSE else n
        s = tl.load(M_ptr + row * N + pos, mask=ok, other=float("-inf")).to(acc)
        if HAS_LU:
            lu = tl.load(LU_ptr + row * N + pos, mask=ok, other=0.0).to(acc)
        else:
            lu = tl.where(s == float("-inf"), 0.0, 1.0).to(acc)
        offs = (row * N + pos)[:, None] * D + cols[None, :]
        w = tl.load(W_ptr + offs, mask=ok[:, None] & col_ok[None, :], other=0.0).to(acc)
        m_leaf = tl.broadcast_to(s[:, None], (BLOCK_N, BLOCK_D))
        u_leaf = tl.broadcast_to(lu[:, None], (BLOCK_N, BLOCK_D))
        m_t, u_t, w_t = tl.associative_scan((m_leaf, u_leaf, w), 0, _combine)
        # carry ⊕ (tile prefix)
        m_new, u_new, w_new = _combine(carry_m[None, :], carry_u[None, :], carry_w[None, :], m_t, u_t, w_t)
        y = tl.where(u_new > 0, w_new / tl.where(u_new > 0, u_new, 1.0), 0.0) if NORMALIZE else w_new
        tl.store(Y_ptr + offs, y.to(Y_ptr.dtype.element_ty), mask=ok[:, None] & col_ok[None, :])
        if dblk == 0:
            # Every column holds the same m and u; the max over columns reads them out.
            tl.store(RO_ptr + row * N + pos, tl.max(m_new, axis=1), mask=ok)
            tl.store(UO_ptr + row * N + pos, tl.max(u_new, axis=1), mask=ok)
        # Past-the-end leaves are e, so the tile's last row is the running total.
        last = rows_in_tile[:, None] == BLOCK_N - 1
        carry_m = tl.max(m_new, axis=0)
        carry_u = tl.sum(tl.where(last, u_new, 0.0), axis=0)
        carry_w = tl.sum(tl.where(last, w_new, 0.0), axis=0)


def triton_scan(
    m: Tensor,
    w: Tensor,
    u: Tensor | None,
    *,
    reverse: bool,
    normalize: bool,
    initial: tuple[Tensor, Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Inclusive ``⊕``-scan along dim 1 of leaves ``m: (R, N)``, ``w: (R, N, D)``, ``u: (R, N)``.

    ``u=None`` means ``u_i = [m_i > -inf]``; ``initial`` (``(R,)``, ``(R,)``, ``(R, D)``) is the state
    before the first leaf (the identity when ``None``).  Returns ``(y, r, u)``: ``y`` is ``w/u`` in
    the dtype of ``w`` when ``normalize``, else the prefix sums ``w`` in the accumulation dtype.
    """
    R, N = m.shape
    D = w.shape[-1]
    acc = torch.float64 if w.dtype == torch.float64 else torch.float32
    m, w = m.contiguous(), w.contiguous()
    lu = u.contiguous() if u is not None else m
    init = tuple(t.to(acc).contiguous() for t in initial) if initial is not None else (m, m, m)
    y = torch.empty((R, N, D), dtype=w.dtype if normalize else acc, device=w.device)
    r = torch.empty((R, N), dtype=acc, device=w.device)
    u_out = torch.empty((R, N), dtype=acc, device=w.device)
    if N == 0 or R == 0:
        return y, r, u_out
    block_d = min(64, triton.next_power_of_2(max(D, 1)))
    block_n = 64 if D <= 64 else 32
    grid = (R, max(1, triton.cdiv(D, block_d)))
    _scan_kernel[grid](
        m,
        lu,
        w,
        y,
        r,
        u_out,
        *init,
        N,
        D,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        REVERSE=reverse,
        NORMALIZE=normalize,
        HAS_LU=u is not None,
        HAS_INIT=initial is not None,
        IS_F64=acc == torch.float64,
    )
    return y, r, u_out
