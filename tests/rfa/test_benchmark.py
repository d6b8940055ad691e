"""A quick ``rfa`` benchmark run checks correctness first and writes well-formed results that plot."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

from attnverify.benchmarks import run_suite

matplotlib.use("Agg")


def test_quick_run_results(tmp_path: Path) -> None:
    path = run_suite("rfa", tmp_path, quick=True)
    results = json.loads(path.read_text())
    assert results["suite"] == "rfa" and results["quick"] is True
    assert results["correctness"] and all(c["passed"] for c in results["correctness"])
    assert [t["name"][:2] for t in results["targets"]] == ["A:", "A:", "B:"]
    assert all(t["ratio"] > 0 for t in results["targets"])
    assert results["speed_of_light"]["features_over_gemm"] > 0
    assert {r["method"] for r in results["rows"]} >= {"random_feature_attention_features", "per_head_loop"}
    assert path.with_suffix(".png").stat().st_size > 0 and path.with_suffix(".csv").stat().st_size > 0
