"""Aaren claims ("Attention as an RNN", arXiv 2405.13956): statements, cases and checks.

Claim ids follow ``book/aaren.md`` ("The claims").  Each check compares the implementations under
test with float64 ground truth computed here from the reference module (``reference/aaren.py``)
or from torch's own softmax, records every comparison as a finding, and never trusts an
implementation to validate itself.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from attnverify.evidence import Recorder, invoke
from attnverify.fast import aaren as fast
from attnverify.fast._dispatch import triton_usable
from attnverify.harness import as_tensor, as_tensors, call_pure, device_for, dtype_name
from attnverify.numerics import (
    UNIT_ROUNDOFF,
    bitwise_mismatches,
    identity_tolerance,
    row_scale,
    scaled_error,
)
from attnverify.proofs_checks import aaren as proofs
from attnverify.reference import aaren as ref
from attnverify.registry import CheckContext, Claim, Convention, Implementation, Paper, Subject
from attnverify.theory.mutants import aaren as mut

AAREN = Paper(
    key="aaren",
    title="Attention as an RNN",
    authors="Leo Feng, Frederick Tung, Hossein Hajimirsadeghi, Mohamed Osama Ahmed, Yoshua Bengio, Greg Mori",
    year=2024,
    arxiv="2405.13956",
)

NEG_INF = float("-inf")
F64, F32, BF16, F16 = torch.float64, torch.float32, torch.bfloat16, torch.float16
SHIFTS = (-1e4, -800.0, -50.0, 0.0, 50.0, 800.0, 1e4)
"""Score shifts of claim 4: past float64's overflow (709.78) and underflow (-745) of ``exp``."""

EMPTY_PREFIX_ZERO = Convention(
    "empty_prefix_is_zero",
    "a position whose tokens so far are all masked (scores all -inf) outputs exactly 0, as FlashAttention does; "
    "softmax over no token is undefined",
)


def empty_prefix(scores: Tensor) -> Tensor:
    """``(..., N)``, true at the positions :data:`EMPTY_PREFIX_ZERO` decides: tokens ``1..k`` all masked."""
    return (scores == NEG_INF).cumprod(-1).bool()


def outside_convention(out: Tensor, empty: Tensor) -> Tensor:
    """``out: (..., N, Dv)`` with the positions of ``empty`` set to 0, so that a comparison leaves them to
    the one finding that judges the convention (one root cause, one finding)."""
    return out.masked_fill(empty.to(out.device)[..., None], 0)


# ---------------------------------------------------------------------------
# Cases: seeded inputs, built in float64 on CPU
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ScanCase:
    """Scores ``(..., N)`` and values ``(..., N, Dv)`` in float64; ``-inf`` scores are masked tokens."""

    label: str
    scores: Tensor
    values: Tensor

    def on(self, dtype: torch.dtype, device: torch.device | str) -> tuple[Tensor, Tensor]:
        return self.scores.to(dtype).to(device), self.values.to(dtype).to(device)

    def ground_truth(self, dtype: torch.dtype) -> Tensor:
        """The float64 reference output on the inputs as rounded to ``dtype`` (CONTRIBUTING.md, numerics)."""
        s, v = self.on(dtype, "cpu")
        return ref.causal_constant_query_attention(s.to(F64), v.to(F64))


