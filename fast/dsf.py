"""The chunked kernels of the DSF family (arXiv 2405.15731): gated linear attention, one engine.

``gated_linear_attention`` runs ``S_t = diag(e^{g_t}) S_{t-1} + k_t v_tᵀ``, ``o_t = S_tᵀ q_t`` (GLA,
arXiv 2312.06635, §4) in two-level chunks; linear attention (no decay), RetNet/Lightning (one constant
decay per head), SSD (a decay per head and step) and GLA (a decay per key channel) are its cases
(book/dsf.md, "One kernel for the family").  Verified against ``attnverify.reference.dsf``.
"""

from __future__ import annotations

import math
from typing import Any, Literal, overload

import torch
from torch import Tensor

from attnverify.fast._dispatch import accumulation_dtype, require_float, require_same, require_tensor, select_backend

CHUNK = 64
SUBCHUNK = 16
SEGMENT_ELEMENTS = 1 << 20
"""Elements of ``q`` (``B·H·T·Dk``) per segment of the CPU path: a longer sequence runs segment after segment,
the state carried between them, so every per-chunk tensor stays cache-sized and the time stays linear in ``T``."""
ONE_MATMUL_LIMIT = {torch.float64: 500.0, torch.float32: 30.0}
"""Largest ``|Ĝ|`` (a chunk's total log-gate) for which a chunk's per-key weights are one matmul of ``q ⊙ e^{Ĝ}``
and ``k ⊙ e^{-Ĝ}``: ``e^{±Ĝ}`` stay finite and normal, and their rounding ``u |Ĝ|`` stays small (float32:
``30 · 6e-8 ≈ 2e-6``).  Stronger gates take the two-level path, whose exponents are all ``<= 0``."""


