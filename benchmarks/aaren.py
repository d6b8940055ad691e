"""The ``aaren`` benchmark suite (book/aaren.md, "Benchmarks"): every figure a ratio of one run.

* **A** — forward of :func:`~attnverify.fast.prefix_softmax_attention` at ``B·H = 16``,
  ``N = 16384``, ``Dv = 64`` over ``torch.cumsum(values, dim=-2)`` on the same tensor (the
  scan's floor on CPU); target ``<= 3``.  Details: the ratio to ``values.clone()`` and forward+backward.
* **B** — the masked ``O(N^2)`` reference over the fast forward at ``B·H = 4``, ``N = 4096``; target ``>= 100``.
* **C** — :meth:`~attnverify.fast.Aaren.step` latency after 65,536 tokens over after 1,024
  (``d_model = 64``, 4 heads, batch 1 and 8); target ``<= 1.2``.
* **D** (CUDA only) — the Triton kernel's achieved bandwidth at ``B·H = 16``, ``N = 65536``, ``Dv = 64``
  (float32, bfloat16), counting the minimal traffic ``B·H·N·(2 Dv + 1)`` elements, over a same-device
  copy's; target ``>= 0.6``.  16 rows cannot fill a GPU, so this measures the sequence-tiled path
  (the details record the tiles per program the kernel chose).
* **Sweep** — forward (and forward+backward for the fast path) time against ``N = 2^8 .. 2^16`` for
  the fast path, ``torch.cumsum``, ``clone``, the masked quadratic reference, SDPA with a query
  of ones and the Python-loop ``sequential_scan``; :func:`plot` draws it.

Float32 on CPU unless stated.  Each fast configuration is checked against a float64 reference first.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attnverify.benchmarks import runner
from attnverify.benchmarks.runner import Recorder, Suite, timing_axes
from attnverify.fast import Aaren, AarenState, prefix_softmax_attention
from attnverify.numerics import identity_tolerance
from attnverify.reference.aaren import causal_constant_query_attention, sequential_scan

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SEED = 0
SWEEP_BH = 16
"""Batch·heads of the sweep and of target A."""
DV = 64
CHECK_ROWS = 2
"""Rows of each configuration compared against float64 before it is timed."""
CHECK_QUADRATIC_MAX_N = 4096
"""Longest check against the masked quadratic reference; longer forwards use ``sequential_scan``."""
QUADRATIC_PEAK = 3
"""Peak memory of a quadratic baseline, in ``B·H·N^2`` float32 score matrices (measured: 13 GB at N=8192)."""
D_MODEL, HEADS = 64, 4

FAST = "prefix_softmax_attention"
CUMSUM = "cumsum"
CLONE = "clone"
QUADRATIC = "quadratic_reference"
SEQUENTIAL = "sequential_scan"
SDPA = "sdpa"
STEP = "aaren_step"
LABELS = {
    FAST: "prefix_softmax_attention (chunked scan)",
    CUMSUM: "torch.cumsum (speed of light)",
    CLONE: "values.clone() (copy)",
    QUADRATIC: "masked O(N²) reference",
    SEQUENTIAL: "sequential_scan (Python loop)",
    SDPA: "SDPA, causal (O(N²))",
}


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one run (full or quick)."""

    sweep: tuple[int, ...]
    quadratic_max_n: int
    sequential_max_n: int
    target_a_n: int
    target_b: tuple[int, int]  # (batch·heads, N)
    stream_early: int
    stream_late: int
    stream_batches: tuple[int, ...]
    stream_block: int  # steps per timed call
    triton: tuple[int, int]  # (batch·heads, N)


FULL = Sizes(
    sweep=tuple(2**k for k in range(8, 17)),
    quadratic_max_n=2**13,
    sequential_max_n=2**10,
    target_a_n=2**14,
    target_b=(4, 4096),
    stream_early=1024,
    stream_late=65536,
    stream_batches=(1, 8),
    stream_block=64,
    triton=(16, 65536),
)
QUICK = Sizes(
    sweep=(2**8, 2**9, 2**10),
    quadratic_max_n=2**10,
    sequential_max_n=2**8,
    target_a_n=2**10,
    target_b=(4, 512),
    stream_early=16,
    stream_late=256,
    stream_batches=(1,),
    stream_block=8,
    triton=(8, 4096),
)


