"""Planted bugs for the sequence-parallel claims: the right local work, a wrong prefix across ranks,
or the right result with whole chunks shipped on the side.

Each prefix mutant runs the real :mod:`attnverify.fast.sequence_parallel` function with its cross-rank
prefix step swapped for a wrong one (inside the call only; the checks run it in spawned ranks), some
only in the backward's reverse exchange.  Each traffic mutant returns the real function's (correct)
result but also moves every rank's whole chunk by one route of ``torch.distributed``: only the
traffic findings can reject it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from types import SimpleNamespace
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed import all_gather as renamed_all_gather  # bound before any tracking starts

from attnverify.fast import sequence_parallel as sp
from attnverify.fast.aaren import combine
from attnverify.registry import Mutant


@contextmanager
def _swapped(name: str, replacement: Any) -> Iterator[None]:
    original = getattr(sp, name)
    setattr(sp, name, replacement)
    try:
        yield
    finally:
        setattr(sp, name, original)


def _aaren_mutant(scores: Tensor, values: Tensor, group: Any = None, *, prefix: Callable[..., Tensor]) -> Tensor:
    """The real function with ``prefix`` as its exchange, forward and (kept by autograd) backward."""
    with _swapped("_sequence_parallel_scan", partial(_scan_with, prefix=prefix)):
        return sp.prefix_softmax_attention(scores, values, group)


def _scan_with(*args: Any, prefix: Callable[..., Tensor], **kwargs: Any) -> Any:
    with _swapped("_exclusive_prefix", prefix):
        return _ORIGINAL_SCAN(*args, **kwargs)


def _inclusive(g: Any, total: Tensor, strategy: sp.Strategy, reverse: bool) -> Tensor:
    """The prefix includes this rank's own total: the local chunk is counted twice."""
    exclusive = _ORIGINAL_PREFIX(g, total, strategy, reverse)
    return sp._pack(combine(sp._unpack(exclusive), sp._unpack(total)))


def _unrescaled(g: Any, total: Tensor, strategy: sp.Strategy, reverse: bool) -> Tensor:
    """Totals of the earlier ranks summed as they are, each still referenced to its own max."""
    parts = sp._all_gather(g, total)
    before = parts[g.rank + 1 :] if reverse else parts[: g.rank]
    if not before:
        return sp._packed_identity(total.shape[0], total.shape[1] - 2, total)
    stacked = torch.stack(before)
    return torch.cat([stacked[:, :, :1].amax(0), stacked[:, :, 1:].sum(0)], -1)


def _reversed(g: Any, total: Tensor, strategy: sp.Strategy, reverse: bool) -> Tensor:
    """Ranks taken in the opposite order to the sequence: the prefix of the *later* chunks."""
    return _ORIGINAL_PREFIX(g, total, strategy, not reverse)


_ORIGINAL_PREFIX = sp._exclusive_prefix
_ORIGINAL_SCAN = sp._sequence_parallel_scan

# partial objects of module-level functions pickle by reference, so spawned ranks can run them
inclusive_rank_prefix = partial(_aaren_mutant, prefix=_inclusive)
unrescaled_totals = partial(_aaren_mutant, prefix=_unrescaled)
reversed_rank_order = partial(_aaren_mutant, prefix=_reversed)

INCLUSIVE_RANK_PREFIX = Mutant(
    "inclusive_rank_prefix", "inclusive instead of exclusive prefix over the ranks", inclusive_rank_prefix
)
UNRESCALED_TOTALS = Mutant(
    "unrescaled_totals", "chunk totals added without rescaling to a common max", unrescaled_totals
)
REVERSED_RANK_ORDER = Mutant(
    "reversed_rank_order", "chunks combined in an order that differs from the sequence order", reversed_rank_order
)


def _backward_inclusive(g: Any, total: Tensor, strategy: sp.Strategy, reverse: bool) -> Tensor:
    """Right forward; the backward's reverse prefix includes this rank's own total."""
    return (_inclusive if reverse else _ORIGINAL_PREFIX)(g, total, strategy, reverse)


