"""Sequence parallelism on ``torch.distributed``: Aaren's prefix scan and causal linear attention.

Each rank of a process group holds one contiguous chunk of the sequence (ranks in sequence
order; chunks may differ in length and may be empty) and gets back its chunk of the output.
What crosses the wire is a constant-size summary per chunk, independent of its length:

* Aaren (derived: ours; LASP-2 and ZeCO state it for linear attention): the chunk total
  ``T_p = ⊕_{i in p} (s_i, 1, v_i)``, ``Dv + 2`` numbers per row.  Position ``j`` of chunk ``p``
  is ``(T_1 ⊕ … ⊕ T_{p-1}) ⊕ LocalScan_p(j)`` by associativity alone.
* Linear attention (LASP-2, arXiv 2502.07563): ``M_p = K_p^T V_p`` (and the key sum ``z_p``);
  ``O_p = [(Q_p K_p^T) ⊙ Ψ] V_p + Q_p Σ_{q<p} M_q``.

Two exchange strategies for Aaren: ``"allgather"`` gathers every total once and forms the
exclusive prefix locally (LASP-2 style: one collective, volume grows with the number of ranks);
``"chain"`` passes the running prefix from rank to rank (ZeCO's All-Scan: one message in and one
out per rank, whatever the number of ranks, but ``P`` sequential hops).  Backward runs the
same pattern in reverse.  :func:`track_traffic` counts the bytes each rank moves; :func:`run_gloo`
runs a function in real gloo process groups on one machine.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import queue
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any, Literal, cast

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from attnverify.fast._dispatch import Backend, accumulation_dtype, select_backend
from attnverify.fast.aaren import (
    NEG_INF,
    ScanResult,
    _leaves,
    _PrefixSoftmax,
    _scan,
    combine,
    totals,
    validate_scan_inputs,
)
from attnverify.fast.linear_attention import causal_linear_attention, validate_qkv

Strategy = Literal["allgather", "chain"]
STRATEGIES: tuple[Strategy, ...] = ("allgather", "chain")


# ---------------------------------------------------------------------------
# Traffic accounting
# ---------------------------------------------------------------------------


@dataclass
class Traffic:
    """Bytes this rank moved through ``torch.distributed`` tensor collectives, and object bytes.

    Logical accounting per call, whatever algorithm the backend uses: an all-gather of ``b`` bytes
    per rank counts ``(P - 1) b`` sent and received (each payload reaches every other rank); an
    all-reduce ``2 (P - 1) b / P`` each way; a send or receive its size once.  Pickled-object
    collectives (e.g. the shape handshake) count their pickled size in ``objects``.
    """

    sent: int = 0
    received: int = 0
    objects: int = 0
    calls: list[tuple[str, int]] = field(default_factory=list)


_TRACKERS: list[Traffic] = []
_ORIGINALS: dict[str, Any] = {}


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def _world(kwargs: dict[str, Any]) -> int:
    return dist.get_world_size(kwargs.get("group"))


def _accounting(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, int, int]:
    """``(sent, received, object bytes)`` of one call of ``torch.distributed.<name>``."""
    first = args[0] if args else next(iter(kwargs.values()))
    if name in ("all_gather", "all_gather_into_tensor"):
        own = args[1] if len(args) > 1 else kwargs["tensor" if name == "all_gather" else "input_tensor"]
        b = (_world(kwargs) - 1) * _nbytes(own)
        return b, b, 0
    if name == "all_reduce":
        p = _world(kwargs)
        b = 2 * (p - 1) * _nbytes(first) // p
        return b, b, 0
    if name in ("send", "isend"):
        return _nbytes(first), 0, 0
    if name in ("recv", "irecv"):
        return 0, _nbytes(first), 0
    obj = args[1] if len(args) > 1 else kwargs.get("obj")
    return 0, 0, len(pickle.dumps(obj))


_TRACKED = ("all_gather", "all_gather_into_tensor", "all_reduce", "send", "isend", "recv", "irecv", "all_gather_object")


def _patched(name: str, fn: Any) -> Any:
    def counting(*args: Any, **kwargs: Any) -> Any:
        sent, received, objects = _accounting(name, args, kwargs)
        for t in _TRACKERS:
            t.sent += sent
            t.received += received
            t.objects += objects
            t.calls.append((name, max(sent, received, objects)))
        return fn(*args, **kwargs)

    return counting


@contextmanager
def track_traffic() -> Iterator[Traffic]:
    """Count what this process moves through ``torch.distributed`` inside the block (any code's calls
    made as ``torch.distributed.<collective>(...)``; nested blocks each count)."""
    traffic = Traffic()
    if not _TRACKERS:
        for name in _TRACKED:
            _ORIGINALS[name] = getattr(dist, name)
            setattr(dist, name, _patched(name, _ORIGINALS[name]))
    _TRACKERS.append(traffic)
    try:
        yield traffic
    finally:
        _TRACKERS.remove(traffic)
        if not _TRACKERS:
            for name, fn in _ORIGINALS.items():
                setattr(dist, name, fn)
            _ORIGINALS.clear()


# ---------------------------------------------------------------------------
# The process group and the handshake
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Group:
    group: Any
    rank: int
    size: int

    def global_rank(self, rank: int) -> int:
        return dist.get_global_rank(self.group, rank) if self.group is not None else rank


def _resolve_group(group: Any) -> _Group:
    if not dist.is_available():
        raise RuntimeError("group: torch.distributed is not available in this build of torch")
    if not dist.is_initialized():
        raise RuntimeError(
            "group: torch.distributed is not initialized; call torch.distributed.init_process_group first"
        )
    if group is not None and group == dist.GroupMember.NON_GROUP_MEMBER:
        raise ValueError("group: this rank is not a member of the given process group")
    return _Group(group, dist.get_rank(group), dist.get_world_size(group))


def _handshake(g: _Group, description: dict[str, Any], local_error: str | None) -> None:
    """Exchange a small description of every rank's inputs; raise the same error on every rank.

    Every rank takes part even when its own input is invalid, so a bad input never leaves the
    other ranks waiting in a collective.
    """
    payload = {**description, "error": local_error}
    gathered: list[Any] = [None] * g.size
    dist.all_gather_object(gathered, payload, group=g.group)
    errors = [f"rank {r}: {p['error']}" for r, p in enumerate(gathered) if p["error"]]
    if errors:
        raise ValueError("; ".join(errors))
    fields = [k for k in description if k != "length"]
    for key in fields:
        values = {r: p[key] for r, p in enumerate(gathered)}
        if len({repr(v) for v in values.values()}) > 1:
            raise ValueError(
                f"{key}: expected every rank to agree (only the sequence length may differ), got "
                + ", ".join(f"rank {r}: {v}" for r, v in values.items())
            )


# ---------------------------------------------------------------------------
# Exchanging chunk summaries
# ---------------------------------------------------------------------------


def _all_gather(g: _Group, x: Tensor) -> list[Tensor]:
    parts = [torch.empty_like(x) for _ in range(g.size)]
    dist.all_gather(parts, x.contiguous(), group=g.group)
    return parts


def _send(g: _Group, x: Tensor, to: int) -> None:
    dist.send(x.contiguous(), dst=g.global_rank(to), group=g.group)


def _recv(g: _Group, like: Tensor, source: int) -> Tensor:
    x = torch.empty_like(like)
    dist.recv(x, src=g.global_rank(source), group=g.group)
    return x


def _pack(state: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """``(m, u, w)`` with ``m, u: (R,)``, ``w: (R, D)`` → ``(R, D + 2)``."""
    return torch.cat([state[0][:, None], state[1][:, None], state[2]], -1)


def _unpack(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return x[:, 0], x[:, 1], x[:, 2:]


def _packed_identity(rows: int, dv: int, like: Tensor) -> Tensor:
    """``e = (-inf, 0, 0)`` for ``rows`` rows, packed as ``(rows, dv + 2)`` with the dtype and device of ``like``."""
    e = torch.zeros((rows, dv + 2), dtype=like.dtype, device=like.device)
    e[:, 0] = NEG_INF
    return e


def _exclusive_prefix(g: _Group, total: Tensor, strategy: Strategy, reverse: bool) -> Tensor:
    """``⊕`` of the totals of the ranks before this one (after it, when ``reverse``); ``e`` at the end."""
    identity = _packed_identity(total.shape[0], total.shape[1] - 2, total)
    order = range(g.size - 1, -1, -1) if reverse else range(g.size)
    if strategy == "allgather":
        parts = _all_gather(g, total)
        prefix = identity
        for rank in order:
            if rank == g.rank:
                return prefix
            prefix = _pack(combine(_unpack(prefix), _unpack(parts[rank])))
        raise AssertionError("unreachable: this rank is in the group")
    # chain: receive the prefix from the previous rank in scan order, pass prefix ⊕ total on.
    step = -1 if reverse else 1
    previous, following = g.rank - step, g.rank + step
    prefix = _recv(g, total, previous) if 0 <= previous < g.size else identity
    if 0 <= following < g.size:
        _send(g, _pack(combine(_unpack(prefix), _unpack(total))), following)
    return prefix


def _sequence_parallel_scan(
    m: Tensor,
    w: Tensor,
    u: Tensor | None,
    *,
    reverse: bool,
    normalize: bool,
    g: _Group,
    strategy: Strategy,
    backend: Backend,
) -> ScanResult:
    """This chunk's scan started from the prefix of the other chunks (a :class:`ScanFn`).

    Two passes over the chunk: its total (one reduction), exchanged for the exclusive prefix of the
    other ranks' totals, then the local scan with that prefix as its initial carry.
    """
    leaves = _leaves(m, w, u)
    rows = leaves[0].shape[0]
    total = _pack(totals(*leaves)) if m.shape[1] else _packed_identity(rows, w.shape[-1], leaves[0])
    prefix = _unpack(_exclusive_prefix(g, total, strategy, reverse))
    return _scan(m, w, u, backend=backend, reverse=reverse, normalize=normalize, initial=prefix)


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def _local_error(check: Any) -> str | None:
    try:
        check()
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def prefix_softmax_attention(
    scores: Tensor,
    values: Tensor,
    group: Any = None,
    *,
    strategy: str = "allgather",
    backend: str | None = None,
) -> Tensor:
    """Sequence-parallel :func:`attnverify.fast.prefix_softmax_attention` (Aaren's scan across ranks).

    Args:
        scores: ``(..., N_local)``: this rank's contiguous chunk (ranks in sequence order).
        values: ``(..., N_local, Dv)``.  Leading shape, ``Dv``, dtype and device must agree on every
            rank; ``N_local`` may differ and may be 0.
        group: the process group (default: the world).
        strategy: ``"allgather"`` (one all-gather of the chunk totals) or ``"chain"`` (the prefix
            travels rank to rank).
        backend: the local scan's backend, as in the single-device function.

    Returns:
        This rank's chunk of the global output, ``(..., N_local, Dv)``; differentiable (the backward
        is the reverse scan with the same exchange pattern).  Per row, ``Dv + 2`` numbers per rank
        cross the wire in each direction, whatever ``N_local``.
    """
    g = _resolve_group(group)

    def validate() -> None:
        validate_scan_inputs(scores, values)
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy: expected 'allgather' or 'chain', got {strategy!r}")

    error = _local_error(validate)
    ok = error is None
    description = {
        "leading shape": tuple(scores.shape[:-1]) if ok else None,
        "Dv": values.shape[-1] if ok else None,
        "dtype": str(scores.dtype) if ok else None,
        "device type": scores.device.type if ok else None,
        "strategy": strategy,
        "length": scores.shape[-1] if ok else None,
    }
    _handshake(g, description, error)
    chosen = select_backend(backend, scores.device)
    *lead, n = scores.shape
    dv = values.shape[-1]
    rows = math.prod(lead)
    scan = partial(_sequence_parallel_scan, g=g, strategy=cast(Strategy, strategy), backend=chosen)
    out = _PrefixSoftmax.apply(scores.reshape(rows, n), values.reshape(rows, n, dv), scan)
    return out.reshape(*lead, n, dv)


class _ExclusivePrefixSum(torch.autograd.Function):
    """``Σ_{q<p} x_q`` over the ranks before this one; backward: ``Σ_{q>p} g_q`` (both one all-gather)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, g: _Group) -> Tensor:  # type: ignore[override]
        ctx.g = g
        parts = _all_gather(g, x)
        return sum(parts[: g.rank], torch.zeros_like(x))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        g: _Group = ctx.g
        parts = _all_gather(g, grad)
        return sum(parts[g.rank + 1 :], torch.zeros_like(grad)), None


