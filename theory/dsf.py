"""DSF claims (arXiv 2405.15731), with the GLA (arXiv 2312.06635) and Lightning (arXiv 2401.04658) kernels.

Claim ids follow ``book/dsf.md`` ("The claims").  Each check compares the implementations under
test with float64 ground truth from ``reference/dsf.py``: a model's DSF (returned by a converter
under test) must reproduce the model's own direct form; a kernel under test must reproduce the
step-by-step recurrence.  Error metric: ``max |a - b| / max(1, max |b|)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import lambertw
from torch import Tensor

from attnverify.evidence import Recorder, invoke
from attnverify.fast import dsf as fast
from attnverify.harness import as_tensor, as_tensors, device_for, pair_name
from attnverify.numerics import identity_tolerance, scaled_error
from attnverify.proofs_checks import dsf as proofs
from attnverify.reference import dsf as ref
from attnverify.registry import CheckContext, Claim, Implementation, Paper, Subject
from attnverify.theory.mutants import dsf as mut

DSF_PAPER = Paper(
    key="dsf",
    title="Understanding the differences in Foundation Models: Attention, State Space Models, and Recurrent "
    "Neural Networks",
    authors="Jerome Sieber, Carmen Amo Alonso, Alexandre Didier, Melanie N. Zeilinger, Antonio Orvieto",
    year=2024,
    arxiv="2405.15731",
)
GLA_PAPER = Paper(
    key="gla",
    title="Gated Linear Attention Transformers with Hardware-Efficient Training",
    authors="Songlin Yang, Bailin Wang, Yikang Shen, Rameswar Panda, Yoon Kim",
    year=2023,
    arxiv="2312.06635",
)
LIGHTNING_PAPER = Paper(
    key="lightning",
    title="Lightning Attention-2: A Free Lunch for Handling Unlimited Sequence Lengths in Large Language Models",
    authors="Zhen Qin, Weigao Sun, Dong Li, Xuyang Shen, Weixuan Sun, Yiran Zhong",
    year=2024,
    arxiv="2401.04658",
)

F64, F32 = torch.float64, torch.float32
CHUNKED_TOLERANCE = {F64: 1e-10, F32: 1e-4}
"""Chunked kernels vs the recurrence.  A chunked form rounds gate cumsums of magnitude up to
``|G| ~ 10³`` (gate log-scale 10 over a chunk of 64) before ``exp``: weights carry a relative error
``~ |G| u`` (``10³ · 1.1e-16 ≈ 1e-13``; ``10³ · 6e-8 ≈ 6e-5``), covered by ``1e-10`` and ``1e-4``."""


def rel_error(out: Tensor, truth: Tensor) -> float:
    """``max |out - truth| / max(1, max |truth|)`` in float64; ``inf`` for NaN or a shape mismatch."""
    scale = max(1.0, float(truth.abs().max())) if truth.numel() else 1.0
    return scaled_error(out.detach().cpu(), truth, scale)


def _f64(t: Tensor) -> Tensor:
    return t.detach().to(device="cpu", dtype=F64)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------
# dsf.recurrence_equals_matrix_form
# ---------------------------------------------------------------------------

MATRIX_SHAPES = ((1, 1, 1, 1), (2, 3, 2, 1), (5, 1, 3, 2), (9, 7, 2, 4), (24, 3, 1, 2), (13, 5, 4, 3))
"""``(L, N, d, d_y)`` of the random systems."""


def random_dsf(L: int, N: int, d: int, dy: int, seed: int) -> tuple[ref.DSF, Tensor]:
    """A random DSF with any real diagonal ``Λ ∈ [-1.2, 1.2]`` (some exact zeros) and an input ``u: (L, d)``."""
    g = _gen(seed)
    lam = torch.rand(L, N, generator=g, dtype=F64) * 2.4 - 1.2
    lam[torch.rand(L, N, generator=g) < 0.1] = 0.0
    parts = (torch.randn(L, N, d, generator=g, dtype=F64), torch.randn(L, dy, N, generator=g, dtype=F64))
    D = torch.randn(L, dy, d, generator=g, dtype=F64)
    return ref.DSF(lam, *parts, D), torch.randn(L, d, generator=g, dtype=F64)


def check_matrix_form(rec: Recorder, impls: Sequence[Implementation], ctx: CheckContext) -> None:
    """``Φ u`` equals the recurrence; blocks above the diagonal are exactly 0; lower blocks have rank ``<= N``."""
    shapes = MATRIX_SHAPES + (((40, 6, 3, 2), (31, 2, 2, 2)) if ctx.thorough else ())
    cases = [(shape, *random_dsf(*shape, seed=ctx.seed + i)) for i, shape in enumerate(shapes)]
    for impl in impls:
        device = device_for(impl, ctx)
        for dtype in ctx.dtypes_for(impl):
            name = pair_name(impl.label, dtype)
            upper = rank_excess = 0
            with rec.guard(name), rec.worst(f"{name}: Φu vs the recurrence (relative to |Φ||u|)") as err:
                for (L, N, d, dy), dsf, u in cases:
                    args = [t.to(dtype).to(device) for t in (dsf.Lam, dsf.B, dsf.C, dsf.D)]
                    phi = _f64(as_tensor(invoke(impl.fn, *args), impl.label, (L * dy, L * d)))
                    rounded = ref.DSF(*(_f64(a) for a in args))
                    u_r = _f64(u.to(dtype))
                    truth = ref.recurrence(rounded, u_r)
                    bound = ref.matrix_form(ref.DSF(*(a.abs() for a in vars(rounded).values()))) @ u_r.abs().reshape(-1)
                    scale = max(1.0, float(bound.max()))
                    err.add(
                        scaled_error(ref.apply_matrix_form(phi, u_r), truth, scale),
                        identity_tolerance(dtype, L),
                        f"L={L} N={N} d={d} dy={dy}",
                    )
                    for i in range(L):
                        upper += int((phi[i * dy : (i + 1) * dy, (i + 1) * d :] != 0).sum())
                    if dtype == F64:
                        for r in range(1, L):
                            sv = torch.linalg.svdvals(phi[r * dy :, : r * d])
                            rank_excess += (
                                max(0, int((sv > 1e-10 * sv[0]).sum()) - N) if sv.numel() and sv[0] > 0 else 0
                            )
                    rec.cases += 1
            rec.record(f"{name}: entries above the block diagonal that are not exactly 0", upper, 0)
            if dtype == F64:
                rec.record(f"{name}: rank of Φ[r+1:, :r] beyond N (σ > 1e-10 σ_1), summed over r", rank_excess, 0)


# ---------------------------------------------------------------------------
# Models as DSFs: a converter under test returns (Λ, B, C, D); its recurrence must equal the direct form
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelCase:
    """Float64 arguments of a converter (the DSF input ``u`` first), keyword options, and the DSF's sizes."""

    label: str
    args: tuple[Any, ...]
    N: int
    dy: int
    kwargs: dict[str, Any] = field(default_factory=dict)

    def shapes(self) -> tuple[tuple[int, ...], ...]:
        L, d = self.args[0].shape
        return (L, self.N), (L, self.N, d), (L, self.dy, self.N), (L, self.dy, d)

    def on(self, dtype: torch.dtype, device: torch.device) -> tuple[Any, ...]:
        return tuple(a.to(dtype).to(device) if isinstance(a, Tensor) else a for a in self.args)


Extra = Callable[[ModelCase, ref.DSF, tuple[Any, ...], torch.dtype], list[tuple[str, float, float]]]
"""Claim-specific findings of one case: ``(what, metric, tolerance)`` from the returned DSF (float64)."""


