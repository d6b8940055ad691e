"""Sequence parallelism on ``torch.distributed``: Aaren's prefix scan and causal linear attention.

Each rank of a process group holds one contiguous chunk of the sequence (ranks in sequence
order; chunks may differ in length and may be empty) and gets back its chunk of the output.
What crosses the wire is a constant-size summary per chunk, independent of its length:

* Aaren (derived: ours; LASP-2 and ZeCO state it for linear attention): the chunk total
  ``T_p = ⊕_{i in p} (s_i, 1, v_i)``, ``Dv + 2`` numbers per row.  Position ``j`` of chunk ``p``
  is ``(T_1 ⊕ … ⊕ T_{p-1}) ⊕ LocalScan_p(j)`` by associativity alone.
* Linear attention (LASP-2, arXiv 2502.07563): ``M_p = K_p^T V_p`` (and the key sum ``z_p``);
  ``O_p = [(Q_p K_p^T) ⊙ Ψ] V_p + Q_p Σ_{q<p} M_q``.  With decays (GLA, arXiv 2312.06635): the chunk's state
  ``S_p`` and total log-decay ``g_p``; the carried state is the affine prefix ``Σ_{q<p} e^{Σ_{q<r<p} g_r} ⊙ S_q``.

Two exchange strategies for Aaren: ``"allgather"`` gathers every total once and forms the
exclusive prefix locally (LASP-2 style: one collective, volume grows with the number of ranks);
``"chain"`` passes the running prefix from rank to rank (ZeCO's All-Scan: one message in and one
out per rank, whatever the number of ranks, but ``P`` sequential hops).  Backward runs the
same pattern in reverse.  :func:`track_traffic` counts the bytes each rank moves; :func:`run_gloo`
runs a function in real gloo process groups on one machine.
"""

from __future__ import annotations

import inspect
import io
import math
import os
import queue
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from types import FrameType
from typing import Any, Literal, cast

import torch
import torch.distributed as dist
import torch.distributed.distributed_c10d as c10d
import torch.multiprocessing as mp
from torch import Tensor
from torch._C._distributed_c10d import Backend as _C_Backend
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode_stack

from attnverify.fast._dispatch import BACKENDS, Backend, accumulation_dtype, select_backend
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
from attnverify.fast.dsf import gated_linear_attention, validate_decay, validate_qkv

Strategy = Literal["allgather", "chain"]
STRATEGIES: tuple[Strategy, ...] = ("allgather", "chain")


# ---------------------------------------------------------------------------
# Traffic accounting
# ---------------------------------------------------------------------------


@dataclass
class Traffic:
    """Bytes this rank moved through ``torch.distributed`` inside :func:`track_traffic`.

    Counted below every public function, so no import alias, wrapper or object collective escapes:
    every operator of the collective namespaces that reaches torch's dispatcher (``c10d``, the
    functional ``_c10d_functional``, ``_dtensor``, ``symm_mem``), every direct call of a process group
    backend's methods, and every value written to or read from a ``Store``.  Logical accounting per
    call, whatever algorithm the backend uses: an all-gather of ``b`` bytes per rank counts
    ``(P - 1) b`` sent and received; an all-reduce ``2 (P - 1) b / P`` each way; a broadcast or scatter
    ``(P - 1)`` pieces sent at the root and one piece received elsewhere (gather and reduce the other
    way round); an all-to-all every part but this rank's own; a send or receive its size once.
    Operators without a rule, and direct backend calls, count every tensor they touch both ways (an
    upper bound).  Bytes moved on behalf of the pickled-object collectives (``all_gather_object`` and
    the other ``*_object*`` functions: their pickled payloads and size headers) and through a store
    go to ``objects`` (sent plus received) instead of ``sent``/``received``.
    """

    sent: int = 0
    received: int = 0
    objects: int = 0
    calls: list[tuple[str, int]] = field(default_factory=list)


