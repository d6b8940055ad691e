"""The ``dsf`` benchmark suite (book/dsf.md): the chunked kernels of the DSF family, every figure a ratio of one run.

CPU float32, ``B = 1``, ``H = 8``, ``Dk = Dv = 64``, gates ``log σ(x) / 16`` per key channel:

* **A** — :func:`~attnverify.fast.gated_linear_attention` forward over the step-by-step recurrence
  (``reference.dsf.gla_recurrent``) at ``T = 8192``; target ``>= 8``.
* **B** — the masked quadratic form (``O(T² Dk)``, in blocks of query rows) over the fast forward at
  ``T = 4096``; target ``>= 30``.
* **C** — fast forward time at ``T = 16384`` over ``T = 4096``; target ``<= 4.5`` (linear: 4).
* **D** — fast forward with per-key gates over the no-decay case (plain causal linear attention) at
  ``T = 8192``; target ``<= 2``.
* **E** — forward+backward over forward at ``T = 8192``; target ``<= 3.5``.
* **F** — :func:`~attnverify.fast.selective_scan` at ``(B, D, N, L) = (1, 256, 16, 8192)``: the step loop
  (``reference.dsf.selective_scan``) over the chunked scan; target ``>= 3``.  Details: the scan's time over a
  ``clone()`` of one ``(B, D, L, N)`` float32 tensor (the traffic a scan that formed it would need).
* **GPU** (CUDA only) — the Triton GLA kernel against flash-linear-attention's ``chunk_gla``: not measured by
  this suite yet (it needs a GPU and flash-linear-attention), recorded as skipped.

Each configuration is checked against a float64 reference before it is timed.  The fast kernels are timed
with ``blocked_autorange``; the baselines that take seconds per call (the step loops, the quadratic form) are
timed over a few calls with ``time.perf_counter`` (:data:`SLOW_REPEATS`), and the quadratic form's timed
output is the one checked.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attnverify.benchmarks.runner import Recorder, Suite, interleaved, timing_axes
from attnverify.fast import gated_linear_attention, selective_scan
from attnverify.numerics import identity_tolerance
from attnverify.reference import dsf as ref

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SEED = 0
H, DK, DV = 8, 64, 64
CHUNKED_F32 = 1e-4
"""float32 tolerance of the chunked kernels against the recurrence (claim ``gla.chunked_equals_recurrent``)."""
QUADRATIC_ROWS = 64
"""Query rows per block of the masked quadratic baseline (its peak memory is ``H · rows · T · Dk`` floats)."""

SLOW_REPEATS = {"recurrence": 2, "quadratic": 1, "scan loop": 3}
"""Calls timed per slow baseline (median): each takes seconds, so its spread is far below the targets' margins."""

FAST = "gated_linear_attention"
NO_DECAY = "gated_linear_attention, no decay"
RECURRENT = "recurrence (step loop)"
QUADRATIC = "masked quadratic form"
SCAN = "selective_scan"
SCAN_LOOP = "selective scan step loop"
COPY = "clone of (B, D, L, N)"


@dataclass(frozen=True)
class Sizes:
    sweep: tuple[int, ...]
    target_a: int
    target_b: int
    target_c: tuple[int, int]
    scan: tuple[int, int, int, int]  # (B, D, N, L)


FULL = Sizes(
    sweep=(1024, 2048, 4096, 8192, 16384), target_a=8192, target_b=4096, target_c=(4096, 16384), scan=(1, 256, 16, 8192)
)
QUICK = Sizes(sweep=(256, 512, 1024), target_a=512, target_b=256, target_c=(256, 1024), scan=(1, 32, 16, 512))


