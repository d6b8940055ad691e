"""Fast local linear attention (LLA, arXiv 2510.01450): a blockwise forward and an analytic backward.

Public API: :func:`local_linear_attention`.  Per head, queries are processed in tiles of ``Bq`` rows and
keys streamed in tiles of ``Bk`` columns (``block_size`` sets both; by default ``Bk = 64`` and ``Bq = 256``
for CG, 64 for the direct solver); the extra memory is ``O(T D)`` per head plus ``O(Bq Bk + Bq D)`` per tile
(``Bq D^2`` for the direct solver): no ``T x T x D`` or ``T x D x D`` tensor is ever formed (book/lla.md,
"The kernel").

Per query tile:

* pass A streams the causal key tiles with an online max ``m``, rescaling ``omega`` and
  ``mut = sum_j w_ij k_j`` when ``m`` grows; then ``mu = mut - omega q`` (the relative matmul:
  ``x.(k_j - q_i) = (x K^T)_j - x.q_i``);
* the solve ``Sigma rho = mu``: matrix-free conjugate gradients, each product
  ``Sigma p = sum_j w_ij (p.k_j) k_j - (p.q) mut - (p.mut) q + omega (p.q) q + lam omega p`` re-streaming the
  key tiles with the *final* ``m``, with a per-row stop mask; or (``solver="direct"``) a streamed
  ``sum_j w_ij k_j k_j^T`` and a batched Cholesky solve;
* pass B streams key/value tiles: ``o_i = sum_j w_ij (1 - rho.k_j + rho.q_i) v_j / delta_i``,
  ``delta_i = omega_i - mu_i.rho_i``.

The backward solves one adjoint system ``Sigma u = t`` with the same solver (book/lla.md, "The backward").

Triton (``backend="triton"``, the default on CUDA): pass A, every product with ``Sigma`` (or the streamed
Gram sum of ``solver="direct"``) and pass B are the kernels of ``fast/triton/lla.py``; for CG the query tile
is the whole sequence.  What stays torch touches no key stream: the CG vector updates, ``O(T D)`` per
iteration, and the batched Cholesky of ``solver="direct"``, ``O(block D^3)`` per tile.  The backward is this
module's torch adjoint backward for both backends; with Triton its adjoint solve uses the kernels too.
Verified against ``attnverify.reference.lla`` (which this module never imports).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from attnverify.fast._dispatch import accumulation_dtype, require_float, require_same, require_tensor, select_backend

NEG_INF = float("-inf")
BLOCK_SIZE = 64
"""Default key tile (columns), and query tile (rows) of ``solver="direct"``, whose state is ``rows x D^2``."""
CG_QUERY_BLOCK = 256
"""Default query tile of ``solver="cg"``: each streamed key tile serves this many rows, so the key stream of
a long sequence is read ``T / 256`` times per pass, not ``T / 64`` (its cost per key would otherwise grow as
the stream outgrows the CPU caches).  An explicit ``block_size`` sets both tiles."""
SOLVERS = ("cg", "direct")


class ConvergenceWarning(UserWarning):
    """Conjugate gradients left rows above the convergence tolerance after ``cg_iters`` iterations."""


@dataclass(frozen=True)
class _Plan:
    tau: float
    solver: str
    iters: int
    block: int
    rtol: float
    triton: bool = False
    """Every stream over the keys by the Triton kernels of ``fast/triton/lla.py`` (pass A, the products with
    ``Sigma`` or the streamed Gram sum, pass B); the CG vector updates and the batched Cholesky stay torch."""

    query: int | None = None
    """Rows of a query tile (torch path, and Triton with ``solver="direct"``); ``None``: ``block``."""

    def query_block(self, t: int) -> int:
        """Rows per query tile: all ``T`` for Triton CG (its state is ``O(T D)``), else ``query``."""
        return t if self.triton and self.solver == "cg" else self.query or self.block


# ---------------------------------------------------------------------------
# Streaming helpers: one query tile, rows i0..i1, against causal key tiles
# ---------------------------------------------------------------------------


def _key_tiles(i1: int, block: int) -> range:
    return range(0, i1, block)


def _scores(qt: Tensor, kt: Tensor, i0: int, j0: int, tau: float) -> Tensor:
    """``tau q_i.k_j`` for the tile, ``-inf`` where ``j > i``: ``(R, Bq, Bk)``.  Only a tile that reaches past
    the diagonal is masked; the tiles below it are whole."""
    logits = tau * (qt @ kt.transpose(-1, -2))
    if j0 + kt.shape[-2] - 1 <= i0:
        return logits
    rows = torch.arange(i0, i0 + qt.shape[-2], device=qt.device)[:, None]
    cols = torch.arange(j0, j0 + kt.shape[-2], device=qt.device)[None, :]
    return logits.masked_fill(cols > rows, NEG_INF)


def _weights(qt: Tensor, kt: Tensor, m: Tensor, i0: int, j0: int, tau: float) -> Tensor:
    """``w_ij = exp(tau q_i.k_j - m_i)`` for the tile, 0 where ``j > i``: ``(R, Bq, Bk)``."""
    return torch.exp(_scores(qt, kt, i0, j0, tau) - m[..., None])


def _pass_a(qt: Tensor, k: Tensor, i0: int, plan: _Plan) -> tuple[Tensor, Tensor, Tensor]:
    """Online max ``m``, ``omega`` and ``mut = sum_j w_ij k_j`` of the tile's rows."""
    if plan.triton:
        from attnverify.fast.triton.lla import moments

        return moments(qt, k, plan.tau, i0, plan.block)
    r, bq, d = qt.shape
    i1 = i0 + bq
    m = torch.full((r, bq), NEG_INF, dtype=qt.dtype, device=qt.device)
    omega = torch.zeros((r, bq), dtype=qt.dtype, device=qt.device)
    mut = torch.zeros((r, bq, d), dtype=qt.dtype, device=qt.device)
    for j0 in _key_tiles(i1, plan.block):
        kt = k[:, j0 : j0 + plan.block]
        logits = _scores(qt, kt, i0, j0, plan.tau)
        m_new = torch.maximum(m, logits.amax(-1))
        alpha = torch.exp(m - m_new)  # 0 while m = -inf (the first tile always has a live key: j0 = 0)
        w = torch.exp(logits - m_new[..., None])
        omega = omega * alpha + w.sum(-1)
        mut = mut * alpha[..., None] + w @ kt
        m = m_new
    return m, omega, mut