_TRACKERS: list[Traffic] = []
_RESTORE: list[tuple[type, str, Any]] = []
_NAMESPACES = frozenset({"c10d", "_c10d_functional", "_c10d_functional_autograd", "_dtensor", "symm_mem"})
_FREE = frozenset({"barrier", "monitored_barrier_", "wait_tensor", "_wrap_tensor_autograd", "check_for_nan"})
_OBJECT_CODES = frozenset(
    inspect.unwrap(getattr(c10d, name)).__code__
    for name in (
        "all_gather_object",
        "gather_object",
        "scatter_object_list",
        "broadcast_object_list",
        "send_object_list",
        "recv_object_list",
    )
)
_BACKEND_METHODS = (
    "allgather",
    "_allgather_base",
    "allgather_coalesced",
    "allgather_into_tensor_coalesced",
    "allreduce",
    "allreduce_coalesced",
    "alltoall",
    "alltoall_base",
    "broadcast",
    "gather",
    "recv",
    "recv_anysource",
    "reduce",
    "reduce_scatter",
    "_reduce_scatter_base",
    "reduce_scatter_tensor_coalesced",
    "scatter",
    "send",
)
_GROUP_METHODS = (
    *_BACKEND_METHODS,
    "all_gather_single",
    "all_gather_single_coalesced",
    "all_to_all_single",
    "reduce_scatter_single",
    "reduce_scatter_single_coalesced",
    "barrier",
    "monitored_barrier",
)
_STORE_WRITES = ("set", "append", "compare_set", "multi_set", "queue_push")
_STORE_READS = ("get", "compare_set", "multi_get", "queue_pop")


def _nbytes(x: Any) -> int:
    """Bytes of every tensor in ``x`` (a tensor, or nested lists and tuples of them)."""
    if isinstance(x, Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, (list, tuple)):
        return sum(_nbytes(y) for y in x)
    return 0


def _payload(x: Any) -> int:
    """Bytes of a store value (``bytes``, ``str`` or lists of them)."""
    if isinstance(x, (bytes, bytearray, str)):
        return len(x)
    if isinstance(x, (list, tuple)):
        return sum(_payload(y) for y in x)
    return 0


def _rank_and_size(named: dict[str, Any]) -> tuple[int, int]:
    group = named.get("process_group")
    if group is None:
        group = c10d._resolve_process_group(named["group_name"])
    elif not isinstance(group, dist.ProcessGroup):
        group = dist.ProcessGroup.unbox(group)
    return group.rank(), group.size()


def _op_traffic(name: str, named: dict[str, Any]) -> tuple[int, int]:
    """``(sent, received)`` of one collective operator, from its named arguments (see :class:`Traffic`)."""
    b = _nbytes
    if name in _FREE:
        return 0, 0
    if name in ("send", "isend"):
        return b(named.get("tensors", named.get("tensor"))), 0
    if name in ("recv_", "recv_any_source_", "irecv"):
        return 0, b(named.get("tensors", named.get("tensor")))
    if name == "batch_p2p_ops":
        sizes = [b(t) for t in named["tensors"]]
        sent = sum(s for op, s in zip(named["op_list"], sizes, strict=True) if "send" in op)
        return sent, sum(sizes) - sent
    rank, size = _rank_and_size(named)
    if name.startswith(("allgather", "_allgather_base", "all_gather")):
        own = b(named.get("input_tensors", named.get("input_list", named.get("input_tensor", named.get("inputs")))))
        own = own or b(named.get("input"))
        return (size - 1) * own, (size - 1) * own
    if name.startswith(("allreduce", "all_reduce")):
        moved = 2 * (size - 1) * b(named.get("tensors", named.get("inputs", named.get("input")))) // size
        return moved, moved
    if name.startswith("broadcast"):
        root = named.get("root_rank", named.get("src"))
        piece = b(named.get("tensors", named.get("input")))
        return ((size - 1) * piece, 0) if rank == root else (0, piece)
    if name == "reduce_":
        piece = b(named["tensors"])
        return (0, (size - 1) * piece) if rank == named["root_rank"] else (piece, 0)
    if name == "gather_":
        own = b(named["input_tensors"])
        return (0, b(named["output_tensors"]) - own) if rank == named["root_rank"] else (own, 0)
    if name == "scatter_":
        own = b(named["output_tensors"])
        return (b(named["input_tensors"]) - own, 0) if rank == named["root_rank"] else (0, own)
    if name == "alltoall_":
        inputs, outputs = named["input_tensors"], named["output_tensors"]
        return b(inputs) - b(inputs[rank]), b(outputs) - b(outputs[rank])
    if name in ("alltoall_base_", "all_to_all_single"):
        x = named["input"]
        row = b(x) // max(1, x.shape[0] if x.dim() else 1)
        ins, outs = named["input_split_sizes"], named["output_split_sizes"]
        sent = (sum(ins) - ins[rank]) * row if ins else b(x) - b(x) // size
        return sent, (sum(outs) - outs[rank]) * row if outs else b(x) - b(x) // size
    if name.startswith(("reduce_scatter", "_reduce_scatter_base")):
        inputs = named.get("input_tensors", named.get("input_tensor", named.get("inputs", named.get("input"))))
        total = b(inputs)
        return total - total // size, (size - 1) * (total // size)
    everything = sum(b(v) for v in named.values())  # no rule (all-to-all with splits, symm_mem, ...)
    return everything, everything


