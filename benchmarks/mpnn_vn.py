"""The ``mpnn_vn`` benchmark suite (book/mpnn_vn.md, "Benchmarks"): every figure a ratio of one run.

Linear attention (elu+1) within each graph of a batch, float32 on CPU unless stated:

* **A** — 1,000 graphs of 10–200 nodes, ``d = d_k = d_v = 64``: :func:`~attnverify.fast.segment_linear_attention`
  against a per-graph loop of dense attention and against padding with ``to_dense_batch`` + ``bmm``
  (both targets ``>= 1.5``); reported against the speed of light: the three input projections plus
  two GEMMs of the attention's ``N m d_v`` multiply-adds each.
* **B** — 10,000 graphs of 4–32 nodes, ``d = 32``: the per-graph loop over the segment path, target ``>= 10``.
* **C** — a skewed batch (900 graphs of 10 nodes, 100 of 500), ``d = 64``: padding over segment, target ``>= 2``.
* **D** — one graph: segment time at ``n = 65,536`` over ``n = 16,384``, target ``<= 4.5`` (linear).
* **Sweep** — one graph, ``n = 2^8 .. 2^16``: segment, dense (``O(n²)``, capped) and the projections; :func:`plot`.

Every configuration is checked against the float64 dense reference (on a subset of graphs) first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attnverify.benchmarks.runner import Recorder, Suite, timing_axes
from attnverify.fast import segment_linear_attention
from attnverify.numerics import identity_tolerance
from attnverify.reference.mpnn_vn import linear_attention_layer

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SEED = 0
CHECK_GRAPHS = 20
"""Graphs of each batch compared against the float64 reference before timing."""

SEGMENT = "segment_linear_attention"
LOOP = "per_graph_loop"
PADDED = "to_dense_batch_bmm"
DENSE = "dense_quadratic"
PROJECTIONS = "projections"
SPEED_OF_LIGHT = "projections_plus_two_gemms"
LABELS = {
    SEGMENT: "segment_linear_attention (segment sums)",
    LOOP: "per-graph loop of dense attention",
    PADDED: "to_dense_batch + bmm (padded)",
    DENSE: "dense φ(Q)φ(K)ᵀ attention, O(n²)",
    PROJECTIONS: "x W_Q, x W_K, x W_V only",
}


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one run (full or quick)."""

    a: tuple[int, int, int, int]  # graphs, min nodes, max nodes, d
    b: tuple[int, int, int, int]
    c: tuple[tuple[int, int], tuple[int, int], int]  # (graphs, nodes) twice, d
    d: tuple[int, int]  # small and large n, one graph
    sweep: tuple[int, ...]
    dense_max_n: int


FULL = Sizes(
    a=(1000, 10, 200, 64),
    b=(10_000, 4, 32, 32),
    c=((900, 10), (100, 500), 64),
    d=(16_384, 65_536),
    sweep=tuple(2**k for k in range(8, 17)),
    dense_max_n=2**13,
)
QUICK = Sizes(
    a=(30, 10, 100, 32),
    b=(200, 4, 32, 16),
    c=((45, 10), (5, 200), 32),
    d=(512, 2048),
    sweep=(2**8, 2**9),
    dense_max_n=2**9,
)


@dataclass(frozen=True)
class Problem:
    """A batch: features, sorted graph ids, graph offsets and weights (float32)."""

    x: Tensor
    batch: Tensor
    ptr: list[int]
    Wq: Tensor
    Wk: Tensor
    Wv: Tensor

    @property
    def shape(self) -> dict[str, Any]:
        return {"n": self.x.shape[0], "batch_heads": len(self.ptr) - 1, "dv": self.Wv.shape[1], "dtype": self.x.dtype}


def problem(sizes: list[int], d: int, seed: int = SEED) -> Problem:
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor(sizes)
    x = torch.randn(int(counts.sum()), d, generator=g)
    Wq, Wk, Wv = (torch.randn(d, d, generator=g) / d**0.5 for _ in range(3))
    ptr = [0, *torch.cumsum(counts, 0).tolist()]
    return Problem(x, torch.repeat_interleave(torch.arange(len(sizes)), counts), ptr, Wq, Wk, Wv)


