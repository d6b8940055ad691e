"""The Triton features kernel against the float64 reference, at odd sizes (d = 7, N = 5).

Runs under ``TRITON_INTERPRET=1`` on the CPU (``tests/test_triton_tier.py`` starts it in its own
process) or compiled on CUDA.
"""

from __future__ import annotations

import pytest
import torch

from attnverify.fast import random_feature_attention_features
from attnverify.numerics import scaled_error
from attnverify.reference import rfa as ref
from tests.triton_support import DEVICE, TRITON_MARKS

pytestmark = TRITON_MARKS
F64, F32 = torch.float64, torch.float32


def inputs(seed: int, n: int, N: int, d: int, M: int, mean: str = "biased"):
    g = torch.Generator().manual_seed(seed)
    x0, X = ref.sample_inputs(n, N, d, g)
    return x0, X, ref.draw_weights(M, d, 0.25, mean, g)


@pytest.mark.parametrize(("n", "N", "d", "M"), [(3, 5, 7, 5), (2, 1, 1, 3), (1, 9, 4, 70), (4, 2, 8, 1)])
@pytest.mark.parametrize("activation", ["relu", "exp"])
@pytest.mark.parametrize("dtype", [F64, F32])
def test_kernel_matches_reference_with_the_same_w(n, N, d, M, activation, dtype) -> None:
    """Padding D to a power of two must add zeros only; heads past M are masked (pitfall: padding, tails)."""
    x0, X, W = inputs(n + N + d + M, n, N, d, M)
    out = random_feature_attention_features(
        *(t.to(dtype).to(DEVICE) for t in (x0, X, W)), activation, backend="triton"
    ).cpu()
    truth = ref.features(*(t.to(dtype).to(F64) for t in (x0, X, W)), activation)
    assert out.dtype == dtype and out.shape == truth.shape
    assert scaled_error(out, truth, truth.abs().amax(-1, keepdim=True)) <= (1e-10 if dtype == F64 else 1e-5)


def test_kernel_backward_matches_torch() -> None:
    x0, X, W = (t.to(DEVICE) for t in inputs(1, 2, 5, 7, 3))
    grads = []
    for backend in ("triton", "torch"):
        args = [t.clone().requires_grad_() for t in (x0, X, W)]
        out = random_feature_attention_features(*args, backend=backend)
        out.sum().backward()
        grads.append([a.grad for a in args])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
