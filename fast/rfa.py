"""Random-feature attention (Fu et al., arXiv 2307.11353): fast features and the limit-kernel Gram.

:func:`random_feature_attention_features` computes the head features of book/rfa.md ("The model")
query-first, in three batched products and no Python loop over heads:

1. ``Q = x~0 W_flat`` with ``W`` reshaped to ``(D, M D)``: one GEMM, ``q_{bm} = W_mᵀ x~0``;
2. ``S_{bmi} = <q_{bm}, x~i>``: a batched ``(M x D)(D x N)`` product per row;
3. ``phi_{bm} = (1/N) sigma(S_{bm})ᵀ X~_b``: a batched ``(M x N)(N x D)`` product per row.

That is about ``2 n M D (D + 2N)`` flops; contracting the keys first would cost ``2 n N M D^2``.
Heads are processed in chunks so that the scores of one chunk stay within a memory budget.
:func:`limit_kernel_gram` evaluates the many-head limit kernel for every pair of two input sets:
an ``N x N`` product of key inner products per pair, then the moment ``kappa`` elementwise on
cache-sized row blocks, with the bivariate normal CDF of Genz's algorithm: each entry gets only
the formula its ``|rho|`` band needs (Gauss-Legendre in ``arcsin rho`` with 6, 12 or 20 nodes, or a
series plus quadrature for ``|rho| >= 0.925``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attnverify.fast._dispatch import (
    accumulation_dtype,
    require_float,
    require_same,
    require_tensor,
    select_backend,
)

ACTIVATIONS = ("relu", "exp")
MEANS = ("zero", "biased")
CHUNK_BYTES = 8 * 2**20
"""Budget for one head chunk's scores and features (``n M_c (D + N)`` numbers).  Small enough that a chunk's
scores stay close to the cache: on a CPU at ``n = 2000, N = 64, d = 8, M = 1000`` 8 MB ran about twice as fast
as 64 MB."""
GRAM_CHUNK = 2**17
"""Entries ``(row, column, i, j)`` of the limit-kernel Gram evaluated together (whole rows): each of the
elementwise passes of the moment then runs over data that stays in cache (about 2.5x faster than one pass
over a 200 x 200 x 16 x 16 Gram on a CPU), and memory stays bounded."""


def _augment(x: Tensor) -> Tensor:
    return torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)


def _check_tokens(x0: object, X: object) -> tuple[Tensor, Tensor]:
    x0, X = require_tensor("x0", x0), require_tensor("X", X)
    require_float("x0", x0)
    require_same(("x0", "X"), x0, X)
    if x0.dim() != 2:
        raise ValueError(f"x0: expected shape (n, d), got {tuple(x0.shape)}")
    if X.dim() != 3 or X.shape[0] != x0.shape[0] or X.shape[2] != x0.shape[1]:
        raise ValueError(f"X: expected shape (n, N, d) = ({x0.shape[0]}, N, {x0.shape[1]}), got {tuple(X.shape)}")
    if X.shape[1] < 1:
        raise ValueError("X: expected at least one key (N >= 1)")
    return x0, X


def random_feature_attention_features(
    x0: Tensor,
    X: Tensor,
    W: Tensor,
    activation: str = "relu",
    *,
    chunk_heads: int | None = None,
    backend: str | None = None,
) -> Tensor:
    """Head features ``(n, M*D)``, head-major: block ``m`` is ``(1/N) sum_i sigma(x~0ᵀ W_m x~i) x~i``.

    The layer of arXiv 2307.11353, Sec. 2, in the formulation of book/rfa.md.

    ``x0: (n, d)`` queries, ``X: (n, N, d)`` keys, ``W: (M, D, D)`` with ``D = d + 1`` (tokens are
    augmented ``[x; 1]``).  float16/bfloat16 accumulate in float32.  Differentiable in all three
    inputs.  ``chunk_heads`` overrides the number of heads per chunk (default: from :data:`CHUNK_BYTES`).
    ``backend``: ``None`` (Triton on CUDA, torch elsewhere), ``"torch"`` or ``"triton"`` (CUDA, or the
    CPU under ``TRITON_INTERPRET=1``); the Triton path never stores the scores and differentiates
    through the torch path.
    """
    x0, X = _check_tokens(x0, X)
    W = require_tensor("W", W)
    require_same(("x0", "W"), x0, W)
    D = X.shape[2] + 1
    if W.dim() != 3 or W.shape[1:] != (D, D):
        raise ValueError(f"W: expected shape (M, D, D) with D = d + 1 = {D}, got {tuple(W.shape)}")
    M = W.shape[0]
    if M < 1:
        raise ValueError("W: expected at least one head (M >= 1)")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    if chunk_heads is not None and not (isinstance(chunk_heads, int) and chunk_heads >= 1):
        raise ValueError(f"chunk_heads: expected a positive int, got {chunk_heads!r}")
    if backend not in (None, "torch", "triton"):
        raise ValueError(f"backend: expected None, 'torch' or 'triton', got {backend!r}")
    if select_backend(backend, x0.device) == "triton":
        return _TritonFeatures.apply(x0, X, W, activation)
    return _torch_features(x0, X, W, activation, chunk_heads)


def _torch_features(x0: Tensor, X: Tensor, W: Tensor, activation: str, chunk_heads: int | None) -> Tensor:
    """The query-first batched products, head chunk by head chunk (module docstring)."""
    n, N, d = X.shape
    D, M = d + 1, W.shape[0]
    acc = accumulation_dtype(x0.dtype)
    xt0, Xt, Wa = _augment(x0.to(acc)), _augment(X.to(acc)), W.to(acc)
    XtT = Xt.transpose(1, 2)  # (n, D, N)
    step = chunk_heads or max(1, CHUNK_BYTES // max(1, n * (D + N) * Xt.element_size()))
    out = torch.empty((n, M * D), dtype=acc, device=x0.device)
    for h0 in range(0, M, step):
        Wc = Wa[h0 : h0 + step]
        Mc = Wc.shape[0]
        q = (xt0 @ Wc.permute(1, 0, 2).reshape(D, Mc * D)).view(n, Mc, D)  # q_{bm} = W_mᵀ x~0
        s = torch.bmm(q, XtT)  # (n, Mc, N) scores
        s = torch.relu(s) if activation == "relu" else torch.exp(s)
        out[:, h0 * D : (h0 + Mc) * D] = (torch.bmm(s, Xt) / N).reshape(n, Mc * D)
    return out.to(x0.dtype)


class _TritonFeatures(torch.autograd.Function):
    """Forward: the Triton kernel (``fast/triton/rfa.py``); backward: autograd of the torch path."""

    @staticmethod
    def forward(ctx: Any, x0: Tensor, X: Tensor, W: Tensor, activation: str) -> Tensor:
        from attnverify.fast.triton.rfa import triton_features

        ctx.activation = activation
        ctx.save_for_backward(x0, X, W)
        return triton_features(x0, X, W, activation)

    @staticmethod
    def backward(ctx: Any, d_out: Tensor) -> tuple[Tensor | None, ...]:
        inputs = [t.detach().requires_grad_() for t in ctx.saved_tensors]
        with torch.enable_grad():
            out = _torch_features(*inputs, ctx.activation, None)
        grads = torch.autograd.grad(out, inputs, d_out, allow_unused=True)
        return (*grads, None)


# ---------------------------------------------------------------------------
# Limit-kernel Gram
# ---------------------------------------------------------------------------

_GL_RULES = tuple((bound, np.polynomial.legendre.leggauss(n)) for bound, n in ((0.3, 6), (0.75, 12), (0.925, 20)))
"""Genz's Gauss-Legendre rule per band of ``|rho|``: 6 nodes below 0.3, 12 below 0.75, 20 below 0.925."""
_GL_RULES_F32 = tuple((bound, np.polynomial.legendre.leggauss(n)) for bound, n in ((0.75, 6), (0.925, 12)))
"""Below float64: 6 nodes up to 0.75, 12 up to 0.925 (absolute errors below 2e-9 and 3e-11, under float32's
rounding of a probability; measured against scipy in the tests)."""
_SQRT2 = math.sqrt(2.0)
_TWO_PI = 2 * math.pi