def gla_inputs(T: int, *, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Seeded ``q, k ~ N(0, 1/8²)``, ``v ~ N(0, 1)``, per-key gates ``log σ(x) / 16`` (as in GLA's code)."""
    gen = torch.Generator().manual_seed(SEED)
    q, k = (torch.randn(1, H, T, DK, generator=gen) / 8 for _ in range(2))
    v = torch.randn(1, H, T, DV, generator=gen)
    g = F.logsigmoid(torch.randn(1, H, T, DK, generator=gen)) / 16
    return q.to(dtype), k.to(dtype), v.to(dtype), g.to(dtype)


def quadratic_blocked(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor) -> Tensor:
    """The masked quadratic GLA form ``Σ_{j<=t} (Σ_c q_tc k_jc e^{G_tc - G_jc}) v_j``, in blocks of query rows."""
    G = log_decay.cumsum(2)
    T = q.shape[2]
    outs = []
    for a in range(0, T, QUADRATIC_ROWS):
        b = min(a + QUADRATIC_ROWS, T)
        rows = torch.arange(a, b)[:, None] >= torch.arange(b)[None, :]
        gap = (G[:, :, a:b, None, :] - G[:, :, None, :b, :]).masked_fill(~rows[:, :, None], -torch.inf)
        scores = (q[:, :, a:b, None, :] * k[:, :, None, :b, :] * torch.exp(gap)).sum(-1)
        outs.append(scores @ v[:, :, :b])
    return torch.cat(outs, 2)


def _time_slow(rec: Recorder, fn: Callable[[], Any], repeats: int, **row: Any) -> tuple[float, Any]:
    """Median seconds of ``repeats`` calls of a slow baseline (no warm-up: seconds per call), recorded; and its
    last output."""
    outs: list[Any] = []
    (times,) = interleaved([lambda: outs.append(fn())], repeats, warmup=False)
    return rec.record(statistics.median(times), repeats=repeats, **row), outs[-1]


def _check_gla(rec: Recorder, T: int) -> None:
    """The float32 forward (first head, full length) and a float64 backward (short) against references."""
    q, k, v, g = gla_inputs(T)
    out = gated_linear_attention(q[:, :1], k[:, :1], v[:, :1], g[:, :1])
    truth = ref.gla_recurrent(*(t[:, :1].double() for t in (q, k, v, g)))[0]
    rec.check(f"{FAST} forward float32 T={T} vs the float64 recurrence", [out], [truth], CHUNKED_F32)


def _check_gla_backward(rec: Recorder) -> None:
    q, k, v, g = (t[:, :1, :200].double().requires_grad_() for t in gla_inputs(200))
    grad = torch.randn(1, 1, 200, DV, dtype=torch.float64, generator=torch.Generator().manual_seed(SEED))
    fast = torch.autograd.grad(gated_linear_attention(q, k, v, g), (q, k, v, g), grad)
    want = torch.autograd.grad(ref.gla_recurrent(q, k, v, g)[0], (q, k, v, g), grad)
    rec.check(
        f"{FAST} backward float64 T=200 (dq, dk, dv, d log_decay) vs autograd of the recurrence", fast, want, 1e-10
    )


def _shape(T: int) -> dict[str, Any]:
    return {"n": T, "batch_heads": H, "dv": DV, "dtype": torch.float32}


def _gla_point(rec: Recorder, T: int, with_backward: bool) -> dict[tuple[str, str], float]:
    """Fast forward with and without gates at length ``T`` (and forward+backward), after a correctness check."""
    q, k, v, g = gla_inputs(T)
    _check_gla(rec, T)
    seconds = {
        (FAST, "forward"): rec.time(
            lambda: gated_linear_attention(q, k, v, g), method=FAST, pass_="forward", **_shape(T)
        ),
        (NO_DECAY, "forward"): rec.time(
            lambda: gated_linear_attention(q, k, v), method=NO_DECAY, pass_="forward", **_shape(T)
        ),
    }
    if with_backward:
        leaves = [t.clone().requires_grad_() for t in (q, k, v, g)]
        grad = torch.ones_like(v)
        seconds[FAST, "forward+backward"] = rec.time(
            lambda: torch.autograd.grad(gated_linear_attention(*leaves), leaves, grad),
            method=FAST,
            pass_="forward+backward",
            **_shape(T),
        )
    return seconds


def _gla(rec: Recorder, sizes: Sizes) -> None:
    seconds = {(m, p, T): s for T in sizes.sweep for (m, p), s in _gla_point(rec, T, sizes.target_a == T).items()}
    T = sizes.target_a
    q, k, v, g = gla_inputs(T)
    loop, _ = _time_slow(
        rec,
        lambda: ref.gla_recurrent(q, k, v, g),
        SLOW_REPEATS["recurrence"],
        method=RECURRENT,
        pass_="forward",
        **_shape(T),
    )
    fast = seconds[FAST, "forward", T]
    rec.target(f"A: recurrence / fast forward, T={T}", loop / fast, 8.0, ">=", {"recurrence_s": loop, "fast_s": fast})
    rec.target(
        f"D: per-key decay / no decay, T={T}",
        fast / seconds[NO_DECAY, "forward", T],
        2.0,
        "<=",
        {"decay_s": fast, "no_decay_s": seconds[NO_DECAY, "forward", T]},
    )
    both = seconds[FAST, "forward+backward", T]
    rec.target(
        f"E: forward+backward / forward, T={T}", both / fast, 3.5, "<=", {"forward_s": fast, "forward_backward_s": both}
    )
    short, long = sizes.target_c
    rec.target(
        f"C: fast forward T={long} / T={short}",
        seconds[FAST, "forward", long] / seconds[FAST, "forward", short],
        4.5,
        "<=",
        {"short_s": seconds[FAST, "forward", short], "long_s": seconds[FAST, "forward", long]},
    )
    T = sizes.target_b
    q, k, v, g = gla_inputs(T)
    quad, out = _time_slow(
        rec,
        lambda: quadratic_blocked(q, k, v, g),
        SLOW_REPEATS["quadratic"],
        method=QUADRATIC,
        pass_="forward",
        **_shape(T),
    )
    rec.check(
        f"{QUADRATIC} float32 T={T} (the timed output) vs the fast forward",
        [out],
        [gated_linear_attention(q, k, v, g)],
        CHUNKED_F32,
    )
    rec.target(
        f"B: masked quadratic / fast forward, T={T}",
        quad / seconds[FAST, "forward", T],
        30.0,
        ">=",
        {"quadratic_s": quad, "fast_s": seconds[FAST, "forward", T]},
    )


def scan_inputs(bt: int, d: int, n: int, L: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Seeded Mamba-style inputs: ``Δ = softplus(x - 4)``, ``A = -(1..N)`` per channel (S4D-real init), ``D``."""
    gen = torch.Generator().manual_seed(SEED)
    u = torch.randn(bt, d, L, generator=gen)
    delta = F.softplus(torch.randn(bt, d, L, generator=gen) - 4)
    A = -torch.arange(1, n + 1, dtype=torch.float32).expand(d, n).contiguous()
    B, C = (torch.randn(bt, n, L, generator=gen) for _ in range(2))
    return u, delta, A, B, C, torch.randn(d, generator=gen)


def _scan(rec: Recorder, sizes: Sizes) -> None:
    bt, d, n, L = sizes.scan
    args = scan_inputs(bt, d, n, L)
    u, delta, A, B, C, D = args
    u8, delta8, A8, D8 = u[:, :8].double(), delta[:, :8].double(), A[:8].double(), D[:8].double()  # first 8 channels
    rec.check(
        f"{SCAN} float32 (B, D, N, L)={sizes.scan}, first 8 channels, vs the float64 step loop",
        [selective_scan(*args)[:, :8]],
        [ref.selective_scan(u8, delta8, A8, B.double(), C.double(), D8)],
        identity_tolerance(torch.float32, L),
    )
    shape: dict[str, Any] = {"n": L, "batch_heads": bt * d, "dv": n, "dtype": torch.float32}
    fast = rec.time(lambda: selective_scan(*args), method=SCAN, pass_="forward", **shape)
    loop, _ = _time_slow(
        rec, lambda: ref.selective_scan(*args), SLOW_REPEATS["scan loop"], method=SCAN_LOOP, pass_="forward", **shape
    )
    big = torch.randn(bt, d, L, n)
    copy = rec.time(big.clone, method=COPY, pass_="forward", **shape)
    rec.target(
        f"F: selective scan step loop / chunked, (B, D, N, L)={sizes.scan}",
        loop / fast,
        3.0,
        ">=",
        {"loop_s": loop, "fast_s": fast, "copy_BDLN_s": copy, "fast_over_copy": fast / copy},
    )


def run(rec: Recorder) -> None:
    """The whole suite, full or quick sizes per ``rec.quick``."""
    sizes = QUICK if rec.quick else FULL
    _check_gla_backward(rec)
    _gla(rec, sizes)
    _scan(rec, sizes)
    rec.skip(
        "GPU: Triton GLA forward+backward vs flash-linear-attention chunk_gla",
        "not measured by this suite yet: needs CUDA and flash-linear-attention",
    )


def plot(results: dict[str, Any]) -> Figure:
    """Log-log forward time against ``T`` (GLA, ``H = 8``, ``Dk = Dv = 64``), one line or point per method."""
    from matplotlib.figure import Figure

    lines: dict[str, list[tuple[int, float]]] = {}
    for row in results["rows"]:
        if row["pass"] == "forward" and row["batch_heads"] == H and row["dv"] == DV:
            lines.setdefault(row["method"], []).append((row["n"], row["seconds"]))
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for method, points in lines.items():
        n, seconds = zip(*sorted(points), strict=True)
        ax.plot(n, seconds, marker="o", markersize=4, label=method)
    timing_axes(
        ax,
        results,
        f"Gated linear attention, B=1, H={H}, Dk=Dv={DK}, float32",
        "sequence length T",
        "seconds per forward (median)",
    )
    ax.legend(fontsize="small")
    return fig


SUITE = Suite("dsf", run, plot)

__all__ = ["FULL", "QUICK", "SUITE", "Sizes", "plot", "run"]
