"""Symbolic proofs for the Aaren claims (sympy).  Each returns :class:`SymbolicStep` records.

Every proof here is general: sequence lengths, split points and positions are symbolic integers
(sums are sympy ``Sum`` over ``IndexedBase`` scores and values) and states are arbitrary symbols,
so no step is an instance checked for one size.  A value ``v`` is one coordinate of ``D_v``; every
formula is linear in it, so the proofs cover each coordinate alike.

* :func:`cell_induction` — the stable cell keeps ``c_k = sum e^{s_i - m_k}`` and outputs softmax
  attention, by induction on ``k`` (book/aaren.md, "The many-to-one cell");
* :func:`monoid_laws` — ``⊕`` is associative (13 weak orderings of three maxima), has the
  identity ``e = (-inf, 0, 0)``, and is a homomorphic image of addition (book/aaren.md, the scan operator);
* :func:`bracketing_sums` — any bracketing of ``x_a ⊕ … ⊕ x_k`` (every scan schedule, every
  chunking) has the φ-image of the sums over ``a..k``, so its output is softmax attention;
* :func:`reference_point_invariance` and :func:`softmax_shift` — the shift identities (claim 4).

The functions that take an operator or a cell prove the one given (the defaults are ours); the
tests pass wrong ones (``tests/aaren/test_proofs.py``) and see steps fail.  A step *holds* when
its residual simplifies to exactly 0.  Results are cached: they do not depend on any
implementation under test.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import lru_cache

import sympy as sp

from attnverify.proofs_checks.symbolic import SymbolicStep, difference, zero

State = tuple[sp.Expr, sp.Expr, sp.Expr]
Cell = Callable[[State, sp.Expr, sp.Expr], State]

IDX, LEN = sp.symbols("i k", integer=True, positive=True)
"""A token index and a prefix length (symbolic: the proofs hold for every length)."""
S, V = sp.IndexedBase("s", real=True), sp.IndexedBase("v", real=True)
"""Scores ``s_i`` and (one coordinate of) values ``v_i``."""
EMPTY: State = (-sp.oo, sp.Integer(0), sp.Integer(0))
"""The identity ``e``: an empty set of tokens, or a masked one."""


def alpha(m_x: sp.Expr, m: sp.Expr) -> sp.Expr:
    """The guarded rescale factor: 0 for ``m_x = -oo``, else ``exp(m_x - m)``."""
    return sp.Integer(0) if m_x == -sp.oo else sp.exp(m_x - m)


def oplus(x: State, y: State) -> State:
    """``(m_x,u_x,w_x) ⊕ (m_y,u_y,w_y)`` with ``m = Max(m_x, m_y)`` (book/aaren.md, the scan operator)."""
    m = sp.Max(x[0], y[0])
    a_x, a_y = alpha(x[0], m), alpha(y[0], m)
    return (m, x[1] * a_x + y[1] * a_y, x[2] * a_x + y[2] * a_y)


def phi(x: State) -> tuple[sp.Expr, sp.Expr]:
    """``φ(m, u, w) = (u e^m, w e^m)``: the un-normalized sums a state stands for."""
    return x[1] * sp.exp(x[0]), x[2] * sp.exp(x[0])


def stable_cell(state: State, s: sp.Expr, v: sp.Expr) -> State:
    """One step of the stable many-to-one cell: ``m_k = max(m_{k-1}, s_k)``, old sums rescaled (guarded)."""
    m_prev, c_prev, a_prev = state
    m = sp.Max(m_prev, s)
    return m, c_prev * alpha(m_prev, m) + sp.exp(s - m), a_prev * alpha(m_prev, m) + v * sp.exp(s - m)


def sums(lo: sp.Expr, hi: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """``(sum e^{s_i}, sum e^{s_i} v_i)`` over ``i = lo..hi``: the φ-image of those tokens."""
    return sp.Sum(sp.exp(S[IDX]), (IDX, lo, hi)), sp.Sum(sp.exp(S[IDX]) * V[IDX], (IDX, lo, hi))


def range_steps(lo: sp.Expr, split: sp.Expr, hi: sp.Expr, label: str) -> list[SymbolicStep]:
    """Sums over ``lo..split`` and ``split+1..hi`` add up to the sum over ``lo..hi`` (u and w)."""
    return [
        SymbolicStep(f"{label}, {name}", zero(a + b - c))
        for name, a, b, c in zip(("u", "w"), sums(lo, split), sums(split + 1, hi), sums(lo, hi), strict=True)
    ]


def softmax_output_step(lo: sp.Expr, hi: sp.Expr, label: str) -> SymbolicStep:
    """``φ_w / φ_u`` of the sums over ``lo..hi`` is ``sum_i softmax(s_{lo..hi})_i v_i``."""
    u, w = sums(lo, hi)
    softmax = sp.exp(S[IDX]) / u  # the normalizer u is a closed sum: a constant inside the sum over i
    return SymbolicStep(label, zero(w / u - sp.Sum(softmax * V[IDX], (IDX, lo, hi))))


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


@lru_cache(maxsize=4)
def cell_induction(cell: Cell = stable_cell) -> tuple[SymbolicStep, ...]:
    """The cell's invariant for every ``k``, by induction, and its output: softmax attention.

    Invariant: ``c_k e^{m_k} = sum_{i<=k} e^{s_i}`` and ``a_k e^{m_k} = sum_{i<=k} e^{s_i} v_i``.
    Base: one step from ``(-oo, 0, 0)``.  Step: if ``c_{k-1} = C e^{-m_{k-1}}`` and
    ``a_{k-1} = A e^{-m_{k-1}}`` (``C``, ``A`` the sums over ``i < k``), then
    ``c_k = (C + e^{s_k}) e^{-m_k}`` and ``a_k = (A + e^{s_k} v_k) e^{-m_k}``, in the three cases of
    the max; and ``C + e^{s_k}`` is the sum over ``i <= k`` (symbolic ``k``).  Output:
    ``a_k / c_k = sum_i softmax(s_{1..k})_i v_i``.  ``cell`` is the recurrence under proof.
    """
    steps = []
    m1, c1, a1 = cell(EMPTY, S[1], V[1])
    u1, w1 = (x.doit() for x in sums(1, 1))
    steps.append(SymbolicStep("base k = 1: m_1 = s_1", difference(m1, S[1])))
    steps.append(SymbolicStep("base k = 1: c_1 e^{m_1} = e^{s_1}", zero(c1 * sp.exp(m1) - u1)))
    steps.append(SymbolicStep("base k = 1: a_1 e^{m_1} = e^{s_1} v_1", zero(a1 * sp.exp(m1) - w1)))
    t, d = sp.Symbol("t", real=True), sp.Symbol("delta", positive=True)
    C, A, v = sp.Symbol("C", positive=True), sp.Symbol("A", real=True), sp.Symbol("v_k", real=True)
    for case, (m_prev, s_k) in {
        "s_k > m_{k-1}": (t, t + d),
        "s_k = m_{k-1}": (t, t),
        "s_k < m_{k-1}": (t + d, t),
    }.items():
        m_k, c_k, a_k = cell((m_prev, C * sp.exp(-m_prev), A * sp.exp(-m_prev)), s_k, v)
        steps.append(SymbolicStep(f"step: m_k = max(m_{{k-1}}, s_k) ({case})", difference(m_k, sp.Max(m_prev, s_k))))
        steps.append(SymbolicStep(f"step: c_k invariant ({case})", zero(c_k - (C + sp.exp(s_k)) * sp.exp(-m_k))))
        steps.append(SymbolicStep(f"step: a_k invariant ({case})", zero(a_k - (A + v * sp.exp(s_k)) * sp.exp(-m_k))))
    last = sums(LEN, LEN)
    steps += [
        SymbolicStep(f"step: the sum over i = k..k is its term, {name}", zero(x.doit() - term))
        for name, x, term in zip(("u", "w"), last, (sp.exp(S[LEN]), sp.exp(S[LEN]) * V[LEN]), strict=True)
    ]
    steps += range_steps(sp.Integer(1), LEN - 1, LEN, "step: sum over i < k plus term k is the sum over i <= k")
    steps.append(softmax_output_step(sp.Integer(1), LEN, "output a_k / c_k = sum_i softmax(s_{1..k})_i v_i"))
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
    return (*steps, *homomorphism(op))


@lru_cache(maxsize=4)
def homomorphism(op: Callable[[State, State], State] = oplus) -> tuple[SymbolicStep, ...]:
    """``φ(X ⊕ Y) = φ(X) + φ(Y)`` for arbitrary states, in every order of the two maxima, and with ``e``."""
    t, d = sp.Symbol("t", real=True), sp.Symbol("d1", positive=True)
    u, w = sp.symbols("u_A u_B", positive=True), sp.symbols("w_A w_B", real=True)
    steps = []
    orders = {"m_X < m_Y": (t, t + d), "m_X = m_Y": (t, t), "m_X > m_Y": (t + d, t)}
    pairs = {label: ((m_a, u[0], w[0]), (m_b, u[1], w[1])) for label, (m_a, m_b) in orders.items()}
    pairs |= {"X = e": (EMPTY, (t, u[1], w[1])), "Y = e": ((t, u[0], w[0]), EMPTY), "X = Y = e": (EMPTY, EMPTY)}
    for label, (X, Y) in pairs.items():
        for name, lhs, x, y in zip(("u", "w"), phi(op(X, Y)), phi(X), phi(Y), strict=True):
            steps.append(SymbolicStep(f"homomorphism φ, {name} e^m, {label}", zero(lhs - (x + y))))
    return tuple(steps)


@lru_cache(maxsize=4)
def bracketing_sums(op: Callable[[State, State], State] = oplus) -> tuple[SymbolicStep, ...]:
    """Any bracketing of ``x_a ⊕ … ⊕ x_k`` has the φ-image of the sums over ``a..k``; its output is softmax.

    By induction on the bracketing: a leaf ``(s_i, 1, v_i)`` has φ-image ``(e^{s_i}, e^{s_i} v_i)``
    (a masked leaf is ``e``, image 0); ``(tree over a..p) ⊕ (tree over p+1..k)`` has image the
    sum of the two (:func:`homomorphism`), and adjacent sums join (symbolic ``a <= p < k``).
    Every scan schedule (sequential, Hillis–Steele, Blelloch, chunked, tiled) is such a
    bracketing, and ``w/u = φ_w/φ_u`` (:func:`reference_point_invariance`) is then softmax attention.
    """
    lo, split = sp.symbols("a p", integer=True, positive=True)
    leaf_u, leaf_w = (x.doit() for x in sums(IDX, IDX))
    steps = [
        SymbolicStep(f"leaf φ-image, {name}", zero(got - want))
        for name, got, want in zip(("u", "w"), phi((S[IDX], sp.Integer(1), V[IDX])), (leaf_u, leaf_w), strict=True)
    ]
    steps += [
        SymbolicStep(f"masked leaf e: φ-image 0, {name}", x) for name, x in zip(("u", "w"), phi(EMPTY), strict=True)
    ]
    steps += homomorphism(op)
    steps += range_steps(lo, split, LEN, "sums over a..p and p+1..k join")
    steps.append(softmax_output_step(lo, LEN, "output φ_w / φ_u = sum_i softmax(s_{a..k})_i v_i"))
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
def softmax_shift() -> tuple[SymbolicStep, ...]:
    """``softmax(s + δ)_i = softmax(s)_i`` for every length ``n`` and position ``i`` (symbolic)."""
    n, j = sp.symbols("n j", integer=True, positive=True)
    delta = sp.Symbol("delta", real=True)
    shifted = sp.exp(S[IDX] + delta) / sp.Sum(sp.exp(S[j] + delta), (j, 1, n))
    plain = sp.exp(S[IDX]) / sp.Sum(sp.exp(S[j]), (j, 1, n))
    return (SymbolicStep("softmax(s + δ)_i = softmax(s)_i, any n, any i", zero(shifted - plain)),)