def _ncdf(x: Tensor) -> Tensor:
    return 0.5 * torch.erfc(-x / _SQRT2)


def _npdf(x: Tensor) -> Tensor:
    return torch.exp(-0.5 * x * x) / math.sqrt(_TWO_PI)


def _upper_bvn_low(h: Tensor, k: Tensor, r: Tensor, nodes: np.ndarray, weights: np.ndarray) -> Tensor:
    """``|r| < 0.925``: ``Phi(-h) Phi(-k) + (1/2pi) int_0^{asin r} exp(-(h^2 + k^2 - 2hk sin th) / (2 cos^2 th)) dth``
    by the Gauss-Legendre rule ``nodes``, ``weights`` on ``[-1, 1]``."""
    t = torch.as_tensor(1 + nodes, dtype=h.dtype, device=h.device)
    w = torch.as_tensor(weights, dtype=h.dtype, device=h.device)
    half = torch.asin(r) / 2
    sn = torch.sin(half[:, None] * t)  # sin th at the nodes
    exponent = torch.addcmul(((h * h + k * k) / -2)[:, None], sn, (h * k)[:, None])
    quad = torch.exp(exponent / torch.addcmul(torch.ones_like(sn[:1]), sn, sn, value=-1)) @ w
    return quad * half / _TWO_PI + _ncdf(-h) * _ncdf(-k)