def _add(name: str, sent: int, received: int, objects: bool) -> None:
    for t in _TRACKERS:
        if objects:
            t.objects += sent + received
        else:
            t.sent += sent
            t.received += received
        t.calls.append((name, max(sent, received)))


def _for_objects() -> bool:
    """Whether the running call was made on behalf of a pickled-object collective."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        if frame.f_code in _OBJECT_CODES:
            return True
        frame = frame.f_back
    return False


class _Counting(TorchDispatchMode):
    """Counts every collective operator that reaches the dispatcher in this thread."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func.namespace in _NAMESPACES and _TRACKERS:
            named = {a.name: v for a, v in zip(func._schema.arguments, args, strict=False)} | kwargs
            name = func._opname
            _add(f"{func.namespace}.{name}", *_op_traffic(name, named), _for_objects())
        return func(*args, **kwargs)


def _counting_here() -> bool:
    return any(isinstance(m, _Counting) for m in _get_current_dispatch_mode_stack())


def _through_counting(fn: Any) -> Any:
    """A process group method that runs under :class:`_Counting` in whatever thread calls it."""

    def method(*args: Any, **kwargs: Any) -> Any:
        if _counting_here():
            return fn(*args, **kwargs)
        with _Counting():
            return fn(*args, **kwargs)

    return method


def _backend_call(name: str, fn: Any) -> Any:
    """A backend method called directly (it bypasses the dispatcher): every tensor it touches, both ways."""

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        moved = _nbytes(list(args)) + _nbytes(list(kwargs.values()))
        _add(f"backend.{name}", moved, moved, _for_objects())
        return fn(self, *args, **kwargs)

    return method


def _store_call(name: str, fn: Any) -> Any:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = fn(self, *args, **kwargs)
        written = _payload(list(args[1:])) if name in _STORE_WRITES else 0  # args[0]: the key(s)
        read = _payload(result) if name in _STORE_READS else 0
        _add(f"store.{name}", written, read, True)
        return result

    return method


def _classes(base: type) -> list[type]:
    subclasses: list[type] = base.__subclasses__()
    return [base, *(c for sub in subclasses for c in _classes(sub))]


def _install() -> None:
    """Wrap every class's own definition of the methods (pybind subclasses may rebind them)."""
    targets: list[tuple[type, tuple[str, ...], Callable[[str, Any], Any]]] = [
        (dist.ProcessGroup, _GROUP_METHODS, lambda name, fn: _through_counting(fn)),
        (_C_Backend, _BACKEND_METHODS, _backend_call),
        (dist.Store, (*_STORE_WRITES, *_STORE_READS), _store_call),
    ]
    for base, names, wrap in targets:
        for cls in _classes(base):
            for name in dict.fromkeys(names):
                if name in cls.__dict__:
                    original = cls.__dict__[name]
                    _RESTORE.append((cls, name, original))
                    setattr(cls, name, wrap(name, original))


def _uninstall() -> None:
    while _RESTORE:
        cls, name, original = _RESTORE.pop()
        setattr(cls, name, original)


