"""The Triton GLA (forward and backward) and selective-scan kernels against the step-by-step recurrences.

Runs under ``TRITON_INTERPRET=1`` on the CPU (small shapes; ``tests/test_triton_tier.py`` starts this file
in its own process, since the variable must be set before ``import triton``), or compiled on CUDA.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnverify.fast.dsf import gated_linear_attention, selective_scan
from attnverify.numerics import identity_tolerance
from attnverify.reference import dsf as ref
from attnverify.theory.dsf import CHUNKED_TOLERANCE, rel_error
from tests.dsf.test_fast import gla_inputs
from tests.dsf.test_selective_scan import scan_inputs
from tests.triton_support import DEVICE, TRITON_MARKS

pytestmark = TRITON_MARKS
F64, F32 = torch.float64, torch.float32


@settings(max_examples=10)
@given(
    t=st.sampled_from([1, 2, 17, 31, 32, 33, 70]),
    kind=st.sampled_from(["none", "head", "key"]),
    scale=st.sampled_from([0.1, 1.0, 50.0]),
    normalize=st.booleans(),
    dtype=st.sampled_from([F64, F32]),
    seed=st.integers(0, 2**16),
)
def test_matches_recurrence(t: int, kind: str, scale: float, normalize: bool, dtype: torch.dtype, seed: int) -> None:
    q, k, v, g = gla_inputs(
        t, seed, kind="key" if kind == "none" else kind, scale=scale, positive=normalize, dk=5, dv=3
    )
    decay = None if kind == "none" else g
    state = torch.rand(2, 2, 5, 3 + int(normalize), dtype=F64, generator=torch.Generator().manual_seed(seed))
    args = [x.to(dtype).to(DEVICE) if x is not None else None for x in (q, k, v, decay, state)]
    out, final = gated_linear_attention(
        *args[:4], normalize=normalize, initial_state=args[4], output_final_state=True, backend="triton"
    )
    assert out.dtype == dtype and out.device.type == DEVICE
    want, want_final = ref.gla_recurrent(
        *(x.to(F64).cpu() if x is not None else None for x in args[:4]),
        normalize=normalize,
        initial_state=args[4].to(F64).cpu(),
    )
    assert rel_error(out, want) <= CHUNKED_TOLERANCE[dtype]
    assert rel_error(final, want_final) <= CHUNKED_TOLERANCE[dtype]


def test_strong_gates_stay_finite() -> None:
    q, k, v, g = (x.float().to(DEVICE) for x in gla_inputs(100, 3, kind="key", scale=50.0, b=1))
    out = gated_linear_attention(q, k, v, g, backend="triton")
    assert torch.isfinite(out).all()
    assert rel_error(out, ref.gla_recurrent(*(x.double().cpu() for x in (q, k, v, g)))[0]) <= CHUNKED_TOLERANCE[F32]


@pytest.mark.parametrize(("kind", "normalize"), [("head", False), ("key", True)])
def test_gradcheck_of_the_triton_kernels(kind: str, normalize: bool) -> None:
    """The Triton backward (``dq, dk, dv``, the gates', the initial state's) against numerical differences."""
    q, k, v, g = gla_inputs(5, 1, kind=kind, scale=1.0, positive=normalize, b=1, h=1, dk=2, dv=2)
    state = torch.rand(1, 1, 2, 2 + int(normalize), dtype=F64)
    inputs = tuple(x.to(DEVICE).requires_grad_() for x in (q, k, v, g, state))

    def run(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return gated_linear_attention(
            *xs[:4], normalize=normalize, initial_state=xs[4], output_final_state=True, backend="triton"
        )

    assert torch.autograd.gradcheck(run, inputs)


def test_triton_gradients_match_the_torch_path_in_float32() -> None:
    q, k, v, g = (x.float().to(DEVICE).requires_grad_() for x in gla_inputs(70, 2, kind="key", scale=1.0))
    grad = torch.randn(2, 2, 70, 2, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    got = torch.autograd.grad(gated_linear_attention(q, k, v, g, backend="triton"), (q, k, v, g), grad)
    want = torch.autograd.grad(gated_linear_attention(q, k, v, g, backend="torch"), (q, k, v, g), grad)
    for a, b in zip(got, want, strict=True):
        assert rel_error(a, b.detach().double().cpu()) <= CHUNKED_TOLERANCE[F32]


@pytest.mark.parametrize("L", [1, 7, 40])
@pytest.mark.parametrize("dtype", [F64, F32])
def test_selective_scan_matches_step_loop(L: int, dtype: torch.dtype) -> None:
    args = [a.to(dtype).to(DEVICE) for a in scan_inputs(2, 5, 3, L, L, strength=5.0)]
    state = torch.randn(2, 5, 3, dtype=F64, generator=torch.Generator().manual_seed(L)).to(dtype).to(DEVICE)
    y, final = selective_scan(*args, initial_state=state, output_final_state=True, backend="triton")
    assert y.dtype == dtype and y.device.type == DEVICE
    want, want_final = ref.selective_scan(
        *(a.double().cpu() for a in args), initial_state=state.double().cpu(), output_final_state=True
    )
    tol = identity_tolerance(dtype, L)
    assert rel_error(y, want) <= tol and rel_error(final, want_final) <= tol


def test_selective_scan_gradcheck_of_the_triton_kernels() -> None:
    """The Triton backward (``du, dΔ, dA, dB, dC``, the skip's and the initial state's) against numerical
    differences, on odd shapes with an initial state and the final state's gradient."""
    args = scan_inputs(2, 3, 3, 5, 1)
    state = torch.randn(2, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    inputs = tuple(a.to(DEVICE).requires_grad_() for a in (*args, state))

    def run(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return selective_scan(*xs[:6], initial_state=xs[6], output_final_state=True, backend="triton")

    assert torch.autograd.gradcheck(run, inputs, fast_mode=True)  # random projections: few interpreted launches


@pytest.mark.parametrize("dtype", [F64, F32])
def test_selective_scan_gradients_match_the_step_loop(dtype: torch.dtype) -> None:
    """Every input's gradient against autograd of the float64 step loop (strong decays, 11 tokens, 5 channels)."""
    args = scan_inputs(2, 5, 3, 11, 4, strength=5.0)
    state = torch.randn(2, 5, 3, dtype=F64, generator=torch.Generator().manual_seed(4))
    gen = torch.Generator().manual_seed(5)
    d_y, d_final = torch.randn(2, 5, 11, dtype=F64, generator=gen), torch.randn(2, 5, 3, dtype=F64, generator=gen)
    leaves = [a.to(dtype).to(DEVICE).requires_grad_() for a in (*args, state)]
    y, final = selective_scan(*leaves[:6], initial_state=leaves[6], output_final_state=True, backend="triton")
    got = torch.autograd.grad((y, final), leaves, (d_y.to(dtype).to(DEVICE), d_final.to(dtype).to(DEVICE)))
    truth = [x.detach().double().cpu().requires_grad_() for x in leaves]
    y, final = ref.selective_scan(*truth[:6], initial_state=truth[6], output_final_state=True)
    want = torch.autograd.grad((y, final), truth, (d_y, d_final))
    for name, a, b in zip(("u", "delta", "A", "B", "C", "D", "initial_state"), got, want, strict=True):
        assert rel_error(a, b) <= identity_tolerance(dtype, 11 * 3), name


@pytest.mark.parametrize("normalize", [False, True])
def test_empty_sequence_on_the_triton_path(normalize: bool) -> None:
    """``T = 0`` (and ``L = 0``) never reach a kernel: an empty output, the initial state passed through."""
    q, k, v, g = (x.to(DEVICE) for x in gla_inputs(0, 1, kind="key", scale=1.0, positive=normalize))
    state = torch.rand(2, 2, 3, 2 + int(normalize), dtype=F64).to(DEVICE)
    out, final = gated_linear_attention(
        q, k, v, g, normalize=normalize, initial_state=state, output_final_state=True, backend="triton"
    )
    assert out.shape == (2, 2, 0, 2) and torch.equal(final, state)
    args = [a.to(DEVICE) for a in scan_inputs(2, 3, 2, 0, 1)]
    y, s = selective_scan(*args, output_final_state=True, backend="triton")
    assert y.shape == (2, 3, 0) and not s.any()
