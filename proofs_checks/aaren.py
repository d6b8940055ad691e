"""Symbolic proofs for the Aaren claims (sympy).  Each returns :class:`SymbolicStep` records.

* :func:`cell_induction` — the stable cell keeps ``c_k = sum e^{s_i - m_k}`` (book/aaren.md, "The many-to-one cell");
* :func:`monoid_laws` — ``⊕`` is associative (13 weak orderings of three maxima), has the
  identity ``e = (-inf, 0, 0)``, and is a homomorphic image of addition (book/aaren.md, the scan operator);
* :func:`reference_point_invariance` and :func:`softmax_shift` — the shift identities (claim 4).

A step *holds* when its residual simplifies to exactly 0.  Results are cached: they do not
depend on any implementation under test.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import lru_cache

import sympy as sp

from attnverify.proofs_checks.symbolic import SymbolicStep, difference, zero

State = tuple[sp.Expr, sp.Expr, sp.Expr]


def alpha(m_x: sp.Expr, m: sp.Expr) -> sp.Expr:
    """The guarded rescale factor: 0 for ``m_x = -oo``, else ``exp(m_x - m)``."""
    return sp.Integer(0) if m_x == -sp.oo else sp.exp(m_x - m)


def oplus(x: State, y: State) -> State:
    """``(m_x,u_x,w_x) ⊕ (m_y,u_y,w_y)`` with ``m = Max(m_x, m_y)`` (book/aaren.md, the scan operator)."""
    m = sp.Max(x[0], y[0])
    a_x, a_y = alpha(x[0], m), alpha(y[0], m)
    return (m, x[1] * a_x + y[1] * a_y, x[2] * a_x + y[2] * a_y)


def weak_orderings(items: tuple[str, ...]) -> list[list[tuple[str, ...]]]:
    """All ordered partitions of ``items`` (ties allowed): 13 for three items."""
    if not items:
        return [[]]
    result = []
    for size in range(1, len(items) + 1):
        for first in itertools.combinations(items, size):
            rest = tuple(i for i in items if i not in first)
            result.extend([list((first,)) + tail for tail in weak_orderings(rest)])
    return result


@lru_cache(maxsize=1)
def cell_induction() -> tuple[SymbolicStep, ...]:
    """Induction step of the stable cell, in both cases of the max.

    Hypothesis: ``c_{k-1} = C e^{-m_{k-1}}``, ``a_{k-1} = A e^{-m_{k-1}}`` with ``C = sum e^{s_i}``,
    ``A = sum e^{s_i} v_i`` over ``i < k``.  Goal: ``c_k = (C + e^{s_k}) e^{-m_k}`` and
    ``a_k = (A + e^{s_k} v_k) e^{-m_k}`` for ``m_k = max(m_{k-1}, s_k)``.
    """
    t, d = sp.Symbol("t", real=True), sp.Symbol("delta", positive=True)
    C, A, v = sp.Symbol("C", positive=True), sp.Symbol("A", real=True), sp.Symbol("v_k", real=True)
    steps = []
    for case, (m_prev, s_k) in {
        "s_k > m_{k-1}": (t, t + d),
        "s_k = m_{k-1}": (t, t),
        "s_k < m_{k-1}": (t + d, t),
    }.items():
        m_k = sp.Max(m_prev, s_k)
        c_prev, a_prev = C * sp.exp(-m_prev), A * sp.exp(-m_prev)
        c_k = c_prev * sp.exp(m_prev - m_k) + sp.exp(s_k - m_k)
        a_k = a_prev * sp.exp(m_prev - m_k) + v * sp.exp(s_k - m_k)
        steps.append(SymbolicStep(f"c_k invariant ({case})", zero(c_k - (C + sp.exp(s_k)) * sp.exp(-m_k))))
        steps.append(SymbolicStep(f"a_k invariant ({case})", zero(a_k - (A + v * sp.exp(s_k)) * sp.exp(-m_k))))
    return tuple(steps)


@lru_cache(maxsize=4)
def monoid_laws(op: Callable[[State, State], State] = oplus) -> tuple[SymbolicStep, ...]:
    """Associativity in all 13 weak orderings of ``(m_A, m_B, m_C)``, identity laws, homomorphism.

    ``op`` is the operator under proof (``oplus``; the tests pass wrong ones to see steps fail).
    """
    base = sp.Symbol("t", real=True)
    gaps = sp.symbols("d1 d2", positive=True)
    u = sp.symbols("u_A u_B u_C", positive=True)
    w = sp.symbols("w_A w_B w_C", real=True)
    steps = []
    for ordering in weak_orderings(("A", "B", "C")):
        # Each tie class gets the next level: t, t + d1, t + d1 + d2.
        level = {name: base + sum(gaps[:rank]) for rank, tie in enumerate(ordering) for name in tie}
        X, Y, Z = ((level[n], u[i], w[i]) for i, n in enumerate("ABC"))
        left, right = op(op(X, Y), Z), op(X, op(Y, Z))
        label = " < ".join("=".join(tie) for tie in ordering)
        for comp, name in ((0, "m"), (1, "u"), (2, "w")):
            steps.append(SymbolicStep(f"associativity, {name}, m order {label}", difference(left[comp], right[comp])))
    m_x = sp.Symbol("m_X", real=True)
    X = (m_x, u[0], w[0])
    e: State = (-sp.oo, sp.Integer(0), sp.Integer(0))
    for comp, name in ((0, "m"), (1, "u"), (2, "w")):
        steps.append(SymbolicStep(f"left identity e ⊕ X, {name}", difference(op(e, X)[comp], X[comp])))
        steps.append(SymbolicStep(f"right identity X ⊕ e, {name}", difference(op(X, e)[comp], X[comp])))
        steps.append(SymbolicStep(f"e ⊕ e = e, {name}", difference(op(e, e)[comp], e[comp])))
    # φ(m, u, w) = (u e^m, w e^m) maps ⊕ to +, in both orders of the two maxima.
    for label, (m_a, m_b) in {"m_X <= m_Y": (base, base + gaps[0]), "m_X > m_Y": (base + gaps[0], base)}.items():
        Xs, Ys = (m_a, u[0], w[0]), (m_b, u[1], w[1])
        Zs = op(Xs, Ys)
        for comp, name in ((1, "u"), (2, "w")):
            lhs = Zs[comp] * sp.exp(Zs[0])
            rhs = Xs[comp] * sp.exp(Xs[0]) + Ys[comp] * sp.exp(Ys[0])
            steps.append(SymbolicStep(f"homomorphism φ, {name} e^m, {label}", zero(lhs - rhs)))
    return tuple(steps)


@lru_cache(maxsize=1)
def reference_point_invariance() -> tuple[SymbolicStep, ...]:
    """``(m, u, w)`` and ``(m + t, u e^{-t}, w e^{-t})`` have the same φ-image and output ``w/u``."""
    m, t = sp.symbols("m t", real=True)
    u, w = sp.Symbol("u", positive=True), sp.Symbol("w", real=True)
    moved = (m + t, u * sp.exp(-t), w * sp.exp(-t))
    return (
        SymbolicStep("φ_u unchanged by moving the reference point", zero(moved[1] * sp.exp(moved[0]) - u * sp.exp(m))),
        SymbolicStep("φ_w unchanged by moving the reference point", zero(moved[2] * sp.exp(moved[0]) - w * sp.exp(m))),
        SymbolicStep("output w/u unchanged by moving the reference point", zero(moved[2] / moved[1] - w / u)),
    )


@lru_cache(maxsize=1)
def softmax_shift(n: int = 4) -> tuple[SymbolicStep, ...]:
    """``softmax(s + δ)_i = softmax(s)_i`` for a symbolic score vector of length ``n``."""
    s = sp.symbols(f"s1:{n + 1}", real=True)
    delta = sp.Symbol("delta", real=True)
    total, shifted = sum(sp.exp(x) for x in s), sum(sp.exp(x + delta) for x in s)
    return tuple(
        SymbolicStep(
            f"softmax(s + δ)_{i + 1} = softmax(s)_{i + 1}", zero(sp.exp(x + delta) / shifted - sp.exp(x) / total)
        )
        for i, x in enumerate(s)
    )