def _backward_forward_order(g: Any, total: Tensor, strategy: sp.Strategy, reverse: bool) -> Tensor:
    """Right forward; the backward takes the prefix of the earlier ranks instead of the later ones."""
    return _ORIGINAL_PREFIX(g, total, strategy, False)


def _global_rank(g: Any, total: Tensor, strategy: sp.Strategy, reverse: bool) -> Tensor:
    """Sequence position taken from the global rank instead of the rank in ``group`` (right on the world)."""
    parts = sp._all_gather(g, total)
    position = dist.get_rank()
    prefix = sp._packed_identity(total.shape[0], total.shape[1] - 2, total)
    for part in parts[position + 1 :] if reverse else parts[:position]:
        prefix = sp._pack(combine(sp._unpack(prefix), sp._unpack(part)))
    return prefix


def _prefix_not_rescaled(g: Any, total: Tensor, strategy: sp.Strategy, reverse: bool) -> Tensor:
    """The other ranks' prefix relabelled with this chunk's max instead of rescaled to it."""
    prefix = _ORIGINAL_PREFIX(g, total, strategy, reverse)
    m = torch.where(prefix[:, 1] > 0, total[:, 0], prefix[:, 0])
    return torch.cat([m[:, None], prefix[:, 1:]], -1)


backward_inclusive_prefix = partial(_aaren_mutant, prefix=_backward_inclusive)
backward_forward_order = partial(_aaren_mutant, prefix=_backward_forward_order)
global_rank_as_group_rank = partial(_aaren_mutant, prefix=_global_rank)
prefix_not_rescaled = partial(_aaren_mutant, prefix=_prefix_not_rescaled)

BACKWARD_INCLUSIVE_PREFIX = Mutant(
    "backward_inclusive_prefix",
    "right forward; the backward's reverse prefix over the ranks includes this rank",
    backward_inclusive_prefix,
)
BACKWARD_FORWARD_ORDER = Mutant(
    "backward_forward_order",
    "right forward; the backward folds in the earlier ranks' totals instead of the later ones'",
    backward_forward_order,
)
GLOBAL_RANK_AS_GROUP_RANK = Mutant(
    "global_rank_as_group_rank",
    "chunk position from the global rank, not the rank in the group (wrong on a subgroup only)",
    global_rank_as_group_rank,
)
PREFIX_NOT_RESCALED = Mutant(
    "prefix_not_rescaled",
    "the prefix from the other ranks folded in without rescaling to this chunk's max (wrong at P = 2)",
    prefix_not_rescaled,
)


# ---------------------------------------------------------------------------
# Whole chunks shipped on the side, by each route of torch.distributed
# ---------------------------------------------------------------------------


def _whole_chunk(scores: Tensor, values: Tensor, group: Any) -> Tensor:
    """This rank's scores and values, flattened and zero-padded to the longest rank's (one small all-reduce)."""
    flat = torch.cat([scores.detach()[..., None], values.detach()], -1).flatten()
    longest = torch.tensor([flat.numel()])
    dist.all_reduce(longest, op=dist.ReduceOp.MAX, group=group)
    return torch.cat([flat, flat.new_zeros(int(longest) - flat.numel())])


def _ship(route: str, x: Tensor, group: Any) -> None:
    size, rank = dist.get_world_size(group), dist.get_rank(group)
    ranks = [dist.get_global_rank(group, r) if group is not None else r for r in range(size)]
    if route == "broadcast":
        for source in ranks:
            dist.broadcast(x.clone(), src=source, group=group)
    elif route == "all_to_all":
        dist.all_to_all([torch.empty_like(x) for _ in ranks], [x] * size, group=group)
    elif route == "gather_scatter":  # gather every chunk at the first rank, scatter the whole sequence back
        parts = [torch.empty_like(x) for _ in ranks] if rank == 0 else None
        dist.gather(x, parts, dst=ranks[0], group=group)
        whole = [torch.cat(parts)] * size if parts is not None else None
        dist.scatter(torch.empty(size * x.numel(), dtype=x.dtype), whole, src=ranks[0], group=group)
    elif route == "all_gather_object":
        dist.all_gather_object([None] * size, x, group=group)
    elif route == "renamed_all_gather":
        renamed_all_gather([torch.empty_like(x) for _ in ranks], x, group=group)
    elif route == "send_recv":
        sends = [dist.isend(x, dst=r, group=group) for r in ranks if r != ranks[rank]]
        for r in ranks:
            if r != ranks[rank]:
                dist.recv(torch.empty_like(x), src=r, group=group)
        for work in sends:
            if work is not None:  # None on a rank outside the group (not the case here)
                work.wait()
    else:
        raise ValueError(f"route: unknown {route!r}")


