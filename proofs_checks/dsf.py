"""Symbolic proofs for the DSF claims (sympy).  Each returns :class:`SymbolicStep` records.

* :func:`telescoping_decay` — with ``Λ_k = η_{k-1}/η_k`` the product ``Π_{k=j+1}^{i} Λ_k`` is ``η_j/η_i``
  for every ``j < i <= 6`` (book/dsf.md, "Attention as a DSF");
* :func:`taylor_terms` — at ``m = 2`` the order-``p`` Taylor feature ``x^{⊗p} / (m^{p/4} √p!)`` reproduces
  the ``p``-th term ``(qᵀk/√m)^p / p!`` of the softmax kernel, ``p = 0..4``;
* :func:`reversed_sigmoid` — ``e^{-a softplus(x)} = σ(-x)^a`` for ``a > 0`` (SSD's decay, the qLSTM gate);
* :func:`rglru_gate` — ``σ(θ)^{c r} = e^{-c r softplus(-θ)}`` (RG-LRU's gate is S6's with ``Δ = r``).

The feature map is passed in, so tests can hand a wrong one and see steps fail.  Results do not
depend on any implementation under test.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import sympy as sp

from attnverify.proofs_checks.symbolic import SymbolicStep, difference, zero

Features = Callable[[list[sp.Expr], int], list[sp.Expr]]


def taylor_feature(x: list[sp.Expr], p: int) -> list[sp.Expr]:
    """The order-``p`` block ``x^{⊗p} / (m^{p/4} √p!)`` of the softmax feature map (row-major)."""
    m = len(x)
    block: list[sp.Expr] = [sp.Integer(1)]
    for _ in range(p):
        block = [a * b for a in block for b in x]
    return [e / (sp.Integer(m) ** sp.Rational(p, 4) * sp.sqrt(sp.factorial(p))) for e in block]


@cache
def telescoping_decay(length: int = 6) -> tuple[SymbolicStep, ...]:
    """``Π_{k=j+1}^{i} η_{k-1}/η_k = η_j/η_i`` for every pair ``1 <= j < i <= length``."""
    eta = sp.symbols(f"eta1:{length + 1}", positive=True)
    return tuple(
        SymbolicStep(
            f"prod_(k={j + 1}..{i}) eta_(k-1)/eta_k = eta_{j}/eta_{i}",
            difference(sp.Mul(*[eta[k - 2] / eta[k - 1] for k in range(j + 1, i + 1)]), eta[j - 1] / eta[i - 1]),
        )
        for i in range(2, length + 1)
        for j in range(1, i)
    )


def taylor_terms(features: Features = taylor_feature, order: int = 4) -> tuple[SymbolicStep, ...]:
    """``φ_p(q)ᵀφ_p(k) - (qᵀk/√2)^p / p!`` at ``m = 2``, ``p = 0..order``."""
    q = list(sp.symbols("q1 q2", real=True))
    k = list(sp.symbols("k1 k2", real=True))
    score = (q[0] * k[0] + q[1] * k[1]) / sp.sqrt(2)
    return tuple(
        SymbolicStep(
            f"phi_{p}(q).phi_{p}(k) = (q.k/sqrt(2))^{p}/{p}!",
            difference(
                sum(a * b for a, b in zip(features(q, p), features(k, p), strict=True)), score**p / sp.factorial(p)
            ),
        )
        for p in range(order + 1)
    )


@cache
def reversed_sigmoid() -> tuple[SymbolicStep, ...]:
    """``e^{-a log(1+e^x)} = (1+e^x)^{-a} = σ(-x)^a`` for real ``x`` and ``a > 0``."""
    x = sp.Symbol("x", real=True)
    a = sp.Symbol("a", positive=True)
    softplus = sp.log(1 + sp.exp(x))
    y = sp.Symbol("y", real=True)
    sigmoid_of_minus_x = (1 / (1 + sp.exp(-y))).subs(y, -x)
    return (
        SymbolicStep("exp(-a softplus(x)) = (1 + e^x)^(-a)", zero(sp.exp(-a * softplus) - (1 + sp.exp(x)) ** (-a))),
        SymbolicStep("exp(-a softplus(x)) = sigmoid(-x)^a", zero(sp.exp(-a * softplus) - sigmoid_of_minus_x**a)),
    )


@cache
def rglru_gate() -> tuple[SymbolicStep, ...]:
    """``σ(θ)^{c r} = e^{-c r softplus(-θ)}`` for real ``θ`` and ``c, r > 0``."""
    theta = sp.Symbol("theta", real=True)
    c, r = sp.symbols("c r", positive=True)
    sigma = 1 / (1 + sp.exp(-theta))
    return (
        SymbolicStep(
            "sigmoid(theta)^(c r) = exp(-c r softplus(-theta))",
            zero(sigma ** (c * r) - sp.exp(-c * r * sp.log(1 + sp.exp(-theta)))),
        ),
    )
