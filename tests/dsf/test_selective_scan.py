"""``fast.dsf.selective_scan`` against the step-by-step loop: outputs, final state, gradients, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnverify.fast import dsf as fast
from attnverify.fast.dsf import selective_scan
from attnverify.reference import dsf as ref
from attnverify.theory.dsf import rel_error
from tests.strategies import lengths

F64 = torch.float64


def scan_inputs(bt: int, d: int, n: int, L: int, seed: int, strength: float = 1.0) -> tuple[torch.Tensor, ...]:
    """``u, delta (softplus), A < 0, B, C, D`` in Mamba's layout; ``strength`` scales ``A``."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(bt, d, L, generator=g, dtype=F64)
    delta = torch.nn.functional.softplus(torch.randn(bt, d, L, generator=g, dtype=F64))
    A = -strength * torch.exp(torch.randn(d, n, generator=g, dtype=F64))
    B, C = (torch.randn(bt, n, L, generator=g, dtype=F64) for _ in range(2))
    return u, delta, A, B, C, torch.randn(d, generator=g, dtype=F64)


@given(
    L=lengths,
    d=st.integers(1, 5),
    n=st.integers(1, 5),
    chunk=st.sampled_from([None, 1, 4, 17, 300]),
    strength=st.sampled_from([0.01, 1.0, 20.0]),
    seed=st.integers(0, 2**16),
)
def test_matches_step_loop(L: int, d: int, n: int, chunk: int | None, strength: float, seed: int) -> None:
    args = scan_inputs(2, d, n, L, seed, strength)
    assert rel_error(selective_scan(*args, chunk_size=chunk), ref.selective_scan(*args)) <= 1e-12


@pytest.mark.parametrize("L", [1, 10, 64])
def test_initial_and_final_state(L: int) -> None:
    args = scan_inputs(2, 3, 4, L, L)
    state = torch.randn(2, 3, 4, dtype=F64)
    y, final = selective_scan(*args, chunk_size=4, initial_state=state, output_final_state=True)
    want_y, want_final = ref.selective_scan(*args, initial_state=state, output_final_state=True)
    assert rel_error(y, want_y) <= 1e-12
    assert rel_error(final, want_final) <= 1e-12


def test_without_skip_and_low_precision() -> None:
    args = scan_inputs(1, 3, 2, 33, 5)
    assert rel_error(selective_scan(*args[:5]), ref.selective_scan(*args[:5])) <= 1e-12
    low = [a.to(torch.bfloat16) for a in args]
    out = selective_scan(*low)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()


def test_no_nan_from_unwritten_buffers(nan_scratch: None) -> None:
    args = scan_inputs(2, 3, 4, 29, 6)
    assert rel_error(selective_scan(*args, chunk_size=5), ref.selective_scan(*args)) <= 1e-12


@pytest.mark.parametrize("chunk", [3, None])
def test_gradcheck(chunk: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The two-pass form (chunks of 3) and the rebased form (chunks of 3 too: seven tokens cross two chunks)."""
    monkeypatch.setattr(fast, "SCAN_CHUNK", 3)
    args = scan_inputs(1, 2, 2, 7, 7)
    state = torch.randn(1, 2, 2, dtype=F64)
    inputs = tuple(x.clone().requires_grad_() for x in (*args, state))

    def run(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return selective_scan(*xs[:6], chunk_size=chunk, initial_state=xs[6], output_final_state=True)

    assert torch.autograd.gradcheck(run, inputs)


def test_empty_sequence_passes_the_state_through() -> None:
    """``L = 0``: an empty output and the initial state (zeros without one) as the final state."""
    args = tuple(x.requires_grad_() for x in scan_inputs(2, 3, 4, 0, 8))
    state = torch.randn(2, 3, 4, dtype=F64, requires_grad=True)
    y, final = selective_scan(*args, initial_state=state, output_final_state=True)
    assert y.shape == (2, 3, 0) and torch.equal(final, state)
    (y.sum() + (final * final).sum()).backward()
    assert torch.equal(state.grad, 2 * state.detach())
    assert torch.equal(selective_scan(*args, output_final_state=True)[1], torch.zeros(2, 3, 4, dtype=F64))


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_strong_chunks_step_inside_the_rebased_form(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    """One chunk of five with ``|A| ΣΔ`` past the limit runs step by step; the others stay rebased."""
    monkeypatch.setattr(fast, "SCAN_CHUNK", 8)
    u, delta, A, B, C, D = scan_inputs(2, 3, 4, 37, 9, strength=0.5)
    delta[..., 16:24] += 30.0
    args = (u, delta, A, B, C, D)
    assert fast._scan_chunks_fit(delta.to(dtype), A.to(dtype), 8) == [True, True, False, True, True]
    out = selective_scan(*(a.to(dtype) for a in args))
    assert torch.isfinite(out).all()
    assert rel_error(out, ref.selective_scan(*args)) <= (1e-12 if dtype == F64 else 1e-4)


U = torch.zeros(1, 2, 5)
GOOD = (U, U, -torch.ones(2, 3), torch.zeros(1, 3, 5), torch.zeros(1, 3, 5), torch.zeros(2))


def _with(i: int, value: object) -> tuple[object, ...]:
    return tuple(value if j == i else a for j, a in enumerate(GOOD))


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((U[0], *GOOD[1:]), {}, ValueError, r"u: expected shape \(B, D, L\)"),
        (_with(1, torch.zeros(1, 2, 6)), {}, ValueError, "delta: expected the shape of u"),
        (_with(1, torch.full((1, 2, 5), -0.1)), {}, ValueError, "delta: expected step sizes >= 0"),
        (_with(1, torch.full((1, 2, 5), math.nan)), {}, ValueError, "delta: expected step sizes >= 0"),
        (_with(2, torch.ones(2, 3)), {}, ValueError, "A: expected entries <= 0"),
        (_with(2, -torch.ones(3, 3)), {}, ValueError, r"A: expected shape \(2, N\)"),
        (_with(3, torch.zeros(1, 4, 5)), {}, ValueError, r"B: expected shape \(1, 3, 5\)"),
        (_with(4, torch.zeros(1, 3, 4)), {}, ValueError, r"C: expected shape \(1, 3, 5\)"),
        (_with(5, torch.zeros(3)), {}, ValueError, r"D: expected shape \(2,\)"),
        (_with(3, torch.zeros(1, 3, 5, dtype=F64)), {}, TypeError, "B: expected the dtype of u"),
        (_with(2, [[-1.0]]), {}, TypeError, "A: expected a torch.Tensor"),
        (GOOD, {"chunk_size": 0}, ValueError, "chunk_size: expected None or an int >= 1"),
        (GOOD, {"initial_state": torch.zeros(1, 2, 4)}, ValueError, r"initial_state: expected shape \(1, 2, 3\)"),
    ],
)
def test_bad_input(args: tuple, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        selective_scan(*args, **kwargs)
