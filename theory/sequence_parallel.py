"""Sequence-parallel claims: Aaren's scan and causal linear attention split across processes.

The checks start real gloo process groups (2, 3 and 4 processes, uneven chunks, an empty chunk)
with :func:`attnverify.fast.sequence_parallel.run_gloo`, run the subject on every rank's chunk,
forward and backward, and compare the assembled result with the single-process float64 ground
truth.  They also count, at the ``torch.distributed`` calls, the bytes every rank moves.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from attnverify.evidence import Recorder
from attnverify.fast import sequence_parallel as sp
from attnverify.harness import dtype_name, pair_name
from attnverify.numerics import identity_tolerance, row_scale, scaled_error
from attnverify.proofs_checks import sequence_parallel as proofs
from attnverify.reference import aaren as ref
from attnverify.reference import linear_attention as ref_la
from attnverify.registry import CheckContext, Claim, Implementation, Paper, Subject
from attnverify.theory.aaren import AAREN, scan_case
from attnverify.theory.mutants import sequence_parallel as mut

LASP2 = Paper(
    key="lasp2",
    title="LASP-2: Rethinking Sequence Parallelism for Linear Attention and Its Hybrid",
    authors="Weigao Sun, Disen Lan, Yiran Zhong, Xiaoye Qu, Yu Cheng",
    year=2025,
    arxiv="2502.07563",
)

F64, F32 = torch.float64, torch.float32
WORLDS = {2: (37, 28), 3: (20, 0, 45), 4: (1, 30, 17, 16)}
"""Chunk lengths per rank: uneven, one empty chunk, one of length 1."""
TRAFFIC_SCALE = 4
"""Each world also runs its chunks ``TRAFFIC_SCALE`` times longer: the bytes moved must not change."""
COLLECTIVE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Case:
    """Full-sequence inputs (float64) and the upstream gradient; each rank takes its chunk."""

    label: str
    lengths: tuple[int, ...]
    inputs: tuple[Tensor, ...]
    grad: Tensor
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the subject for this case (e.g. ``normalize``)."""
    family: str = ""
    """Cases of one family differ only in chunk lengths (×1, ×TRAFFIC_SCALE): their traffic must match."""

    def chunk(self, rank: int) -> slice:
        start = sum(self.lengths[:rank])
        return slice(start, start + self.lengths[rank])


# ---------------------------------------------------------------------------
# What every rank runs
# ---------------------------------------------------------------------------


def rank_job(
    impls: Sequence[tuple[str, Callable[..., Tensor]]],
    cases: Sequence[Case],
    dtypes: Sequence[torch.dtype],
    seq_dims: tuple[int, ...],
    out_seq_dim: int,
) -> list[dict[str, Any]]:
    """Run every implementation on this rank's chunk of every case, forward then backward.

    ``seq_dims`` are the inputs' sequence dimensions, ``out_seq_dim`` the output's.  An implementation
    that raises stops this rank's job (the other ranks then stop at the collective timeout), so a
    failure costs at most one timeout.
    """
    rank = dist.get_rank()
    records = []
    for case in cases:
        part = case.chunk(rank)
        for dtype in dtypes:
            for label, fn in impls:
                record: dict[str, Any] = {"case": case.label, "impl": label, "dtype": dtype_name(dtype)}
                records.append(record)
                local = [
                    _take(x, part, d).to(dtype).requires_grad_() for x, d in zip(case.inputs, seq_dims, strict=True)
                ]
                try:
                    with sp.track_traffic() as forward:
                        out = fn(*local, None, **case.kwargs)
                    if not isinstance(out, Tensor) or out.shape != local[-1].shape:
                        raise TypeError(
                            f"returned {getattr(out, 'shape', type(out).__name__)}, expected {local[-1].shape}"
                        )
                    record.update(out=out.detach(), forward=(forward.sent, forward.received))
                    if out.requires_grad:
                        with sp.track_traffic() as backward:
                            (out * _take(case.grad, part, out_seq_dim).to(dtype)).sum().backward()
                        record.update(grads=[x.grad for x in local], backward=(backward.sent, backward.received))
                except Exception as exc:  # noqa: BLE001 - the implementation's failure is evidence
                    record["error"] = f"{type(exc).__name__}: {exc}"
                    return records
    return records


def _take(x: Tensor, part: slice, dim: int) -> Tensor:
    index: list[Any] = [slice(None)] * x.dim()
    index[dim] = part
    return x[tuple(index)]


