"""The Triton kernels against the float64 reference, forward and backward.

Runs under ``TRITON_INTERPRET=1`` on the CPU (small batches; ``tests/test_triton_tier.py`` starts this
file in its own process, since the variable must be set before ``import triton``), or compiled on CUDA.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from attnverify import registry
from attnverify.fast import segment_linear_attention
from attnverify.numerics import identity_tolerance, scaled_error
from attnverify.reference import mpnn_vn as ref
from attnverify.theory.mpnn_vn import _fast, graph_case
from tests.strategies import graph_batches
from tests.triton_support import DEVICE, TRITON_MARKS

pytestmark = TRITON_MARKS
F64, F32 = torch.float64, torch.float32


def triton_path(case, dtype):  # type: ignore[no-untyped-def]
    x, _, batch, Wq, Wk, Wv, *omega = case.args(dtype, DEVICE)
    feature_map = "favor+" if omega else "elu1"
    out = segment_linear_attention(
        x, batch, Wq, Wk, Wv, feature_map, omega=omega[0] if omega else None, backend="triton"
    )
    return out.cpu()


@settings(max_examples=10)
@given(case=graph_batches(max_graphs=4, max_nodes=40))
def test_elu1_matches_reference(case) -> None:
    for dtype in (F64, F32):
        err = scaled_error(triton_path(case, dtype), case.ground_truth(dtype), case.scale(dtype))
        assert err <= identity_tolerance(dtype, max(case.sizes))


@settings(max_examples=5)
@given(case=graph_batches(max_graphs=3, max_nodes=40, favor=True))
def test_favor_matches_reference(case) -> None:
    for dtype in (F64, F32):
        err = scaled_error(triton_path(case, dtype), case.ground_truth(dtype), case.scale(dtype))
        assert err <= identity_tolerance(dtype, max(case.sizes))


def test_wide_features_and_values_span_several_blocks() -> None:
    """m = 70 FAVOR+ features and d_v = 3: the feature loop of the readout and the masks at block edges."""
    case = graph_case((17, 1, 33), "empty", seed=6, omega=ref.gaussian_omega(70, 4, seed=6))
    assert scaled_error(triton_path(case, F64), case.ground_truth(F64), case.scale(F64)) <= identity_tolerance(F64)


def test_empty_graphs() -> None:
    case = graph_case((3, 20), "empty", seed=7)
    x, _, batch, Wq, Wk, Wv = case.args(F64, DEVICE)
    out = segment_linear_attention(x, batch * 2, Wq, Wk, Wv, num_graphs=4, backend="triton").cpu()
    assert scaled_error(out, case.ground_truth(F64), case.scale(F64)) <= identity_tolerance(F64)


def test_gradcheck() -> None:
    case = graph_case((3, 1, 4), "empty", seed=8)
    x, _, batch, Wq, Wk, Wv = case.args(F64, DEVICE)
    inputs = tuple(t.clone().requires_grad_() for t in (x, Wq, Wk, Wv))

    def fn(x, Wq, Wk, Wv):  # type: ignore[no-untyped-def]
        return segment_linear_attention(x, batch, Wq, Wk, Wv, backend="triton")

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize(("claim_id", "feature_map"), [("mpnn_vn.performer_exact", "favor+")])
def test_claim_holds_for_the_kernel(claim_id: str, feature_map: str) -> None:
    evidence = registry.get(claim_id).run(impl=_fast(feature_map, "triton"), label="fast segment triton")
    assert evidence.holds, [(f.name, f.metric, f.tolerance) for f in evidence.failures()]
