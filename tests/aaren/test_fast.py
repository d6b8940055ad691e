"""Property tests of the fast torch path of ``prefix_softmax_attention`` against the float64 reference."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnverify.fast import aaren as fast
from attnverify.fast import prefix_softmax_attention
from attnverify.numerics import identity_tolerance, row_scale, scaled_error
from attnverify.reference import aaren as ref
from attnverify.theory.aaren import masked_junk, scan_case
from tests.aaren.scan_checks import carry_errors, carry_tolerance, gradient_scales, mutant_module
from tests.strategies import scan_cases

F64, F32 = torch.float64, torch.float32
NEG_INF = float("-inf")


def torch_path(s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return prefix_softmax_attention(s, v, backend="torch")


@given(case=scan_cases(), dtype=st.sampled_from([F64, F32]))
def test_matches_reference(case, dtype) -> None:
    s, v = case.on(dtype, "cpu")
    out = torch_path(s, v)
    assert out.dtype == dtype and out.shape == v.shape
    n = s.shape[-1]
    assert scaled_error(out, case.ground_truth(dtype), row_scale(v)) <= identity_tolerance(dtype, n)


@pytest.mark.parametrize("n", [255, 256, 257, 4095, 4097])
def test_long_sequences_cross_chunk_levels(n: int) -> None:
    """Lengths around CHUNK^2 and CHUNK^3 exercise every level of the recursive carry."""
    assert fast.CHUNK**2 == 256 and fast.CHUNK**3 == 4096
    for kind, mask in (("wide", "random"), ("spike", "leftpad"), ("ramp", "none")):
        case = scan_case(n, dv=3, lead=(2,), scores=kind, mask=mask, seed=n)
        s, v = case.on(F64, "cpu")
        err = scaled_error(torch_path(s, v), ref.sequential_scan(s, v), row_scale(v))
        assert err <= identity_tolerance(F64, n)


@given(case=scan_cases(max_n=70), data=st.data())
def test_backward_matches_reference_autograd(case, data) -> None:
    """The reverse-scan backward equals autograd through the reference scan, and has no NaN."""
    s, v = case.on(F64, "cpu")
    g = torch.randn(v.shape, generator=torch.Generator().manual_seed(data.draw(st.integers(0, 99))), dtype=F64)
    grads = []
    for fn in (torch_path, ref.sequential_scan):
        s_, v_ = s.clone().requires_grad_(), v.clone().requires_grad_()
        (fn(s_, v_) * g).sum().backward()
        grads.append((s_.grad, v_.grad))
    (ds, dv), (ds_ref, dv_ref) = grads
    assert not ds.isnan().any() and not dv.isnan().any()
    ds_scale, dv_scale = gradient_scales(g, v)
    assert scaled_error(ds, ds_ref, ds_scale) <= 1e-11
    assert scaled_error(dv, dv_ref, dv_scale) <= 1e-11


@pytest.mark.parametrize("n", [1, 2, 17, 40])
@pytest.mark.parametrize("mask", ["none", "random", "leftpad"])
def test_gradcheck(n: int, mask: str) -> None:
    case = scan_case(n, dv=3, lead=(2,), scores="wide", mask=mask, seed=n)
    s, v = (t.clone().requires_grad_() for t in case.on(F64, "cpu"))
    assert torch.autograd.gradcheck(torch_path, (s, v))


def test_fully_masked_prefix_is_zero_with_zero_gradient() -> None:
    s = torch.tensor([[NEG_INF, NEG_INF, 0.5, NEG_INF, 2.0], [NEG_INF] * 5], dtype=F64, requires_grad=True)
    v = torch.randn(2, 5, 3, dtype=F64, requires_grad=True)
    out = torch_path(s, v)
    assert (out[0, :2] == 0).all() and (out[1] == 0).all()
    assert torch.equal(out[0, 2], v[0, 2])  # o at the first live token is that token's value
    out.sum().backward()
    assert torch.isfinite(s.grad).all() and torch.isfinite(v.grad).all()
    assert (v.grad[1] == 0).all() and (s.grad[1] == 0).all()
    assert (v.grad[0, [0, 1, 3]] == 0).all() and (s.grad[0, [0, 1, 3]] == 0).all()


def _with_values(v: torch.Tensor, where: torch.Tensor, junk: torch.Tensor | float) -> torch.Tensor:
    out = v.clone()
    out[where] = junk if isinstance(junk, float) else junk.to(v.dtype).view(-1, v.shape[-1])
    return out


@pytest.mark.parametrize("junk", [1e300, math.nan, math.inf, -math.inf, "mixed"])
@pytest.mark.parametrize("n", [7, 50, 300])
def test_masked_values_are_ignored_even_when_not_finite(junk, n: int) -> None:
    """Padding garbage in masked tokens reaches no output and no gradient; masked tokens' gradients are 0."""
    case = scan_case(n, dv=4, lead=(3,), scores="normal", mask="random", seed=n)
    s, v = case.on(F64, "cpu")
    masked = s == NEG_INF
    fill = masked_junk(int(masked.sum()) * 4, torch.Generator().manual_seed(1)) if junk == "mixed" else junk
    v2 = _with_values(v, masked, fill)
    g = torch.randn(v.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    results = []
    for values in (v, v2):
        s_, v_ = s.clone().requires_grad_(), values.clone().requires_grad_()
        out = torch_path(s_, v_)
        (out * g).sum().backward()
        results.append((out.detach(), s_.grad, v_.grad))
    (out, ds, dv), (out2, ds2, dv2) = results
    assert torch.equal(out2, out) and torch.isfinite(out2).all()
    assert torch.equal(ds2, ds) and torch.equal(dv2, dv)
    assert (ds2[masked] == 0).all() and (dv2[masked] == 0).all()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(("n", "t"), [(8, 5), (16, 0), (40, 31), (40, 32), (300, 150)])
@pytest.mark.parametrize("dtype", [F64, F32])
def test_nonfinite_value_is_causal(bad: float, n: int, t: int, dtype: torch.dtype) -> None:
    """A NaN/±inf value at token t leaves outputs before t bit for bit unchanged (every column, every
    other row) and the gradients of earlier tokens under a loss on earlier outputs; outputs of its
    column from t on are non-finite.  Covers t inside a chunk, at chunk edges and under two carry levels."""
    case = scan_case(n, dv=3, lead=(2,), scores="wide", seed=n + t)
    s, v = case.on(dtype, "cpu")
    v2 = v.clone()
    v2[0, t, 1] = bad
    out, out2 = torch_path(s, v), torch_path(s, v2)
    assert torch.equal(out2[:, :t], out[:, :t]) and torch.equal(out2[1], out[1])
    assert torch.equal(out2[0, :, [0, 2]], out[0, :, [0, 2]])
    assert not torch.isfinite(out2[0, t:, 1]).any()
    if t == 0:
        return
    grads = []
    for values in (v, v2):
        s_, v_ = s.clone().requires_grad_(), values.clone().requires_grad_()
        torch_path(s_, v_)[:, :t].sum().backward()
        grads.append((s_.grad[:, :t], v_.grad[:, :t]))
    (ds, dv), (ds2, dv2) = grads
    assert torch.equal(ds2, ds) and torch.equal(dv2, dv) and torch.isfinite(ds2).all()


def test_aaren_forward_ignores_dropped_tokens_features() -> None:
    """``Aaren.forward`` and ``step``: NaN/±inf features of a dropped token reach no output and no gradient."""
    torch.manual_seed(0)
    layer = fast.Aaren(8, 2, dtype=F64)
    x = torch.randn(2, 20, 8, dtype=F64)
    mask = torch.rand(2, 20, generator=torch.Generator().manual_seed(3)) > 0.3
    x2 = x.clone()
    x2[~mask] = torch.tensor([math.nan, math.inf, -math.inf, 1e300], dtype=F64).repeat(2)
    grads = []
    for inp in (x, x2):
        layer.zero_grad()
        xi = inp.clone().requires_grad_()
        y = layer(xi, mask)
        y.sum().backward()
        grads.append((y.detach(), xi.grad, [p.grad.clone() for p in layer.parameters()]))
    (y, dx, dp), (y2, dx2, dp2) = grads
    assert torch.equal(y2, y) and torch.isfinite(y2).all()
    assert torch.equal(dx2, dx) and (dx2[~mask] == 0).all()
    assert all(torch.equal(a, b) for a, b in zip(dp2, dp, strict=True))
    state = layer.init_state(2)
    with torch.no_grad():
        for k in range(20):
            y_k, state = layer.step(x2[:, k], state, mask[:, k])
            assert scaled_error(y_k, y[:, k], row_scale(y)[:, 0]) <= identity_tolerance(F64, 20)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_accumulates_in_float32(dtype: torch.dtype) -> None:
    """Constant scores and v_i = i/N: a bf16/fp16 counter would stall (bf16 cannot count past 256)."""
    case = scan_case(2048, dv=2, lead=(1,), scores="constant", values="ramp")
    s, v = case.on(dtype, "cpu")
    out = torch_path(s, v)
    assert out.dtype == dtype
    assert scaled_error(out, case.ground_truth(dtype), row_scale(v)) <= identity_tolerance(dtype, 2048)


def test_low_precision_backward_returns_input_dtype() -> None:
    s = torch.randn(2, 33, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(2, 33, 4, dtype=torch.bfloat16, requires_grad=True)
    torch_path(s, v).float().sum().backward()
    assert s.grad.dtype == torch.bfloat16 and v.grad.dtype == torch.bfloat16
    assert torch.isfinite(s.grad.float()).all()


def test_non_contiguous_inputs() -> None:
    case = scan_case(70, dv=5, lead=(4,), scores="wide", seed=2)
    s, v = case.on(F64, "cpu")
    s_t, v_t = s.t().contiguous().t(), v.transpose(0, 1).contiguous().transpose(0, 1)
    assert not s_t.is_contiguous() and not v_t.is_contiguous()
    assert torch.equal(torch_path(s_t, v_t), torch_path(s, v))
    assert torch.equal(torch_path(s[:, ::2], v[:, ::2]), torch_path(s[:, ::2].contiguous(), v[:, ::2].contiguous()))


@pytest.mark.parametrize(("n", "dv"), [(0, 3), (5, 0), (0, 0)])
def test_empty_shapes(n: int, dv: int) -> None:
    s, v = torch.randn(2, n, dtype=F64), torch.randn(2, n, dv, dtype=F64)
    out = torch_path(s, v)
    assert out.shape == (2, n, dv)


def test_single_row_without_batch_dims() -> None:
    s, v = torch.tensor([0.0, 5.0, 10.0], dtype=F64), torch.tensor([[1.0], [2.0], [3.0]], dtype=F64)
    assert scaled_error(torch_path(s, v), ref.causal_constant_query_attention(s, v), 3.0) <= 1e-15


def test_nan_and_positive_infinity_propagate() -> None:
    v = torch.ones(1, 4, 2, dtype=F64)
    for bad in (float("nan"), float("inf")):
        s = torch.tensor([[0.0, 1.0, bad, 2.0]], dtype=F64)
        out = torch_path(s, v)
        assert torch.isfinite(out[0, :2]).all() and out[0, 2:].isnan().all()


def test_default_backend_on_cpu_is_torch() -> None:
    s, v = torch.randn(3, 9, dtype=F64), torch.randn(3, 9, 2, dtype=F64)
    assert torch.equal(prefix_softmax_attention(s, v), torch_path(s, v))


@pytest.mark.parametrize(
    ("scores", "values", "error", "match"),
    [
        (torch.zeros(2, 5), torch.zeros(2, 4, 3), ValueError, "values: expected shape"),
        (torch.zeros(2, 5), torch.zeros(3, 5, 3), ValueError, "values: expected shape"),
        (torch.zeros(2, 5), torch.zeros(2, 5), ValueError, "values: expected shape"),
        (torch.zeros(5), torch.zeros(1, 5, 3), ValueError, "values: expected shape"),
        (torch.zeros(()), torch.zeros(3), ValueError, "scores: expected shape"),
        (torch.zeros(2, 5, dtype=torch.int64), torch.zeros(2, 5, 3), TypeError, "scores: expected dtype"),
        (torch.zeros(2, 5), torch.zeros(2, 5, 3, dtype=torch.int32), TypeError, "values: expected dtype"),
        (torch.zeros(2, 5), torch.zeros(2, 5, 3, dtype=F64), TypeError, "values: expected the dtype of scores"),
        ([0.0, 1.0], torch.zeros(2, 3), TypeError, "scores: expected a torch.Tensor"),
        (torch.zeros(2, 5), None, TypeError, "values: expected a torch.Tensor"),
        (torch.zeros(2, 5), torch.zeros(2, 5, 3, device="meta"), ValueError, "values: expected the device of scores"),
    ],
)
def test_bad_input_raises_naming_the_argument(scores, values, error, match) -> None:
    with pytest.raises(error, match=match):
        prefix_softmax_attention(scores, values)


def test_bad_backend() -> None:
    s, v = torch.zeros(2, 5), torch.zeros(2, 5, 3)
    with pytest.raises(ValueError, match="backend: expected None, 'torch', 'triton' or 'triton_tiled'"):
        prefix_softmax_attention(s, v, backend="cuda")


def test_triton_backend_on_cpu_without_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="backend: 'triton' needs"):
        prefix_softmax_attention(torch.zeros(2, 5), torch.zeros(2, 5, 3), backend="triton")


def test_combine_identity_and_guard() -> None:
    e = (torch.tensor([NEG_INF]), torch.tensor([0.0]), torch.zeros(1, 2))
    x = (torch.tensor([-800.0]), torch.tensor([1.5]), torch.tensor([[2.0, -1.0]]))
    for a, b in ((e, x), (x, e)):
        out = fast.combine(a, b)
        assert all(torch.equal(p, q) for p, q in zip(out, x, strict=True))
    ee = fast.combine(e, e)
    assert ee.m.item() == NEG_INF and ee.u.item() == 0 and (ee.w == 0).all()


@given(case=scan_cases(max_n=140), data=st.data())
def test_initial_state_continues_a_scan(case, data) -> None:
    """Scanning the tail from the total of the head gives the tail of the full scan (the sequence-parallel step)."""
    s, v = case.scores, case.values
    rows, n, dv = s[..., 0].numel(), s.shape[-1], v.shape[-1]
    split = data.draw(st.integers(0, n))
    m, w = s.reshape(rows, n), v.reshape(rows, n, dv)
    head = fast.totals(*fast._leaves(m[:, :split], w[:, :split], None)) if split else None
    tail = fast._scan(m[:, split:], w[:, split:], None, backend="torch", reverse=False, normalize=True, initial=head)
    full = ref.causal_constant_query_attention(s, v).reshape(rows, n, dv)[:, split:]
    assert scaled_error(tail.y, full, row_scale(v.reshape(rows, n, dv))) <= 1e-12


# ---------------------------------------------------------------------------
# Chunk carries: judged where they live, and chunk-level mutants rejected
# ---------------------------------------------------------------------------

CARRY_LENGTHS = (3 * fast.CHUNK + 5, 20 * fast.CHUNK + 3)
"""Four chunks (ragged), and 21 chunks, whose totals are themselves scanned in chunks (two carry levels)."""

CHUNK_CARRY_MUTANTS = {
    "carry max from the chunk only": (
        "carry_m = torch.cat([initial[0][:, None], inc.r[:, :-1]], 1)",
        "carry_m = torch.cat([initial[0][:, None], M[:, :-1]], 1)",
    ),
    "carry count from the chunk only": (
        "carry_u = torch.cat([initial[1][:, None], inc.u[:, :-1]], 1)",
        "carry_u = torch.cat([initial[1][:, None], tot_u[:, :-1]], 1)",
    ),
    "carry sums one chunk ahead": ("inc.y[:, :-1]", "inc.y[:, 1:]"),
    "carry not rescaled to the running max": (
        "alpha = _alpha(carry[0][..., None], r)",
        "alpha = (carry[0][..., None] > NEG_INF).to(r.dtype).expand_as(r)",
    ),
    "carried sums not normalized": ("weight = alpha if scale is None else alpha * scale", "weight = alpha"),
}


def _torch_engine(module) -> functools.partial:
    return functools.partial(module._scan, backend="torch")


@pytest.mark.parametrize("n", CARRY_LENGTHS)
def test_chunk_carries_with_ordinary_scores(n: int) -> None:
    """Forward, reverse (backward) and initial-state scans across chunks equal a float64 fold of ``⊕``."""
    errors = carry_errors(_torch_engine(fast), n)
    assert max(errors.values()) <= carry_tolerance(n), errors


@pytest.mark.parametrize("mutant", sorted(CHUNK_CARRY_MUTANTS))
def test_chunk_carry_mutants_are_rejected(mutant: str, tmp_path: Path) -> None:
    """Each planted carry bug (one substitution in this module's source) fails the carry check at every length."""
    module = mutant_module(fast, *CHUNK_CARRY_MUTANTS[mutant], tmp_path)
    for n in CARRY_LENGTHS:
        errors = carry_errors(_torch_engine(module), n)
        assert max(errors.values()) > 1e3 * carry_tolerance(n), (mutant, n, errors)
