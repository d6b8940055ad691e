"""Functions that spawned gloo ranks run (module level, so that they pickle by reference)."""

from __future__ import annotations

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
