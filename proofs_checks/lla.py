"""Proofs and independent formulas for the LLA claims (book/lla.md).

* Symbolic (sympy, cached): the closed form of arXiv 2510.01450 §3 equals the intercept of the
  ``(D+1)``-dimensional weighted ridge normal equations, the centred form (i), the residual form (ii)
  and the Parallax-style form (iv), and ``delta/omega = 1/(1 + eta)`` (Sherman–Morrison), for
  ``D in {1, 2}``, ``T = 3`` keys and symbolic positive weights.
* Numeric (torch, float64): the same forms written independently of ``reference/lla.py``'s closed
  form, so a check can compare an implementation against formulas it does not share code with.
* Statistical: exact conditional bias and variance of linear smoothers on random 1-D designs.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import sympy as sp
import torch
from torch import Tensor

from attnverify.proofs_checks.symbolic import SymbolicStep
from attnverify.reference.lla import NEG_INF, default_scale, lam_per_query

# ---------------------------------------------------------------------------
# Symbolic: one query, T keys, D features, one value column
# ---------------------------------------------------------------------------


def _cross(n1: sp.Expr, d1: sp.Expr, n2: sp.Expr, d2: sp.Expr) -> sp.Expr:
    """``n1/d1 - n2/d2`` as the polynomial ``n1 d2 - n2 d1`` (sparse polynomial arithmetic): exactly 0
    when the fractions agree."""
    gens = sorted(set().union(*(e.free_symbols for e in (n1, d1, n2, d2))), key=str)
    p1, q1, p2, q2 = (sp.Poly(e, *gens) for e in (n1, d1, n2, d2))
    return (p1 * q2 - p2 * q1).as_expr()


def _symbols(d: int, t: int) -> tuple[sp.Matrix, list[sp.Matrix], list[sp.Expr], list[sp.Expr], sp.Symbol]:
    q = sp.Matrix(sp.symbols(f"q1:{d + 1}"))
    keys = [sp.Matrix(sp.symbols(f"k{j}_1:{d + 1}")) for j in range(1, t + 1)]
    vals = list(sp.symbols(f"v1:{t + 1}"))
    w = list(sp.symbols(f"w1:{t + 1}"))
    lam = sp.Symbol("lambda")
    return q, keys, vals, w, lam


@lru_cache(maxsize=4)
def closed_form_identities(d: int, t: int = 3) -> tuple[SymbolicStep, ...]:
    """The closed form ``o = delta^{-1} sum_j w_j (1 - rho.(k_j - q)) v_j`` against the other forms.

    Every form is written as polynomial numerator over polynomial denominator (inverses by adjugate
    and determinant, normalised sums multiplied out by powers of ``omega``); a step's residual is the
    expanded cross-difference ``n1 d2 - n2 d1``, so it is exactly 0 iff the forms agree wherever
    both denominators are non-zero.
    """
    _, keys, vals, w, lam = _symbols(d, t)
    q = sp.zeros(d, 1)  # keys relative to the query: every form sees k_j and q only through k_j - q
    eye = sp.eye(d)
    pairs = list(zip(w, keys, vals, strict=True))
    dif = [kj - q for kj in keys]
    omega = sp.Add(*w)
    # Closed form (arXiv 2510.01450, §3): rho = adj(S) mu / det(S), delta = omega - mu.rho.
    mu = sum((wj * dj for wj, dj in zip(w, dif, strict=True)), sp.zeros(d, 1))
    sig = sum((wj * dj * dj.T for wj, dj in zip(w, dif, strict=True)), sp.zeros(d, d)) + lam * omega * eye
    det_s, adj_mu = sig.det(method="berkowitz"), sig.adjugate(method="berkowitz") * mu
    closed_n = sp.Add(*[wj * (det_s - (adj_mu.T * dj)[0]) * vj for (wj, _, vj), dj in zip(pairs, dif, strict=True)])
    closed_d = omega * det_s - (mu.T * adj_mu)[0]
    # Intercept of the ridge fit with rows [1, (k_j - q)^T], weights w_j (= omega s_j), penalty diag(0, lam omega I).
    rows = sp.Matrix([[1, *dj] for dj in dif])
    gram = rows.T * sp.diag(*w) * rows + sp.diag(0, *([lam * omega] * d))
    beta_n = (gram.adjugate(method="berkowitz") * rows.T * sp.diag(*w) * sp.Matrix(vals))[0]
    # Moments times powers of omega: K1 = omega kbar, V1 = omega vbar, Cw = omega^2 C, Xw = omega^2 Skv.
    k1 = sum((wj * kj for wj, kj, _ in pairs), sp.zeros(d, 1))
    v1 = sp.Add(*[wj * vj for wj, _, vj in pairs])
    cw = omega * sum((wj * kj * kj.T for wj, kj, _ in pairs), sp.zeros(d, d)) - k1 * k1.T
    xw = omega * sum((wj * vj * kj.T for wj, kj, vj in pairs), sp.zeros(1, d)) - v1 * k1.T
    m = cw + lam * omega**2 * eye  # omega^2 (C + lam I)
    det_m, adj_m = m.det(method="berkowitz"), m.adjugate(method="berkowitz")
    u = omega * q - k1  # omega (q - kbar) = -omega mubar
    # (i) centred: vbar + Skv (C + lam I)^{-1} (q - kbar).
    centred_n = v1 * det_m + (xw * adj_m * u)[0]
    # (ii) residual: sum_j s_j (v_j - W (k_j - q)), W = Xw adj(M) / det(M).
    resid_n = sp.Add(*[wj * (vj * det_m - (xw * adj_m * dj)[0]) for (wj, _, vj), dj in zip(pairs, dif, strict=True)])
    # (iii) eta = mubar^T (C + lam I)^{-1} mubar = u^T adj(M) u / det(M).
    eta_n = (u.T * adj_m * u)[0]
    # (iv) Parallax-style: vbar - (1 + eta) Skv rho.
    par_n = v1 * omega**2 * det_m * det_s - omega * (det_m + eta_n) * (xw * adj_mu)[0]
    par_d = omega**3 * det_m * det_s
    # rho = (C + mubar mubar^T + lam I)^{-1} mubar = -omega adj(N) u / det(N), N = M + u u^T.
    n_mat = m + u * u.T
    rho_alt = -omega * n_mat.adjugate(method="berkowitz") * u
    rho_res = sp.Add(*[sp.Abs(_cross(adj_mu[r], det_s, rho_alt[r], n_mat.det(method="berkowitz"))) for r in range(d)])
    return (
        SymbolicStep(
            f"D={d}: closed form = intercept of the (D+1)-dim ridge fit",
            _cross(closed_n, closed_d, beta_n, gram.det(method="berkowitz")),
        ),
        SymbolicStep(f"D={d}: closed form = centred form (i)", _cross(closed_n, closed_d, centred_n, omega * det_m)),
        SymbolicStep(f"D={d}: closed form = residual form (ii)", _cross(closed_n, closed_d, resid_n, omega * det_m)),
        SymbolicStep(f"D={d}: closed form = Parallax-style form (iv)", _cross(closed_n, closed_d, par_n, par_d)),
        SymbolicStep(f"D={d}: delta / omega = 1 / (1 + eta)", _cross(closed_d, omega * det_s, det_m, det_m + eta_n)),
        SymbolicStep(f"D={d}: rho = (C + mubar mubar^T + lam I)^(-1) mubar", rho_res),
    )


# ---------------------------------------------------------------------------
# Numeric forms, float64, written apart from reference/lla.py's closed form
# ---------------------------------------------------------------------------


def softmax_weights(q: Tensor, k: Tensor, scale: float | None = None) -> Tensor:
    """Causal softmax ``s_ij`` ``(..., T, T)`` from torch's softmax (not the reference's weights)."""
    t = q.shape[-2]
    logits = default_scale(q.shape[-1], scale) * (q @ k.transpose(-1, -2))
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    return torch.softmax(logits.masked_fill(~causal, NEG_INF), -1)


def ridge_intercept(s: Tensor, q: Tensor, k: Tensor, v: Tensor, lam: float | Tensor) -> Tensor:
    """Intercept of the weighted ridge fit at each query: rows ``[1, (k_j - q_i)^T]``, weights ``s_ij``,
    penalty ``diag(0, lam_i I)``; solves the ``(D+1)``-dimensional normal equations.  ``(..., T, Dv)``."""
    t, d = q.shape[-2], q.shape[-1]
    lam_i = lam_per_query(lam, q.shape[:-2], t, q)
    x = k[..., None, :, :] - q[..., :, None, :]  # (..., T, T, D): row i holds k_j - q_i
    x = torch.cat([torch.ones_like(x[..., :1]), x], -1)  # (..., T, T, D+1)
    xs = x * s[..., None]
    gram = x.transpose(-1, -2) @ xs  # (..., T, D+1, D+1)
    pen = torch.diag(torch.cat([torch.zeros(1, dtype=q.dtype), torch.ones(d, dtype=q.dtype)])).to(q.device)
    gram = gram + lam_i[..., None, None] * pen
    rhs = xs.transpose(-1, -2) @ v[..., None, :, :]  # (..., T, D+1, Dv)
    return torch.linalg.solve(gram, rhs)[..., 0, :]


def _moments(s: Tensor, q: Tensor, k: Tensor, v: Tensor, lam: float | Tensor) -> tuple[Tensor, ...]:
    t, d = q.shape[-2], q.shape[-1]
    lam_i = lam_per_query(lam, q.shape[:-2], t, q)
    kbar, vbar = s @ k, s @ v  # (..., T, D), (..., T, Dv)
    cov = torch.einsum("...ij,...jd,...je->...ide", s, k, k) - kbar[..., :, None] * kbar[..., None, :]  # C_i
    cross = torch.einsum("...ij,...jc,...jd->...icd", s, v, k) - vbar[..., :, None] * kbar[..., None, :]  # Skv_i
    reg = cov + lam_i[..., None, None] * torch.eye(d, dtype=q.dtype, device=q.device)  # C_i + lam I
    return kbar, vbar, cross, reg


def centred_form(s: Tensor, q: Tensor, k: Tensor, v: Tensor, lam: float | Tensor) -> Tensor:
    """Form (i): ``vbar_i + Skv_i (C_i + lam I)^{-1} (q_i - kbar_i)``."""
    kbar, vbar, cross, reg = _moments(s, q, k, v, lam)
    return vbar + (cross @ torch.linalg.solve(reg, (q - kbar)[..., None]))[..., 0]


def residual_form(s: Tensor, q: Tensor, k: Tensor, v: Tensor, lam: float | Tensor) -> Tensor:
    """Form (ii): ``sum_j s_ij (v_j - W_i (k_j - q_i))``, the softmax average of the local residuals."""
    kbar, vbar, cross, reg = _moments(s, q, k, v, lam)
    w_hat = torch.linalg.solve(reg, cross.transpose(-1, -2)).transpose(-1, -2)  # (..., T, Dv, D); reg symmetric
    return vbar - (w_hat @ (kbar - q)[..., None])[..., 0]


def parallax_form(s: Tensor, q: Tensor, k: Tensor, v: Tensor, lam: float | Tensor) -> Tensor:
    """Form (iv): ``vbar_i - (1 + eta_i) Skv_i rho_i``, ``rho_i = (C_i + mubar mubar^T + lam I)^{-1} mubar``."""
    kbar, vbar, cross, reg = _moments(s, q, k, v, lam)
    mubar = kbar - q
    eta = (mubar[..., None, :] @ torch.linalg.solve(reg, mubar[..., None]))[..., 0, 0]
    rho = torch.linalg.solve(reg + mubar[..., :, None] * mubar[..., None, :], mubar[..., None])
    return vbar - (1 + eta)[..., None] * (cross @ rho)[..., 0]


def denominator_ratio(s: Tensor, q: Tensor, k: Tensor, lam: float | Tensor) -> Tensor:
    """``delta_i / omega_i = 1 / (1 + eta_i)``, ``eta_i = mubar_i^T (C_i + lam I)^{-1} mubar_i`` (form iii)."""
    kbar, _, _, reg = _moments(s, q, k, k[..., :1], lam)
    mubar = kbar - q
    eta = (mubar[..., None, :] @ torch.linalg.solve(reg, mubar[..., None]))[..., 0, 0]
    return 1 / (1 + eta)


# ---------------------------------------------------------------------------
# Statistical: exact conditional bias and variance of linear smoothers on 1-D designs
# ---------------------------------------------------------------------------


def gaussian_kernel(x: np.ndarray, query: float, h: float) -> np.ndarray:
    """``exp(-(x - query)^2 / (2 h^2))`` (second moment ``mu_2 = 1``)."""
    return np.exp(-((x - query) ** 2) / (2 * h * h))


def nw_weights(w: np.ndarray) -> np.ndarray:
    """Nadaraya–Watson weights ``w_j / sum_j w_j`` along the last axis."""
    return w / w.sum(-1, keepdims=True)


def bias_and_variance(
    weights: np.ndarray, x: np.ndarray, query: float, f: object, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Exact conditional bias ``sum_j l_j f(x_j) - f(q)`` and variance ``sigma^2 sum_j l_j^2`` of ``sum_j l_j y_j``."""
    fn = f  # a numpy ufunc-like callable
    bias = (weights * fn(x)).sum(-1) - fn(np.asarray(query))  # type: ignore[operator]
    return bias, sigma**2 * (weights**2).sum(-1)


