"""The benchmark runner: a quick ``aaren`` run writes well-formed results that the book can plot."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import matplotlib
import pytest
from matplotlib.figure import Figure

from attnverify.benchmarks import SUITES, run_suite
from attnverify.benchmarks.aaren import load_latest, plot
from attnverify.benchmarks.runner import ROW_FIELDS

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_suite("aaren", tmp_path_factory.mktemp("bench"), quick=True)


def test_quick_aaren_results_schema(quick_run: Path) -> None:
    results = json.loads(quick_run.read_text())
    assert quick_run.name == f"aaren-cpu-{results['date']}-quick.json"
    assert {"suite", "date", "quick", "environment", "correctness", "rows", "targets", "skipped"} <= results.keys()
    assert results["suite"] == "aaren" and results["quick"] is True
    env = results["environment"]
    assert {"timestamp", "platform", "processor", "cpu_count", "torch_threads", "torch", "numpy"} <= env.keys()

    assert results["correctness"], "no correctness check was recorded"
    for check in results["correctness"]:
        assert check.keys() >= {"name", "max_error", "tolerance", "passed"}
        assert check["passed"] is True and check["max_error"] <= check["tolerance"]

    rows = results["rows"]
    assert {r["method"] for r in rows} >= {"prefix_softmax_attention", "cumsum", "quadratic_reference", "aaren_step"}
    for row in rows:
        assert set(ROW_FIELDS) <= row.keys()
        assert row["pass"] in ("forward", "forward+backward", "step")
        assert math.isfinite(row["seconds"]) and row["seconds"] > 0

    names = [t["name"][:2] for t in results["targets"]]
    assert names[:3] == ["A:", "B:", "C:"]
    for target in results["targets"]:
        assert math.isfinite(target["ratio"]) and target["ratio"] > 0
        assert target["comparison"] in ("<=", ">=") and isinstance(target["met"], bool)

    with open(quick_run.with_suffix(".csv"), newline="") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert quick_run.with_suffix(".png").stat().st_size > 0


def test_plot_from_latest_results(quick_run: Path) -> None:
    results = load_latest(quick_run.parent)
    assert results["quick"] is True
    figure = plot(results)
    assert isinstance(figure, Figure)
    assert figure.axes[0].get_lines(), "the figure has no lines"


def test_unknown_suite_raises_key_error(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="unknown benchmark suite 'nope'"):
        run_suite("nope", tmp_path)
    assert "aaren" in SUITES
    assert not list(tmp_path.iterdir())
