"""Planted bugs for the LLA claims: small, realistic wrong implementations (book/lla.md, "The mutants").

Each mutant has the signature of the subject it replaces; every claim that lists it must reject it
with a numeric finding (``tests/test_claims.py``).  Most are one-token slips in the closed form of
arXiv 2510.01450 §3; the others are the classic mistakes of a blockwise kernel.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnverify.reference import lla as ref
from attnverify.registry import Mutant


def _solve(a: Tensor, b: Tensor, lam: Tensor) -> Tensor:
    """``a^{-1} b``; the minimum-norm solution when ``lam = 0`` (as the reference does)."""
    if bool((lam == 0).any()):
        return torch.linalg.pinv(a, hermitian=True) @ b
    return torch.linalg.solve(a, b)


def _fit(
    w: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lam: float | Tensor,
    *,
    ridge: str = "lam*omega",
    sign: float = -1.0,
    delta_sign: float = -1.0,
    centre: str = "query",
) -> Tensor:
    """The closed form with one knob turned: ``o_i = delta^{-1} sum_j w_ij (1 + sign rho.(k_j - c_i)) v_j``."""
    t, d = q.shape[-2], q.shape[-1]
    lam_i = ref.lam_per_query(lam, q.shape[:-2], t, q)
    eye = torch.eye(d, dtype=q.dtype, device=q.device)
    rows = []
    for i in range(t):
        wi = w[..., i, : i + 1]
        c = q[..., i, :] if centre == "query" else k[..., i, :]
        dif = k[..., : i + 1, :] - c[..., None, :]
        omega = wi.sum(-1)
        mu = (wi[..., None] * dif).sum(-2)
        reg = {"lam*omega": lam_i[..., i] * omega, "lam": lam_i[..., i], "2lam*omega": 2 * lam_i[..., i] * omega}[ridge]
        sigma = dif.transpose(-1, -2) @ (wi[..., None] * dif) + reg[..., None, None] * eye
        rho = _solve(sigma, mu[..., None], lam_i)[..., 0]
        delta = omega + delta_sign * (mu * rho).sum(-1)
        a = wi * (1 + sign * (dif @ rho[..., None])[..., 0]) / delta[..., None]
        rows.append((a[..., None, :] @ v[..., : i + 1, :])[..., 0, :])
    return torch.stack(rows, -2)


def _attention(**knobs: object):  # type: ignore[no-untyped-def]
    def fn(q: Tensor, k: Tensor, v: Tensor, lam: float | Tensor, scale: float | None = None) -> Tensor:
        return _fit(ref.causal_weights(q, k, scale), q, k, v, lam, **knobs)  # type: ignore[arg-type]

    return fn


def intercept_penalised(q: Tensor, k: Tensor, v: Tensor, lam: float | Tensor, scale: float | None = None) -> Tensor:
    """Ridge on the whole coefficient vector ``[b, W]``, intercept included: penalty ``lam I_{D+1}``."""
    s = ref.causal_weights(q, k, scale)
    s = s / s.sum(-1, keepdim=True)
    t, d = q.shape[-2], q.shape[-1]
    lam_i = ref.lam_per_query(lam, q.shape[:-2], t, q)
    rows = []
    eye = torch.eye(d + 1, dtype=q.dtype, device=q.device)
    for i in range(t):
        xi = k[..., : i + 1, :] - q[..., i, None, :]
        xi = torch.cat([torch.ones_like(xi[..., :1]), xi], -1)  # (..., i+1, D+1)
        si = s[..., i, : i + 1, None]
        gram = xi.transpose(-1, -2) @ (si * xi) + lam_i[..., i, None, None] * eye
        beta = _solve(gram, xi.transpose(-1, -2) @ (si * v[..., : i + 1, :]), lam_i)
        rows.append(beta[..., 0, :])
    return torch.stack(rows, -2)


def scale_or_default(q: Tensor, k: Tensor, v: Tensor, lam: float | Tensor, scale: float | None = None) -> Tensor:
    """``tau = scale or 1/sqrt(D)``: a falsy ``scale=0.0`` silently becomes the default."""
    return ref.local_linear_attention(q, k, v, lam, scale or 1.0 / math.sqrt(q.shape[-1]))


def uniform_limit_is_mesanet(
    q: Tensor, k: Tensor, v: Tensor, lam: float | Tensor, scale: float | None = None
) -> Tensor:
    """Treats the uniform-weight limit as MesaNet (no intercept, unnormalised sums)."""
    if scale == 0.0:
        return ref.mesanet_attention(q, k, v, lam)
    return ref.local_linear_attention(q, k, v, lam, scale)


def mask_off_by_one(q: Tensor, k: Tensor, v: Tensor, lam: float | Tensor, scale: float | None = None) -> Tensor:
    """The causal mask one column too wide: query ``i`` also sees key ``i + 1``."""
    tau = ref.default_scale(q.shape[-1], scale)
    t = q.shape[-2]
    logits = (tau * (q @ k.transpose(-1, -2))).masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(1), ref.NEG_INF)
    w = torch.exp(logits - logits.amax(-1, keepdim=True))
    rows = []
    lam_i = ref.lam_per_query(lam, q.shape[:-2], t, q)
    for i in range(t):
        n = min(i + 2, t)
        a = ref.local_linear_weights(w[..., i, :n], k[..., :n, :], q[..., i, :], lam_i[..., i])
        rows.append((a[..., None, :] @ v[..., :n, :])[..., 0, :])
    return torch.stack(rows, -2)


# Denominator subject: fn(q, k, lam) -> delta / omega, (..., T)


def delta_plus(q: Tensor, k: Tensor, lam: float | Tensor, scale: float | None = None) -> Tensor:
    """``delta = omega + mu.rho``: the sign of the Schur complement flipped (``(omega + mu.rho)/omega = 2 - r``)."""
    return 2 - ref.normalised_denominator(q, k, lam, scale)


def delta_unnormalised(q: Tensor, k: Tensor, lam: float | Tensor, scale: float | None = None) -> Tensor:
    """Returns ``delta`` itself, mixing the unnormalised ``w`` with the normalised ``s``."""
    omega = ref.causal_weights(q, k, scale).sum(-1)
    return ref.normalised_denominator(q, k, lam, scale) * omega


# Fit subject: fn(w, q, k, v, lam) -> o, weights given


def fit_lam_raw(w: Tensor, q: Tensor, k: Tensor, v: Tensor, lam: float | Tensor) -> Tensor:
    """``Sigma = sum_j w_j d_j d_j^T + lam I``: the ridge not scaled by ``omega``."""
    return _fit(w, q, k, v, lam, ridge="lam")


LAM_RAW = Mutant(
    "lam_not_scaled_by_omega",
    "Sigma gets lam I instead of lam omega I, so the ridge depends on the scale of the weights",
    _attention(ridge="lam"),
)
HALF_LOSS = Mutant(
    "half_on_the_loss",
    "the objective written with 1/2 on the loss and not on the penalty: the ridge is 2 lam",
    _attention(ridge="2lam*omega"),
)
INTERCEPT_PENALISED = Mutant(
    "intercept_penalised",
    "the ridge penalises the intercept b as well as W (penalty lam I_(D+1))",
    intercept_penalised,
)
CENTRED_AT_KEY = Mutant(
    "centred_at_key",
    "the local fit is expanded around k_i (the key at the query's position) instead of q_i",
    _attention(centre="key"),
)
SIGN_FLIP = Mutant(
    "sign_flip_in_weights",
    "effective weights w_j (1 + rho.(k_j - q)) instead of (1 - rho.(k_j - q))",
    _attention(sign=1.0),
)
DELTA_SIGN = Mutant(
    "delta_sign",
    "delta = omega + mu.rho instead of omega - mu.rho",
    _attention(delta_sign=1.0),
)
SCALE_OR_DEFAULT = Mutant("scale_or_default", "tau = scale or 1/sqrt(D): scale=0.0 is ignored", scale_or_default)
UNIFORM_IS_MESANET = Mutant(
    "uniform_limit_is_mesanet",
    "with scale=0 returns MesaNet's read-out (no intercept), as if the uniform limit were MesaNet",
    uniform_limit_is_mesanet,
)
MASK_OFF_BY_ONE = Mutant("mask_off_by_one", "the causal mask includes key i + 1", mask_off_by_one)
DENOM_PLUS = Mutant("delta_plus", "delta = omega + mu.rho (denominator subject)", delta_plus)
DENOM_UNNORMALISED = Mutant("delta_unnormalised", "returns delta, not delta / omega", delta_unnormalised)
FIT_LAM_RAW = Mutant(
    "fit_lam_not_scaled_by_omega",
    "given weights, Sigma gets lam I instead of lam omega I: rescaling a row of w changes the output",
    fit_lam_raw,
)
