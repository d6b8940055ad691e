"""The ``rfa`` benchmark suite (book/rfa.md): random-feature attention, every figure a ratio of one run.

float32 on CPU unless stated:

* **A** — features at ``n = 2000, N = 64, d = 8, M = 1000``:
  :func:`~attnverify.fast.random_feature_attention_features` (query-first, head-chunked) against the
  per-head loop of batched products a user writes first (target ``>= 3``); the chunk's scratch
  memory against 256 MB (target ``<= 1``); and, reported without a target, the ratio to one GEMM of
  the same flop count ``2 n M D (D + 2N)`` (the speed of light; the ``D``-wide inner products make
  the operation memory-bound on a CPU).
* **B** — the limit-kernel Gram of 200 x 200 input pairs at ``N = 16`` (biased ReLU, the
  bivariate-normal path): :func:`~attnverify.fast.limit_kernel_gram` against a loop over pairs
  (target ``>= 20``).

Both are read off sweeps (heads ``M`` for A, pairs per side for B) that end at the targets' sizes;
the figure plots the sweeps.

Each configuration is checked against the float64 reference first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from attnverify.benchmarks.runner import Recorder, Suite, measure, timing_axes
from attnverify.fast import limit_kernel_gram, random_feature_attention_features
from attnverify.fast import rfa as fast
from attnverify.reference import rfa as ref

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SEED = 0
CHECK_ROWS = 16
FEATURES = "random_feature_attention_features"
HEAD_LOOP = "per_head_loop"
GEMM = "one_gemm_same_flops"
GRAM = "limit_kernel_gram"
PAIR_LOOP = "per_pair_loop"
MEMORY_BUDGET = 256 * 2**20


@dataclass(frozen=True)
class Sizes:
    features: tuple[int, int, int, int]  # n, N, d, M (the target's sizes: the sweep's largest M)
    heads: tuple[int, ...]  # the M of the features sweep, ending at the target's
    gram: tuple[int, int, int]  # pairs per side, N, d (the target's sizes: the sweep's largest)
    pairs: tuple[int, ...]  # pairs per side of the Gram sweep, ending at the target's


FULL = Sizes(features=(2000, 64, 8, 1000), heads=(125, 250, 500, 1000), gram=(200, 16, 8), pairs=(25, 50, 100, 200))
QUICK = Sizes(features=(64, 8, 4, 16), heads=(4, 16), gram=(8, 4, 4), pairs=(4, 8))
LOOP_ROWS = 10
"""The per-pair loop is timed on this many rows of the Gram and scaled to all of them (it is linear in rows)."""


def head_loop(x0: Tensor, X: Tensor, W: Tensor) -> Tensor:
    """The naive baseline: one batched score and pooling product per head, in a Python loop."""
    xt0 = torch.cat([x0, torch.ones_like(x0[:, :1])], -1)
    Xt = torch.cat([X, torch.ones_like(X[..., :1])], -1)
    out = []
    for m in range(W.shape[0]):
        u = torch.bmm(Xt, (xt0 @ W[m])[:, :, None])[..., 0]  # (n, N)
        out.append(torch.bmm(torch.relu(u)[:, None, :], Xt)[:, 0] / X.shape[1])
    return torch.cat(out, -1)


def _bench_features(rec: Recorder, sizes: Sizes) -> None:
    n, N, d, M = sizes.features
    D = d + 1
    g = torch.Generator().manual_seed(SEED)
    x0, X = (t.float() for t in ref.sample_inputs(n, N, d, g))
    W_all = ref.draw_weights(M, d, 0.25, "biased", g).float()
    truth = ref.features(x0[:CHECK_ROWS].double(), X[:CHECK_ROWS].double(), W_all.double())
    rec.check(
        f"{FEATURES} float32",
        [random_feature_attention_features(x0[:CHECK_ROWS], X[:CHECK_ROWS], W_all)],
        [truth],
        1e-5,
    )
    rec.check(f"{HEAD_LOOP} float32", [head_loop(x0[:CHECK_ROWS], X[:CHECK_ROWS], W_all)], [truth], 1e-5)
    a = torch.randn(n, D + 2 * N, generator=g)
    for heads in sizes.heads:  # the last is the target's M
        W = W_all[:heads]
        shape = {"n": n, "batch_heads": heads, "dv": D, "dtype": torch.float32, "keys": N, "problem": "features"}
        t_fast = rec.time(
            lambda W=W: random_feature_attention_features(x0, X, W), method=FEATURES, pass_="forward", **shape
        )
        t_loop = rec.time(lambda W=W: head_loop(x0, X, W), method=HEAD_LOOP, pass_="forward", **shape)
        b = torch.randn(D + 2 * N, heads * D, generator=g)
        t_gemm = rec.time(lambda b=b: a @ b, method=GEMM, pass_="forward", **shape)
    details = {"fast_seconds": t_fast, "loop_seconds": t_loop, "gemm_seconds": t_gemm, "n": n, "N": N, "d": d, "M": M}
    rec.target(f"A: {HEAD_LOOP} / {FEATURES}", t_loop / t_fast, 3.0, ">=", details)
    chunk = max(1, fast.CHUNK_BYTES // (n * (D + N) * 4))
    scratch = n * min(chunk, M) * (D + N) * 4 * 2  # scores and their activation, one chunk at a time
    rec.target("A: head-chunk scratch memory / 256 MB", scratch / MEMORY_BUDGET, 1.0, "<=", {"bytes": scratch})
    rec.extra["speed_of_light"] = {"features_over_gemm": t_fast / t_gemm, "flops": 2 * n * M * D * (D + 2 * N)}


def _bench_gram(rec: Recorder, sizes: Sizes) -> None:
    pairs, N, d = sizes.gram
    g = torch.Generator().manual_seed(SEED + 1)
    x0, X = (t.float() for t in ref.sample_inputs(pairs, N, d, g))
    x0p, Xp = (t.float() for t in ref.sample_inputs(pairs, N, d, g))
    k = 4
    truth = torch.stack(
        [
            ref.limit_kernel(
                x0[:k].double(),
                X[:k].double(),
                x0p[j : j + 1].double().expand(k, -1),
                Xp[j : j + 1].double().expand(k, -1, -1),
                0.25,
                "biased",
            )
            for j in range(k)
        ],
        1,
    )
    rec.check(f"{GRAM} float32", [limit_kernel_gram(x0[:k], X[:k], x0p[:k], Xp[:k], mean="biased")], [truth], 1e-4)

    def pair_loop(p: int, rows: int) -> Tensor:
        """The first ``rows`` rows of the ``p x p`` Gram, one :func:`limit_kernel_gram` call per pair."""
        return torch.stack(
            [
                torch.cat(
                    [
                        limit_kernel_gram(x0[i : i + 1], X[i : i + 1], x0p[j : j + 1], Xp[j : j + 1], mean="biased")
                        for j in range(p)
                    ],
                    1,
                )
                for i in range(rows)
            ]
        )

    for p in sizes.pairs:  # the last is the target's size
        rows = min(LOOP_ROWS, p)
        shape = {"n": p, "batch_heads": p, "dv": d + 1, "dtype": torch.float32, "keys": N, "problem": "gram"}
        t_gram = rec.time(
            lambda p=p: limit_kernel_gram(x0[:p], X[:p], x0p[:p], Xp[:p], mean="biased"),
            method=GRAM,
            pass_="forward",
            **shape,
        )
        scaled = measure(lambda p=p, rows=rows: pair_loop(p, rows), min_run_time=rec.min_run_time) * p / rows
        t_loop = rec.record(scaled, method=PAIR_LOOP, pass_="forward", **shape)
    rec.target(
        f"B: {PAIR_LOOP} / {GRAM}", t_loop / t_gram, 20.0, ">=", {"gram_seconds": t_gram, "loop_seconds": t_loop}
    )


def run(rec: Recorder) -> None:
    sizes = QUICK if rec.quick else FULL
    _bench_features(rec, sizes)
    _bench_gram(rec, sizes)


LABELS = {
    FEATURES: "query-first, head-chunked (ours)",
    HEAD_LOOP: "per-head loop of batched products",
    GEMM: "one GEMM of the same flops (speed of light)",
    GRAM: "limit-kernel Gram (ours)",
    PAIR_LOOP: "per-pair loop (10 rows, scaled)",
}


def plot(results: dict[str, Any]) -> Figure:
    """Seconds against heads ``M`` for the features (left) and against pairs per side for the Gram (right)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    panels = (
        ("features", "batch_heads", "Features, n = {n}, N = {keys}, d = {d}, float32", "heads M"),
        ("gram", "n", "Biased limit-kernel Gram, N = {keys}, d = {d}, float32", "input pairs per side"),
    )
    for ax, (problem, x, title, xlabel) in zip(fig.subplots(1, 2), panels, strict=True):
        rows = [r for r in results["rows"] if r.get("problem") == problem]
        for method in dict.fromkeys(r["method"] for r in rows):
            points = sorted((r[x], r["seconds"]) for r in rows if r["method"] == method)
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=LABELS[method])
        first = rows[0]
        timing_axes(
            ax,
            results,
            title.format(n=first["n"], keys=first["keys"], d=first["dv"] - 1),
            xlabel,
            "seconds per call (median)",
        )
        ax.legend(fontsize="small")
    return fig


SUITE = Suite("rfa", run, plot)

__all__ = ["FULL", "QUICK", "SUITE", "Sizes", "plot", "run"]
