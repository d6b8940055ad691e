"""Functions that spawned gloo ranks run (module level, so that they pickle by reference)."""

from __future__ import annotations

import pickle
from functools import partial
from typing import Any

import torch
import torch.distributed as dist

from attnverify.fast import sequence_parallel as sp
from attnverify.fast.linear_attention import causal_linear_attention
from attnverify.theory.aaren import scan_case

F64 = torch.float64


def chunk(lengths: list[int]) -> slice:
    start = sum(lengths[: dist.get_rank()])
    return slice(start, start + lengths[dist.get_rank()])


def bad_values_on_rank_1() -> None:
    n_values = 4 if dist.get_rank() == 1 else 5  # values shorter than scores on rank 1 only
    sp.prefix_softmax_attention(torch.zeros(2, 5), torch.zeros(2, n_values, 3))


def wrong_dtype_on_rank_0() -> None:
    dtype = torch.int64 if dist.get_rank() == 0 else torch.float32
    sp.prefix_softmax_attention(torch.zeros(2, 5, dtype=dtype), torch.zeros(2, 5, 3, dtype=dtype))


def mismatched_qkv_on_last_rank() -> None:
    d = 5 if dist.get_rank() == dist.get_world_size() - 1 else 4
    q = torch.zeros(1, 2, 6, 4)
    sp.linear_attention(q, torch.zeros(1, 2, 6, d), torch.zeros(1, 2, 6, 3))


def mismatched_dv() -> None:
    dv = 3 if dist.get_rank() == 0 else 2
    sp.prefix_softmax_attention(torch.zeros(2, 5), torch.zeros(2, 5, dv))


def unknown_strategy() -> None:
    sp.prefix_softmax_attention(torch.zeros(2, 5), torch.zeros(2, 5, 3), strategy="ring")


def hang_on_rank_0() -> None:
    if dist.get_rank() == 0:
        dist.recv(torch.zeros(1), src=1)  # rank 1 never sends


def upstream(values: torch.Tensor) -> torch.Tensor:
    """A fixed random upstream gradient: a random projection of the Jacobian, not just its row sums."""
    return torch.randn(values.shape, generator=torch.Generator().manual_seed(7), dtype=values.dtype)


def lengths_and_strategies(lengths: list[int], lead: tuple[int, ...]) -> list[dict[str, Any]]:
    """Both strategies on this rank's chunk of a masked, wide-score case; outputs, grads and traffic."""
    case = scan_case(sum(lengths), dv=2, lead=lead, scores="wide", mask="leftpad", seed=len(lengths))
    part = chunk(lengths)
    results = []
    for strategy in sp.STRATEGIES:
        s = case.scores[..., part].clone().requires_grad_()
        v = case.values[..., part, :].clone().requires_grad_()
        with sp.track_traffic() as traffic:
            out = sp.prefix_softmax_attention(s, v, strategy=strategy)
        (out * upstream(case.values)[..., part, :]).sum().backward()
        results.append(
            {
                "strategy": strategy,
                "out": out.detach(),
                "ds": s.grad,
                "dv": v.grad,
                "sent": traffic.sent,
                "received": traffic.received,
            }
        )
    return results


