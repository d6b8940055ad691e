"""Triton kernels for gated linear attention (GLA, arXiv 2312.06635, §4) and the selective scan (book/dsf.md).

One program per (batch·head, block of ``BLOCK_DV`` value columns).  The state ``S`` (``Dk × BLOCK_DV``)
lives in registers, accumulated in float32 (float64 for float64 inputs), and the program walks its
sequence in chunks of ``BLOCK_T`` tokens.  Per chunk, with ``Ĝ`` the chunk-local inclusive cumsum of the
log-gates:

* intra-chunk weights ``P_tj = Σ_c q_tc k_jc e^{Ĝ_tc - Ĝ_jc}`` (``j <= t``) formed elementwise in log space
  (a ``BLOCK_T × BLOCK_T × Dk`` tile; masked pairs never reach ``exp``, so no exponent is positive);
* ``O = P V + (Q ⊙ e^{Ĝ}) S``;  ``S ← e^{Ĝ_last} ⊙ S + (K ⊙ e^{Ĝ_last - Ĝ})ᵀ V``.

Tail tokens load as ``q = k = v = 0``, ``g = 0``: they neither write to nor decay the state.  Matmuls use
``input_precision="ieee"`` (no TF32).  Verified against ``attnverify.reference.dsf.gla_recurrent``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _gla_kernel(  # type: ignore[no-untyped-def]
    Q_ptr,  # (R, T, DK)
    K_ptr,  # (R, T, DK)
    V_ptr,  # (R, T, DV)
    G_ptr,  # (R, T, DK) per key channel, or (R, T) per head (PER_KEY false)
    S0_ptr,  # (R, DK, DV) initial state; read only when HAS_INIT
    O_ptr,  # (R, T, DV) out
    SF_ptr,  # (R, DK, DV) out: the final state
    T,
    DK,
    DV,
    BLOCK_T: tl.constexpr,
    BLOCK_DK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    PER_KEY: tl.constexpr,
    HAS_INIT: tl.constexpr,
    IS_F64: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    vblock = tl.program_id(1)
    acc = tl.float64 if IS_F64 else tl.float32
    kc = tl.arange(0, BLOCK_DK)
    vc = vblock * BLOCK_DV + tl.arange(0, BLOCK_DV)
    k_ok, v_ok = kc < DK, vc < DV
    tt = tl.arange(0, BLOCK_T)
    causal = tt[:, None] >= tt[None, :]
    state_offs = row * DK * DV + kc[:, None] * DV + vc[None, :]
    state_ok = k_ok[:, None] & v_ok[None, :]
    if HAS_INIT:
        S = tl.load(S0_ptr + state_offs, mask=state_ok, other=0.0).to(acc)
    else:
        S = tl.zeros((BLOCK_DK, BLOCK_DV), acc)
    for start in range(0, T, BLOCK_T):
        pos = start + tt
        ok = pos < T
        qk_offs = row * T * DK + pos[:, None] * DK + kc[None, :]
        qk_ok = ok[:, None] & k_ok[None, :]
        q = tl.load(Q_ptr + qk_offs, mask=qk_ok, other=0.0).to(acc)
        k = tl.load(K_ptr + qk_offs, mask=qk_ok, other=0.0).to(acc)
        v_offs = row * T * DV + pos[:, None] * DV + vc[None, :]
        v = tl.load(V_ptr + v_offs, mask=ok[:, None] & v_ok[None, :], other=0.0).to(acc)
        if PER_KEY:
            g = tl.load(G_ptr + qk_offs, mask=qk_ok, other=0.0).to(acc)
        else:
            g = tl.load(G_ptr + row * T + pos, mask=ok, other=0.0).to(acc)[:, None] + tl.zeros((BLOCK_T, BLOCK_DK), acc)
        G = tl.cumsum(g, axis=0)  # (BLOCK_T, BLOCK_DK): chunk-local inclusive cumsum
        last = tl.sum(g, axis=0)  # Ĝ_last
        gap = tl.where(causal[:, :, None], G[:, None, :] - G[None, :, :], float("-inf"))
        P = tl.sum(q[:, None, :] * k[None, :, :] * tl.exp(gap), axis=2)  # (BLOCK_T, BLOCK_T)
        out = tl.dot(P, v, input_precision="ieee") + tl.dot(q * tl.exp(G), S, input_precision="ieee")
        tl.store(O_ptr + v_offs, out.to(O_ptr.dtype.element_ty), mask=ok[:, None] & v_ok[None, :])
        k_w = k * tl.exp(last[None, :] - G)
        S = tl.exp(last)[:, None] * S + tl.dot(tl.trans(k_w), v, input_precision="ieee")
    tl.store(SF_ptr + state_offs, S, mask=state_ok)


def _block(n: int, cap: int | None = None) -> int:
    """A power of two ``>= max(n, 16)`` (``tl.dot`` needs 16), capped at ``cap``."""
    b = max(16, triton.next_power_of_2(max(n, 1)))
    return min(b, cap) if cap else b


def triton_gla(
    q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None, initial_state: Tensor | None
) -> tuple[Tensor, Tensor]:
    """``q, k: (B, H, T, Dk)``, ``v: (B, H, T, Dv)`` in the accumulation dtype, ``log_decay`` ``(B, H, T)`` or
    ``(B, H, T, Dk)`` or ``None``, ``initial_state: (B, H, Dk, Dv)`` → ``(o, S_T)`` in the accumulation dtype."""
    B, H, T, DK = q.shape
    DV = v.shape[-1]
    R = B * H
    dtype = q.dtype
    qf, kf = (t.reshape(R, T, DK).contiguous() for t in (q, k))
    vf = v.reshape(R, T, DV).contiguous()
    if log_decay is None:
        g, per_key = torch.zeros(R, T, dtype=dtype, device=q.device), False
    else:
        per_key = log_decay.dim() == 4
        g = log_decay.reshape(R, T, DK) if per_key else log_decay.reshape(R, T)
        g = g.to(dtype).contiguous()
    out = torch.empty(R, T, DV, dtype=dtype, device=q.device)
    final = torch.empty(R, DK, DV, dtype=dtype, device=q.device)
    s0 = initial_state.reshape(R, DK, DV).to(dtype).contiguous() if initial_state is not None else final
    block_dk = _block(DK)
    block_dv = _block(DV, 64)
    block_t = 16 if block_dk > 64 else 32
    _gla_kernel[(R, triton.cdiv(DV, block_dv))](
        qf, kf, vf, g, s0, out, final, T, DK, DV,
        BLOCK_T=block_t, BLOCK_DK=block_dk, BLOCK_DV=block_dv, PER_KEY=per_key,
        HAS_INIT=initial_state is not None, IS_F64=dtype == torch.float64,
    )  # fmt: skip
    return out.reshape(B, H, T, DV), final.reshape(B, H, DK, DV)


@triton.jit
def _scan_kernel(  # type: ignore[no-untyped-def]
    U_ptr,  # (Bt, D, L)
    DT_ptr,  # (Bt, D, L)
    A_ptr,  # (D, N)
    B_ptr,  # (Bt, N, L)
    C_ptr,  # (Bt, N, L)
    S0_ptr,  # (Bt, D, N) initial state; read only when HAS_INIT
    Y_ptr,  # (Bt, D, L) out, before the skip term
    SF_ptr,  # (Bt, D, N) out: the final state
    D,
    N,
    L,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_INIT: tl.constexpr,
    IS_F64: tl.constexpr,
):
    """Mamba's selective scan (arXiv 2312.00752, Alg. 2), one token at a time, a ``BLOCK_D × BLOCK_N`` state in
    registers: ``s ← e^{Δ_t A} ⊙ s + Δ_t u_t B_t``, ``y_t = Σ_n s C_t``."""
    b = tl.program_id(0).to(tl.int64)
    dc = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    nc = tl.arange(0, BLOCK_N)
    d_ok, n_ok = dc < D, nc < N
    acc = tl.float64 if IS_F64 else tl.float32
    A = tl.load(A_ptr + dc[:, None] * N + nc[None, :], mask=d_ok[:, None] & n_ok[None, :], other=0.0).to(acc)
    state_offs = b * D * N + dc[:, None] * N + nc[None, :]
    state_ok = d_ok[:, None] & n_ok[None, :]
    if HAS_INIT:
        s = tl.load(S0_ptr + state_offs, mask=state_ok, other=0.0).to(acc)
    else:
        s = tl.zeros((BLOCK_D, BLOCK_N), acc)
    for t in range(0, L):
        u = tl.load(U_ptr + b * D * L + dc * L + t, mask=d_ok, other=0.0).to(acc)
        dt = tl.load(DT_ptr + b * D * L + dc * L + t, mask=d_ok, other=0.0).to(acc)
        Bt = tl.load(B_ptr + b * N * L + nc * L + t, mask=n_ok, other=0.0).to(acc)
        Ct = tl.load(C_ptr + b * N * L + nc * L + t, mask=n_ok, other=0.0).to(acc)
        s = tl.exp(dt[:, None] * A) * s + (dt * u)[:, None] * Bt[None, :]
        y = tl.sum(s * Ct[None, :], axis=1)
        tl.store(Y_ptr + b * D * L + dc * L + t, y.to(Y_ptr.dtype.element_ty), mask=d_ok)
    tl.store(SF_ptr + state_offs, s, mask=state_ok)


def _scan_blocks(N: int) -> tuple[int, int]:
    """``(BLOCK_N, BLOCK_D)`` of the scan kernels: every state channel in one block, at most 4096 state entries
    (``BLOCK_D × BLOCK_N``) in registers."""
    block_n = triton.next_power_of_2(max(N, 1))
    return block_n, max(1, min(64, 4096 // block_n))


def triton_selective_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, initial_state: Tensor | None
) -> tuple[Tensor, Tensor]:
    """``u, delta: (Bt, D, L)``, ``A: (D, N)``, ``B, C: (Bt, N, L)`` in the accumulation dtype → ``(y without the skip
    term, s_L)``."""
    bt, d, L = u.shape
    N = A.shape[1]
    dtype = u.dtype
    y = torch.empty(bt, d, L, dtype=dtype, device=u.device)
    final = torch.empty(bt, d, N, dtype=dtype, device=u.device)
    s0 = initial_state.to(dtype).contiguous() if initial_state is not None else final
    block_n, block_d = _scan_blocks(N)
    _scan_kernel[(bt, triton.cdiv(d, block_d))](
        *(t.contiguous() for t in (u, delta, A, B, C)), s0, y, final, d, N, L,
        BLOCK_D=block_d, BLOCK_N=block_n, HAS_INIT=initial_state is not None, IS_F64=dtype == torch.float64,
    )  # fmt: skip
    return y, final


@triton.jit
def _scan_bwd_kernel(  # type: ignore[no-untyped-def]
    U_ptr,  # (Bt, D, L)
    DT_ptr,  # (Bt, D, L)
    A_ptr,  # (D, N)
    B_ptr,  # (Bt, N, L)
    C_ptr,  # (Bt, N, L)
    S0_ptr,  # (Bt, D, N) initial state; read only when HAS_INIT
    DY_ptr,  # (Bt, D, L) gradient of the outputs (before the skip term)
    DSF_ptr,  # (Bt, D, N) gradient of the final state
    DU_ptr,  # (Bt, D, L) out
    DDT_ptr,  # (Bt, D, L) out: Δ's gradient through the writes Δ u B only
    QSIDE_ptr,  # (Bt, D, L) out: Σ_n A (dy C ⊙ s)_t, the read side of ∂L/∂Σ_t
    KSIDE_ptr,  # (Bt, D, L) out: Σ_n A (λ ⊙ w)_t, the write side of ∂L/∂Σ_t
    LAST_ptr,  # (Bt, D) out: Σ_n A (dS_L ⊙ s_L), the final state's share of ∂L/∂Σ_L
    DA_ptr,  # (Bt, D, N) out: A's gradient from this batch row
    DBP_ptr,  # (n_blocks, Bt, N, L) out: B's gradient, summed over this block's channels
    DCP_ptr,  # (n_blocks, Bt, N, L) out: C's gradient, summed over this block's channels
    DS0_ptr,  # (Bt, D, N) out: the initial state's gradient
    BT,
    D,
    N,
    L,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_INIT: tl.constexpr,
    IS_F64: tl.constexpr,
):
    """Backward of :func:`_scan_kernel`, the ``BLOCK_D × BLOCK_N`` state in registers.

    With ``Σ_t = Σ_{s<=t} Δ_s`` and ``Γ_t = A Σ_t``, ``s_t = e^{Γ_t} ⊙ (s_0 + Σ_{j<=t} e^{-Γ_j} ⊙ w_j)``
    (``w_j = Δ_j u_j B_j``), so ``∂L/∂Γ_t = (dy_t C_t) ⊙ s_t - λ_t ⊙ w_t`` (+ ``dS_L ⊙ s_L`` at the last token),
    with ``λ_t = dy_t C_t + e^{Δ_{t+1} A} ⊙ λ_{t+1}`` the state's adjoint (derived, as for GLA).  A forward sweep
    recomputes ``s_t`` and writes the read side (``dC`` and ``Σ_n A (dy C ⊙ s)``, ``Σ_t Σ_t (dy C ⊙ s)`` into
    ``dA``); a reverse sweep carries ``λ_t`` and writes the write side (``du``, ``Δ``'s direct share, ``dB``,
    ``Σ_n A λ ⊙ w``, and ``dA``'s share as ``Σ_s Δ_s Σ_{t>=s} λ_t ⊙ w_t``).  ``∂L/∂Δ_s = Σ_{t>=s} ∂L/∂Σ_t`` +
    the direct share is summed by :func:`triton_selective_scan_backward`."""
    b = tl.program_id(0).to(tl.int64)
    block = tl.program_id(1).to(tl.int64)
    dc = block * BLOCK_D + tl.arange(0, BLOCK_D)
    nc = tl.arange(0, BLOCK_N)
    d_ok, n_ok = dc < D, nc < N
    acc = tl.float64 if IS_F64 else tl.float32
    state_offs = b * D * N + dc[:, None] * N + nc[None, :]
    state_ok = d_ok[:, None] & n_ok[None, :]
    A = tl.load(A_ptr + dc[:, None] * N + nc[None, :], mask=state_ok, other=0.0).to(acc)
    seq = b * D * L + dc * L  # (BLOCK_D,) offsets of this block's channels
    cols = b * N * L + nc * L  # (BLOCK_N,) offsets of B's and C's rows
    part = (block * BT + b) * N * L + nc * L  # (BLOCK_N,) offsets into this block's partial dB, dC
    if HAS_INIT:
        s = tl.load(S0_ptr + state_offs, mask=state_ok, other=0.0).to(acc)
    else:
        s = tl.zeros((BLOCK_D, BLOCK_N), acc)
    sig = tl.zeros((BLOCK_D,), acc)
    dA = tl.zeros((BLOCK_D, BLOCK_N), acc)
    for t in range(0, L):
        u = tl.load(U_ptr + seq + t, mask=d_ok, other=0.0).to(acc)
        dt = tl.load(DT_ptr + seq + t, mask=d_ok, other=0.0).to(acc)
        dy = tl.load(DY_ptr + seq + t, mask=d_ok, other=0.0).to(acc)
        Bt = tl.load(B_ptr + cols + t, mask=n_ok, other=0.0).to(acc)
        Ct = tl.load(C_ptr + cols + t, mask=n_ok, other=0.0).to(acc)
        s = tl.exp(dt[:, None] * A) * s + (dt * u)[:, None] * Bt[None, :]
        sig += dt
        read = dy[:, None] * s  # (BLOCK_D, BLOCK_N): dy_t s_t
        tl.store(DCP_ptr + part + t, tl.sum(read, axis=0), mask=n_ok)
        q_side = read * Ct[None, :]
        tl.store(QSIDE_ptr + seq + t, tl.sum(A * q_side, axis=1), mask=d_ok)
        dA += sig[:, None] * q_side
    lam = tl.load(DSF_ptr + state_offs, mask=state_ok, other=0.0).to(acc)
    last = lam * s  # dS_L ⊙ s_L
    tl.store(LAST_ptr + b * D + dc, tl.sum(A * last, axis=1), mask=d_ok)
    dA += sig[:, None] * last
    suffix = tl.zeros((BLOCK_D, BLOCK_N), acc)  # Σ_{t>=s} λ_t ⊙ w_t
    decay_next = tl.zeros((BLOCK_D, BLOCK_N), acc) + 1.0  # e^{Δ_{t+1} A}; nothing follows the last token
    for i in range(0, L):
        t = L - 1 - i
        u = tl.load(U_ptr + seq + t, mask=d_ok, other=0.0).to(acc)
        dt = tl.load(DT_ptr + seq + t, mask=d_ok, other=0.0).to(acc)
        dy = tl.load(DY_ptr + seq + t, mask=d_ok, other=0.0).to(acc)
        Bt = tl.load(B_ptr + cols + t, mask=n_ok, other=0.0).to(acc)
        Ct = tl.load(C_ptr + cols + t, mask=n_ok, other=0.0).to(acc)
        lam = decay_next * lam + dy[:, None] * Ct[None, :]
        x = dt * u
        lam_b = tl.sum(lam * Bt[None, :], axis=1)  # Σ_n λ_t B_t
        tl.store(DU_ptr + seq + t, dt * lam_b, mask=d_ok)
        tl.store(DDT_ptr + seq + t, u * lam_b, mask=d_ok)
        tl.store(DBP_ptr + part + t, tl.sum(lam * x[:, None], axis=0), mask=n_ok)
        k_side = lam * (x[:, None] * Bt[None, :])
        tl.store(KSIDE_ptr + seq + t, tl.sum(A * k_side, axis=1), mask=d_ok)
        suffix += k_side
        dA -= dt[:, None] * suffix
        decay_next = tl.exp(dt[:, None] * A)
    tl.store(DA_ptr + state_offs, dA, mask=state_ok)
    tl.store(DS0_ptr + state_offs, decay_next * lam, mask=state_ok)


def triton_selective_scan_backward(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    initial_state: Tensor | None,
    d_y: Tensor,
    d_final: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients ``(du, dΔ, dA, dB, dC, d initial_state)`` of :func:`triton_selective_scan` (accumulation dtype).

    The kernel leaves ``∂L/∂Σ_t`` in parts; ``∂L/∂Δ_s = Σ_{t>=s} ∂L/∂Σ_t`` plus the writes' direct share, and
    the partial ``dA``, ``dB``, ``dC`` are summed over batch rows and channel blocks here."""
    bt, d, L = u.shape
    N = A.shape[1]
    dtype = u.dtype
    block_n, block_d = _scan_blocks(N)
    blocks = triton.cdiv(d, block_d)
    new = {"dtype": dtype, "device": u.device}
    du, ddt, q_side, k_side = (torch.empty(bt, d, L, **new) for _ in range(4))
    last = torch.empty(bt, d, **new)
    dA = torch.empty(bt, d, N, **new)
    dB, dC = (torch.empty(blocks, bt, N, L, **new) for _ in range(2))
    ds0 = torch.empty(bt, d, N, **new)
    s0 = initial_state.to(dtype).contiguous() if initial_state is not None else ds0
    _scan_bwd_kernel[(bt, blocks)](
        *(t.contiguous() for t in (u, delta, A, B, C)), s0, d_y.to(dtype).contiguous(),
        d_final.to(dtype).contiguous(), du, ddt, q_side, k_side, last, dA, dB, dC, ds0, bt, d, N, L,
        BLOCK_D=block_d, BLOCK_N=block_n, HAS_INIT=initial_state is not None, IS_F64=dtype == torch.float64,
    )  # fmt: skip
    d_sigma = q_side - k_side
    d_sigma[..., -1] += last
    ddt = ddt + d_sigma.flip(-1).cumsum(-1).flip(-1)
    return du, ddt, dA.sum(0), dB.sum(0), dC.sum(0), ds0


@triton.jit
def _gla_bwd_kernel(  # type: ignore[no-untyped-def]
    Q_ptr,  # (R, T, DK)
    K_ptr,  # (R, T, DK)
    V_ptr,  # (R, T, DV)
    G_ptr,  # (R, T, DK) per key channel, or (R, T) per head (PER_KEY false)
    S0_ptr,  # (R, DK, DV) initial state; read only when HAS_INIT
    DO_ptr,  # (R, T, DV) gradient of the outputs
    DSF_ptr,  # (R, DK, DV) gradient of the final state
    DQ_ptr,  # (R, T, DK) out
    DK_ptr,  # (R, T, DK) out
    DV_ptr,  # (R, T, DV) out
    DS0_ptr,  # (R, DK, DV) out: gradient of the initial state
    T,
    DK,
    DV,
    BLOCK_DK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    PER_KEY: tl.constexpr,
    HAS_INIT: tl.constexpr,
    IS_F64: tl.constexpr,
):
    """One program per row, the whole ``Dk × Dv`` state in registers.  A forward sweep recomputes ``S_t`` and
    writes ``dq_t = S_t do_t``; a reverse sweep carries ``dS_t = q_t do_tᵀ + e^{g_{t+1}} dS_{t+1}`` (from the
    final state's gradient) and writes ``dk_t = dS_t v_t``, ``dv_t = dS_tᵀ k_t``; ``e^{g_0} dS_0`` is the
    initial state's.  The gates' gradient follows from ``dq`` and ``dk`` (see :func:`triton_gla_backward`)."""
    row = tl.program_id(0).to(tl.int64)
    acc = tl.float64 if IS_F64 else tl.float32
    kc = tl.arange(0, BLOCK_DK)
    vc = tl.arange(0, BLOCK_DV)
    k_ok, v_ok = kc < DK, vc < DV
    state_offs = row * DK * DV + kc[:, None] * DV + vc[None, :]
    state_ok = k_ok[:, None] & v_ok[None, :]
    if HAS_INIT:
        S = tl.load(S0_ptr + state_offs, mask=state_ok, other=0.0).to(acc)
    else:
        S = tl.zeros((BLOCK_DK, BLOCK_DV), acc)
    for t in range(0, T):
        q = tl.load(Q_ptr + row * T * DK + t * DK + kc, mask=k_ok, other=0.0).to(acc)
        k = tl.load(K_ptr + row * T * DK + t * DK + kc, mask=k_ok, other=0.0).to(acc)
        v = tl.load(V_ptr + row * T * DV + t * DV + vc, mask=v_ok, other=0.0).to(acc)
        do = tl.load(DO_ptr + row * T * DV + t * DV + vc, mask=v_ok, other=0.0).to(acc)
        if PER_KEY:
            g = tl.load(G_ptr + row * T * DK + t * DK + kc, mask=k_ok, other=0.0).to(acc)
        else:
            g = tl.zeros((BLOCK_DK,), acc) + tl.load(G_ptr + row * T + t).to(acc)
        S = tl.exp(g)[:, None] * S + k[:, None] * v[None, :]
        tl.store(DQ_ptr + row * T * DK + t * DK + kc, tl.sum(S * do[None, :], axis=1), mask=k_ok)
    dS = tl.load(DSF_ptr + state_offs, mask=state_ok, other=0.0).to(acc)
    decay_next = tl.zeros((BLOCK_DK,), acc) + 1.0  # e^{g_{t+1}}; nothing follows the last token
    for i in range(0, T):
        t = T - 1 - i
        q = tl.load(Q_ptr + row * T * DK + t * DK + kc, mask=k_ok, other=0.0).to(acc)
        k = tl.load(K_ptr + row * T * DK + t * DK + kc, mask=k_ok, other=0.0).to(acc)
        v = tl.load(V_ptr + row * T * DV + t * DV + vc, mask=v_ok, other=0.0).to(acc)
        do = tl.load(DO_ptr + row * T * DV + t * DV + vc, mask=v_ok, other=0.0).to(acc)
        dS = decay_next[:, None] * dS + q[:, None] * do[None, :]
        tl.store(DK_ptr + row * T * DK + t * DK + kc, tl.sum(dS * v[None, :], axis=1), mask=k_ok)
        tl.store(DV_ptr + row * T * DV + t * DV + vc, tl.sum(dS * k[:, None], axis=0), mask=v_ok)
        if PER_KEY:
            g = tl.load(G_ptr + row * T * DK + t * DK + kc, mask=k_ok, other=0.0).to(acc)
        else:
            g = tl.zeros((BLOCK_DK,), acc) + tl.load(G_ptr + row * T + t).to(acc)
        decay_next = tl.exp(g)
    tl.store(DS0_ptr + state_offs, decay_next[:, None] * dS, mask=state_ok)


def triton_gla_backward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_decay: Tensor | None,
    initial_state: Tensor | None,
    final_state: Tensor,
    d_out: Tensor,
    d_final: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor]:
    """Gradients ``(dq, dk, dv, d log_decay, d initial_state)`` of :func:`triton_gla` (accumulation dtype).

    With ``Ĝ_t = Σ_{s<=t} g_s`` the output is ``Σ_j (q_t ⊙ e^{Ĝ_t}) · (k_j ⊙ e^{-Ĝ_j}) v_j``, so
    ``∂L/∂Ĝ_t = q_t ⊙ dq_t - k_t ⊙ dk_t``, plus ``Σ_v dS_T ⊙ S_T`` at the last token for the final state, and
    ``d g_t = Σ_{s>=t} ∂L/∂Ĝ_s`` (derived; summed over ``Dk`` for one gate per head).
    """
    B, H, T, DK = q.shape
    DV = v.shape[-1]
    R = B * H
    dtype = q.dtype
    qf, kf = (t.reshape(R, T, DK).contiguous() for t in (q, k))
    vf, dof = (t.reshape(R, T, DV).contiguous() for t in (v, d_out))
    per_key = log_decay is not None and log_decay.dim() == 4
    if log_decay is None:
        g = torch.zeros(R, T, dtype=dtype, device=q.device)
    else:
        g = (log_decay.reshape(R, T, DK) if per_key else log_decay.reshape(R, T)).to(dtype).contiguous()
    dq, dk = torch.empty_like(qf), torch.empty_like(kf)
    dv = torch.empty_like(vf)
    ds0 = torch.empty(R, DK, DV, dtype=dtype, device=q.device)
    s0 = initial_state.reshape(R, DK, DV).contiguous() if initial_state is not None else ds0
    _gla_bwd_kernel[(R,)](
        qf, kf, vf, g, s0, dof, d_final.reshape(R, DK, DV).to(dtype).contiguous(), dq, dk, dv, ds0, T, DK, DV,
        BLOCK_DK=triton.next_power_of_2(max(DK, 1)), BLOCK_DV=triton.next_power_of_2(max(DV, 1)),
        PER_KEY=per_key, HAS_INIT=initial_state is not None, IS_F64=dtype == torch.float64,
    )  # fmt: skip
    dq, dk, dv = dq.reshape(q.shape), dk.reshape(k.shape), dv.reshape(v.shape)
    d_gate = None
    if log_decay is not None:
        dG = q * dq - k * dk  # (B, H, T, Dk)
        dG[:, :, -1] += (d_final * final_state).sum(-1)
        d_gate = dG.flip(2).cumsum(2).flip(2)
        if not per_key:
            d_gate = d_gate.sum(-1)
    return dq, dk, dv, d_gate, ds0.reshape(B, H, DK, DV)