def _gram(qt: Tensor, k: Tensor, m: Tensor, i0: int, plan: _Plan) -> Tensor:
    """``sum_j w_ij k_j k_j^T`` of the tile's rows with the final ``m``: ``(R, Bq, D, D)``."""
    if plan.triton:
        from attnverify.fast.triton.lla import gram

        return gram(qt, k, m, plan.tau, i0, plan.block)
    r, bq, d = qt.shape
    acc = torch.zeros((r, bq, d, d), dtype=qt.dtype, device=qt.device)
    for j0 in _key_tiles(i0 + bq, plan.block):
        kt = k[:, j0 : j0 + plan.block]
        w = _weights(qt, kt, m, i0, j0, plan.tau)
        acc += torch.einsum("rqk,rkd,rke->rqde", w, kt, kt)
    return acc


@dataclass
class _Rows:
    """Per-row state of a query tile: ``q, m, omega, mut, mu`` and ``lam`` (``(R, Bq[, D])``)."""

    q: Tensor
    m: Tensor
    omega: Tensor
    mut: Tensor
    lam: Tensor
    i0: int

    @property
    def mu(self) -> Tensor:
        return self.mut - self.omega[..., None] * self.q


def _sigma_times(rows: _Rows, k: Tensor, p: Tensor, plan: _Plan) -> Tensor:
    """Matrix-free ``Sigma_i p_i`` for every row (one stream over the causal key tiles)."""
    q, omega, mut = rows.q, rows.omega, rows.mut
    if plan.triton:
        from attnverify.fast.triton.lla import modulated_sum

        acc = modulated_sum(q, k, k, rows.m, torch.zeros_like(omega), p, plan.tau, rows.i0, plan.block)
    else:
        acc = torch.zeros_like(p)
        for j0 in _key_tiles(rows.i0 + q.shape[1], plan.block):
            kt = k[:, j0 : j0 + plan.block]
            w = _weights(q, kt, rows.m, rows.i0, j0, plan.tau)
            acc += (w * (p @ kt.transpose(-1, -2))) @ kt
    pq = (p * q).sum(-1, keepdim=True)
    pmut = (p * mut).sum(-1, keepdim=True)
    return acc - pq * mut - pmut * q + omega[..., None] * pq * q + (rows.lam * omega)[..., None] * p


