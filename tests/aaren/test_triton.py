"""The Triton kernel against the float64 reference (forward and backward).

Runs under ``TRITON_INTERPRET=1`` on the CPU (small shapes; ``tests/test_triton_tier.py`` starts
this file in its own process, since the variable must be set before ``import triton``), or
compiled on CUDA.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnverify import registry
from attnverify.fast import aaren as fast
from attnverify.fast import prefix_softmax_attention
from attnverify.numerics import identity_tolerance, row_scale, scaled_error
from attnverify.reference import aaren as ref
from attnverify.theory.aaren import scan_case, scan_implementations
from tests.strategies import scan_cases

CUDA = torch.cuda.is_available()
pytestmark = [
    pytest.mark.triton,
    pytest.mark.skipif(
        not (CUDA or os.environ.get("TRITON_INTERPRET") == "1"), reason="needs CUDA or TRITON_INTERPRET=1"
    ),
]
DEVICE = "cuda" if CUDA else "cpu"
F64, F32 = torch.float64, torch.float32


def triton_path(s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return prefix_softmax_attention(s, v, backend="triton")


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=scan_cases(max_n=140), dtype=st.sampled_from([F64, F32]))
def test_forward_matches_reference(case, dtype, nan_scratch) -> None:
    s, v = case.on(dtype, DEVICE)
    out = triton_path(s, v)
    assert out.dtype == dtype and out.shape == v.shape
    err = scaled_error(out.cpu(), case.ground_truth(dtype), row_scale(v.cpu()))
    assert err <= identity_tolerance(dtype, s.shape[-1])


@pytest.mark.parametrize("n", [1, 63, 64, 65, 130])
@pytest.mark.parametrize("dv", [1, 5, 64, 70])
def test_tile_and_column_block_edges(n: int, dv: int, nan_scratch) -> None:
    case = scan_case(n, dv=dv, lead=(2,), scores="spread", mask="leftpad", seed=n * dv)
    s, v = case.on(F64, DEVICE)
    assert scaled_error(triton_path(s, v).cpu(), case.ground_truth(F64), row_scale(v.cpu())) <= 1e-12


@pytest.mark.parametrize("mask", ["none", "random", "leftpad"])
def test_backward_matches_torch_path(mask: str, nan_scratch) -> None:
    case = scan_case(77, dv=6, lead=(3,), scores="wide", mask=mask, seed=4)
    s, v = case.on(F64, DEVICE)
    g = torch.randn(v.shape, dtype=F64, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    grads = []
    for backend in ("triton", "torch"):
        s_, v_ = s.clone().requires_grad_(), v.clone().requires_grad_()
        (prefix_softmax_attention(s_, v_, backend=backend) * g).sum().backward()
        grads.append((s_.grad.cpu(), v_.grad.cpu()))
    (ds, dv), (ds_t, dv_t) = grads
    scale = float(g.abs().max() * (1 + v.abs().max()))
    assert scaled_error(ds, ds_t, scale) <= 1e-12 and scaled_error(dv, dv_t, scale) <= 1e-12


def test_gradcheck() -> None:
    case = scan_case(6, dv=2, lead=(1,), scores="wide", mask="random", seed=6)
    s, v = (t.clone().requires_grad_() for t in case.on(F64, DEVICE))
    assert torch.autograd.gradcheck(triton_path, (s, v))


def test_fully_masked_rows_give_zero(nan_scratch) -> None:
    s = torch.full((2, 70), float("-inf"), dtype=F64, device=DEVICE)
    s[1, 40:] = 0.0
    v = torch.randn(2, 70, 3, dtype=F64, device=DEVICE)
    out = triton_path(s, v)
    assert (out[0] == 0).all() and (out[1, :40] == 0).all()
    assert torch.allclose(out[1, 40:].cpu(), ref.causal_constant_query_attention(s[1, 40:].cpu(), v[1, 40:].cpu()))


@pytest.mark.parametrize("reverse", [False, True])
def test_initial_state_matches_the_torch_engine(reverse: bool, nan_scratch) -> None:
    case = scan_case(75, dv=5, lead=(3,), scores="wide", mask="leftpad", seed=9)
    m, w = case.scores, case.values
    initial = fast.totals(*fast._leaves(m[:, :20], w[:, :20], None))
    out = [
        fast._scan(
            m[:, 20:].to(DEVICE),
            w[:, 20:].to(DEVICE),
            None,
            backend=b,
            reverse=reverse,
            normalize=True,
            initial=tuple(t.to(DEVICE) for t in initial),
        ).y.cpu()
        for b in ("triton", "torch")
    ]
    assert scaled_error(out[0], out[1], row_scale(w)) <= 1e-13


def test_registry_adds_triton_to_the_scan_subject() -> None:
    labels = [i.label for i in scan_implementations(torch.device(DEVICE))]
    assert "fast triton" in labels


@pytest.mark.parametrize(
    ("claim_id", "dtypes"),
    [("aaren.scan_equals_causal_softmax", (F64,)), ("aaren.shift_invariance", (F64, F32))],
)
def test_scan_claims_hold_for_the_kernel(claim_id: str, dtypes: tuple[torch.dtype, ...]) -> None:
    """The claims' own checks on the kernel alone (float64 only for the long scan sweep: the interpreter is slow)."""
    ctx = registry.CheckContext(device=torch.device(DEVICE), dtypes=None if CUDA else dtypes)
    evidence = registry.get(claim_id).run(ctx, impl=triton_path)
    assert evidence.holds, [f.name for f in evidence.failures()]
