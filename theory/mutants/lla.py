"""Planted bugs for the LLA claims: small, realistic wrong implementations (book/lla.md, "The mutants").

Each mutant has the signature of the subject it replaces; every claim that lists it must reject it
with a numeric finding (``tests/test_claims.py``).  Most are one-token slips in the closed form of
arXiv 2510.01450 §3; the others are the classic mistakes of a blockwise kernel.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnverify.fast import lla as fl
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


# ---------------------------------------------------------------------------
# Blockwise kernel: fn(q, k, v, lam, block_size=None) -> o, built from the fast path's own pieces
# ---------------------------------------------------------------------------


def _blockwise(q: Tensor, k: Tensor, v: Tensor, lam: float | Tensor, block_size: int | None, bug: str) -> Tensor:
    """The fast forward with one planted bug: ``"no_rescale"`` (pass A never rescales omega, mut when the max
    grows) or ``"stale_max"`` (the solve and pass B use the max of the first key tile, not the final one)."""
    b, h, t, d = q.shape
    plan = fl._Plan(1 / math.sqrt(d), "direct", d, block_size or fl.BLOCK_SIZE, 1e-14)
    qf, kf, vf = (x.reshape(b * h, t, x.shape[-1]) for x in (q, k, v))
    lam_f = ref.lam_per_query(lam, q.shape[:-2], t, q).reshape(b * h, t)
    out = []
    for i0 in range(0, t, plan.block):
        qt = qf[:, i0 : i0 + plan.block]
        if bug == "no_rescale":
            logits = [
                (plan.tau * qt @ kf[:, j0 : j0 + plan.block].transpose(-1, -2)).masked_fill(
                    torch.arange(j0, j0 + kf[:, j0 : j0 + plan.block].shape[1])[None, :]
                    > torch.arange(i0, i0 + qt.shape[1])[:, None],
                    ref.NEG_INF,
                )
                for j0 in range(0, i0 + qt.shape[1], plan.block)
            ]
            m = torch.stack([x.amax(-1) for x in logits]).amax(0)  # the right max, but sums never rescaled:
            omega = sum(torch.exp(x - x.amax(-1, keepdim=True)).sum(-1) for x in logits)  # each tile at its own max
            mut = sum(
                torch.exp(x - x.amax(-1, keepdim=True)) @ kf[:, j : j + plan.block]
                for x, j in zip(logits, range(0, t, plan.block), strict=False)
            )
        else:
            m, omega, mut = fl._pass_a(qt, kf, i0, plan)
            first = (plan.tau * qt @ kf[:, : plan.block].transpose(-1, -2)).masked_fill(
                torch.arange(kf[:, : plan.block].shape[1])[None, :] > torch.arange(i0, i0 + qt.shape[1])[:, None],
                ref.NEG_INF,
            )
            m = first.amax(-1)
        rows = fl._Rows(qt, m, omega, mut, lam_f[:, i0 : i0 + plan.block], i0)  # type: ignore[arg-type]
        rho = fl._direct(rows, kf, rows.mu, plan)[0]
        delta = rows.omega - (rows.mu * rho).sum(-1)
        acc = 0
        for j0 in range(0, i0 + qt.shape[1], plan.block):
            w = fl._weights(qt, kf[:, j0 : j0 + plan.block], m, i0, j0, plan.tau)
            rd = rho @ kf[:, j0 : j0 + plan.block].transpose(-1, -2) - (rho * qt).sum(-1, keepdim=True)
            acc = acc + (w * (1 - rd)) @ vf[:, j0 : j0 + plan.block]
        out.append(acc / delta[..., None])
    return torch.cat(out, 1).reshape(b, h, t, v.shape[-1])


def no_rescale(q: Tensor, k: Tensor, v: Tensor, lam: float | Tensor, block_size: int | None = None) -> Tensor:
    return _blockwise(q, k, v, lam, block_size, "no_rescale")


def stale_max(q: Tensor, k: Tensor, v: Tensor, lam: float | Tensor, block_size: int | None = None) -> Tensor:
    return _blockwise(q, k, v, lam, block_size, "stale_max")


# ---------------------------------------------------------------------------
# Solve subject: fn(q, k, lam, cg_iters=None) -> rho, (B, H, T, D)
# ---------------------------------------------------------------------------


def _cg_rho(q: Tensor, k: Tensor, lam: float | Tensor, cg_iters: int | None, bug: str) -> Tensor:
    """Conjugate gradients on ``Sigma rho = mu`` with one planted bug: ``"missing_term"`` (``Sigma p`` without
    ``omega (p.q) q``), ``"few_iters"`` (2 iterations whatever is asked, reported as exact) or ``"no_stop_mask"``
    (every row iterates on after converging: ``0/0``)."""
    b, h, t, d = q.shape
    plan = fl._Plan(1 / math.sqrt(d), "cg", 2 if bug == "few_iters" else (cg_iters or d), fl.BLOCK_SIZE, 1e-14)
    qf, kf = (x.reshape(b * h, t, d) for x in (q, k))
    lam_f = ref.lam_per_query(lam, q.shape[:-2], t, q).reshape(b * h, t)
    rows = fl._Rows(qf, *fl._pass_a(qf, kf, 0, plan), lam_f, 0)
    if bug == "few_iters":
        return fl._cg(rows, kf, rows.mu, plan)[0].reshape(b, h, t, d)
    x, r = torch.zeros_like(rows.mu), rows.mu.clone()
    p, rs = r.clone(), (r * r).sum(-1)
    for _ in range(plan.iters):
        sp = fl._sigma_times(rows, kf, p, plan)
        if bug == "missing_term":
            sp = sp - rows.omega[..., None] * (p * qf).sum(-1, keepdim=True) * qf
        alpha = rs / (p * sp).sum(-1)
        x, r = x + alpha[..., None] * p, r - alpha[..., None] * sp
        rs_new = (r * r).sum(-1)
        p, rs = r + (rs_new / rs)[..., None] * p, rs_new
    return x.reshape(b, h, t, d)


def missing_sigma_term(q: Tensor, k: Tensor, lam: float | Tensor, cg_iters: int | None = None) -> Tensor:
    return _cg_rho(q, k, lam, cg_iters, "missing_term")


def few_cg_iters(q: Tensor, k: Tensor, lam: float | Tensor, cg_iters: int | None = None) -> Tensor:
    return _cg_rho(q, k, lam, cg_iters, "few_iters")


def no_stop_mask(q: Tensor, k: Tensor, lam: float | Tensor, cg_iters: int | None = None) -> Tensor:
    return _cg_rho(q, k, lam, cg_iters, "no_stop_mask")


NO_RESCALE = Mutant(
    "online_max_not_rescaled",
    "pass A sums each key tile at its own max and never rescales omega and sum w k when the max grows",
    no_rescale,
)
STALE_MAX = Mutant(
    "stale_max_across_passes",
    "the solve and pass B use the max of the first key tile instead of the final running max",
    stale_max,
)
MISSING_TERM = Mutant(
    "sigma_p_missing_term",
    "the matrix-free Sigma p omits omega (p.q) q, so CG solves another system",
    missing_sigma_term,
)
FEW_ITERS = Mutant(
    "too_few_cg_iterations",
    "two CG iterations whatever cg_iters says, the result treated as exact",
    few_cg_iters,
)
NO_STOP_MASK = Mutant(
    "no_stop_mask",
    "CG without a per-row stop mask: a row that has converged divides 0 by 0 on the next iteration",
    no_stop_mask,
)


# ---------------------------------------------------------------------------
# Smoother subject: fn(w (..., n), keys (..., n, D), query (..., D), lam) -> effective weights (..., n)
# ---------------------------------------------------------------------------


def local_constant(w: Tensor, keys: Tensor, query: Tensor, lam: float | Tensor) -> Tensor:
    """Drops the slope correction: the softmax (Nadaraya–Watson) weights ``w / omega``."""
    return w / w.sum(-1, keepdim=True)


def smoother_sign_flip(w: Tensor, keys: Tensor, query: Tensor, lam: float | Tensor) -> Tensor:
    """Effective weights ``w_j (1 + rho.(k_j - q)) / (omega + mu.rho)``: the correction with the wrong sign."""
    d = keys - query[..., None, :]
    mu = (w[..., None] * d).sum(-2)
    sigma = d.transpose(-1, -2) @ (w[..., None] * d)
    rho = (torch.linalg.pinv(sigma, hermitian=True) @ mu[..., None])[..., 0]
    return w * (1 + (d @ rho[..., None])[..., 0]) / (w.sum(-1) + (mu * rho).sum(-1))[..., None]


def ignores_kernel(w: Tensor, keys: Tensor, query: Tensor, lam: float | Tensor) -> Tensor:
    """Fits with uniform weights whatever the kernel says: the global affine fit."""
    return ref.local_linear_weights(torch.ones_like(w), keys, query, lam)


LOCAL_CONSTANT = Mutant(
    "local_constant", "returns the softmax weights: the slope correction is dropped", local_constant
)
SMOOTHER_SIGN_FLIP = Mutant(
    "smoother_sign_flip", "the local linear correction added with the wrong sign", smoother_sign_flip
)
IGNORES_KERNEL = Mutant("ignores_kernel", "uniform weights instead of the kernel's: a global fit", ignores_kernel)