def _cg(rows: _Rows, k: Tensor, rhs: Tensor, plan: _Plan) -> tuple[Tensor, Tensor]:
    """Conjugate gradients for ``Sigma x = rhs`` per row; returns ``x`` and the final relative residual.

    A row stops once ``|r| <= rtol |rhs|`` (the stop mask): its ``x`` and ``r`` are frozen and it never
    divides by a vanished ``p.Sigma p``.
    """
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rs = (r * r).sum(-1)
    target = (plan.rtol**2) * rs
    for _ in range(plan.iters):
        active = rs > target
        if not bool(active.any()):
            break
        sp = _sigma_times(rows, k, p, plan)
        curv = (p * sp).sum(-1)
        alpha = torch.where(active, rs / torch.where(active, curv, torch.ones_like(curv)), torch.zeros_like(rs))
        x = x + alpha[..., None] * p
        r = r - alpha[..., None] * sp
        rs_new = (r * r).sum(-1)
        beta = torch.where(active, rs_new / torch.where(active, rs, torch.ones_like(rs)), torch.zeros_like(rs))
        p = torch.where(active[..., None], r + beta[..., None] * p, p)
        rs = torch.where(active, rs_new, rs)
    scale = (rhs * rhs).sum(-1).sqrt()
    rel = torch.where(
        scale > 0, rs.sqrt() / torch.where(scale > 0, scale, torch.ones_like(scale)), torch.zeros_like(rs)
    )
    return x, rel


def _direct(rows: _Rows, k: Tensor, rhs: Tensor, plan: _Plan) -> tuple[Tensor, Tensor]:
    """``Sigma x = rhs`` by a batched solve of the streamed ``D x D`` systems; the residual is reported."""
    q, omega, mut = rows.q, rows.omega, rows.mut
    d = q.shape[-1]
    sigma = _gram(q, k, rows.m, rows.i0, plan)
    sigma = (
        sigma
        - q[..., :, None] * mut[..., None, :]
        - mut[..., :, None] * q[..., None, :]
        + omega[..., None, None] * q[..., :, None] * q[..., None, :]
        + (rows.lam * omega)[..., None, None] * torch.eye(d, dtype=q.dtype, device=q.device)
    )
    chol, info = torch.linalg.cholesky_ex(sigma)
    x = torch.cholesky_solve(rhs[..., None], chol)[..., 0]
    bad = info != 0
    if bool(bad.any()):  # not positive definite (lam = 0 and a singular local design): LU, NaN if singular
        lu = torch.linalg.solve_ex(sigma, rhs[..., None])[0][..., 0]
        x = torch.where(bad[..., None], lu, x)
    res = ((sigma @ x[..., None])[..., 0] - rhs).norm(dim=-1)
    scale = rhs.norm(dim=-1)
    return x, torch.where(scale > 0, res / torch.where(scale > 0, scale, torch.ones_like(scale)), torch.zeros_like(res))


def _solve(rows: _Rows, k: Tensor, rhs: Tensor, plan: _Plan, what: str) -> Tensor:
    x, rel = (_cg if plan.solver == "cg" else _direct)(rows, k, rhs, plan)
    unconverged = int((~(rel <= math.sqrt(plan.rtol))).sum())
    if unconverged:
        how = f"cg_iters={plan.iters}; raise cg_iters or lam" if plan.solver == "cg" else "singular or ill-conditioned"
        warnings.warn(
            f"local_linear_attention: {unconverged} row(s) of the {what} solve left a relative residual above "
            f"{math.sqrt(plan.rtol):.1e} (solver={plan.solver!r}, {how})",
            ConvergenceWarning,
            stacklevel=4,
        )
    return x


# ---------------------------------------------------------------------------
# Forward and backward over all query tiles
# ---------------------------------------------------------------------------


