"""Local linear attention (LLA) and its two neighbours, written plainly.

Transcribes arXiv 2510.01450 (Zuo et al. 2025, "Local Linear Attention", §2-3) in the formulation of
``book/lla.md`` ("Our formulation vs the paper's").  Attention at step ``i`` is a regression fitted at
test time on the causal pairs ``(k_j, v_j)``, ``j <= i``, and evaluated at the query ``q_i``:

* softmax attention is the Nadaraya–Watson (local constant) fit;
* LLA is the local *linear* fit: ``min_{b, W} sum_j s_ij |v_j - b - W (k_j - q_i)|^2 + lam |W|_F^2``,
  output the intercept ``b``; only ``W`` is penalised;
* a global linear fit (MesaNet, arXiv 2506.05233) ignores locality and has no intercept.

Weights: ``l_ij = tau q_i.k_j``, ``m_i = max_{j<=i} l_ij``, ``w_ij = exp(l_ij - m_i)``,
``omega_i = sum_j w_ij``, ``s_ij = w_ij / omega_i``.  The ridge ``lam`` multiplies ``omega_i`` in
``Sigma_i``, i.e. it applies to the normalised weights ``s``.

Shapes: ``q, k: (..., T, D)``, ``v: (..., T, Dv)``, outputs ``(..., T, Dv)``; ``lam`` a float or a
tensor broadcastable to ``(..., T)`` (``lam_i`` is used for query ``i``).  Loops are fine here; nothing
validates its input (the fast API does that).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

NEG_INF = float("-inf")


def default_scale(d: int, scale: float | None) -> float:
    """``tau``: ``1/sqrt(D)`` when ``scale`` is None; any given float, including 0.0, is kept."""
    return 1.0 / math.sqrt(d) if scale is None else scale


def causal_weights(q: Tensor, k: Tensor, scale: float | None = None) -> Tensor:
    """``w_ij = exp(tau q_i.k_j - m_i)`` for ``j <= i`` and 0 above the diagonal: ``(..., T, T)``."""
    tau = default_scale(q.shape[-1], scale)
    t = q.shape[-2]
    logits = tau * (q @ k.transpose(-1, -2))  # (..., T, T)
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    logits = logits.masked_fill(~causal, NEG_INF)
    m = logits.amax(-1, keepdim=True)  # m_i = max_{j<=i} l_ij (finite: j = i is always there)
    return torch.exp(logits - m)


def lam_per_query(lam: float | Tensor, batch: torch.Size, t: int, like: Tensor) -> Tensor:
    """``lam`` broadcast to ``(..., T)`` in the dtype of ``like``."""
    return torch.as_tensor(lam, dtype=like.dtype, device=like.device).expand(*batch, t)


# ---------------------------------------------------------------------------
# One query: the local linear fit and its effective weights
# ---------------------------------------------------------------------------


def local_linear_weights(w: Tensor, keys: Tensor, query: Tensor, lam: Tensor | float) -> Tensor:
    """Effective weights ``a_j`` of the local linear fit at ``query``: ``o = sum_j a_j v_j``.

    ``w: (..., n)`` non-negative kernel weights, ``keys: (..., n, D)``, ``query: (..., D)``,
    ``lam: (...)`` or a float (0 allowed: then the minimum-norm solve).
    Closed form (arXiv 2510.01450, §3; book/lla.md, "The closed form"):

    ``mu = sum_j w_j (k_j - q)``, ``Sigma = sum_j w_j (k_j - q)(k_j - q)^T + lam omega I``,
    ``rho = Sigma^{-1} mu``, ``delta = omega - mu.rho``, ``a_j = w_j (1 - rho.(k_j - q)) / delta``.
    """
    d = keys - query[..., None, :]  # (..., n, D): k_j - q
    omega = w.sum(-1)  # (...)
    mu = (w[..., None] * d).sum(-2)  # (..., D)
    eye = torch.eye(d.shape[-1], dtype=d.dtype, device=d.device)
    lam_t = torch.as_tensor(lam, dtype=d.dtype, device=d.device)
    sigma = d.transpose(-1, -2) @ (w[..., None] * d) + (lam_t * omega)[..., None, None] * eye  # (..., D, D)
    if bool((lam_t == 0).any()):  # lam = 0: the minimum-norm solution, the limit lam -> 0+ (mu lies in range(Sigma))
        rho = (torch.linalg.pinv(sigma, hermitian=True) @ mu[..., None])[..., 0]
    else:
        rho = torch.linalg.solve(sigma, mu[..., None])[..., 0]  # (..., D)
    delta = omega - (mu * rho).sum(-1)  # (...)
    return w * (1 - (d @ rho[..., None])[..., 0]) / delta[..., None]


def normalised_denominator(q: Tensor, k: Tensor, lam: float | Tensor, scale: float | None = None) -> Tensor:
    """``delta_i / omega_i`` ``(..., T)`` with ``delta_i = omega_i - mu_i.rho_i`` (arXiv 2510.01450, §3)."""
    w = causal_weights(q, k, scale)
    t, d = q.shape[-2], q.shape[-1]
    lam_i = lam_per_query(lam, q.shape[:-2], t, q)
    eye = torch.eye(d, dtype=q.dtype, device=q.device)
    out = []
    for i in range(t):
        wi, dif = w[..., i, : i + 1], k[..., : i + 1, :] - q[..., i, None, :]  # (..., i+1), (..., i+1, D)
        omega = wi.sum(-1)
        mu = (wi[..., None] * dif).sum(-2)
        sigma = dif.transpose(-1, -2) @ (wi[..., None] * dif) + (lam_i[..., i] * omega)[..., None, None] * eye
        rho = torch.linalg.solve(sigma, mu[..., None])[..., 0]
        out.append((omega - (mu * rho).sum(-1)) / omega)
    return torch.stack(out, -1)


def local_linear_fit(w: Tensor, q: Tensor, k: Tensor, v: Tensor, lam: float | Tensor) -> Tensor:
    """Local linear attention from given causal weights ``w: (..., T, T)`` (zero above the diagonal).

    One explicit solve per query ``i`` on the keys ``j <= i`` (:func:`local_linear_weights`).
    The output depends on each row of ``w`` only up to a positive factor, because ``lam`` is scaled
    by ``omega_i`` (book/lla.md, "Shift invariance").
    """
    t = q.shape[-2]
    lam_i = lam_per_query(lam, q.shape[:-2], t, q)
    rows = []
    for i in range(t):
        a = local_linear_weights(w[..., i, : i + 1], k[..., : i + 1, :], q[..., i, :], lam_i[..., i])  # (..., i+1)
        rows.append((a[..., None, :] @ v[..., : i + 1, :])[..., 0, :])  # (..., Dv)
    return torch.stack(rows, -2)


def local_linear_attention(q: Tensor, k: Tensor, v: Tensor, lam: float | Tensor, scale: float | None = None) -> Tensor:
    """Causal local linear attention ``o_i = b_i`` (arXiv 2510.01450, §3), one explicit solve per query."""
    return local_linear_fit(causal_weights(q, k, scale), q, k, v, lam)


# ---------------------------------------------------------------------------
# The neighbours: local constant (softmax) and global linear fits
# ---------------------------------------------------------------------------


def nadaraya_watson_attention(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
    """Causal softmax attention ``o_i = sum_j s_ij v_j``: the local constant (Nadaraya–Watson) fit."""
    w = causal_weights(q, k, scale)
    return (w / w.sum(-1, keepdim=True)) @ v


def global_ridge_attention(q: Tensor, k: Tensor, v: Tensor, lam: float | Tensor) -> Tensor:
    """Causal ridge regression *with intercept* and uniform weights ``1/i``, evaluated at ``q_i``.

    Centred form: ``o_i = vbar_i + Skv_i (C_i + lam I)^{-1} (q_i - kbar_i)`` with the running means
    ``kbar_i, vbar_i``, covariance ``C_i`` and cross-covariance ``Skv_i`` of the first ``i`` pairs.
    """
    t, d = q.shape[-2], q.shape[-1]
    lam_i = lam_per_query(lam, q.shape[:-2], t, q)
    eye = torch.eye(d, dtype=q.dtype, device=q.device)
    rows = []
    for i in range(t):
        ki, vi = k[..., : i + 1, :], v[..., : i + 1, :]
        kbar, vbar = ki.mean(-2), vi.mean(-2)  # (..., D), (..., Dv)
        kc, vc = ki - kbar[..., None, :], vi - vbar[..., None, :]
        cov = kc.transpose(-1, -2) @ kc / (i + 1)  # (..., D, D)
        cross = vc.transpose(-1, -2) @ kc / (i + 1)  # (..., Dv, D)
        x = torch.linalg.solve(cov + lam_i[..., i, None, None] * eye, (q[..., i, :] - kbar)[..., None])
        rows.append(vbar + (cross @ x)[..., 0])
    return torch.stack(rows, -2)


def mesanet_attention(q: Tensor, k: Tensor, v: Tensor, lam: float | Tensor) -> Tensor:
    """MesaNet's global linear read-out as written (arXiv 2506.05233): no intercept, unnormalised sums.

    ``o_i = (sum_{j<=i} v_j k_j^T)(sum_{j<=i} k_j k_j^T + lam I)^{-1} q_i``.
    """
    t, d = q.shape[-2], q.shape[-1]
    lam_i = lam_per_query(lam, q.shape[:-2], t, q)
    eye = torch.eye(d, dtype=q.dtype, device=q.device)
    rows = []
    for i in range(t):
        ki, vi = k[..., : i + 1, :], v[..., : i + 1, :]
        gram = ki.transpose(-1, -2) @ ki + lam_i[..., i, None, None] * eye  # (..., D, D)
        x = torch.linalg.solve(gram, q[..., i, :, None])  # (..., D, 1)
        rows.append((vi.transpose(-1, -2) @ ki @ x)[..., 0])
    return torch.stack(rows, -2)