# ---------------------------------------------------------------------------
# Assembling and judging
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Truth:
    """Single-process float64 ground truth of a case: output and input gradients, each with the scale
    its error is measured against (the size of the sums that form it, so cancellation is not penalized)."""

    out: Tensor
    scale: Tensor
    grads: list[Tensor]
    grad_scales: list[Tensor]


@dataclass(frozen=True)
class Spec:
    """How one claim's check drives the common machinery."""

    seq_dims: tuple[int, ...]  # the sequence dimension of each input (and of its gradient)
    out_seq_dim: int
    make_cases: Callable[[tuple[int, ...], int], list[Case]]
    """Cases for chunk lengths and a seed, in families of two (×1 and ×TRAFFIC_SCALE lengths)."""
    truth: Callable[[Case], Truth]
    summary_bytes: Callable[[Case, torch.dtype], int]
    """Bytes of one rank's per-chunk summary; an all-gather moves ``P - 1`` of them per rank."""


def run_spec(rec: Recorder, impls: Sequence[Implementation], ctx: CheckContext, spec: Spec) -> None:
    """Run every world size in real gloo groups, then judge each implementation against the truth."""
    dtypes = sorted({d for i in impls for d in ctx.dtypes_for(i)}, key=str)
    for world, lengths in WORLDS.items():
        cases = spec.make_cases(lengths, ctx.seed + world)
        results = sp.run_gloo(
            world,
            rank_job,
            [(i.label, i.fn) for i in impls],
            cases,
            dtypes,
            spec.seq_dims,
            spec.out_seq_dim,
            timeout_s=COLLECTIVE_TIMEOUT_S,
        )
        truths = [spec.truth(case) for case in cases]
        for impl in impls:
            for dtype in ctx.dtypes_for(impl):
                records = [
                    [r for r in rank_records if r["impl"] == impl.label and r["dtype"] == dtype_name(dtype)]
                    for rank_records in results
                ]
                with rec.guard(pair_name(impl.label, dtype)):  # cases count for this (implementation, dtype)
                    _judge(rec, f"{pair_name(impl.label, dtype)} P={world}", spec, cases, truths, records, dtype)


def _judge(
    rec: Recorder,
    name: str,
    spec: Spec,
    cases: list[Case],
    truths: list[Truth],
    records: list[list[dict[str, Any]]],
    dtype: torch.dtype,
) -> None:
    errors = [f"rank {r}: {x['error']}" for r, rank in enumerate(records) for x in rank if "error" in x]
    if errors:
        rec.record(f"{name}: raised", float("inf"), 0.0, "; ".join(errors))
    complete = [i for i in range(len(cases)) if all(len(rank) > i and "out" in rank[i] for rank in records)]
    with (
        rec.worst(f"{name}: forward vs single process") as forward,
        rec.worst(f"{name}: backward vs single process") as backward,
    ):
        for i in complete:
            case, truth = cases[i], truths[i]
            tol = identity_tolerance(dtype, sum(case.lengths))
            out = torch.cat([rank[i]["out"].to(F64) for rank in records], spec.out_seq_dim)
            forward.add(scaled_error(out, truth.out, truth.scale), tol, case.label)
            rec.cases += 1
            if not all("grads" in rank[i] for rank in records):
                rec.notes.setdefault("skipped", []).append(f"{name}: backward of {case.label}")
                continue
            for j, want in enumerate(truth.grads):
                got = torch.cat([rank[i]["grads"][j].to(F64) for rank in records], spec.seq_dims[j])
                backward.add(scaled_error(got, want, truth.grad_scales[j]), tol, f"{case.label}, gradient {j}")
    if errors or len(complete) < len(cases):
        return
    _judge_traffic(rec, name, spec, cases, records, dtype)


def _judge_traffic(
    rec: Recorder, name: str, spec: Spec, cases: list[Case], records: list[list[dict[str, Any]]], dtype: torch.dtype
) -> None:
    """Per family, bytes per rank do not change when every chunk grows ``TRAFFIC_SCALE``-fold, and the
    forward sends at most ``P - 1`` chunk summaries (only summaries cross the wire)."""
    world = len(records)
    change = excess = 0
    families: dict[str, list[int]] = {}
    for i, case in enumerate(cases):
        families.setdefault(case.family, []).append(i)
    for family, (short, long) in families.items():
        for rank in records:
            for key in ("forward", "backward"):
                if key in rank[short] and key in rank[long]:
                    change += sum(abs(a - b) for a, b in zip(rank[short][key], rank[long][key], strict=True))
        limit = (world - 1) * spec.summary_bytes(cases[short], dtype)
        excess += sum(max(0, rank[short]["forward"][0] - limit) for rank in records)
        rec.notes.setdefault("traffic", {})[f"{name} {family}".strip()] = [
            {"rank": r, "forward": rank[short]["forward"], "backward": rank[short].get("backward")}
            for r, rank in enumerate(records)
        ]
    rec.record(f"{name}: bytes per rank, chunks ×1 vs ×{TRAFFIC_SCALE} (difference)", change, 0)
    rec.record(f"{name}: forward bytes sent beyond P-1 chunk summaries", excess, 0)