def _forward(q: Tensor, k: Tensor, v: Tensor, lam: Tensor, plan: _Plan) -> tuple[Tensor, ...]:
    """``q, k: (R, T, D)``, ``v: (R, T, Dv)``, ``lam: (R, T)`` -> ``o`` and the per-row ``m, omega, mut, rho``."""
    r, t, _ = q.shape
    o = torch.empty((r, t, v.shape[-1]), dtype=q.dtype, device=q.device)
    m_all, omega_all = torch.empty((r, t), dtype=q.dtype, device=q.device), torch.empty_like(lam)
    mut_all, rho_all = torch.empty_like(q), torch.empty_like(q)
    qblock = plan.query_block(t)
    for i0 in range(0, t, qblock):
        sl = slice(i0, i0 + qblock)
        qt = q[:, sl]
        m, omega, mut = _pass_a(qt, k, i0, plan)
        rows = _Rows(qt, m, omega, mut, lam[:, sl], i0)
        mu = rows.mu
        rho = _solve(rows, k, mu, plan, "forward")
        delta = omega - (mu * rho).sum(-1)
        rq = (rho * qt).sum(-1, keepdim=True)
        if plan.triton:
            from attnverify.fast.triton.lla import modulated_sum

            acc = modulated_sum(qt, k, v, m, 1 + rq[..., 0], -rho, plan.tau, i0, plan.block)
        else:
            acc = torch.zeros((r, qt.shape[1], v.shape[-1]), dtype=q.dtype, device=q.device)
            for j0 in _key_tiles(i0 + qt.shape[1], plan.block):
                kt, vt = k[:, j0 : j0 + plan.block], v[:, j0 : j0 + plan.block]
                w = _weights(qt, kt, m, i0, j0, plan.tau)
                acc += (w * (1 - rho @ kt.transpose(-1, -2) + rq)) @ vt
        o[:, sl] = acc / delta[..., None]
        m_all[:, sl], omega_all[:, sl], mut_all[:, sl], rho_all[:, sl] = m, omega, mut, rho
    return o, m_all, omega_all, mut_all, rho_all


