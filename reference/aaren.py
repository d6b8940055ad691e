"""Attention as a many-to-one RNN and as a prefix scan (Aaren), written plainly.

Transcribes arXiv 2405.13956 ("Attention as an RNN", Feng et al. 2024) in the
formulation of ``book/aaren.md`` ("Our formulation and the paper's").  Everything here is meant to be read
next to the equations: loops are fine, speed is not a goal, and nothing here
validates its input (the fast API does that).

Notation (per row of any leading batch shape ``...``):

* scores ``s``: ``(..., N)``; values ``v``: ``(..., N, Dv)``;
* a scan state is a triple ``(m, u, w)`` with ``m, u: (...)`` and ``w: (..., Dv)``,
  standing for ``m = max_A s_i``, ``u = sum_A exp(s_i - m)``,
  ``w = sum_A exp(s_i - m) v_i`` over a set of tokens ``A``;
* a score of ``-inf`` is a masked token; its leaf is the identity ``e``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

NEG_INF = float("-inf")


class ScanState(NamedTuple):
    """``(m, u, w)``: running max ``(...)``, rescaled count ``(...)``, rescaled sum ``(..., Dv)``."""

    m: Tensor
    u: Tensor
    w: Tensor


class CellTrajectory(NamedTuple):
    """States of the many-to-one RNN after each token: ``m, c: (..., N)``, ``a: (..., N, Dv)``."""

    m: Tensor
    c: Tensor
    a: Tensor


# ---------------------------------------------------------------------------
# The scan operator (book/aaren.md, "The scan operator is a monoid")
# ---------------------------------------------------------------------------


def identity(batch_shape: torch.Size | tuple[int, ...], dv: int, *, dtype: torch.dtype = torch.float64) -> ScanState:
    """The identity ``e = (-inf, 0, 0)`` of ``⊕``."""
    return ScanState(
        torch.full(batch_shape, NEG_INF, dtype=dtype),
        torch.zeros(batch_shape, dtype=dtype),
        torch.zeros((*batch_shape, dv), dtype=dtype),
    )


def rescale(m_x: Tensor, m: Tensor) -> Tensor:
    """``alpha(m_x, m) = exp(m_x - m)``, and 0 when ``m_x = -inf`` (never evaluates ``-inf - -inf``)."""
    safe_m = torch.where(m_x == NEG_INF, torch.zeros_like(m), m)
    return torch.where(m_x == NEG_INF, torch.zeros_like(m), torch.exp(m_x - safe_m))


def combine(x: ScanState, y: ScanState) -> ScanState:
    """``(m_A,u_A,w_A) ⊕ (m_B,u_B,w_B) = (m, u_A α_A + u_B α_B, w_A α_A + w_B α_B)``, ``m = max(m_A, m_B)``.

    ``α_X = exp(m_X - m)`` (guarded: 0 for ``m_X = -inf``); see the book chapter's scan operator section.
    """
    m = torch.maximum(x.m, y.m)
    alpha_x = rescale(x.m, m)
    alpha_y = rescale(y.m, m)
    return ScanState(
        m,
        x.u * alpha_x + y.u * alpha_y,
        x.w * alpha_x[..., None] + y.w * alpha_y[..., None],
    )


def leaf(s: Tensor, v: Tensor) -> ScanState:
    """Leaf of a token: ``(s, 1, v)``, or ``e`` when ``s = -inf`` (a masked token); elementwise, so
    ``s: (..., N)``, ``v: (..., N, Dv)`` gives all the leaves of a sequence at once."""
    masked = s == NEG_INF
    u = torch.where(masked, torch.zeros_like(s), torch.ones_like(s))
    w = torch.where(masked[..., None], torch.zeros_like(v), v)
    return ScanState(s, u, w)


def readout(state: ScanState) -> Tensor:
    """``o = w / u``, and 0 for an empty (all-masked) prefix where ``u = 0``."""
    empty = state.u == 0
    safe_u = torch.where(empty, torch.ones_like(state.u), state.u)
    return torch.where(empty[..., None], torch.zeros_like(state.w), state.w / safe_u[..., None])


def phi(state: ScanState) -> tuple[Tensor, Tensor]:
    """The homomorphism ``φ(m, u, w) = (u e^m, w e^m)`` onto plain addition (overflows for large ``m``)."""
    scale = torch.exp(state.m)
    return state.u * scale, state.w * scale[..., None]


# ---------------------------------------------------------------------------
# The many-to-one RNN cell (book/aaren.md, "The many-to-one cell")
# ---------------------------------------------------------------------------


def stable_cell_step(state: ScanState, s_k: Tensor, v_k: Tensor) -> ScanState:
    """One step of the stable cell; ``state = (m_{k-1}, c_{k-1}, a_{k-1})``.

    ``m_k = max(m_{k-1}, s_k)``
    ``a_k = a_{k-1} exp(m_{k-1} - m_k) + v_k exp(s_k - m_k)``
    ``c_k = c_{k-1} exp(m_{k-1} - m_k) + exp(s_k - m_k)``
    """
    m_prev, c_prev, a_prev = state
    m_k = torch.maximum(m_prev, s_k)
    decay = rescale(m_prev, m_k)  # exp(m_{k-1} - m_k)
    fresh = rescale(s_k, m_k)  # exp(s_k - m_k); 0 for a masked token
    c_k = c_prev * decay + fresh
    a_k = a_prev * decay[..., None] + v_k * fresh[..., None]
    return ScanState(m_k, c_k, a_k)


def plain_cell_step(state: ScanState, s_k: Tensor, v_k: Tensor) -> ScanState:
    """One step of the plain cell: ``a_k = a_{k-1} + e^{s_k} v_k``, ``c_k = c_{k-1} + e^{s_k}``, ``m ≡ 0``.

    Exact in real arithmetic, but ``e^{s_k}`` overflows once ``s_k > 709.78`` (float64).
    """
    m_prev, c_prev, a_prev = state
    e_k = torch.exp(s_k)
    return ScanState(m_prev, c_prev + e_k, a_prev + e_k[..., None] * v_k)


def unroll(
    step: Callable[[ScanState, Tensor, Tensor], ScanState],
    initial: ScanState,
    scores: Tensor,
    values: Tensor,
) -> CellTrajectory:
    """Run a cell over ``scores (..., N)``, ``values (..., N, Dv)`` and stack the states after each token."""
    state = initial
    ms, cs, as_ = [], [], []
    for k in range(scores.shape[-1]):
        state = step(state, scores[..., k], values[..., k, :])
        ms.append(state.m)
        cs.append(state.u)
        as_.append(state.w)
    n = scores.shape[-1]
    if n == 0:
        return CellTrajectory(scores.clone(), scores.clone(), values.clone())
    return CellTrajectory(torch.stack(ms, -1), torch.stack(cs, -1), torch.stack(as_, -2))


def stable_rnn(scores: Tensor, values: Tensor) -> CellTrajectory:
    """States ``(m_k, c_k, a_k)`` of the stable cell from ``(m_0, c_0, a_0) = (-inf, 0, 0)``, for every ``k``."""
    initial = identity(scores.shape[:-1], values.shape[-1], dtype=values.dtype)
    return unroll(stable_cell_step, initial, scores, values)


def plain_rnn(scores: Tensor, values: Tensor) -> CellTrajectory:
    """States of the plain cell from ``(0, 0, 0)``; ``m`` stays 0, so ``c_k = sum e^{s_i}``."""
    initial = ScanState(
        torch.zeros(scores.shape[:-1], dtype=values.dtype),
        torch.zeros(scores.shape[:-1], dtype=values.dtype),
        torch.zeros((*scores.shape[:-1], values.shape[-1]), dtype=values.dtype),
    )
    return unroll(plain_cell_step, initial, scores, values)


def cell_outputs(trajectory: CellTrajectory) -> Tensor:
    """``o_k = a_k / c_k`` for every ``k`` (0 where ``c_k = 0``)."""
    return readout(ScanState(trajectory.m, trajectory.c, trajectory.a))


# ---------------------------------------------------------------------------
# Prefix scans (book/aaren.md, "The scan operator is a monoid"): three classical schedules of the same ⊕
# ---------------------------------------------------------------------------


def _take(states: ScanState, index: slice | int) -> ScanState:
    """Positions ``index`` of a sequence of states (``m, u: (..., N)``, ``w: (..., N, Dv)``)."""
    return ScanState(states.m[..., index], states.u[..., index], states.w[..., index, :])


def _replaced(states: ScanState, index: slice, value: ScanState) -> ScanState:
    """A copy of ``states`` with positions ``index`` set to ``value`` (never in place)."""
    m, u, w = (t.clone() for t in states)
    m[..., index], u[..., index], w[..., index, :] = value.m, value.u, value.w
    return ScanState(m, u, w)


def sequential_scan(scores: Tensor, values: Tensor) -> Tensor:
    """``o_k = readout(x_1 ⊕ x_2 ⊕ ... ⊕ x_k)``, folding left to right: ``N - 1`` combines."""
    x = leaf(scores, values)
    n = scores.shape[-1]
    prefix = identity(scores.shape[:-1], values.shape[-1], dtype=values.dtype)
    outputs = []
    for k in range(n):
        prefix = combine(prefix, _take(x, k))
        outputs.append(readout(prefix))
    if n == 0:
        return values.clone()
    return torch.stack(outputs, -2)


def hillis_steele_scan(scores: Tensor, values: Tensor) -> Tensor:
    """Inclusive scan by Hillis–Steele: in round ``d``, ``y_i = x_{i - 2^d} ⊕ x_i`` for ``i >= 2^d``.

    ``ceil(log2 N)`` rounds; each round builds a new sequence (never updates in place).
    """
    x = leaf(scores, values)
    n = scores.shape[-1]
    offset = 1
    while offset < n:
        shifted = combine(_take(x, slice(0, n - offset)), _take(x, slice(offset, n)))
        x = ScanState(
            torch.cat([x.m[..., :offset], shifted.m], -1),
            torch.cat([x.u[..., :offset], shifted.u], -1),
            torch.cat([x.w[..., :offset, :], shifted.w], -2),
        )
        offset *= 2
    return readout(x)


def blelloch_scan(scores: Tensor, values: Tensor) -> Tensor:
    """Work-efficient scan of Blelloch: up-sweep, then down-sweep from ``e``, giving the exclusive scan.

    The sequence is padded with ``e`` to a power of two; the inclusive result at ``k`` is
    ``exclusive_k ⊕ x_k``.  About ``2N`` combines in ``2 ceil(log2 N)`` levels.
    """
    x = leaf(scores, values)
    n = scores.shape[-1]
    size = 1
    while size < n:
        size *= 2
    pad = identity((*scores.shape[:-1], size - n), values.shape[-1], dtype=values.dtype)
    tree = ScanState(torch.cat([x.m, pad.m], -1), torch.cat([x.u, pad.u], -1), torch.cat([x.w, pad.w], -2))
    # Up-sweep: the last node of each block of width 2d accumulates the block.
    stride = 1
    while stride < size:
        left = slice(stride - 1, size, 2 * stride)
        right = slice(2 * stride - 1, size, 2 * stride)
        tree = _replaced(tree, right, combine(_take(tree, left), _take(tree, right)))
        stride *= 2
    # Down-sweep: the root gets e; each node passes its value left and (its value ⊕ left) right.
    tree = _replaced(
        tree, slice(size - 1, size), identity((*scores.shape[:-1], 1), values.shape[-1], dtype=values.dtype)
    )
    stride = size // 2
    while stride >= 1:
        left = slice(stride - 1, size, 2 * stride)
        right = slice(2 * stride - 1, size, 2 * stride)
        old_left, old_right = _take(tree, left), _take(tree, right)
        tree = _replaced(tree, left, old_right)
        tree = _replaced(tree, right, combine(old_right, old_left))
        stride //= 2
    exclusive = _take(tree, slice(0, n))
    return readout(combine(exclusive, x))


# ---------------------------------------------------------------------------
# Ground truth: masked quadratic constant-query attention (book/aaren.md, "Our formulation and the paper's")
# ---------------------------------------------------------------------------


def causal_constant_query_attention(scores: Tensor, values: Tensor) -> Tensor:
    """Row ``k`` of ``softmax(S + mask) V`` with ``S_{k,i} = s_i`` and mask 0 for ``i <= k``, else ``-inf``.

    ``O(N^2)`` memory.  A row whose scores are all ``-inf`` is defined as 0 (our masking convention, book/aaren.md).
    """
    n = scores.shape[-1]
    causal = torch.ones(n, n, dtype=torch.bool, device=scores.device).tril()
    # S: (..., N, N), S[..., k, i] = s_i masked to i <= k
    S = scores[..., None, :].expand(*scores.shape[:-1], n, n).masked_fill(~causal, NEG_INF)
    empty = (S == NEG_INF).all(-1, keepdim=True)
    P = torch.softmax(S.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
    return P @ values
