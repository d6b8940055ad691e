"""Planted bugs for the sequence-parallel claims: the right local work, a wrong prefix across ranks.

Each mutant runs the real :mod:`attnverify.fast.sequence_parallel` function with its cross-rank
prefix step swapped for a wrong one (inside the call only; the checks run it in spawned ranks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

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
    with _swapped("_exclusive_prefix", prefix):
        return sp.prefix_softmax_attention(scores, values, group)


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
