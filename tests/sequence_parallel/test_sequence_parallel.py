"""Sequence parallelism on real gloo process groups: results, gradients, traffic, and no hangs.

Gradients are compared as vector-Jacobian products with a random upstream gradient against one
process; ``gradcheck`` cannot run per rank, since every rank's backward feeds the others' inputs.
"""

from __future__ import annotations

import time

import pytest
import torch

from attnverify.fast import prefix_softmax_attention
from attnverify.fast import sequence_parallel as sp
from attnverify.numerics import row_scale, scaled_error
from attnverify.reference.dsf import gla_recurrent
from attnverify.theory.aaren import scan_case
from tests.sequence_parallel import jobs

F64 = torch.float64
pytestmark = pytest.mark.timeout(300)  # on top of run_gloo's own deadlines


@pytest.mark.parametrize("lengths", [[5], [3, 0, 9, 1], [0, 7]])
def test_both_strategies_match_one_process(lengths: list[int]) -> None:
    lead = (2, 3)
    per_rank = sp.run_gloo(len(lengths), jobs.lengths_and_strategies, lengths, lead, timeout_s=60)
    case = scan_case(sum(lengths), dv=2, lead=lead, scores="wide", mask="leftpad", seed=len(lengths))
    s, v = case.scores.clone().requires_grad_(), case.values.clone().requires_grad_()
    out = prefix_softmax_attention(s, v)
    (out * jobs.upstream(case.values)).sum().backward()
    for i, strategy in enumerate(sp.STRATEGIES):
        got = torch.cat([rank[i]["out"] for rank in per_rank], -2)
        ds = torch.cat([rank[i]["ds"] for rank in per_rank], -1)
        dv = torch.cat([rank[i]["dv"] for rank in per_rank], -2)
        assert scaled_error(got, out, row_scale(case.values)) <= 1e-13, strategy
        assert scaled_error(ds, s.grad, float(case.values.abs().max())) <= 1e-12, strategy
        assert scaled_error(dv, v.grad, 1.0) <= 1e-12, strategy


@pytest.mark.parametrize("normalize", [False, True])
def test_linear_attention_matches_one_process(normalize: bool) -> None:
    per_rank = sp.run_gloo(3, jobs.linear_vs_single, [70, 0, 33], normalize, timeout_s=60)
    local, want = (torch.cat(parts, 2) for parts in zip(*per_rank, strict=True))
    assert local.shape == (2, 3, 103, 5)
    assert scaled_error(local, want, want.abs().max()) <= 1e-12


def test_chain_traffic_is_independent_of_length_and_ranks() -> None:
    """A middle rank of the chain sends and receives one summary each way: 3 rows × (4 + 2) × 8 bytes."""
    summary = 3 * (4 + 2) * 8
    for world in (3, 4):
        for n_local in (2, 50):
            traffic = sp.run_gloo(world, jobs.chain_traffic, n_local, timeout_s=60)
            assert traffic[0] == (summary, 0) and traffic[-1] == (0, summary)
            assert all(t == (summary, summary) for t in traffic[1:-1])


@pytest.mark.parametrize(
    ("job", "world", "message"),
    [
        (jobs.bad_values_on_rank_1, 3, "rank 1: values: expected shape"),
        (jobs.wrong_dtype_on_rank_0, 2, "rank 0: scores: expected dtype"),
        (jobs.mismatched_qkv_on_last_rank, 2, "rank 1: k: expected the shape of q"),
        (jobs.unknown_strategy, 2, "strategy: expected 'allgather' or 'chain'"),
    ],
)
def test_bad_input_raises_on_every_rank_without_hanging(job, world: int, message: str) -> None:
    start = time.monotonic()
    with pytest.raises(RuntimeError) as exc:
        sp.run_gloo(world, job, timeout_s=60)
    assert time.monotonic() - start < 40, "an error on one rank must not wait for a collective timeout"
    text = str(exc.value)
    assert text.count("Traceback (most recent call last)") == world, text  # every rank raised
    assert message in text, text