def random_sizes(graphs: int, low: int, high: int, seed: int = SEED) -> list[int]:
    return torch.randint(low, high + 1, (graphs,), generator=torch.Generator().manual_seed(seed)).tolist()


def elu1(u: Tensor) -> Tensor:
    return F.elu(u) + 1


def per_graph_loop(p: Problem) -> Tensor:
    """The naive baseline: dense ``φ(Q)φ(K)ᵀ`` attention graph by graph, in a Python loop."""
    outs = []
    for start, end in zip(p.ptr[:-1], p.ptr[1:], strict=True):
        X = p.x[start:end]
        A = elu1(X @ p.Wq) @ elu1(X @ p.Wk).T
        outs.append(A @ (X @ p.Wv) / A.sum(1, keepdim=True))
    return torch.cat(outs)


def padded_bmm(p: Problem) -> Tensor:
    """Pad every graph to the largest with ``to_dense_batch`` (zeros after φ); ``S = Kᵀ V``, ``Q S`` by ``bmm``."""
    from torch_geometric.utils import to_dense_batch

    q, k, v = elu1(p.x @ p.Wq), elu1(p.x @ p.Wk), p.x @ p.Wv
    Q, mask = to_dense_batch(q, p.batch)
    K, _ = to_dense_batch(k, p.batch)
    V, _ = to_dense_batch(v, p.batch)
    return torch.bmm(Q, torch.bmm(K.transpose(1, 2), V))[mask] / (q * K.sum(1)[p.batch]).sum(1, keepdim=True)


def segment(p: Problem) -> Tensor:
    return segment_linear_attention(p.x, p.batch, p.Wq, p.Wk, p.Wv)


def projections(p: Problem) -> Tensor:
    return p.x @ torch.cat([p.Wq, p.Wk, p.Wv], 1)


def speed_of_light(p: Problem) -> Tensor:
    """The projections plus two GEMMs of ``N m d_v`` multiply-adds each (``Φ_Kᵀ V`` and ``Φ_Q S``)."""
    qkv = projections(p)
    d = p.Wq.shape[1]
    q, k, v = qkv[:, :d], qkv[:, d : 2 * d], qkv[:, 2 * d :]
    return q @ (k.T @ v)


def _check(rec: Recorder, p: Problem, methods: dict[str, Any]) -> None:
    """Each method on the first :data:`CHECK_GRAPHS` graphs against the float64 dense reference."""
    rows = p.ptr[min(CHECK_GRAPHS, len(p.ptr) - 1)]
    sub = Problem(p.x[:rows], p.batch[:rows], p.ptr[: CHECK_GRAPHS + 1], p.Wq, p.Wk, p.Wv)
    ref = linear_attention_layer(sub.x.double(), sub.batch, sub.Wq.double(), sub.Wk.double(), sub.Wv.double())
    for name, fn in methods.items():
        rec.check(
            f"{name}, {len(sub.ptr) - 1} graphs, d={p.x.shape[1]} float32 vs dense float64 reference",
            [fn(sub)],
            [ref],
            identity_tolerance(torch.float32, max(b - a for a, b in zip(sub.ptr[:-1], sub.ptr[1:], strict=True))),
        )


def _time(rec: Recorder, p: Problem, method: str, fn: Any, **extra: Any) -> float:
    return rec.time(lambda: fn(p), method=method, pass_="forward", **p.shape, **extra)


def _target_a(rec: Recorder, sizes: Sizes) -> None:
    graphs, low, high, d = sizes.a
    p = problem(random_sizes(graphs, low, high), d)
    _check(rec, p, {SEGMENT: segment, LOOP: per_graph_loop, PADDED: padded_bmm})
    t = {
        m: _time(rec, p, m, fn, case="A")
        for m, fn in ((SEGMENT, segment), (LOOP, per_graph_loop), (PADDED, padded_bmm))
    }
    t[PROJECTIONS] = _time(rec, p, PROJECTIONS, projections, case="A")
    t[SPEED_OF_LIGHT] = _time(rec, p, SPEED_OF_LIGHT, speed_of_light, case="A")
    what = f"{graphs} graphs of {low}-{high} nodes, d={d} float32"
    details = {f"{m}_seconds": s for m, s in t.items()} | {
        "segment_over_speed_of_light": t[SEGMENT] / t[SPEED_OF_LIGHT]
    }
    rec.target(f"A: {LOOP} / {SEGMENT}, {what}", t[LOOP] / t[SEGMENT], 1.5, ">=", details)
    rec.target(f"A: {PADDED} / {SEGMENT}, {what}", t[PADDED] / t[SEGMENT], 1.5, ">=", details)