def validate_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    """``q, k: (B, H, T, D)`` and ``v: (B, H, T, Dv)``, floating, one dtype and device; raise naming the argument."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        require_tensor(name, t)
        require_float(name, t)
        if t.dim() != 4:
            raise ValueError(f"{name}: expected shape (B, H, T, D), got {tuple(t.shape)}")
    require_same(("q", "k"), q, k)
    require_same(("q", "v"), q, v)
    if k.shape != q.shape:
        raise ValueError(f"k: expected the shape of q {tuple(q.shape)}, got {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v: expected shape {(*q.shape[:3], 'Dv')}, got {tuple(v.shape)}")


def validate_decay(q: Tensor, log_decay: Tensor) -> None:
    """``log_decay``: ``(B, H, T)`` or ``(B, H, T, Dk)`` like ``q``, natural-log gates ``<= 0``; raise naming it."""
    require_tensor("log_decay", log_decay)
    require_same(("q", "log_decay"), q, log_decay)
    if tuple(log_decay.shape) not in (tuple(q.shape[:3]), tuple(q.shape)):
        raise ValueError(
            f"log_decay: expected shape {tuple(q.shape[:3])} (per head) or {tuple(q.shape)} (per key channel), "
            f"got {tuple(log_decay.shape)}"
        )
    if not bool((log_decay <= 0).all()):  # one pass: False for a positive entry and for NaN
        raise ValueError("log_decay: expected natural-log decays <= 0 (gates e^g in (0, 1]), got a positive or NaN")


def _causal(n: int, device: torch.device) -> Tensor:
    """``1[i >= j]``, ``(n, n)`` boolean (built by comparison: ``tril`` is slow on CPU)."""
    i = torch.arange(n, device=device)
    return i[:, None] >= i[None, :]


def _subchunk(chunk: int) -> int:
    """The largest divisor of ``chunk`` that is at most :data:`SUBCHUNK`."""
    return max(c for c in range(1, min(chunk, SUBCHUNK) + 1) if chunk % c == 0)


def _exclusive_reverse_cumsum(g: Tensor, dim: int) -> Tensor:
    """``Σ_{s>j} g_s`` along ``dim``, summed directly (not as a difference of two cumsums)."""
    rev = g.flip(dim).cumsum(dim).flip(dim)
    return torch.cat([rev.narrow(dim, 1, rev.shape[dim] - 1), torch.zeros_like(rev.narrow(dim, 0, 1))], dim)


def _intra_per_key(qc: Tensor, kc: Tensor, g: Tensor, sub: int) -> Tensor:
    """``P_tj = Σ_c q_tc k_jc e^{G_tc - G_jc}`` (``j <= t``) inside each chunk, in ``sub × sub`` sub-blocks.

    ``qc, kc, g: (B, H, n, C, Dk)`` (``g`` the per-step log gates) → ``(B, H, n, C, C)``.  Off-diagonal
    sub-blocks are one matmul of ``q ⊙ e^{G - G_ref}`` and ``k ⊙ e^{G_ref - G}`` with ``G_ref`` the gate sum
    just before the query sub-chunk, so both exponents are ``<= 0``; each exponent is summed from the gates it
    spans, so its rounding is relative to itself, not to the chunk's total.  Diagonal sub-blocks are formed
    elementwise in log space.
    """
    *lead, C, _ = qc.shape
    ns = C // sub
    qs, ks, gs = (t.unflatten(-2, (ns, sub)) for t in (qc, kc, g))  # (..., ns, sub, Dk)
    local = gs.cumsum(-2)  # G_t - G_ref for t in its sub-chunk
    after = _exclusive_reverse_cumsum(gs, -2)  # G_end(b) - G_j for j in sub-chunk b
    idx = torch.arange(ns, device=qc.device)
    between = (idx[None, None, :] > idx[None, :, None]) & (idx[None, None, :] < idx[:, None, None])  # [a, b, c]: b<c<a
    span = torch.einsum("abc,...ck->...abk", between.to(g.dtype), local[..., -1, :])  # Σ_{b<c<a} sub-chunk totals
    gap = after.flatten(-3, -2)[..., None, :, :] + span.repeat_interleave(sub, dim=-2)  # (..., ns, C, Dk): G_ref - G_j
    earlier = (idx.repeat_interleave(sub)[None, :] < idx[:, None])[:, :, None]  # (ns, C, 1): key before query sub-chunk
    k_tilde = kc[..., None, :, :] * torch.exp(gap.masked_fill(~earlier, -math.inf))
    off = (qs * torch.exp(local)) @ k_tilde.transpose(-1, -2)  # (..., ns, sub, C)
    causal = _causal(sub, qc.device)
    diag_gap = (local[..., :, None, :] - local[..., None, :, :]).masked_fill(~causal[:, :, None], -math.inf)
    diag = (qs[..., :, None, :] * ks[..., None, :, :] * torch.exp(diag_gap)).sum(-1)  # (..., ns, sub, sub)
    same = torch.eye(ns, dtype=torch.bool, device=qc.device)[:, None, :, None]  # (ns, 1, ns, 1)
    blocks = torch.where(same, diag[..., None, :], off.unflatten(-1, (ns, sub)))  # (..., ns, sub, ns, sub)
    return blocks.reshape(*lead, C, C)


class _CarryScan(torch.autograd.Function):
    """``S_{i+1} = c_i ⊙ S_i + w_i`` over chunks ``i`` (dim 2), from ``S_0``: returns every ``S_i`` entering a
    chunk and the final ``S_n``.  The backward runs the reverse scan ``dS_i = ḡ_i + c_i ⊙ dS_{i+1}`` once and
    reduces ``dc`` in one vectorized product, instead of ``n`` small autograd nodes."""

    @staticmethod
    def forward(ctx: Any, decay: Tensor, writes: Tensor, initial: Tensor) -> tuple[Tensor, Tensor]:
        before = torch.empty_like(writes)  # each S_i written in place by one fused multiply-add: no stack
        before[:, :, 0] = initial
        c, w = decay.unbind(2), writes.unbind(2)
        for i in range(1, writes.shape[2]):
            torch.addcmul(w[i - 1], c[i - 1], before[:, :, i - 1], out=before[:, :, i])
        ctx.save_for_backward(decay, before)
        return before, torch.addcmul(w[-1], c[-1], before[:, :, -1])

    @staticmethod
    def backward(ctx: Any, grad_before: Tensor, grad_final: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        decay, before = ctx.saved_tensors
        d_state, d_writes = grad_final, []
        for c, g in zip(reversed(decay.unbind(2)), reversed(grad_before.unbind(2)), strict=True):
            d_writes.append(d_state)  # dL/dw_i = dL/dS_{i+1}
            d_state = torch.addcmul(g, c, d_state)
        d_w = torch.stack(d_writes[::-1], 2)
        d_decay = d_w * before
        dims = [i for i, (a, b) in enumerate(zip(decay.shape, d_decay.shape, strict=True)) if a == 1 and b != 1]
        return (d_decay.sum(dims, keepdim=True) if dims else d_decay), d_w, d_state


def carry_scan(decay: Tensor, writes: Tensor, initial: Tensor) -> tuple[Tensor, Tensor]:
    """The states entering each chunk, ``(…, n, …)`` along dim 2, and the final state (see :class:`_CarryScan`).

    ``decay`` broadcasts against one chunk's ``writes`` (it has size 1 where they are summed over).
    """
    return _CarryScan.apply(decay, writes.contiguous(), initial.expand_as(writes[:, :, 0]).contiguous())


def _segmented(
    q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None, chunk: int, state: Tensor | None
) -> tuple[Tensor, Tensor]:
    """:func:`_chunked` over segments of whole chunks (about :data:`SEGMENT_ELEMENTS` elements of ``q`` each),
    each starting from the state the previous one left: the same recurrence, cut where chunks are cut anyway."""
    B, H, T, Dk = q.shape
    step = max(1, SEGMENT_ELEMENTS // (B * H * Dk * chunk)) * chunk
    if step >= T:
        return _chunked(q, k, v, log_decay, chunk, state)
    gs = [None] * -(-T // step) if log_decay is None else log_decay.split(step, 2)  # split: one cat in backward
    outs = []
    for qs, ks, vs, g in zip(q.split(step, 2), k.split(step, 2), v.split(step, 2), gs, strict=True):
        out, state = _chunked(qs, ks, vs, g, chunk, state)
        outs.append(out)
    return torch.cat(outs, 2), state


def _chunked(
    q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None, chunk: int, state: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Two-level chunked GLA (arXiv 2312.06635, §4.2-4.3); ``log_decay`` is ``None``, ``(B, H, T, 1)`` or
    ``(B, H, T, Dk)``.  Returns ``(o: (B, H, T, Dv), S_T: (B, H, Dk, Dv))``.

    ``O_[n] = (Q ⊙ e^{Ĝ}) S_[n-1] + P_[n] V_[n]``;  ``S_[n] = e^{Ĝ_last} ⊙ S_[n-1] + (K ⊙ e^{Ĝ_last - Ĝ})ᵀ V``.
    Tail padding has ``k = 0`` and ``g = 0``, so it neither writes to nor decays the state.
    """
    B, H, T, Dk = q.shape
    n = -(-T // chunk)
    pad = n * chunk - T
    if pad:
        q, k, v = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        if log_decay is not None:
            log_decay = torch.nn.functional.pad(log_decay, (0, 0, 0, pad))
    qc, kc, vc = (t.unflatten(2, (n, chunk)) for t in (q, k, v))  # (B, H, n, C, ·)
    causal = _causal(chunk, q.device)
    if log_decay is None:
        P = (qc @ kc.transpose(-1, -2)).masked_fill_(~causal, 0.0)
        writes = kc.transpose(-1, -2) @ vc  # (B, H, n, Dk, Dv)
        before = writes.cumsum(2) - writes
        if state is not None:
            before = before + state[:, :, None]
        out = P @ vc + qc @ before
        final = before[:, :, -1] + writes[:, :, -1]
        return out.flatten(2, 3)[:, :, :T], final
    g = log_decay.unflatten(2, (n, chunk))  # (B, H, n, C, 1 or Dk)
    G = g.cumsum(3)  # chunk-local inclusive cumsum Ĝ
    last = G[..., -1:, :]  # (B, H, n, 1, ·)
    carry = torch.exp(last).transpose(-1, -2)  # (B, H, n, Dk or 1, 1): e^{Ĝ_last}
    growth = torch.exp(G)
    q_decayed = qc * growth  # q_t ⊙ e^{Ĝ_t}
    if g.shape[-1] != 1 and bool((last >= -ONE_MATMUL_LIMIT[q.dtype]).all()):  # mild per-key gates: one matmul
        k_rebased = kc / growth  # k_j ⊙ e^{-Ĝ_j}, in range (one division instead of a second exp)
        P = (q_decayed @ k_rebased.transpose(-1, -2)).masked_fill_(~causal, 0.0)
        writes = carry * (k_rebased.transpose(-1, -2) @ vc)  # e^{Ĝ_last} ⊙ Σ_j (k_j ⊙ e^{-Ĝ_j}) v_jᵀ: rows scaled after
    else:
        if g.shape[-1] == 1:  # one decay per head: the whole chunk in one masked matmul, gaps summed in float64
            G64 = g.to(torch.float64).cumsum(3)
            gap = (G64 - G64.transpose(-1, -2)).masked_fill(~causal, -math.inf)
            P = (qc @ kc.transpose(-1, -2)) * torch.exp(gap).to(q.dtype)
        else:
            P = _intra_per_key(qc, kc, g, _subchunk(chunk))
        writes = (kc * torch.exp(_exclusive_reverse_cumsum(g, 3))).transpose(-1, -2) @ vc  # Ĝ_last - Ĝ_j exponents
    zero = torch.zeros(B, H, Dk, v.shape[-1], dtype=q.dtype, device=q.device)
    before, S = carry_scan(carry, writes, zero if state is None else state)  # (B, H, n, Dk, Dv): entering each chunk
    out = P @ vc + q_decayed @ before
    return out.flatten(2, 3)[:, :, :T], S


class _TritonGLA(torch.autograd.Function):
    """Forward and backward: the Triton kernels of ``fast/triton/dsf.py``."""

    @staticmethod
    def forward(
        ctx: Any, q: Tensor, k: Tensor, v: Tensor, g: Tensor | None, state: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        from attnverify.fast.triton.dsf import triton_gla

        gate = g[..., 0] if g is not None and g.shape[-1] == 1 else g  # one gate per head: (B, H, T)
        out, final = triton_gla(q, k, v, gate, state)
        ctx.has_g, ctx.has_state = g is not None, state is not None
        ctx.save_for_backward(q, k, v, final, *(t for t in (gate, state) if t is not None))
        return out, final

    @staticmethod
    def backward(ctx: Any, d_out: Tensor, d_final: Tensor) -> tuple[Tensor | None, ...]:
        from attnverify.fast.triton.dsf import triton_gla_backward

        q, k, v, final, *rest = ctx.saved_tensors
        gate = rest.pop(0) if ctx.has_g else None
        state = rest.pop(0) if ctx.has_state else None
        dq, dk, dv, d_gate, d_state = triton_gla_backward(
            q, k, v, gate, state, final, d_out.contiguous(), d_final.contiguous()
        )
        if d_gate is not None and d_gate.dim() == 3:
            d_gate = d_gate[..., None]
        return dq, dk, dv, d_gate, d_state if ctx.has_state else None


@overload
def gated_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_decay: Tensor | None = ...,
    *,
    normalize: bool = ...,
    chunk_size: int = ...,
    initial_state: Tensor | None = ...,
    output_final_state: Literal[False] = ...,
    backend: str | None = ...,
) -> Tensor: ...


@overload
def gated_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_decay: Tensor | None = ...,
    *,
    normalize: bool = ...,
    chunk_size: int = ...,
    initial_state: Tensor | None = ...,
    output_final_state: Literal[True],
    backend: str | None = ...,
) -> tuple[Tensor, Tensor]: ...