def normal_system(q: Tensor, k: Tensor, lam: float | Tensor, scale: float | None = None) -> tuple[Tensor, Tensor]:
    """``Sigma_i / omega_i`` ``(..., T, D, D)`` and ``mu_i / omega_i`` ``(..., T, D)`` from torch's softmax,
    formed densely (``rho_i`` and the relative residual do not depend on the factor ``omega_i``)."""
    s = softmax_weights(q, k, scale)
    lam_i = lam_per_query(lam, q.shape[:-2], q.shape[-2], q)
    dif = k[..., None, :, :] - q[..., :, None, :]  # (..., T, T, D)
    mu = torch.einsum("...ij,...ijd->...id", s, dif)
    eye = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device)
    sigma = torch.einsum("...ij,...ijd,...ije->...ide", s, dif, dif) + lam_i[..., None, None] * eye
    return sigma, mu


def uniform_design(rng: np.random.Generator, designs: int, n: int) -> np.ndarray:
    """``designs`` independent samples of ``n`` points from ``U[0, 1]``: ``(designs, n)``."""
    return rng.uniform(0.0, 1.0, (designs, n))


def linear_density_design(rng: np.random.Generator, designs: int, n: int) -> np.ndarray:
    """Points with density ``p(x) = (1 + x) / 1.5`` on ``[0, 1]`` (inverse CDF ``-1 + sqrt(1 + 3u)``)."""
    return -1.0 + np.sqrt(1.0 + 3.0 * rng.uniform(0.0, 1.0, (designs, n)))
