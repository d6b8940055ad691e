"""Fast prefix softmax attention (Aaren, arXiv 2405.13956) and the Aaren module.

Public API:

* :func:`prefix_softmax_attention` — constant-query causal softmax attention as an
  inclusive ``⊕``-scan; vectorized chunked torch on CPU, a Triton kernel on CUDA;
* :func:`combine` — the scan operator ``⊕`` on ``(m, u, w)`` states;
* :class:`Aaren` — the attention core with a learned query per head, parallel
  ``forward`` and constant-memory ``step``.

Verified against ``attnverify.reference.aaren`` (which this module never imports).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from attnverify.fast._dispatch import (
    BACKENDS,
    Backend,
    accumulation_dtype,
    require_float,
    require_same,
    require_tensor,
    select_backend,
)

NEG_INF = float("-inf")
CHUNK = 16
"""Chunk length ``C`` of the torch path: ``O(N C)`` exponentials, ``O(N C Dv)`` multiply-adds.
16 was fastest of 16/32/64/128 on a 2-core CPU at (16, 16384, 64) float32 (benchmarks/)."""


State = tuple[Tensor, Tensor, Tensor]
"""A scan state ``(m, u, w)``: ``m, u: (R,)``, ``w: (R, D)``."""


class ScanFn(Protocol):
    """An inclusive scan engine: ``(m, w, u, *, reverse, normalize) -> ScanResult`` (see :func:`_scan`)."""

    def __call__(self, m: Tensor, w: Tensor, u: Tensor | None, *, reverse: bool, normalize: bool) -> ScanResult: ...


class ScanResult(NamedTuple):
    """What a scan engine returns for rows ``R`` of length ``N``.

    ``y``: ``(R, N, D)``, the outputs ``w/u`` (when normalized) or the prefix sums ``w``;
    ``r``: ``(R, N)``, the running max each prefix is referenced to; ``u``: ``(R, N)``.
    """

    y: Tensor
    r: Tensor
    u: Tensor


class AarenState(NamedTuple):
    """Streaming state ``(m, u, w)`` of one Aaren layer: ``m, u: (B, H)``, ``w: (B, H, d_head)``."""

    m: Tensor
    u: Tensor
    w: Tensor


# ---------------------------------------------------------------------------
# ⊕ on states
# ---------------------------------------------------------------------------


def _alpha(m_x: Tensor, m: Tensor) -> Tensor:
    """``exp(m_x - m)``, and exactly 0 where ``m_x = -inf`` (so ``-inf - -inf`` is never formed)."""
    return torch.exp(m_x - m.masked_fill(m_x == NEG_INF, 0.0))  # exp(-inf - 0) = 0


def combine(x: tuple[Tensor, Tensor, Tensor], y: tuple[Tensor, Tensor, Tensor]) -> AarenState:
    """``x ⊕ y`` for states ``(m, u, w)``: ``m, u: (...)``, ``w: (..., D)`` (book/aaren.md, the scan operator).

    ``m = max(m_x, m_y)``, ``u = α_x u_x + α_y u_y``, ``w = α_x w_x + α_y w_y``, ``α = exp(m_· - m)``
    guarded to 0 for ``m_· = -inf``; the identity is ``(-inf, 0, 0)``.
    """
    m = torch.maximum(x[0], y[0])
    a_x = _alpha(x[0], m)
    a_y = _alpha(y[0], m)
    return AarenState(m, a_x * x[1] + a_y * y[1], a_x[..., None] * x[2] + a_y[..., None] * y[2])


def readout(u: Tensor, w: Tensor) -> Tensor:
    """``w / u``, and 0 where ``u = 0`` (an empty, all-masked prefix); ``u: (...)``, ``w: (..., D)``."""
    empty = u == 0
    return (w / torch.where(empty, 1.0, u)[..., None]).masked_fill(empty[..., None], 0.0)


# ---------------------------------------------------------------------------
# Torch engine: chunked two-level (recursive) scan
# ---------------------------------------------------------------------------


def _chunk_scan(
    m: Tensor,
    w: Tensor,
    u: Tensor,
    carry: tuple[Tensor, Tensor, Tensor] | None,
    normalize: bool,
    bad: Tensor | None = None,
) -> ScanResult:
    """Inclusive scan inside chunks, each starting from its carried prefix.

    ``m, u: (R, K, C)``, ``w: (R, K, C, D)``; ``carry``: ``(R, K)``, ``(R, K)``, ``(R, K, D)``.
    With ``r_k = max(m_carry, max_{i<=k} m_i)`` and ``P_{k,i} = exp(m_i - r_k) [i <= k]``:
    ``u_k = α_k u_carry + (P u)_k``, ``w_k = α_k w_carry + (P w)_k``, ``α_k = exp(m_carry - r_k)``.

    ``bad: (R, K)`` flags chunks whose leaves may hold NaN or ±inf.  A matrix product multiplies
    them by the zeros above the diagonal (``0 · NaN = NaN``) and would spread them to earlier
    positions, so in flagged chunks they enter the products as 0 and are added back, position by
    position, only where ``i <= k`` (:func:`_causal_nonfinite`): outputs before a non-finite leaf are
    bit for bit those of a finite one.
    """
    R, K, C = m.shape
    D = w.shape[-1]
    flagged = bad.nonzero(as_tuple=True) if bad is not None and bool(bad.any()) else None
    if flagged is not None:
        w_bad, u_bad = w[flagged], u[flagged]  # (F, C, D), (F, C)
        w = w.index_put(flagged, w_bad.where(w_bad.isfinite(), 0.0))
        u = u.index_put(flagged, u_bad.where(u_bad.isfinite(), 0.0))
    r = torch.cummax(m, dim=-1).values
    if carry is not None:
        r = torch.maximum(r, carry[0][..., None])
    # P[..., k, i] = exp(m_i - r_k) for i <= k; 0 above the diagonal and where r_k = -inf.
    # (Where r_k = -inf every m_i, i <= k, is -inf too: referencing such rows to 0 gives exp(-inf) = 0.)
    diff = m[..., None, :] - r.masked_fill(r == NEG_INF, 0.0)[..., :, None]
    upper = torch.ones(C, C, dtype=torch.bool, device=m.device).triu(1)
    P = diff.masked_fill_(upper, NEG_INF).exp_()
    U = (P @ u[..., None]).squeeze(-1)
    if flagged is not None:
        U = U.index_put(flagged, U[flagged] + _causal_nonfinite(P[flagged], u_bad[..., None]).squeeze(-1))
    if carry is not None:
        alpha = _alpha(carry[0][..., None], r)
        U = U + alpha * carry[1][..., None]
    scale = torch.where(U > 0, U, 1.0).reciprocal_().masked_fill_(U == 0, 0.0) if normalize else None
    if scale is not None:
        P.mul_(scale[..., None])
    Pf = P.view(R * K, C, C)
    wf = w.reshape(R * K, C, D)
    y = torch.bmm(Pf, wf)
    if flagged is not None:
        y = y.view(R, K, C, D)
        y = y.index_put(flagged, y[flagged] + _causal_nonfinite(P[flagged], w_bad)).view(R * K, C, D)
    if carry is not None:
        weight = alpha if scale is None else alpha * scale
        y.baddbmm_(weight.view(R * K, C, 1), carry[2].reshape(R * K, 1, D))  # + α_k w_carry, a rank-1 update
    return ScanResult(y.view(R, K * C, D), r.reshape(R, K * C), U.reshape(R, K * C))


def _causal_nonfinite(P: Tensor, x: Tensor) -> Tensor:
    """``sum_{i<=k} P_{k,i} x_i`` over only the non-finite entries of ``x``: ``P: (F, C, C)``, ``x: (F, C, D)``.

    Elementwise, so IEEE rules hold term by term (``0 · inf = NaN`` at ``i <= k``) and nothing
    above the diagonal is touched; rows before the first non-finite ``x_i`` get exactly 0.
    """
    C = P.shape[-1]
    lower = torch.ones(C, C, dtype=torch.bool, device=P.device).tril()[..., None]
    nonfinite = x.where(~x.isfinite(), 0.0)[..., None, :, :]  # (F, 1, C, D): finite entries are 0
    return torch.where(lower, P[..., None] * nonfinite, 0.0).sum(-2)


def _nonfinite_rows(w: Tensor, u: Tensor) -> Tensor:
    """``(R, K)``: which of the ``K`` groups of leaves ``u: (R, K, ·)``, ``w: (R, K, ·, D)`` hold NaN or ±inf.

    By their sums (a float reduction is far cheaper than ``isfinite().all()``): NaN and ±inf survive
    a sum; a finite sum that overflows only sends a group to the (exact) careful path needlessly.
    """
    return ~torch.isfinite(w.sum((-2, -1)) + u.sum(-1))


def totals(m: Tensor, w: Tensor, u: Tensor) -> AarenState:
    """``⊕`` of all leaves along the last axis of ``m, u: (..., C)``, ``w: (..., C, D)``, in one pass:
    ``(M, sum e^{m_i - M} u_i, sum e^{m_i - M} w_i)`` with ``M = max m_i`` (``e`` when all are ``-inf``)."""
    M = m.amax(-1)
    e = _alpha(m, M[..., None])
    return AarenState(M, (e * u).sum(-1), (e[..., None, :] @ w).squeeze(-2))


def _torch_scan(m: Tensor, w: Tensor, u: Tensor, normalize: bool, initial: State | None = None) -> ScanResult:
    """Inclusive ``⊕``-scan of leaves ``(m_i, u_i, w_i)`` along dim 1 (chunk ``C`` = :data:`CHUNK`),
    starting from ``initial`` (``(R,)``, ``(R,)``, ``(R, D)``; the identity when ``None``).

    Two levels, recursively: per-chunk totals, the exclusive scan of the totals (this
    function again, on ``N / C`` leaves), then the within-chunk matrix form folded onto the
    carries.  Cost: ``O(N C)`` exponentials and ``O(N C D)`` multiply-adds, ``O(R N C)`` memory.
    """
    R, N = m.shape
    D = w.shape[-1]
    if N <= CHUNK:
        carry = None if initial is None else (initial[0][:, None], initial[1][:, None], initial[2][:, None])
        return _chunk_scan(m[:, None], w[:, None], u[:, None], carry, normalize, _nonfinite_rows(w, u)[:, None])
    K = -(-N // CHUNK)
    pad = K * CHUNK - N
    if pad:
        m = torch.nn.functional.pad(m, (0, pad), value=NEG_INF)
        u = torch.nn.functional.pad(u, (0, pad))
        w = torch.nn.functional.pad(w, (0, 0, 0, pad))
    mc = m.view(R, K, CHUNK)
    uc = u.view(R, K, CHUNK)
    wc = w.view(R, K, CHUNK, D)
    M, tot_u, tot_w = totals(mc, wc, uc)  # T_c, one per chunk
    # The totals' sums multiply every leaf (0 · x included), so a NaN/±inf leaf makes its chunk's total
    # non-finite: a look at the (R, K) totals flags the chunks that need the causal treatment.
    bad = _nonfinite_rows(tot_w[..., None, :], tot_u[..., None])
    # Carries: the exclusive prefix of the totals (the inclusive scan shifted right, ``initial`` first).
    inc = _torch_scan(M, tot_w, tot_u, normalize=False, initial=initial)
    if initial is None:
        initial = (torch.full_like(M[:, 0], NEG_INF), torch.zeros_like(M[:, 0]), torch.zeros_like(tot_w[:, 0]))
    carry_m = torch.cat([initial[0][:, None], inc.r[:, :-1]], 1)
    carry_u = torch.cat([initial[1][:, None], inc.u[:, :-1]], 1)
    carry_w = torch.cat([initial[2][:, None], inc.y[:, :-1]], 1)
    out = _chunk_scan(mc, wc, uc, (carry_m, carry_u, carry_w), normalize, bad)
    return ScanResult(out.y[:, :N], out.r[:, :N], out.u[:, :N])


def _scan(
    m: Tensor,
    w: Tensor,
    u: Tensor | None,
    *,
    backend: Backend,
    reverse: bool,
    normalize: bool,
    initial: State | None = None,
) -> ScanResult:
    """Inclusive scan of leaves ``(m_i, u_i, w_i)`` (``u_i = [m_i > -inf]`` when ``u`` is None) along dim 1,
    from ``initial`` (the identity when ``None``; in the accumulation dtype).

    ``reverse=True`` scans from the end (position ``i`` sums over ``k >= i``).  Accumulates in
    float32 (float64 for float64 input); ``y`` comes back in the dtype of ``w`` when ``normalize``.
    """
    if backend in ("triton", "triton_tiled"):
        from attnverify.fast.triton.aaren import triton_scan

        tiles = 1 if backend == "triton_tiled" else None
        return ScanResult(*triton_scan(m, w, u, reverse=reverse, normalize=normalize, initial=initial, tiles=tiles))
    out_dtype = w.dtype
    m, w, u = _leaves(m, w, u)
    if reverse:
        m, w, u = m.flip(1), w.flip(1), u.flip(1)
    out = _torch_scan(m, w, u, normalize, initial) if m.shape[1] else ScanResult(w.clone(), m.clone(), u.clone())
    if reverse:
        out = ScanResult(out.y.flip(1), out.r.flip(1), out.u.flip(1))
    return out._replace(y=out.y.to(out_dtype)) if normalize else out


def _leaves(m: Tensor, w: Tensor, u: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Leaves in the accumulation dtype, with ``u_i = [m_i > -inf]`` when ``u`` is None; ``e`` where ``m_i = -inf``."""
    acc = accumulation_dtype(w.dtype)
    m, w = m.to(acc), w.to(acc)
    live = m != NEG_INF
    u = live.to(acc) if u is None else u.to(acc)
    if not bool(live.all()):  # a leaf with m = -inf is e: whatever its u, w hold (NaN, ±inf) never enters a sum
        w = w.masked_fill(~live[..., None], 0.0)
        u = u.masked_fill(~live, 0.0)
    return m, w, u


