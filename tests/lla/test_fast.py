"""The fast LLA path against the float64 per-query solve: properties, gradients, bad input, NaN scratch."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnverify.fast import local_linear_attention
from attnverify.fast.lla import ConvergenceWarning, local_linear_rho
from attnverify.numerics import row_scale, scaled_error
from attnverify.reference import lla as ref
from attnverify.theory.lla import EXACT_F32, EXACT_F64, lla_case

F64, F32 = torch.float64, torch.float32

small_lengths = st.sampled_from([1, 2, 3, 5, 6, 7, 9, 13, 17, 23])


@settings(max_examples=25)
@given(
    t=small_lengths,
    d=st.integers(1, 6),
    dv=st.integers(1, 3),
    lead=st.sampled_from([(1, 1), (1, 2), (2, 1)]),
    lam_exp=st.integers(-4, 2),
    block=st.sampled_from([1, 3, 4, 7, None]),
    solver=st.sampled_from(["cg", "direct"]),
    seed=st.integers(0, 2**16),
)
def test_matches_reference_float64(t, d, dv, lead, lam_exp, block, solver, seed) -> None:  # type: ignore[no-untyped-def]
    case = lla_case(t, d=d, dv=dv, lead=lead, key_scale=2.0, seed=seed)
    lam = 10.0**lam_exp
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        out = local_linear_attention(case.q, case.k, case.v, lam, solver=solver, cg_iters=8 * d, block_size=block)
    want = ref.local_linear_attention(case.q, case.k, case.v, lam)
    assert out.dtype == F64 and out.shape == case.v.shape
    assert scaled_error(out, want, row_scale(case.v)) <= EXACT_F64


@settings(max_examples=15)
@given(t=small_lengths, d=st.integers(1, 8), lam_exp=st.integers(-1, 2), seed=st.integers(0, 2**16))
def test_matches_reference_float32(t, d, lam_exp, seed) -> None:  # type: ignore[no-untyped-def]
    case = lla_case(t, d=d, dv=2, seed=seed)
    q, k, v = case.on(F32, "cpu")
    lam = 10.0**lam_exp
    out = local_linear_attention(q, k, v, lam, cg_iters=4 * d, block_size=4)
    want = ref.local_linear_attention(*case.rounded(F32), lam)
    assert out.dtype == F32
    assert scaled_error(out, want, row_scale(v)) <= EXACT_F32


def test_per_position_lam_and_scale_zero() -> None:
    case = lla_case(11, d=3, dv=2, seed=1)
    lam = torch.logspace(-2, 2, 11, dtype=F64)
    out = local_linear_attention(case.q, case.k, case.v, lam, cg_iters=12, block_size=4)
    assert scaled_error(out, ref.local_linear_attention(case.q, case.k, case.v, lam), row_scale(case.v)) <= EXACT_F64
    uni = local_linear_attention(case.q, case.k, case.v, 0.5, scale=0.0, solver="direct")
    want = ref.global_ridge_attention(case.q, case.k, case.v, 0.5)
    assert scaled_error(uni, want, row_scale(case.v)) <= EXACT_F64


def test_direct_accepts_lam_zero_and_is_affine_exact() -> None:
    case = lla_case(12, d=2, dv=2, seed=2)
    a, c = torch.randn(2, 2, dtype=F64), torch.tensor([1.0, -2.0], dtype=F64)
    out = local_linear_attention(case.q, case.k, case.k @ a.T + c, 0.0, solver="direct")
    want = case.q @ a.T + c
    assert scaled_error(out[..., 3:, :], want[..., 3:, :], row_scale(want)) <= 1e-9


@pytest.mark.parametrize("solver", ["cg", "direct"])
def test_gradcheck_float64(solver: str) -> None:
    case = lla_case(6, d=2, dv=2, key_scale=2.0, seed=3)
    lam = (0.5 + torch.rand(1, 2, 6, dtype=F64, generator=torch.Generator().manual_seed(0))).requires_grad_()
    inputs = (*(x.clone().requires_grad_() for x in (case.q, case.k, case.v)), lam)

    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        return local_linear_attention(q, k, v, lam, solver=solver, cg_iters=12, block_size=4)

    assert torch.autograd.gradcheck(fn, inputs)


def test_reference_gradcheck_float64() -> None:
    case = lla_case(5, d=2, dv=1, seed=4)
    inputs = tuple(x.clone().requires_grad_() for x in (case.q, case.k, case.v))
    assert torch.autograd.gradcheck(lambda q, k, v: ref.local_linear_attention(q, k, v, 0.7), inputs)


def test_causal_bit_for_bit() -> None:
    case = lla_case(15, d=3, dv=2, seed=5)
    later = [x.clone() for x in (case.q, case.k, case.v)]
    for x in later:
        x[..., 8:, :] = 5 * torch.randn(x[..., 8:, :].shape, dtype=F64)
    a = local_linear_attention(case.q, case.k, case.v, 0.3, block_size=4, cg_iters=12)
    b = local_linear_attention(*later, 0.3, block_size=4, cg_iters=12)
    assert torch.equal(a[..., :8, :], b[..., :8, :])


def test_nan_scratch(nan_scratch: None) -> None:
    case = lla_case(9, d=3, dv=2, seed=6)
    for solver in ("cg", "direct"):
        out = local_linear_attention(case.q, case.k, case.v, 0.5, solver=solver, cg_iters=12, block_size=4)
        assert torch.isfinite(out).all()
        assert (
            scaled_error(out, ref.local_linear_attention(case.q, case.k, case.v, 0.5), row_scale(case.v)) <= EXACT_F64
        )


def test_nonconvergence_warns_with_the_row_count() -> None:
    case = lla_case(16, d=8, dv=1, seed=7)
    with pytest.warns(ConvergenceWarning, match=r"\d+ row\(s\)"):
        local_linear_attention(case.q, case.k, case.v, 1e-3, cg_iters=1)
    rho = local_linear_rho(case.q, case.k, 1e-3, cg_iters=64)
    assert torch.isfinite(rho).all()


def test_empty_and_extreme_inputs() -> None:
    q = torch.zeros(1, 1, 0, 3, dtype=F64)
    assert local_linear_attention(q, q, torch.zeros(1, 1, 0, 2, dtype=F64), 1.0).shape == (1, 1, 0, 2)
    case = lla_case(7, d=2, dv=2, key_scale=30.0, seed=8)  # scores of order 1e2-1e3: the online max must hold
    out = local_linear_attention(case.q, case.k, case.v, 1.0, block_size=2, cg_iters=16)
    assert scaled_error(out, ref.local_linear_attention(case.q, case.k, case.v, 1.0), row_scale(case.v)) <= EXACT_F64


Q = torch.zeros(1, 2, 5, 3)
V = torch.zeros(1, 2, 5, 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"lam": -1.0}, ValueError, "lam"),
        ({"lam": 0.0}, ValueError, "lam"),
        ({"lam": float("nan")}, ValueError, "lam"),
        ({"lam": torch.full((1, 2, 5), float("nan"))}, ValueError, "lam"),
        ({"lam": torch.ones(3)}, ValueError, "lam"),
        ({"lam": "1"}, TypeError, "lam"),
        ({"lam": True}, TypeError, "lam"),
        ({"lam": torch.ones(5, dtype=torch.int64)}, TypeError, "lam"),
        ({"cg_iters": 0}, ValueError, "cg_iters"),
        ({"block_size": 0}, ValueError, "block_size"),
        ({"solver": "lu"}, ValueError, "solver"),
        ({"backend": "triton_tiled"}, ValueError, "backend"),
        ({"scale": float("inf")}, ValueError, "scale"),
        ({"k": torch.zeros(1, 2, 4, 3)}, ValueError, "k"),
        ({"v": torch.zeros(1, 2, 4, 2)}, ValueError, "v"),
        ({"v": torch.zeros(1, 2, 5, 2, dtype=F64)}, TypeError, "v"),
        ({"q": torch.zeros(2, 5, 3), "k": torch.zeros(2, 5, 3)}, ValueError, "q"),
        ({"q": torch.zeros(1, 2, 5, 3, dtype=torch.int32)}, TypeError, "q"),
        ({"q": [[0.0]]}, TypeError, "q"),
    ],
)
def test_bad_input_names_the_argument(kwargs: dict, error: type, name: str) -> None:  # type: ignore[type-arg]
    args = {"q": Q, "k": Q, "v": V, "lam": 1.0} | kwargs
    lam = args.pop("lam")
    with pytest.raises(error, match=rf"^{name}:"):
        local_linear_attention(args.pop("q"), args.pop("k"), args.pop("v"), lam, **args)
