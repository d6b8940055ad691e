"""Symbolic steps of the MPNN + VN claims (arXiv 2301.11956; book/mpnn_vn.md, "The derivation").

* :func:`reassociation`: dense kernel attention equals what the virtual node computes, on small
  symbolic matrices (Result A is a re-association of sums).
* :func:`favor_moments`: the Gaussian moment generating function gives FAVOR+ unbiasedness and
  its variance formula exactly (arXiv 2009.14794, Lemma 1 and Lemma 2).
"""

from __future__ import annotations

import sympy as sp

from attnverify.proofs_checks.symbolic import SymbolicStep, difference


def _matrix(name: str, rows: int, cols: int) -> sp.Matrix:
    return sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"{name}_{i}{j}", positive=name in ("P", "K")))


def reassociation(n: int = 3, m: int = 2, dv: int = 2) -> tuple[SymbolicStep, ...]:
    """With ``P = φ(Q)`` and ``K = φ(K)`` (``n × m``, positive) and ``V`` (``n × d_v``):

    * numerator: ``(P Kᵀ) V = P (Kᵀ V)`` and ``Kᵀ V = Σ_j vec(φ(k_j) v_jᵀ)`` (the VN's gathered sum ``S``);
    * denominator: ``(P Kᵀ) 1 = P z`` with ``z = Σ_j φ(k_j)``;
    * the ratio row by row, for each of the ``n`` nodes.
    """
    P, K, V = _matrix("P", n, m), _matrix("K", n, m), _matrix("V", n, dv)
    S = sum((K[j, :].T * V[j, :] for j in range(n)), sp.zeros(m, dv))  # VN sum of outer products
    z = sum((K[j, :].T for j in range(n)), sp.zeros(m, 1))
    dense_num, dense_den = (P * K.T) * V, (P * K.T) * sp.ones(n, 1)
    steps = [
        SymbolicStep(
            "S = Σ_j φ(k_j) v_jᵀ equals φ(K)ᵀ V", sum(difference(a, b) ** 2 for a, b in zip(S, K.T * V, strict=True))
        ),
        SymbolicStep(
            "(φ(Q) φ(K)ᵀ) V = φ(Q) S", sum(difference(a, b) ** 2 for a, b in zip(dense_num, P * S, strict=True))
        ),
        SymbolicStep(
            "(φ(Q) φ(K)ᵀ) 1 = φ(Q) z", sum(difference(a, b) ** 2 for a, b in zip(dense_den, P * z, strict=True))
        ),
    ]
    for i in range(n):
        ratio = (P[i, :] * S) / (P[i, :] * z)[0]
        dense = dense_num[i, :] / dense_den[i]
        residual = sum(difference(a, b) ** 2 for a, b in zip(ratio, dense, strict=True))
        steps.append(SymbolicStep(f"node {i}: φ(q_i)ᵀS / φ(q_i)ᵀz = row i of dense attention", residual))
    return tuple(steps)


