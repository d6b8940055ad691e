"""A quick ``mpnn_vn`` benchmark run checks correctness first and writes well-formed results that plot."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

from attnverify.benchmarks import run_suite

matplotlib.use("Agg")


def test_quick_run_results(tmp_path: Path) -> None:
    path = run_suite("mpnn_vn", tmp_path, quick=True)
    results = json.loads(path.read_text())
    assert results["suite"] == "mpnn_vn" and results["quick"] is True
    assert results["correctness"] and all(c["passed"] for c in results["correctness"])
    names = [t["name"][:2] for t in results["targets"]]
    assert names == ["A:", "A:", "B:", "C:", "D:"]
    assert all(t["ratio"] > 0 for t in results["targets"])
    methods = {r["method"] for r in results["rows"] if r.get("case") == "sweep"}
    assert {"segment_linear_attention", "dense_quadratic", "projections"} <= methods
    assert path.with_suffix(".png").stat().st_size > 0 and path.with_suffix(".csv").stat().st_size > 0