def _backward(saved: tuple[Tensor, ...], g: Tensor, plan: _Plan) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients for ``q, k, v, lam`` (book/lla.md, "The backward"): one adjoint solve per row."""
    q, k, v, lam, o, m_all, omega_all, mut_all, rho_all = saved
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    dlam = torch.zeros_like(lam)
    tau = plan.tau
    for i0 in range(0, q.shape[1], plan.block):
        sl = slice(i0, i0 + plan.block)
        qt, gt, ot = q[:, sl], g[:, sl], o[:, sl]
        rows = _Rows(qt, m_all[:, sl], omega_all[:, sl], mut_all[:, sl], lam[:, sl], i0)
        omega, mu, rho = rows.omega, rows.mu, rho_all[:, sl]
        delta = omega - (mu * rho).sum(-1)
        go = (gt * ot).sum(-1)  # g.o
        # N^T g = sum_j w_ij (g.v_j)(k_j - q_i), streamed.
        ngk = torch.zeros_like(qt)
        ng1 = torch.zeros_like(omega)
        for j0 in _key_tiles(i0 + qt.shape[1], plan.block):
            kt, vt = k[:, j0 : j0 + plan.block], v[:, j0 : j0 + plan.block]
            wg = _weights(qt, kt, rows.m, i0, j0, tau) * (gt @ vt.transpose(-1, -2))
            ngk += wg @ kt
            ng1 += wg.sum(-1)
        t = (mu * go[..., None] - (ngk - ng1[..., None] * qt)) / delta[..., None]  # dL/drho
        u = _solve(rows, k, t, plan, "adjoint")
        g_mu = u + (go / delta)[..., None] * rho
        g_omega = -go / delta - rows.lam * (u * rho).sum(-1)
        dlam[:, sl] = -omega * (u * rho).sum(-1)
        uq, rq, gq = (u * qt).sum(-1, keepdim=True), (rho * qt).sum(-1, keepdim=True), (g_mu * qt).sum(-1, keepdim=True)
        dq_t = torch.zeros_like(qt)
        for j0 in _key_tiles(i0 + qt.shape[1], plan.block):
            js = slice(j0, j0 + plan.block)
            kt, vt = k[:, js], v[:, js]
            w = _weights(qt, kt, rows.m, i0, j0, tau)
            rd = rho @ kt.transpose(-1, -2) - rq  # rho.(k_j - q_i)
            ud = u @ kt.transpose(-1, -2) - uq
            gmd = g_mu @ kt.transpose(-1, -2) - gq
            gv = gt @ vt.transpose(-1, -2) / delta[..., None]  # (g.v_j) / delta
            # dL/dl_ij (through w_ij = exp(l_ij - m_i); m_i is a stabiliser the output does not depend on)
            p = w * (g_omega[..., None] + gmd - ud * rd + gv * (1 - rd))
            # dL/d(k_j - q_i), weighted by w_ij: w [g_mu - u (rho.d) - rho (u.d) - rho (g.v)/delta]
            a = w * rd
            b = w * (ud + gv)
            dd_k = w.transpose(-1, -2) @ g_mu - a.transpose(-1, -2) @ u - b.transpose(-1, -2) @ rho
            dk[:, js] += dd_k + tau * p.transpose(-1, -2) @ qt
            dv[:, js] += (w * (1 - rd) / delta[..., None]).transpose(-1, -2) @ gt
            dq_t -= w.sum(-1, keepdim=True) * g_mu - a.sum(-1, keepdim=True) * u - b.sum(-1, keepdim=True) * rho
            dq_t += tau * p @ kt
        dq[:, sl] = dq_t
    return dq, dk, dv, dlam


class _LLA(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, q: Tensor, k: Tensor, v: Tensor, lam: Tensor, plan: _Plan) -> Tensor:  # type: ignore[override]
        o, m, omega, mut, rho = _forward(q, k, v, lam, plan)
        ctx.save_for_backward(q, k, v, lam, o, m, omega, mut, rho)
        ctx.plan = plan  # type: ignore[attr-defined]
        return o

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, g: Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        dq, dk, dv, dlam = _backward(ctx.saved_tensors, g.contiguous(), ctx.plan)  # type: ignore[attr-defined]
        return dq, dk, dv, dlam, None


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def _check_lam(lam: object, q: Tensor, solver: str) -> Tensor:
    b, h, t, _ = q.shape
    if isinstance(lam, bool) or not isinstance(lam, int | float | Tensor):
        raise TypeError(f"lam: expected a float or a tensor broadcastable to (B, H, T), got {type(lam).__name__}")
    if isinstance(lam, Tensor):
        if not lam.is_floating_point():
            raise TypeError(f"lam: expected a floating tensor, got {lam.dtype}")
        if lam.device != q.device:
            raise ValueError(f"lam: expected the device of q ({q.device}), got {lam.device}")
        try:
            lam_t = torch.broadcast_to(lam, (b, h, t))
        except RuntimeError:
            raise ValueError(
                f"lam: expected a shape broadcastable to (B, H, T) = {(b, h, t)}, got {tuple(lam.shape)}"
            ) from None
    else:
        lam_t = torch.full((b, h, t), float(lam), dtype=q.dtype, device=q.device)
    if bool(torch.isnan(lam_t).any()) or bool(torch.isinf(lam_t).any()):
        raise ValueError("lam: expected finite values, got NaN or inf")
    if bool((lam_t < 0).any()):
        raise ValueError("lam: expected lam >= 0, got a negative value")
    if solver == "cg" and bool((lam_t == 0).any()):
        raise ValueError("lam: solver='cg' needs lam > 0 (Sigma is only semidefinite at lam = 0); use solver='direct'")
    return lam_t


def _validate(
    q: Tensor,
    k: Tensor,
    v: Tensor | None,
    lam: object,
    scale: float | None,
    solver: str,
    cg_iters: int | None,
    block_size: int | None,
    backend: str | None = None,
) -> tuple[Tensor, _Plan]:
    """Check every argument (errors name it); returns ``lam`` as ``(B, H, T)`` and the plan."""
    named = (("q", q), ("k", k)) + ((("v", v),) if v is not None else ())
    for name, x in named:
        require_tensor(name, x)
        require_float(name, x)
    require_same(("q", "k"), q, k)
    if q.ndim != 4:
        raise ValueError(f"q: expected shape (B, H, T, D), got {tuple(q.shape)}")
    if k.shape != q.shape:
        raise ValueError(f"k: expected the shape of q {tuple(q.shape)}, got {tuple(k.shape)}")
    if v is not None:
        require_same(("q", "v"), q, v)
        if v.ndim != 4 or v.shape[:-1] != q.shape[:-1]:
            raise ValueError(
                f"v: expected shape (B, H, T, Dv) with (B, H, T) = {tuple(q.shape[:-1])}, got {tuple(v.shape)}"
            )
    if solver not in SOLVERS:
        raise ValueError(f"solver: expected 'cg' or 'direct', got {solver!r}")
    if cg_iters is not None and (isinstance(cg_iters, bool) or not isinstance(cg_iters, int) or cg_iters < 1):
        raise ValueError(f"cg_iters: expected None or an int >= 1, got {cg_iters!r}")
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1):
        raise ValueError(f"block_size: expected None or an int >= 1, got {block_size!r}")
    if scale is not None and (
        isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale)
    ):
        raise ValueError(f"scale: expected None or a finite float, got {scale!r}")
    lam_t = _check_lam(lam, q, solver)
    d = q.shape[-1]
    plan = _Plan(
        tau=1.0 / math.sqrt(d) if scale is None else float(scale),
        solver=solver,
        iters=d if cg_iters is None else cg_iters,
        block=BLOCK_SIZE if block_size is None else block_size,
        query=block_size if block_size is not None else CG_QUERY_BLOCK if solver == "cg" else BLOCK_SIZE,
        rtol=1e-14 if accumulation_dtype(q.dtype) == torch.float64 else 1e-6,
        triton=select_backend(backend, q.device) == "triton",
    )
    return lam_t, plan


def local_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lam: float | Tensor,
    *,
    scale: float | None = None,
    solver: str = "cg",
    cg_iters: int | None = None,
    block_size: int | None = None,
    backend: str | None = None,
) -> Tensor:
    """Causal local linear attention (arXiv 2510.01450, §3): ``o_i`` is the intercept of the
    ``s_ij``-weighted local linear ridge fit at ``q_i`` (book/lla.md, "Our formulation vs the paper's").

    Args:
        q, k: ``(B, H, T, D)``; v: ``(B, H, T, Dv)``; one float dtype and device.
        lam: the ridge, no default: a float or a tensor broadcastable to ``(B, H, T)``; ``lam_i`` for
            query ``i``; scaled by ``omega_i`` inside. ``lam > 0`` for ``solver="cg"``, ``>= 0`` for "direct".
        scale: ``tau`` in ``tau q.k``; ``None`` is ``1/sqrt(D)``; ``0.0`` is honoured (uniform weights).
        solver: ``"cg"`` (matrix-free conjugate gradients) or ``"direct"`` (batched Cholesky).
        cg_iters: conjugate-gradient iterations, ``D`` by default; rows stop early once converged.
        block_size: query and key tile size; by default key tiles of 64 and query tiles of 256 (CG) or
            64 (direct).
        backend: ``None`` (Triton on CUDA, torch elsewhere), ``"torch"`` or ``"triton"`` (every stream over the
            keys by ``fast/triton/lla.py``; CUDA or ``TRITON_INTERPRET=1``).

    Returns ``(B, H, T, Dv)``.  Rows whose solve does not reach a relative residual ``sqrt(rtol)``
    (``rtol`` = 1e-14 in float64, 1e-6 in float32) raise a :class:`ConvergenceWarning` saying how many.
    Differentiable in ``q, k, v`` and a tensor ``lam`` (analytic backward with one adjoint solve).
    """
    lam_t, plan = _validate(q, k, v, lam, scale, solver, cg_iters, block_size, backend)
    b, h, t, _ = q.shape
    if t == 0 or b * h == 0:
        return v.new_zeros(v.shape)
    acc = accumulation_dtype(q.dtype)
    flat = [x.reshape(b * h, t, x.shape[-1]).to(acc) for x in (q, k, v)]
    out = _LLA.apply(*flat, lam_t.reshape(b * h, t).to(acc), plan)
    return out.reshape(b, h, t, v.shape[-1]).to(q.dtype)


def local_linear_rho(
    q: Tensor,
    k: Tensor,
    lam: float | Tensor,
    *,
    scale: float | None = None,
    solver: str = "cg",
    cg_iters: int | None = None,
    block_size: int | None = None,
    backend: str | None = None,
) -> Tensor:
    """``rho_i = Sigma_i^{-1} mu_i`` ``(B, H, T, D)`` as the forward solves it (no gradient); arguments as
    :func:`local_linear_attention`.  Exposed so the solve itself can be verified."""
    lam_t, plan = _validate(q, k, None, lam, scale, solver, cg_iters, block_size, backend)
    b, h, t, d = q.shape
    acc = accumulation_dtype(q.dtype)
    qf, kf = (x.reshape(b * h, t, d).to(acc).detach() for x in (q, k))
    lam_f = lam_t.reshape(b * h, t).to(acc).detach()
    rho = torch.empty_like(qf)
    qblock = plan.query_block(t)
    for i0 in range(0, t, qblock):
        qt = qf[:, i0 : i0 + qblock]
        rows = _Rows(qt, *_pass_a(qt, kf, i0, plan), lam_f[:, i0 : i0 + qblock], i0)
        rho[:, i0 : i0 + qblock] = _solve(rows, kf, rows.mu, plan, "forward")
    return rho.reshape(b, h, t, d).to(q.dtype)