def test_mismatch_between_ranks_is_named() -> None:
    with pytest.raises(RuntimeError, match="Dv: expected every rank to agree"):
        sp.run_gloo(2, jobs.mismatched_dv, timeout_s=60)


def test_a_hung_collective_times_out() -> None:
    start = time.monotonic()
    with pytest.raises((RuntimeError, TimeoutError)):
        sp.run_gloo(2, jobs.hang_on_rank_0, timeout_s=5)
    assert time.monotonic() - start < 60


def test_uninitialized_process_group_is_a_clear_error() -> None:
    assert not torch.distributed.is_initialized()
    with pytest.raises(RuntimeError, match=r"torch\.distributed is not initialized"):
        sp.prefix_softmax_attention(torch.zeros(2, 3), torch.zeros(2, 3, 1))
    with pytest.raises(RuntimeError, match=r"torch\.distributed is not initialized"):
        sp.linear_attention(torch.zeros(1, 1, 3, 2), torch.zeros(1, 1, 3, 2), torch.zeros(1, 1, 3, 2))


def test_run_gloo_rejects_a_bad_world_size() -> None:
    with pytest.raises(ValueError, match="world_size: expected a positive int"):
        sp.run_gloo(0, jobs.chain_traffic, 1)


def test_track_traffic_restores_torch_distributed() -> None:
    """The wrapped process group, backend and store methods are back as they were after the blocks."""
    from torch._C._distributed_c10d import Backend

    before = {cls: dict(vars(cls)) for cls in (torch.distributed.ProcessGroup, Backend, torch.distributed.Store)}
    with sp.track_traffic() as outer, sp.track_traffic() as inner:
        assert torch.distributed.ProcessGroup.allgather is not before[torch.distributed.ProcessGroup]["allgather"]
        assert (
            Backend.send is not before[Backend]["send"]
            and torch.distributed.Store.get is not before[torch.distributed.Store]["get"]
        )
    assert {cls: dict(vars(cls)) for cls in before} == before
    assert outer.sent == inner.sent == outer.objects == 0


def test_track_traffic_counts_every_route() -> None:
    """Every way a payload can leave a rank is counted, at least its size, whatever the call or its alias."""
    n, world = 10, 3
    payload = n * 8
    counts = sp.run_gloo(world, jobs.traffic_by_route, n, timeout_s=60)
    exact = {  # (sent, received): each rank's payload reaches every other rank once
        "broadcast": ((world - 1) * payload,) * 2,
        "all_to_all": ((world - 1) * payload,) * 2,
        "renamed_all_gather": ((world - 1) * payload,) * 2,
        "send_recv": ((world - 1) * payload,) * 2,
        "functional all_gather": ((world - 1) * payload,) * 2,
        "all_gather in another thread": ((world - 1) * payload,) * 2,
        "backend allreduce": (payload, payload),  # called on the backend directly: an upper bound
    }
    for rank, by_route in enumerate(counts):
        assert set(by_route) >= set(exact) | {"gather_scatter", "all_gather_object", "store"}
        for route, moved in exact.items():
            assert by_route[route] == (*moved, 0), (rank, route, by_route[route])
        # gathered at rank 0, which scatters the whole sequence (world payloads) to each other rank
        root = ((world - 1) * world * payload, (world - 1) * payload, 0)
        assert by_route["gather_scatter"] == (root if rank == 0 else (payload, world * payload, 0)), rank
        for route in ("all_gather_object", "store"):  # pickled: at least the payload, each way
            assert by_route[route][:2] == (0, 0) and by_route[route][2] >= 2 * payload, (rank, route, by_route[route])