def favor_moments() -> tuple[SymbolicStep, ...]:
    """One coordinate of ``w ~ N(0, 1)`` (the ``d``-dimensional statements are products over coordinates):

    * completing the square, ``-w²/2 + wu = -(w - u)²/2 + u²/2``, and ``∫ e^{-t²/2} dt = √(2π)``, so
      ``E e^{wu} = e^{u²/2}`` (the moment generating function);
    * ``E[φ⁺(x) φ⁺(y)] = e^{-(x²+y²)/2} E e^{w(x+y)} = e^{xy}`` for one feature: unbiased;
    * ``E[(φ⁺(x) φ⁺(y))²] - e^{2xy} = e^{2xy} (e^{(x+y)²} - 1)``: the variance formula (divide by ``m``).
    """
    w, t, u, x, y = sp.symbols("w t u x y", real=True)
    gaussian = sp.integrate(sp.exp(-(t**2) / 2), (t, -sp.oo, sp.oo)) / sp.sqrt(2 * sp.pi)

    def mgf(a: sp.Expr) -> sp.Expr:
        return sp.exp(a**2 / 2)  # E e^{w a}, by the two steps above

    mean = sp.exp(-(x**2 + y**2) / 2) * mgf(x + y)
    second = sp.exp(-(x**2 + y**2)) * mgf(2 * (x + y))  # (φ⁺(x)φ⁺(y))² = e^{-(x²+y²)} e^{2w(x+y)}
    return (
        SymbolicStep("-w²/2 + wu = -(w-u)²/2 + u²/2", difference(-(w**2) / 2 + w * u, -((w - u) ** 2) / 2 + u**2 / 2)),
        SymbolicStep("∫ e^{-t²/2} dt / √(2π) = 1", difference(gaussian, sp.Integer(1))),
        SymbolicStep("E[φ⁺(x)φ⁺(y)] = e^{xy}", difference(mean, sp.exp(x * y))),
        SymbolicStep(
            "Var[φ⁺(x)φ⁺(y)] = e^{2xy}(e^{(x+y)²} - 1)",
            difference(second - mean**2, sp.exp(2 * x * y) * (sp.exp((x + y) ** 2) - 1)),
        ),
    )


def newton_identities(n: int = 4) -> tuple[SymbolicStep, ...]:
    """For symbols ``x_1..x_n``: Newton's identities turn the power sums ``p_k = Σ x_j^k`` into the elementary
    symmetric polynomials ``e_k``, so ``p_1..p_n`` determine the multiset (the roots of ``Σ (-1)^k e_k t^{n-k}``)."""
    xs = sp.symbols(f"x1:{n + 1}", real=True)
    p = [sum(x**k for x in xs) for k in range(1, n + 1)]
    e = [sp.Integer(1)]
    for k in range(1, n + 1):
        e.append(sum((-1) ** (i - 1) * e[k - i] * p[i - 1] for i in range(1, k + 1)) / k)
    t = sp.Symbol("t")
    poly = sum((-1) ** k * e[k] * t ** (n - k) for k in range(n + 1))
    steps = [
        SymbolicStep(f"e_{k} from Newton = elementary symmetric polynomial", difference(e[k], _elementary(xs, k)))
        for k in range(1, n + 1)
    ]
    steps.append(SymbolicStep("Σ (-1)^k e_k t^{n-k} = Π (t - x_j)", difference(poly, sp.prod([t - x for x in xs]))))
    return tuple(steps)


def _elementary(xs: tuple[sp.Symbol, ...], k: int) -> sp.Expr:
    from itertools import combinations

    return sum(sp.prod(c) for c in combinations(xs, k))


def fewer_power_sums(n: int = 3) -> tuple[SymbolicStep, ...]:
    """The converse (derived): written through ``e_1..e_n``, the power sums ``p_1..p_{n-1}`` do not involve
    ``e_n`` and ``p_n`` does, so changing only ``e_n`` keeps ``p_1..p_{n-1}`` and changes the multiset."""
    e = sp.symbols(f"e1:{n + 1}")
    p: list[sp.Expr] = []
    for k in range(1, n + 1):  # Newton's identities solved for p_k
        p.append(
            sp.expand(
                sum((-1) ** (i - 1) * e[i - 1] * p[k - i - 1] for i in range(1, k)) + (-1) ** (k - 1) * k * e[k - 1]
            )
        )
    steps = [
        SymbolicStep(f"∂p_{k} / ∂e_{n} = 0", difference(sp.diff(p[k - 1], e[-1]), sp.Integer(0))) for k in range(1, n)
    ]
    steps.append(
        SymbolicStep(
            f"∂p_{n} / ∂e_{n} = (-1)^(n-1) n", difference(sp.diff(p[-1], e[-1]), sp.Integer((-1) ** (n - 1) * n))
        )
    )
    return tuple(steps)