@contextmanager
def track_traffic() -> Iterator[Traffic]:
    """Count what this process moves through ``torch.distributed`` inside the block (see :class:`Traffic`).

    Process group, backend and store methods are wrapped for every thread while any block is open;
    the functional collectives are seen in the thread that opened the block.  Nested blocks each count.
    """
    traffic = Traffic()
    if not _TRACKERS:
        _install()
    _TRACKERS.append(traffic)
    try:
        with nullcontext() if _counting_here() else _Counting():
            yield traffic
    finally:
        _TRACKERS.remove(traffic)
        if not _TRACKERS:
            _uninstall()


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
    chosen = select_backend(backend, scores.device, BACKENDS)
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


def affine_prefixes(totals: list[Tensor], states: list[Tensor]) -> list[Tensor]:
    """The state entering each rank: ``P_0 = 0``, ``P_{r+1} = e^{g_r} ⊙ P_r + S_r`` (decay applied along ``Dk``).

    ``totals[r]: (B, H, Dk)`` is rank ``r``'s total log-decay, ``states[r]: (B, H, Dk, Dv)`` its chunk's state
    from zero; so ``P_p = Σ_{q<p} e^{Σ_{q<r<p} g_r} ⊙ S_q``, an exclusive prefix of the affine maps
    ``(g, S): P ↦ e^g ⊙ P + S``, which compose as ``(g_1, S_1) ∘ (g_2, S_2) = (g_1 + g_2, e^{g_2} ⊙ S_1 + S_2)``.
    """
    prefixes = [torch.zeros_like(states[0])]
    for g, state in zip(totals[:-1], states[:-1], strict=True):
        prefixes.append(torch.exp(g)[..., None] * prefixes[-1] + state)
    return prefixes


def affine_adjoints(totals: list[Tensor], grads: list[Tensor]) -> list[Tensor]:
    """``A_p = ∂L/∂P_p`` through every later rank: ``A_{P-1} = d_{P-1}``, ``A_p = d_p + e^{g_p} ⊙ A_{p+1}``."""
    adjoints = [grads[-1]]
    for g, d in zip(reversed(totals[:-1]), reversed(grads[:-1]), strict=True):
        adjoints.append(d + torch.exp(g)[..., None] * adjoints[-1])
    return adjoints[::-1]


class _DecayedExclusivePrefix(torch.autograd.Function):
    """``P_p`` of :func:`affine_prefixes` from one all-gather of ``(S_p | g_p)`` (``Dk × (Dv + 1)`` per rank);
    backward: one all-gather of ``∂L/∂P_p``, then ``∂L/∂S_p = A_{p+1}`` and ``∂L/∂g_p = Σ_v A_{p+1} ⊙ e^{g_p} ⊙ P_p``
    (zero for the last rank)."""

    @staticmethod
    def forward(ctx: Any, total: Tensor, state: Tensor, g: _Group) -> Tensor:  # type: ignore[override]
        parts = _all_gather(g, torch.cat([state, total[..., None]], -1))
        totals, states = [p[..., -1] for p in parts], [p[..., :-1] for p in parts]
        prefixes = affine_prefixes(totals, states)
        ctx.g, ctx.totals, ctx.prefix = g, totals, prefixes[g.rank]
        return prefixes[g.rank]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:  # type: ignore[override]
        g: _Group = ctx.g
        adjoints = affine_adjoints(ctx.totals, _all_gather(g, grad))
        if g.rank == g.size - 1:
            return torch.zeros_like(ctx.totals[g.rank]), torch.zeros_like(grad), None
        after = adjoints[g.rank + 1]
        d_total = (after * torch.exp(ctx.totals[g.rank])[..., None] * ctx.prefix).sum(-1)
        return d_total, after, None


def linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    group: Any = None,
    *,
    log_decay: Tensor | None = None,
    normalize: bool = False,
) -> Tensor:
    """Sequence-parallel causal linear attention, LASP-2 style (arXiv 2502.07563), optionally gated (GLA).

    ``o_t = S_tᵀ q_t`` with ``S_t = diag(e^{g_t}) S_{t-1} + k_t v_tᵀ`` (no decay when ``log_decay`` is
    ``None``: ``o_t = Σ_{s<=t} (q_t · k_s) v_s``), divided by ``q_t · z_t`` (``z_t = e^{g_t} z_{t-1} + k_t``) when
    ``normalize``; the conventions of :func:`attnverify.fast.gated_linear_attention`.  Each rank holds a
    contiguous chunk ``q, k: (B, H, T_local, D)``, ``v: (B, H, T_local, Dv)``, ``log_decay: (B, H, T_local)``
    (per head) or ``(B, H, T_local, D)`` (per key channel), natural log, ``<= 0``; ``T_local`` may be 0.
    Without decay its state ``K^T V`` (``D × Dv``, and the key sum) is gathered once and summed over the
    earlier ranks; with decay the state and the chunk's total log-decay (one more column) are gathered once
    and folded as an affine prefix (:func:`affine_prefixes`).  Bytes per rank do not depend on ``T_local``.
    Differentiable (``log_decay`` included); the backward gathers the states' gradients once more.
    """
    g = _resolve_group(group)

    def validate() -> None:
        validate_qkv(q, k, v)
        if log_decay is not None:
            validate_decay(q, log_decay)

    error = _local_error(validate)
    ok = error is None
    decay = "none" if log_decay is None else "per head" if log_decay.dim() == 3 else "per key channel"
    description = {
        "B, H, D": (q.shape[0], q.shape[1], q.shape[3]) if ok else None,
        "Dv": v.shape[-1] if ok else None,
        "dtype": str(q.dtype) if ok else None,
        "device type": q.device.type if ok else None,
        "normalize": normalize,
        "log_decay": decay if ok else None,
        "length": q.shape[2] if ok else None,
    }
    _handshake(g, description, error)
    acc = accumulation_dtype(q.dtype)
    qa, ka, va = q.to(acc), k.to(acc), v.to(acc)
    dv = v.shape[-1]
    if normalize:  # the key sum rides along as an extra value column
        va = torch.cat([va, torch.ones_like(va[..., :1])], -1)
    if log_decay is None:
        prefix = _ExclusivePrefixSum.apply(ka.transpose(-1, -2) @ va, g)  # (B, H, D, Dv [+ 1]): Σ_{q<p} K_q^T V_q
        out = gated_linear_attention(qa, ka, va, initial_state=prefix)
    else:
        gates = log_decay.to(acc)
        G = (gates[..., None] if gates.dim() == 3 else gates).cumsum(2)  # (B, H, T_local, 1 or D): Ĝ, inclusive
        local, state = gated_linear_attention(qa, ka, va, gates, output_final_state=True)  # from a zero state
        total = G.sum(2) if q.shape[2] == 0 else G[:, :, -1]  # (B, H, 1 or D): the chunk's Σ g (0 when empty)
        prefix = _DecayedExclusivePrefix.apply(total.expand(*q.shape[:2], q.shape[3]), state, g)
        out = local + (qa * torch.exp(G)) @ prefix  # the carried state, decayed up to each token (linearity in S_0)
    if normalize:
        out = out[..., :dv] / out[..., dv:]
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
    world_size: int,
    fn: Callable[..., Any],
    *args: Any,
    timeout_s: float = 120.0,
    threads: int = 1,
    deadline_s: float | None = None,
) -> list[Any]:
    """Run ``fn(*args)`` in ``world_size`` fresh processes joined in a gloo group; results by rank.

    ``fn`` must be importable (module level).  Each process uses ``threads`` torch threads, a
    ``timeout_s`` timeout on every collective, and destroys its group on every path.  A process that
    raises makes this raise ``RuntimeError`` with its traceback; past ``deadline_s`` (default
    ``timeout_s``) plus 30 s of start-up every process is killed and ``TimeoutError`` raised, so
    nothing can hang.
    """
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size: expected a positive int, got {world_size!r}")
    ctx = mp.get_context("forkserver")
    # Children fork from a server that imported torch and this module once (a spawned child would import
    # them again, seconds each); the preload list counts only when the server starts, at the first call.
    ctx.set_forkserver_preload([__name__] + ([fn.__module__] if fn.__module__ != "__main__" else []))
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
        deadline = time.monotonic() + (timeout_s if deadline_s is None else deadline_s) + 30.0  # + start-up
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
