"""The fast random-feature attention features and limit-kernel Gram vs the float64 reference (book/rfa.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnverify.fast import limit_kernel_gram, random_feature_attention_features
from attnverify.fast import rfa as fast
from attnverify.numerics import identity_tolerance, scaled_error
from attnverify.reference import rfa as ref

F64, F32 = torch.float64, torch.float32


def inputs(seed: int, n: int, N: int, d: int, M: int, mean: str = "zero", scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    x0, X = ref.sample_inputs(n, N, d, g, radius=scale)
    return x0, X, ref.draw_weights(M, d, 0.25, mean, g)


@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 9),
    N=st.integers(1, 11),
    d=st.integers(1, 9),
    M=st.integers(1, 17),
    mean=st.sampled_from(["zero", "biased"]),
    activation=st.sampled_from(["relu", "exp"]),
    chunk=st.sampled_from([None, 1, 2, 5]),
    dtype=st.sampled_from([F64, F32]),
)
def test_features_match_reference_with_the_same_w(seed, n, N, d, M, mean, activation, chunk, dtype) -> None:
    """Pitfall: transposed score or reshape order.  Equal to the reference with the same W: 1e-10 / 1e-5."""
    x0, X, W = inputs(seed, n, N, d, M, mean)
    out = random_feature_attention_features(x0.to(dtype), X.to(dtype), W.to(dtype), activation, chunk_heads=chunk)
    assert out.dtype == dtype and out.shape == (n, M * (d + 1))
    truth = ref.features(x0.to(dtype).to(F64), X.to(dtype).to(F64), W.to(dtype).to(F64), activation)
    scale = truth.abs().amax(-1, keepdim=True)
    assert scaled_error(out, truth, scale) <= (1e-10 if dtype == F64 else 1e-5)


@pytest.mark.parametrize("scale", [1e-6, 1e3])
def test_extreme_input_scales(scale: float) -> None:
    x0, X, W = inputs(3, 4, 5, 7, 6, "biased", scale)
    out = random_feature_attention_features(x0, X, W)
    truth = ref.features(x0, X, W)
    assert torch.isfinite(out).all()
    assert scaled_error(out, truth, truth.abs().amax(-1, keepdim=True).clamp_min(1e-300)) <= 1e-12


def test_unwritten_output_cannot_pass(nan_scratch) -> None:
    x0, X, W = inputs(4, 6, 3, 5, 11)
    out = random_feature_attention_features(x0, X, W, chunk_heads=4)
    assert not torch.isnan(out).any()


def test_gradcheck_all_inputs() -> None:
    x0, X, W = inputs(5, 3, 4, 3, 5, "biased")
    args = tuple(t.clone().requires_grad_() for t in (x0, X, W))
    assert torch.autograd.gradcheck(lambda a, b, c: random_feature_attention_features(a, b, c, chunk_heads=2), args)
    assert torch.autograd.gradcheck(lambda a, b, c: random_feature_attention_features(a, b, c, "exp"), args)


def test_low_precision_accumulates_in_float32() -> None:
    x0, X, W = inputs(6, 4, 6, 5, 7)
    out = random_feature_attention_features(x0.to(torch.bfloat16), X.to(torch.bfloat16), W.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    truth = ref.features(*(t.to(torch.bfloat16).to(F64) for t in (x0, X, W)))
    assert scaled_error(out, truth, truth.abs().amax(-1, keepdim=True)) <= identity_tolerance(torch.bfloat16)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (
            (torch.zeros(2, 3, dtype=F64), torch.zeros(2, 4, 3), torch.zeros(5, 4, 4)),
            TypeError,
            "X: expected the dtype",
        ),
        (
            (torch.zeros(2, 3, dtype=F64), torch.zeros(3, 4, 3, dtype=F64), torch.zeros(5, 4, 4, dtype=F64)),
            ValueError,
            "X:",
        ),
        (
            (torch.zeros(2, 3, dtype=F64), torch.zeros(2, 4, 2, dtype=F64), torch.zeros(5, 4, 4, dtype=F64)),
            ValueError,
            "X:",
        ),
        (
            (torch.zeros(2, 3, dtype=F64), torch.zeros(2, 4, 3, dtype=F64), torch.zeros(5, 3, 3, dtype=F64)),
            ValueError,
            "D = d",
        ),
        (
            (torch.zeros(2, 3, dtype=F64), torch.zeros(2, 4, 3, dtype=F64), torch.zeros(0, 4, 4, dtype=F64)),
            ValueError,
            "W:",
        ),
        (
            (torch.zeros(2, 3, dtype=F64), torch.zeros(2, 0, 3, dtype=F64), torch.zeros(1, 4, 4, dtype=F64)),
            ValueError,
            "key",
        ),
        (
            (torch.zeros(3, dtype=F64), torch.zeros(2, 4, 3, dtype=F64), torch.zeros(1, 4, 4, dtype=F64)),
            ValueError,
            "x0:",
        ),
        ((np.zeros((2, 3)), torch.zeros(2, 4, 3, dtype=F64), torch.zeros(1, 4, 4, dtype=F64)), TypeError, "x0:"),
        (
            (torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, 4, 3), torch.zeros(1, 4, 4)),
            TypeError,
            "x0: expected dtype",
        ),
    ],
)
def test_bad_input_names_the_argument(args, error, match) -> None:
    with pytest.raises(error, match=match):
        random_feature_attention_features(*args)


def test_bad_activation_and_chunk() -> None:
    x0, X, W = inputs(7, 2, 3, 3, 2)
    with pytest.raises(ValueError, match="activation"):
        random_feature_attention_features(x0, X, W, "gelu")
    with pytest.raises(ValueError, match="chunk_heads"):
        random_feature_attention_features(x0, X, W, chunk_heads=0)


# ---------------------------------------------------------------------------
# Limit-kernel Gram and the bivariate normal CDF
# ---------------------------------------------------------------------------


def test_bivariate_cdf_matches_scipy_to_1e7() -> None:
    rng = np.random.default_rng(0)
    h, k = rng.normal(size=(2, 6000)) * 2.5
    r = np.concatenate(
        [rng.uniform(-1, 1, 3000), 1 - 10 ** rng.uniform(-16, 0, 1500), -(1 - 10 ** rng.uniform(-16, 0, 1500))]
    )
    r[:40], r[40:80], r[80:120] = 1.0, 0.0, -1.0
    k[120:200] = h[120:200]
    r[120:200] = 1 - 10.0 ** -rng.uniform(3, 15, 80)
    h[200:220] = 0.0
    mine = fast.bivariate_normal_cdf(*(torch.tensor(t) for t in (h, k, r))).numpy()
    assert np.abs(mine - ref.bivariate_normal_cdf(h, k, r)).max() < 1e-7
    # float32 takes fewer nodes (fast._GL_RULES_F32); judged at the float32-rounded arguments, within 1e-6
    h32, k32, r32 = (torch.tensor(t, dtype=torch.float32) for t in (h, k, r))
    mine32 = fast.bivariate_normal_cdf(h32, k32, r32).double().numpy()
    truth32 = ref.bivariate_normal_cdf(*(t.double().numpy() for t in (h32, k32, r32)))
    assert np.abs(mine32 - truth32).max() < 1e-6


DIAGONAL_RTOL = {F64: 1e-7, F32: 1e-3}
"""At rho = 1 the biased moment is only Hölder-1/2 in rho: rounding rho by a few ulps moves it by about
sqrt(8 u) relatively (3e-8 in float64, 1e-3 in float32), so the pair holding K(X, X) gets that allowance."""


@given(seed=st.integers(0, 2**16), n=st.integers(1, 5), m=st.integers(1, 4), N=st.integers(1, 6), d=st.integers(2, 7))
def test_gram_matches_reference_pairs(seed, n, m, N, d) -> None:
    g = torch.Generator().manual_seed(seed)
    x0, X = ref.sample_inputs(n, N, d, g)
    x0p, Xp = ref.sample_inputs(m, N, d, g)
    x0p[0], Xp[0] = x0[0], X[0]  # column 0 holds a diagonal entry K(X, X): rho = 1 on some key pairs
    for mean, act in (("zero", "relu"), ("biased", "relu"), ("zero", "exp")):
        G = limit_kernel_gram(x0, X, x0p, Xp, 0.25, mean, act)
        G32 = limit_kernel_gram(x0.float(), X.float(), x0p.float(), Xp.float(), 0.25, mean, act)
        for j in range(m):
            want = ref.limit_kernel(
                x0, X, x0p[j : j + 1].expand(n, -1), Xp[j : j + 1].expand(n, -1, -1), 0.25, mean, act
            )
            near_one = j == 0 and mean == "biased"
            assert ((G[:, j] - want).abs() / want.abs()).max() <= (DIAGONAL_RTOL[F64] if near_one else 1e-10)
            tol = DIAGONAL_RTOL[F32] if near_one else (1e-5 if mean == "zero" else 1e-4)
            assert ((G32[:, j].double() - want).abs() / want.abs()).max() <= tol


def test_gram_row_chunks_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """One row per chunk (``GRAM_CHUNK`` below one row's entries) gives the Gram of a single pass (to rounding:
    the key inner products are GEMMs of other shapes)."""
    g = torch.Generator().manual_seed(11)
    x0, X = ref.sample_inputs(5, 4, 3, g)
    x0p, Xp = ref.sample_inputs(3, 4, 3, g)
    whole = limit_kernel_gram(x0, X, x0p, Xp, mean="biased")
    monkeypatch.setattr(fast, "GRAM_CHUNK", 1)
    assert scaled_error(limit_kernel_gram(x0, X, x0p, Xp, mean="biased"), whole, whole.abs()) <= identity_tolerance(F64)


def test_gram_gradcheck() -> None:
    g = torch.Generator().manual_seed(9)
    x0, X = ref.sample_inputs(2, 3, 4, g)
    x0p, Xp = ref.sample_inputs(2, 3, 4, g)
    args = tuple(t.clone().requires_grad_() for t in (x0, X, x0p, Xp))
    for mean, act in (("zero", "relu"), ("biased", "relu"), ("zero", "exp")):
        assert torch.autograd.gradcheck(lambda *a, m=mean, ac=act: limit_kernel_gram(*a, 0.25, m, ac), args)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"s2": 0.0}, ValueError, "s2"),
        ({"mean": "tilted"}, ValueError, "mean"),
        ({"activation": "tanh"}, ValueError, "activation"),
    ],
)
def test_gram_bad_arguments(kwargs, error, match) -> None:
    g = torch.Generator().manual_seed(0)
    x0, X = ref.sample_inputs(2, 3, 4, g)
    with pytest.raises(error, match=match):
        limit_kernel_gram(x0, X, x0, X, **kwargs)
    with pytest.raises(ValueError, match="Xp"):
        limit_kernel_gram(x0, X, x0, X[:, :2])
