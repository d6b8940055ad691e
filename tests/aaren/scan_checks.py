"""Checks shared by the torch-path and Triton tests: carries, source mutants, per-row gradient scales.

A scan engine splits the sequence (chunks of the torch path, tiles and segments of the Triton
kernel) and carries a prefix state across the pieces.  :func:`carry_errors` judges those carries
where they live: ordinary score spreads (a softmax over many tokens, not one-hot), several live
rows, at least three pieces, on the forward scan, the reverse scan of the backward (leaves with
their own ``u``) and the initial-state path of sequence parallelism, against a float64 fold of
the reference ``⊕``.

:func:`mutant_module` plants a bug without touching production code: it takes a module's source,
replaces one snippet (which must occur exactly once, so a refactor fails loudly instead of testing
nothing), writes the result to a file and imports it.  Triton's ``jit`` reads kernel sources from
files, so a mutant kernel compiles (or interprets) like the original.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from attnverify.numerics import identity_tolerance, row_scale, scaled_error
from attnverify.reference import aaren as ref

F64 = torch.float64
ScanEngine = Callable[..., tuple[Tensor, Tensor, Tensor]]
"""``(m, w, u, *, reverse, normalize, initial) -> (y, r, u)``, as ``_scan`` and ``triton_scan``."""


def mutant_module(module: ModuleType, old: str, new: str, directory: Path) -> ModuleType:
    """A copy of ``module`` with the one occurrence of ``old`` replaced by ``new``, imported from a file."""
    source = inspect.getsource(module)
    assert source.count(old) == 1, f"{module.__name__}: expected {old!r} exactly once"
    digest = hashlib.sha1(f"{module.__name__}\0{old}\0{new}".encode()).hexdigest()[:12]
    name = f"{module.__name__.replace('.', '_')}_mutant_{digest}"
    path = directory / f"{name}.py"
    path.write_text(source.replace(old, new))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mutant = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mutant)
    return mutant


def _fold(m: Tensor, w: Tensor, u: Tensor, initial: tuple[Tensor, Tensor, Tensor] | None) -> ref.ScanState:
    """The inclusive scan along dim 1, one reference ``⊕`` at a time (float64); ``m, u: (R, N)``, ``w: (R, N, D)``."""
    state = ref.identity((m.shape[0],), w.shape[-1]) if initial is None else ref.ScanState(*initial)
    states = []
    for k in range(m.shape[1]):
        state = ref.combine(state, ref.ScanState(m[:, k], u[:, k], w[:, k]))
        states.append(state)
    return ref.ScanState(*(torch.stack(parts, 1) for parts in zip(*states, strict=True)))


def _error(out: tuple[Tensor, Tensor, Tensor], truth: ref.ScanState, normalize: bool, w: Tensor) -> float:
    """Worst of: running max bit for bit (``inf`` on any mismatch), ``u`` relative, ``w`` (or ``w/u``) per row."""
    y, r, u = (t.cpu().to(F64) for t in out)
    if not torch.equal(r, truth.m):
        return float("inf")
    scale = row_scale(w)
    if normalize:
        return max(scaled_error(u, truth.u, truth.u), scaled_error(y, ref.readout(truth), scale))
    return max(scaled_error(u, truth.u, truth.u), scaled_error(y, truth.w, truth.u[..., None] * scale))


def carry_case(n: int, rows: int = 4, dv: int = 5, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, tuple]:
    """Leaves with ordinary spreads: scores ``N(0, 2^2)``, values ``N(0, 1)``, counts in ``[0.5, 1.5)``
    (a backward leaf has its own ``u``), and an initial state whose max sits among the scores."""
    g = torch.Generator().manual_seed(seed)
    m = 2.0 * torch.randn(rows, n, generator=g, dtype=F64)
    w = torch.randn(rows, n, dv, generator=g, dtype=F64)
    u = torch.rand(rows, n, generator=g, dtype=F64) + 0.5
    initial = (
        1.5 + torch.randn(rows, generator=g, dtype=F64),
        3.0 * torch.rand(rows, generator=g, dtype=F64) + 1.0,
        torch.randn(rows, dv, generator=g, dtype=F64),
    )
    return m, w, u, initial


def carry_errors(
    scan: ScanEngine, n: int, device: torch.device | str = "cpu", *, rows: int = 4, dv: int = 5
) -> dict[str, float]:
    """Errors of ``scan`` on the three paths that carry state across pieces of a length-``n`` row."""
    m, w, u, initial = carry_case(n, rows, dv)

    def run(*args: Tensor | None, **kw: object) -> tuple[Tensor, Tensor, Tensor]:
        moved = [None if a is None else a.to(device) for a in args]
        init = kw.pop("initial", None)
        init = None if init is None else tuple(t.to(device) for t in init)  # type: ignore[union-attr]
        return scan(*moved, initial=init, **kw)

    live = torch.ones_like(m)
    forward = run(m, w, None, reverse=False, normalize=True)
    reverse = run(m, w, u, reverse=True, normalize=False)
    started = run(m, w, None, reverse=False, normalize=True, initial=initial)
    flipped = _fold(m.flip(1), w.flip(1), u.flip(1), None)
    return {
        "forward": _error(forward, _fold(m, w, live, None), True, w),
        "reverse": _error(reverse, ref.ScanState(*(t.flip(1) for t in flipped)), False, w),
        "initial state": _error(started, _fold(m, w, live, initial), True, w),
    }


def carry_tolerance(n: int) -> float:
    """The float64 identity tolerance: carries are exact algebra, only rounding may differ."""
    return identity_tolerance(F64, n)


def gradient_scales(g: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row error scales of ``(ds, dv)`` for upstream gradient ``g`` and values ``v: (..., N, Dv)``.

    With softmax weights ``p_{k,i}``: ``dv_i = sum_k p_{k,i} g_k`` and ``ds_i = sum_k p_{k,i} g_k · (v_i - o_k)``,
    sums of terms of size ``max|g|`` and ``Dv max|g| max|v|`` per row.  Rows of one batch differ in scale
    by up to 10^6 (``scan_case`` values), so one global scale would hide errors in the small rows.
    """
    g_row = g.detach().abs().to(F64).amax((-2, -1))
    v_row = v.detach().abs().to(F64).amax((-2, -1))
    return (v.shape[-1] * g_row * v_row)[..., None], g_row[..., None, None]
