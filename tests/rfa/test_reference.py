"""The float64 reference of random-feature attention: weights, scales, kernels, ridge (book/rfa.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sst

from attnverify.reference import rfa as ref
from attnverify.theory import rfa as theory

F64 = torch.float64


def test_paper_not_pinned_and_defaults() -> None:
    assert ref.PAPER_PINNED is False
    assert ref.RFAConfig(s2=0.25, mean="zero", activation="relu", augment=True, radius=1.0) == ref.DEFAULTS


def test_scores_have_unit_variance_on_the_sphere() -> None:
    """Pitfall: the scale of W.  s^2 = 1/4 gives Var(u) = 4 s^2 = 1 (|x~|^2 = 2)."""
    g = torch.Generator().manual_seed(0)
    x0, X = ref.sample_inputs(1, 1, 8, g)
    W = ref.draw_weights(200_000, 8, 0.25, "zero", g)
    u = torch.einsum("k,mkl,l->m", ref.augment(x0[0]), W, ref.augment(X[0, 0]))
    assert abs(float(u.var()) - 1.0) < 5 * math.sqrt(2 / 200_000)


def test_biased_mean_score_is_the_inner_product() -> None:
    """Pitfall: the mean misplaced.  With W0 = diag(I_d, 0) the mean score is <x0, xi>."""
    g = torch.Generator().manual_seed(1)
    x0, X = ref.sample_inputs(1, 3, 5, g)
    W0 = ref.mean_matrix(5, "biased")
    u = torch.einsum("k,kl,il->i", ref.augment(x0[0]), W0, ref.augment(X[0]))
    assert torch.allclose(u, X[0] @ x0[0], atol=1e-15)
    assert W0[-1].abs().sum() == 0 and W0[:, -1].abs().sum() == 0


def test_weights_drawn_once() -> None:
    """Pitfall: W redrawn per call.  Repeated predictions are identical."""
    g = torch.Generator().manual_seed(2)
    x0, X = ref.sample_inputs(40, 3, 4, g)
    model = ref.RandomFeatureAttention(4, 30, seed=3).fit(x0, X, X.sum((1, 2)), 1e-3)
    assert torch.equal(model.predict(x0, X), model.predict(x0, X))


@given(seed=st.integers(0, 2**16), n=st.integers(3, 40), M=st.integers(1, 12))
def test_primal_equals_dual_and_kernel_ridge(seed: int, n: int, M: int) -> None:
    """Pitfall: precision and ridge protocol.  Primal and dual agree to 1e-8; K_hat-ridge = feature ridge."""
    g = torch.Generator().manual_seed(seed)
    x0, X = ref.sample_inputs(n, 3, 4, g)
    y = torch.randn(n, generator=g, dtype=F64)
    model = ref.RandomFeatureAttention(4, M, seed=seed)
    Phi = model.features(x0, X)
    lam = 1e-2
    v_p, v_d = (ref.ridge_solve(Phi, y, lam, M, s) for s in ("primal", "dual"))
    assert torch.allclose(Phi @ v_p, Phi @ v_d, rtol=0, atol=1e-8 * (1 + float(y.abs().max())))
    K = Phi @ Phi.T / M  # kernel ridge: alpha = (K + n lam I)^{-1} y, prediction K alpha
    alpha = torch.linalg.solve(K + n * lam * torch.eye(n, dtype=F64), y)
    assert torch.allclose(K @ alpha, Phi @ v_d, rtol=0, atol=1e-8 * (1 + float(y.abs().max())))


def test_kernel_estimate_is_the_head_mean_with_its_se_over_heads() -> None:
    """``K_hat_M`` is the mean of the per-head products; its SE their SD over heads / sqrt(M) (not over entries)."""
    g = torch.Generator().manual_seed(5)
    x0, X = ref.sample_inputs(3, 4, 5, g)
    x0p, Xp = ref.sample_inputs(3, 4, 5, g)
    model = ref.RandomFeatureAttention(5, 37, 0.25, "biased", "relu", seed=2)
    est, se = model.kernel_estimate(x0, X, x0p, Xp)
    heads = (model.features(x0, X).reshape(3, 37, 6) * model.features(x0p, Xp).reshape(3, 37, 6)).sum(-1)
    assert torch.allclose(est, heads.mean(-1), rtol=1e-14, atol=0)
    assert torch.allclose(se, heads.std(-1) / math.sqrt(37), rtol=1e-14, atol=0)


def test_rf_mlp_input_is_normalised() -> None:
    """Pitfall: RF-MLP input not normalised.  |z| = 1, so pre-activations <w, z> are standard normal."""
    g = torch.Generator().manual_seed(4)
    x0, X = ref.sample_inputs(50, 6, 4, g)
    mlp = ref.RandomFeatureMLP(4, 6, 4000, seed=1)
    z = mlp.inputs(x0, X)
    assert torch.allclose(z.norm(dim=-1), torch.ones(50, dtype=F64))
    pre = z @ mlp.w
    assert abs(float(pre.var()) - 1.0) < 0.05


@given(h=st.integers(-40, 40), k=st.integers(-40, 40), r=st.integers(-100, 100))
def test_bivariate_cdf_matches_scipy(h: int, k: int, r: int) -> None:
    """Owen's-T form vs scipy's bivariate normal, including h = 0, k = 0 and |rho| = 1."""
    hh, kk, rr = h / 10, k / 10, r / 100
    mine = float(ref.bivariate_normal_cdf(hh, kk, rr))
    if abs(rr) == 1:
        want = sst.norm.cdf(min(hh, kk)) if rr > 0 else max(sst.norm.cdf(hh) + sst.norm.cdf(kk) - 1, 0.0)
    else:
        want = float(sst.multivariate_normal([0, 0], [[1, rr], [rr, 1]]).cdf([hh, kk]))
    assert abs(mine - want) < 1e-7


def test_diagonal_kernel_is_finite_and_equals_the_rho_one_value() -> None:
    """Pitfall: arccos NaN when rho rounds above 1.  K(X, X) is finite and equals the rho = 1 moment."""
    g = torch.Generator().manual_seed(5)
    x0, X = ref.sample_inputs(3, 4, 6, g)
    for mean in ("zero", "biased"):
        K = ref.limit_kernel(x0, X, x0, X, 0.25, mean)
        kap = ref.kappa(x0, X, x0, X, 0.25, mean)
        assert torch.isfinite(K).all()
        a, _, e2, _, _ = ref.score_moments(x0, X, x0, X, 0.25, mean)
        eta = e2[..., 0].sqrt().numpy()
        diag = ref.relu_product_moment(a[..., 0].numpy(), a[..., 0].numpy(), eta, eta, np.ones_like(eta))
        assert np.allclose(torch.diagonal(kap, dim1=1, dim2=2).numpy(), diag, rtol=1e-12)


@pytest.mark.parametrize(("mean", "act"), theory.KERNEL_CASES)
def test_closed_forms_match_quadrature(mean: str, act: str) -> None:
    for m, a, p in theory.moment_cases(7):
        if (m, a) == (mean, act):
            exact = theory.quadrature_moment(*p, a)
            assert abs(theory.closed_moment(m, a, p) - exact) <= 1e-8 * abs(exact)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d": 0, "M": 3}, "d:"),
        ({"d": 3, "M": 0}, "M:"),
        ({"d": 3, "M": 2, "s2": 0.0}, "s2:"),
        ({"d": 3, "M": 2, "mean": "shifted"}, "mean:"),
        ({"d": 3, "M": 2, "activation": "tanh"}, "activation:"),
    ],
)
def test_bad_model_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ref.RandomFeatureAttention(**kwargs)


def test_predict_before_fit_raises() -> None:
    with pytest.raises(ValueError, match="predict"):
        ref.RandomFeatureAttention(3, 2).predict(torch.zeros(1, 3, dtype=F64), torch.zeros(1, 2, 3, dtype=F64))
