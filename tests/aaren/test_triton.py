"""The Triton kernel against the float64 reference (forward and backward).

Runs under ``TRITON_INTERPRET=1`` on the CPU (small shapes; ``tests/test_triton_tier.py`` starts
this file in its own process, since the variable must be set before ``import triton``), or
compiled on CUDA.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnverify import registry
from attnverify.fast import aaren as fast
from attnverify.fast import prefix_softmax_attention
from attnverify.numerics import identity_tolerance, row_scale, scaled_error
from attnverify.reference import aaren as ref
from attnverify.theory.aaren import masked_junk, scan_case, scan_implementations
from tests.aaren.scan_checks import carry_errors, carry_tolerance, gradient_scales, mutant_module
from tests.strategies import scan_cases
from tests.triton_support import CUDA, DEVICE, TRITON_MARKS

pytestmark = TRITON_MARKS
F64, F32 = torch.float64, torch.float32
NEG_INF = float("-inf")


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
    case = scan_case(n, dv=dv, lead=(2,), scores="normal", mask="random", seed=n * dv)
    s, v = case.on(F64, DEVICE)
    assert scaled_error(triton_path(s, v).cpu(), case.ground_truth(F64), row_scale(v.cpu())) <= 1e-12


def _with_junk(s: torch.Tensor, v: torch.Tensor, seed: int) -> torch.Tensor:
    """``v`` with NaN, ±inf and huge values in its masked tokens (padding garbage)."""
    masked = s == NEG_INF
    out = v.clone()
    junk = masked_junk(int(masked.sum()) * v.shape[-1], torch.Generator().manual_seed(seed))
    out[masked] = junk.to(v.dtype).to(v.device).view(-1, v.shape[-1])
    return out


@pytest.mark.parametrize(
    ("mask", "scores", "backend"),
    [
        ("none", "wide", "triton"),
        ("random", "wide", "triton"),
        ("leftpad", "normal", "triton"),
        ("random", "normal", "triton_tiled"),
        ("leftpad", "normal", "triton_tiled"),
    ],
)
def test_backward_matches_torch_path(mask: str, scores: str, backend: str, nan_scratch) -> None:
    """The backward's reverse scan, one pass or tiled (three tiles); masked tokens hold NaN/±inf padding
    and get exactly zero gradients."""
    case = scan_case(150, dv=3, lead=(3,), scores=scores, mask=mask, seed=4)
    s, v = case.on(F64, DEVICE)
    v = _with_junk(s, v, 4)
    g = torch.randn(v.shape, dtype=F64, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    grads = []
    for b in (backend, "torch"):
        s_, v_ = s.clone().requires_grad_(), v.clone().requires_grad_()
        (prefix_softmax_attention(s_, v_, backend=b) * g).sum().backward()
        grads.append((s_.grad.cpu(), v_.grad.cpu()))
    (ds, dv), (ds_t, dv_t) = grads
    masked = (s == NEG_INF).cpu()
    assert (ds[masked] == 0).all() and (dv[masked] == 0).all()
    ds_scale, dv_scale = gradient_scales(g.cpu(), v.cpu().masked_fill(masked[..., None], 0.0))
    assert scaled_error(ds, ds_t, ds_scale) <= 1e-12 and scaled_error(dv, dv_t, dv_scale) <= 1e-12


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
    truth = ref.causal_constant_query_attention(s[1, 40:].cpu(), v[1, 40:].cpu())
    assert scaled_error(out[1, 40:].cpu(), truth, row_scale(v[1].cpu())) <= identity_tolerance(F64, 70)


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


@pytest.mark.parametrize(("n", "tiles"), [(50, 1), (128, 2), (300, 5)])
def test_tiled_path_matches_reference(n: int, tiles: int, nan_scratch) -> None:
    """The sequence-tiled path with 1, 2 and many tiles (50 and 300: ragged last tile); padding holds NaN/±inf."""
    from attnverify.fast.triton.aaren import block_sizes

    assert -(-n // block_sizes(2)[0]) == tiles
    case = scan_case(n, dv=2, lead=(3,), scores="normal", mask="random", seed=n)
    s, v = case.on(F64, DEVICE)
    out = prefix_softmax_attention(s, _with_junk(s, v, n), backend="triton_tiled")
    assert scaled_error(out.cpu(), case.ground_truth(F64), row_scale(v.cpu())) <= identity_tolerance(F64, n)


@pytest.mark.parametrize("backend", ["triton", "triton_tiled"])
def test_nonfinite_value_is_causal(backend: str, nan_scratch) -> None:
    """A NaN/-inf value at token t (inside a tile, after a tile edge) leaves every output before t bit for bit."""
    case = scan_case(150, dv=2, lead=(2,), scores="normal", seed=11)
    s, v = case.on(F64, DEVICE)
    out = prefix_softmax_attention(s, v, backend=backend)
    t = 100
    for bad in (math.nan, -math.inf):
        v2 = v.clone()
        v2[0, t, 1] = bad
        out2 = prefix_softmax_attention(s, v2, backend=backend)
        assert torch.equal(out2[:, :t], out[:, :t]) and torch.equal(out2[1], out[1])
        assert not torch.isfinite(out2[0, t:, 1]).any() and torch.equal(out2[0, :, 0], out[0, :, 0])


# Tile carries, judged where they live, and kernel-level carry mutants (one substitution in the
# kernel module's source each; the production kernel carries no switch for them).

CARRY_N = 3 * 64 + 7
"""Four tiles of 64 (ragged last): carries across three tile edges."""

KERNEL_CARRY_MUTANTS = {
    "carry max from the tile only": ("carry_m = tl.max(m_new, axis=0)", "carry_m = tl.max(m_t, axis=0)", None),
    "carry count from the tile only": (
        "carry_u = tl.sum(tl.where(last, u_new, 0.0), axis=0)",
        "carry_u = tl.sum(tl.where(last, u_t, 0.0), axis=0)",
        None,
    ),
    "carry sums from the tile only": (
        "carry_w = tl.sum(tl.where(last, w_new, 0.0), axis=0)",
        "carry_w = tl.sum(tl.where(last, w_t, 0.0), axis=0)",
        None,
    ),
    "initial carry dropped": (
        "carry_m = tl.zeros((BLOCK_D,), acc) + tl.load(IM_ptr + cell).to(acc)",
        'carry_m = tl.full((BLOCK_D,), float("-inf"), acc)',
        None,
    ),
    "segment total from its last tile only": (
        "carry_m, carry_u, carry_w = _combine(carry_m, carry_u, carry_w, m_r, u_r, w_r)",
        "carry_m, carry_u, carry_w = m_r, u_r, w_r",
        2,
    ),
    "segment prefixes one segment ahead": ("inc[:, :-1]], 1)", "inc[:, 1:]], 1)", 1),
}
"""name: (production snippet, planted bug, tiles per program that exercise it)."""


@pytest.mark.parametrize("tiles", [None, 1, 2], ids=["one pass", "one tile per program", "two tiles per program"])
def test_tile_carries_with_ordinary_scores(tiles: int | None) -> None:
    """Forward, reverse (backward) and initial-state scans over four tiles, three live rows, N(0, 4) scores."""
    from attnverify.fast.triton import aaren as kernel

    errors = carry_errors(functools.partial(kernel.triton_scan, tiles=tiles), CARRY_N, DEVICE, rows=3, dv=2)
    assert max(errors.values()) <= carry_tolerance(CARRY_N), errors


@pytest.mark.parametrize("mutant", sorted(KERNEL_CARRY_MUTANTS))
def test_kernel_carry_mutants_are_rejected(mutant: str, tmp_path: Path) -> None:
    from attnverify.fast.triton import aaren as kernel

    old, new, tiles = KERNEL_CARRY_MUTANTS[mutant]
    scan = functools.partial(mutant_module(kernel, old, new, tmp_path).triton_scan, tiles=tiles)
    errors = carry_errors(scan, CARRY_N, DEVICE, rows=3, dv=2)
    assert max(errors.values()) > 1e3 * carry_tolerance(CARRY_N), (mutant, errors)


def test_tiling_is_chosen_when_rows_cannot_fill_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a 132-multiprocessor GPU: B·H = 16 rows of 65536 tokens (target D of the benchmarks) are tiled
    into at least 4 programs per multiprocessor; 1024 rows run one pass; off CUDA it never tiles."""
    from types import SimpleNamespace

    from attnverify.fast.triton import aaren as kernel

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(multi_processor_count=132))
    gpu, tiles = torch.device("cuda"), 65536 // 64
    per_program = kernel.tiles_per_program(16, tiles, gpu)
    assert per_program < tiles and 16 * -(-tiles // per_program) >= kernel.PROGRAMS_PER_SM * 132
    assert kernel.tiles_per_program(1024, tiles, gpu) == tiles
    assert kernel.tiles_per_program(16, tiles, torch.device("cpu")) == tiles
    assert kernel.tiles_per_program(1, 3, gpu) == 1


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
