"""The ``lla`` benchmark suite (book/lla.md, "The kernel"): every figure a ratio of one run.

CPU, float32, ``B = 1``, ``H = 4``, ``D = Dv = 64``, ``lam = 1`` (quick: ``H = 2``, ``D = Dv = 16``, short ``T``):

* **A, memory** — peak extra memory of :func:`~attnverify.fast.local_linear_attention` at ``T = 4096`` over
  that of a vectorized reference that materializes every ``Sigma_i`` (``T x D x D`` per head); target
  ``<= 1/8``.  Measured as the growth of the peak resident set (``VmHWM``) of a fresh spawned child
  process over its size once the inputs exist.
* **B, time** — fast forward time over the materializing reference's, ``T = 4096``; target ``<= 1``.
* **C, scaling** — fast forward time at ``T = 8192`` over ``T = 4096``; target ``<= 4.5`` (quadratic).  The two
  lengths are timed in turn, ``REPEATS`` pairs after a warm-up call of each, and C is the median of the pairs'
  ratios: a slow phase of a shared machine slows both calls of a pair, not one length's whole measurement.
  The materialized reference is called in the same rounds, and B is the median of each round's ratio.
* **CG iterations** — for ``lam in {1e-3, 1e-2, 0.1, 1, 10}``, the fewest ``cg_iters`` whose output is within
  1e-4 of the direct solver's (details, no target).

Each configuration is checked against the float64 per-query solve on its first tokens first.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import statistics
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from attnverify.benchmarks.runner import Recorder, Suite, interleaved, timing_axes
from attnverify.fast import local_linear_attention
from attnverify.fast.lla import ConvergenceWarning
from attnverify.reference.lla import local_linear_attention as reference_lla

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SEED = 0
LAM = 1.0
CHECK_T = 96
"""Tokens compared against the float64 per-query solve (causal: the first outputs depend on nothing later)."""
CHECK_TOL = 1e-4
"""float32 at lam >= 0.1 against float64 (book/lla.md, "The claims")."""
REPEATS = 5
"""Interleaved rounds (fast at T and 2T, the materialized reference at T) behind B and C."""
FAST = "local_linear_attention (blockwise, CG)"
MATERIALIZED = "materialized Sigma_i reference"


@dataclass(frozen=True)
class Sizes:
    heads: int
    d: int
    t: int
    t_long: int
    cg_t: int


FULL = Sizes(heads=4, d=64, t=4096, t_long=8192, cg_t=512)
QUICK = Sizes(heads=1, d=8, t=128, t_long=256, cg_t=32)


def _inputs(heads: int, t: int, d: int) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(SEED)
    return tuple(torch.randn(1, heads, t, d, generator=g) for _ in range(3))  # type: ignore[return-value]


def materialized_lla(q: Tensor, k: Tensor, v: Tensor, lam: float) -> Tensor:
    """LLA with every ``Sigma_i`` formed at once: ``S_i = sum_j w_ij k_j k_j^T`` as one ``(T, T) @ (T, D^2)``
    product, then a batched Cholesky solve; memory ``O(T D^2 + T^2)`` per head."""
    t, d = q.shape[-2], q.shape[-1]
    logits = (q @ k.transpose(-1, -2)) / math.sqrt(d)
    logits = logits.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
    w = torch.exp(logits - logits.amax(-1, keepdim=True))  # (..., T, T)
    omega = w.sum(-1)
    mut = w @ k
    outer = (k[..., :, None] * k[..., None, :]).reshape(*k.shape[:-1], d * d)  # (..., T, D^2)
    s2 = (w @ outer).reshape(*q.shape[:-1], d, d)  # every Sigma_i's sum_j w k k^T
    qq = q[..., :, None] * q[..., None, :]
    sigma = (
        s2
        - q[..., :, None] * mut[..., None, :]
        - mut[..., :, None] * q[..., None, :]
        + omega[..., None, None] * qq
        + lam * omega[..., None, None] * torch.eye(d)
    )
    mu = mut - omega[..., None] * q
    rho = torch.cholesky_solve(mu[..., None], torch.linalg.cholesky(sigma))[..., 0]
    delta = omega - (mu * rho).sum(-1)
    coef = w * (1 - rho @ k.transpose(-1, -2) + (rho * q).sum(-1, keepdim=True))
    return (coef @ v) / delta[..., None]


def _high_water_rss() -> int:
    """This process's peak resident set in bytes (``VmHWM``).  Not ``ru_maxrss``: Linux carries that over
    ``exec`` from the parent, so a child spawned by a large process would see no growth at all."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _peak_child(which: str, heads: int, t: int, d: int, queue: Any) -> None:
    """In a fresh process: peak RSS growth (bytes) of one forward over the RSS once the inputs exist."""
    torch.set_num_threads(1)
    q, k, v = _inputs(heads, t, d)
    (local_linear_attention if which == FAST else materialized_lla)(q[..., :8, :], k[..., :8, :], v[..., :8, :], LAM)
    before = _high_water_rss()
    (local_linear_attention if which == FAST else materialized_lla)(q, k, v, LAM)
    queue.put(_high_water_rss() - before)


