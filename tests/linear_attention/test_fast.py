"""The chunked causal linear attention against the reference forms (quadratic and recurrent)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnverify.fast import linear_attention
from attnverify.fast.linear_attention import CHUNK, causal_linear_attention
from attnverify.numerics import scaled_error
from attnverify.reference import linear_attention as ref
from tests.strategies import lengths

F64 = torch.float64


def inputs(t: int, seed: int, *, positive: bool, dv: int = 3) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    make = (
        (lambda *s: torch.rand(*s, generator=g, dtype=F64) + 0.1)
        if positive
        else (lambda *s: torch.randn(*s, generator=g, dtype=F64))
    )
    return make(2, 3, t, 4), make(2, 3, t, 4), torch.randn(2, 3, t, dv, generator=g, dtype=F64)


def bound(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, normalize: bool) -> torch.Tensor:
    """The same sums on absolute values: the scale each output's rounding is measured against."""
    return ref.quadratic(q.abs(), k.abs(), v.abs(), normalize=normalize).amax(dim=(-2, -1), keepdim=True)


@given(t=lengths, seed=st.integers(0, 999), normalize=st.booleans())
def test_matches_quadratic_and_recurrent(t: int, seed: int, normalize: bool) -> None:
    q, k, v = inputs(t, seed, positive=normalize)
    out = causal_linear_attention(q, k, v, normalize=normalize)
    scale = bound(q, k, v, normalize)
    assert scaled_error(out, ref.quadratic(q, k, v, normalize=normalize), scale) <= 1e-13
    assert scaled_error(out, ref.recurrent(q, k, v, normalize=normalize), scale) <= 1e-13


@pytest.mark.parametrize("t", [1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5])
def test_initial_state_is_the_earlier_tokens(t: int) -> None:
    """Splitting a sequence: the second half with the first half's K^T V as initial state (LASP-2)."""
    for normalize in (False, True):
        q, k, v = inputs(2 * t, t, positive=normalize)
        head, tail = slice(0, t), slice(t, 2 * t)
        vv = torch.cat([v, torch.ones_like(v[..., :1])], -1) if normalize else v
        state = k[:, :, head].transpose(-1, -2) @ vv[:, :, head]
        second = causal_linear_attention(
            q[:, :, tail], k[:, :, tail], v[:, :, tail], normalize=normalize, initial_state=state
        )
        whole = causal_linear_attention(q, k, v, normalize=normalize)[:, :, tail]
        assert scaled_error(second, whole, bound(q, k, v, normalize)) <= 1e-13


@pytest.mark.parametrize("normalize", [False, True])
def test_gradcheck(normalize: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """With chunks of 4, seven tokens cross a chunk boundary and keep the numerical Jacobian small."""
    monkeypatch.setattr(linear_attention, "CHUNK", 4)
    q, k, v = (x[:1, :1].clone().requires_grad_() for x in inputs(7, 1, positive=normalize, dv=2))
    assert torch.autograd.gradcheck(lambda a, b, c: causal_linear_attention(a, b, c, normalize=normalize), (q, k, v))


def test_low_precision_returns_input_dtype() -> None:
    q, k, v = (x.to(torch.bfloat16) for x in inputs(70, 2, positive=True))
    out = causal_linear_attention(q, k, v, normalize=True)
    assert out.dtype == torch.bfloat16
    want = ref.quadratic(*(x.to(F64) for x in (q, k, v)), normalize=True)
    assert scaled_error(out, want, bound(q.to(F64), k.to(F64), v.to(F64), True)) <= 2 * 2**-8 + 1e-5


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)), {}, ValueError, r"q: expected shape"),
        ((torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 5, 3), torch.zeros(1, 2, 5, 4)), {}, ValueError, "k: expected"),
        ((torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 6, 4)), {}, ValueError, "v: expected"),
        ((torch.zeros(1, 2, 5, 4, dtype=torch.int32),) * 3, {}, TypeError, "q: expected dtype"),
        (
            (torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 5, 4, dtype=F64), torch.zeros(1, 2, 5, 4)),
            {},
            TypeError,
            "k: expected the dtype of q",
        ),
        (
            (torch.zeros(1, 2, 5, 4),) * 3,
            {"initial_state": torch.zeros(1, 2, 4, 4), "normalize": True},
            ValueError,
            r"initial_state: expected shape \(1, 2, 4, 5\)",
        ),
    ],
)
def test_bad_input(args, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        causal_linear_attention(*args, **kwargs)


def test_empty_sequence_gives_an_empty_output() -> None:
    q, k, v = (x.requires_grad_() for x in inputs(0, 1, positive=True))
    state = torch.rand(2, 3, 4, 4, dtype=F64, requires_grad=True)
    out = causal_linear_attention(q, k, v, normalize=True, initial_state=state)
    assert out.shape == (2, 3, 0, 3)
    out.sum().backward()
    assert state.grad is not None and not state.grad.any()