def check_model(
    rec: Recorder,
    impls: Sequence[Implementation],
    ctx: CheckContext,
    cases: Sequence[ModelCase],
    direct: Callable[..., Tensor],
    extra: Extra | None = None,
) -> None:
    """For every case: the recurrence of the returned DSF equals ``direct`` on the same (rounded) inputs."""
    for impl in impls:
        device = device_for(impl, ctx)
        for dtype in ctx.dtypes_for(impl):
            name = pair_name(impl.label, dtype)
            found: dict[str, list[tuple[float, float, str]]] = {}
            with rec.guard(name), rec.worst(f"{name}: recurrence of the returned DSF vs the direct form") as err:
                for case in cases:
                    args = case.on(dtype, device)
                    out = as_tensors(invoke(impl.fn, *args, **case.kwargs), impl.label, case.shapes())
                    dsf = ref.DSF(*(_f64(t) for t in out))
                    args64 = tuple(_f64(a) if isinstance(a, Tensor) else a for a in args)
                    truth = direct(*args64, **case.kwargs)
                    L = args64[0].shape[0]
                    err.add(rel_error(ref.recurrence(dsf, args64[0]), truth), identity_tolerance(dtype, L), case.label)
                    for what, metric, tol in extra(case, dsf, args64, dtype) if extra else ():
                        found.setdefault(what, []).append((metric, tol, case.label))
                    rec.cases += 1
            for what, rows in found.items():
                with rec.worst(f"{name}: {what}") as acc:
                    for row in rows:
                        acc.add(*row)


ATTENTION_SHAPES = ((1, 2, 2, 1), (2, 3, 2, 2), (7, 3, 4, 2), (12, 5, 3, 5), (24, 2, 5, 3), (16, 4, 4, 1))
"""``(L, d, m, d_v)``: lengths 1..24, widths up to 5, ``d != m`` in most."""


def attention_case(L: int, d: int, m: int, dv: int, seed: int, scale: float = 1.0) -> ModelCase:
    """``u: (L, d)`` and weights ``W_Q, W_K: (m, d)``, ``W_V: (d_v, d)`` scaled by ``scale/√d``."""
    g = _gen(seed)
    w = scale / math.sqrt(d)
    u = torch.randn(L, d, generator=g, dtype=F64)
    W = [torch.randn(r, d, generator=g, dtype=F64) * w for r in (m, m, dv)]
    return ModelCase(f"L={L} d={d} m={m} dv={dv} scale={scale}", (u, *W), N=0, dy=dv)


def _with_state(case: ModelCase, N: int) -> ModelCase:
    return ModelCase(case.label, case.args, N, case.dy, case.kwargs)


def _telescoping(
    case: ModelCase, dsf: ref.DSF, args: tuple[Any, ...], dtype: torch.dtype
) -> list[tuple[str, float, float]]:
    """``Π_{k=j+1}^{i} Λ_k = η_j / η_i`` (every state entry, every ``j < i``), relative to ``η_j / η_i``."""
    u, W_Q, W_K, _ = args
    q, k = ref.elu1(u @ W_Q.T), ref.elu1(u @ W_K.T)
    eta = (q * torch.cumsum(k, 0)).sum(-1)
    worst = 0.0
    L = u.shape[0]
    for i in range(L):
        for j in range(i):
            ratio = eta[j] / eta[i]
            worst = max(worst, float(((torch.prod(dsf.Lam[j + 1 : i + 1], 0) - ratio).abs() / ratio).max()))
    return [("Π_{k=j+1..i} Λ_k vs η_j/η_i (relative)", worst, identity_tolerance(dtype, L))]


def check_linear_attention(rec: Recorder, impls: Sequence[Implementation], ctx: CheckContext) -> None:
    """Masked elu+1 attention equals its DSF; ``Λ`` products telescope to ``η_j / η_i``."""
    rec.symbolic(proofs.telescoping_decay(), "telescoping normalizer ratios")
    cases = [_with_state(attention_case(*s, seed=ctx.seed + i), s[2] * s[3]) for i, s in enumerate(ATTENTION_SHAPES)]
    check_model(rec, impls, ctx, cases, ref.linear_attention, _telescoping)


WITNESS_U = ((2.0, 2.0), (-1.0, 2.0))
"""Two tokens, ``d = 2``, ``m = d_v = 1``: ``q = u[0]``, ``k = u[1]``, ``v = u[1]``, so ``q_1 = k_1 = k_2 = 2``,
``q_2 = -1`` and ``Λ_2 = ν_1/ν_2 = e^4 / (2 e^{-2}) = e^6 / 2`` (derived)."""


def _softmax_lambda(
    case: ModelCase, dsf: ref.DSF, args: tuple[Any, ...], dtype: torch.dtype
) -> list[tuple[str, float, float]]:
    return [("entries of Λ that are not > 0", float((dsf.Lam <= 0).sum()), 0.0)]


def check_softmax_attention(rec: Recorder, impls: Sequence[Implementation], ctx: CheckContext) -> None:
    """Causal softmax attention equals its normalized-KV-cache DSF; ``Λ > 0`` and the witness has ``Λ_2 = e^6/2``."""
    shapes = (*ATTENTION_SHAPES, (16, 3, 2, 2))
    cases = [
        _with_state(attention_case(*s, seed=ctx.seed + i, scale=(1.0, 3.0)[i % 2]), s[0] * s[3])
        for i, s in enumerate(shapes)
    ]
    check_model(rec, impls, ctx, cases, ref.softmax_attention, _softmax_lambda)
    u = torch.tensor(WITNESS_U, dtype=F64)
    W_Q, W_K, W_V = (
        torch.tensor([[1.0, 0.0]], dtype=F64),
        torch.tensor([[0.0, 1.0]], dtype=F64),
        torch.tensor([[0.0, 1.0]], dtype=F64),
    )
    want = math.exp(6) / 2
    for impl in impls:
        device = device_for(impl, ctx)
        for dtype in ctx.dtypes_for(impl):
            name = pair_name(impl.label, dtype)
            with rec.guard(name):
                args = [t.to(dtype).to(device) for t in (u, W_Q, W_K, W_V)]
                lam = _f64(as_tensors(invoke(impl.fn, *args), impl.label, ((2, 2), (2, 2, 2), (2, 1, 2), (2, 1, 2)))[0])
                rec.record(
                    f"{name}: witness Λ_2 = e^6/2 > 1 (relative error)",
                    float((lam[1] - want).abs().max()) / want,
                    identity_tolerance(dtype, 2),
                )
                rec.cases += 1


def check_normalized_attention(rec: Recorder, impls: Sequence[Implementation], ctx: CheckContext) -> None:
    """``η(u_i)^{-1} Σ_{j<=i} (q_iᵀk_j) v_j`` equals its DSF for ``g`` = exp, softplus and sigmoid."""
    cases = []
    for i, s in enumerate(ATTENTION_SHAPES):
        base = attention_case(*s, seed=ctx.seed + i)
        g = _gen(ctx.seed + 50 + i)
        w, b = torch.randn(s[1], generator=g, dtype=F64), torch.randn((), generator=g, dtype=F64)
        for norm in ref.NORMALIZERS:
            cases.append(ModelCase(f"{base.label} g={norm}", (*base.args, w, b), s[2] * s[3], s[3], {"g": norm}))
    check_model(rec, impls, ctx, cases, ref.normalized_attention)


# ---------------------------------------------------------------------------
# S6 / selective scan: the Mamba-layout scan under test equals the DSF of S6 (Euler)
# ---------------------------------------------------------------------------

S6_SHAPES = ((1, 2, 3), (2, 1, 1), (7, 3, 2), (24, 5, 4), (12, 4, 1), (16, 2, 5))
"""``(L, d, n)`` with ``d != n`` in most."""