def linear_vs_single(lengths: list[int], normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    n = sum(lengths)
    q, k = (torch.rand(2, 3, n, 4, generator=g, dtype=F64) + 0.1 for _ in range(2))
    v = torch.randn(2, 3, n, 5, generator=g, dtype=F64)
    part = chunk(lengths)
    local = sp.linear_attention(q[:, :, part], k[:, :, part], v[:, :, part], normalize=normalize)
    return local, causal_linear_attention(q, k, v, normalize=normalize)[:, :, part]


def chain_traffic(n_local: int) -> tuple[int, int]:
    s, v = torch.randn(3, n_local, dtype=F64), torch.randn(3, n_local, 4, dtype=F64)
    with sp.track_traffic() as traffic:
        sp.prefix_softmax_attention(s, v, strategy="chain")
    return traffic.sent, traffic.received


def traffic_by_route(n: int) -> dict[str, tuple[int, int, int]]:
    """``(sent, received, objects)`` this rank counts while ``n`` float64 numbers move by each route."""
    import threading

    import torch.distributed._functional_collectives as functional

    from attnverify.theory.mutants import sequence_parallel as mut

    x = torch.arange(float(n), dtype=F64) + dist.get_rank()
    world = dist.get_world_size()
    routes: dict[str, Any] = {route: partial(mut._ship, route, x, None) for route in mut.ROUTES}
    routes["functional all_gather"] = lambda: functional.wait_tensor(
        functional.all_gather_single(x, 0, dist.group.WORLD)
    )
    routes["backend allreduce"] = lambda: (
        dist.group.WORLD._get_backend(torch.device("cpu")).allreduce([x.clone()]).wait()
    )

    def in_a_thread() -> None:
        thread = threading.Thread(target=dist.all_gather, args=([torch.empty_like(x) for _ in range(world)], x))
        thread.start()
        thread.join()

    routes["all_gather in another thread"] = in_a_thread
    store = dist.distributed_c10d._get_default_store()
    peer = (dist.get_rank() + 1) % world

    def through_the_store() -> None:
        store.set(f"chunk {dist.get_rank()}", pickle.dumps(x))
        store.get(f"chunk {peer}")

    routes["store"] = through_the_store
    counts = {}
    for name, move in routes.items():
        with sp.track_traffic() as traffic:
            move()
        counts[name] = (traffic.sent, traffic.received, traffic.objects)
    return counts


def on_subgroup(lengths: list[int], ranks: list[int]) -> list[dict[str, Any]] | None:
    """Both strategies on a strict subgroup of the world (its group ranks are not its global ranks)."""
    group = dist.new_group(ranks)
    if dist.get_rank() not in ranks:
        return None
    case = scan_case(sum(lengths), dv=2, lead=(3,), scores="wide", mask="leftpad", seed=5)
    me = ranks.index(dist.get_rank())
    start = sum(lengths[:me])
    part = slice(start, start + lengths[me])
    results = []
    for strategy in sp.STRATEGIES:
        s = case.scores[..., part].clone().requires_grad_()
        v = case.values[..., part, :].clone().requires_grad_()
        out = sp.prefix_softmax_attention(s, v, group, strategy=strategy)
        (out * upstream(case.values)[..., part, :]).sum().backward()
        results.append({"out": out.detach(), "ds": s.grad, "dv": v.grad})
    linear = linear_vs_single_on(lengths, group, me)
    results.append({"linear": linear})
    return results


def linear_vs_single_on(lengths: list[int], group: Any, me: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    n = sum(lengths)
    q, k = (torch.randn(1, 2, n, 3, generator=g, dtype=F64) for _ in range(2))
    v = torch.randn(1, 2, n, 2, generator=g, dtype=F64)
    start = sum(lengths[:me])
    part = slice(start, start + lengths[me])
    local = sp.linear_attention(q[:, :, part], k[:, :, part], v[:, :, part], group)
    return local, causal_linear_attention(q, k, v)[:, :, part]


def raises_in_float32(scores: torch.Tensor, values: torch.Tensor, group: Any = None) -> torch.Tensor:
    """Raises on every rank for float32 (before any collective); right for float64."""
    if scores.dtype == torch.float32:
        raise ValueError("planted: no float32")
    return sp.prefix_softmax_attention(scores, values, group)


def raises_on_one_rank_in_float32(scores: torch.Tensor, values: torch.Tensor, group: Any = None) -> torch.Tensor:
    """For float32 the last rank raises while the others wait in the handshake; right for float64."""
    if scores.dtype == torch.float32 and dist.get_rank(group) == dist.get_world_size(group) - 1:
        raise ValueError("planted: last rank fails")
    return sp.prefix_softmax_attention(scores, values, group)


def gla_inputs(n: int, per_key: bool, normalize: bool) -> tuple[torch.Tensor, ...]:
    """``q, k, v, log_decay`` and an upstream gradient for ``n`` tokens (positive features when normalizing)."""
    g = torch.Generator().manual_seed(n)
    if normalize:
        q, k = (torch.rand(2, 3, n, 4, generator=g, dtype=F64) + 0.1 for _ in range(2))
    else:
        q, k = (torch.randn(2, 3, n, 4, generator=g, dtype=F64) for _ in range(2))
    v = torch.randn(2, 3, n, 5, generator=g, dtype=F64)
    decay = -0.2 * torch.rand(2, 3, n, *((4,) if per_key else ()), generator=g, dtype=F64)
    decay[:, 1, : n // 3] = 0.0  # no decay over a stretch of one head (gates of exactly 1)
    return q, k, v, decay, torch.randn(2, 3, n, 5, generator=g, dtype=F64)


def gla_on_rank(lengths: list[int], per_key: bool, normalize: bool, dtype: torch.dtype) -> dict[str, Any]:
    """This rank's output and input gradients (``q, k, v, log_decay``) of the gated sequence-parallel path."""
    *inputs, upstream_grad = gla_inputs(sum(lengths), per_key, normalize)
    part = chunk(lengths)
    local = [x[:, :, part].to(dtype).requires_grad_() for x in inputs]
    with sp.track_traffic() as traffic:
        out = sp.linear_attention(*local[:3], log_decay=local[3], normalize=normalize)
    (out * upstream_grad[:, :, part].to(dtype)).sum().backward()
    return {"out": out.detach(), "grads": [x.grad for x in local], "sent": traffic.sent}


def positive_decay_on_rank_1() -> None:
    q = torch.zeros(1, 2, 4, 3)
    sp.linear_attention(q, q, q, log_decay=torch.full((1, 2, 4), 0.5 if dist.get_rank() == 1 else -0.5))


def decay_layouts_differ() -> None:
    q = torch.zeros(1, 2, 4, 3)
    decay = torch.zeros(1, 2, 4) if dist.get_rank() == 0 else torch.zeros(1, 2, 4, 3)
    sp.linear_attention(q, q, q, log_decay=decay)
