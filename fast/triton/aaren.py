"""Triton kernel for the Aaren prefix scan (arXiv 2405.13956; our book chapter, "Triton").

One program per (row, block of ``BLOCK_D`` value columns, segment of the sequence).  It walks its
segment in tiles of ``BLOCK_N`` tokens: loads the leaves ``(m_i, u_i, w_i)`` (``m = -inf``,
``u = w = 0`` past the end; a leaf with ``m = -inf`` is ``e`` whatever its ``u``, ``w`` hold),
broadcasts ``m`` and ``u`` to the tile's ``(BLOCK_N, BLOCK_D)`` shape (the members of a
``tl.associative_scan`` tuple share one shape), scans axis 0 with the guarded ``⊕``, folds in the
prefix carried from earlier tiles, stores, and carries the tile's last row onward.

With one segment per row (enough rows × column blocks to fill the device) that is one pass: the
traffic minimum ``N (2 Dv + 1)`` elements per row (forward) and a carry of ``Dv + 2`` numbers in
registers.  Otherwise the sequence is *tiled* across programs in three passes, as the torch and
sequence-parallel paths do: every segment's total in parallel (``TOTALS``), an exclusive scan of
the totals (this kernel again, one segment), then every segment's local scan from its carried
prefix.  The inputs are read twice.  Either way an output reads only leaves at or before it (its
tile's scan, the carries of earlier tiles and segments), so a NaN/±inf value never reaches an
earlier position.  Accumulation is float32 (float64 for float64 inputs).
Verified, like the torch path, against ``attnverify.reference.aaren.causal_constant_query_attention``.
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
    Y_ptr,  # (R, N, D) out: w/u when NORMALIZE, else w; (R, S, D) segment totals w when TOTALS
    RO_ptr,  # (R, N) out: running max r; (R, S) segment totals m when TOTALS
    UO_ptr,  # (R, N) out: u; (R, S) segment totals u when TOTALS
    IM_ptr,  # (R, S) initial carry m of each segment; read only when HAS_INIT
    IU_ptr,  # (R, S) initial carry u
    IW_ptr,  # (R, S, D) initial carry w
    N,
    D,
    SPAN,  # tokens per segment, a multiple of BLOCK_N
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    REVERSE: tl.constexpr,
    NORMALIZE: tl.constexpr,
    HAS_LU: tl.constexpr,
    HAS_INIT: tl.constexpr,
    IS_F64: tl.constexpr,
    TOTALS: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    dblk = tl.program_id(1)
    seg = tl.program_id(2)
    cell = row * tl.num_programs(2) + seg  # (row, segment) in the per-segment arrays
    acc = tl.float64 if IS_F64 else tl.float32
    cols = dblk * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    rows_in_tile = tl.arange(0, BLOCK_N)
    # Carried prefix, broadcast over columns: the segment's initial state, or the identity e = (-inf, 0, 0).
    if HAS_INIT:
        carry_m = tl.zeros((BLOCK_D,), acc) + tl.load(IM_ptr + cell).to(acc)
        carry_u = tl.zeros((BLOCK_D,), acc) + tl.load(IU_ptr + cell).to(acc)
        carry_w = tl.load(IW_ptr + cell * D + cols, mask=col_ok, other=0.0).to(acc)
    else:
        carry_m = tl.full((BLOCK_D,), float("-inf"), acc)
        carry_u = tl.zeros((BLOCK_D,), acc)
        carry_w = tl.zeros((BLOCK_D,), acc)
    first = seg * SPAN
    for start in range(first, tl.minimum(N, first + SPAN), BLOCK_N):
        n = start + rows_in_tile
        ok = n < N
        pos = (N - 1 - n) if REVERSE else n
        s = tl.load(M_ptr + row * N + pos, mask=ok, other=float("-inf")).to(acc)
        dead = s == float("-inf")
        if HAS_LU:
            lu = tl.where(dead, 0.0, tl.load(LU_ptr + row * N + pos, mask=ok, other=0.0).to(acc))
        else:
            lu = tl.where(dead, 0.0, 1.0).to(acc)
        offs = (row * N + pos)[:, None] * D + cols[None, :]
        w = tl.load(W_ptr + offs, mask=ok[:, None] & col_ok[None, :], other=0.0).to(acc)
        w = tl.where(dead[:, None], 0.0, w)  # a masked token's value (NaN, ±inf) never enters a sum
        m_leaf = tl.broadcast_to(s[:, None], (BLOCK_N, BLOCK_D))
        u_leaf = tl.broadcast_to(lu[:, None], (BLOCK_N, BLOCK_D))
        if TOTALS:
            m_r, u_r, w_r = tl.reduce((m_leaf, u_leaf, w), 0, _combine)
            carry_m, carry_u, carry_w = _combine(carry_m, carry_u, carry_w, m_r, u_r, w_r)
        else:
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
    if TOTALS:
        tl.store(Y_ptr + cell * D + cols, carry_w, mask=col_ok)
        if dblk == 0:
            tl.store(RO_ptr + cell, tl.max(carry_m, axis=0))
            tl.store(UO_ptr + cell, tl.max(carry_u, axis=0))


PROGRAMS_PER_SM = 4
"""The tiled path aims at this many programs per streaming multiprocessor."""


def tiles_per_program(programs: int, tiles: int, device: torch.device) -> int:
    """Tiles each program scans: all of its row's (one pass) when ``programs`` (rows × column blocks)
    fill :data:`PROGRAMS_PER_SM` programs per multiprocessor of ``device`` or the device is not CUDA,
    else enough segments per row to do so (the tiled path)."""
    if device.type != "cuda" or tiles <= 1:
        return max(tiles, 1)
    wanted = PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count
    if programs >= wanted:
        return tiles
    return max(1, tiles // triton.cdiv(wanted, programs))  # rounded down: at least ``wanted`` programs


def block_sizes(d: int) -> tuple[int, int]:
    """``(BLOCK_N, BLOCK_D)`` for ``d`` value columns."""
    return (64 if d <= 64 else 32), min(64, triton.next_power_of_2(max(d, 1)))


def triton_scan(
    m: Tensor,
    w: Tensor,
    u: Tensor | None,
    *,
    reverse: bool,
    normalize: bool,
    initial: tuple[Tensor, Tensor, Tensor] | None = None,
    tiles: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Inclusive ``⊕``-scan along dim 1 of leaves ``m: (R, N)``, ``w: (R, N, D)``, ``u: (R, N)``.

    ``u=None`` means ``u_i = [m_i > -inf]``; ``initial`` (``(R,)``, ``(R,)``, ``(R, D)``) is the state
    before the first leaf (the identity when ``None``).  ``tiles``: tiles of ``BLOCK_N`` tokens per
    program (``1`` tiles the sequence finest, ``≥ N / BLOCK_N`` is one pass); ``None`` picks it by
    occupancy (:func:`tiles_per_program`).  Returns ``(y, r, u)``: ``y`` is ``w/u`` in the dtype of
    ``w`` when ``normalize``, else the prefix sums ``w`` in the accumulation dtype.
    """
    R, N = m.shape
    D = w.shape[-1]
    acc = torch.float64 if w.dtype == torch.float64 else torch.float32
    m, w = m.contiguous(), w.contiguous()
    lu = u.contiguous() if u is not None else m
    y = torch.empty((R, N, D), dtype=w.dtype if normalize else acc, device=w.device)
    r = torch.empty((R, N), dtype=acc, device=w.device)
    u_out = torch.empty((R, N), dtype=acc, device=w.device)
    if N == 0 or R == 0:
        return y, r, u_out
    block_n, block_d = block_sizes(D)
    n_dblk = max(1, triton.cdiv(D, block_d))
    n_tiles = triton.cdiv(N, block_n)
    per_program = tiles_per_program(R * n_dblk, n_tiles, w.device) if tiles is None else min(max(tiles, 1), n_tiles)
    segments = triton.cdiv(n_tiles, per_program)
    consts = {"BLOCK_N": block_n, "BLOCK_D": block_d, "IS_F64": acc == torch.float64, "REVERSE": reverse}
    if segments == 1:
        init = tuple(t.to(acc).contiguous() for t in initial) if initial is not None else (m, m, m)
        carried = initial is not None
    else:
        # Pass 1: every segment's total, in scan order.
        tot_w = torch.empty((R, segments, D), dtype=acc, device=w.device)
        tot_m = torch.empty((R, segments), dtype=acc, device=w.device)
        tot_u = torch.empty((R, segments), dtype=acc, device=w.device)
        _scan_kernel[(R, n_dblk, segments)](
            m, lu, w, tot_w, tot_m, tot_u, m, m, m, N, D, per_program * block_n,
            NORMALIZE=False, HAS_LU=u is not None, HAS_INIT=False, TOTALS=True, **consts,
        )  # fmt: skip
        # Pass 2: their inclusive scan from ``initial``, shifted right: each segment's carried prefix.
        inc_w, inc_m, inc_u = triton_scan(
            tot_m, tot_w, tot_u, reverse=False, normalize=False, initial=initial, tiles=segments
        )
        if initial is None:
            m0, u0, w0 = tot_m[:, 0], tot_u[:, 0], tot_w[:, 0]
            initial = (torch.full_like(m0, float("-inf")), torch.zeros_like(u0), torch.zeros_like(w0))
        init = tuple(
            torch.cat([first.to(acc)[:, None], inc[:, :-1]], 1).contiguous()
            for first, inc in zip(initial, (inc_m, inc_u, inc_w), strict=True)
        )
        carried = True
    # Pass 3 (the only pass with one segment): local scans from the carried prefixes.
    _scan_kernel[(R, n_dblk, segments)](
        m, lu, w, y, r, u_out, *init, N, D, per_program * block_n,
        NORMALIZE=normalize, HAS_LU=u is not None, HAS_INIT=carried, TOTALS=False, **consts,
    )  # fmt: skip
    return y, r, u_out