def linear_attention(q: Tensor, k: Tensor, v: Tensor, group: Any = None, *, normalize: bool = False) -> Tensor:
    """Sequence-parallel causal linear attention, LASP-2 style (arXiv 2502.07563).

    ``o_t = Σ_{s<=t} (q_t · k_s) v_s`` (identity feature map), divided by ``Σ_{s<=t} q_t · k_s`` when
    ``normalize``.  Each rank holds a contiguous chunk ``q, k: (B, H, T_local, D)``,
    ``v: (B, H, T_local, Dv)``; its states ``K^T V`` (``D × Dv``) and key sum (``D``) are gathered once
    and summed over the earlier ranks (an exclusive prefix).  Differentiable; the backward gathers
    the states' gradients once more.
    """
    g = _resolve_group(group)

    error = _local_error(lambda: validate_qkv(q, k, v))
    ok = error is None
    description = {
        "B, H, D": (q.shape[0], q.shape[1], q.shape[3]) if ok else None,
        "Dv": v.shape[-1] if ok else None,
        "dtype": str(q.dtype) if ok else None,
        "device type": q.device.type if ok else None,
        "normalize": normalize,
        "length": q.shape[2] if ok else None,
    }
    _handshake(g, description, error)
    acc = accumulation_dtype(q.dtype)
    qa, ka, va = q.to(acc), k.to(acc), v.to(acc)
    if normalize:  # the key sum rides along as an extra value column
        va = torch.cat([va, torch.ones_like(va[..., :1])], -1)
    state = ka.transpose(-1, -2) @ va  # (B, H, D, Dv [+ 1]): K_p^T V_p
    prefix = _ExclusivePrefixSum.apply(state, g)
    out = causal_linear_attention(qa, ka, va[..., : v.shape[-1]], normalize=normalize, initial_state=prefix)
    return out.to(q.dtype)