@pytest.mark.parametrize("strategy", sp.STRATEGIES)
def test_strategies_on_a_strict_subgroup(strategy: str) -> None:
    """Ranks 1 and 2 of 3 (group ranks 0 and 1): chain messages go to global ranks, chunk order is group order."""
    lengths, ranks = [6, 9], [1, 2]
    per_rank = sp.run_gloo(3, jobs.on_subgroup, lengths, ranks, timeout_s=60)
    assert per_rank[0] is None
    i = sp.STRATEGIES.index(strategy)
    case = scan_case(sum(lengths), dv=2, lead=(3,), scores="wide", mask="leftpad", seed=5)
    s, v = case.scores.clone().requires_grad_(), case.values.clone().requires_grad_()
    out = prefix_softmax_attention(s, v)
    (out * jobs.upstream(case.values)).sum().backward()
    got = torch.cat([per_rank[r][i]["out"] for r in ranks], -2)
    ds = torch.cat([per_rank[r][i]["ds"] for r in ranks], -1)
    dv = torch.cat([per_rank[r][i]["dv"] for r in ranks], -2)
    assert scaled_error(got, out, row_scale(case.values)) <= 1e-13
    assert scaled_error(ds, s.grad, float(case.values.abs().max())) <= 1e-12
    assert scaled_error(dv, v.grad, 1.0) <= 1e-12
    local, want = (torch.cat(parts, 2) for parts in zip(*[per_rank[r][-1]["linear"] for r in ranks], strict=True))
    assert scaled_error(local, want, want.abs().max()) <= 1e-12


@pytest.mark.parametrize(
    ("lengths", "per_key", "normalize"),
    [([11], True, False), ([9, 0, 14], False, True), ([1, 17], True, True), ([20, 3, 6], True, False)],
)
def test_gated_linear_attention_matches_one_process(lengths: list[int], per_key: bool, normalize: bool) -> None:
    """Output and gradients (``log_decay``'s included) against the single-process recurrence, 1 to 3 ranks."""
    per_rank = sp.run_gloo(len(lengths), jobs.gla_on_rank, lengths, per_key, normalize, F64, timeout_s=60)
    *inputs, grad = jobs.gla_inputs(sum(lengths), per_key, normalize)
    leaves = [x.clone().requires_grad_() for x in inputs]
    want = gla_recurrent(*leaves[:3], leaves[3], normalize=normalize)[0]
    (want * grad).sum().backward()
    want = want.detach()
    got = torch.cat([rank["out"] for rank in per_rank], 2)
    assert got.shape == want.shape
    assert scaled_error(got, want, want.abs().max()) <= 1e-13
    for i, leaf in enumerate(leaves):
        assert leaf.grad is not None
        grads = torch.cat([rank["grads"][i] for rank in per_rank], 2)
        assert scaled_error(grads, leaf.grad, leaf.grad.abs().max()) <= 1e-12, i
    if len(lengths) > 1:  # one Dk × (Dv [+ 1] + 1) summary to each other rank, whatever the chunk lengths
        summary = 2 * 3 * 4 * (5 + int(normalize) + 1) * 8
        assert all(rank["sent"] == (len(lengths) - 1) * summary for rank in per_rank)


def test_gated_linear_attention_in_float32() -> None:
    per_rank = sp.run_gloo(2, jobs.gla_on_rank, [13, 30], True, False, torch.float32, timeout_s=60)
    *inputs, _ = jobs.gla_inputs(43, True, False)
    want = gla_recurrent(*inputs)[0]
    got = torch.cat([rank["out"] for rank in per_rank], 2).to(F64)
    assert got.dtype == F64 and scaled_error(got, want, want.abs().max()) <= 1e-5


def test_gated_linear_attention_bad_decay_is_named_on_every_rank() -> None:
    with pytest.raises(RuntimeError, match="log_decay: expected natural-log decays <= 0"):
        sp.run_gloo(2, jobs.positive_decay_on_rank_1, timeout_s=60)
    with pytest.raises(RuntimeError, match="log_decay: expected every rank to agree"):
        sp.run_gloo(2, jobs.decay_layouts_differ, timeout_s=60)