def _shipping(scores: Tensor, values: Tensor, group: Any = None, *, route: str) -> Tensor:
    _ship(route, _whole_chunk(scores, values, group), group)
    return sp.prefix_softmax_attention(scores, values, group)


ROUTES = ("broadcast", "all_to_all", "gather_scatter", "all_gather_object", "renamed_all_gather", "send_recv")
SHIPS_WHOLE_CHUNKS = tuple(
    Mutant(
        f"ships_whole_chunks_{route}",
        f"right result, but every whole chunk also moves by {route.replace('_', ' ')} (O(N) bytes)",
        partial(_shipping, route=route),
    )
    for route in ROUTES
)


def _linear_mutant(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    group: Any = None,
    normalize: bool = False,
    *,
    pick: Callable[[list[Tensor], int], list[Tensor]],
) -> Tensor:
    """The state prefix summed over the ranks ``pick(parts, rank)`` (no gradient flows through it)."""

    def wrong_prefix(x: Tensor, g: Any) -> Tensor:
        return sum(pick(sp._all_gather(g, x.detach()), g.rank), torch.zeros_like(x.detach()))

    with _swapped("_ExclusivePrefixSum", SimpleNamespace(apply=wrong_prefix)):
        return sp.linear_attention(q, k, v, group, normalize=normalize)


def _up_to_and_including(parts: list[Tensor], rank: int) -> list[Tensor]:
    return parts[: rank + 1]


def _after(parts: list[Tensor], rank: int) -> list[Tensor]:
    return parts[rank + 1 :]


def _previous_only(parts: list[Tensor], rank: int) -> list[Tensor]:
    return parts[rank - 1 : rank] if rank else []


class _BackwardFromEarlierRanks(torch.autograd.Function):
    """Right forward (``Σ_{q<p} x_q``); the backward sums the earlier ranks' gradients, not the later ones'."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, g: Any) -> Tensor:  # type: ignore[override]
        ctx.g = g
        return sum(sp._all_gather(g, x)[: g.rank], torch.zeros_like(x))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return sum(sp._all_gather(ctx.g, grad)[: ctx.g.rank], torch.zeros_like(grad)), None


def linear_backward_from_earlier_ranks(
    q: Tensor, k: Tensor, v: Tensor, group: Any = None, normalize: bool = False
) -> Tensor:
    with _swapped("_ExclusivePrefixSum", _BackwardFromEarlierRanks):
        return sp.linear_attention(q, k, v, group, normalize=normalize)


linear_inclusive_prefix = partial(_linear_mutant, pick=_up_to_and_including)
linear_reversed_order = partial(_linear_mutant, pick=_after)
linear_previous_rank_only = partial(_linear_mutant, pick=_previous_only)

LINEAR_INCLUSIVE_PREFIX = Mutant(
    "linear_inclusive_prefix", "state prefix includes this rank's own K^T V", linear_inclusive_prefix
)
LINEAR_REVERSED_ORDER = Mutant(
    "linear_reversed_order", "state prefix summed over the later ranks instead of the earlier", linear_reversed_order
)
LINEAR_PREVIOUS_RANK_ONLY = Mutant(
    "linear_previous_rank_only", "only the previous rank's state, not all earlier ones", linear_previous_rank_only
)
LINEAR_BACKWARD_FROM_EARLIER_RANKS = Mutant(
    "linear_backward_from_earlier_ranks",
    "right forward; the backward sums the state gradients of the earlier ranks instead of the later",
    linear_backward_from_earlier_ranks,
)
