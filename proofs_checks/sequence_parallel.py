"""Symbolic proofs for the sequence-parallel claims (sympy).

* :func:`lasp2_identity` — for symbolic ``Q, K, V`` (4 tokens, ``d_k = D_v = 2``) split into two
  chunks, ``[(Q_2 K_2^T) ⊙ Ψ] V_2 + Q_2 K_1^T V_1`` equals the second chunk of ``((Q K^T) ⊙ Ψ) V``,
  and the normalizers likewise (LASP-2, arXiv 2502.07563);
* :func:`scan_split_identity` — for 4 symbolic tokens split 1 + 3, 2 + 2 and 3 + 1, the chunk
  total of the first part ⊕ the local scan of the second has the φ-image of the full prefix.
"""

from __future__ import annotations

from functools import lru_cache

import sympy as sp

from attnverify.proofs_checks.aaren import oplus
from attnverify.proofs_checks.symbolic import SymbolicStep, zero


@lru_cache(maxsize=1)
def lasp2_identity(tokens: int = 4, split: int = 2) -> tuple[SymbolicStep, ...]:
    """The LASP-2 chunk identity, entry by entry, with an exclusive prefix of one chunk."""
    Q, K, V = (sp.Matrix(tokens, 2, lambda i, j, n=name: sp.Symbol(f"{n}{i + 1}{j + 1}", real=True)) for name in "qkv")
    psi = sp.Matrix(tokens, tokens, lambda i, j: 1 if j <= i else 0)
    full = (Q * K.T).multiply_elementwise(psi)
    want, want_norm = full * V, full * sp.ones(tokens, 1)
    Q2, K1, K2, V1, V2 = Q[split:, :], K[:split, :], K[split:, :], V[:split, :], V[split:, :]
    local = (Q2 * K2.T).multiply_elementwise(psi[split:, split:])
    got = local * V2 + Q2 * (K1.T * V1)
    got_norm = local * sp.ones(tokens - split, 1) + Q2 * (K1.T * sp.ones(split, 1))
    steps = [
        SymbolicStep(f"O[{split + i + 1}, {j + 1}] = local + Q_2 M_1", zero(got[i, j] - want[split + i, j]))
        for i in range(tokens - split)
        for j in range(2)
    ]
    steps += [
        SymbolicStep(f"normalizer[{split + i + 1}] = local + Q_2 z_1", zero(got_norm[i] - want_norm[split + i]))
        for i in range(tokens - split)
    ]
    return tuple(steps)


@lru_cache(maxsize=1)
def scan_split_identity(tokens: int = 4) -> tuple[SymbolicStep, ...]:
    """``φ(T_first ⊕ LocalScan_second(j)) = φ(x_1 ⊕ … ⊕ x_j)`` for every split point and position."""
    s = sp.symbols(f"s1:{tokens + 1}", real=True)
    v = sp.symbols(f"v1:{tokens + 1}", real=True)
    leaves = [(s[i], sp.Integer(1), v[i]) for i in range(tokens)]

    def fold(states: list[tuple[sp.Expr, sp.Expr, sp.Expr]]) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
        total = states[0]
        for x in states[1:]:
            total = oplus(total, x)
        return total

    def phi(x: tuple[sp.Expr, sp.Expr, sp.Expr]) -> tuple[sp.Expr, sp.Expr]:
        return x[1] * sp.exp(x[0]), x[2] * sp.exp(x[0])

    steps = []
    for split in range(1, tokens):
        total = fold(leaves[:split])
        for j in range(split, tokens):
            got, want = phi(oplus(total, fold(leaves[split : j + 1]))), phi(fold(leaves[: j + 1]))
            residual = sum(sp.Abs(zero(a - b)) for a, b in zip(got, want, strict=True))
            steps.append(SymbolicStep(f"split after {split}, position {j + 1}", residual))
    return tuple(steps)