def s6_inputs(L: int, d: int, n: int, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``u, delta: (L, d)`` (``Δ = softplus``), ``A: (d, n) < 0``, ``b, c: (L, n)``, ``D: (d,)``."""
    g = _gen(seed)
    u = torch.randn(L, d, generator=g, dtype=F64)
    delta = F.softplus(torch.randn(L, d, generator=g, dtype=F64))
    A = -torch.exp(torch.randn(d, n, generator=g, dtype=F64))
    b, c = (torch.randn(L, n, generator=g, dtype=F64) for _ in range(2))
    return u, delta, A, b, c, torch.randn(d, generator=g, dtype=F64)


def _scan_layout(*seqs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Stack single-sequence S6 inputs into Mamba's layout ``u, delta: (Bt, d, L)``, ``B, C: (Bt, n, L)``."""
    u, delta, b, c = (torch.stack([s[i].T for s in seqs]) for i in (0, 1, 3, 4))
    return u, delta, seqs[0][2], b, c, seqs[0][5]


def check_selective_scan(
    rec: Recorder, impls: Sequence[Implementation], ctx: CheckContext, batches: Sequence[tuple[str, tuple[Tensor, ...]]]
) -> None:
    """Every ``(label, scan args (float64))``: the scan under test equals the recurrence of the S6 DSF (Euler)."""
    for impl in impls:
        device = device_for(impl, ctx)
        for dtype in ctx.dtypes_for(impl):
            name = pair_name(impl.label, dtype)
            with rec.guard(name), rec.worst(f"{name}: selective scan vs the S6 DSF (Euler)") as err:
                for label, args in batches:
                    rounded = [a.to(dtype) for a in args]
                    out = as_tensor(invoke(impl.fn, *(a.to(device) for a in rounded)), impl.label, args[0].shape)
                    a64 = [_f64(a) for a in rounded]
                    truth = torch.stack(
                        [
                            ref.recurrence(
                                ref.s6_dsf(a64[0][i].T, a64[1][i].T, a64[2], a64[3][i].T, a64[4][i].T, a64[5]),
                                a64[0][i].T,
                            ).T
                            for i in range(args[0].shape[0])
                        ]
                    )
                    err.add(rel_error(out, truth), identity_tolerance(dtype, args[0].shape[-1]), label)
                    rec.cases += 1


def check_s6(rec: Recorder, impls: Sequence[Implementation], ctx: CheckContext) -> None:
    """S6 equals its DSF (Euler and ZOH), ``0 < Λ < 1``, ``|B̄_zoh - B̄_euler| <= ½ Δ² |A| |b|``; the scan equals it."""
    seqs = [s6_inputs(*s, seed=ctx.seed + i) for i, s in enumerate(S6_SHAPES)]
    outside = bound_violations = 0
    with rec.worst("ground truth: S6 direct form = recurrence of its DSF (float64)") as agree:
        for (L, d, n), args in zip(S6_SHAPES, seqs, strict=True):
            for zoh in (False, True):
                dsf = ref.s6_dsf(*args, zoh=zoh)
                agree.add(
                    rel_error(ref.recurrence(dsf, args[0]), ref.s6(*args, zoh=zoh)),
                    identity_tolerance(F64, L),
                    f"L={L} d={d} n={n} zoh={zoh}",
                )
                outside += int(((dsf.Lam <= 0) | (dsf.Lam >= 1)).sum())
            _, delta, A, b, _, _ = args
            zoh_b = (torch.exp(delta[:, None, :] * A.T[None]) - 1) / A.T[None] * b[:, :, None]  # (L, n, d)
            euler_b = delta[:, None, :] * b[:, :, None]
            allowed = 0.5 * delta[:, None, :] ** 2 * A.T.abs()[None] * b.abs()[:, :, None]
            bound_violations += int(((zoh_b - euler_b).abs() > allowed * (1 + 1e-12) + 1e-300).sum())
    rec.record("ground truth: entries of the S6 Λ outside (0, 1)", outside, 0)
    rec.record("ground truth: entries with |B̄_zoh - B̄_euler| > ½ Δ² |A| |b|", bound_violations, 0)
    batches = []
    for i, (L, d, n) in enumerate(S6_SHAPES):
        other = s6_inputs(L, d, n, seed=ctx.seed + 100 + i)  # a second sequence sharing A and D
        batch = _scan_layout(seqs[i], (*other[:2], seqs[i][2], *other[3:5], seqs[i][5]))
        batches.append((f"Bt=2 L={L} d={d} n={n}", batch))
    check_selective_scan(rec, impls, ctx, batches)


def equivalence_match(L: int, d: int, n: int, a: float, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Linear attention built to equal SSD (derived): ``η_i = a / W(a/η_{i-1})``, ``φ_i = η_i p_i / (p_iᵀ z_i)``.

    Returns ``x: (L, d)``, ``b, c: (L, n)`` (positive key and query features) and ``η: (L,)``; SSD with
    scalar ``A = -a`` and ``Δ_i = 1/η_i`` then has the ``Φ`` of linear attention with ``W_V = I``.
    """
    g = _gen(seed)
    x = torch.randn(L, d, generator=g, dtype=F64)
    b = torch.rand(L, n, generator=g, dtype=F64) + 0.1
    p = torch.rand(L, n, generator=g, dtype=F64) + 0.1
    z = torch.cumsum(b, 0)
    eta = [1.0 + float(torch.rand((), generator=g, dtype=F64))]
    for _ in range(1, L):
        eta.append(a / float(np.real(lambertw(a / eta[-1]))))
    eta_t = torch.tensor(eta, dtype=F64)
    c = eta_t[:, None] * p / (p * z).sum(-1, keepdim=True)
    return x, b, c, eta_t


def ssd_scan_args(x: Tensor, b: Tensor, c: Tensor, eta: Tensor, a: float) -> tuple[Tensor, ...]:
    """SSD as a selective scan: ``Δ_i = 1/η_i`` on every channel, ``A = -a``, no skip; batch of one."""
    L, d = x.shape
    delta = (1 / eta)[None, None, :].expand(1, d, L).clone()
    A = torch.full((d, b.shape[1]), -a, dtype=F64)
    return x.T[None].clone(), delta, A, b.T[None].clone(), c.T[None].clone(), torch.zeros(d, dtype=F64)


EQUIVALENCE_SHAPES = ((1, 2, 2), (5, 3, 2), (12, 2, 3), (24, 4, 4))


def check_equivalence_conditions(rec: Recorder, impls: Sequence[Implementation], ctx: CheckContext) -> None:
    """``Φ^SSD = Φ^LA`` iff ``Δ_i = 1/η_i`` and ``η_i/η_{i-1} = e^{a/η_i}``: built to hold, outputs agree; for random
    queries the implied ``a_i`` spread and the outputs differ (both directions, derived)."""
    a = 0.7
    spread_min = differ_min = math.inf
    batches = []
    with rec.worst("ground truth: matched SSD (recurrence of its DSF) = linear attention (float64)") as agree:
        for i, (L, d, n) in enumerate(EQUIVALENCE_SHAPES):
            x, b, c, eta = equivalence_match(L, d, n, a, ctx.seed + i)
            la = ref.kernel_attention(c @ b.T, x)
            args = ssd_scan_args(x, b, c, eta, a)
            ssd = ref.recurrence(ref.s6_dsf(x, args[1][0].T, args[2], b, c, args[5]), x)
            agree.add(rel_error(ssd, la), identity_tolerance(F64, L), f"match L={L} d={d} n={n}")
            residual = float((eta[1:] / eta[:-1] - torch.exp(a / eta[1:])).abs().max()) if L > 1 else 0.0
            agree.add(residual, identity_tolerance(F64, L), f"condition η_i/η_(i-1) = e^(a/η_i), L={L}")
            batches.append((f"match L={L} d={d} n={n}", args, la))
            if L > 2:  # the converse: random positive queries break the condition
                g = _gen(ctx.seed + 77 + i)
                c_rand = torch.rand(L, n, generator=g, dtype=F64) + 0.1
                eta_r = (c_rand * torch.cumsum(b, 0)).sum(-1)
                implied = eta_r[1:] * torch.log(eta_r[1:] / eta_r[:-1])
                spread_min = min(spread_min, float(implied.max() - implied.min()))
                a_mean = float(implied.mean())
                wrong = ref.recurrence(
                    ref.s6_dsf(
                        x,
                        (1 / eta_r)[:, None].expand(L, d),
                        torch.full((d, n), -a_mean, dtype=F64),
                        b,
                        c_rand,
                        torch.zeros(d, dtype=F64),
                    ),
                    x,
                )
                differ_min = min(differ_min, rel_error(wrong, ref.kernel_attention(c_rand @ b.T, x)))
                batches.append((f"random queries L={L} d={d} n={n}", ssd_scan_args(x, b, c_rand, eta_r, a_mean), wrong))
    rec.record(
        "ground truth: random queries, 1e-3 / spread of the implied a_i (must exceed 1e-3)", 1e-3 / spread_min, 1.0
    )
    rec.record(
        "ground truth: random queries, 1e-3 / err(SSD, linear attention) (must exceed 1e-3)", 1e-3 / differ_min, 1.0
    )
    for impl in impls:
        device = device_for(impl, ctx)
        for dtype in ctx.dtypes_for(impl):
            name = pair_name(impl.label, dtype)
            with (
                rec.guard(name),
                rec.worst(f"{name}: selective scan vs linear attention (match) and vs SSD (random)") as err,
            ):
                for label, args, truth in batches:
                    out = as_tensor(invoke(impl.fn, *(t.to(dtype).to(device) for t in args)), impl.label, args[0].shape)
                    err.add(rel_error(out[0].T, truth), identity_tolerance(dtype, args[0].shape[-1]), label)
                    rec.cases += 1


# ---------------------------------------------------------------------------
# qLSTM, reversed sigmoid, RG-LRU
# ---------------------------------------------------------------------------

RNN_SHAPES = ((1, 2), (3, 1), (7, 3), (16, 5), (24, 4))
"""``(L, d)``."""


def qlstm_case(L: int, d: int, seed: int, reversed_gate: bool) -> ModelCase:
    """``x: (L, d)``, ``W_f, W_i, W_o: (d, d)``; ``alpha`` of both signs for the reversed gate."""
    g = _gen(seed)
    x = torch.randn(L, d, generator=g, dtype=F64)
    W = [torch.randn(d, d, generator=g, dtype=F64) / math.sqrt(d) for _ in range(3)]
    alpha = 2 * torch.randn(d, generator=g, dtype=F64) if reversed_gate else None
    return ModelCase(f"L={L} d={d} {'reversed' if reversed_gate else 'standard'}", (x, *W, alpha), d, d)


def check_qlstm(rec: Recorder, impls: Sequence[Implementation], ctx: CheckContext) -> None:
    """The qLSTM (standard and reversed-sigmoid gate) equals its DSF."""
    cases = [qlstm_case(L, d, ctx.seed + i, rev) for i, (L, d) in enumerate(RNN_SHAPES) for rev in (False, True)]
    check_model(rec, impls, ctx, cases, ref.qlstm)


def _reversed_gate(
    case: ModelCase, dsf: ref.DSF, args: tuple[Any, ...], dtype: torch.dtype
) -> list[tuple[str, float, float]]:
    x, W_f, _, _, alpha = args
    sigmoid_form = torch.sigmoid(-(x @ W_f.T)) ** torch.relu(alpha)
    tol = 1e-14 if dtype == F64 else identity_tolerance(dtype)
    return [("gate Λ vs σ(-W_f x)^relu(α)", rel_error(dsf.Lam, sigmoid_form), tol)]


def check_reversed_sigmoid(rec: Recorder, impls: Sequence[Implementation], ctx: CheckContext) -> None:
    """sympy: ``e^{-a softplus(x)} = σ(-x)^a``; numerically the qLSTM's reversed gate equals ``σ(-W_f x)^{relu(α)}``
    and SSD's decay ``e^{-a softplus(x)}`` equals ``σ(-x)^a``."""
    rec.symbolic(proofs.reversed_sigmoid(), "reversed sigmoid")
    x = torch.linspace(-30, 30, 601, dtype=F64)
    with rec.worst("ground truth: e^(-a softplus(x)) vs σ(-x)^a, x in [-30, 30]") as acc:
        for a in (0.1, 1.0, 3.5):
            acc.add(rel_error(torch.exp(-a * ref.softplus(x)), torch.sigmoid(-x) ** a), 1e-14, f"a={a}")
    cases = [qlstm_case(L, d, ctx.seed + 10 + i, True) for i, (L, d) in enumerate(RNN_SHAPES)]
    check_model(rec, impls, ctx, cases, ref.qlstm, _reversed_gate)


def rglru_case(L: int, d: int, seed: int) -> ModelCase:
    g = _gen(seed)
    u = torch.randn(L, d, generator=g, dtype=F64)
    theta = 2 * torch.randn(d, generator=g, dtype=F64)
    W_a, W_x = (torch.randn(d, d, generator=g, dtype=F64) / math.sqrt(d) for _ in range(2))
    b_a, b_x = (torch.randn(d, generator=g, dtype=F64) for _ in range(2))
    return ModelCase(f"L={L} d={d}", (u, theta, W_a, b_a, W_x, b_x), d, d)


def _rglru_lambda(
    case: ModelCase, dsf: ref.DSF, args: tuple[Any, ...], dtype: torch.dtype
) -> list[tuple[str, float, float]]:
    return [("entries of Λ outside (0, 1)", float(((dsf.Lam <= 0) | (dsf.Lam >= 1)).sum()), 0.0)]


def check_rglru(rec: Recorder, impls: Sequence[Implementation], ctx: CheckContext) -> None:
    """sympy: ``σ(θ)^{c r} = e^{-c r softplus(-θ)}``; numerically the RG-LRU equals its DSF, ``0 < Λ < 1``."""
    rec.symbolic(proofs.rglru_gate(), "RG-LRU gate")
    cases = [rglru_case(L, d, ctx.seed + i) for i, (L, d) in enumerate(RNN_SHAPES)]
    check_model(rec, impls, ctx, cases, ref.rglru, _rglru_lambda)


# ---------------------------------------------------------------------------
# dsf.softmax_needs_infinite_state: Taylor truncations converge at the derived rate; finite DSFs have low rank
# ---------------------------------------------------------------------------

TAYLOR_ORDERS = (2, 4, 6, 8, 10)
"""Even orders only: an odd truncation of ``e^x`` can be negative, so its normalizer can vanish."""


def taylor_case(L: int, m: int, s_max: float, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """``q, k: (L, m)`` scaled so that ``max_ij |q_iᵀk_j| / √m = s_max``; ``v: (L, 2)`` in ``[-1, 1]``."""
    g = _gen(seed)
    q, k = (torch.randn(L, m, generator=g, dtype=F64) for _ in range(2))
    scale = math.sqrt(s_max / float((q @ k.T).abs().max() / math.sqrt(m)))
    return q * scale, k * scale, torch.rand(L, 2, generator=g, dtype=F64) * 2 - 1


def taylor_bound(s: float, order: int, v_max: float) -> float:
    """Output error bound ``2ε/(1-ε) max|v|`` with ``ε = s^{P+1} e^{2s} / (P+1)!`` (derived; ``inf`` if ``ε >= 1``)."""
    eps = s ** (order + 1) * math.exp(2 * s) / math.factorial(order + 1)
    return 2 * eps / (1 - eps) * v_max if eps < 1 else math.inf


def score_block_rank(kernel: Tensor, r: int) -> int:
    """Numerical rank (``σ > 1e-10 σ_1``) of the strictly-lower block ``A[r:, :r]`` of the normalized causal kernel."""
    a = kernel.masked_fill(~ref.lower(kernel.shape[0]), 0.0)
    a = a / a.sum(-1, keepdim=True)
    sv = torch.linalg.svdvals(a[r:, :r])
    return int((sv > 1e-10 * sv[0]).sum())


def check_infinite_state(rec: Recorder, impls: Sequence[Implementation], ctx: CheckContext) -> None:
    """Truncated softmax features converge within the derived bound, monotonically; finite DSFs have low-rank
    lower blocks while softmax's have full rank."""
    rec.symbolic(proofs.taylor_terms(), "Taylor feature terms, m = 2")
    q, k, _ = taylor_case(16, 4, 1.0, ctx.seed + 5)
    rec.record(
        "ground truth: rank of linear attention's A[9:, :8] (m = n = 4) beyond n = 4",
        max(0, score_block_rank(ref.elu1(q) @ ref.elu1(k).T, 8) - 4),
        0,
    )
    rec.record(
        "ground truth: softmax's A[9:, :8] (m = 4, L = 16) short of full rank 8",
        8 - score_block_rank(torch.exp(q @ k.T / 2), 8),
        0,
    )
    cases = [(s, taylor_case(12, 2, s, ctx.seed + i)) for i, s in enumerate((0.5, 1.0, 2.0))]
    for impl in impls:
        device = device_for(impl, ctx)
        for dtype in ctx.dtypes_for(impl):
            name = pair_name(impl.label, dtype)
            tol = identity_tolerance(dtype)
            with (
                rec.guard(name),
                rec.worst(f"{name}: output error within 2ε_P/(1-ε_P) max|v|") as bound,
                rec.worst(f"{name}: error non-increasing in P (even P)") as monotone,
                rec.worst(f"{name}: error at P = 10 for s <= 1") as final,
                rec.worst(f"{name}: φ_P(q)ᵀφ_P(k) vs Σ_(p<=P) (qᵀk/√m)^p/p!") as series,
            ):
                for s, (qc, kc, v) in cases:
                    qr, kr, vr = (_f64(t.to(dtype)) for t in (qc, kc, v))
                    s_r = float((qr @ kr.T).masked_fill(~ref.lower(12), 0.0).abs().max()) / math.sqrt(2)
                    truth = ref.kernel_attention(torch.exp(qr @ kr.T / math.sqrt(2)), vr)
                    previous = math.inf
                    for order in TAYLOR_ORDERS:
                        n_p = sum(2**p for p in range(order + 1))
                        fq, fk = (
                            _f64(as_tensor(invoke(impl.fn, t.to(dtype).to(device), order), impl.label, (12, n_p)))
                            for t in (qc, kc)
                        )
                        series.add(rel_error(fq @ fk.T, ref.taylor_kernel(qr, kr, order)), tol, f"s={s} P={order}")
                        err = rel_error(ref.kernel_attention(fq @ fk.T, vr), truth)
                        label = f"s={s} P={order}"
                        bound.add(err, taylor_bound(s_r, order, float(vr.abs().max())) + tol, label)
                        monotone.add(err, previous + tol, label)
                        previous = err
                        if order == 10 and s <= 1:
                            final.add(err, 1e-6 + tol, label)
                    rec.cases += 1
            if dtype == F64:
                with rec.guard(name):
                    qr, kr, _ = taylor_case(16, 2, 1.0, ctx.seed + 9)
                    fq, fk = (_f64(as_tensor(invoke(impl.fn, t.to(device), 2), impl.label, (16, 7))) for t in (qr, kr))
                    rank = score_block_rank(fq @ fk.T, 8)
                    rec.record(f"{name}: rank of the P = 2 truncation's A[9:, :8] beyond n_P = 7", max(0, rank - 7), 0)


# ---------------------------------------------------------------------------
# gla.chunked_equals_recurrent and lightning.intra_inter_split_equals_causal
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GlaCase:
    """``q, k: (B, H, T, Dk)``, ``v: (B, H, T, Dv)``, ``log_decay: (B, H, T)`` or ``(B, H, T, Dk)``, float64."""

    label: str
    q: Tensor
    k: Tensor
    v: Tensor
    log_decay: Tensor


def gla_case(
    T: int, kind: str, scale: float, seed: int, *, B: int = 2, H: int = 2, Dk: int = 5, Dv: int = 3
) -> GlaCase:
    """Gates ``g = -scale · U(0, 1)`` per key channel (``kind="key"``) or per head (``"head"``); ``"one"``: 0."""
    gen = _gen(seed)
    q, k = (torch.randn(B, H, T, Dk, generator=gen, dtype=F64) for _ in range(2))
    v = torch.randn(B, H, T, Dv, generator=gen, dtype=F64)
    shape = (B, H, T) if kind == "head" else (B, H, T, Dk)
    g = -scale * torch.rand(shape, generator=gen, dtype=F64) if kind != "one" else torch.zeros(shape, dtype=F64)
    return GlaCase(f"T={T} gates={kind} log-scale={scale}", q, k, v, g)


GLA_KINDS = (("key", 0.1), ("key", 1.0), ("key", 10.0), ("head", 1.0), ("one", 0.0))


def gla_cases(ctx: CheckContext) -> list[GlaCase]:
    """``T`` of 1, 7, 100 (not multiples of the chunks) × every gate kind; strong gates at ``T = 300``, where
    an un-rebased ``e^{-G}`` overflows float64, and log-scale 50 at ``T = 200`` (chunk totals past
    ``fast.dsf.ONE_MATMUL_LIMIT``: the two-level path); ``T = 1024`` under ``--budget thorough``."""
    lengths = (1, 7, 100) + ((64, 257, 500) if ctx.thorough else ())
    cases = [
        gla_case(T, kind, s, ctx.seed + 10 * i + j)
        for i, T in enumerate(lengths)
        for j, (kind, s) in enumerate(GLA_KINDS)
    ]
    cases.append(gla_case(300, "head", 10.0, ctx.seed + 91, B=1))
    cases.append(gla_case(300, "key", 10.0, ctx.seed + 92, B=1, Dk=4, Dv=2))
    cases.append(gla_case(200, "key", 50.0, ctx.seed + 94, B=1, Dk=4, Dv=2))  # two-level path in float64 too
    if ctx.thorough:
        cases.append(gla_case(1024, "key", 50.0, ctx.seed + 93, B=1, Dk=4, Dv=2))
    return cases


def check_gla(rec: Recorder, impls: Sequence[Implementation], ctx: CheckContext) -> None:
    """Every implementation equals the step-by-step recurrence ``S_t = diag(e^{g_t}) S_{t-1} + k_t v_tᵀ``."""
    cases = gla_cases(ctx)
    truth: dict[tuple[int, torch.dtype], Tensor] = {}
    for impl in impls:
        device = device_for(impl, ctx)
        for dtype in ctx.dtypes_for(impl):
            name = pair_name(impl.label, dtype)
            with rec.guard(name), rec.worst(f"{name}: error vs the recurrence") as err:
                for idx, case in enumerate(cases):
                    args = [t.to(dtype).to(device) for t in (case.q, case.k, case.v, case.log_decay)]
                    out = as_tensor(invoke(impl.fn, *args), impl.label, case.v.shape)
                    if (idx, dtype) not in truth:
                        truth[idx, dtype] = ref.gla_recurrent(*(_f64(a) for a in args))[0]
                    err.add(rel_error(out, truth[idx, dtype]), CHUNKED_TOLERANCE[dtype], case.label)
                    rec.cases += 1


LIGHTNING_LOG_LAMBDA = (-0.3, 0.0, math.log(1e-6))
"""One ``log λ`` per head: ``λ = e^{-0.3}``, ``λ = 1`` (no decay), a tiny ``λ = 10^{-6}``."""


def check_lightning(rec: Recorder, impls: Sequence[Implementation], ctx: CheckContext) -> None:
    """Every implementation equals ``((Q Kᵀ) ⊙ M) V`` with ``M_ij = λ^{i-j} 1[i >= j]``."""
    log_lambda = torch.tensor(LIGHTNING_LOG_LAMBDA, dtype=F64)
    lengths = (1, 5, 64, 70) + ((129, 300) if ctx.thorough else ())
    cases = []
    for i, T in enumerate(lengths):
        gen = _gen(ctx.seed + i)
        q, k = (torch.randn(2, 3, T, 4, generator=gen, dtype=F64) for _ in range(2))
        cases.append((f"T={T}", q, k, torch.randn(2, 3, T, 3, generator=gen, dtype=F64)))
    for impl in impls:
        device = device_for(impl, ctx)
        for dtype in ctx.dtypes_for(impl):
            name = pair_name(impl.label, dtype)
            with rec.guard(name), rec.worst(f"{name}: error vs the masked quadratic form") as err:
                for label, q, k, v in cases:
                    args = [t.to(dtype).to(device) for t in (q, k, v, log_lambda)]
                    out = as_tensor(invoke(impl.fn, *args), impl.label, v.shape)
                    truth = ref.lightning_quadratic(*(_f64(a) for a in args))
                    err.add(rel_error(out, truth), CHUNKED_TOLERANCE[dtype], label)
                    rec.cases += 1


# ---------------------------------------------------------------------------
# Subjects and claims
# ---------------------------------------------------------------------------


def _as_parts(converter: Callable[..., ref.DSF]) -> Callable[..., tuple[Tensor, Tensor, Tensor, Tensor]]:
    def parts(*args: Any, **kwargs: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        dsf = converter(*args, **kwargs)
        return dsf.Lam, dsf.B, dsf.C, dsf.D

    parts.__name__ = converter.__name__
    return parts


def reference_matrix_form(Lam: Tensor, B: Tensor, C: Tensor, D: Tensor) -> Tensor:
    """:func:`attnverify.reference.dsf.matrix_form` with the subject's signature."""
    return ref.matrix_form(ref.DSF(Lam, B, C, D))


def _reference(label: str, fn: Callable[..., Any]) -> Callable[[torch.device], tuple[Implementation, ...]]:
    return lambda device: (Implementation(label, fn, device="cpu"),)


def _fast_lightning(q: Tensor, k: Tensor, v: Tensor, log_lambda: Tensor) -> Tensor:
    """Lightning through the one GLA engine: a constant ``log_decay = log λ_h`` per head."""
    return fast.gated_linear_attention(q, k, v, log_lambda[None, :, None].expand(*q.shape[:3]).contiguous())


def _gla_chunked(chunk: int | None) -> Callable[..., Tensor]:
    def run(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor) -> Tensor:
        return fast.gated_linear_attention(q, k, v, log_decay, chunk_size=chunk or q.shape[2])

    return run


CONVERTER = "-> (Lam: (L, N), B: (L, N, d), C: (L, d_y, N), D: (L, d_y, d))"
MATRIX_SUBJECT = Subject(
    "dsf_matrix_form",
    "fn(Lam: (L, N), B: (L, N, d), C: (L, d_y, N), D: (L, d_y, d)) -> Phi: (L d_y, L d)",
    _reference("reference", reference_matrix_form),
    args=("Lam", "B", "C", "D"),
)
LINEAR_SUBJECT = Subject(
    "dsf_linear_attention",
    f"fn(u: (L, d), W_Q: (m, d), W_K: (m, d), W_V: (d_v, d)) {CONVERTER}, N = m d_v",
    _reference("reference", _as_parts(ref.linear_attention_dsf)),
    args=("u", "W_Q", "W_K", "W_V"),
)
SOFTMAX_SUBJECT = Subject(
    "dsf_softmax_attention",
    f"fn(u: (L, d), W_Q: (m, d), W_K: (m, d), W_V: (d_v, d)) {CONVERTER}, N = L d_v",
    _reference("reference", _as_parts(ref.softmax_attention_dsf)),
    args=("u", "W_Q", "W_K", "W_V"),
)
NORMALIZED_SUBJECT = Subject(
    "dsf_normalized_attention",
    f"fn(u: (L, d), W_Q: (m, d), W_K: (m, d), W_V: (d_v, d), w: (d,), b: (), g: 'exp'|'softplus'|'sigmoid') "
    f"{CONVERTER}, N = m d_v",
    _reference("reference", _as_parts(ref.normalized_attention_dsf)),
    args=("u", "W_Q", "W_K", "W_V", "w", "b"),
    kwargs=("g",),
)
SCAN_SUBJECT = Subject(
    "selective_scan",
    "fn(u: (Bt, d, L), delta: (Bt, d, L), A: (d, n), B: (Bt, n, L), C: (Bt, n, L), D: (d,)) -> y: (Bt, d, L)",
    lambda device: (
        Implementation("reference step loop", ref.selective_scan, device="cpu"),
        Implementation("fast chunked", fast.selective_scan),
        Implementation("fast chunked C=3", partial(fast.selective_scan, chunk_size=3)),
        *(
            (Implementation("fast triton", partial(fast.selective_scan, backend="triton")),)
            if device.type == "cuda"
            else ()
        ),
    ),
    args=("u", "delta", "A", "B", "C", "D"),
)
QLSTM_SUBJECT = Subject(
    "dsf_qlstm",
    f"fn(x: (L, d), W_f: (d, d), W_i: (d, d), W_o: (d, d), alpha: (d,) or None) {CONVERTER}, N = d",
    _reference("reference", _as_parts(ref.qlstm_dsf)),
    args=("x", "W_f", "W_i", "W_o", "alpha"),
)
RGLRU_SUBJECT = Subject(
    "dsf_rglru",
    f"fn(u: (L, d), theta: (d,), W_a: (d, d), b_a: (d,), W_x: (d, d), b_x: (d,)) {CONVERTER}, N = d",
    _reference("reference", _as_parts(ref.rglru_dsf)),
    args=("u", "theta", "W_a", "b_a", "W_x", "b_x"),
)
TAYLOR_SUBJECT = Subject(
    "softmax_taylor_features",
    "fn(x: (L, m), order: int) -> (L, sum_{p<=order} m^p), with phi(q).phi(k) = sum_p (q.k/sqrt(m))^p / p!",
    _reference("reference", ref.taylor_features),
    args=("x", "order"),
)
GLA_SUBJECT = Subject(
    "gated_linear_attention",
    "fn(q: (B, H, T, Dk), k: (B, H, T, Dk), v: (B, H, T, Dv), log_decay: (B, H, T) or (B, H, T, Dk)) "
    "-> o: (B, H, T, Dv)",
    lambda device: (
        Implementation("fast C=64", _gla_chunked(64)),
        Implementation("fast C=16", _gla_chunked(16)),
        Implementation("fast C=1", _gla_chunked(1)),
        Implementation("fast C=T", _gla_chunked(None)),
        *(
            (Implementation("fast triton", partial(fast.gated_linear_attention, backend="triton")),)
            if device.type == "cuda"
            else ()
        ),
    ),
    args=("q", "k", "v", "log_decay"),
)
LIGHTNING_SUBJECT = Subject(
    "lightning_attention",
    "fn(q: (B, H, T, Dk), k: (B, H, T, Dk), v: (B, H, T, Dv), log_lambda: (H,)) -> o: (B, H, T, Dv)",
    lambda device: (
        Implementation("reference block form", partial(ref.lightning_block_form, block=16), device="cpu"),
        Implementation("fast GLA, constant decay", _fast_lightning),
    ),
    args=("q", "k", "v", "log_lambda"),
)

# ---------------------------------------------------------------------------
# Peers: flash-linear-attention's CPU-runnable naive references, adapted to our subjects (optional extra `peers`)
# ---------------------------------------------------------------------------


def _to_fla(*tensors: Tensor) -> list[Tensor]:
    """Our ``(B, H, T, ·)`` layout to flash-linear-attention's ``(B, T, H, ·)``."""
    return [t.transpose(1, 2) for t in tensors]


def fla_naive_recurrent_gla(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor) -> Tensor:
    """``fla.ops.gla.naive.naive_recurrent_gla`` as a GLA subject: layout adapted, its ``K^{-1/2}`` undone."""
    from fla.ops.gla.naive import naive_recurrent_gla

    gk = log_decay if log_decay.dim() == 4 else log_decay[..., None].expand(q.shape)
    o, _ = naive_recurrent_gla(*_to_fla(q * math.sqrt(q.shape[-1]), k, v, gk))
    return o.transpose(1, 2)


def fla_naive_recurrent_simple_gla(q: Tensor, k: Tensor, v: Tensor, log_lambda: Tensor) -> Tensor:
    """``fla.ops.simple_gla.naive.naive_recurrent_simple_gla`` as a Lightning subject (``scale=1``)."""
    from fla.ops.simple_gla.naive import naive_recurrent_simple_gla

    g = log_lambda[None, :, None].expand(q.shape[:3])
    o, _ = naive_recurrent_simple_gla(*_to_fla(q, k, v, g), scale=1.0)
    return o.transpose(1, 2)


def fla_naive_chunk_simple_gla(q: Tensor, k: Tensor, v: Tensor, log_lambda: Tensor) -> Tensor:
    """``fla.ops.simple_gla.naive.naive_chunk_simple_gla`` (chunks of 64) as a Lightning subject (``scale=1``)."""
    from fla.ops.simple_gla.naive import naive_chunk_simple_gla

    g = log_lambda[None, :, None].expand(q.shape[:3])
    o, _ = naive_chunk_simple_gla(*_to_fla(q, k, v, g), scale=1.0)
    return o.transpose(1, 2)


PEERS = (
    ("gla.chunked_equals_recurrent", fla_naive_recurrent_gla),
    ("lightning.intra_inter_split_equals_causal", fla_naive_recurrent_simple_gla),
    ("lightning.intra_inter_split_equals_causal", fla_naive_chunk_simple_gla),
)
"""``(claim id, adapter)``: flash-linear-attention's references checked by our claims (``pip install -e .[peers]``)."""


def fla_version() -> str | None:
    """The installed ``fla-core`` version, or ``None`` when flash-linear-attention is absent."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fla-core")
    except PackageNotFoundError:
        return None


def peer_verdicts() -> list[dict[str, str]]:
    """Every :data:`PEERS` adapter through its claim at the default budget, in float32 and float64: one row each
    (``peer``, ``claim``, ``dtype``, ``verdict``, ``error``).  Needs flash-linear-attention installed."""
    from attnverify import registry

    rows = []
    for claim_id, peer in PEERS:
        for dtype in (torch.float32, torch.float64):
            evidence = registry.get(claim_id).run(CheckContext(dtypes=(dtype,)), impl=peer, label="peer")
            rows.append(
                {
                    "peer": peer.__name__,
                    "claim": claim_id,
                    "dtype": str(dtype).removeprefix("torch."),
                    "verdict": evidence.verdict,
                    "error": f"{evidence.metric:.2g}",
                }
            )
    return rows


_ATTN = "(arXiv 2405.15731, §3.1; our cache construction, book/dsf.md)"

CLAIMS = (
    Claim(
        id="dsf.recurrence_equals_matrix_form",
        paper=DSF_PAPER,
        kind="identity",
        title="The DSF recurrence equals its block lower-triangular matrix form",
        statement=(
            r"For any real diagonal $\Lambda_i$ and $h_0=0$, $y=\Phi u$ with "
            r"$\Phi_{ij}=C_i(\prod_{k=j+1}^{i}\Lambda_k)B_j$ "
            r"($j<i$), $\Phi_{ii}=C_iB_i+D_i$, $\Phi_{ij}=0$ ($j>i$); every block $\Phi[r{+}1{:},{:}r]$ factors "
            r"through $h_r$, so its rank is at most $N$ (derived)."
        ),
        check=check_matrix_form,
        subject=MATRIX_SUBJECT,
        mutants=(mut.PRODUCT_INCLUDES_J, mut.PRODUCT_DROPS_I, mut.DIAGONAL_WITHOUT_D),
        dtypes=(F64, F32),
    ),
    Claim(
        id="dsf.linear_attention_is_dsf",
        paper=DSF_PAPER,
        kind="identity",
        title="Normalized linear attention is a DSF with a scalar, telescoping Λ",
        statement=(
            r"With $\phi=\psi=\mathrm{elu}+1$ and $\eta_i=\phi(q_i)^\top\sum_{j\le i}\psi(k_j)$: "
            r"$\Lambda_i=\eta_{i-1}/\eta_i$, "
            r"$B_i=\eta_i^{-1}\psi(k_i)\otimes W_V$, $C_i=\phi(q_i)^\top\otimes I_{d_v}$, $D_i=0$ reproduce the masked "
            r"attention, and $\prod_{k=j+1}^{i}\Lambda_k=\eta_j/\eta_i$ " + _ATTN + "."
        ),
        check=check_linear_attention,
        subject=LINEAR_SUBJECT,
        mutants=(mut.LINEAR_KEY_SIDE, mut.LINEAR_SQRT_M, mut.LINEAR_CLAMPED, mut.LINEAR_KRON),
        dtypes=(F64, F32),
    ),
    Claim(
        id="dsf.softmax_attention_is_dsf",
        paper=DSF_PAPER,
        kind="identity",
        title="Softmax attention is a DSF whose Λ exceeds 1",
        statement=(
            r"With $\psi(k_j)=e_j\in\mathbb R^L$, $\phi(q_i)_j=e^{q_i^\top k_j/\sqrt m}$ and "
            r"$\nu_i=\sum_{j\le i}e^{q_i^\top k_j/\sqrt m}$, the DSF $\Lambda_i=\nu_{i-1}/\nu_i>0$ ($N=Ld_v$) "
            r"reproduces "
            r"causal softmax attention; $\Lambda$ is not bounded by 1: for $m=1$, $q_1=k_1=k_2=2$, $q_2=-1$, "
            r"$\Lambda_2=e^6/2$ " + _ATTN + "."
        ),
        check=check_softmax_attention,
        subject=SOFTMAX_SUBJECT,
        mutants=(mut.SOFTMAX_CLAMPED, mut.SOFTMAX_KEY_ONLY, mut.SOFTMAX_ALL_KEYS, mut.SOFTMAX_NO_SCALE),
        dtypes=(F64, F32),
    ),
    Claim(
        id="dsf.softmax_needs_infinite_state",
        paper=DSF_PAPER,
        kind="approximation",
        title="Softmax needs an infinite state: Taylor truncations converge, finite DSFs have low rank",
        statement=(
            r"The order-$P$ Taylor features $[x^{\otimes p}/(m^{p/4}\sqrt{p!})]_{p\le P}$ give a DSF with "
            r"$n_P=\sum_{p\le P}m^p$; for even $P$ and $s=\max|q^\top k|/\sqrt m$ its output error is at most "
            r"$\frac{2\varepsilon_P}{1-\varepsilon_P}\max_j\|v_j\|_\infty$, "
            r"$\varepsilon_P=s^{P+1}e^{2s}/(P+1)!$ (derived), "
            r"and non-increasing in $P$; a finite DSF's lower blocks have rank $\le N$, softmax's are full rank."
        ),
        check=check_infinite_state,
        subject=TAYLOR_SUBJECT,
        mutants=(mut.TAYLOR_FULL_FACTORIAL, mut.TAYLOR_NO_M_SCALE),
        dtypes=(F64, F32),
    ),
    Claim(
        id="dsf.normalized_attention_is_dsf",
        paper=DSF_PAPER,
        kind="identity",
        title="Normalized attention is a DSF for the exp, softplus and sigmoid normalizers",
        statement=(
            r"$y_i=\eta(u_i)^{-1}\sum_{j\le i}(q_i^\top k_j)v_j$ with $\eta(u)=g(w^\top u+b)$ equals the DSF "
            r"$\Lambda_i=\eta(u_{i-1})/\eta(u_i)$, $B_i=\eta(u_i)^{-1}(k_i\otimes W_V)$, $C_i=q_i^\top\otimes I$ for "
            r"$g\in\{\exp,\mathrm{softplus},\mathrm{sigmoid}\}$ (arXiv 2405.15731, §4)."
        ),
        check=check_normalized_attention,
        subject=NORMALIZED_SUBJECT,
        mutants=(mut.NORMALIZED_INVERTED, mut.NORMALIZED_CLAMPED),
        dtypes=(F64, F32),
    ),
    Claim(
        id="dsf.s6_is_dsf",
        paper=DSF_PAPER,
        kind="identity",
        title="S6 (Mamba) is a DSF with 0 < Λ < 1; the selective scan computes it",
        statement=(
            r"Per channel $c$, $s^{(c)}_i=e^{\Delta^{(c)}_iA_c}\odot s^{(c)}_{i-1}+\bar B^{(c)}_iu^{(c)}_i$, "
            r"$y^{(c)}_i=c_i^\top s^{(c)}_i+D_cu^{(c)}_i$ equals the DSF "
            r"$\Lambda_i[kd+c]=e^{\Delta^{(c)}_iA_{c,k}}\in(0,1)$, "
            r"$B_i=b_i\otimes\mathrm{diag}(\Delta_i)$ (Euler; ZOH likewise), $C_i=c_i^\top\otimes I_d$; "
            r"$|\bar B_{\rm zoh}-\bar B_{\rm euler}|\le\frac12\Delta^2|A||b|$ (derived); the selective scan under test "
            r"(Euler) equals it (arXiv 2405.15731, §3.2; arXiv 2312.00752)."
        ),
        check=check_s6,
        subject=SCAN_SUBJECT,
        mutants=(
            mut.SCAN_POSITIVE_A,
            mut.SCAN_SHARED_DELTA,
            mut.SCAN_ZOH_INPUT,
            mut.SCAN_WRITE_THEN_DECAY,
            mut.SCAN_NO_SKIP,
        ),
        dtypes=(F64, F32),
    ),
    Claim(
        id="dsf.ssd_reversed_sigmoid",
        paper=DSF_PAPER,
        kind="symbolic",
        title="SSD's decay is a reversed sigmoid; so is the qLSTM's reversed gate",
        statement=(
            r"$e^{-a\,\mathrm{softplus}(x)}=(1+e^x)^{-a}=\sigma(-x)^a$ for $a>0$, so SSD's $e^{-a\Delta}$ with "
            r"$\Delta=\mathrm{softplus}(x)$ is $\sigma(-x)^a$, and the qLSTM's gate "
            r"$\sigma(-W_fx)^{\mathrm{relu}(\alpha)}$ "
            r"is $e^{-\mathrm{relu}(\alpha)\,\mathrm{softplus}(W_fx)}$ (arXiv 2405.15731, §3.3)."
        ),
        check=check_reversed_sigmoid,
        subject=QLSTM_SUBJECT,
        mutants=(mut.QLSTM_SIGN, mut.QLSTM_NO_RELU),
        dtypes=(F64, F32),
    ),
    Claim(
        id="dsf.linear_attention_s6_equivalence_conditions",
        paper=DSF_PAPER,
        kind="identity",
        title="Linear attention and SSD coincide exactly when Δ_i = 1/η_i and η_i/η_{i-1} = e^{a/η_i}",
        statement=(
            r"For SSD with scalar $a>0$, $\Delta_i$ and linear attention with $W_V=I$, $\phi(q_i)=c_i$, "
            r"$\psi(k_j)=b_j$ "
            r"(positive scores): $\Phi^{\rm SSD}=\Phi^{\rm LA}$ iff $\Delta_i=1/\eta_i$ and "
            r"$\eta_i/\eta_{i-1}=e^{a/\eta_i}$ (derived). Built with $\eta_i=a/W(a/\eta_{i-1})$ the outputs agree; "
            r"random queries break it."
        ),
        check=check_equivalence_conditions,
        subject=SCAN_SUBJECT,
        mutants=(mut.SCAN_POSITIVE_A, mut.SCAN_WRITE_THEN_DECAY),
        dtypes=(F64, F32),
    ),
    Claim(
        id="dsf.rglru_is_dsf",
        paper=DSF_PAPER,
        kind="identity",
        title="The RG-LRU is a DSF with the S6 form of gate",
        statement=(
            r"$\sigma(\theta)^{cr}=e^{-cr\,\mathrm{softplus}(-\theta)}$, so $a_i=\sigma(\theta)^{8r_i}$ is S6's "
            r"gate with "
            r"$\Delta=r_i$; the RG-LRU equals the DSF $\Lambda_i=\mathrm{diag}(a_i)\in(0,1)$, "
            r"$B_i=\mathrm{diag}(\sqrt{1-a_i^2}\odot\iota_i)$, $C=I$ (arXiv 2405.15731, §3.3; arXiv 2402.19427)."
        ),
        check=check_rglru,
        subject=RGLRU_SUBJECT,
        mutants=(mut.RGLRU_SQRT, mut.RGLRU_THETA_SIGN, mut.RGLRU_NO_CONSTANT),
        dtypes=(F64, F32),
    ),
    Claim(
        id="dsf.qlstm_is_dsf",
        paper=DSF_PAPER,
        kind="identity",
        title="The qLSTM (standard and reversed-sigmoid gate) is a DSF",
        statement=(
            r"$h_i=f_i\odot h_{i-1}+\iota_i\odot x_i$, $y_i=o_i\odot h_i$ equals the DSF $\Lambda_i=f_i$, "
            r"$B_i=\mathrm{diag}(\iota_i)$, $C_i=\mathrm{diag}(o_i)$, $D=0$, with $f_i=\sigma(W_fx_i)$ or "
            r"$f_i=\sigma(-W_fx_i)^{\mathrm{relu}(\alpha)}$ (arXiv 2405.15731, §3.3)."
        ),
        check=check_qlstm,
        subject=QLSTM_SUBJECT,
        mutants=(mut.QLSTM_SIGN, mut.QLSTM_NO_RELU, mut.QLSTM_GATES_SWAPPED),
        dtypes=(F64, F32),
    ),
    Claim(
        id="gla.chunked_equals_recurrent",
        paper=GLA_PAPER,
        kind="identity",
        title="Two-level chunked gated linear attention equals the recurrence",
        statement=(
            r"$S_t=\mathrm{diag}(e^{g_t})S_{t-1}+k_tv_t^\top$, $o_t=S_t^\top q_t$ "
            r"($g_t\le0$ per head or per key channel) "
            r"equals the chunked form $O_{[n]}=(Q\odot e^{\hat G})S_{[n-1]}+P_{[n]}V_{[n]}$, "
            r"$S_{[n]}=e^{\hat G_{\rm last}}\odot S_{[n-1]}+(K\odot e^{\hat G_{\rm last}-\hat G})^\top V$ "
            r"for every chunk size, "
            r"with every exponent $\le0$ (arXiv 2312.06635, §4)."
        ),
        check=check_gla,
        subject=GLA_SUBJECT,
        mutants=(mut.GLA_CARRY, mut.GLA_EXCLUSIVE, mut.GLA_ADD_THEN_DECAY, mut.GLA_LITERAL),
        dtypes=(F64, F32),
    ),
    Claim(
        id="lightning.intra_inter_split_equals_causal",
        paper=LIGHTNING_PAPER,
        kind="identity",
        title="Lightning Attention-2's intra/inter-block split equals masked decayed attention",
        statement=(
            r"With $M_{ij}=\lambda^{i-j}\mathbf 1[i\ge j]$ and in-block index $j$, "
            r"$O_b=[(Q_bK_b^\top)\odot D]V_b+\mathrm{diag}(\lambda^{j+1})Q_b\,KV$, "
            r"$KV\leftarrow\lambda^{B}KV+(\mathrm{diag}(\lambda^{B-1-j})K_b)^\top V_b$ equals $((QK^\top)\odot M)V$ "
            r"(arXiv 2401.04658, Alg. 1)."
        ),
        check=check_lightning,
        subject=LIGHTNING_SUBJECT,
        mutants=(mut.LIGHTNING_QUERY_POWER, mut.LIGHTNING_KEY_POWER, mut.LIGHTNING_NOT_CAUSAL),
        dtypes=(F64, F32),
    ),
)
