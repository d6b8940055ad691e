"""The Aaren module: parallel forward equals constant-query attention with its own parameters (the
float64 layer reference of the streaming claim); streaming equals forward; neither the state, the
module's storage nor a step's cost grows; bad input is refused with a clear error."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnverify.fast import Aaren
from attnverify.numerics import scaled_error
from attnverify.theory.aaren import _OpCost, _storage_bytes, aaren_layer_reference, layer_weights

F64 = torch.float64


@given(
    heads=st.sampled_from([1, 2, 4]),
    n=st.integers(1, 40),
    scale=st.sampled_from([1.0, 30.0]),
    seed=st.integers(0, 999),
    masked=st.booleans(),
)
def test_forward_equals_reference_and_step(heads: int, n: int, scale: float, seed: int, masked: bool) -> None:
    torch.manual_seed(seed)
    layer = Aaren(8, heads, dtype=F64)
    x = torch.randn(3, n, 8, dtype=F64) * scale
    mask = torch.rand(3, n) > 0.3 if masked else None
    with torch.no_grad():
        y = layer(x, mask)
        assert (
            scaled_error(y, aaren_layer_reference(layer_weights(layer), x, mask), y.abs().max().clamp_min(1.0)) <= 1e-12
        )
        state = layer.init_state(3)
        for t in range(n):
            y_t, state = layer.step(x[:, t], state, None if mask is None else mask[:, t])
            assert scaled_error(y_t, y[:, t], y.abs().max().clamp_min(1.0)) <= 1e-12


def test_state_size_is_constant_and_minimal() -> None:
    layer = Aaren(16, 4, dtype=F64)
    state = layer.init_state(2)
    sizes = []
    with torch.no_grad():
        for _ in range(500):
            _, state = layer.step(torch.randn(2, 16, dtype=F64), state)
            sizes.append(sum(t.numel() for t in state))
    assert set(sizes) == {2 * 4 * (4 + 2)}
    assert state.m.shape == (2, 4) and state.w.shape == (2, 4, 4)


def test_module_storage_and_step_cost_do_not_grow() -> None:
    layer = Aaren(8, 2, dtype=F64)
    state = layer.init_state(2)
    storage, costs = [], []
    with torch.no_grad():
        for t in range(60):
            with _OpCost() as cost:
                _, state = layer.step(torch.randn(2, 8, dtype=F64), state)
            costs.append(cost.elements)
            if t in (9, 59):
                storage.append(_storage_bytes(layer))
    assert storage[0] == storage[1] == sum(p.numel() * 8 for p in layer.parameters())
    assert len(set(costs)) == 1 and costs[0] > 0


def test_storage_finds_tensors_kept_anywhere_on_a_module() -> None:
    """Parameters, buffers, plain attributes, containers (lists, dicts, tuples) and plain objects on it."""
    layer = torch.nn.Linear(2, 3, bias=False, dtype=F64)  # 6 numbers
    before = _storage_bytes(layer)
    layer.register_buffer("seen", torch.zeros(4, dtype=F64))
    layer.history = [torch.zeros(5, dtype=F64), {"nested": (torch.zeros(7, dtype=F64),)}]
    layer.holder = type("Holder", (), {})()
    layer.holder.kept = torch.zeros(2, 3, dtype=F64)[0]  # a view counts its own elements
    assert before == 6 * 8
    assert _storage_bytes(layer) == (6 + 4 + 5 + 7 + 3) * 8


def test_gradients_reach_every_parameter() -> None:
    layer = Aaren(8, 2, dtype=F64)
    layer(torch.randn(2, 9, 8, dtype=F64)).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_float32_module_streams_in_float32_state() -> None:
    layer = Aaren(8, 2)
    state = layer.init_state(1)
    y, state = layer.step(torch.randn(1, 8), state)
    assert y.dtype == torch.float32 and state.w.dtype == torch.float32


def test_bfloat16_module_keeps_a_float32_state() -> None:
    layer = Aaren(8, 2, dtype=torch.bfloat16)
    state = layer.init_state(1)
    y, state = layer.step(torch.randn(1, 8, dtype=torch.bfloat16), state)
    assert y.dtype == torch.bfloat16 and state.u.dtype == torch.float32


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda m: Aaren(8, 3), ValueError, "n_heads: expected a positive divisor"),
        (lambda m: Aaren(0, 1), ValueError, "d_model: expected a positive int"),
        (lambda m: m(torch.randn(2, 5, 7)), ValueError, r"x: expected shape \(B, N, d_model\)"),
        (lambda m: m(torch.randn(5, 8)), ValueError, r"x: expected shape \(B, N, d_model\)"),
        (lambda m: m(torch.randn(2, 5, 8, dtype=F64)), TypeError, "x: expected the module's dtype"),
        (lambda m: m(torch.randint(0, 3, (2, 5, 8))), TypeError, "x: expected dtype"),
        (lambda m: m(torch.randn(2, 5, 8), torch.ones(2, 4, dtype=torch.bool)), ValueError, "mask: expected a bool"),
        (lambda m: m(torch.randn(2, 5, 8), torch.ones(2, 5)), ValueError, "mask: expected a bool"),
        (lambda m: m.step(torch.randn(2, 5, 8), m.init_state(2)), ValueError, r"x_t: expected shape \(B, d_model\)"),
        (lambda m: m.step(torch.randn(3, 8), m.init_state(2)), ValueError, "state: expected m, u of shape"),
        (lambda m: m.step(torch.randn(2, 8), None), TypeError, "state: expected the AarenState"),
        (lambda m: m.init_state(-1), ValueError, "batch_size: expected a non-negative int"),
    ],
)
def test_bad_input(call, error, match) -> None:
    with pytest.raises(error, match=match):
        call(Aaren(8, 2))
