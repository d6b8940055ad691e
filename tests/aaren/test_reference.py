"""The reference module agrees with itself: cell, three scan schedules and the quadratic form."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given

from attnverify.numerics import identity_tolerance, row_scale, scaled_error
from attnverify.reference import aaren as ref
from attnverify.theory.aaren import scan_case
from tests.strategies import scan_cases

F64 = torch.float64
SCHEDULES = (ref.sequential_scan, ref.hillis_steele_scan, ref.blelloch_scan)


@given(case=scan_cases(max_n=130))
def test_schedules_and_cell_equal_quadratic(case) -> None:
    s, v = case.scores, case.values
    truth = ref.causal_constant_query_attention(s, v)
    for out in (*(f(s, v) for f in SCHEDULES), ref.cell_outputs(ref.stable_rnn(s, v))):
        assert scaled_error(out, truth, row_scale(v)) <= 1e-13


def test_blelloch_is_exclusive_before_the_final_combine() -> None:
    """Blelloch pads with e to a power of two; N = 5 pads 3 identities and must still be exact."""
    s = torch.tensor([0.0, 5.0, 10.0, -3.0, 1.0], dtype=F64)
    v = torch.arange(5, dtype=F64)[:, None]
    assert scaled_error(ref.blelloch_scan(s, v), ref.causal_constant_query_attention(s, v), 4.0) <= 1e-15


@pytest.mark.parametrize(("dtype", "limit"), [(torch.float64, 709.78), (torch.float32, 88.72)])
def test_plain_cell_overflows_where_stable_cell_does_not(dtype: torch.dtype, limit: float) -> None:
    """exp(s) overflows just above log(max float): the plain cell turns inf/NaN, the stable one stays exact."""
    v = torch.tensor([[0.25], [0.5]], dtype=dtype)
    for top, finite in ((limit - 1.0, True), (limit + 0.5, False)):
        s = torch.tensor([top - 1.0, top], dtype=dtype)
        plain = ref.cell_outputs(ref.plain_rnn(s, v))
        stable = ref.cell_outputs(ref.stable_rnn(s, v))
        assert bool(torch.isfinite(plain).all()) is finite
        expected = (0.25 + 0.5 * math.e) / (1.0 + math.e)
        assert abs(float(stable[-1, 0]) - expected) <= 1e-6


def test_plain_cell_divides_zero_by_zero_far_below() -> None:
    s = torch.full((3,), -800.0, dtype=F64)
    v = torch.ones(3, 2, dtype=F64)
    assert ref.cell_outputs(ref.plain_rnn(s, v)).eq(0).all()  # 0/0 guarded to 0 by readout: wrong, not v
    assert ref.cell_outputs(ref.stable_rnn(s, v)).eq(1).all()


def test_combine_identity_and_phi() -> None:
    e = ref.identity((4,), 2)
    case = scan_case(4, dv=2, lead=(), scores="wide", seed=3)
    x = ref.leaf(case.scores, case.values)
    for out in (ref.combine(e, x), ref.combine(x, e)):
        assert all(torch.equal(a, b) for a, b in zip(out, x, strict=True))
    y = ref.leaf(case.scores.flip(0), case.values.flip(0))
    xy_u, xy_w = ref.phi(ref.combine(x, y))
    (xu, xw), (yu, yw) = ref.phi(x), ref.phi(y)
    # Relative to the size of the summands, entry by entry (no absolute floor: φ spans e^{±90} here).
    assert scaled_error(xy_u, xu + yu, xu.abs() + yu.abs()) <= identity_tolerance(F64)
    assert scaled_error(xy_w, xw + yw, xw.abs() + yw.abs()) <= identity_tolerance(F64)


def test_readout_of_empty_state_is_zero() -> None:
    assert ref.readout(ref.identity((3,), 2)).eq(0).all()
