"""The sequence-parallel claims' own machinery: each (implementation, dtype) is judged on its own, and
bugs that only show when two non-trivial totals meet are caught with two and three ranks, not only four."""

from __future__ import annotations

import pytest
import torch

from attnverify.evidence import Recorder
from attnverify.fast import sequence_parallel as sp
from attnverify.registry import CheckContext, Implementation
from attnverify.theory import sequence_parallel as claims
from attnverify.theory.mutants import sequence_parallel as mut
from tests.sequence_parallel import jobs

F64, F32 = torch.float64, torch.float32
pytestmark = pytest.mark.timeout(300)


def test_each_implementation_and_dtype_is_judged_on_its_own() -> None:
    """float32 runs first; implementations that raise there (on every rank, or on one rank while the others
    wait in a collective) still get every float64 case judged, and so does the next implementation."""
    spec = claims.AAREN_SPEC
    worlds = [((0, 1), spec.make_cases((3, 5), 0))]
    impls = [
        ("raises on every rank", jobs.raises_in_float32),
        ("raises on one rank", jobs.raises_on_one_rank_in_float32),
        ("right", sp.prefix_softmax_attention),
    ]
    timeout = 10.0  # long enough for a loaded machine; the waiting rank spends it once
    dims = (spec.seq_dims, spec.out_seq_dim)
    per_rank = sp.run_gloo(
        2, claims.rank_job, impls, worlds, [F32, F64], *dims, timeout, timeout_s=timeout, deadline_s=60
    )
    for rank, records in enumerate(per_rank):
        by_pair: dict[tuple[str, str], list[dict]] = {}
        for r in records:
            by_pair.setdefault((r["impl"], r["dtype"]), []).append(r)
        assert len(by_pair) == 6, (rank, sorted(by_pair))
        for (impl, dtype), got in by_pair.items():
            fails = impl != "right" and dtype == "float32"
            if fails:  # stops at its first case
                assert len(got) == 1 and "error" in got[0], (rank, impl, dtype, got)
            else:
                assert len(got) == 2 and all("grads" in r and "error" not in r for r in got), (rank, impl, dtype)


def test_unrescaled_prefixes_are_caught_with_two_and_three_ranks() -> None:
    """Totals summed without rescaling need two non-empty earlier chunks (P = 3 has no empty chunk); a prefix
    folded in without rescaling is wrong from P = 2 on."""
    rec = Recorder()
    impls = [
        Implementation("unrescaled totals", mut.unrescaled_totals, (F64,)),
        Implementation("prefix not rescaled", mut.prefix_not_rescaled, (F64,)),
    ]
    claims.run_spec(rec, impls, CheckContext(), claims.AAREN_SPEC)
    failed = {f.name for f in rec.findings if not f.passed}
    for impl, worlds in (("unrescaled totals", (3, 4)), ("prefix not rescaled", (2, 3, 4))):
        for p in worlds:
            assert f"{impl} [float64] P={p}: forward vs single process" in failed, (impl, p, sorted(failed))
