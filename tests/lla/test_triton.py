"""The Triton path of local linear attention (CG products and pass B in ``fast/triton/lla.py``) against the
float64 per-query solve.  Runs under ``TRITON_INTERPRET=1`` on the CPU (``tests/test_triton_tier.py``) or on CUDA."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnverify.fast import local_linear_attention
from attnverify.numerics import row_scale, scaled_error
from attnverify.reference import lla as ref
from attnverify.theory.lla import EXACT_F32, EXACT_F64, lla_case
from tests.triton_support import CUDA, DEVICE, TRITON_MARKS

pytestmark = TRITON_MARKS
F64, F32 = torch.float64, torch.float32


@settings(max_examples=8)
@given(
    t=st.sampled_from([1, 5, 16, 17, 33]),
    d=st.integers(1, 5),
    dv=st.integers(1, 3),
    solver=st.sampled_from(["cg", "direct"]),
    seed=st.integers(0, 2**16),
)
def test_triton_matches_reference(t: int, d: int, dv: int, solver: str, seed: int) -> None:
    case = lla_case(t, d=d, dv=dv, key_scale=2.0, seed=seed)
    for dtype, tol in ((F64, EXACT_F64), (F32, EXACT_F32)):
        q, k, v = case.on(dtype, DEVICE)
        out = local_linear_attention(q, k, v, 0.5, solver=solver, cg_iters=8 * d, backend="triton")
        want = ref.local_linear_attention(*case.rounded(dtype), 0.5)
        assert out.dtype == dtype
        assert scaled_error(out.cpu(), want, row_scale(want)) <= tol


def test_triton_gradients_match_torch() -> None:
    case = lla_case(9, d=2, dv=2, seed=1)
    grads = {}
    for backend in ("torch", "triton"):
        leaves = [x.to(DEVICE).clone().requires_grad_() for x in (case.q, case.k, case.v)]
        out = local_linear_attention(*leaves, 0.5, cg_iters=8, backend=backend)
        grads[backend] = torch.autograd.grad(out.sum(), leaves)
    for a, b in zip(grads["torch"], grads["triton"], strict=True):
        assert scaled_error(b.cpu(), a.cpu(), a.abs().max()) <= 1e-10


def test_triton_backend_needs_a_device() -> None:
    if CUDA:
        pytest.skip("CUDA present: the triton backend is usable")
    os.environ.pop("TRITON_INTERPRET", None)
    try:
        with pytest.raises(ValueError, match=r"^backend:"):
            local_linear_attention(*lla_case(3, d=2).on(F64, "cpu"), 1.0, backend="triton")
    finally:
        os.environ["TRITON_INTERPRET"] = "1"