# ---------------------------------------------------------------------------
# Running on one machine: real gloo process groups
# ---------------------------------------------------------------------------


def _gloo_entry(
    rank: int,
    world_size: int,
    init_file: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    threads: int,
    timeout_s: float,
    results: Any,
) -> None:
    """Child process: join the gloo group, run ``fn(*args)``, send back its result, always leave the group."""
    try:
        torch.set_num_threads(threads)
        dist.init_process_group(
            "gloo",
            init_method=f"file://{init_file}",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
        )
        try:
            buffer = io.BytesIO()
            torch.save(fn(*args), buffer)
            outcome: tuple[str, Any] = ("ok", buffer.getvalue())
        finally:
            dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 - every failure goes back to the parent with its traceback
        outcome = ("error", traceback.format_exc())
    results.put((rank, outcome))


def run_gloo(
    world_size: int, fn: Callable[..., Any], *args: Any, timeout_s: float = 120.0, threads: int = 1
) -> list[Any]:
    """Run ``fn(*args)`` in ``world_size`` fresh processes joined in a gloo group; results by rank.

    ``fn`` must be importable (module level).  Each process uses ``threads`` torch threads, a
    ``timeout_s`` timeout on every collective, and destroys its group on every path.  A process that
    raises makes this raise ``RuntimeError`` with its traceback; past ``timeout_s`` every process is
    killed and ``TimeoutError`` raised, so nothing can hang.
    """
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size: expected a positive int, got {world_size!r}")
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        results = ctx.Queue()
        procs = [
            ctx.Process(
                target=_gloo_entry,
                args=(rank, world_size, os.path.join(tmp, "rendezvous"), fn, args, threads, timeout_s, results),
                daemon=True,
            )
            for rank in range(world_size)
        ]
        for proc in procs:
            proc.start()
        outcomes: dict[int, tuple[str, Any]] = {}
        deadline = time.monotonic() + timeout_s + 30.0  # + start-up
        try:
            while len(outcomes) < world_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"run_gloo: {world_size - len(outcomes)} rank(s) did not finish in time")
                try:
                    rank, outcome = results.get(timeout=min(remaining, 1.0))
                    outcomes[rank] = outcome
                except queue.Empty:
                    dead = [p for p in procs if p.exitcode not in (None, 0)]
                    if dead and len(outcomes) + len(dead) >= world_size and results.empty():
                        raise RuntimeError(f"run_gloo: process exited with code {dead[0].exitcode}") from None
        finally:
            for proc in procs:
                proc.join(timeout=5.0)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
    failures = [f"rank {r}:\n{o[1]}" for r, o in sorted(outcomes.items()) if o[0] == "error"]
    if failures:
        raise RuntimeError("run_gloo: " + "\n".join(failures))
    return [torch.load(io.BytesIO(outcomes[r][1]), weights_only=False) for r in range(world_size)]
