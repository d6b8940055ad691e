"""``fast.dsf.gated_linear_attention`` against the step-by-step recurrence, the model → kernel mappings,
gradients (``log_decay`` included) and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnverify.benchmarks import run_suite
from attnverify.fast import dsf as fast
from attnverify.fast.dsf import gated_linear_attention
from attnverify.numerics import identity_tolerance
from attnverify.reference import dsf as ref
from attnverify.theory.dsf import rel_error
from tests.strategies import lengths

F64 = torch.float64


def gla_inputs(
    t: int,
    seed: int,
    *,
    kind: str,
    scale: float,
    positive: bool = False,
    b: int = 2,
    h: int = 2,
    dk: int = 3,
    dv: int = 2,
) -> tuple[torch.Tensor, ...]:
    """``q, k, v`` and gates ``-scale · U(0, 1)`` per head (``"head"``) or per key channel (``"key"``)."""
    g = torch.Generator().manual_seed(seed)
    draw = (
        (lambda *s: torch.rand(*s, generator=g, dtype=F64) + 0.1)
        if positive
        else (lambda *s: torch.randn(*s, generator=g, dtype=F64))
    )
    q, k, v = draw(b, h, t, dk), draw(b, h, t, dk), torch.randn(b, h, t, dv, generator=g, dtype=F64)
    shape = (b, h, t) if kind == "head" else (b, h, t, dk)
    return q, k, v, -scale * torch.rand(shape, generator=g, dtype=F64)


@given(
    t=lengths,
    chunk=st.sampled_from([1, 3, 16, 64, 100]),
    kind=st.sampled_from(["head", "key"]),
    scale=st.sampled_from([0.0, 0.1, 1.0, 10.0, 50.0]),
    normalize=st.booleans(),
    with_state=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matches_recurrence(
    t: int, chunk: int, kind: str, scale: float, normalize: bool, with_state: bool, seed: int
) -> None:
    q, k, v, g = gla_inputs(t, seed, kind=kind, scale=scale, positive=normalize)
    state = None
    if with_state:
        gen = torch.Generator().manual_seed(seed + 1)
        state = torch.rand(2, 2, 3, 2 + int(normalize), generator=gen, dtype=F64)
    out, final = gated_linear_attention(
        q, k, v, g, normalize=normalize, chunk_size=chunk, initial_state=state, output_final_state=True
    )
    want, want_final = ref.gla_recurrent(q, k, v, g, normalize=normalize, initial_state=state)
    assert rel_error(out, want) <= 1e-10
    assert rel_error(final, want_final) <= 1e-10


def test_matches_masked_quadratic_form() -> None:
    for kind in ("head", "key"):
        q, k, v, g = gla_inputs(70, 3, kind=kind, scale=1.0)
        assert rel_error(gated_linear_attention(q, k, v, g, chunk_size=32), ref.gla_quadratic(q, k, v, g)) <= 1e-12


@pytest.mark.parametrize("t", [1, 63, 64, 65, 130])
def test_initial_state_continues_a_split_sequence(t: int) -> None:
    """The first half's final state, as the second half's initial state, reproduces the whole sequence."""
    q, k, v, g = gla_inputs(2 * t, t, kind="key", scale=1.0)
    head, tail = slice(0, t), slice(t, 2 * t)
    first, state = gated_linear_attention(
        q[:, :, head], k[:, :, head], v[:, :, head], g[:, :, head], output_final_state=True
    )
    second = gated_linear_attention(q[:, :, tail], k[:, :, tail], v[:, :, tail], g[:, :, tail], initial_state=state)
    whole = gated_linear_attention(q, k, v, g)
    assert rel_error(torch.cat([first, second], 2), whole) <= 1e-12


def test_no_nan_from_unwritten_buffers(nan_scratch: None) -> None:
    q, k, v, g = gla_inputs(37, 4, kind="key", scale=10.0)
    out = gated_linear_attention(q, k, v, g, chunk_size=16)
    assert torch.isfinite(out).all()
    assert rel_error(out, ref.gla_recurrent(q, k, v, g)[0]) <= 1e-10


def test_strong_gates_stay_finite_in_float32() -> None:
    q, k, v, g = (x.float() for x in gla_inputs(1024, 5, kind="key", scale=50.0, b=1))
    out = gated_linear_attention(q, k, v, g)
    assert torch.isfinite(out).all()
    assert rel_error(out, ref.gla_recurrent(*(x.double() for x in (q, k, v, g)))[0]) <= 1e-4


def test_low_precision_returns_input_dtype() -> None:
    q, k, v, g = (x.to(torch.bfloat16) for x in gla_inputs(70, 6, kind="key", scale=1.0))
    out = gated_linear_attention(q, k, v, g)
    assert out.dtype == torch.bfloat16
    want = ref.gla_recurrent(*(x.to(F64) for x in (q, k, v, g)))[0]
    assert rel_error(out, want) <= identity_tolerance(torch.bfloat16, 70)  # one rounding of the output


@pytest.mark.parametrize(("kind", "normalize"), [("head", False), ("key", False), ("key", True)])
def test_gradcheck(kind: str, normalize: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 4 in sub-chunks of 2 (both levels cross), an initial state, and the gates' gradient."""
    monkeypatch.setattr(fast, "SUBCHUNK", 2)
    q, k, v, g = gla_inputs(7, 1, kind=kind, scale=1.0, positive=normalize, b=1, h=1, dk=2, dv=2)
    state = torch.rand(1, 1, 2, 2 + int(normalize), dtype=F64)
    inputs = tuple(x.clone().requires_grad_() for x in (q, k, v, g, state))

    def run(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return gated_linear_attention(
            *xs[:4], normalize=normalize, chunk_size=4, initial_state=xs[4], output_final_state=True
        )

    assert torch.autograd.gradcheck(run, inputs)


@pytest.mark.parametrize("kind", ["head", "key"])
def test_segments_carry_the_state(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Long inputs run segment by segment (here 2 chunks each, a ragged last one): same outputs, final state and
    gradients (gates included) as the recurrence."""
    q, k, v, g = gla_inputs(13, 8, kind=kind, scale=1.0, b=1, h=2, dk=2, dv=2)
    monkeypatch.setattr(fast, "SEGMENT_ELEMENTS", 1 * 2 * 2 * 2 * 2)  # B·H·Dk·chunk·2 → 2 chunks of 2 per segment
    state = torch.rand(1, 2, 2, 2, dtype=F64)
    out, final = gated_linear_attention(q, k, v, g, chunk_size=2, initial_state=state, output_final_state=True)
    want, want_final = ref.gla_recurrent(q, k, v, g, initial_state=state)
    assert rel_error(out, want) <= 1e-12
    assert rel_error(final, want_final) <= 1e-12
    inputs = tuple(x.clone().requires_grad_() for x in (q, k, v, g, state))

    def run(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return gated_linear_attention(*xs[:4], chunk_size=2, initial_state=xs[4], output_final_state=True)

    assert torch.autograd.gradcheck(run, inputs)


@pytest.mark.parametrize(("kind", "normalize"), [("head", False), ("key", True)])
def test_empty_sequence_passes_the_state_through(kind: str, normalize: bool) -> None:
    """``T = 0``: an empty output and the initial state (zeros without one) as the final state, differentiably."""
    q, k, v, g = (x.requires_grad_() for x in gla_inputs(0, 2, kind=kind, scale=1.0, positive=normalize))
    state = torch.rand(2, 2, 3, 2 + int(normalize), dtype=F64, requires_grad=True)
    out, final = gated_linear_attention(q, k, v, g, normalize=normalize, initial_state=state, output_final_state=True)
    assert out.shape == (2, 2, 0, 2) and torch.equal(final, state)
    (out.sum() + (final * final).sum()).backward()
    assert torch.equal(state.grad, 2 * state.detach()) and q.grad is not None and q.grad.shape == q.shape
    assert torch.equal(gated_linear_attention(q, k, v, output_final_state=True)[1], torch.zeros(2, 2, 3, 2, dtype=F64))
    assert torch.autograd.gradcheck(lambda s: gated_linear_attention(q, k, v, initial_state=s), (state[..., :2],))


# ---------------------------------------------------------------------------
# Model -> kernel mappings (book/dsf.md, "One kernel for the family")
# ---------------------------------------------------------------------------


def test_linear_attention_is_normalize_without_decay() -> None:
    g = torch.Generator().manual_seed(7)
    u, W_Q, W_K, W_V = (torch.randn(*s, generator=g, dtype=F64) for s in ((19, 3), (4, 3), (4, 3), (2, 3)))
    q, k, v = ref.elu1(u @ W_Q.T), ref.elu1(u @ W_K.T), u @ W_V.T
    out = gated_linear_attention(q[None, None], k[None, None], v[None, None], normalize=True, chunk_size=8)
    assert rel_error(out[0, 0], ref.linear_attention(u, W_Q, W_K, W_V)) <= 1e-12


def test_lightning_is_a_constant_decay_per_head() -> None:
    q, k, v, _ = gla_inputs(70, 8, kind="head", scale=0.0, h=3)
    log_lambda = torch.tensor([-0.3, 0.0, math.log(1e-6)], dtype=F64)
    out = gated_linear_attention(q, k, v, log_lambda[None, :, None].expand(2, 3, 70).contiguous(), chunk_size=16)
    assert rel_error(out, ref.lightning_quadratic(q, k, v, log_lambda)) <= 1e-12


def test_ssd_is_a_decay_per_head_and_step() -> None:
    """SSD head ``h``: ``q = C``, ``k = B``, ``v = Δ ⊙ x``, ``log_decay = Δ A_h``, then ``+ D x``."""
    g = torch.Generator().manual_seed(9)
    heads, d_head, n, L = 2, 3, 4, 21
    x = torch.randn(1, heads, L, d_head, generator=g, dtype=F64)
    delta = torch.nn.functional.softplus(torch.randn(1, heads, L, generator=g, dtype=F64))
    A = -torch.rand(heads, generator=g, dtype=F64) - 0.1
    Bm, Cm = (torch.randn(1, heads, L, n, generator=g, dtype=F64) for _ in range(2))
    D = torch.randn(heads * d_head, generator=g, dtype=F64)
    out = gated_linear_attention(Cm, Bm, delta[..., None] * x, delta * A[None, :, None], chunk_size=8)
    out = out + D.view(heads, 1, d_head) * x
    for hh in range(heads):  # the selective scan with this head's shared Δ and scalar A
        ch = slice(hh * d_head, (hh + 1) * d_head)
        want = ref.selective_scan(
            x[0, hh].T[None],
            delta[0, hh][None, None].expand(1, d_head, L),
            A[hh].expand(d_head, n),
            Bm[0, hh].T[None],
            Cm[0, hh].T[None],
            D[ch],
        )
        assert rel_error(out[0, hh].T[None], want) <= 1e-12


def test_normalized_attention_is_no_decay_then_divide() -> None:
    g = torch.Generator().manual_seed(10)
    u, W_Q, W_K, W_V = (torch.randn(*s, generator=g, dtype=F64) for s in ((19, 3), (4, 3), (4, 3), (2, 3)))
    w, b = torch.randn(3, generator=g, dtype=F64), torch.randn((), generator=g, dtype=F64)
    for norm, fn in ref.NORMALIZERS.items():
        out = gated_linear_attention((u @ W_Q.T)[None, None], (u @ W_K.T)[None, None], (u @ W_V.T)[None, None])
        out = out[0, 0] / fn(u @ w + b)[:, None]
        assert rel_error(out, ref.normalized_attention(u, W_Q, W_K, W_V, w, b, norm)) <= 1e-12


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------

Z = torch.zeros(1, 2, 5, 4)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((Z, Z, Z, torch.full((1, 2, 5), 0.1)), {}, ValueError, "log_decay: expected natural-log decays <= 0"),
        ((Z, Z, Z, torch.full((1, 2, 5), math.nan)), {}, ValueError, "log_decay: expected natural-log decays <= 0"),
        ((Z, Z, Z, torch.zeros(1, 2, 6)), {}, ValueError, r"log_decay: expected shape \(1, 2, 5\)"),
        ((Z, Z, Z, torch.zeros(1, 2, 5, 3)), {}, ValueError, "log_decay: expected shape"),
        ((Z, Z, Z, torch.zeros(1, 2, 5, dtype=F64)), {}, TypeError, "log_decay: expected the dtype of q"),
        ((Z, Z, Z, [0.0]), {}, TypeError, "log_decay: expected a torch.Tensor"),
        ((Z[0], Z[0], Z[0]), {}, ValueError, r"q: expected shape \(B, H, T, D\)"),
        ((Z, torch.zeros(1, 3, 5, 4), Z), {}, ValueError, "k: expected the shape of q"),
        ((Z, Z, torch.zeros(1, 2, 6, 4)), {}, ValueError, "v: expected shape"),
        ((Z, Z.double(), Z), {}, TypeError, "k: expected the dtype of q"),
        ((Z.int(), Z.int(), Z.int()), {}, TypeError, "q: expected dtype"),
        ((Z, Z, Z), {"chunk_size": 0}, ValueError, "chunk_size: expected an int >= 1"),
        ((Z, Z, Z), {"chunk_size": True}, ValueError, "chunk_size: expected an int >= 1"),
        ((Z, Z, Z), {"chunk_size": 2.0}, ValueError, "chunk_size: expected an int >= 1"),
        ((Z, Z, Z), {"backend": "triton_tiled"}, ValueError, "backend: expected None, 'torch' or 'triton'"),
        (
            (Z, Z, Z),
            {"initial_state": torch.zeros(1, 2, 4, 4), "normalize": True},
            ValueError,
            r"initial_state: expected shape \(1, 2, 4, 5\)",
        ),
        (
            (Z, Z, Z),
            {"initial_state": torch.zeros(1, 2, 4, 4, dtype=F64)},
            TypeError,
            "initial_state: expected the dtype of q",
        ),
    ],
)
def test_bad_input(args: tuple, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        gated_linear_attention(*args, **kwargs)


def test_quick_benchmark_suite(tmp_path: Path) -> None:
    """``attnverify bench --suite dsf --quick``: correctness records pass, every target and the skip are written."""
    results = json.loads(run_suite("dsf", tmp_path, quick=True).read_text())
    assert results["suite"] == "dsf" and all(c["passed"] for c in results["correctness"])
    assert sorted(t["name"][0] for t in results["targets"]) == ["A", "B", "C", "D", "E", "F"]
    assert all(math.isfinite(t["ratio"]) and t["ratio"] > 0 for t in results["targets"])
    assert [s["name"][:3] for s in results["skipped"]] == ["GPU"]