# ---------------------------------------------------------------------------
# Claim 6: Aaren's scan across ranks
# ---------------------------------------------------------------------------


def _aaren_cases(lengths: tuple[int, ...], seed: int) -> list[Case]:
    cases = []
    for scale, (scores, mask) in zip((1, TRAFFIC_SCALE), (("wide", "leftpad"), ("spread", "random")), strict=True):
        chunks = tuple(scale * n for n in lengths)
        base = scan_case(sum(chunks), dv=3, lead=(2,), scores=scores, mask=mask, seed=seed)
        grad = torch.randn(base.values.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
        cases.append(Case(f"chunks {chunks} ×{scale}", chunks, (base.scores, base.values), grad))
    return cases


def _aaren_truth(case: Case) -> Truth:
    """Scales per row: ``max|v|`` for outputs, ``max|g| max|v|`` for ``ds`` (a difference of such
    terms, ``g·(v_i - o_k)``), ``max|g|`` for ``dv``."""
    s, v = (x.clone().requires_grad_() for x in case.inputs)
    out = ref.causal_constant_query_attention(s, v)
    ds, dv = torch.autograd.grad((out * case.grad).sum(), (s, v))
    v_scale, g_scale = row_scale(case.inputs[1]), row_scale(case.grad)
    return Truth(out.detach(), v_scale, [ds, dv], [(v_scale * g_scale)[..., 0], g_scale])


def _aaren_summary_bytes(case: Case, dtype: torch.dtype) -> int:
    scores, values = case.inputs
    itemsize = 8 if dtype == F64 else 4
    return scores[..., 0].numel() * (values.shape[-1] + 2) * itemsize


AAREN_SPEC = Spec((-1, -2), -2, _aaren_cases, _aaren_truth, _aaren_summary_bytes)


def check_aaren_sequence_parallel(rec: Recorder, impls: Sequence[Implementation], ctx: CheckContext) -> None:
    """Chunks on 2, 3 and 4 gloo ranks reproduce the single-process scan, forward and backward."""
    rec.symbolic(proofs.scan_split_identity(), "prefix of chunk totals ⊕ local scan: any split, every bracketing")
    run_spec(rec, impls, ctx, AAREN_SPEC)


# ---------------------------------------------------------------------------
# Claim 7: causal linear attention across ranks (LASP-2)
# ---------------------------------------------------------------------------


def _linear_cases(lengths: tuple[int, ...], seed: int) -> list[Case]:
    cases = []
    for normalize, scale in itertools.product((False, True), (1, TRAFFIC_SCALE)):
        chunks = tuple(scale * n for n in lengths)
        g = torch.Generator().manual_seed(seed + scale)
        shape = (2, 2, sum(chunks))
        if normalize:  # positive features keep the denominators away from 0
            q, k = (torch.rand(*shape, 4, generator=g, dtype=F64) + 0.1 for _ in range(2))
        else:
            q, k = (torch.randn(*shape, 4, generator=g, dtype=F64) for _ in range(2))
        v = torch.randn(*shape, 3, generator=g, dtype=F64)
        grad = torch.randn(*shape, 3, generator=g, dtype=F64)
        family = f"normalize={normalize}"
        cases.append(
            Case(f"chunks {chunks} ×{scale}, {family}", chunks, (q, k, v), grad, {"normalize": normalize}, family)
        )
    return cases


def _linear_truth(case: Case) -> Truth:
    """Scales: the same map and its gradients on absolute values, which bound every sum term by term."""
    normalize = case.kwargs["normalize"]
    q, k, v = (x.clone().requires_grad_() for x in case.inputs)
    out = ref_la.quadratic(q, k, v, normalize=normalize)
    grads = torch.autograd.grad((out * case.grad).sum(), (q, k, v))
    qa, ka, va = (x.abs().requires_grad_() for x in case.inputs)
    bound = ref_la.quadratic(qa, ka, va, normalize=normalize)
    bounds = torch.autograd.grad((bound * case.grad.abs()).sum(), (qa, ka, va))
    per_row = [b.amax(dim=(-2, -1), keepdim=True) for b in bounds]
    return Truth(out.detach(), bound.detach().amax(dim=(-2, -1), keepdim=True), list(grads), per_row)


def _linear_summary_bytes(case: Case, dtype: torch.dtype) -> int:
    q, _, v = case.inputs
    itemsize = 8 if dtype == F64 else 4
    return q.shape[0] * q.shape[1] * q.shape[3] * (v.shape[-1] + int(case.kwargs["normalize"])) * itemsize


LINEAR_SPEC = Spec((2, 2, 2), 2, _linear_cases, _linear_truth, _linear_summary_bytes)


def check_linear_sequence_parallel(rec: Recorder, impls: Sequence[Implementation], ctx: CheckContext) -> None:
    """Chunks on 2, 3 and 4 gloo ranks reproduce ``((Q K^T) ⊙ Ψ) V`` (and its normalized form)."""
    rec.symbolic(proofs.lasp2_identity(), "LASP-2 chunk identity, any width, boundary and position")
    run_spec(rec, impls, ctx, LINEAR_SPEC)


# ---------------------------------------------------------------------------
# Subjects and claims
# ---------------------------------------------------------------------------

AAREN_SP = Subject(
    "sequence_parallel_prefix_softmax_attention",
    "fn(scores: (..., N_local), values: (..., N_local, Dv), group) -> (..., N_local, Dv) on every rank",
    lambda device: tuple(
        Implementation(f"fast {s}", partial(sp.prefix_softmax_attention, strategy=s), device="cpu")
        for s in sp.STRATEGIES
    ),
    args=("scores", "values", "group"),
)
LINEAR_SP = Subject(
    "sequence_parallel_linear_attention",
    "fn(q, k: (B, H, T_local, D), v: (B, H, T_local, Dv), group, normalize: bool) -> (B, H, T_local, Dv)",
    lambda device: (Implementation("fast LASP-2", sp.linear_attention, device="cpu"),),
    args=("q", "k", "v", "group"),
    kwargs=("normalize",),
)

CLAIMS = (
    Claim(
        id="aaren.sequence_parallel_equals_single",
        paper=AAREN,
        kind="identity",
        title="Aaren's scan split across processes equals the single-process scan",
        statement=(
            r"With contiguous chunks on ranks $1..P$ and chunk totals $T_p=\bigoplus_{i\in p}(s_i,1,v_i)$, "
            r"position $j$ of chunk $p$ is $\bigl(T_1\oplus\dots\oplus T_{p-1}\bigr)\oplus\mathrm{LocalScan}_p(j)$: "
            r"each rank needs only $D_v+2$ numbers per row from each other rank, whatever the chunk lengths "
            r"(our derivation from associativity; LASP-2 and ZeCO state the pattern for linear attention). "
            r"sympy proves it for every chunk count, chunk length and position; the process-group "
            r"implementations and their traffic rest on numerical evidence."
        ),
        check=check_aaren_sequence_parallel,
        subject=AAREN_SP,
        mutants=(mut.INCLUSIVE_RANK_PREFIX, mut.UNRESCALED_TOTALS, mut.REVERSED_RANK_ORDER),
    ),
    Claim(
        id="linear_attention.sequence_parallel_equals_single",
        paper=LASP2,
        kind="identity",
        title="Causal linear attention split across processes (LASP-2) equals the single-process result",
        statement=(
            r"With $M_p=K_p^\top V_p$, chunk $t$ of causal linear attention is "
            r"$O_t=[(Q_tK_t^\top)\odot\Psi]V_t+Q_t\sum_{s<t}M_s$ (and the normalizer likewise with key sums): "
            r"one all-gather of $d_k\times D_v$ states per rank, an exclusive prefix over the ranks. sympy "
            r"proves it entrywise for every width, chunk boundary and position; the process-group "
            r"implementations rest on numerical evidence."
        ),
        check=check_linear_sequence_parallel,
        subject=LINEAR_SP,
        mutants=(mut.LINEAR_INCLUSIVE_PREFIX, mut.LINEAR_REVERSED_ORDER, mut.LINEAR_PREVIOUS_RANK_ONLY),
    ),
)
