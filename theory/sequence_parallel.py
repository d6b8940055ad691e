"""Sequence-parallel claims: Aaren's scan and causal linear attention (gated or not) split across processes.

The checks start one job of real gloo processes with :func:`attnverify.fast.sequence_parallel.run_gloo`
and run process groups of 4, 3 and 2 ranks in it (the smaller on strict subgroups; uneven chunks, an
empty chunk), run the subject on every rank's chunk, forward and backward, and compare the assembled
result with the single-process float64 ground truth.  They also count the bytes every rank moves,
below every public function of ``torch.distributed`` (:func:`~attnverify.fast.sequence_parallel.track_traffic`),
and judge all of it: tensor and object bytes must not grow with the chunks.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
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
from attnverify.reference import dsf as ref_dsf
from attnverify.reference import linear_attention as ref_la
from attnverify.registry import CheckContext, Claim, Implementation, Paper, Subject
from attnverify.theory.aaren import AAREN, scan_case
from attnverify.theory.dsf import GLA_PAPER
from attnverify.theory.mutants import sequence_parallel as mut

LASP2 = Paper(
    key="lasp2",
    title="LASP-2: Rethinking Sequence Parallelism for Linear Attention and Its Hybrid",
    authors="Weigao Sun, Disen Lan, Yiran Zhong, Xiaoye Qu, Yu Cheng",
    year=2025,
    arxiv="2502.07563",
)

F64, F32 = torch.float64, torch.float32
PROCESSES = 4
WORLDS = {4: ((0, 1, 2, 3), (1, 30, 0, 16)), 3: ((1, 2, 3), (20, 7, 45)), 2: ((2, 3), (37, 28))}
"""Per number of ranks ``P``: the global ranks of its process group and the chunk length per group rank.
All run in one job of :data:`PROCESSES` processes; ``P = 3`` and ``P = 2`` run on strict subgroups, so
group ranks differ from global ranks.  Uneven chunks, an empty one (``P = 4``), one of length 1, and
``P = 3`` without an empty chunk (so every rank past the second folds two non-trivial totals)."""
TRAFFIC_SCALE = 4
"""Each world also runs its chunks ``TRAFFIC_SCALE`` times longer: the bytes moved must not change."""
COLLECTIVE_TIMEOUT_S = 30.0
HANDSHAKE_BYTES_PER_PEER = 512
"""Object bytes (sent plus received) a rank may move per other rank and call: a pickled description of
the inputs (shape, dtype, length: about 150 bytes) and its size header, each way, with margin."""


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
    value: int = -1
    """The input whose shape the output has (the values)."""

    def chunk(self, rank: int) -> slice:
        start = sum(self.lengths[:rank])
        return slice(start, start + self.lengths[rank])


# ---------------------------------------------------------------------------
# What every rank runs
# ---------------------------------------------------------------------------


def rank_job(
    impls: Sequence[tuple[str, Callable[..., Tensor]]],
    worlds: Sequence[tuple[tuple[int, ...], Sequence[Case]]],
    dtypes: Sequence[torch.dtype],
    seq_dims: tuple[int, ...],
    out_seq_dim: int,
    timeout_s: float = COLLECTIVE_TIMEOUT_S,
) -> list[dict[str, Any]]:
    """Run every implementation on this rank's chunk of every case of every world, forward then backward.

    A world is the global ranks of a process group and its cases; the implementation gets that group.
    Each (world, dtype, implementation) is judged on its own: an implementation that raises ends only
    its own cases, every rank then meets the others on a control group (whose timeout outlasts one
    collective timeout, so a rank left waiting in a collective catches up), and the next one runs on a
    fresh group, so nothing a failure left half done can reach it.
    """
    control = dist.new_group(timeout=timedelta(seconds=2 * timeout_s + 30))
    me = dist.get_rank()
    records: list[dict[str, Any]] = []
    for ranks, cases in worlds:
        group = dist.new_group(list(ranks), timeout=timedelta(seconds=timeout_s))
        for dtype in dtypes:
            for label, fn in impls:
                failed = False
                if me in ranks:
                    failed = _run_cases(records, label, fn, group, ranks.index(me), cases, dtype, seq_dims, out_seq_dim)
                flags: list[Any] = [None] * dist.get_world_size()
                dist.all_gather_object(flags, failed, group=control)
                if any(flags):
                    group = dist.new_group(list(ranks), timeout=timedelta(seconds=timeout_s))
    return records


def _run_cases(
    records: list[dict[str, Any]],
    label: str,
    fn: Callable[..., Tensor],
    group: Any,
    rank: int,
    cases: Sequence[Case],
    dtype: torch.dtype,
    seq_dims: tuple[int, ...],
    out_seq_dim: int,
) -> bool:
    """One implementation and dtype on this group rank's chunks; ``True`` when it raised."""
    for case in cases:
        part = case.chunk(rank)
        record: dict[str, Any] = {"world": len(case.lengths), "case": case.label, "impl": label}
        record["dtype"] = dtype_name(dtype)
        records.append(record)
        local = [_take(x, part, d).to(dtype).requires_grad_() for x, d in zip(case.inputs, seq_dims, strict=True)]
        try:
            with sp.track_traffic() as forward:
                out = fn(*local, group, **case.kwargs)
            want = local[case.value].shape
            if not isinstance(out, Tensor) or out.shape != want:
                raise TypeError(f"returned {getattr(out, 'shape', type(out).__name__)}, expected {want}")
            record.update(out=out.detach(), forward=(forward.sent, forward.received), objects=forward.objects)
            if out.requires_grad:
                with sp.track_traffic() as backward:
                    (out * _take(case.grad, part, out_seq_dim).to(dtype)).sum().backward()
                grads = [torch.zeros_like(x) if x.grad is None else x.grad for x in local]  # None: no influence
                record.update(grads=grads, backward=(backward.sent, backward.received))
                record["objects"] += backward.objects
        except Exception as exc:  # noqa: BLE001 - the implementation's failure is evidence
            record["error"] = f"{type(exc).__name__}: {exc}"
            return True
    return False


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
    """Run every world in one job of real gloo processes, then judge each implementation and dtype."""
    dtypes = sorted({d for i in impls for d in ctx.dtypes_for(i)}, key=str)
    worlds = [(ranks, spec.make_cases(lengths, ctx.seed + p)) for p, (ranks, lengths) in WORLDS.items()]
    pairs = len(dtypes) * len(impls) * len(worlds)
    results = sp.run_gloo(
        PROCESSES,
        rank_job,
        [(i.label, i.fn) for i in impls],
        worlds,
        dtypes,
        spec.seq_dims,
        spec.out_seq_dim,
        COLLECTIVE_TIMEOUT_S,
        timeout_s=COLLECTIVE_TIMEOUT_S,
        deadline_s=COLLECTIVE_TIMEOUT_S * (pairs + 2),
    )
    truths = {id(case): spec.truth(case) for _, cases in worlds for case in cases}
    for impl in impls:
        for dtype in ctx.dtypes_for(impl):
            pair = pair_name(impl.label, dtype)
            with rec.guard(pair):
                for ranks, cases in worlds:
                    records = [
                        [
                            r
                            for r in results[g]
                            if (r["world"], r["impl"], r["dtype"]) == (len(ranks), impl.label, dtype_name(dtype))
                        ]
                        for g in ranks
                    ]
                    _judge(
                        rec, f"{pair} P={len(ranks)}", spec, list(cases), [truths[id(c)] for c in cases], records, dtype
                    )


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
    """Per family, on every rank: the tensor bytes sent and received (forward and backward) and the object
    bytes do not change when every chunk grows ``TRAFFIC_SCALE``-fold; the forward sends at most ``P - 1``
    chunk summaries; object traffic stays within :data:`HANDSHAKE_BYTES_PER_PEER` per other rank.
    Counted by :func:`attnverify.fast.sequence_parallel.track_traffic`, below every public function."""
    world = len(records)
    change = excess = objects = 0
    families: dict[str, list[int]] = {}
    for i, case in enumerate(cases):
        families.setdefault(case.family, []).append(i)
    for family, (short, long) in families.items():
        for rank in records:
            for key in ("forward", "backward"):
                if key in rank[short] and key in rank[long]:
                    change += sum(abs(a - b) for a, b in zip(rank[short][key], rank[long][key], strict=True))
            change += abs(rank[short]["objects"] - rank[long]["objects"])
        limit = (world - 1) * spec.summary_bytes(cases[short], dtype)
        excess += sum(max(0, rank[short]["forward"][0] - limit) for rank in records)
        objects = max(objects, *(rank[i]["objects"] for rank in records for i in (short, long)))
        rec.notes.setdefault("traffic", {})[f"{name} {family}".strip()] = [
            {
                "rank": r,
                "forward": rank[short]["forward"],
                "backward": rank[short].get("backward"),
                "objects": rank[short]["objects"],
            }
            for r, rank in enumerate(records)
        ]
    rec.record(f"{name}: bytes per rank, chunks ×1 vs ×{TRAFFIC_SCALE} (difference)", change, 0)
    rec.record(f"{name}: forward bytes sent beyond P-1 chunk summaries", excess, 0)
    rec.record(f"{name}: object bytes per rank (handshake)", objects, (world - 1) * HANDSHAKE_BYTES_PER_PEER)


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


