"""The symbolic proofs hold for our operator and cell, in general, and fail for wrong ones.

The proofs take the operator (or the cell recurrence) they prove as an argument; a proof that
still held for a wrong operator would prove nothing about ours.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
import sympy as sp

from attnverify.proofs_checks import aaren as proofs
from attnverify.proofs_checks import sequence_parallel as sp_proofs
from attnverify.proofs_checks.aaren import State, alpha
from attnverify.proofs_checks.symbolic import SymbolicStep


def _combine(weight: Callable[[sp.Expr, sp.Expr], sp.Expr], *, scale_w: bool = True) -> Callable[[State, State], State]:
    """An operator like ``⊕`` whose rescale factor is ``weight(m_x, m)``; ``scale_w=False`` adds ``w`` unscaled."""

    def op(x: State, y: State) -> State:
        m = sp.Max(x[0], y[0])
        a_x, a_y = weight(x[0], m), weight(y[0], m)
        w = x[2] * a_x + y[2] * a_y if scale_w else x[2] + y[2]
        return m, x[1] * a_x + y[1] * a_y, w

    return op


WRONG_OPERATORS = {
    "w added unscaled": _combine(alpha, scale_w=False),
    "sign of the exponent flipped": _combine(lambda m_x, m: sp.Integer(0) if m_x == -sp.oo else sp.exp(m - m_x)),
    "no guard for m = -inf": _combine(lambda m_x, m: sp.exp(m_x - m)),
}


def _a_not_rescaled(state: State, s: sp.Expr, v: sp.Expr) -> State:
    m_prev, c_prev, a_prev = state
    m = sp.Max(m_prev, s)
    return m, c_prev * alpha(m_prev, m) + sp.exp(s - m), a_prev + v * sp.exp(s - m)


def _no_running_max(state: State, s: sp.Expr, v: sp.Expr) -> State:
    _, c_prev, a_prev = state
    return sp.Integer(0), c_prev + sp.exp(s), a_prev + v * sp.exp(s)


WRONG_CELLS = {"a not rescaled": _a_not_rescaled, "no running max": _no_running_max}


def _failing(steps: tuple[SymbolicStep, ...]) -> list[str]:
    return [s.name for s in steps if not s.holds]


@pytest.mark.parametrize(
    "proof",
    [
        proofs.cell_induction,
        proofs.monoid_laws,
        proofs.bracketing_sums,
        proofs.reference_point_invariance,
        proofs.softmax_shift,
        sp_proofs.scan_split_identity,
        sp_proofs.lasp2_identity,
    ],
)
def test_every_step_holds(proof: Callable[[], tuple[SymbolicStep, ...]]) -> None:
    steps = proof()
    assert steps and not _failing(steps)


def test_proofs_are_about_every_length_not_an_instance() -> None:
    """No proof takes a size: lengths, splits, positions and widths are symbolic inside it."""
    for proof in (proofs.cell_induction, proofs.bracketing_sums, proofs.softmax_shift, sp_proofs.lasp2_identity):
        sizes = set(inspect.signature(proof).parameters) & {"n", "tokens", "split", "length", "width"}
        assert not sizes, f"{proof.__name__} proves an instance of size {sizes}"
    u, _ = proofs.sums(1, proofs.LEN)
    assert u.limits == ((proofs.IDX, 1, proofs.LEN),) and proofs.LEN.is_Symbol and proofs.LEN.is_integer
    names = " ".join(s.name for s in proofs.cell_induction() + proofs.bracketing_sums() + proofs.softmax_shift())
    assert "any n" in names and "a..k" in names and "1..k" in names


@pytest.mark.parametrize("name", sorted(WRONG_OPERATORS))
def test_wrong_operator_fails_the_monoid_and_split_proofs(name: str) -> None:
    op = WRONG_OPERATORS[name]
    assert _failing(proofs.monoid_laws(op)), f"{name}: the monoid laws still hold"
    assert _failing(proofs.bracketing_sums(op)), f"{name}: the bracketing sums still hold"
    assert _failing(sp_proofs.scan_split_identity(op)), f"{name}: the split identity still holds"


@pytest.mark.parametrize("name", sorted(WRONG_CELLS))
def test_wrong_cell_fails_the_induction(name: str) -> None:
    assert _failing(proofs.cell_induction(WRONG_CELLS[name])), f"{name}: the induction still holds"


def test_sum_normal_form_tells_an_inclusive_state_from_the_exclusive_one() -> None:
    i, j, a, c, p, d = sp.symbols("i j a c p d", integer=True, positive=True)
    q, k, v = (sp.IndexedBase(n, real=True) for n in "qkv")
    earlier = sp.Sum(sp.Sum(q[i, a] * k[j, a], (a, 1, d)) * v[j, c], (j, 1, p))
    normal = sp_proofs._sum_normal_form
    exclusive = sp.Sum(q[i, a] * sp.Sum(k[j, a] * v[j, c], (j, 1, p)), (a, 1, d))
    inclusive = sp.Sum(q[i, a] * sp.Sum(k[j, a] * v[j, c], (j, 1, p + 1)), (a, 1, d))
    assert sp.simplify(normal(earlier) - normal(exclusive)) == 0
    assert sp.simplify(normal(earlier) - normal(inclusive)) != 0
    with pytest.raises(ValueError, match="summation index"):
        normal(j * sp.Sum(k[j, a], (j, 1, p)))