def _upper_bvn_high(h: Tensor, k: Tensor, r: Tensor) -> Tensor:
    """``|r| >= 0.925``: a series in ``1 - r^2`` plus a 20-node quadrature of what it misses (Genz 2004)."""
    t = torch.as_tensor(_GL_RULES[-1][1][0], dtype=h.dtype, device=h.device)  # 20 nodes whatever the dtype
    w = torch.as_tensor(_GL_RULES[-1][1][1], dtype=h.dtype, device=h.device)
    neg = r < 0
    kk = torch.where(neg, -k, k)
    hk = torch.where(neg, -h * k, h * k)
    a2 = (1 - r * r).clamp_min(0)
    a = a2.sqrt()
    bs = (h - kk) ** 2
    c = (4 - hk) / 8
    dd = (12 - hk) / 80
    e1 = -(bs / a2.clamp_min(1e-300) + hk) / 2
    high = torch.where(e1 > -100, a * torch.exp(e1) * (1 - c * (bs - a2) * (1 - dd * bs) / 3 + c * dd * a2 * a2), 0.0)
    b = bs.sqrt()
    sp = math.sqrt(_TWO_PI) * _ncdf(-b / a.clamp_min(1e-300))
    high = high - torch.where(hk > -100, torch.exp(-hk / 2) * sp * b * (1 - c * bs * (1 - dd * bs) / 3), 0.0)
    xs = ((a / 2)[:, None] * (1 + t)) ** 2
    e2 = -(bs[:, None] / xs.clamp_min(1e-300) + hk[:, None]) / 2
    rs = (1 - xs).sqrt()
    ep = torch.exp(-(hk[:, None] / 2) * xs / (1 + rs) ** 2) / rs
    sp2 = 1 + c[:, None] * xs * (1 + 5 * dd[:, None] * xs)
    terms = torch.where(e2 > -100, torch.exp(e2) * (sp2 - ep), 0.0)
    high = ((a / 2) * (terms * w).sum(-1) - high) / _TWO_PI
    high = torch.where(a2 > 0, high, torch.zeros_like(high))
    pos = high + _ncdf(-torch.maximum(h, kk))
    span = torch.where(h < 0, _ncdf(kk) - _ncdf(h), _ncdf(-h) - _ncdf(-kk))
    return torch.where(neg, torch.where(h >= kk, -high, span - high), pos)


def _upper_bvn(h: Tensor, k: Tensor, r: Tensor) -> Tensor:
    """``P(Z1 > h, Z2 > k)`` for standard normals with correlation ``r`` (Genz 2004, "bvnu"), elementwise.

    Each entry is evaluated by the one formula its ``|r|`` band needs (gathered, computed, scattered back).
    """
    h, k, r = torch.broadcast_tensors(h, k, r)
    shape = h.shape
    h, k, r = h.reshape(-1), k.reshape(-1), r.reshape(-1)
    rules = _GL_RULES if h.dtype == torch.float64 else _GL_RULES_F32
    bounds = torch.tensor([bound for bound, _ in rules], dtype=r.dtype, device=r.device)
    band = torch.bucketize(r.abs(), bounds, right=True)  # the rules in order; the last band: |r| >= 0.925
    out = torch.zeros_like(h)
    for i in range(len(rules) + 1):
        idx = (band == i).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        hi, ki, ri = h[idx], k[idx], r[idx]
        vals = _upper_bvn_low(hi, ki, ri, *rules[i][1]) if i < len(rules) else _upper_bvn_high(hi, ki, ri)
        out = out.index_put((idx,), vals)
    return out.clamp(0, 1).reshape(shape)


def bivariate_normal_cdf(h: Tensor, k: Tensor, rho: Tensor) -> Tensor:
    """``Phi_2(h, k; rho) = P(Z1 <= h, Z2 <= k)``, elementwise, accurate to about 1e-15 in float64."""
    return _upper_bvn(-h, -k, rho.clamp(-1, 1))