def _qkv(shape: tuple[int, ...], g: torch.Generator, normalize: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``q, k: (*shape, 4)``, ``v: (*shape, 3)``; positive features when normalizing (denominators away from 0)."""
    if normalize:
        q, k = (torch.rand(*shape, 4, generator=g, dtype=F64) + 0.1 for _ in range(2))
    else:
        q, k = (torch.randn(*shape, 4, generator=g, dtype=F64) for _ in range(2))
    return q, k, torch.randn(*shape, 3, generator=g, dtype=F64)


def _linear_cases(lengths: tuple[int, ...], seed: int) -> list[Case]:
    cases = []
    for normalize, scale in itertools.product((False, True), (1, TRAFFIC_SCALE)):
        chunks = tuple(scale * n for n in lengths)
        g = torch.Generator().manual_seed(seed + scale)
        shape = (2, 2, sum(chunks))
        q, k, v = _qkv(shape, g, normalize)
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
# Claim 8: gated linear attention across ranks (an affine prefix of decayed states)
# ---------------------------------------------------------------------------

GLA_FAMILIES = (("per head", False), ("per key channel", False), ("per key channel", True))
"""(decay layout, normalize) per family.  Gates ``e^g`` with ``g`` uniform in ``[-0.1, 0]``: a chunk of 45
tokens keeps about ``e^{-2.3}`` of the state it carries, so a carried state decayed wrongly (or not at all)
changes the output far beyond rounding, while the strongest case (×4 chunks) still carries ``e^{-9}``."""


def _gla_cases(lengths: tuple[int, ...], seed: int) -> list[Case]:
    cases = []
    for (layout, normalize), scale in itertools.product(GLA_FAMILIES, (1, TRAFFIC_SCALE)):
        chunks = tuple(scale * n for n in lengths)
        g = torch.Generator().manual_seed(seed + scale)
        shape = (2, 2, sum(chunks))
        q, k, v = _qkv(shape, g, normalize)
        decay = -0.1 * torch.rand(*shape, *((4,) if layout == "per key channel" else ()), generator=g, dtype=F64)
        grad = torch.randn(*shape, 3, generator=g, dtype=F64)
        family = f"{layout}, normalize={normalize}"
        label = f"chunks {chunks} ×{scale}, {family}"
        cases.append(Case(label, chunks, (q, k, v, decay), grad, {"normalize": normalize}, family, value=2))
    return cases


def _gla_truth(case: Case) -> Truth:
    """The step-by-step recurrence in float64.  Scales per ``(B, H)`` row bound every sum term by term: the
    same map on ``|q|, |k|, |v|`` (and its gradients, the decays' included: each weight ``e^{G_t - G_j}`` grows
    with every gate it spans).  Normalized, ``o_t`` is a convex combination of the ``v_j``, so ``|∂o_t/∂g_s|
    <= 2 max|v|`` and the decays' scale is ``2 max|v| Σ_t |∂L/∂o_t|``."""
    normalize = case.kwargs["normalize"]
    q, k, v, decay = (x.clone().requires_grad_() for x in case.inputs)
    out = ref_dsf.gla_recurrent(q, k, v, decay, normalize=normalize)[0]
    grads = torch.autograd.grad((out * case.grad).sum(), (q, k, v, decay))
    qa, ka, va = (x.abs().requires_grad_() for x in case.inputs[:3])
    da = case.inputs[3].clone().requires_grad_()
    bound = ref_dsf.gla_recurrent(qa, ka, va, da, normalize=normalize)[0]
    bounds = list(torch.autograd.grad((bound * case.grad.abs()).sum(), (qa, ka, va, da)))
    if normalize:
        per_row = 2 * case.inputs[2].abs().amax((-2, -1)) * case.grad.abs().sum((-2, -1))
        bounds[3] = per_row.reshape(*per_row.shape, *(1,) * (bounds[3].dim() - 2)).expand_as(bounds[3])
    scales = [b.amax(dim=tuple(range(2, b.dim())), keepdim=True) for b in bounds]
    return Truth(out.detach(), bound.detach().amax(dim=(-2, -1), keepdim=True), list(grads), scales)


def _gla_summary_bytes(case: Case, dtype: torch.dtype) -> int:
    """The chunk's state ``Dk × (Dv [+ 1])`` and its total log-decay (one more column), per ``(B, H)``."""
    q, _, v, _ = case.inputs
    itemsize = 8 if dtype == F64 else 4
    return q.shape[0] * q.shape[1] * q.shape[3] * (v.shape[-1] + int(case.kwargs["normalize"]) + 1) * itemsize


GLA_SPEC = Spec((2, 2, 2, 2), 2, _gla_cases, _gla_truth, _gla_summary_bytes)


def check_gla_sequence_parallel(rec: Recorder, impls: Sequence[Implementation], ctx: CheckContext) -> None:
    """Chunks on 2, 3 and 4 gloo ranks reproduce the gated recurrence, forward and backward (decays included)."""
    run_spec(rec, impls, ctx, GLA_SPEC)


def gla_sequence_parallel(
    q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor, group: Any = None, normalize: bool = False
) -> Tensor:
    """The subject's signature on :func:`attnverify.fast.sequence_parallel.linear_attention`."""
    return sp.linear_attention(q, k, v, group, log_decay=log_decay, normalize=normalize)


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
GLA_SP = Subject(
    "sequence_parallel_gated_linear_attention",
    "fn(q, k: (B, H, T_local, Dk), v: (B, H, T_local, Dv), log_decay: (B, H, T_local[, Dk]), group, normalize: bool)"
    " -> (B, H, T_local, Dv)",
    lambda device: (Implementation("fast affine prefix", gla_sequence_parallel, device="cpu"),),
    args=("q", "k", "v", "log_decay", "group"),
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
        mutants=(
            mut.INCLUSIVE_RANK_PREFIX,
            mut.UNRESCALED_TOTALS,
            mut.REVERSED_RANK_ORDER,
            mut.PREFIX_NOT_RESCALED,
            mut.BACKWARD_INCLUSIVE_PREFIX,
            mut.BACKWARD_FORWARD_ORDER,
            mut.GLOBAL_RANK_AS_GROUP_RANK,
            *mut.SHIPS_WHOLE_CHUNKS,
        ),
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
        mutants=(
            mut.LINEAR_INCLUSIVE_PREFIX,
            mut.LINEAR_REVERSED_ORDER,
            mut.LINEAR_PREVIOUS_RANK_ONLY,
            mut.LINEAR_BACKWARD_FROM_EARLIER_RANKS,
        ),
    ),
    Claim(
        id="gla.sequence_parallel_equals_single",
        paper=GLA_PAPER,
        kind="identity",
        title="Gated linear attention split across processes equals the single-process recurrence",
        statement=(
            r"With chunk states $S_p$ (from a zero state) and total log-decays $g_p=\sum_{t\in p}g_t$, the state "
            r"entering chunk $p$ is $P_p=\sum_{q<p}e^{\sum_{q<r<p}g_r}\odot S_q$, the exclusive prefix of the "
            r"affine maps $P\mapsto e^{g_r}\odot P+S_r$, which compose associatively as "
            r"$(g_1,S_1)\circ(g_2,S_2)=(g_1+g_2,\;e^{g_2}\odot S_1+S_2)$ (decays along $d_k$; ZeCO chains these "
            r"maps, the all-gather form and its backward are our derivation). Token $t$ of chunk $p$ then adds "
            r"$(q_t\odot e^{\hat G_t})^\top P_p$ to its chunk-local output ($\hat G_t$ the chunk-local inclusive "
            r"gate sum). One $d_k\times(D_v+1)$ summary per rank and direction, whatever the chunk lengths; "
            r"per-head and per-key-channel decays, normalized or not; outputs and gradients (of the decays too) "
            r"on numerical evidence."
        ),
        check=check_gla_sequence_parallel,
        subject=GLA_SP,
        mutants=(
            mut.GLA_CARRIED_NOT_DECAYED,
            mut.GLA_NEXT_RANKS_TOTAL,
            mut.GLA_SENDERS_OWN_DECAY,
            mut.GLA_INCLUSIVE_PREFIX,
            mut.GLA_BACKWARD_UNDECAYED,
            mut.GLA_BACKWARD_DROPS_DECAY_GRADIENT,
        ),
    ),
)