def _scores(g: torch.Generator, shape: tuple[int, ...], kind: str) -> Tensor:
    n = shape[-1]
    randn = torch.randn(shape, generator=g, dtype=F64)
    if kind == "normal":
        return randn
    if kind == "wide":
        return 30.0 * randn
    if kind == "shifted":  # every row shifted by ±1e3
        sign = torch.randint(0, 2, (*shape[:-1], 1), generator=g).to(F64) * 2 - 1
        return randn + 1e3 * sign
    if kind == "spread":  # ±1e4 within one sequence
        return torch.rand(shape, generator=g, dtype=F64) * 2e4 - 1e4
    if kind == "ramp":  # 0, 5, 10, ...: the running max grows at every token
        return (5.0 * torch.arange(n, dtype=F64)).expand(shape).clone()
    if kind == "spike":  # zeros and one 1000 inside a chunk: a chunk-common max underflows
        s = torch.zeros(shape, dtype=F64)
        s[..., (2 * n) // 3] = 1000.0
        return s
    if kind == "grid":  # multiples of 2^-8: shifts by integers are exact
        return torch.round(64.0 * randn) / 256.0
    if kind == "constant":
        return torch.zeros(shape, dtype=F64)
    raise ValueError(f"kind: unknown score kind {kind!r}")


def _mask(g: torch.Generator, shape: tuple[int, ...], kind: str) -> Tensor:
    """True where a token is masked."""
    n = shape[-1]
    if kind == "none":
        return torch.zeros(shape, dtype=torch.bool)
    if kind == "random":
        return torch.rand(shape, generator=g) < 0.25
    if kind == "leftpad":  # row-dependent padding on the left; the first row is fully masked
        rows = math.prod(shape[:-1])
        pads = torch.randint(0, n + 1, (rows,), generator=g)
        pads[0] = n
        if rows > 1:
            pads[-1] = 0
        return (torch.arange(n)[None, :] < pads[:, None]).reshape(shape)
    raise ValueError(f"kind: unknown mask kind {kind!r}")


def _values(g: torch.Generator, shape: tuple[int, ...], dv: int, kind: str) -> Tensor:
    n = shape[-1]
    if kind == "normal":  # rows differ in scale by up to 10^6
        scale = 10.0 ** (torch.rand((*shape[:-1], 1, 1), generator=g, dtype=F64) * 6 - 3)
        return torch.randn((*shape, dv), generator=g, dtype=F64) * scale
    if kind == "ramp":  # v_i = i / N: a low-precision accumulator's count shows
        return (torch.arange(n, dtype=F64) / max(n, 1))[:, None].expand(*shape, dv).clone()
    raise ValueError(f"kind: unknown value kind {kind!r}")


def scan_case(
    n: int,
    *,
    dv: int = 4,
    lead: tuple[int, ...] = (2,),
    scores: str = "normal",
    mask: str = "none",
    values: str = "normal",
    seed: int = 0,
) -> ScanCase:
    """One seeded case; shared by the checks, the property tests and the book."""
    g = torch.Generator().manual_seed(seed)
    shape = (*lead, n)
    s = _scores(g, shape, scores).masked_fill(_mask(g, shape, mask), NEG_INF)
    v = _values(g, shape, dv, values)
    label = f"N={n} lead={lead} Dv={dv} scores={scores} mask={mask}" + (
        f" values={values}" if values != "normal" else ""
    )
    return ScanCase(label, s, v)


SCAN_LENGTHS = (1, 2, 3, 5, 7, 63, 64, 65, 1000)
THOROUGH_LENGTHS = (127, 128, 129, 255, 256, 257, 4097)
SCAN_KINDS = (
    ("normal", "none"),
    ("wide", "random"),
    ("spread", "leftpad"),
    ("shifted", "none"),
    ("ramp", "random"),
    ("spike", "none"),
)
LEADS = ((), (3,), (2, 3))


def scan_cases(ctx: CheckContext) -> list[ScanCase]:
    """Lengths 1, 2, 3 and around powers of two; every score and mask kind; 0-2 batch dims; one
    long constant-score case whose values ``i/N`` expose low-precision accumulators."""
    lengths = SCAN_LENGTHS + (THOROUGH_LENGTHS if ctx.thorough else ())
    cases = []
    for i, n in enumerate(lengths):
        for j, (sk, mk) in enumerate(SCAN_KINDS):
            lead = LEADS[(i + j) % 3] if n < 1000 else (2,)
            dv = (1, 4, 7)[(i + j) % 3]
            cases.append(scan_case(n, dv=dv, lead=lead, scores=sk, mask=mk, seed=ctx.seed + 100 * i + j))
    cases.append(scan_case(1024, dv=2, lead=(1,), scores="constant", values="ramp", seed=ctx.seed))
    return cases


# ---------------------------------------------------------------------------
# Claim 3: the scan equals causal softmax attention
# ---------------------------------------------------------------------------


def _sdpa(scores: Tensor, values: Tensor) -> Tensor:
    """Second reference: ``scaled_dot_product_attention`` with ``q = 1``, ``k_i = s_i``, ``scale=1``, causal."""
    q = torch.ones((*scores.shape, 1), dtype=scores.dtype)
    return F.scaled_dot_product_attention(q, scores[..., None], values, is_causal=True, scale=1.0)


def check_scan_equals_causal_softmax(rec: Recorder, impls: Sequence[Implementation], ctx: CheckContext) -> None:
    """Every implementation equals row ``k`` of ``softmax(S + mask) V`` (book/aaren.md, "The claims")."""
    cases = scan_cases(ctx)
    with rec.worst("ground truth: masked quadratic softmax = torch SDPA (float64)") as agree:
        for case in cases:
            if not torch.isinf(case.scores).any():
                agree.add(
                    scaled_error(case.ground_truth(F64), _sdpa(case.scores, case.values), row_scale(case.values)),
                    identity_tolerance(F64, case.scores.shape[-1]),
                    case.label,
                )
    truth: dict[tuple[int, torch.dtype], Tensor] = {}
    for impl in impls:
        device = device_for(impl, ctx)
        for dtype in ctx.dtypes_for(impl):
            name = f"{impl.label} [{dtype_name(dtype)}]"
            with rec.guard(name):
                _scan_against_truth(rec, impl, dtype, device, cases, truth, name)
                _scan_causality(rec, impl, dtype, device, name, ctx.seed)


def _scan_against_truth(
    rec: Recorder,
    impl: Implementation,
    dtype: torch.dtype,
    device: torch.device,
    cases: list[ScanCase],
    truth: dict[tuple[int, torch.dtype], Tensor],
    name: str,
) -> None:
    first_mismatch = empty_nonzero = 0
    meta_ok = pure = True
    with (
        rec.worst(f"{name}: error vs masked quadratic softmax") as err,
        rec.worst(f"{name}: masked tokens' values are ignored (even NaN, ±inf)") as ignored,
    ):
        for idx, case in enumerate(cases):
            s, v = case.on(dtype, device)
            out, unchanged = call_pure(impl.fn, s, v)
            out = as_tensor(out, impl.label, v.shape)
            pure &= unchanged
            meta_ok &= out.dtype == dtype and out.device == v.device
            key = (idx, dtype)
            if key not in truth:
                truth[key] = case.ground_truth(dtype)
            n = s.shape[-1]
            tol = identity_tolerance(dtype, n)
            empty = empty_prefix(s)
            empty_nonzero += int((out[empty] != 0).sum())
            judged = outside_convention(out, empty)
            err.add(scaled_error(judged.cpu(), truth[key], row_scale(v.cpu())), tol, case.label)
            rec.cases += 1
            live_first = s[..., 0] > NEG_INF if n else s[..., :0]
            if n:
                first_mismatch += bitwise_mismatches(out[..., 0, :][live_first], v[..., 0, :][live_first])
            masked = s == NEG_INF
            if masked.any():
                g = torch.Generator().manual_seed(idx)
                v2 = v.clone()
                v2[masked] = masked_junk(int(masked.sum()) * v.shape[-1], g).to(dtype).to(device).view(-1, v.shape[-1])
                out2, _ = call_pure(impl.fn, s, v2)
                out2 = outside_convention(as_tensor(out2, impl.label, v.shape), empty)
                ignored.add(scaled_error(out2.cpu(), judged.cpu(), row_scale(v.cpu())), tol, case.label)
    rec.require(f"{name}: output has the values' dtype and device", meta_ok)
    rec.require(f"{name}: inputs left unchanged", pure)
    rec.record(f"{name}: o_1 = v_1 bit for bit (entries differing)", first_mismatch, 0)
    rec.convention(EMPTY_PREFIX_ZERO, name, empty_nonzero)


def masked_junk(count: int, g: torch.Generator) -> Tensor:
    """``count`` float64 values a masked token may hold (padding garbage): NaN, ``±inf`` and ``±1e3``-scale."""
    junk = 1e3 * torch.randn(count, generator=g, dtype=F64)
    kind = torch.arange(count) % 4
    return junk.masked_fill(kind == 0, math.nan).masked_fill(kind == 1, math.inf).masked_fill(kind == 2, -math.inf)


NONFINITE_AT = 37
"""Token ``t`` of the non-finite causality case: inside a chunk of 16 and a tile of 64, so a product over
a whole chunk or tile (``0 · NaN = NaN`` above the diagonal) would reach earlier positions."""


def _scan_causality(
    rec: Recorder, impl: Implementation, dtype: torch.dtype, device: torch.device, name: str, seed: int
) -> None:
    """Later tokens leave ``o_1..o_k`` unchanged; in float64, ``|d o_k / d(s_j, v_j)| < 1e-14`` for ``j > k``.

    Also for any input: a NaN or ``±inf`` value at token ``t`` (one row, one column each) leaves
    ``o_1..o_{t-1}`` bit for bit unchanged and finite (an exact scan never reads token ``t`` for them).
    """
    case = scan_case(65, dv=3, lead=(2,), scores="wide", seed=seed + 7)
    s, v = case.on(dtype, device)
    k = 40
    g = torch.Generator().manual_seed(seed + 8)
    s2, v2 = s.clone(), v.clone()
    s2[..., k + 1 :] = (30 * torch.randn(s2[..., k + 1 :].shape, generator=g, dtype=F64)).to(dtype).to(device)
    v2[..., k + 1 :, :] = torch.randn(v2[..., k + 1 :, :].shape, generator=g, dtype=F64).to(dtype).to(device)
    full = as_tensor(invoke(impl.fn, s, v), impl.label, v.shape)
    out = full[..., : k + 1, :].cpu()
    out2 = as_tensor(invoke(impl.fn, s2, v2), impl.label, v.shape)[..., : k + 1, :].cpu()
    rec.record(
        f"{name}: causal (changing tokens after k leaves o_1..o_k)",
        scaled_error(out2, out, row_scale(v.cpu())),
        identity_tolerance(dtype, 65),
    )
    rec.cases += 1
    t = NONFINITE_AT
    differing = 0
    for bad in (math.nan, math.inf, -math.inf):
        v3 = v.clone()
        v3[0, t, 1] = bad
        v3[1, t + 1, 2] = bad
        before = as_tensor(invoke(impl.fn, s, v3), impl.label, v.shape)[..., :t, :]
        differing += bitwise_mismatches(before, full[..., :t, :]) + int((~torch.isfinite(before)).sum())
        rec.cases += 1
    rec.record(f"{name}: causal for NaN/±inf values (entries of o_1..o_{{t-1}} changed or non-finite)", differing, 0)
    if dtype != F64:
        return
    s_g, v_g = s.clone().requires_grad_(), v.clone().requires_grad_()
    o = invoke(impl.fn, s_g, v_g)
    if not (isinstance(o, Tensor) and o.requires_grad):
        rec.notes.setdefault("skipped", []).append(f"{name}: gradient causality (output not differentiable)")
        return
    ds, dv = invoke(torch.autograd.grad, o[..., k, :].sum(), (s_g, v_g), allow_unused=True)
    leak = max(
        float(ds[..., k + 1 :].abs().max()) if ds is not None else 0.0,
        float(dv[..., k + 1 :, :].abs().max()) if dv is not None else 0.0,
    )
    rec.record(f"{name}: gradient causal (max |d o_k / d(s_j, v_j)|, j > k)", leak, 1e-14)


# ---------------------------------------------------------------------------
# Claim 4: shift invariance and no overflow
# ---------------------------------------------------------------------------


def shift_tolerance(dtype: torch.dtype, n: int, delta: float, max_score: float) -> float:
    """``identity tolerance + 8 (|δ| + max|s|) ε``: shifting rounds scores at ``|s + δ|`` (CONTRIBUTING.md)."""
    return identity_tolerance(dtype, n) + 8 * (abs(delta) + max_score) * 2 * UNIT_ROUNDOFF[dtype]


def check_shift_invariance(rec: Recorder, impls: Sequence[Implementation], ctx: CheckContext) -> None:
    """Outputs for ``s + δ`` equal those for ``s``; bit for bit on the ``2^-8`` grid; finite always."""
    rec.symbolic(proofs.softmax_shift() + proofs.reference_point_invariance(), "softmax shift, reference point")
    lengths = (37, 200) + ((1000, 4097) if ctx.thorough else ())
    grid = [
        scan_case(n, dv=3, lead=(2, 3), scores="grid", mask=m, seed=ctx.seed + n)
        for n in lengths
        for m in ("none", "random")
    ]
    general = [scan_case(n, dv=3, lead=(2,), scores="normal", seed=ctx.seed + 1 + n) for n in lengths]
    general = [ScanCase(c.label.replace("normal", "3*normal"), 3 * c.scores, c.values) for c in general]
    for impl in impls:
        device = device_for(impl, ctx)
        for dtype in ctx.dtypes_for(impl):  # float64 and float32 only (the claim's dtypes)
            name = f"{impl.label} [{dtype_name(dtype)}]"
            with rec.guard(name):
                mismatches = empty_nonzero = 0
                with rec.worst(f"{name}: error vs float64 truth of the unshifted scores, over all δ") as err:
                    for case in grid + general:
                        s, v = case.on(dtype, device)
                        truth = case.ground_truth(dtype)
                        empty = empty_prefix(s)
                        base = outside_convention(as_tensor(invoke(impl.fn, s, v), impl.label, v.shape), empty)
                        max_s = float(s[s > NEG_INF].abs().max())
                        for delta in SHIFTS:
                            out = as_tensor(invoke(impl.fn, s + delta, v), impl.label, v.shape)
                            empty_nonzero += int((out[empty] != 0).sum())
                            out = outside_convention(out, empty)
                            tol = shift_tolerance(dtype, s.shape[-1], delta, max_s)
                            err.add(
                                scaled_error(out.cpu(), truth, row_scale(v.cpu())), tol, f"{case.label} δ={delta:g}"
                            )
                            if case in grid:
                                mismatches += bitwise_mismatches(out, base)
                            rec.cases += 1
                rec.record(
                    f"{name}: bit-identical outputs for grid scores under every δ (entries differing)", mismatches, 0
                )
                rec.convention(EMPTY_PREFIX_ZERO, name, empty_nonzero)


# ---------------------------------------------------------------------------
# Claim 1: the many-to-one RNN cell computes softmax attention
# ---------------------------------------------------------------------------


def rnn_cases(ctx: CheckContext) -> list[ScanCase]:
    lengths = (1, 2, 3, 7, 64, 65, 200) + ((1000,) if ctx.thorough else ())
    kinds = (("normal", "none"), ("wide", "random"), ("shifted", "leftpad"), ("spread", "none"), ("ramp", "none"))
    return [
        scan_case(n, dv=3, lead=LEADS[(i + j) % 3], scores=sk, mask=mk, seed=ctx.seed + 10 * i + j)
        for i, n in enumerate(lengths)
        for j, (sk, mk) in enumerate(kinds)
    ]


def check_rnn_cell(rec: Recorder, impls: Sequence[Implementation], ctx: CheckContext) -> None:
    """The stable cell's output is softmax attention and its state obeys the invariant (book/aaren.md, the cell)."""
    rec.symbolic(proofs.cell_induction(), "induction on k: base, step in three cases of the max, output")
    cases = rnn_cases(ctx)
    for impl in impls:
        device = device_for(impl, ctx)
        for dtype in ctx.dtypes_for(impl):
            name = f"{impl.label} [{dtype_name(dtype)}]"
            with rec.guard(name):
                _rnn_cases(rec, impl, dtype, device, cases, name)
                if dtype == F64:
                    _cell_gradcheck(rec, impl, device, name, ctx.seed)


def _cell_gradcheck(rec: Recorder, impl: Implementation, device: torch.device, name: str, seed: int) -> None:
    """``torch.autograd.gradcheck`` (float64) of the outputs ``o_k = a_k / c_k``."""
    case = scan_case(6, dv=2, lead=(2,), scores="wide", mask="random", seed=seed + 3)
    s, v = (t.requires_grad_() for t in case.on(F64, device))

    def outputs(s: Tensor, v: Tensor) -> Tensor:
        _, c, a = as_tensors(invoke(impl.fn, s, v), impl.label, (s.shape, s.shape, v.shape))
        return a / c.clamp_min(1e-300)[..., None]

    passed = torch.autograd.gradcheck(outputs, (s, v), raise_exception=False)
    rec.require(f"{name}: torch.autograd.gradcheck of o_k = a_k / c_k", passed)
    rec.cases += 1


def _rnn_cases(
    rec: Recorder, impl: Implementation, dtype: torch.dtype, device: torch.device, cases: list[ScanCase], name: str
) -> None:
    max_mismatch = first_mismatch = bound_violations = hull_violations = 0
    eps = 2 * UNIT_ROUNDOFF[dtype]
    with (
        rec.worst(f"{name}: o_k = a_k / c_k vs masked quadratic softmax") as out_err,
        rec.worst(f"{name}: c_k = sum_i e^(s_i - m_k)") as c_err,
        rec.worst(f"{name}: a_k = sum_i e^(s_i - m_k) v_i") as a_err,
    ):
        for case in cases:
            s, v = case.on(dtype, device)
            out, _ = call_pure(impl.fn, s, v)
            m, c, a = as_tensors(out, impl.label, (s.shape, s.shape, v.shape))
            m, c, a = m.cpu().to(F64), c.cpu().to(F64), a.cpu().to(F64)
            s64, v64 = s.cpu().to(F64), v.cpu().to(F64)
            n = s.shape[-1]
            tol = identity_tolerance(dtype, n)
            # Ground truth of the invariant, from the true running max.
            m_true = torch.cummax(s64, -1).values
            causal = torch.ones(n, n, dtype=torch.bool).tril()
            live = m_true > NEG_INF
            expo = (s64[..., None, :] - m_true.masked_fill(~live, 0.0)[..., :, None]).masked_fill(~causal, NEG_INF)
            weights = expo.exp()  # (..., k, i) = e^{s_i - m_k} [i <= k]
            c_true = weights.sum(-1)
            a_true = weights @ v64
            max_mismatch += bitwise_mismatches(m, m_true)
            o = ref.readout(ref.ScanState(m, c, a))
            scale = row_scale(v64)
            out_err.add(scaled_error(o, case.ground_truth(dtype), scale), tol, case.label)
            c_err.add(scaled_error(c, c_true, c_true.clamp_min(1.0)), tol, case.label)
            a_err.add(scaled_error(a, a_true, c_true.clamp_min(1.0)[..., None] * scale), tol, case.label)
            if n:
                first = s64[..., 0] > NEG_INF
                first_mismatch += bitwise_mismatches(o[..., 0, :][first], v64[..., 0, :][first])
            # 1 <= c_k <= (number of live tokens up to k)(1 + eps); outputs in the hull of v_1..v_k.
            count = (s64 > NEG_INF).cumsum(-1).to(F64)
            bound_violations += int(((c < 1) & live).sum() + (c > count * (1 + n * eps)).sum())
            masked = (s64 == NEG_INF)[..., None]
            lo = v64.masked_fill(masked, math.inf).cummin(-2).values  # running hull of the live values
            hi = v64.masked_fill(masked, -math.inf).cummax(-2).values
            slack = tol * scale
            hull_violations += int((((o < lo - slack) | (o > hi + slack)) & live[..., None]).sum())
            rec.cases += 1
    rec.record(f"{name}: m_k = max_(i<=k) s_i bit for bit (entries differing)", max_mismatch, 0)
    rec.record(f"{name}: o_1 = v_1 bit for bit (entries differing)", first_mismatch, 0)
    rec.record(f"{name}: 1 <= c_k <= k (violations)", bound_violations, 0)
    rec.record(f"{name}: o_k in the hull of v_1..v_k (violations)", hull_violations, 0)


# ---------------------------------------------------------------------------
# Claim 2: ⊕ is a monoid
# ---------------------------------------------------------------------------


def _random_states(g: torch.Generator, count: int, dv: int, spread: float, empty_fraction: float) -> ref.ScanState:
    m = spread * (torch.rand(count, generator=g, dtype=F64) * 2 - 1)
    m = m.masked_fill(torch.rand(count, generator=g) < empty_fraction, NEG_INF)
    u = torch.exp(torch.randn(count, generator=g, dtype=F64)) + 1.0
    w = torch.randn(count, dv, generator=g, dtype=F64) * u[:, None]
    empty = m == NEG_INF
    return ref.ScanState(m, u.masked_fill(empty, 0.0), w.masked_fill(empty[:, None], 0.0))


def _absolute(x: ref.ScanState) -> ref.ScanState:
    return ref.ScanState(x.m, x.u.abs(), x.w.abs())


def check_monoid(rec: Recorder, impls: Sequence[Implementation], ctx: CheckContext) -> None:
    """``⊕`` is associative with identity ``e = (-inf, 0, 0)`` and maps to ``+`` under φ (book/aaren.md)."""
    rec.symbolic(proofs.monoid_laws(), "associativity in 13 orderings of the maxima, identity, homomorphism")
    count = 4000 if ctx.thorough else 400
    g = torch.Generator().manual_seed(ctx.seed)
    X, Y, Z = (_random_states(g, count, 3, 1e4, 0.2) for _ in range(3))
    Xs, Ys = (_random_states(g, count, 3, 30.0, 0.1) for _ in range(2))  # φ stays finite for |m| <= 30
    e = ref.identity((count,), 3)
    for impl in impls:
        device = device_for(impl, ctx)
        for dtype in ctx.dtypes_for(impl):
            name = f"{impl.label} [{dtype_name(dtype)}]"
            tol = identity_tolerance(dtype)

            def on(x: ref.ScanState, dtype: torch.dtype = dtype, device: torch.device = device) -> ref.ScanState:
                return ref.ScanState(*(t.to(dtype).to(device) for t in x))

            def op(x: ref.ScanState, y: ref.ScanState, impl: Implementation = impl) -> ref.ScanState:
                m, u, w = as_tensors(invoke(impl.fn, on(x), on(y)), impl.label, (x.m.shape, x.u.shape, x.w.shape))
                return ref.ScanState(m.cpu().to(F64), u.cpu().to(F64), w.cpu().to(F64))

            with rec.guard(name):
                x, y, z = (ref.ScanState(*(t.to(dtype).to(F64) for t in a)) for a in (X, Y, Z))
                left, right = op(op(x, y), z), op(x, op(y, z))
                # Condition of the sums: the same bracketing on absolute values, in float64.
                size = ref.combine(ref.combine(_absolute(x), _absolute(y)), _absolute(z))
                rec.record(
                    f"{name}: associativity, m bit for bit (entries differing)", bitwise_mismatches(left.m, right.m), 0
                )
                rec.record(f"{name}: associativity, u", scaled_error(left.u, right.u, size.u), tol)
                rec.record(f"{name}: associativity, w", scaled_error(left.w, right.w, size.w.clamp_min(1e-300)), tol)
                xy = op(x, y)
                finite = torch.isfinite(xy.u).all() and torch.isfinite(xy.w).all()
                rec.require(f"{name}: finite for finite operands with |m| up to 1e4", bool(finite))
                rec.record(
                    f"{name}: m of x ⊕ y is max(m_x, m_y) bit for bit (entries differing)",
                    bitwise_mismatches(xy.m, torch.maximum(x.m, y.m)),
                    0,
                )
                xs, ys = (ref.ScanState(*(t.to(dtype).to(F64) for t in a)) for a in (Xs, Ys))
                lhs_u, lhs_w = ref.phi(op(xs, ys))
                (xu, xw), (yu, yw) = ref.phi(xs), ref.phi(ys)
                (axu, axw), (ayu, ayw) = ref.phi(_absolute(xs)), ref.phi(_absolute(ys))
                rec.record(f"{name}: φ(x ⊕ y) = φ(x) + φ(y), u part", scaled_error(lhs_u, xu + yu, axu + ayu), tol)
                rec.record(f"{name}: φ(x ⊕ y) = φ(x) + φ(y), w part", scaled_error(lhs_w, xw + yw, axw + ayw), tol)
                ex, xe, ee = op(e, x), op(x, e), op(e, e)
                ident = sum(
                    bitwise_mismatches(a, b) for p, q in ((ex, x), (xe, x), (ee, e)) for a, b in zip(p, q, strict=True)
                )
                rec.record(f"{name}: e ⊕ x = x ⊕ e = x and e ⊕ e = e bit for bit (entries differing)", ident, 0)
                rec.cases += 5 * count


# ---------------------------------------------------------------------------
# Claim 5: streaming equals batch
# ---------------------------------------------------------------------------

STREAM_EXTREME_TOLERANCE = 1e-9
"""float64 tolerance when inputs are scaled by 1e3 (scores of order 1e3-1e4): the scores themselves
differ by about ``d·ε·|s| ≈ 2e-11`` between the batched and the one-token projections, and the
softmax passes that on to the outputs; ``1e-9`` bounds it with a wide margin.  Mutants miss by O(1)."""


def _stream(layers: list[Any], x: Tensor) -> tuple[Tensor, list[Any]]:
    """Step a stack of layers through ``x: (B, N, d)``; returns outputs and the final states."""
    states = [invoke(layer.init_state, x.shape[0]) for layer in layers]
    ys = []
    for t in range(x.shape[1]):
        h = x[:, t]
        for i, layer in enumerate(layers):
            h, states[i] = invoke(layer.step, h, states[i])
        ys.append(as_tensor(h, "step"))
    return torch.stack(ys, 1), states


def _numel(state: Any) -> int:
    leaves, _ = tree_flatten(state)
    return sum(t.numel() for t in leaves if isinstance(t, Tensor))


def check_streaming(rec: Recorder, impls: Sequence[Implementation], ctx: CheckContext) -> None:
    """``step`` from ``init_state`` reproduces ``forward`` and an independent float64 reference of the layer
    built from the module's weights (1-3 stacked layers); the state has ``B·H·(d_head + 2)`` numbers per
    layer after 1 and after ``T`` steps, and neither the module's storage nor a step's cost grows with ``t``
    (book/aaren.md, "The claims")."""
    d_model, n_heads, batch = 16, 4, 4
    d_head = d_model // n_heads
    length = 200 if ctx.thorough else 33
    steps = 10_000 if ctx.thorough else 300
    for impl in impls:
        device = device_for(impl, ctx)
        for dtype in ctx.dtypes_for(impl):
            name = f"{impl.label} [{dtype_name(dtype)}]"
            with rec.guard(name):
                for depth in (1, 2, 3):
                    torch.manual_seed(ctx.seed + depth)
                    layers = [invoke(impl.fn, d_model, n_heads, dtype).to(device) for _ in range(depth)]
                    g = torch.Generator().manual_seed(ctx.seed + depth)
                    x = torch.randn(batch, length, d_model, generator=g, dtype=F64)
                    regimes = [("inputs ~ N(0, 1)", 1.0, identity_tolerance(dtype, length))]
                    if dtype == F64:
                        regimes.append(("inputs ~ N(0, 1e6)", 1e3, STREAM_EXTREME_TOLERANCE))
                    for regime, scale, tol in regimes:
                        xs = (x * scale).to(dtype)
                        with torch.no_grad():
                            truth = xs.to(F64)
                            for layer in layers:
                                truth = aaren_layer_reference(invoke(layer_weights, layer), truth)
                            y = xs.to(device)
                            for layer in layers:
                                y = as_tensor(invoke(layer, y), "forward")
                            y_stream, _ = _stream(layers, xs.to(device))
                        scale_of = truth.abs().amax((1, 2), keepdim=True)
                        y, y_stream = y.cpu().to(F64), y_stream.cpu().to(F64)
                        label = f"{name}: {depth} layer(s), {regime}: step outputs vs"
                        rec.record(f"{label} forward", scaled_error(y_stream, y, scale_of), tol)
                        rec.record(f"{label} float64 reference", scaled_error(y_stream, truth, scale_of), tol)
                        rec.cases += 1
                _streaming_structure(rec, impl, dtype, device, name, (d_model, n_heads, d_head), steps, ctx.seed)


class LayerWeights(NamedTuple):
    """An Aaren layer's parameters in float64 on the CPU: ``query: (H, d_head)``, key and value
    projections ``(d_model, d_model)`` with biases (zeros when absent), and the score scale."""

    query: Tensor
    key_weight: Tensor
    key_bias: Tensor
    value_weight: Tensor
    value_bias: Tensor
    scale: float


def layer_weights(layer: Any) -> LayerWeights:
    """Read the parameters the subject exposes (``query``, ``key``, ``value`` linear maps, ``scale``)."""

    def bias(linear: Any) -> Tensor:
        b = linear.bias
        return torch.zeros(linear.weight.shape[0], dtype=F64) if b is None else b.detach().cpu().to(F64)

    def f64(t: Tensor) -> Tensor:
        return t.detach().cpu().to(F64)

    return LayerWeights(
        f64(layer.query),
        f64(layer.key.weight),
        bias(layer.key),
        f64(layer.value.weight),
        bias(layer.value),
        float(layer.scale),
    )


def aaren_layer_reference(w: LayerWeights, x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Float64 reference of one Aaren layer (book/aaren.md, our formulation): per head ``h``, scores
    ``scale·⟨W_K x_i + b_K, q_h⟩`` and values ``W_V x_i + b_V``, masked quadratic causal softmax
    (``ref.causal_constant_query_attention``), heads concatenated.  ``x: (B, N, d)``, ``mask: (B, N)``."""
    n_heads, d_head = w.query.shape
    x = x.to(F64)
    k = F.linear(x, w.key_weight, w.key_bias).unflatten(-1, (n_heads, d_head))
    v = F.linear(x, w.value_weight, w.value_bias).unflatten(-1, (n_heads, d_head))
    s = torch.einsum("bnhd,hd->bhn", k, w.query) * w.scale
    if mask is not None:
        s = s.masked_fill(~mask[:, None, :], NEG_INF)
    return ref.causal_constant_query_attention(s, v.transpose(1, 2)).transpose(1, 2).flatten(-2)


STREAM_STORAGE_AT = 10
"""The module's tensor storage after this many steps is compared with that after the last step."""
STEP_COST_BAND = 1.5
"""A late step's op cost may be at most this multiple of an early one's.  The cost is deterministic: the
elements every torch operator of the step reads and writes.  A constant-memory step repeats the same
operators on the same shapes (ratio 1); a step that re-reads a history grows ∝ t (about 30× from
t = 10 to 300)."""
STEP_TIME_BAND = 4.0
"""A late step's median wall time may be at most this multiple of an early one's.  Generous, because the
machine may be shared: the two are timed interleaved (an early copy of the module and the late module,
step for step), so load affects both alike; the deterministic op cost above is the sharp test."""
STEP_WINDOW = 15
"""Steps per window for the op cost and the timing medians."""


def _storage_bytes(obj: Any) -> int:
    """Bytes of every distinct tensor reachable from ``obj`` (a module: its parameters, buffers and attributes;
    lists, tuples, sets, dicts and plain objects are searched; functions and types are not).  Each tensor
    counts its own elements, so a growing list of views into one input grows the total too."""
    seen: set[int] = set()
    total = 0
    stack = [obj]
    while stack:
        item = stack.pop()
        atom = isinstance(item, (type, str, bytes, int, float, bool))
        if id(item) in seen or atom or (callable(item) and not isinstance(item, torch.nn.Module)):
            continue
        seen.add(id(item))
        if isinstance(item, Tensor):
            total += item.numel() * item.element_size()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif hasattr(item, "__dict__"):
            stack.extend(vars(item).values())
    return total


class _OpCost(TorchDispatchMode):
    """Elements read and written by every torch operator run inside (a deterministic cost of the block)."""

    def __init__(self) -> None:
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        leaves, _ = tree_flatten((args, kwargs, out))
        self.elements += sum(t.numel() for t in leaves if isinstance(t, Tensor))
        return out


def _streaming_structure(
    rec: Recorder,
    impl: Implementation,
    dtype: torch.dtype,
    device: torch.device,
    name: str,
    dims: tuple[int, int, int],
    steps: int,
    seed: int,
) -> None:
    """State size after 1 and ``steps`` steps; module storage after :data:`STREAM_STORAGE_AT` steps and at
    doubling checkpoints up to ``steps`` (a module found growing stops there: a history re-read at every
    step costs O(t^2)); a step's op cost and wall time there vs early (medians of :data:`STEP_WINDOW`)."""
    d_model, n_heads, d_head = dims
    torch.manual_seed(seed)
    layer = invoke(impl.fn, d_model, n_heads, dtype).to(device)
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(steps + STEP_WINDOW, 2, d_model, generator=g, dtype=F64).to(dtype).to(device)
    state = invoke(layer.init_state, 2)
    expected = 2 * n_heads * (d_head + 2)
    checkpoints = {steps, *(c for c in (STREAM_STORAGE_AT * 2**k for k in range(1, 20)) if c < steps)}
    first = storage = 0
    early = None
    with torch.no_grad():
        for t in range(1, steps + 1):
            _, state = invoke(layer.step, xs[t - 1], state)
            if t == 1:
                first = _numel(state)
                if first != expected:  # already wrong after one step: no need to stream the rest
                    break
            if t == STREAM_STORAGE_AT:
                storage = _storage_bytes(layer)
                early = invoke(copy.deepcopy, (layer, state))
            elif t in checkpoints and _storage_bytes(layer) != storage:
                break
        rec.record(
            f"{name}: state numel after 1 and after {t} steps vs B·H·(d_head + 2) = {expected} (difference)",
            abs(first - expected) + abs(_numel(state) - expected),
            0,
        )
        rec.cases += 1
        if early is None:
            return
        late = f"t = {t} over t = {STREAM_STORAGE_AT}"
        grown = _storage_bytes(layer) - storage
        rec.record(f"{name}: module tensor storage after {t} steps minus after {STREAM_STORAGE_AT} (bytes)", grown, 0)
        costs: dict[str, list[float]] = {"early": [], "late": []}
        times: dict[str, list[float]] = {"early": [], "late": []}
        runs = {"early": list(early), "late": [layer, state]}
        for i in range(STEP_WINDOW):  # interleaved, so the load of a shared machine hits both alike
            for key, run in runs.items():
                with _OpCost() as cost:
                    invoke(run[0].step, xs[steps + i], run[1])
                costs[key].append(cost.elements)
                _synchronize(device)
                start = time.perf_counter()
                _, run[1] = invoke(run[0].step, xs[steps + i], run[1])
                _synchronize(device)
                times[key].append(time.perf_counter() - start)
    cost_ratio = statistics.median(costs["late"]) / max(1.0, statistics.median(costs["early"]))
    rec.record(f"{name}: step op cost at {late} (ratio)", cost_ratio, STEP_COST_BAND)
    time_ratio = statistics.median(times["late"]) / statistics.median(times["early"])
    rec.record(f"{name}: step time at {late} (median ratio)", time_ratio, STEP_TIME_BAND)
    rec.notes.setdefault("step time late/early", {})[name] = time_ratio


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------
# Subjects and claims
# ---------------------------------------------------------------------------


def _triton_dtypes(device: torch.device) -> tuple[torch.dtype, ...]:
    # The interpreter (CPU) does not do bfloat16 arithmetic.
    return (F64, F32, BF16, F16) if device.type == "cuda" else (F64, F32)


def scan_implementations(device: torch.device) -> tuple[Implementation, ...]:
    ours = [
        Implementation(
            "fast torch", lambda s, v: fast.prefix_softmax_attention(s, v, backend="torch"), (F64, F32, BF16, F16)
        )
    ]
    if triton_usable(device):
        ours.append(
            Implementation(
                "fast triton",
                lambda s, v: fast.prefix_softmax_attention(s, v, backend="triton"),
                _triton_dtypes(device),
            )
        )
    return (
        Implementation("reference sequential", ref.sequential_scan, device="cpu"),
        Implementation("reference Hillis-Steele", ref.hillis_steele_scan, device="cpu"),
        Implementation("reference Blelloch", ref.blelloch_scan, device="cpu"),
        *ours,
    )


SCAN = Subject(
    "prefix_softmax_attention",
    "fn(scores: (..., N), values: (..., N, Dv)) -> (..., N, Dv)",
    scan_implementations,
    args=("scores", "values"),
)
CELL = Subject(
    "rnn_cell",
    "fn(scores: (..., N), values: (..., N, Dv)) -> (m, c, a): the states after each token, "
    "m, c: (..., N), a: (..., N, Dv)",
    lambda device: (Implementation("reference stable cell", ref.stable_rnn, device="cpu"),),
    args=("scores", "values"),
)
OPERATOR = Subject(
    "combine",
    "fn(x, y) -> (m, u, w) for states x, y = (m: (...), u: (...), w: (..., D))",
    lambda device: (
        Implementation("reference ⊕", lambda x, y: ref.combine(ref.ScanState(*x), ref.ScanState(*y)), device="cpu"),
        Implementation("fast ⊕", fast.combine),
    ),
    args=("x", "y"),
)
STREAMING = Subject(
    "aaren_module",
    "fn(d_model, n_heads, dtype) -> module with forward(x), init_state(batch_size), step(x_t, state), "
    "and attributes query: (H, d_head), key and value: nn.Linear(d_model, d_model), scale: float",
    lambda device: (Implementation("fast Aaren", lambda d, h, dtype: fast.Aaren(d, h, dtype=dtype)),),
    args=("d_model", "n_heads", "dtype"),
)

CLAIMS = (
    Claim(
        id="aaren.rnn_cell_equals_softmax",
        paper=AAREN,
        kind="identity",
        title="The stable many-to-one RNN cell computes softmax attention",
        statement=(
            r"From $(m_0,c_0,a_0)=(-\infty,0,0)$, the cell $m_k=\max(m_{k-1},s_k)$, "
            r"$c_k=c_{k-1}e^{m_{k-1}-m_k}+e^{s_k-m_k}$, $a_k=a_{k-1}e^{m_{k-1}-m_k}+v_ke^{s_k-m_k}$ keeps "
            r"$m_k=\max_{i\le k}s_i$, $c_k=\sum_{i\le k}e^{s_i-m_k}$, $a_k=\sum_{i\le k}e^{s_i-m_k}v_i$, so "
            r"$a_k/c_k=\sum_{i\le k}\operatorname{softmax}(s_{1..k})_i\,v_i$, with $1\le c_k\le k$. "
            r"sympy proves the invariant and the output for every $k$ (induction); the bound and the "
            r"implementations rest on numerical evidence."
        ),
        check=check_rnn_cell,
        subject=CELL,
        dtypes=(F64, F32),
        mutants=(mut.PLAIN_CELL, mut.CELL_INIT_M_ZERO, mut.CELL_A_NOT_RESCALED),
    ),
    Claim(
        id="aaren.combine_is_monoid",
        paper=AAREN,
        kind="symbolic",
        title="The scan operator is a monoid: associative, with identity (-inf, 0, 0)",
        statement=(
            r"$(m_A,u_A,w_A)\oplus(m_B,u_B,w_B)=(m,\,u_A\alpha_A+u_B\alpha_B,\,w_A\alpha_A+w_B\alpha_B)$ with "
            r"$m=\max(m_A,m_B)$, $\alpha_X=e^{m_X-m}$ ($0$ if $m_X=-\infty$) is associative, has identity "
            r"$e=(-\infty,0,0)$, and $\varphi(m,u,w)=(ue^m,we^m)$ satisfies $\varphi(X\oplus Y)=\varphi(X)+\varphi(Y)$ "
            r"(sympy, for arbitrary states; the implementations are checked numerically)."
        ),
        check=check_monoid,
        subject=OPERATOR,
        dtypes=(F64, F32),
        mutants=(mut.COMBINE_UNGUARDED, mut.COMBINE_W_UNSCALED, mut.COMBINE_LEFT_REFERENCE),
    ),
    Claim(
        id="aaren.scan_equals_causal_softmax",
        paper=AAREN,
        kind="identity",
        title="The inclusive ⊕-scan equals constant-query causal softmax attention",
        statement=(
            r"For leaves $(s_i,1,v_i)$ (and $e$ for $s_i=-\infty$), $w_{1..k}/u_{1..k}$ of the inclusive "
            r"$\oplus$-scan equals row $k$ of $\operatorname{softmax}(S+M)V$ with $S_{k,i}=s_i$, "
            r"$M_{k,i}=0$ for $i\le k$ and $-\infty$ otherwise; a prefix of masked tokens gives $0$. sympy "
            r"proves it for every $k$ and every bracketing (the sequence-parallel claim's proof); here the "
            r"implementations are checked numerically."
        ),
        check=check_scan_equals_causal_softmax,
        subject=SCAN,
        conventions=(EMPTY_PREFIX_ZERO,),
        mutants=(
            mut.EXCLUSIVE_SCAN,
            mut.NO_MAX_SHIFT,
            mut.MIXED_REFERENCE_MAX,
            mut.IDENTITY_M_ZERO,
            mut.CHUNK_COMMON_MAX,
            mut.LOW_PRECISION_ACCUMULATOR,
            mut.QUADRATIC_MATMUL,
            mut.MASKED_WEIGHT_ZERO,
        ),
    ),
    Claim(
        id="aaren.shift_invariance",
        paper=AAREN,
        kind="identity",
        title="Outputs do not change when every score is shifted, and never overflow",
        statement=(
            r"$\operatorname{scan}(s+\delta\mathbf 1,V)=\operatorname{scan}(s,V)$ for every $\delta$, bit for bit "
            r"when $s\in2^{-8}\mathbb Z$ and $|s|+|\delta|\le2^{14}$, and the outputs are finite for all finite "
            r"scores (tested at $\delta\in\{\pm10^4,\pm800,\pm50,0\}$, beyond the range of $e^{s}$). sympy "
            r"proves $\operatorname{softmax}(s+\delta)=\operatorname{softmax}(s)$ for every length; bitwise "
            r"equality and finiteness rest on numerical evidence."
        ),
        check=check_shift_invariance,
        subject=SCAN,
        conventions=(EMPTY_PREFIX_ZERO,),
        dtypes=(F64, F32),  # low precision cannot hold s + 1e4 exactly; claim 3 covers it
        mutants=(mut.NO_MAX_SHIFT, mut.IDENTITY_M_ZERO, mut.EXCLUSIVE_SCAN, mut.MIXED_REFERENCE_MAX),
    ),
    Claim(
        id="aaren.streaming_equals_batch",
        paper=AAREN,
        kind="identity",
        title="Streaming one token at a time reproduces the parallel forward, in constant memory",
        statement=(
            r"With $\mathrm{state}_0=e$ and $\mathrm{state}_t=\mathrm{state}_{t-1}\oplus(s_t,1,v_t)$, "
            r"$y_t=w_t/u_t$ equals row $t$ of the parallel Aaren forward and of a float64 reference of the layer "
            r"for stacks of 1-3 layers; the state holds $BH(d_h+2)$ numbers per layer whatever $t$, and neither "
            r"the module's tensor storage nor the cost of a step grows with $t$."
        ),
        check=check_streaming,
        subject=STREAMING,
        dtypes=(F64, F32),
        mutants=(
            mut.STEP_KEEPS_HISTORY,
            mut.MODULE_KEEPS_HISTORY,
            mut.STEP_INIT_M_ZERO,
            mut.STEP_EMITS_STALE,
            mut.FORWARD_AND_STEP_UNSCALED,
        ),
    ),
)
