"""The Dynamical Systems Framework (DSF), written plainly; plus the GLA and Lightning forms it covers.

Sieber, Amo Alonso, Didier, Zeilinger, Orvieto, *Understanding the differences in Foundation Models:
Attention, State Space Models, and Recurrent Neural Networks*, NeurIPS 2024, arXiv 2405.15731 (§2-§4).
Every model is the linear time-varying system

    h_i = Λ_i h_{i-1} + B_i u_i,    y_i = C_i h_i + D_i u_i,    h_0 = 0,

with ``Λ_i`` diagonal.  Our formulation (book/dsf.md, "Our formulation vs the paper's"): one
sequence, ``Λ`` stored as an ``(L, N)`` array, dense ``B_i (N, d)``, ``C_i (d_y, N)``, ``D_i (d_y, d)``,
``Φ`` in token-major block order, states vectorized row-major (``vec(x yᵀ) = x ⊗ y``).

For each model there are two independent computations: the model's own direct form (``linear_attention``,
``s6``, ...) and its converter to a :class:`DSF` (``linear_attention_dsf``, ``s6_dsf``, ...).  GLA
(Yang et al., arXiv 2312.06635) and Lightning Attention-2 (Qin et al., arXiv 2401.04658) appear as a
step-by-step recurrence, a masked quadratic form and (Lightning) the block form of the paper.
Everything runs in the dtype it is given; the checks call it in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class DSF:
    """``Λ: (L, N)`` (the diagonals), ``B: (L, N, d)``, ``C: (L, d_y, N)``, ``D: (L, d_y, d)``."""

    Lam: Tensor
    B: Tensor
    C: Tensor
    D: Tensor


def lower(n: int) -> Tensor:
    """``1[i >= j]`` as an ``(n, n)`` boolean matrix (the causal mask, diagonal included)."""
    i = torch.arange(n)
    return i[:, None] >= i[None, :]


def recurrence(dsf: DSF, u: Tensor) -> Tensor:
    """``h_i = Λ_i h_{i-1} + B_i u_i``, ``y_i = C_i h_i + D_i u_i`` from ``h_0 = 0`` (arXiv 2405.15731, §2).

    ``u: (L, d)`` → ``y: (L, d_y)``.
    """
    h = torch.zeros(dsf.Lam.shape[1], dtype=u.dtype)
    ys = []
    for i in range(u.shape[0]):
        h = dsf.Lam[i] * h + dsf.B[i] @ u[i]
        ys.append(dsf.C[i] @ h + dsf.D[i] @ u[i])
    return torch.stack(ys)


def matrix_form(dsf: DSF) -> Tensor:
    """``Φ: (L d_y, L d)`` with ``Φ_ij = C_i (Π_{k=j+1}^{i} Λ_k) B_j`` (j < i), ``Φ_ii = C_i B_i + D_i``, 0 above.

    ``y = Φ vec(u)`` with ``u`` flattened token-major (derived by unrolling the recurrence).
    """
    L, dy, d = dsf.Lam.shape[0], dsf.C.shape[1], dsf.B.shape[2]
    phi = torch.zeros(L * dy, L * d, dtype=dsf.Lam.dtype)
    for i in range(L):
        for j in range(i + 1):
            decay = torch.prod(dsf.Lam[j + 1 : i + 1], dim=0)  # Π_{k=j+1}^{i} Λ_k (empty product = 1)
            block = dsf.C[i] @ (decay[:, None] * dsf.B[j])
            if j == i:
                block = block + dsf.D[i]
            phi[i * dy : (i + 1) * dy, j * d : (j + 1) * d] = block
    return phi


def apply_matrix_form(phi: Tensor, u: Tensor) -> Tensor:
    """``y = Φ u`` with ``u: (L, d)`` flattened token-major; returns ``(L, d_y)``."""
    return (phi @ u.reshape(-1)).reshape(u.shape[0], -1)


# ---------------------------------------------------------------------------
# Separable attention: y_i = Σ_{j<=i} φ(q_i)ᵀψ(k_j) v_j / η_i,  η_i = Σ_{j<=i} φ(q_i)ᵀψ(k_j)
# ---------------------------------------------------------------------------


def elu1(x: Tensor) -> Tensor:
    """The linear-attention feature map ``elu(x) + 1 > 0`` (Katharopoulos et al., arXiv 2006.16236)."""
    return F.elu(x) + 1


def attention_dsf(features_q: Tensor, features_k: Tensor, log_eta: Tensor, W_V: Tensor) -> DSF:
    """DSF of separable attention with state ``H_i = η_i^{-1} Σ_{j<=i} ψ(k_j) v_jᵀ`` (arXiv 2405.15731, §3.1).

    ``features_q, features_k: (L, n)``, ``log_eta: (L,)``, ``W_V: (d_v, d)``.  ``Λ_i = η_{i-1}/η_i`` (scalar,
    ``Λ_1 = 1``), ``B_i = η_i^{-1} ψ(k_i) ⊗ W_V``, ``C_i = φ(q_i)ᵀ ⊗ I_{d_v}``, ``D_i = 0``.
    """
    L, n = features_q.shape
    dv, d = W_V.shape
    lam = torch.exp(torch.cat([log_eta[:1], log_eta[:-1]]) - log_eta)  # η_{i-1} / η_i, computed in logs
    Lam = lam[:, None].expand(L, n * dv).clone()
    eye = torch.eye(dv, dtype=W_V.dtype)
    B = torch.stack([torch.kron(features_k[i, :, None], W_V) * torch.exp(-log_eta[i]) for i in range(L)])
    C = torch.stack([torch.kron(features_q[i, None, :], eye) for i in range(L)])
    return DSF(Lam, B, C, torch.zeros(L, dv, d, dtype=W_V.dtype))


def linear_attention(u: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor) -> Tensor:
    """Masked, normalized linear attention with ``φ = ψ = elu + 1``, no ``1/√m`` (arXiv 2405.15731, §3.1).

    ``u: (L, d)``, ``W_Q, W_K: (m, d)``, ``W_V: (d_v, d)`` → ``(L, d_v)``.
    """
    q, k, v = elu1(u @ W_Q.T), elu1(u @ W_K.T), u @ W_V.T
    scores = (q @ k.T).masked_fill(~lower(u.shape[0]), 0.0)  # f(q_i, k_j) for j <= i
    return (scores @ v) / scores.sum(-1, keepdim=True)


def linear_attention_dsf(u: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor) -> DSF:
    """Linear attention as a DSF: ``n = m``, ``N = m d_v``, ``η_i = φ(q_i)ᵀ Σ_{j<=i} ψ(k_j)``."""
    q, k = elu1(u @ W_Q.T), elu1(u @ W_K.T)
    eta = (q * torch.cumsum(k, 0)).sum(-1)
    return attention_dsf(q, k, torch.log(eta), W_V)


def softmax_attention(u: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor) -> Tensor:
    """Causal softmax attention ``softmax(q_iᵀk_j/√m)`` over ``j <= i`` (arXiv 2405.15731, §3.1)."""
    q, k, v = u @ W_Q.T, u @ W_K.T, u @ W_V.T
    L = u.shape[0]
    scores = (q @ k.T / math.sqrt(q.shape[1])).masked_fill(~lower(L), -math.inf)
    return torch.softmax(scores, -1) @ v


def softmax_attention_dsf(u: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor) -> DSF:
    """Softmax attention as a DSF with "cache" features (our construction; book/dsf.md).

    ``ψ(k_j) = e_j ∈ R^L`` and ``φ(q_i)_j = e^{q_iᵀk_j/√m}``: the state is the normalized KV cache,
    ``N = L d_v``, and ``ν_i = Σ_{j<=i} e^{q_iᵀk_j/√m}`` (it depends on the query ``q_i``).  ``log ν`` is a
    log-sum-exp, so ``Λ_i = e^{log ν_{i-1} - log ν_i}`` never overflows in between; ``Λ_i`` may exceed 1.
    """
    q, k = u @ W_Q.T, u @ W_K.T
    L = u.shape[0]
    s = q @ k.T / math.sqrt(q.shape[1])  # (L, L)
    log_nu = torch.logsumexp(s.masked_fill(~lower(L), -math.inf), -1)
    features_q = torch.exp(s).masked_fill(~lower(L), 0.0)  # φ(q_i)_j = e^{s_ij}; entries j > i meet a zero state
    return attention_dsf(features_q, torch.eye(L, dtype=u.dtype), log_nu, W_V)


def taylor_kernel(q: Tensor, k: Tensor, order: int) -> Tensor:
    """``Σ_{p<=P} (qᵀk/√m)^p / p!``: the softmax kernel truncated at order ``P`` (``q: (L, m)``, ``k: (L, m)``)."""
    s = q @ k.T / math.sqrt(q.shape[1])
    kernel = torch.ones_like(s)
    for p in range(1, order + 1):
        kernel = kernel + s**p / math.factorial(p)
    return kernel


def taylor_features(x: Tensor, order: int) -> Tensor:
    """``[x^{⊗p} / (m^{p/4} √p!)]_{p<=P}``, flattened: ``(L, Σ_{p<=P} m^p)``; ``φ(q)ᵀφ(k)`` is :func:`taylor_kernel`."""
    L, m = x.shape
    parts, power = [torch.ones(L, 1, dtype=x.dtype)], torch.ones(L, 1, dtype=x.dtype)
    for p in range(1, order + 1):
        power = (power[:, :, None] * x[:, None, :]).reshape(L, -1)  # x^{⊗p}, row-major
        parts.append(power / (m ** (p / 4) * math.sqrt(math.factorial(p))))
    return torch.cat(parts, 1)


def kernel_attention(kernel: Tensor, v: Tensor) -> Tensor:
    """``y_i = Σ_{j<=i} κ_ij v_j / Σ_{j<=i} κ_ij`` for a kernel matrix ``κ: (L, L)`` and ``v: (L, d_v)``."""
    a = kernel.masked_fill(~lower(kernel.shape[0]), 0.0)
    return (a @ v) / a.sum(-1, keepdim=True)


def softplus(x: Tensor) -> Tensor:
    """``log(1 + e^x)`` to full precision for every ``x`` (``F.softplus`` returns ``x`` above 20)."""
    return torch.logaddexp(x, torch.zeros_like(x))


NORMALIZERS: dict[str, Callable[[Tensor], Tensor]] = {"exp": torch.exp, "softplus": softplus, "sigmoid": torch.sigmoid}
"""The three normalizers ``g`` of normalized attention (arXiv 2405.15731, §4)."""


def normalized_attention(u: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor, w: Tensor, b: Tensor, g: str) -> Tensor:
    """``y_i = η(u_i)^{-1} Σ_{j<=i} (q_iᵀk_j) v_j`` with ``η(u) = g(wᵀu + b)`` (arXiv 2405.15731, §4).

    ``w: (d,)``, ``b: ()``, ``g`` one of :data:`NORMALIZERS`; raw ``q, k``, no ``1/√m``.
    """
    q, k, v = u @ W_Q.T, u @ W_K.T, u @ W_V.T
    eta = NORMALIZERS[g](u @ w + b)
    return ((q @ k.T).masked_fill(~lower(u.shape[0]), 0.0) @ v) / eta[:, None]


def normalized_attention_dsf(u: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor, w: Tensor, b: Tensor, g: str) -> DSF:
    """``Λ_i = η(u_{i-1}) / η(u_i)``, ``B_i = η(u_i)^{-1} (k_i ⊗ W_V)``, ``C_i = q_iᵀ ⊗ I``: :func:`attention_dsf`
    with ``φ, ψ`` the identity and ``η_i = η(u_i)``."""
    q, k = u @ W_Q.T, u @ W_K.T
    return attention_dsf(q, k, torch.log(NORMALIZERS[g](u @ w + b)), W_V)


# ---------------------------------------------------------------------------
# S6 (Mamba, arXiv 2312.00752) and SSD (Mamba-2, arXiv 2405.21060)
# ---------------------------------------------------------------------------


def s6(u: Tensor, delta: Tensor, A: Tensor, b: Tensor, c: Tensor, D: Tensor, zoh: bool = False) -> Tensor:
    """S6, one channel at a time: ``s_i = e^{Δ_i A_c} ⊙ s_{i-1} + B̄_i u_i``, ``y_i = c_iᵀ s_i + D_c u_i``.

    ``u, delta: (L, d)``, ``A: (d, n)`` (negative), ``b, c: (L, n)`` shared by the channels, ``D: (d,)``.
    Euler ``B̄ = Δ b`` (as the Mamba kernel); ``zoh``: ``B̄ = (e^{ΔA} - 1)/A ⊙ b`` (arXiv 2405.15731, §3.2).
    """
    L, d = u.shape
    y = torch.zeros(L, d, dtype=u.dtype)
    for ch in range(d):
        s = torch.zeros(A.shape[1], dtype=u.dtype)
        for i in range(L):
            decay = torch.exp(delta[i, ch] * A[ch])
            b_bar = (decay - 1) / A[ch] * b[i] if zoh else delta[i, ch] * b[i]
            s = decay * s + b_bar * u[i, ch]
            y[i, ch] = c[i] @ s + D[ch] * u[i, ch]
    return y


def s6_dsf(u: Tensor, delta: Tensor, A: Tensor, b: Tensor, c: Tensor, D: Tensor, zoh: bool = False) -> DSF:
    """S6 as a DSF with ``H[k, c] = s^{(c)}_k`` (row-major, ``N = n d``): ``Λ_i[k d + c] = e^{Δ_i^{(c)} A_{c,k}}``,
    ``B_i = b_i ⊗ diag(Δ_i)`` (Euler) or ``Σ_k e_k ⊗ diag((e^{Δ_i A_{:,k}} - 1)/A_{:,k}) b_{ik}`` (ZOH),
    ``C_i = c_iᵀ ⊗ I_d``, ``D_i = diag(D)``."""
    L, d = u.shape
    n = A.shape[1]
    Lam = torch.exp(delta[:, None, :] * A.T[None]).reshape(L, n * d)  # [i, k, c] -> k d + c
    euler = delta[:, None, :].expand(L, n, d)
    scale = (torch.exp(delta[:, None, :] * A.T[None]) - 1) / A.T[None] if zoh else euler  # (L, n, d)
    B = torch.stack([torch.cat([torch.diag(scale[i, kk] * b[i, kk]) for kk in range(n)]) for i in range(L)])
    C = torch.stack([torch.kron(c[i, None, :], torch.eye(d, dtype=u.dtype)) for i in range(L)])
    return DSF(Lam, B, C, torch.diag(D).expand(L, d, d).clone())


@overload
def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = ...,
    initial_state: Tensor | None = ...,
    output_final_state: Literal[False] = ...,
) -> Tensor: ...


@overload
def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    initial_state: Tensor | None,
    output_final_state: Literal[True],
) -> tuple[Tensor, Tensor]: ...


@overload
def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = ...,
    initial_state: Tensor | None = ...,
    *,
    output_final_state: Literal[True],
) -> tuple[Tensor, Tensor]: ...


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Mamba's selective scan, step by step (Euler, ``delta`` already positive; arXiv 2312.00752, Alg. 2).

    ``u, delta: (Bt, d, L)``, ``A: (d, n)``, ``B, C: (Bt, n, L)``, ``D: (d,)`` → ``(Bt, d, L)``:
    ``s_t = e^{Δ_t A} ⊙ s_{t-1} + Δ_t u_t B_t`` per channel from ``s_0`` (``initial_state: (Bt, d, n)``, else 0),
    ``y_t = C_tᵀ s_t + D u_t``; with ``output_final_state`` also ``s_L``.
    """
    bt, d, L = u.shape
    s = torch.zeros(bt, d, A.shape[1], dtype=u.dtype) if initial_state is None else initial_state.clone()
    ys = []
    for t in range(L):
        dt = delta[:, :, t, None]  # (Bt, d, 1)
        s = torch.exp(dt * A) * s + dt * u[:, :, t, None] * B[:, None, :, t]
        ys.append((s * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, -1) if ys else u.clone()
    y = y if D is None else y + D[:, None] * u
    return (y, s) if output_final_state else y


# ---------------------------------------------------------------------------
# qLSTM and RG-LRU (Griffin, arXiv 2402.19427)
# ---------------------------------------------------------------------------


def qlstm(x: Tensor, W_f: Tensor, W_i: Tensor, W_o: Tensor, alpha: Tensor | None = None) -> Tensor:
    """``h_i = f_i ⊙ h_{i-1} + ι_i ⊙ x_i``, ``y_i = o_i ⊙ h_i`` with sigmoid gates of ``x_i`` (arXiv 2405.15731, §3.3).

    ``x: (L, d)``, ``W_*: (d, d)``.  ``alpha: (d,)`` selects the reversed-sigmoid forget gate
    ``f_i = σ(-W_f x_i)^{relu(α)}``; ``None`` the standard ``f_i = σ(W_f x_i)``.
    """
    h = torch.zeros(x.shape[1], dtype=x.dtype)
    ys = []
    for i in range(x.shape[0]):
        pre = W_f @ x[i]
        f = torch.sigmoid(pre) if alpha is None else torch.sigmoid(-pre) ** torch.relu(alpha)
        h = f * h + torch.sigmoid(W_i @ x[i]) * x[i]
        ys.append(torch.sigmoid(W_o @ x[i]) * h)
    return torch.stack(ys)


def qlstm_dsf(x: Tensor, W_f: Tensor, W_i: Tensor, W_o: Tensor, alpha: Tensor | None = None) -> DSF:
    """``Λ_i = f_i`` (reversed: ``e^{-relu(α) softplus(W_f x_i)}``), ``B_i = diag(ι_i)``, ``C_i = diag(o_i)``."""
    pre = x @ W_f.T
    Lam = torch.sigmoid(pre) if alpha is None else torch.exp(-torch.relu(alpha) * softplus(pre))
    B = torch.diag_embed(torch.sigmoid(x @ W_i.T))
    C = torch.diag_embed(torch.sigmoid(x @ W_o.T))
    return DSF(Lam, B, C, torch.zeros_like(B))


RGLRU_C = 8.0
"""The constant ``c`` in ``a_i = σ(θ)^{c r_i}`` (arXiv 2402.19427, §2.4)."""


def rglru(u: Tensor, theta: Tensor, W_a: Tensor, b_a: Tensor, W_x: Tensor, b_x: Tensor) -> Tensor:
    """``a_i = σ(θ)^{8 r_i}``, ``h_i = a_i ⊙ h_{i-1} + √(1 - a_i²) ⊙ ι_i ⊙ u_i``, ``y_i = h_i`` (arXiv 2402.19427).

    ``u: (L, d)``, ``theta, b_a, b_x: (d,)``, ``W_a, W_x: (d, d)``;
    ``r_i = σ(W_a u_i + b_a)``, ``ι_i = σ(W_x u_i + b_x)``.
    """
    h = torch.zeros(u.shape[1], dtype=u.dtype)
    ys = []
    for i in range(u.shape[0]):
        r = torch.sigmoid(W_a @ u[i] + b_a)
        a = torch.sigmoid(theta) ** (RGLRU_C * r)
        h = a * h + torch.sqrt(1 - a**2) * torch.sigmoid(W_x @ u[i] + b_x) * u[i]
        ys.append(h)
    return torch.stack(ys)


def rglru_dsf(u: Tensor, theta: Tensor, W_a: Tensor, b_a: Tensor, W_x: Tensor, b_x: Tensor) -> DSF:
    """``Λ_i = diag(a_i)`` with ``a_i = e^{-8 r_i softplus(-θ)}`` (the S6 form, ``Δ = r_i``),
    ``B_i = diag(√(1 - a_i²) ⊙ ι_i)``, ``C = I``, ``D = 0``."""
    L, d = u.shape
    a = torch.exp(-RGLRU_C * torch.sigmoid(u @ W_a.T + b_a) * softplus(-theta))
    B = torch.diag_embed(torch.sqrt(1 - a**2) * torch.sigmoid(u @ W_x.T + b_x))
    eye = torch.eye(d, dtype=u.dtype).expand(L, d, d).clone()
    return DSF(a, B, eye, torch.zeros_like(B))


# ---------------------------------------------------------------------------
# Gated linear attention (arXiv 2312.06635) and Lightning Attention-2 (arXiv 2401.04658)
# ---------------------------------------------------------------------------


def gla_recurrent(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_decay: Tensor | None = None,
    *,
    normalize: bool = False,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``S_t = diag(e^{g_t}) S_{t-1} + k_t v_tᵀ``, ``o_t = S_tᵀ q_t`` step by step (arXiv 2312.06635, §4.1).

    ``q, k: (B, H, T, D_k)``, ``v: (B, H, T, D_v)``, ``log_decay``: ``(B, H, T)`` or ``(B, H, T, D_k)``
    (natural log, ``<= 0``; ``None`` = no decay).  ``normalize``: ``z_t = e^{g_t} z_{t-1} + k_t`` and
    ``o_t / (q_tᵀ z_t)``, carried as an extra value column of ones.  Returns ``(o, S_T)``; ``S`` is
    ``(B, H, D_k, D_v)`` (``D_v + 1`` columns when normalizing, the last one ``z``).
    """
    if normalize:
        v = torch.cat([v, torch.ones_like(v[..., :1])], -1)
    Bt, H, T, Dk = q.shape
    S = torch.zeros(Bt, H, Dk, v.shape[-1], dtype=q.dtype) if initial_state is None else initial_state.clone()
    outs = []
    for t in range(T):
        if log_decay is not None:
            g = log_decay[:, :, t]
            g = g[..., None] if g.dim() == 2 else g
            S = torch.exp(g)[..., None] * S  # decay, then add
        S = S + k[:, :, t, :, None] * v[:, :, t, None, :]
        outs.append((q[:, :, t, :, None] * S).sum(-2))
    o = torch.stack(outs, 2) if outs else v.clone()
    if normalize:
        o = o[..., :-1] / o[..., -1:]
    return o, S


def gla_quadratic(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None = None) -> Tensor:
    """``o_t = Σ_{j<=t} (Σ_c q_tc k_jc e^{G_tc - G_jc}) v_j`` with ``G_t = Σ_{s<=t} g_s`` (arXiv 2312.06635, §4.2).

    The masked quadratic form, with the exponent ``G_t - G_j <= 0`` formed before ``exp`` (memory ``T² D_k``).
    """
    T, Dk = q.shape[2], q.shape[3]
    if log_decay is None:
        log_decay = torch.zeros(q.shape[:3], dtype=q.dtype)
    g = log_decay if log_decay.dim() == 4 else log_decay[..., None].expand(*q.shape[:3], Dk)
    G = torch.cumsum(g, 2)
    causal = lower(T)
    gap = (G[:, :, :, None, :] - G[:, :, None, :, :]).masked_fill(~causal[:, :, None], -math.inf)  # (B,H,T,T,Dk)
    scores = (q[:, :, :, None, :] * k[:, :, None, :, :] * torch.exp(gap)).sum(-1)
    return scores @ v


def lightning_quadratic(q: Tensor, k: Tensor, v: Tensor, log_lambda: Tensor) -> Tensor:
    """``O = ((Q Kᵀ) ⊙ M) V``, ``M_ij = λ^{i-j} 1[i >= j]``, ``λ_h = e^{log_lambda[h]}`` (arXiv 2401.04658)."""
    T = q.shape[2]
    i = torch.arange(T, dtype=q.dtype)
    gap = (i[:, None] - i[None, :]).clamp_min(0)
    M = torch.exp(log_lambda[:, None, None] * gap).masked_fill(~lower(T), 0.0)  # (H, T, T)
    return ((q @ k.transpose(-1, -2)) * M) @ v


def lightning_block_form(q: Tensor, k: Tensor, v: Tensor, log_lambda: Tensor, block: int) -> Tensor:
    """Lightning Attention-2's intra/inter split (arXiv 2401.04658, Alg. 1), in-block index ``j = 0..b-1``:

    ``O_b = [(Q_b K_bᵀ) ⊙ D] V_b + diag(λ^{j+1}) Q_b KV``, then ``KV <- λ^b KV + (diag(λ^{b-1-j}) K_b)ᵀ V_b``
    with ``D_ij = λ^{i-j} 1[i >= j]``; powers formed as ``e^{p log λ}``.  A tail block is shorter.
    (Our indices put the block's own first token at ``λ^0``: the carried state's last token is one step back.)
    """
    Bt, H, T, _ = q.shape
    lam = log_lambda[:, None]  # (H, 1)
    KV = torch.zeros(Bt, H, q.shape[3], v.shape[3], dtype=q.dtype)
    outs = []
    for start in range(0, T, block):
        Qb, Kb, Vb = q[:, :, start : start + block], k[:, :, start : start + block], v[:, :, start : start + block]
        b = Qb.shape[2]
        j = torch.arange(b, dtype=q.dtype)
        gap = (j[:, None] - j[None, :]).clamp_min(0)
        Dmask = torch.exp(log_lambda[:, None, None] * gap).masked_fill(~lower(b), 0.0)
        intra = ((Qb @ Kb.transpose(-1, -2)) * Dmask) @ Vb
        inter = torch.exp(lam * (j + 1))[..., None] * (Qb @ KV)
        outs.append(intra + inter)
        KV = torch.exp(lam * b)[..., None] * KV + (torch.exp(lam * (b - 1 - j))[..., None] * Kb).transpose(-1, -2) @ Vb
    return torch.cat(outs, 2)