def peak_extra_memory(which: str, heads: int, t: int, d: int) -> int:
    """Peak extra resident memory (bytes) of ``which`` at this size, measured in a spawned child."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_child, args=(which, heads, t, d, queue))
    proc.start()
    while True:
        try:
            out = int(queue.get(timeout=2))
            break
        except Exception as exc:  # queue.Empty: keep waiting while the child lives
            if not proc.is_alive():
                raise RuntimeError(f"memory probe of {which} exited with code {proc.exitcode}") from exc
    proc.join(timeout=60)
    return out


def _check(rec: Recorder, q: Tensor, k: Tensor, v: Tensor, method: str, **kw: Any) -> None:
    n = min(CHECK_T, q.shape[-2])
    sl = (slice(None), slice(0, 1), slice(0, n))
    out = (
        local_linear_attention(q[sl], k[sl], v[sl], LAM, **kw)
        if method == FAST
        else materialized_lla(q[sl], k[sl], v[sl], LAM)
    )
    ref = reference_lla(q[sl].double(), k[sl].double(), v[sl].double(), LAM)
    rec.check(
        f"{method}, first head, T={n} D={q.shape[-1]} float32 vs per-query solve float64", [out], [ref], CHECK_TOL
    )


def _cg_iterations(sizes: Sizes) -> dict[str, int | None]:
    q, k, v = _inputs(1, sizes.cg_t, sizes.d)
    needed: dict[str, int | None] = {}
    for lam in (1e-3, 1e-2, 0.1, 1.0, 10.0):
        direct = local_linear_attention(q.double(), k.double(), v.double(), lam, solver="direct")
        found = None
        for iters in (1, 2, 4, 8, 16, 32, 64, 128, 256):
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                out = local_linear_attention(q.double(), k.double(), v.double(), lam, cg_iters=iters)
            if float((out - direct).abs().amax() / direct.abs().amax()) <= CHECK_TOL:
                found = iters
                break
        needed[f"{lam:g}"] = found
    return needed


def run(rec: Recorder) -> None:
    """The whole suite, full or quick sizes per ``rec.quick``."""
    sizes = QUICK if rec.quick else FULL
    q, k, v = _inputs(sizes.heads, sizes.t, sizes.d)
    _check(rec, q, k, v, FAST)
    _check(rec, q, k, v, MATERIALIZED)
    shape: dict[str, Any] = {"batch_heads": sizes.heads, "dv": sizes.d, "dtype": torch.float32}
    q2, k2, v2 = _inputs(sizes.heads, sizes.t_long, sizes.d)
    _check(rec, q2, k2, v2, FAST)
    short, long, reference = interleaved(
        [
            lambda: local_linear_attention(q, k, v, LAM),
            lambda: local_linear_attention(q2, k2, v2, LAM),
            lambda: materialized_lla(q, k, v, LAM),
        ],
        REPEATS,
    )
    fast = rec.record(statistics.median(short), method=FAST, pass_="forward", n=sizes.t, **shape)
    slow = rec.record(statistics.median(long), method=FAST, pass_="forward", n=sizes.t_long, **shape)
    naive = rec.record(statistics.median(reference), method=MATERIALIZED, pass_="forward", n=sizes.t, **shape)
    where = f"B=1 H={sizes.heads} T={sizes.t} D=Dv={sizes.d} lam={LAM:g} float32"
    if rec.quick:
        rec.skip("A: peak extra memory", "quick run: the quick sizes are below the resolution of the peak RSS")
    else:
        mem_fast = peak_extra_memory(FAST, sizes.heads, sizes.t, sizes.d)
        mem_naive = peak_extra_memory(MATERIALIZED, sizes.heads, sizes.t, sizes.d)
        sigma_bytes = sizes.heads * sizes.t * sizes.d * sizes.d * 4  # the reference holds every Σ_i at once
        valid = mem_naive >= sigma_bytes  # a probe that saw less than Σ measured nothing: NaN, never met
        rec.target(
            f"A: peak extra memory, fast / materialized reference, {where}",
            mem_fast / mem_naive if valid else math.nan,
            1 / 8,
            "<=",
            {
                "fast_bytes": mem_fast,
                "materialized_bytes": mem_naive,
                "sigma_bytes": sigma_bytes,
                "measured_as": "peak RSS growth, spawned child",
            },
        )
    rec.target(
        f"B: time, fast / materialized reference, {where}, median of {REPEATS} interleaved rounds",
        statistics.median(a / b for a, b in zip(short, reference, strict=True)),
        1.0,
        "<=",
        {"fast_seconds": short, "materialized_seconds": reference, "ratio_of_medians": fast / naive},
    )
    ratios = [b / a for a, b in zip(short, long, strict=True)]
    rec.target(
        f"C: fast time T={sizes.t_long} / T={sizes.t}, H={sizes.heads} D=Dv={sizes.d} float32, "
        f"median of {REPEATS} interleaved pairs",
        statistics.median(ratios),
        4.5,
        "<=",
        {
            "seconds_short": short,
            "seconds_long": long,
            "pair_ratios": ratios,
            "ratio_of_medians": slow / fast,
        },
    )
    rec.extra["cg_iterations_to_1e-4_vs_direct"] = {"T": sizes.cg_t, "D": sizes.d, "needed": _cg_iterations(sizes)}


def plot(results: dict[str, Any]) -> Figure:
    """Seconds per forward of each method at each ``T`` (log-log), with the peak extra memory of target A
    beside it when the run measured it."""
    from matplotlib.figure import Figure

    memory = next((t for t in results["targets"] if t["name"].startswith("A:")), None)
    fig = Figure(figsize=(10 if memory else 7, 4), layout="constrained")
    ax, *rest = fig.subplots(1, 2 if memory else 1, squeeze=False)[0]
    lines: dict[str, list[tuple[int, float]]] = {}
    for row in results["rows"]:
        lines.setdefault(row["method"], []).append((row["n"], row["seconds"]))
    for method, points in lines.items():
        n, seconds = zip(*sorted(points), strict=True)
        ax.plot(n, seconds, marker="o", label=method)
    if len(fast := sorted(lines.get(FAST, []))) > 1:  # the quadratic of target C through the first point
        (n0, s0), n = fast[0], [p[0] for p in fast]
        ax.plot(n, [s0 * (x / n0) ** 2 for x in n], ":", color="0.5", label="∝ T² (target C allows 4.5× per doubling)")
    timing_axes(ax, results, "Local linear attention, float32", "sequence length T", "seconds per forward (median)")
    ax.legend(fontsize="small")
    if memory:
        details = memory["details"]
        mib = [details["fast_bytes"] / 2**20, details["materialized_bytes"] / 2**20]
        rest[0].bar(["blockwise, CG", "materialized Σ_i"], mib, color=["C0", "C1"])
        rest[0].set_yscale("log")
        rest[0].set_ylabel("peak extra memory (MiB)")
        where = memory["name"].split(", ", 2)[-1]
        rest[0].set_title(f"{where}\n{details['measured_as']}; ratio {memory['ratio']:.3g}", fontsize="medium")
    return fig


SUITE = Suite("lla", run, plot)

__all__ = ["FULL", "QUICK", "SUITE", "Sizes", "materialized_lla", "peak_extra_memory", "plot", "run"]
