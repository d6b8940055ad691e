"""The Triton path of local linear attention (pass A, the CG products or the Gram sum, and pass B in
``fast/triton/lla.py``) against the float64 per-query solve and the torch path.  Runs under
``TRITON_INTERPRET=1`` on the CPU (``tests/test_triton_tier.py``) or on CUDA; small odd shapes, query tiles
that do not divide ``T``."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnverify.fast import local_linear_attention
from attnverify.fast.lla import _pass_a, _validate
from attnverify.numerics import row_scale, scaled_error
from attnverify.reference import lla as ref
from attnverify.theory.lla import EXACT_F32, EXACT_F64, lla_case
from tests.triton_support import CUDA, DEVICE, TRITON_MARKS

pytestmark = TRITON_MARKS
F64, F32 = torch.float64, torch.float32


@settings(max_examples=8)
@given(
    t=st.sampled_from([1, 5, 13, 33]),
    d=st.integers(1, 5),
    dv=st.integers(1, 3),
    solver=st.sampled_from(["cg", "direct"]),
    block=st.sampled_from([None, 3, 5]),
    seed=st.integers(0, 2**16),
)
def test_triton_matches_reference(t: int, d: int, dv: int, solver: str, block: int | None, seed: int) -> None:
    case = lla_case(t, d=d, dv=dv, key_scale=2.0, seed=seed)
    for dtype, tol in ((F64, EXACT_F64), (F32, EXACT_F32)):
        q, k, v = case.on(dtype, DEVICE)
        out = local_linear_attention(q, k, v, 0.5, solver=solver, cg_iters=8 * d, block_size=block, backend="triton")
        want = ref.local_linear_attention(*case.rounded(dtype), 0.5)
        assert out.dtype == dtype
        assert scaled_error(out.cpu(), want, row_scale(want)) <= tol


@pytest.mark.parametrize(("t", "i0", "n"), [(5, 0, 5), (13, 5, 5), (40, 17, 5), (40, 30, 10)])
def test_pass_a_kernel_matches_torch(t: int, i0: int, n: int) -> None:
    """The online max, omega and mut of a query tile at ``i0``; ``T = 40`` spans three 16-key tiles of the
    kernel, so keys of spread norms move the max between tiles and the rescaling is exercised."""
    q, k, _ = lla_case(t, d=3, key_scale=4.0, seed=t + i0).on(F64, DEVICE)
    qf, kf = q.reshape(2, t, 3), k.reshape(2, t, 3)
    got, want = (
        _pass_a(qf[:, i0 : i0 + n], kf, i0, _validate(q, k, None, 1.0, None, "cg", None, 3, backend)[1])
        for backend in ("triton", "torch")
    )
    for a, b in zip(got, want, strict=True):
        assert scaled_error(a.cpu(), b.cpu(), b.abs().max()) <= EXACT_F64


@pytest.mark.parametrize("solver", ["cg", "direct"])
def test_triton_gradients_match_torch(solver: str) -> None:
    """The shared adjoint backward: float64 Triton against float64 torch, float32 Triton against float64."""
    case = lla_case(13, d=3, dv=2, key_scale=2.0, seed=1)
    grads = {}
    for backend, dtype in (("torch", F64), ("triton", F64), ("triton", F32)):
        leaves = [x.to(DEVICE, dtype).clone().requires_grad_() for x in (case.q, case.k, case.v)]
        lam = torch.full((1, 2, 13), 0.5, dtype=dtype, device=DEVICE, requires_grad=True)
        out = local_linear_attention(*leaves, lam, solver=solver, cg_iters=24, block_size=5, backend=backend)
        grads[backend, dtype] = torch.autograd.grad((out * case.v.to(DEVICE, dtype)).sum(), [*leaves, lam])
    for want, exact, single in zip(grads["torch", F64], grads["triton", F64], grads["triton", F32], strict=True):
        scale = want.abs().max()
        assert scaled_error(exact.cpu(), want.cpu(), scale) <= EXACT_F64
        assert scaled_error(single.cpu().double(), want.cpu(), scale) <= EXACT_F32  # float32 at lam >= 0.1


def test_triton_backend_needs_a_device() -> None:
    if CUDA:
        pytest.skip("CUDA present: the triton backend is usable")
    os.environ.pop("TRITON_INTERPRET", None)
    try:
        with pytest.raises(ValueError, match=r"^backend:"):
            local_linear_attention(*lla_case(3, d=2).on(F64, "cpu"), 1.0, backend="triton")
    finally:
        os.environ["TRITON_INTERPRET"] = "1"