def _inputs(
    batch_heads: int, n: int, *, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> tuple[Tensor, Tensor]:
    """Seeded scores ``(BH, N)`` and values ``(BH, N, Dv)``, standard normal."""
    gen = torch.Generator().manual_seed(SEED)
    scores = torch.randn(batch_heads, n, generator=gen)
    values = torch.randn(batch_heads, n, DV, generator=gen)
    return scores.to(device, dtype), values.to(device, dtype)


def _describe(s: Tensor, v: Tensor) -> str:
    """``dtype device B·H N Dv`` of a configuration, for check names."""
    return f"{str(v.dtype).removeprefix('torch.')} {v.device.type} B·H={s.shape[0]} N={s.shape[-1]} Dv={v.shape[-1]}"


def _check_forward(rec: Recorder, s: Tensor, v: Tensor, backend: str | None = None) -> None:
    """Compare the forward on the first rows, at full length, with a float64 reference."""
    s, v = s[:CHECK_ROWS], v[:CHECK_ROWS]
    n = s.shape[-1]
    out = prefix_softmax_attention(s, v, backend=backend)
    reference = causal_constant_query_attention if n <= CHECK_QUADRATIC_MAX_N else sequential_scan
    ref = reference(s.cpu().double(), v.cpu().double())
    name = f"{FAST}[{backend or 'default'}] forward, {_describe(s, v)} vs {reference.__name__} float64"
    rec.check(name, [out], [ref], identity_tolerance(v.dtype, n))


def _check_backward(rec: Recorder, s: Tensor, v: Tensor) -> None:
    """Compare ``(dL/ds, dL/dv)`` on the first rows and at most 4096 tokens with autograd through float64."""
    n = min(s.shape[-1], CHECK_QUADRATIC_MAX_N)
    s, v = s[:CHECK_ROWS, :n], v[:CHECK_ROWS, :n]
    grad = torch.randn(v.shape, generator=torch.Generator().manual_seed(SEED), dtype=v.dtype)
    sg, vg = s.detach().requires_grad_(), v.detach().requires_grad_()
    fast = torch.autograd.grad(prefix_softmax_attention(sg, vg), (sg, vg), grad)
    s64, v64 = s.double().requires_grad_(), v.double().requires_grad_()
    ref = torch.autograd.grad(causal_constant_query_attention(s64, v64), (s64, v64), grad.double())
    name = f"{FAST} backward (ds, dv), {_describe(s, v)} vs autograd of {causal_constant_query_attention.__name__}"
    rec.check(name, fast, ref, identity_tolerance(v.dtype, n))


def _fits(batch_heads: int, n: int) -> bool:
    """Whether a quadratic baseline's peak memory fits in 80% of the available memory (unknown: yes)."""
    available = runner.available_memory()
    return available is None or QUADRATIC_PEAK * batch_heads * n * n * 4 <= 0.8 * available


def _sweep_point(rec: Recorder, sizes: Sizes, n: int) -> None:
    """Every method of the sweep at length ``n``: fast forward, fast forward+backward, baselines."""
    s, v = _inputs(SWEEP_BH, n)
    _check_forward(rec, s, v)
    _check_backward(rec, s, v)
    shape: dict[str, Any] = {"n": n, "batch_heads": SWEEP_BH, "dv": DV, "dtype": torch.float32}
    rec.time(lambda: prefix_softmax_attention(s, v), method=FAST, pass_="forward", **shape)
    sg, vg = s.clone().requires_grad_(), v.clone().requires_grad_()
    grad = torch.ones_like(v)
    rec.time(
        lambda: torch.autograd.grad(prefix_softmax_attention(sg, vg), (sg, vg), grad),
        method=FAST,
        pass_="forward+backward",
        **shape,
    )
    rec.time(lambda: torch.cumsum(v, dim=-2), method=CUMSUM, pass_="forward", **shape)
    rec.time(v.clone, method=CLONE, pass_="forward", **shape)
    if n <= sizes.sequential_max_n:
        rec.time(lambda: sequential_scan(s, v), method=SEQUENTIAL, pass_="forward", **shape)
    if n > sizes.quadratic_max_n:
        return
    if not _fits(SWEEP_BH, n):
        rec.skip(f"{QUADRATIC} and {SDPA} at N={n}", "not run: estimated peak memory exceeds 80% of available")
        return
    rec.time(lambda: causal_constant_query_attention(s, v), method=QUADRATIC, pass_="forward", **shape)
    query = torch.ones(SWEEP_BH, n, 1)
    keys = s[..., None]  # <1, k_i> = s_i
    rec.time(
        lambda: F.scaled_dot_product_attention(query, keys, v, is_causal=True, scale=1.0),
        method=SDPA,
        pass_="forward",
        **shape,
    )


def _seconds(rec: Recorder, method: str, pass_: str, n: int, batch_heads: int) -> float:
    """The recorded CPU timing of one configuration."""
    (row,) = (
        r
        for r in rec.rows
        if (r["method"], r["pass"], r["n"], r["batch_heads"], r["device"]) == (method, pass_, n, batch_heads, "cpu")
    )
    return float(row["seconds"])


def _sweep(rec: Recorder, sizes: Sizes) -> None:
    """Sweep ``N``; target A is read off its ``N = 16384`` point."""
    for n in sizes.sweep:
        _sweep_point(rec, sizes, n)
    bigger = [f"N={n}" for n in sizes.sweep if n > sizes.quadratic_max_n]
    if bigger:
        rec.skip(
            f"{QUADRATIC} and {SDPA} at {', '.join(bigger)}",
            f"not run: quadratic in memory and time (B·H·N² scores); capped at N={sizes.quadratic_max_n}",
        )
    n = sizes.target_a_n
    fast, cumsum, clone = (_seconds(rec, m, "forward", n, SWEEP_BH) for m in (FAST, CUMSUM, CLONE))
    fast_bwd = _seconds(rec, FAST, "forward+backward", n, SWEEP_BH)
    rec.target(
        f"A: {FAST} forward / torch.cumsum(values, dim=-2), B·H={SWEEP_BH} N={n} Dv={DV} float32",
        fast / cumsum,
        3.0,
        "<=",
        {
            "forward_seconds": fast,
            "cumsum_seconds": cumsum,
            "clone_seconds": clone,
            "ratio_vs_clone": fast / clone,
            "forward_backward_seconds": fast_bwd,
            "forward_backward_ratio_vs_cumsum": fast_bwd / cumsum,
        },
    )


def _target_b(rec: Recorder, sizes: Sizes) -> None:
    """Masked quadratic reference (float32) over the fast forward."""
    bh, n = sizes.target_b
    s, v = _inputs(bh, n)
    _check_forward(rec, s, v)
    shape: dict[str, Any] = {"n": n, "batch_heads": bh, "dv": DV, "dtype": torch.float32}
    fast = rec.time(lambda: prefix_softmax_attention(s, v), method=FAST, pass_="forward", **shape)
    quadratic = rec.time(lambda: causal_constant_query_attention(s, v), method=QUADRATIC, pass_="forward", **shape)
    rec.target(
        f"B: {QUADRATIC} / {FAST} forward, B·H={bh} N={n} Dv={DV} float32",
        quadratic / fast,
        100.0,
        ">=",
        {"forward_seconds": fast, "quadratic_seconds": quadratic},
    )


def _aaren_reference(model: Aaren, x: Tensor) -> Tensor:
    """Float64 outputs of ``model`` on ``x: (B, T, d_model)`` from its parameters and the masked reference."""
    ref = copy.deepcopy(model).double()
    x = x.double()
    k = ref.key(x).unflatten(-1, (ref.n_heads, ref.d_head))  # (B, T, H, d_head)
    v = ref.value(x).unflatten(-1, (ref.n_heads, ref.d_head))
    s = (k * ref.query).sum(-1) * ref.scale  # s_{t,h} = scale <k_{t,h}, q_h>: (B, T, H)
    o = causal_constant_query_attention(s.transpose(1, 2), v.transpose(1, 2))  # (B, H, T, d_head)
    return o.transpose(1, 2).flatten(-2)


def _check_step(rec: Recorder, model: Aaren, batch: int, tokens: int) -> None:
    """Stream ``tokens`` tokens through ``step`` from ``init_state``; compare with the float64 reference."""
    x = torch.randn(batch, tokens, D_MODEL, generator=torch.Generator().manual_seed(SEED))
    state = model.init_state(batch)
    ys = []
    for t in range(tokens):
        y, state = model.step(x[:, t], state)
        ys.append(y)
    name = f"Aaren.step streamed, float32 batch={batch} tokens={tokens} vs {causal_constant_query_attention.__name__}"
    rec.check(name, [torch.stack(ys, 1)], [_aaren_reference(model, x)], identity_tolerance(torch.float32, tokens))


def _advance(model: Aaren, state: AarenState, x: Tensor) -> AarenState:
    """Feed the tokens ``x: (T, B, d_model)`` through ``step``; return the final state."""
    for x_t in x:
        _, state = model.step(x_t, state)
    return state


def _stream(rec: Recorder, sizes: Sizes, model: Aaren, batch: int) -> None:
    """``step`` latency late in a stream over early in it, each timed when the stream reaches it."""
    _check_step(rec, model, batch, min(sizes.stream_early, 64))
    gen = torch.Generator().manual_seed(SEED)
    block = torch.randn(sizes.stream_block, batch, D_MODEL, generator=gen)
    state = model.init_state(batch)
    seen, latency = 0, {}
    for point in (sizes.stream_early, sizes.stream_late):
        state = _advance(model, state, torch.randn(point - seen, batch, D_MODEL, generator=gen))
        seen = point
        latency[point] = rec.time(
            functools.partial(_advance, model, state, block),
            method=STEP,
            pass_="step",
            n=point,
            batch_heads=batch * HEADS,
            dv=model.d_head,
            dtype=torch.float32,
            per_call=sizes.stream_block,
        )
    early, late = latency[sizes.stream_early], latency[sizes.stream_late]
    rec.target(
        f"C: Aaren.step latency after {sizes.stream_late} / after {sizes.stream_early} tokens, "
        f"batch {batch}, d_model={D_MODEL} heads={HEADS}",
        late / early,
        1.2,
        "<=",
        {"early_seconds": early, "late_seconds": late, "state_numel": sum(t.numel() for t in state)},
    )


def _target_c(rec: Recorder, sizes: Sizes) -> None:
    """Streaming: one ``Aaren(64, 4)``, each batch size streamed under ``torch.no_grad``."""
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = Aaren(D_MODEL, HEADS)
    with torch.no_grad():
        for batch in sizes.stream_batches:
            _stream(rec, sizes, model, batch)


def _triton_bandwidth(rec: Recorder, batch_heads: int, n: int, dtype: torch.dtype) -> None:
    """Triton kernel bandwidth, counting the minimal traffic, over a same-size copy's (CUDA)."""
    from attnverify.fast.triton.aaren import block_sizes, tiles_per_program

    s, v = _inputs(batch_heads, n, dtype=dtype, device="cuda")
    block_n, block_d = block_sizes(DV)
    tiles = -(-n // block_n)
    per_program = tiles_per_program(batch_heads * -(-DV // block_d), tiles, v.device)
    _check_forward(rec, s, v, backend="triton")
    shape: dict[str, Any] = {"n": n, "batch_heads": batch_heads, "dv": DV, "dtype": dtype, "device": "cuda"}
    kernel = rec.time(
        functools.partial(prefix_softmax_attention, s, v, backend="triton"), method=FAST, pass_="forward", **shape
    )
    copy_time = rec.time(v.clone, method=CLONE, pass_="forward", **shape)
    size = v.element_size()
    achieved = batch_heads * n * (2 * DV + 1) * size / kernel  # read scores and values, write outputs
    copy_bandwidth = 2 * v.numel() * size / copy_time  # read + write
    rec.target(
        f"D: Triton achieved / copy bandwidth, B·H={batch_heads} N={n} Dv={DV} {str(dtype).removeprefix('torch.')}",
        achieved / copy_bandwidth,
        0.6,
        ">=",
        {
            "kernel_seconds": kernel,
            "copy_seconds": copy_time,
            "achieved_gb_per_s": achieved / 1e9,
            "copy_gb_per_s": copy_bandwidth / 1e9,
            "tiles_per_program": per_program,
            "tiled": per_program < tiles,
        },
    )


def _target_d(rec: Recorder, sizes: Sizes) -> None:
    """Triton bandwidth in float32 and bfloat16; recorded as not run without CUDA."""
    if not torch.cuda.is_available():
        rec.skip("D: Triton bandwidth / copy bandwidth (float32, bfloat16)", "not run: no CUDA")
        return
    for dtype in (torch.float32, torch.bfloat16):
        _triton_bandwidth(rec, *sizes.triton, dtype)
        torch.cuda.empty_cache()


def run(rec: Recorder) -> None:
    """The whole suite, full or quick sizes per ``rec.quick``."""
    sizes = QUICK if rec.quick else FULL
    _sweep(rec, sizes)
    _target_b(rec, sizes)
    _target_c(rec, sizes)
    _target_d(rec, sizes)


def plot(results: dict[str, Any]) -> Figure:
    """Log-log time against ``N`` of the CPU sweep, one line per method.

    Dashed: forward+backward; dotted: the speed-of-light operations (``cumsum``, ``clone``).
    """
    from matplotlib.figure import Figure

    lines: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for row in results["rows"]:
        sweep = (row["device"], row["batch_heads"], row["dv"]) == ("cpu", SWEEP_BH, DV)
        if sweep and row["pass"] in ("forward", "forward+backward"):
            lines.setdefault((row["method"], row["pass"]), []).append((row["n"], row["seconds"]))
    fig = Figure(figsize=(10, 5), layout="constrained")
    ax = fig.add_subplot()
    for (method, pass_), points in lines.items():
        n, seconds = zip(*sorted(points), strict=True)
        backward = pass_ == "forward+backward"
        label = LABELS.get(method, method) + (", forward+backward" if backward else "")
        style = "--" if backward else ":" if method in (CUMSUM, CLONE) else "-"
        ax.plot(n, seconds, marker="o", markersize=3, linestyle=style, label=label)
    timing_axes(
        ax,
        results,
        f"Aaren prefix attention, B·H={SWEEP_BH}, Dv={DV}, float32",
        "sequence length N",
        "seconds per call (median)",
    )
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return fig


SUITE = Suite("aaren", run, plot)

__all__ = ["FULL", "QUICK", "SUITE", "Sizes", "plot", "run"]
