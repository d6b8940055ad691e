"""A quick ``lla`` benchmark run writes well-formed results: correctness first, the targets, CG iterations."""

from __future__ import annotations

import json
from pathlib import Path

from attnverify.benchmarks import run_suite


def test_quick_lla_suite(tmp_path: Path) -> None:
    path = run_suite("lla", tmp_path, quick=True)
    results = json.loads(path.read_text())
    assert results["correctness"] and all(c["passed"] for c in results["correctness"])
    names = [t["name"][:2] for t in results["targets"]]
    assert names == ["B:", "C:"]
    assert [s["name"] for s in results["skipped"]] == ["A: peak extra memory"]
    needed = results["cg_iterations_to_1e-4_vs_direct"]["needed"]
    assert set(needed) == {"0.001", "0.01", "0.1", "1", "10"}
    assert all(n is not None for n in needed.values())
