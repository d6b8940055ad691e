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


# ---------------------------------------------------------------------------
# Gated linear attention: the affine prefix of decayed states
# ---------------------------------------------------------------------------


def _gla_mutant(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_decay: Tensor,
    group: Any = None,
    normalize: bool = False,
    *,
    name: str,
    replacement: Any,
) -> Tensor:
    """The real function with ``sp.<name>`` swapped for ``replacement`` during the call (the forward)."""
    with _swapped(name, replacement):
        return sp.linear_attention(q, k, v, group, log_decay=log_decay, normalize=normalize)


def _fold(totals: list[Tensor], states: list[Tensor], step: Callable[..., Tensor]) -> list[Tensor]:
    prefixes = [torch.zeros_like(states[0])]
    for r in range(len(states) - 1):
        prefixes.append(step(prefixes[-1], totals, states, r))
    return prefixes


def _undecayed_step(prefix: Tensor, totals: list[Tensor], states: list[Tensor], r: int) -> Tensor:
    return prefix + states[r]


def _next_rank_step(prefix: Tensor, totals: list[Tensor], states: list[Tensor], r: int) -> Tensor:
    return torch.exp(totals[r + 1])[..., None] * prefix + states[r]


def _own_decay_step(prefix: Tensor, totals: list[Tensor], states: list[Tensor], r: int) -> Tensor:
    return torch.exp(totals[r])[..., None] * (prefix + states[r])


def _inclusive_affine(totals: list[Tensor], states: list[Tensor]) -> list[Tensor]:
    """The prefix entering rank ``p`` already holds ``S_p``: one fold step too many."""
    prefixes = _ORIGINAL_AFFINE(totals, states)
    return [torch.exp(g)[..., None] * p + s for g, p, s in zip(totals, prefixes, states, strict=True)]


_ORIGINAL_AFFINE = sp.affine_prefixes
_ORIGINAL_DECAYED = sp._DecayedExclusivePrefix


class _BackwardUndecayed(sp._DecayedExclusivePrefix):
    """Right forward; the backward's reverse fold sums the later ranks' state gradients without decaying them."""

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:  # type: ignore[override]
        def undecayed(totals: list[Tensor], grads: list[Tensor]) -> list[Tensor]:
            return list(torch.stack(grads).flip(0).cumsum(0).flip(0).unbind(0))

        with _swapped("affine_adjoints", undecayed):
            return _ORIGINAL_DECAYED.backward(ctx, grad)


class _BackwardDropsDecayGradient(sp._DecayedExclusivePrefix):
    """Right forward and state gradients; the carried state's gradient with respect to the decays is dropped."""

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:  # type: ignore[override]
        d_total, d_state, _ = _ORIGINAL_DECAYED.backward(ctx, grad)
        return torch.zeros_like(d_total), d_state, None


def _affine(step: Callable[..., Tensor]) -> Any:
    return partial(_gla_mutant, name="affine_prefixes", replacement=partial(_fold, step=step))


gla_carried_not_decayed = _affine(_undecayed_step)
gla_next_ranks_total = _affine(_next_rank_step)
gla_senders_own_decay = _affine(_own_decay_step)
gla_inclusive_prefix = partial(_gla_mutant, name="affine_prefixes", replacement=_inclusive_affine)
gla_backward_undecayed = partial(_gla_mutant, name="_DecayedExclusivePrefix", replacement=_BackwardUndecayed)
gla_backward_drops_decay_gradient = partial(
    _gla_mutant, name="_DecayedExclusivePrefix", replacement=_BackwardDropsDecayGradient
)

GLA_CARRIED_NOT_DECAYED = Mutant(
    "gla_carried_not_decayed", "carried state summed over earlier ranks without their decays", gla_carried_not_decayed
)
GLA_NEXT_RANKS_TOTAL = Mutant(
    "gla_next_ranks_total",
    "each earlier state decayed by the total of the rank after the one it passes (shifted by one rank)",
    gla_next_ranks_total,
)
GLA_SENDERS_OWN_DECAY = Mutant(
    "gla_senders_own_decay",
    "each rank's state decayed once more by its own total (inclusive instead of exclusive decay range)",
    gla_senders_own_decay,
)
GLA_INCLUSIVE_PREFIX = Mutant(
    "gla_inclusive_prefix", "the carried state includes this rank's own chunk state", gla_inclusive_prefix
)
GLA_BACKWARD_UNDECAYED = Mutant(
    "gla_backward_undecayed",
    "right forward; the backward passes later ranks' state gradients back without decaying them",
    gla_backward_undecayed,
)
GLA_BACKWARD_DROPS_DECAY_GRADIENT = Mutant(
    "gla_backward_drops_decay_gradient",
    "right forward; the backward drops the carried state's gradient with respect to the decays",
    gla_backward_drops_decay_gradient,
)
