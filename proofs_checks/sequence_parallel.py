"""Symbolic proofs for the sequence-parallel claims (sympy), general in every size.

* :func:`lasp2_identity` — for any feature width ``d``, value column ``c``, chunk boundary ``p``
  and position ``i > p``, row ``i`` of causal linear attention is its local part over
  ``j = p+1..i`` plus ``q_i`` times the state ``M = sum_{j<=p} k_j v_j^T`` of every earlier token,
  and the states of earlier chunks add up to ``M`` (LASP-2, arXiv 2502.07563); the normalizer
  likewise, with ``v = 1``;
* :func:`scan_split_identity` — Aaren: ``(T_1 ⊕ … ⊕ T_{p-1}) ⊕ LocalScan_p(j)`` is a bracketing of
  ``x_1 ⊕ … ⊕ x_j``, so it has the same φ-image and output for every split and position
  (:func:`~attnverify.proofs_checks.aaren.bracketing_sums`).

Lengths, widths, boundaries and positions are symbolic integers; sums are sympy ``Sum``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import sympy as sp

from attnverify.proofs_checks.aaren import State, bracketing_sums, oplus
from attnverify.proofs_checks.symbolic import SymbolicStep, zero


def _sum_normal_form(expr: sp.Expr) -> sp.Expr:
    """Finite sums in one form: factors moved inside, sums of sums split, nested sums merged, limits by name.

    Each rewrite is valid for finite sums whose limits do not involve another summation index
    (checked: ``ValueError`` otherwise), so two expressions with equal normal forms are equal.
    """
    expr = sp.expand(expr)
    if isinstance(expr, sp.Add):
        return sp.Add(*(_sum_normal_form(term) for term in expr.args))
    if isinstance(expr, sp.Mul):
        inner = next((f for f in expr.args if isinstance(f, sp.Sum)), None)
        if inner is None:
            return expr
        rest = sp.Mul(*(f for f in expr.args if f is not inner))
        if rest.free_symbols & {lim[0] for lim in inner.limits}:
            raise ValueError(f"a factor of {expr} depends on a summation index")
        return _sum_normal_form(sp.Sum(rest * inner.function, *inner.limits))
    if isinstance(expr, sp.Sum):
        body = _sum_normal_form(expr.function)
        if isinstance(body, sp.Add):
            return sp.Add(*(_sum_normal_form(sp.Sum(term, *expr.limits)) for term in body.args))
        limits = list(expr.limits)
        if isinstance(body, sp.Sum):
            limits, body = limits + list(body.limits), body.function
        bound = {lim[0] for lim in limits}
        if any((lim[1].free_symbols | lim[2].free_symbols) & bound for lim in limits):
            raise ValueError(f"the limits of {expr} depend on a summation index")
        return sp.Sum(body, *sorted(limits, key=lambda lim: str(lim[0])))
    return expr


@lru_cache(maxsize=1)
def lasp2_identity() -> tuple[SymbolicStep, ...]:
    """The LASP-2 chunk identity for row ``i`` of a chunk starting after token ``p``, exclusive prefix.

    ``O[i, c] = sum_{j<=i} (q_i · k_j) v_{j,c}`` (causal: ``Ψ`` keeps ``j <= i``).  Steps: the sum
    splits at the boundary into earlier tokens and the local part; the earlier part is
    ``sum_a q_{i,a} M_{a,c}`` (an exchange of finite sums); the states of two runs of earlier
    chunks ``1..p_1`` and ``p_1+1..p`` add up to ``M`` (so, by induction, do any number of chunks).
    The normalizer is the same with ``v = 1`` (the key sums ``z``).
    """
    i, j, a, c, p, d, p1 = sp.symbols("i j a c p d p_1", integer=True, positive=True)
    q, k, v = (sp.IndexedBase(name, real=True) for name in "qkv")
    g = sp.Function("g")  # any term of row i: (q_i · k_j) v_{j,c}, or (q_i · k_j) for the normalizer
    steps = [
        SymbolicStep(
            "row i splits at the boundary, sum_(j<=i) g(j) = sum_(j<=p) g(j) + local sum_(p<j<=i) g(j)",
            zero(sp.Sum(g(j), (j, 1, i)) - sp.Sum(g(j), (j, 1, p)) - sp.Sum(g(j), (j, p + 1, i))),
        )
    ]
    for name, value in (("O", v[j, c]), ("normalizer", sp.Integer(1))):
        term = sp.Sum(q[i, a] * k[j, a], (a, 1, d)) * value  # (q_i · k_j) v_{j,c}
        state = sp.Sum(k[j, a] * value, (j, 1, p))  # M_{a,c} (or z_a) over tokens 1..p
        steps += [
            SymbolicStep(
                f"{name}: earlier tokens through the state, sum_(j<=p) (q_i·k_j) v_j = q_i M",
                zero(_sum_normal_form(sp.Sum(term, (j, 1, p))) - _sum_normal_form(sp.Sum(q[i, a] * state, (a, 1, d)))),
            ),
            SymbolicStep(
                f"{name}: states of earlier chunks add up, M_(1..p_1) + M_(p_1+1..p) = M_(1..p)",
                zero(state.subs(p, p1) + sp.Sum(k[j, a] * value, (j, p1 + 1, p)) - state),
            ),
        ]
    return tuple(steps)


@lru_cache(maxsize=4)
def scan_split_identity(op: Callable[[State, State], State] = oplus) -> tuple[SymbolicStep, ...]:
    """``(T_1 ⊕ … ⊕ T_{p-1}) ⊕ LocalScan_p(j)`` has the φ-image and output of ``x_1 ⊕ … ⊕ x_j``.

    Both are bracketings of the leaves ``x_1..x_j`` (the totals and the local scan are themselves
    bracketings of contiguous runs; an empty chunk's total is ``e``), so
    :func:`~attnverify.proofs_checks.aaren.bracketing_sums` proves it for every number of chunks,
    chunk length, split point and position.  ``op`` is the operator under proof.
    """
    return bracketing_sums(op)
