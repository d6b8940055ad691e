"""The ``sequence_parallel`` benchmark suite (book/sequence_parallel.md): bytes and wall time of sequence parallelism.

Real gloo process groups on one machine (:func:`~attnverify.fast.sequence_parallel.run_gloo`), float32, CPU.
Three methods: Aaren's scan with the ``"allgather"`` and the ``"chain"`` exchange, and LASP-2 linear attention.

* **Correctness first** — for every configuration (method, ``P`` ranks, chunk length ``N_local``) the ranks'
  chunks of the output and of the input gradients (for a fixed random upstream gradient) are assembled and
  checked against the single-process fast function (:func:`~attnverify.fast.prefix_softmax_attention`,
  :func:`~attnverify.fast.linear_attention.causal_linear_attention`) within
  :func:`~attnverify.numerics.identity_tolerance`, before anything at that ``P`` is timed.
* **Bytes** — what each rank sends and receives through ``torch.distributed``
  (:func:`~attnverify.fast.sequence_parallel.track_traffic`), forward and backward separately, for ``N_local``
  in a sweep and every ``P``: the JSON's ``traffic``; ``naive_traffic`` is what all-gathering the raw inputs
  (scores and values, or ``K`` and ``V``) would move.  The targets are properties: bytes independent of
  ``N_local``; the chain's independent of ``P``; the all-gathers' proportional to ``P - 1``; every count equal
  to its formula.
* **Time** — at a fixed total length split evenly over ``P`` ranks: one warm-up call, then the median of
  ``reps`` calls timed with ``time.perf_counter`` inside each rank, each started after a barrier; a row holds
  the maximum over ranks and its ratio to the single-process fast function at the same total length (timed
  with :meth:`~attnverify.benchmarks.runner.Recorder.time`).  Each rank gets ``max(1, cores // P)`` torch
  threads; where ``P`` exceeds the cores the ranks share them (``oversubscribed`` in the rows).

``python -m attnverify.benchmarks.sequence_parallel --torchrun``, launched by ``torchrun``, runs the same
check, byte count and timing on one GPU per rank with NCCL (``benchmarks/README.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor

from attnverify.benchmarks import runner
from attnverify.benchmarks.runner import CorrectnessError, Recorder, Suite
from attnverify.fast import prefix_softmax_attention
from attnverify.fast import sequence_parallel as sp
from attnverify.fast.linear_attention import causal_linear_attention
from attnverify.numerics import identity_tolerance

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SEED = 0
DTYPE = torch.float32
AAREN = "prefix_softmax_attention"
LINEAR = "linear_attention"
BASELINE = {AAREN: "prefix_softmax_attention", LINEAR: "causal_linear_attention"}
"""The single-process fast function each method is checked against and timed against."""
PASSES = ("forward", "forward+backward")
FIELDS = ("forward_sent", "forward_received", "backward_sent", "backward_received")
"""Tensor bytes per rank in a ``traffic`` record (``forward_objects`` holds the handshake's pickled bytes)."""


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one run (full or quick)."""

    ranks: tuple[int, ...]  # P
    n_locals: tuple[int, ...]  # chunk lengths of the byte sweep
    rows: int  # Aaren: batch·heads
    heads: int  # linear attention: batch 1, this many heads
    d: int  # linear attention: key width
    dv: int
    aaren_n: int  # total length timed, Aaren
    linear_n: int  # total length timed, linear attention
    reps: int  # timed calls per rank (after one warm-up)


FULL = Sizes(
    ranks=(1, 2, 4),
    n_locals=(256, 1024, 4096, 16384),
    rows=8,
    heads=8,
    d=64,
    dv=64,
    aaren_n=65536,
    linear_n=16384,
    reps=5,
)
QUICK = Sizes(ranks=(1, 2), n_locals=(16, 64), rows=2, heads=2, d=8, dv=8, aaren_n=128, linear_n=64, reps=2)


@dataclass(frozen=True)
class Kind:
    """One sequence-parallel method: the function and its exchange strategy."""

    method: str  # AAREN or LINEAR
    strategy: str  # "allgather" or "chain"; LASP-2 linear attention all-gathers

    @property
    def name(self) -> str:
        return f"sp.{self.method}[{self.strategy}]"


KINDS = (Kind(AAREN, "allgather"), Kind(AAREN, "chain"), Kind(LINEAR, "allgather"))


def _n_total(method: str, sizes: Sizes) -> int:
    return sizes.aaren_n if method == AAREN else sizes.linear_n


def _batch_heads(method: str, sizes: Sizes) -> int:
    return sizes.rows if method == AAREN else sizes.heads


def _inputs(method: str, sizes: Sizes, n: int) -> tuple[Tensor, ...]:
    """Seeded standard-normal inputs of total length ``n``: ``(scores, values)`` or ``(q, k, v)``, on CPU."""
    gen = torch.Generator().manual_seed(SEED)
    if method == AAREN:
        return torch.randn(sizes.rows, n, generator=gen), torch.randn(sizes.rows, n, sizes.dv, generator=gen)
    return tuple(torch.randn(1, sizes.heads, n, w, generator=gen) for w in (sizes.d, sizes.d, sizes.dv))


def _upstream(inputs: Sequence[Tensor]) -> Tensor:
    """A fixed random gradient of the output, which is shaped like the last input (values, or ``v``)."""
    return torch.randn(inputs[-1].shape, generator=torch.Generator().manual_seed(SEED + 1))


def _seq_dim(x: Tensor) -> int:
    """The sequence dimension: the last of scores ``(rows, N)`` and their gradient, else the second to last."""
    return -1 if x.dim() == 2 else -2


def _chunk(x: Tensor, rank: int, n_local: int) -> Tensor:
    """Rank ``rank``'s contiguous chunk of length ``n_local`` (a view)."""
    return x.narrow(_seq_dim(x), rank * n_local, n_local)


def _parallel(kind: Kind, *inputs: Tensor) -> Tensor:
    if kind.method == AAREN:
        return sp.prefix_softmax_attention(*inputs, strategy=kind.strategy)
    return sp.linear_attention(*inputs)


def _single(method: str, *inputs: Tensor) -> Tensor:
    return prefix_softmax_attention(*inputs) if method == AAREN else causal_linear_attention(*inputs)


def _forward_backward(
    call: Callable[..., Tensor], inputs: Sequence[Tensor], upstream: Tensor
) -> tuple[list[Tensor], dict[str, int]]:
    """``[output, *input gradients]`` for the upstream gradient, and the tensor bytes moved in each pass."""
    leaves = [x.detach().requires_grad_() for x in inputs]
    with sp.track_traffic() as forward:
        out = call(*leaves)
    with sp.track_traffic() as backward:
        grads = torch.autograd.grad(out, leaves, upstream)
    moved = {
        "forward_sent": forward.sent,
        "forward_received": forward.received,
        "backward_sent": backward.sent,
        "backward_received": backward.received,
        "forward_objects": forward.objects,
    }
    return [out.detach(), *grads], moved


def _untracked_forward_backward(call: Callable[..., Tensor], inputs: Sequence[Tensor], upstream: Tensor) -> object:
    """``[output, *input gradients]``, without the traffic accounting (which routes every op through Python)."""
    leaves = [x.detach().requires_grad_() for x in inputs]
    out = call(*leaves)
    return [out, *torch.autograd.grad(out, leaves, upstream)]


def _passes(call: Callable[..., Tensor], inputs: Sequence[Tensor], upstream: Tensor) -> dict[str, Callable[[], object]]:
    """The timed calls by pass: forward (no autograd graph) and forward+backward."""
    return {
        "forward": partial(call, *inputs),
        "forward+backward": partial(_untracked_forward_backward, call, inputs, upstream),
    }


def _local(method: str, sizes: Sizes, n_local: int, device: str) -> tuple[list[Tensor], Tensor]:
    """This rank's chunks of the inputs and of the upstream gradient, for ``n_local`` tokens per rank."""
    rank, world = dist.get_rank(), dist.get_world_size()
    full = _inputs(method, sizes, n_local * world)
    local = [_chunk(x, rank, n_local).contiguous().to(device) for x in full]
    return local, _chunk(_upstream(full), rank, n_local).contiguous().to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rank_seconds(fn: Callable[[], object], reps: int, device: str) -> float:
    """Median seconds of ``fn`` on this rank: one warm-up call, then ``reps`` calls each started after a barrier."""
    fn()
    times = []
    for _ in range(reps):
        dist.barrier()
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---------------------------------------------------------------------------
# What each rank runs (module level, so that spawned processes can unpickle it)
# ---------------------------------------------------------------------------


def _exchange_job(sizes: Sizes, n_locals: dict[str, tuple[int, ...]], device: str = "cpu") -> list[dict[str, Any]]:
    """Per kind and chunk length: this rank's output and input gradients, and the bytes it moved."""
    results = []
    for kind in KINDS:
        for n_local in n_locals[kind.method]:
            local, upstream = _local(kind.method, sizes, n_local, device)
            outputs, moved = _forward_backward(partial(_parallel, kind), local, upstream)
            results.append({"kind": kind, "n_local": n_local, "outputs": outputs, **moved})
    return results


def _timing_job(sizes: Sizes, device: str = "cpu") -> list[dict[str, Any]]:
    """Per kind: this rank's median seconds of forward and forward+backward at the timed total length."""
    results = []
    for kind in KINDS:
        n_local = _n_total(kind.method, sizes) // dist.get_world_size()
        local, upstream = _local(kind.method, sizes, n_local, device)
        fns = _passes(partial(_parallel, kind), local, upstream)
        results.append(
            {"kind": kind, "n_local": n_local, **{k: _rank_seconds(f, sizes.reps, device) for k, f in fns.items()}}
        )
    return results


# ---------------------------------------------------------------------------
# The suite
# ---------------------------------------------------------------------------


def _time_single_process(rec: Recorder, sizes: Sizes) -> dict[tuple[str, str], float]:
    """The baselines: each single-process fast function at the timed total length, all cores."""
    seconds = {}
    for method in (AAREN, LINEAR):
        n = _n_total(method, sizes)
        inputs = _inputs(method, sizes, n)
        row: dict[str, Any] = {
            "n": n,
            "batch_heads": _batch_heads(method, sizes),
            "dv": sizes.dv,
            "dtype": DTYPE,
            "ranks": 1,
            "n_local": n,
            "threads_per_rank": runner.THREADS,
            "oversubscribed": False,
            "ratio_to_single_process": 1.0,
        }
        for pass_, fn in _passes(partial(_single, method), inputs, _upstream(inputs)).items():
            seconds[method, pass_] = rec.time(fn, method=BASELINE[method], pass_=pass_, **row)
    return seconds


def _check(
    rec: Recorder,
    sizes: Sizes,
    p: int,
    per_rank: list[list[dict[str, Any]]],
    references: dict[tuple[str, int], list[Tensor]],
) -> list[dict[str, Any]]:
    """Check every configuration's assembled outputs and gradients; return its per-rank ``traffic`` records."""
    records = []
    for i, first in enumerate(per_rank[0]):
        kind, n_local = first["kind"], first["n_local"]
        n = n_local * p
        if (kind.method, n) not in references:
            full = _inputs(kind.method, sizes, n)
            references[kind.method, n] = _forward_backward(partial(_single, kind.method), full, _upstream(full))[0]
        assembled = [
            torch.cat(parts, _seq_dim(parts[0])) for parts in zip(*(r[i]["outputs"] for r in per_rank), strict=True)
        ]
        rec.check(
            f"{kind.name} P={p} N_local={n_local}: output, input gradients vs single-process {BASELINE[kind.method]}",
            assembled,
            references[kind.method, n],
            identity_tolerance(DTYPE, n),
        )
        for rank, results in enumerate(per_rank):
            moved = {key: results[i][key] for key in (*FIELDS, "forward_objects")}
            records.append(
                {"method": kind.method, "strategy": kind.strategy, "P": p, "n_local": n_local, "rank": rank, **moved}
            )
    return records


def _record_timings(
    rec: Recorder,
    sizes: Sizes,
    p: int,
    threads: int,
    per_rank: list[list[dict[str, Any]]],
    baseline: dict[tuple[str, str], float],
) -> None:
    """One row per kind and pass: the maximum over ranks, and its ratio to the single-process baseline."""
    for results in zip(*per_rank, strict=True):
        kind, n_local = results[0]["kind"], results[0]["n_local"]
        for pass_ in PASSES:
            seconds = [r[pass_] for r in results]
            rec.record(
                max(seconds),
                method=kind.name,
                pass_=pass_,
                n=n_local * p,
                batch_heads=_batch_heads(kind.method, sizes),
                dv=sizes.dv,
                dtype=DTYPE,
                ranks=p,
                n_local=n_local,
                threads_per_rank=threads,
                oversubscribed=p * threads > runner.THREADS,
                ratio_to_single_process=max(seconds) / baseline[kind.method, pass_],
                seconds_per_rank=seconds,
            )


def _unit_bytes(method: str, sizes: Sizes) -> int:
    """Bytes of one rank's summary: Aaren's total ``rows·(Dv+2)``, LASP-2's state ``B·H·D·Dv``, float32."""
    numel = sizes.rows * (sizes.dv + 2) if method == AAREN else sizes.heads * sizes.d * sizes.dv
    return numel * DTYPE.itemsize


def _predicted(kind: Kind, sizes: Sizes, p: int, rank: int) -> dict[str, int]:
    """Tensor bytes rank ``rank`` of ``p`` should move: all-gather ``(P-1)·unit`` each way; chain one hop each way."""
    unit = _unit_bytes(kind.method, sizes)
    if kind.strategy == "allgather":
        return dict.fromkeys(FIELDS, (p - 1) * unit)
    has_next, has_previous = unit * (rank < p - 1), unit * (rank > 0)
    return {
        "forward_sent": has_next,
        "forward_received": has_previous,
        "backward_sent": has_previous,
        "backward_received": has_next,
    }


def _naive(method: str, sizes: Sizes, p: int, n_local: int) -> int:
    """Bytes per rank, each way, of all-gathering the raw chunk: scores and values, or ``K`` and ``V``."""
    per_token = sizes.rows * (sizes.dv + 1) if method == AAREN else sizes.heads * (sizes.d + sizes.dv)
    return (p - 1) * n_local * per_token * DTYPE.itemsize


def _relative_change(values: Sequence[float]) -> float:
    """``(max - min) / max`` (0 when every value is 0)."""
    top = max(values)
    return (top - min(values)) / top if top else 0.0


def _max_over_ranks(records: list[dict[str, Any]]) -> dict[tuple[int, int], dict[str, int]]:
    """``(P, N_local) -> {field: bytes}``, the maximum over ranks."""
    table: dict[tuple[int, int], dict[str, int]] = defaultdict(lambda: dict.fromkeys(FIELDS, 0))
    for r in records:
        cell = table[r["P"], r["n_local"]]
        for f in FIELDS:
            cell[f] = max(cell[f], r[f])
    return dict(sorted(table.items()))


def _traffic_targets(rec: Recorder, sizes: Sizes, traffic: list[dict[str, Any]]) -> None:
    """Bytes are properties of the exchange: independent of ``N_local``; chain independent of ``P``; formulas."""
    for kind in KINDS:
        mine = [r for r in traffic if (r["method"], r["strategy"]) == (kind.method, kind.strategy)]
        table = _max_over_ranks(mine)
        summary = [{"P": p, "n_local": n, **cell} for (p, n), cell in table.items()]
        by_rank: dict[tuple[int, int, str], list[int]] = defaultdict(list)
        for r in mine:
            for f in FIELDS:
                by_rank[r["P"], r["rank"], f].append(r[f])
        rec.target(
            f"{kind.name}: bytes per rank independent of N_local (max relative change over N_local)",
            max(_relative_change(v) for v in by_rank.values()),
            0.0,
            "<=",
            {"bytes_per_rank_max_over_ranks": summary},
        )
        multi = sorted({p for p, _ in table if p >= 2})
        common = sorted(set.intersection(*({n for q, n in table if q == p} for p in multi))) if multi else []
        scale = (lambda p: 1) if kind.strategy == "chain" else (lambda p: p - 1)
        spread = [_relative_change([table[p, n][f] / scale(p) for p in multi]) for n in common for f in FIELDS] or [0.0]
        what = "bytes per rank" if kind.strategy == "chain" else "bytes per rank / (P - 1)"
        rec.target(
            f"{kind.name}: {what} independent of P >= 2 (max relative change over P)",
            max(spread),
            0.0,
            "<=",
            {"P": multi, "n_locals": common},
        )
    deviation = max(
        abs(r[f] - q) / max(q, 1)
        for r in traffic
        for f, q in _predicted(Kind(r["method"], r["strategy"]), sizes, r["P"], r["rank"]).items()
    )
    rec.target(
        "every rank's tensor bytes equal the formula (max |measured - predicted| / predicted)",
        deviation,
        0.0,
        "<=",
        {
            "aaren_unit_bytes": _unit_bytes(AAREN, sizes),
            "linear_unit_bytes": _unit_bytes(LINEAR, sizes),
            "allgather": "each pass, each way: (P - 1) · unit",
            "chain": "each pass, each way: one unit, except at the ends of the chain",
            "unit": "Aaren: rows·(Dv + 2)·4 (the chunk total); linear attention: B·H·D·Dv·4 (the LASP-2 state)",
        },
    )


def run(rec: Recorder) -> None:
    """The whole suite, full or quick sizes per ``rec.quick``."""
    sizes = QUICK if rec.quick else FULL
    timeout = 120.0 if rec.quick else 900.0
    baseline = _time_single_process(rec, sizes)
    references: dict[tuple[str, int], list[Tensor]] = {}
    traffic: list[dict[str, Any]] = []
    for p in sizes.ranks:
        threads = max(1, runner.THREADS // p)
        n_locals = {m: tuple(sorted({*sizes.n_locals, _n_total(m, sizes) // p})) for m in (AAREN, LINEAR)}
        exchanged = sp.run_gloo(p, _exchange_job, sizes, n_locals, timeout_s=timeout, threads=threads)
        traffic += _check(rec, sizes, p, exchanged, references)
        del exchanged
        timings = sp.run_gloo(p, _timing_job, sizes, timeout_s=timeout, threads=threads)
        _record_timings(rec, sizes, p, threads, timings, baseline)
    references.clear()
    rec.extra["traffic"] = traffic
    rec.extra["naive_traffic"] = [
        {
            "method": m,
            "approach": "all-gather " + ("scores and values" if m == AAREN else "K and V"),
            "P": p,
            "n_local": n,
            "sent": _naive(m, sizes, p, n),
            "received": _naive(m, sizes, p, n),
        }
        for m, p, n in sorted({(r["method"], r["P"], r["n_local"]) for r in traffic})
    ]
    rec.extra["sizes"] = {**sizes.__dict__, "dtype": str(DTYPE).removeprefix("torch.")}
    rec.extra["notes"] = {
        "cores": f"{runner.THREADS} cores; each rank runs max(1, {runner.THREADS} // P) torch threads, so P above "
        f"{runner.THREADS} oversubscribes the cores (rows: oversubscribed)",
        "timing": "per rank: one warm-up call, then the median of reps calls, each after a barrier "
        "(time.perf_counter); rows hold the maximum over ranks (seconds_per_rank: every rank's)",
        "traffic": "tensor bytes through torch.distributed (track_traffic: an all-gather of b bytes counts "
        "(P - 1)·b sent and received); forward_objects: pickled bytes of the shape handshake",
    }
    _traffic_targets(rec, sizes, traffic)
    rec.skip("NCCL on several GPUs", "not run by the suite: see benchmarks/README.md (torchrun entry point)")


# ---------------------------------------------------------------------------
# The plot
# ---------------------------------------------------------------------------

COLORS = {"allgather": "C0", "chain": "C1", LINEAR: "C2"}
MARKERS = {"allgather": "o", "chain": "s", LINEAR: "^"}  # the chain's squares stay visible where lines coincide


def _style(method: str, strategy: str) -> dict[str, Any]:
    """Colour and marker of a method in both panels."""
    key = LINEAR if method == LINEAR else strategy
    return {"color": COLORS[key], "marker": MARKERS[key], "fillstyle": "none" if key == "chain" else "full"}


def plot(results: dict[str, Any]) -> Figure:
    """(a) forward bytes sent per rank against ``N_local``, with the naive all-gathers; (b) wall time against ``P``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 7.5), layout="constrained")
    bytes_ax, time_ax = fig.subplots(1, 2)
    table: dict[tuple[str, str, int], dict[int, int]] = defaultdict(dict)
    for r in results["traffic"]:
        cell = table[r["method"], r["strategy"], r["P"]]
        cell[r["n_local"]] = max(cell.get(r["n_local"], 0), r["forward_sent"])
    for (method, strategy, p), cells in sorted(table.items()):
        if p < 2:
            continue
        n, sent = zip(*sorted(cells.items()), strict=True)
        style = "-" if p == 2 else "--"
        label = f"sp.{method}[{strategy}], P={p}"
        bytes_ax.plot(n, sent, style, markersize=5, label=label, **_style(method, strategy))
    naive: dict[tuple[str, str, int], list[tuple[int, int]]] = defaultdict(list)
    for r in results["naive_traffic"]:
        if r["P"] >= 2:
            naive[r["method"], r["approach"], r["P"]].append((r["n_local"], r["sent"]))
    for (method, approach, p), pairs in sorted(naive.items()):
        n, sent = zip(*sorted(pairs), strict=True)
        shade = "0.35" if method == AAREN else "0.65"
        bytes_ax.plot(n, sent, "-" if p == 2 else "--", color=shade, linewidth=1, label=f"naive: {approach}, P={p}")
    bytes_ax.set_xscale("log", base=2)
    bytes_ax.set_yscale("log")
    bytes_ax.set_xlabel("tokens per rank N_local")
    bytes_ax.set_ylabel("bytes sent per rank, forward (max over ranks)")
    bytes_ax.set_title("(a) bytes per rank (P = 1 moves none)", fontsize="medium")
    bytes_ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)

    lines: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    oversubscribed = set()
    for row in results["rows"]:
        if row["method"].startswith("sp."):
            lines[row["method"], row["pass"]].append((row["ranks"], row["seconds"]))
            if row.get("oversubscribed"):
                oversubscribed.add(row["ranks"])
    ranks = sorted({p for points in lines.values() for p, _ in points})
    for (method, pass_), points in sorted(lines.items()):
        xs, seconds = zip(*sorted(points), strict=True)
        name, strategy = method.removeprefix("sp.").rstrip("]").split("[")
        style = "-" if pass_ == "forward" else "--"
        time_ax.plot(xs, seconds, style, label=f"{method}, {pass_}", **_style(name, strategy))
    for row in results["rows"]:
        if row["method"] in BASELINE.values():
            color = "0.35" if row["method"] == BASELINE[AAREN] else COLORS[LINEAR]
            style = ":" if row["pass"] == "forward" else "-."
            label = f"{row['method']} (1 process, N={row['n']}), {row['pass']}"
            time_ax.axhline(row["seconds"], linestyle=style, color=color, linewidth=1, label=label)
    time_ax.set_xscale("log", base=2)
    time_ax.set_yscale("log")
    time_ax.set_xticks(ranks, [f"{p}\n(oversubscribed)" if p in oversubscribed else str(p) for p in ranks])
    time_ax.minorticks_off()
    time_ax.set_xlabel("ranks P (fixed total length, split evenly)")
    time_ax.set_ylabel("seconds per call (median; max over ranks)")
    time_ax.set_title("(b) wall time against P", fontsize="medium")
    time_ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)

    env, sizes = results["environment"], results["sizes"]
    quick = " (quick run)" if results["quick"] else ""
    fig.suptitle(
        f"Sequence parallelism on gloo, float32{quick}: Aaren B·H={sizes['rows']} N={sizes['aaren_n']}; "
        f"linear attention H={sizes['heads']} D={sizes['d']} N={sizes['linear_n']}; Dv={sizes['dv']}\n"
        f"{env['processor']}, {env['cpu_count']} cores, torch {env['torch']}, {results['date']}",
        fontsize="medium",
    )
    return fig


SUITE = Suite("sequence_parallel", run, plot)


# ---------------------------------------------------------------------------
# torchrun: the same measurement on GPUs with NCCL
# ---------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    """Arguments of the ``torchrun`` entry point."""
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(
        prog="python -m attnverify.benchmarks.sequence_parallel",
        description="Launched by torchrun --nproc_per_node=N: check, count bytes and time the sequence-parallel "
        "functions with one process per device; rank 0 prints one JSON document.",
    )
    p.add_argument("--torchrun", action="store_true", required=True, help="Run as one process of a torchrun job.")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if cuda else "cpu")
    p.add_argument("--backend", choices=("nccl", "gloo"), help="Default: nccl on cuda, gloo on cpu.")
    p.add_argument("--n-total", type=int, default=FULL.aaren_n, help="Aaren total length (split over ranks).")
    p.add_argument("--linear-n", type=int, default=FULL.linear_n, help="Linear attention total length.")
    p.add_argument("--reps", type=int, default=FULL.reps, help="Timed calls per rank after one warm-up.")
    return p


def _torchrun_checks(sizes: Sizes, device: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every rank checks its chunk against the single-process function on its device; checks of all ranks, traffic."""
    p, rank = dist.get_world_size(), dist.get_rank()
    rec = Recorder("sequence_parallel", quick=False)
    traffic = []
    for result in _exchange_job(sizes, {m: (_n_total(m, sizes) // p,) for m in (AAREN, LINEAR)}, device):
        kind, n_local = result["kind"], result["n_local"]
        full = _inputs(kind.method, sizes, n_local * p)
        reference, _ = _forward_backward(
            partial(_single, kind.method), [x.to(device) for x in full], _upstream(full).to(device)
        )
        with suppress(CorrectnessError):  # recorded; every rank learns of it below, before anything is timed
            rec.check(
                f"{kind.name} P={p} rank {rank}: output, input gradients vs single-process {BASELINE[kind.method]}",
                result["outputs"],
                [_chunk(x, rank, n_local) for x in reference],
                identity_tolerance(DTYPE, n_local * p),
            )
        moved = {key: result[key] for key in (*FIELDS, "forward_objects")}
        traffic.append(
            {"method": kind.method, "strategy": kind.strategy, "P": p, "n_local": n_local, "rank": rank, **moved}
        )
    checks: list[Any] = [None] * p
    dist.all_gather_object(checks, rec.correctness)
    return [c for rank_checks in checks for c in rank_checks], traffic


def _torchrun_timings(sizes: Sizes, device: str) -> list[dict[str, Any]]:
    """This rank's seconds: the single-process baselines (every rank, concurrently), then every kind."""
    rank = dist.get_rank()
    timing = []
    for method in (AAREN, LINEAR):
        full = _inputs(method, sizes, _n_total(method, sizes))
        fns = _passes(partial(_single, method), [x.to(device) for x in full], _upstream(full).to(device))
        for pass_, fn in fns.items():
            seconds = _rank_seconds(fn, sizes.reps, device)
            timing.append({"method": BASELINE[method], "pass": pass_, "rank": rank, "seconds": seconds})
    for t in _timing_job(sizes, device):
        timing += [{"method": t["kind"].name, "pass": pass_, "rank": rank, "seconds": t[pass_]} for pass_ in PASSES]
    return timing


def torchrun_main(argv: Sequence[str] | None = None) -> int:
    """One process of a ``torchrun`` job (rendezvous from the environment); returns the exit status.

    Checks first (every rank its chunk), then times; rank 0 prints the checks, every rank's bytes and seconds.
    """
    args = parser().parse_args(argv)
    device = args.device
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    dist.init_process_group(args.backend or ("nccl" if args.device == "cuda" else "gloo"))
    try:
        p = dist.get_world_size()
        sizes = replace(FULL, ranks=(p,), aaren_n=args.n_total, linear_n=args.linear_n, reps=args.reps)
        if sizes.aaren_n % p or sizes.linear_n % p:
            raise ValueError(f"--n-total and --linear-n must be multiples of the number of ranks, {p}")
        correctness, traffic = _torchrun_checks(sizes, device)
        passed = all(c["passed"] for c in correctness)
        timing = _torchrun_timings(sizes, device) if passed else []
        gathered: list[Any] = [None] * p
        dist.all_gather_object(gathered, (traffic, timing))
        if dist.get_rank() == 0:
            env = runner.environment()
            document = {
                "world_size": p,
                "backend": dist.get_backend(),
                "device": env["cuda_device"] if device.startswith("cuda") else env["processor"],
                "torch": env["torch"],
                "sizes": {**sizes.__dict__, "dtype": str(DTYPE).removeprefix("torch.")},
                "correctness": correctness,
                "traffic": [r for t, _ in gathered for r in t],
                "timing": [r for _, t in gathered for r in t],
            }
            print(json.dumps(document, indent=1))
        return 0 if passed else 1
    finally:
        dist.destroy_process_group()


__all__ = ["FULL", "KINDS", "QUICK", "SUITE", "Kind", "Sizes", "parser", "plot", "run", "torchrun_main"]

if __name__ == "__main__":
    sys.exit(torchrun_main())