def gated_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_decay: Tensor | None = None,
    *,
    normalize: bool = False,
    chunk_size: int = CHUNK,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    backend: str | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Gated linear attention ``S_t = diag(e^{g_t}) S_{t-1} + k_t v_tᵀ``, ``o_t = S_tᵀ q_t`` (arXiv 2312.06635, eq. 3).

    Each step decays, then adds; token ``t`` sees itself.  No feature map or scale is applied (pass
    ``φ(q)``, ``ψ(k)``).  Two-level chunked: chunks of ``chunk_size`` carry the state, sub-chunks of up
    to 16 tokens split each chunk's per-key-channel weights (book/dsf.md).

    Args:
        q, k: ``(B, H, T, Dk)``; v: ``(B, H, T, Dv)``; one dtype and device.
        log_decay: ``g``, natural-log gates ``<= 0``: ``(B, H, T)`` (one per head and step) or
            ``(B, H, T, Dk)`` (per key channel); ``None``: no decay (causal linear attention).
        normalize: divide ``o_t`` by ``q_tᵀ z_t`` with ``z_t = e^{g_t} z_{t-1} + k_t``; the caller keeps it
            away from 0 (e.g. positive features).
        chunk_size: tokens per chunk (``>= 1``); any ``T`` works, the tail chunk is padded inertly.
        initial_state: ``(B, H, Dk, Dv)`` (``(B, H, Dk, Dv + 1)`` with ``z_0`` as the last column when
            ``normalize``): the state before the first token.
        output_final_state: also return the state after the last token (same layout as ``initial_state``).
            ``T = 0`` is allowed: the output is ``(B, H, 0, Dv)`` and the final state is ``initial_state``
            (zeros without one).
        backend: ``None`` (Triton on CUDA, torch elsewhere), ``"torch"`` or ``"triton"`` (CUDA, or the CPU
            under ``TRITON_INTERPRET=1``); both passes of the Triton path are kernels.

    Returns ``o: (B, H, T, Dv)`` in the input dtype (float16/bfloat16 accumulate in float32), or
    ``(o, S_T)`` with ``output_final_state``.
    """
    validate_qkv(q, k, v)
    if log_decay is not None:
        validate_decay(q, log_decay)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected an int >= 1, got {chunk_size!r}")
    dv = v.shape[-1]
    expected = (*q.shape[:2], q.shape[-1], dv + int(normalize))
    if initial_state is not None:
        require_tensor("initial_state", initial_state)
        require_same(("q", "initial_state"), q, initial_state)
        if initial_state.shape != expected:
            raise ValueError(f"initial_state: expected shape {expected}, got {tuple(initial_state.shape)}")
    dtype, acc = q.dtype, accumulation_dtype(q.dtype)
    q, k, v = q.to(acc), k.to(acc), v.to(acc)
    if normalize:
        v = torch.cat([v, torch.ones_like(v[..., :1])], -1)
    g = None if log_decay is None else (log_decay[..., None] if log_decay.dim() == 3 else log_decay).to(acc)
    state = None if initial_state is None else initial_state.to(acc)
    if q.shape[2] == 0:  # no tokens: the chunk formula P V + Q S_0 on an empty chunk; the state passes through
        out = (q @ k.transpose(-1, -2)) @ v + (0.0 if state is None else q @ state)
        final = q.new_zeros(expected) if state is None else state.clone()
    elif select_backend(backend, q.device) == "triton":
        out, final = _TritonGLA.apply(q, k, v, g, state)
    else:
        out, final = _segmented(q, k, v, g, chunk_size, state)
    if normalize:
        out = out[..., :dv] / out[..., dv:]
    out = out.to(dtype)
    return (out, final.to(dtype)) if output_final_state else out


def _validate_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None) -> None:
    require_tensor("u", u)
    require_float("u", u)
    if u.dim() != 3:
        raise ValueError(f"u: expected shape (B, D, L), got {tuple(u.shape)}")
    bt, d, L = u.shape
    named = [("delta", delta), ("A", A), ("B", B), ("C", C)] + ([("D", D)] if D is not None else [])
    for name, t in named:
        require_tensor(name, t)
        require_same(("u", name), u, t)
    if delta.shape != u.shape:
        raise ValueError(f"delta: expected the shape of u {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A: expected shape ({d}, N), got {tuple(A.shape)}")
    for name, t in (("B", B), ("C", C)):
        if tuple(t.shape) != (bt, A.shape[1], L):
            raise ValueError(f"{name}: expected shape {(bt, A.shape[1], L)}, got {tuple(t.shape)}")
    if D is not None and tuple(D.shape) != (d,):
        raise ValueError(f"D: expected shape ({d},), got {tuple(D.shape)}")
    if not bool((delta >= 0).all()):
        raise ValueError("delta: expected step sizes >= 0 (already passed through softplus), got a negative or NaN")
    if not bool((A <= 0).all()):
        raise ValueError("A: expected entries <= 0 (a decaying state), got a positive or NaN")


def _scan_chunked(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, state: Tensor | None, chunk: int
) -> tuple[Tensor, Tensor]:
    """The chunked selective scan without the skip term, in the inputs' dtype → ``(y: (Bt, D, L), s_L: (Bt, D, N))``."""
    bt, d, L = u.shape
    N = A.shape[1]
    n = max(1, -(-L // chunk))
    pad = n * chunk - L
    # Padding has Δ = 0 and u = 0: it neither decays nor writes the state.
    x = torch.nn.functional.pad(delta * u, (0, pad)).unflatten(-1, (n, chunk))  # (Bt, D, n, C)
    dt = torch.nn.functional.pad(delta, (0, pad)).unflatten(-1, (n, chunk))
    Bc, Cc = (torch.nn.functional.pad(t, (0, pad)).unflatten(-1, (n, chunk)) for t in (B, C))  # (Bt, N, n, C)
    Aa = A[None, :, None, :]  # (1, D, 1, N)

    def step(s: Tensor, tau: int) -> Tensor:
        """One step of every chunk at in-chunk position ``tau``: ``s: (Bt, D, n, N)``."""
        write = x[..., tau, None] * Bc[..., tau].transpose(1, 2)[:, None]  # (Bt, D, n, N)
        return torch.exp(dt[..., tau, None] * Aa) * s + write

    s = torch.zeros(bt, d, n, N, dtype=u.dtype, device=u.device)
    for tau in range(chunk):  # pass 1: each chunk from a zero state
        s = step(s, tau)
    total = torch.exp(dt.sum(-1)[..., None] * Aa)  # (Bt, D, n, N): e^{A ΣΔ} over each chunk
    zero = torch.zeros(bt, d, N, dtype=u.dtype, device=u.device)
    s, carried = carry_scan(total, s, zero if state is None else state)  # the state entering each chunk
    ys = []
    for tau in range(chunk):  # pass 2: every chunk from its carried state, reading outputs
        s = step(s, tau)
        ys.append((s * Cc[..., tau].transpose(1, 2)[:, None]).sum(-1))  # (Bt, D, n)
    return torch.stack(ys, -1).flatten(-2)[..., :L], carried


SCAN_CHUNK = 64
"""Tokens per chunk of the rebased selective scan (:func:`_scan_rebased`)."""
SCAN_LIMIT = {torch.float64: 500.0, torch.float32: 60.0}
"""Largest ``|A| ΣΔ`` over a chunk for which :func:`_scan_rebased` forms ``e^{-A Σ_j}``: finite and normal with a
``10^{12}`` margin for the writes it multiplies (float32: ``e^{60} ≈ 10^{26}``), and its rounding ``u |A Σ|``
small (float32: ``60 · 6e-8 ≈ 4e-6``, against the chunked kernels' tolerance ``10^{-4}``)."""


def _scan_rebased(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, state: Tensor | None, chunk: int, fits: list[bool]
) -> tuple[Tensor, Tensor]:
    """The selective scan without the skip term, chunk after chunk, each chunk in a few whole-chunk operations.

    Within a chunk, with ``Σ_t`` the in-chunk inclusive sum of ``Δ`` (per channel) and ``s_0`` the carried state,
    ``s_t = e^{A Σ_t} ⊙ (s_0 + Σ_{j<=t} e^{-A Σ_j} ⊙ Δ_j u_j B_j)`` (rebased at the chunk's start, as the GLA
    chunks are): one cumulative sum replaces the chunk's steps, and only ``y_t = C_tᵀ s_t`` and the last state
    leave the chunk.  Tensors are ``(Bt, D, chunk, N)``: no ``(Bt, D, L, N)`` tensor is formed, and one pass over
    the sequence does the work of the two-pass form.  A chunk whose ``|A| ΣΔ`` exceeds :data:`SCAN_LIMIT`
    (``fits[i]`` false) runs its steps one by one instead, every exponent ``<= 0``.
    """
    bt, d, L = u.shape
    x = delta * u
    s = torch.zeros(bt, d, A.shape[1], dtype=u.dtype, device=u.device) if state is None else state
    Bt, Ct = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()  # (Bt, L, N)
    ys = []
    for a, rebased in zip(range(0, L, chunk), fits, strict=True):
        b = min(a + chunk, L)
        if not rebased:
            for t in range(a, b):
                s = torch.exp(delta[..., t, None] * A) * s + x[..., t, None] * Bt[:, None, t]
                ys.append(torch.linalg.vecdot(s, Ct[:, None, t])[..., None])
            continue
        gap = delta[..., a:b].cumsum(-1)[..., None] * A[:, None, :]  # (Bt, D, c, N): A Σ_t <= 0
        writes = x[..., a:b, None] * Bt[:, None, a:b] * torch.exp(-gap)
        writes[..., 0, :] += s  # the carried state joins the first write
        summed = writes.cumsum(-2)
        decay = torch.exp(gap)
        ys.append(torch.linalg.vecdot(decay * Ct[:, None, a:b], summed))
        s = decay[..., -1, :] * summed[..., -1, :]
    return torch.cat(ys, -1), s


def _scan_chunks_fit(delta: Tensor, A: Tensor, chunk: int) -> list[bool]:
    """Per chunk, whether every channel's ``|A| ΣΔ`` stays within :data:`SCAN_LIMIT` (one reduction, one sync)."""
    L = delta.shape[-1]
    n = -(-L // chunk)
    sums = torch.nn.functional.pad(delta, (0, n * chunk - L)).unflatten(-1, (n, chunk)).sum(-1)  # (Bt, D, n)
    return ((sums * (-A).amax(-1)[:, None]).flatten(0, 1).amax(0) <= SCAN_LIMIT[delta.dtype]).tolist()


class _TritonScan(torch.autograd.Function):
    """Forward and backward: the Triton scan kernels of ``fast/triton/dsf.py``."""

    @staticmethod
    def forward(
        ctx: Any, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, state: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        from attnverify.fast.triton.dsf import triton_selective_scan

        ctx.has_state = state is not None
        ctx.save_for_backward(u, delta, A, B, C, *(() if state is None else (state,)))
        return triton_selective_scan(u, delta, A, B, C, state)

    @staticmethod
    def backward(ctx: Any, d_y: Tensor, d_final: Tensor) -> tuple[Tensor | None, ...]:
        from attnverify.fast.triton.dsf import triton_selective_scan_backward

        u, delta, A, B, C, *rest = ctx.saved_tensors
        *grads, d_state = triton_selective_scan_backward(u, delta, A, B, C, rest[0] if rest else None, d_y, d_final)
        return (*grads, d_state if ctx.has_state else None)


@overload
def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = ...,
    *,
    chunk_size: int | None = ...,
    initial_state: Tensor | None = ...,
    output_final_state: Literal[False] = ...,
    backend: str | None = ...,
) -> Tensor: ...


@overload
def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = ...,
    *,
    chunk_size: int | None = ...,
    initial_state: Tensor | None = ...,
    output_final_state: Literal[True],
    backend: str | None = ...,
) -> tuple[Tensor, Tensor]: ...


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    *,
    chunk_size: int | None = None,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    backend: str | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Mamba's selective scan (arXiv 2312.00752, Alg. 2; Euler input, ``delta`` already positive), in chunks.

    Per channel ``c``: ``s_t = e^{Δ_t A_c} ⊙ s_{t-1} + Δ_t u_t B_t``, ``y_t = C_tᵀ s_t + D_c u_t``: S6 as a DSF
    (book/dsf.md).  By default, chunk after chunk of 64 tokens in rebased form (:func:`_scan_rebased`: one
    cumulative sum per chunk instead of its steps), a chunk with ``|A| ΣΔ > 60`` (float32; 500 in float64)
    step by step.  When more than a quarter of the chunks are that strong, or with an explicit
    ``chunk_size``, the sequence is cut into ``n`` chunks of ``chunk_size`` (default ``⌈√L⌉``) that run their
    steps side by side: one pass finds each chunk's own final state, a pass over the chunks carries
    ``S ← e^{A ΣΔ} ⊙ S + local``, and a second side-by-side pass starts every chunk from its carried state and
    reads the outputs (``2 chunk_size + n`` sequential steps on ``(Bt, D, n, N)`` tensors; exponents all
    ``<= 0``).  Neither forms a ``(Bt, D, L, N)`` tensor.

    Args:
        u, delta: ``(Bt, D, L)``; A: ``(D, N)``, entries ``<= 0``; B, C: ``(Bt, N, L)``; D: ``(D,)`` or ``None``.
        chunk_size: tokens per chunk of the two-pass form (``>= 1``); ``None``: the rebased form where it
            applies, else the two-pass form with ``⌈√L⌉``.
        initial_state: ``(Bt, D, N)``, the state before the first token.
        output_final_state: also return the state after the last token (``L = 0``: ``initial_state``, or zeros).
        backend: ``None`` (Triton on CUDA, torch elsewhere), ``"torch"`` or ``"triton"`` (one token at a time,
            the state in registers; its backward is a kernel too: a forward sweep and a reverse one).

    Returns ``y: (Bt, D, L)`` in the input dtype (float16/bfloat16 accumulate in float32), or ``(y, s_L)``.
    """
    _validate_scan(u, delta, A, B, C, D)
    bt, d, L = u.shape
    N = A.shape[1]
    if initial_state is not None:
        require_tensor("initial_state", initial_state)
        require_same(("u", "initial_state"), u, initial_state)
        if tuple(initial_state.shape) != (bt, d, N):
            raise ValueError(f"initial_state: expected shape {(bt, d, N)}, got {tuple(initial_state.shape)}")
    chunk = max(1, math.isqrt(max(L - 1, 0)) + 1) if chunk_size is None else chunk_size
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk_size: expected None or an int >= 1, got {chunk_size!r}")
    dtype, acc = u.dtype, accumulation_dtype(u.dtype)
    args = [t.to(acc) for t in (u, delta, A, B, C)]
    state = None if initial_state is None else initial_state.to(acc)
    if L == 0:  # no tokens: an empty output (the Euler input Δ u of no steps); the state passes through
        y, carried = args[1] * args[0], (args[0].new_zeros(bt, d, N) if state is None else state.clone())
    elif select_backend(backend, u.device) == "triton":
        y, carried = _TritonScan.apply(*args, state)
    elif chunk_size is None and sum(fits := _scan_chunks_fit(args[1], args[2], SCAN_CHUNK)) >= 0.75 * len(fits):
        y, carried = _scan_rebased(*args, state, SCAN_CHUNK, fits)
    else:
        y, carried = _scan_chunked(*args, state, chunk)
    if D is not None:
        y = y + D.to(acc)[:, None] * args[0]
    y = y.to(dtype)
    return (y, carried.to(dtype)) if output_final_state else y