# ---------------------------------------------------------------------------
# Autograd
# ---------------------------------------------------------------------------


class _PrefixSoftmax(torch.autograd.Function):
    """Forward: normalized scan.  Backward: one reverse scan (derived in ``book/aaren.md``).

    With ``g_k = dL/do_k`` and the saved ``m_k, u_k``:
    ``R_i = sum_{k>=i} e^{m_i - m_k} g_k / u_k``, ``D_i = sum_{k>=i} e^{m_i - m_k} (g_k · o_k) / u_k``,
    ``dL/dv_i = e^{s_i - m_i} R_i``, ``dL/ds_i = e^{s_i - m_i} (v_i · R_i - D_i)``.
    ``R`` and ``D`` are one reverse ``⊕``-scan of leaves ``(-m_k, (g_k·o_k)/u_k, g_k/u_k)``.

    Non-finite values: a masked token's gradients are 0 whatever its value; for a NaN/±inf value
    at a live token ``t``, the gradients of tokens before ``t`` under a loss on outputs before
    ``t`` are those of a finite value (``g_k = 0`` takes nothing from a non-finite ``o_k``); the
    gradients of ``t`` and later tokens are then unspecified (NaN).

    ``scan`` runs the scans: :func:`_scan` on one device, or a sequence-parallel scan whose
    prefixes cross ranks (``attnverify.fast.sequence_parallel``); this backward serves both.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, s: Tensor, v: Tensor, scan: ScanFn) -> Tensor:  # type: ignore[override]
        out = scan(s, v, None, reverse=False, normalize=True)
        ctx.save_for_backward(s, v, out.y, out.r, out.u)
        ctx.scan = scan  # type: ignore[attr-defined]
        ctx.input_dtype = v.dtype  # type: ignore[attr-defined]
        return out.y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:  # type: ignore[override]
        s, v, o, m, u = ctx.saved_tensors
        acc = m.dtype
        s, v, o, grad = s.to(acc), v.to(acc), o.to(acc), grad.to(acc)
        live = u > 0
        inv_u = torch.where(live, u, 1.0).reciprocal().masked_fill(~live, 0.0)
        leaf_m = torch.where(live, -m, NEG_INF)
        go = (grad * o).sum(-1)
        if not bool(go.isfinite().all()):  # a non-finite output o_k adds nothing where g_k = 0
            go = torch.where(grad == 0, 0.0, grad * o).sum(-1)
        back = ctx.scan(leaf_m, grad * inv_u[..., None], go * inv_u, reverse=True, normalize=False)
        f = _alpha(s, m)  # e^{s_i - m_i}, 0 for masked tokens
        dv = f[..., None] * back.y
        # Masked tokens get exactly 0 whatever their values hold (NaN, ±inf), as their leaves are e.
        ds = torch.where(f > 0, f * ((v * back.y).sum(-1) - back.u), 0.0)
        return ds.to(ctx.input_dtype), dv.to(ctx.input_dtype), None


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def validate_scan_inputs(scores: Tensor, values: Tensor) -> None:
    """``scores: (..., N)`` and ``values: (..., N, Dv)``, floating, one dtype and device; raise naming the argument."""
    require_tensor("scores", scores)
    require_tensor("values", values)
    require_float("scores", scores)
    require_float("values", values)
    require_same(("scores", "values"), scores, values)
    if scores.dim() < 1:
        raise ValueError("scores: expected shape (..., N) with at least one dimension, got a 0-d tensor")
    if values.dim() != scores.dim() + 1 or values.shape[:-1] != scores.shape:
        raise ValueError(
            f"values: expected shape {(*scores.shape, 'Dv')} to match scores {tuple(scores.shape)}, "
            f"got {tuple(values.shape)}"
        )


def prefix_softmax_attention(scores: Tensor, values: Tensor, *, backend: str | None = None) -> Tensor:
    """Constant-query causal softmax attention: ``out_k = sum_{i<=k} softmax(s_{1..k})_i v_i``.

    Aaren's many-to-many output as an inclusive ``⊕``-scan (arXiv 2405.13956; book/aaren.md, our formulation).

    Args:
        scores: ``(..., N)``, float16/bfloat16/float32/float64.  ``-inf`` marks a masked token.
            Nothing is scaled: fold ``1/sqrt(d)`` into the scores.  ``+inf``/NaN propagate NaN.
        values: ``(..., N, Dv)``, same dtype and device as ``scores``.  A masked token's value is
            ignored, even NaN or ±inf (padding); a NaN/±inf value at a live token ``t`` makes
            outputs from ``t`` on non-finite and leaves those before ``t`` bit for bit unchanged.
        backend: ``None`` (Triton on CUDA, torch elsewhere), ``"torch"``, ``"triton"`` (tiles the
            sequence across programs when rows × value-column blocks cannot fill the GPU) or
            ``"triton_tiled"`` (always tiles; for tests and benchmarks).

    Returns:
        ``(..., N, Dv)`` in the input dtype.  A prefix whose scores are all ``-inf`` gives 0,
        with zero gradient.  float16/bfloat16 accumulate in float32.  Masked tokens get zero
        gradients, whatever their values hold.

    Algorithm: torch path — chunked scan, recursive over chunk totals (chunk ``C`` = 16):
    ``O(N C)`` exponentials, ``O(N C Dv)`` multiply-adds; Triton — one pass over tiles with
    ``tl.associative_scan`` and a carried prefix, or three passes when tiled (tile totals, their
    scan, local scans from the carried prefixes).  Backward: one reverse scan.  Verified against
    ``attnverify.reference.aaren.causal_constant_query_attention`` in float64.
    """
    validate_scan_inputs(scores, values)
    chosen = select_backend(backend, scores.device, BACKENDS)
    *lead, n = scores.shape
    dv = values.shape[-1]
    rows = math.prod(lead)
    out = _PrefixSoftmax.apply(scores.reshape(rows, n), values.reshape(rows, n, dv), partial(_scan, backend=chosen))
    return out.reshape(*lead, n, dv)


# ---------------------------------------------------------------------------
# The Aaren module (arXiv 2405.13956; book/aaren.md, "Our formulation and the paper's")
# ---------------------------------------------------------------------------


class Aaren(nn.Module):
    """Aaren attention core: one learned query per head over linear keys and values.

    ``o_k = prefix_softmax_attention(scale · K_h q_h, V_h)`` per head, heads concatenated
    (arXiv 2405.13956, §3; our formulation in ``book/aaren.md``).  ``forward`` is the parallel
    form; ``init_state``/``step`` stream one token at a time in a state of ``B·H·(d_head + 2)``
    numbers, whatever the number of tokens seen.

    Args:
        d_model: model width; must be divisible by ``n_heads``.
        n_heads: number of heads ``H``; ``d_head = d_model / H``.
        bias: whether the key and value projections have a bias.
        scale: factor on the scores; default ``1/sqrt(d_head)``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        bias: bool = True,
        scale: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(d_model, int) or d_model < 1:
            raise ValueError(f"d_model: expected a positive int, got {d_model!r}")
        if not isinstance(n_heads, int) or n_heads < 1 or d_model % n_heads:
            raise ValueError(f"n_heads: expected a positive divisor of d_model={d_model}, got {n_heads!r}")
        self.d_model = d_model
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.scale = 1.0 / math.sqrt(self.d_head) if scale is None else float(scale)
        self.query = nn.Parameter(torch.randn(n_heads, self.d_head, device=device, dtype=dtype))
        self.key = nn.Linear(d_model, d_model, bias=bias, device=device, dtype=dtype)
        self.value = nn.Linear(d_model, d_model, bias=bias, device=device, dtype=dtype)

    def _scores_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x: (..., d_model)`` → scores ``(..., H)`` and values ``(..., H, d_head)``."""
        k = self.key(x).unflatten(-1, (self.n_heads, self.d_head))
        v = self.value(x).unflatten(-1, (self.n_heads, self.d_head))
        return (k * self.query).sum(-1) * self.scale, v

    def _check_input(self, name: str, x: object, dims: int, mask: object) -> Tensor:
        x = require_tensor(name, x)
        require_float(name, x)
        if x.dim() != dims or x.shape[-1] != self.d_model:
            shape = "(B, N, d_model)" if dims == 3 else "(B, d_model)"
            raise ValueError(f"{name}: expected shape {shape} with d_model={self.d_model}, got {tuple(x.shape)}")
        if x.dtype != self.query.dtype:
            raise TypeError(f"{name}: expected the module's dtype {self.query.dtype}, got {x.dtype}")
        if mask is not None:
            mask = require_tensor("mask", mask)
            if mask.dtype != torch.bool or mask.shape != x.shape[:-1] or mask.device != x.device:
                raise ValueError(
                    f"mask: expected a bool tensor of shape {tuple(x.shape[:-1])} on {x.device}, "
                    f"got {mask.dtype} {tuple(mask.shape)} on {mask.device}"
                )
        return x

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x: (B, N, d_model)`` → ``(B, N, d_model)``; ``mask: (B, N)`` bool, False drops a token.

        A dropped token reaches no output and no gradient, whatever ``x`` holds there (NaN, ±inf).
        """
        x = self._check_input("x", x, 3, mask)
        if mask is not None:  # a dropped token's features (padding: NaN, ±inf) reach neither outputs nor gradients
            x = x.masked_fill(~mask[..., None], 0.0)
        s, v = self._scores_values(x)  # (B, N, H), (B, N, H, d_head)
        if mask is not None:
            s = s.masked_fill(~mask[..., None], NEG_INF)
        o = prefix_softmax_attention(s.transpose(1, 2), v.transpose(1, 2))  # (B, H, N, d_head)
        return o.transpose(1, 2).flatten(-2)

    def init_state(self, batch_size: int) -> AarenState:
        """The identity ``e = (-inf, 0, 0)`` per head: ``m, u: (B, H)``, ``w: (B, H, d_head)``."""
        if not isinstance(batch_size, int) or batch_size < 0:
            raise ValueError(f"batch_size: expected a non-negative int, got {batch_size!r}")
        acc, device = accumulation_dtype(self.query.dtype), self.query.device
        shape = (batch_size, self.n_heads)
        return AarenState(
            torch.full(shape, NEG_INF, dtype=acc, device=device),
            torch.zeros(shape, dtype=acc, device=device),
            torch.zeros((*shape, self.d_head), dtype=acc, device=device),
        )

    def step(self, x_t: Tensor, state: AarenState, mask_t: Tensor | None = None) -> tuple[Tensor, AarenState]:
        """One token: ``state' = state ⊕ (s_t, 1, v_t)``, ``y_t = w'/u'``; ``x_t: (B, d_model)``.

        ``mask_t: (B,)`` bool, False leaves the state unchanged for that row (its leaf is ``e``),
        whatever ``x_t`` holds there (NaN, ±inf).
        """
        x_t = self._check_input("x_t", x_t, 2, mask_t)
        if not isinstance(state, tuple) or len(state) != 3:
            raise TypeError("state: expected the AarenState (m, u, w) from init_state or step")
        expected = (x_t.shape[0], self.n_heads)
        if state[0].shape != expected or state[2].shape != (*expected, self.d_head):
            raise ValueError(
                f"state: expected m, u of shape {expected} and w of shape {(*expected, self.d_head)}, "
                f"got {tuple(state[0].shape)} and {tuple(state[2].shape)}"
            )
        if mask_t is not None:
            x_t = x_t.masked_fill(~mask_t[:, None], 0.0)
        s, v = self._scores_values(x_t)  # (B, H), (B, H, d_head)
        acc = state[0].dtype
        s, v = s.to(acc), v.to(acc)
        if mask_t is not None:
            s = s.masked_fill(~mask_t[:, None], NEG_INF)
        live = s != NEG_INF
        new = combine(state, (s, live.to(acc), v.where(live[..., None], 0.0)))
        return readout(new.u, new.w).flatten(-2).to(x_t.dtype), new