def _kappa(a: Tensor, b: Tensor, eta2: Tensor, etap2: Tensor, c: Tensor, mean: str, activation: str) -> Tensor:
    if activation == "exp":
        return torch.exp(a + b + 0.5 * (eta2 + etap2 + 2 * c))
    eta, etap = eta2.sqrt(), etap2.sqrt()
    rho = (c / (eta * etap)).clamp(-1, 1)
    q2 = 1 - rho * rho
    if mean == "zero":  # arc-cosine: eta eta' (sqrt(1 - rho^2) + (pi - arccos rho) rho) / (2 pi)
        return eta * etap * (q2.clamp_min(0).sqrt() + (math.pi - torch.acos(rho)) * rho) / _TWO_PI
    alpha, beta = a / eta, b / etap
    ee = eta * etap
    degenerate = q2 <= 0
    q2 = torch.where(degenerate, torch.ones_like(q2), q2)
    q = q2.sqrt()
    m2 = (alpha * alpha + beta * beta - 2 * rho * (alpha * beta)).clamp_min(0) / q2
    general = (
        torch.addcmul(a * b, rho, ee) * bivariate_normal_cdf(alpha, beta, rho)
        + (a * etap * _npdf(beta)) * _ncdf((alpha - rho * beta) / q)
        + (b * eta * _npdf(alpha)) * _ncdf((beta - rho * alpha) / q)
        + ee * q * torch.exp(-0.5 * m2) / _TWO_PI
    )
    idx = degenerate.nonzero(as_tuple=True)  # rho = 1: comonotone scores (rare: equal key pairs of equal queries)
    if idx[0].numel():
        at, bt, et, ept = (torch.broadcast_to(x, general.shape)[idx] for x in (a, b, eta, etap))
        t = torch.minimum(at / et, bt / ept)
        comonotone = (at * bt + et * ept) * _ncdf(t) + (at * ept + bt * et - et * ept * t) * _npdf(t)
        general = general.index_put(idx, comonotone)
    return general


def limit_kernel_gram(
    x0: Tensor,
    X: Tensor,
    x0p: Tensor,
    Xp: Tensor,
    s2: float = 0.25,
    mean: str = "zero",
    activation: str = "relu",
) -> Tensor:
    """``(n, n')`` Gram of the many-head limit kernel ``K(X_a, X'_b) = (1/N^2) sum_ij <x~i, x~'j> kappa_ij``.

    The closed forms are derived in book/rfa.md ("The limit kernel").

    ``W_m = W0 + s G_m``, ``W0`` zero or ``diag(I_d, 0)`` (``mean="biased"``); ``kappa`` is the
    arc-cosine, bivariate-normal or lognormal moment.  Costs ``O(n n' N^2 D)``.
    """
    x0, X = _check_tokens(x0, X)
    x0p, Xp = _check_tokens(require_tensor("x0p", x0p), require_tensor("Xp", Xp))
    require_same(("x0", "x0p"), x0, x0p)
    if Xp.shape[1:] != X.shape[1:]:
        raise ValueError(f"Xp: expected (n', N, d) with N, d = {tuple(X.shape[1:])}, got {tuple(Xp.shape)}")
    if not (isinstance(s2, int | float) and s2 > 0):
        raise ValueError(f"s2: expected a positive variance, got {s2!r}")
    if mean not in MEANS:
        raise ValueError(f"mean: expected one of {MEANS}, got {mean!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    acc = accumulation_dtype(x0.dtype)
    N = X.shape[1]
    xt0, Xt, xt0p, Xtp = (_augment(t.to(acc)) for t in (x0, X, x0p, Xp))
    eta2 = s2 * ((xt0 * xt0).sum(-1)[:, None] * (Xt * Xt).sum(-1))[:, None, :, None]  # (n, 1, N, 1)
    etap2 = s2 * ((xt0p * xt0p).sum(-1)[:, None] * (Xtp * Xtp).sum(-1))[None, :, None, :]  # (1, n', 1, N)
    if mean == "biased":  # W0 = diag(I_d, 0): mean score <x0, xi>
        a = torch.einsum("ak,aik->ai", x0.to(acc), X.to(acc))[:, None, :, None]
        b = torch.einsum("bk,bjk->bj", x0p.to(acc), Xp.to(acc))[None, :, None, :]
    else:
        a = b = torch.zeros((1, 1, 1, 1), dtype=acc, device=x0.device)
    rows = max(1, GRAM_CHUNK // max(1, Xp.shape[0] * N * N))
    blocks = []
    for r0 in range(0, X.shape[0], rows):
        sl = slice(r0, r0 + rows)
        keys = torch.einsum("aik,bjk->abij", Xt[sl], Xtp)  # (rows, n', N, N) key inner products
        queries = (xt0[sl] @ xt0p.T)[:, :, None, None]  # (rows, n', 1, 1)
        a_r = a[sl] if a.shape[0] > 1 else a
        kappa = _kappa(a_r, b, eta2[sl], etap2, s2 * queries * keys, mean, activation)
        blocks.append((keys * kappa).sum((-2, -1)))
    return (torch.cat(blocks) / N**2).to(x0.dtype)
