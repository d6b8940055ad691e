"""Shared machinery of the symbolic proofs: a proof step and the simplifications that decide it.

A proof is a tuple of :class:`SymbolicStep` records; a step *holds* when its residual (lhs − rhs)
simplifies to exactly 0.  Every paper's ``proofs_checks`` module builds its steps from these.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp


@dataclass(frozen=True)
class SymbolicStep:
    """One symbolic fact: ``residual`` (lhs - rhs, simplified) must be 0."""

    name: str
    residual: sp.Expr

    @property
    def holds(self) -> bool:
        return self.residual == 0

    def latex(self) -> str:
        return sp.latex(self.residual)


def zero(expr: sp.Expr) -> sp.Expr:
    """``expr`` expanded, powers combined and simplified: exactly ``0`` when an identity holds."""
    return sp.simplify(sp.powsimp(sp.expand(expr), force=True))


def difference(lhs: sp.Expr, rhs: sp.Expr) -> sp.Expr:
    """``lhs - rhs`` simplified; equal infinities (``-oo`` maxima) count as a zero difference."""
    if rhs.is_infinite or lhs.is_infinite:
        return sp.Integer(0) if lhs == rhs else sp.Symbol("mismatch")
    return zero(lhs - rhs)