def _target_b(rec: Recorder, sizes: Sizes) -> None:
    graphs, low, high, d = sizes.b
    p = problem(random_sizes(graphs, low, high, SEED + 1), d)
    _check(rec, p, {SEGMENT: segment})
    seg, loop = (_time(rec, p, m, fn, case="B") for m, fn in ((SEGMENT, segment), (LOOP, per_graph_loop)))
    what = f"{graphs} graphs of {low}-{high} nodes, d={d} float32"
    rec.target(f"B: {LOOP} / {SEGMENT}, {what}", loop / seg, 10.0, ">=", {"segment_seconds": seg, "loop_seconds": loop})


def _target_c(rec: Recorder, sizes: Sizes) -> None:
    (g1, n1), (g2, n2), d = sizes.c
    p = problem([n1] * g1 + [n2] * g2, d, SEED + 2)
    _check(rec, p, {SEGMENT: segment, PADDED: padded_bmm})
    seg, pad = (_time(rec, p, m, fn, case="C") for m, fn in ((SEGMENT, segment), (PADDED, padded_bmm)))
    what = f"{g1} graphs of {n1} nodes + {g2} of {n2}, d={d} float32"
    rec.target(
        f"C: {PADDED} / {SEGMENT}, {what}", pad / seg, 2.0, ">=", {"segment_seconds": seg, "padded_seconds": pad}
    )


def _sweep(rec: Recorder, sizes: Sizes) -> None:
    """One graph of ``n`` nodes, ``d = 64``; target D is read off the sweep's (or its own) points."""
    d = 64
    times: dict[int, float] = {}
    for n in sorted({*sizes.sweep, *sizes.d}):
        p = problem([n], d, SEED + 3)
        if n <= sizes.dense_max_n:
            _check(rec, p, {SEGMENT: segment, DENSE: per_graph_loop})
            _time(rec, p, DENSE, per_graph_loop, case="sweep")
        times[n] = _time(rec, p, SEGMENT, segment, case="sweep")
        _time(rec, p, PROJECTIONS, projections, case="sweep")
    rec.skip(f"{DENSE} above n={sizes.dense_max_n}", "not run: n² scores in memory and time (one graph of n nodes)")
    small, large = sizes.d
    rec.target(
        f"D: {SEGMENT} time(n={large}) / time(n={small}), one graph, d={d} float32",
        times[large] / times[small],
        4.5,
        "<=",
        {"small_seconds": times[small], "large_seconds": times[large], "n_ratio": large / small},
    )


def run(rec: Recorder) -> None:
    """The whole suite, full or quick sizes per ``rec.quick``."""
    sizes = QUICK if rec.quick else FULL
    _target_a(rec, sizes)
    _target_b(rec, sizes)
    _target_c(rec, sizes)
    _sweep(rec, sizes)


def plot(results: dict[str, Any]) -> Figure:
    """Log-log time against ``n`` for one graph: dense attention grows like ``n²``, the segment path like ``n``."""
    from matplotlib.figure import Figure

    lines: dict[str, list[tuple[int, float]]] = {}
    for row in results["rows"]:
        if row.get("case") == "sweep":
            lines.setdefault(row["method"], []).append((row["n"], row["seconds"]))
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for method, points in lines.items():
        n, seconds = zip(*sorted(points), strict=True)
        ax.plot(
            n, seconds, marker="o", markersize=3, linestyle=":" if method == PROJECTIONS else "-", label=LABELS[method]
        )
    timing_axes(
        ax,
        results,
        "Linear attention over one graph, d = 64, float32",
        "nodes n (one graph)",
        "seconds per call (median)",
    )
    ax.legend(fontsize="small")
    return fig


SUITE = Suite("mpnn_vn", run, plot)

__all__ = ["FULL", "QUICK", "SUITE", "Sizes", "plot", "run"]
