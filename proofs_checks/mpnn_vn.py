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
