"""The benchmark runner: quick ``aaren`` and ``sequence_parallel`` runs write well-formed results that plot;
``attnverify bench`` shows its progress on stderr and a table of the targets when done."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest
import torch
from click.testing import CliRunner, Result
from matplotlib.figure import Figure
from rich.console import Console

from attnverify.benchmarks import SUITES, run_suite
from attnverify.benchmarks import sequence_parallel as sp_bench
from attnverify.benchmarks.aaren import plot
from attnverify.benchmarks.runner import ROW_FIELDS, Recorder, Suite, expected_points, load_latest, points, watch
from attnverify.cli import cli

matplotlib.use("Agg")


def _bench(out: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["bench", "--quick", "--out", str(out), *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def quick_cli(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    """One quick ``aaren`` run through ``attnverify bench``, into a fresh ``--out`` folder."""
    out = tmp_path_factory.mktemp("bench") / "nested" / "out"
    result = _bench(out)
    assert result.exit_code == 0, result.output
    (json_path,) = out.glob("aaren-*-quick.json")
    return json_path, result


@pytest.fixture(scope="module")
def quick_run(quick_cli: tuple[Path, Result]) -> Path:
    return quick_cli[0]


def test_bench_progress_on_stderr_and_targets_on_stdout(quick_cli: tuple[Path, Result]) -> None:
    json_path, result = quick_cli
    results = json.loads(json_path.read_text())
    n = points(results)
    assert n == len(results["correctness"]) + len(results["rows"]) > 10
    # stderr is not a terminal here, so rich prints the bar once, at its end: full, every point counted
    assert re.search(rf"aaren .* {n}/{n} .*done", result.stderr), result.stderr
    assert "done" not in result.stdout and "wrote" not in result.stderr
    table = result.stdout
    assert results["targets"]
    for target in results["targets"]:
        row = next(line for line in table.splitlines() if target["name"][:40] in line)
        verdict = "met" if target["met"] else "missed"
        assert f"{target['ratio']:.3g}" in row and re.search(rf"\b{verdict}\b", row), row
        assert f"{target['comparison']} {target['target']:g}" in row
    assert f"wrote {json_path}" in result.stdout


def test_bench_out_folder_is_honoured_and_its_default_documented(quick_cli: tuple[Path, Result]) -> None:
    json_path, _ = quick_cli
    assert json_path.parent.name == "out" and json_path.with_suffix(".csv").is_file()
    help_text = CliRunner().invoke(cli, ["bench", "--help"]).output
    assert re.search(r"--out DIRECTORY.*\[default:\s+benchmarks/results\]", help_text, re.S), help_text
    # the next run of the same suite in the same folder knows how many points to expect
    assert expected_points("aaren", True, json_path.parent) == points(json.loads(json_path.read_text()))
    assert expected_points("aaren", False, json_path.parent) is None


def test_progress_bar_advances_over_every_point() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with watch("demo", 2, console=console) as progress:
        progress("checked first")
        progress("timed second")
        progress("timed third")  # more points than expected: the total follows
    text = out.getvalue()
    lines = re.split(r"[\r\n]", re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", text))
    states = [m.groups() for line in lines if (m := re.search(r"(\d+/\d+) \d+:\d\d:\d\d (.*?)\s*$", line))]
    assert ("1/2", "checked first") in states and ("2/2", "timed second") in states, states
    assert ("3/3", "timed third") in states and states[-1][0] == "3/3", states


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
    results = load_latest(quick_run.parent, "aaren")
    assert results["quick"] is True
    figure = plot(results)
    assert isinstance(figure, Figure)
    assert figure.axes[0].get_lines(), "the figure has no lines"


def test_unknown_suite_raises_key_error(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="unknown benchmark suite 'nope'"):
        run_suite("nope", tmp_path)
    assert "aaren" in SUITES
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def quick_sp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_suite("sequence_parallel", tmp_path_factory.mktemp("bench-sp"), quick=True)


def test_quick_sequence_parallel_results(quick_sp_run: Path) -> None:
    results = json.loads(quick_sp_run.read_text())
    assert quick_sp_run.name == f"sequence_parallel-cpu-{results['date']}-quick.json"
    assert {"correctness", "rows", "targets", "skipped", "traffic", "naive_traffic", "notes"} <= results.keys()
    ranks = set(sp_bench.QUICK.ranks)

    # every configuration checked (and passed) before timing: 3 kinds x (sweep + timed length) per P
    assert len(results["correctness"]) >= len(sp_bench.KINDS) * len(sp_bench.QUICK.n_locals) * len(ranks)
    assert all(c["passed"] and c["max_error"] <= c["tolerance"] for c in results["correctness"])

    rows = results["rows"]
    timed = {(r["method"], r["pass"], r["ranks"]) for r in rows}
    for kind in sp_bench.KINDS:
        assert {(kind.name, pass_, p) for pass_ in ("forward", "forward+backward") for p in ranks} <= timed
    assert {(m, "forward", 1) for m in sp_bench.BASELINE.values()} <= timed
    for row in rows:
        assert set(ROW_FIELDS) <= row.keys() and math.isfinite(row["seconds"]) and row["seconds"] > 0
        assert row["ratio_to_single_process"] > 0 and row["ranks"] * row["n_local"] == row["n"]

    traffic = results["traffic"]
    assert {(r["P"], r["rank"]) for r in traffic} == {(p, r) for p in ranks for r in range(p)}
    for record in traffic:
        moved = [record[f] for f in sp_bench.FIELDS]
        assert (max(moved) == 0) == (record["P"] == 1)  # one rank moves nothing; two always move something
    assert results["targets"] and all(
        t["met"] and t["ratio"] == 0 and t["comparison"] == "<=" for t in results["targets"]
    )

    with open(quick_sp_run.with_suffix(".csv"), newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and {"ranks", "n_local", "ratio_to_single_process"} <= table[0].keys()
    figure = sp_bench.plot(results)
    assert isinstance(figure, Figure) and len(figure.axes) == 2
    assert all(ax.get_lines() for ax in figure.axes), "a panel has no lines"
    assert quick_sp_run.with_suffix(".png").stat().st_size > 0
    assert "sequence_parallel" in SUITES


def test_torchrun_entry_point_arguments() -> None:
    args = sp_bench.parser().parse_args(["--torchrun", "--device", "cpu", "--n-total", "1024", "--reps", "3"])
    assert (args.device, args.backend, args.n_total, args.linear_n, args.reps) == ("cpu", None, 1024, 16384, 3)
    with pytest.raises(SystemExit):
        sp_bench.parser().parse_args([])  # --torchrun is required: the module is only an entry point


@pytest.mark.slow
def test_torchrun_entry_point_on_cpu_gloo() -> None:
    """The ``torchrun`` path end to end with gloo on CPU (the NCCL/CUDA specifics need GPUs)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", sp_bench.__name__]
    flags = ["--torchrun", "--device", "cpu", "--n-total", "256", "--linear-n", "128", "--reps", "2"]
    done = subprocess.run([*command, *flags], capture_output=True, text=True, timeout=300, check=True)
    document = json.loads(done.stdout)
    assert document["world_size"] == 2 and document["backend"] == "gloo"
    assert len(document["correctness"]) == 2 * len(sp_bench.KINDS) and all(c["passed"] for c in document["correctness"])
    assert {t["rank"] for t in document["timing"]} == {0, 1} and len(document["traffic"]) == 2 * len(sp_bench.KINDS)


def test_bench_exits_1_on_a_correctness_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong configuration stops the run before anything is timed or written."""

    def wrong(rec: Recorder) -> None:
        rec.check("a wrong kernel", [torch.ones(3)], [torch.zeros(3) + 2], tol=1e-6)
        rec.time(lambda: None, method="never", pass_="forward", n=1, batch_heads=1, dv=1, dtype=torch.float32)

    monkeypatch.setitem(SUITES, "wrong", Suite("wrong", wrong))
    result = _bench(tmp_path / "out", "--suite", "wrong")
    assert result.exit_code == 1
    assert "✗ wrong: a wrong kernel: relative error" in result.stderr and "wrote" not in result.stdout
    assert not (tmp_path / "out").exists()
