"""Shared benchmark machinery (benchmarks/README.md): environment, correctness first, timing, JSON/CSV output.

A suite receives a :class:`Recorder`.  It checks each fast configuration against a float64
reference with :meth:`Recorder.check` (a failure raises :class:`CorrectnessError`, so a wrong
kernel is never timed), times with :meth:`Recorder.time` (``torch.utils.benchmark`` on CPU,
``triton.testing.do_bench`` on CUDA), and states every figure as a ratio of two timings of the
same run with :meth:`Recorder.target`.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from torch import Tensor
from torch.utils.benchmark import Timer

from attnverify.numerics import scaled_error

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ROW_FIELDS = ("method", "pass", "device", "dtype", "batch_heads", "n", "dv", "seconds")
"""Columns of a timing row, in CSV order."""

THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
"""Torch threads for CPU timings: every core this process may run on."""


class CorrectnessError(RuntimeError):
    """A fast configuration disagrees with its float64 reference; it is not timed."""


@dataclass(frozen=True)
class Suite:
    """A named benchmark: ``run`` fills a :class:`Recorder`; ``plot`` draws the results dict, if any."""

    name: str
    run: Callable[[Recorder], None]
    plot: Callable[[dict[str, Any]], Figure] | None = None

    def __call__(self, recorder: Recorder) -> None:
        self.run(recorder)


def measure(fn: Callable[[], object], *, device: str = "cpu", min_run_time: float = 0.5) -> float:
    """Median seconds per call of ``fn``: ``blocked_autorange`` on CPU (all cores), ``do_bench`` on CUDA."""
    if device == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, return_mode="median")) / 1e3
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=THREADS)
    return float(timer.blocked_autorange(min_run_time=min_run_time).median)


def interleaved(fns: Sequence[Callable[[], object]], repeats: int, *, warmup: bool = True) -> list[list[float]]:
    """Seconds per call of each of ``fns`` (``time.perf_counter``), called in turn ``repeats`` times, after one
    warm-up call each when ``warmup``; ``torch`` on :data:`THREADS` threads, as :func:`measure` runs.  For calls
    too slow for ``blocked_autorange``, and for ratios whose two sides must share each slow phase of a shared
    machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        if warmup:
            for fn in fns:
                fn()
        seconds: list[list[float]] = [[] for _ in fns]
        for _ in range(repeats):
            for fn, out in zip(fns, seconds, strict=True):
                start = time.perf_counter()
                fn()
                out.append(time.perf_counter() - start)
        return seconds
    finally:
        torch.set_num_threads(threads)


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``); ``None`` when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: other work on the machine skews CPU timings."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def environment() -> dict[str, Any]:
    """What the timings depend on; no hostname or user names."""
    cuda = torch.cuda.is_available()
    return {
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": THREADS,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": _package_version("triton"),
        "numpy": _package_version("numpy"),
        "cuda_device": torch.cuda.get_device_name() if cuda else None,
        "load_average": _load_average(),
    }


class Recorder:
    """Collects one run of a suite: correctness records, timing rows, target ratios and skips.

    ``progress``, if given, is called with a short label after every measured point: each
    correctness check and each timing row (see :func:`watch`).
    """

    def __init__(self, suite: str, *, quick: bool, progress: Callable[[str], None] | None = None) -> None:
        self.suite = suite
        self.progress = progress
        self.quick = quick
        self.min_run_time = 0.02 if quick else 0.5
        self.date = dt.date.today().isoformat()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.environment = environment()
        self.correctness: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []
        self.targets: list[dict[str, Any]] = []
        self.skipped: list[dict[str, str]] = []
        self.extra: dict[str, Any] = {}
        """Suite-specific top-level keys of the JSON document (they may not shadow the standard ones)."""
        self._start = time.perf_counter()

    def check(self, name: str, outputs: Sequence[Tensor], references: Sequence[Tensor], tol: float) -> None:
        """Record the worst :func:`relative_error` over output/reference pairs; raise if above ``tol``."""
        error = max(
            scaled_error(o.cpu(), r.cpu(), r.detach().abs().max().clamp_min(1e-300) if r.numel() else 1.0)
            for o, r in zip(outputs, references, strict=True)
        )
        passed = error <= tol
        self.correctness.append({"name": name, "max_error": error, "tolerance": tol, "passed": passed})
        self._point(f"checked {name}")
        if not passed:
            raise CorrectnessError(f"{self.suite}: {name}: relative error {error:.3g} > tolerance {tol:.3g}")

    def time(
        self,
        fn: Callable[[], object],
        *,
        method: str,
        pass_: str,
        n: int,
        batch_heads: int,
        dv: int,
        dtype: torch.dtype,
        device: str = "cpu",
        per_call: int = 1,
        **extra: Any,
    ) -> float:
        """Time ``fn`` with :func:`measure`, record a row, return seconds (per item when ``fn`` does ``per_call``)."""
        seconds = measure(fn, device=device, min_run_time=self.min_run_time) / per_call
        return self.record(
            seconds,
            method=method,
            pass_=pass_,
            n=n,
            batch_heads=batch_heads,
            dv=dv,
            dtype=dtype,
            device=device,
            **extra,
        )

    def record(
        self,
        seconds: float,
        *,
        method: str,
        pass_: str,
        n: int,
        batch_heads: int,
        dv: int,
        dtype: torch.dtype,
        device: str = "cpu",
        **extra: Any,
    ) -> float:
        """Record a row of ``seconds`` measured elsewhere (e.g. inside spawned ranks); return ``seconds``.

        ``extra`` keys (suite-specific columns) follow :data:`ROW_FIELDS` in the row and in the CSV.
        """
        row = {
            "method": method,
            "pass": pass_,
            "device": device,
            "dtype": str(dtype).removeprefix("torch."),
            "batch_heads": batch_heads,
            "n": n,
            "dv": dv,
            "seconds": seconds,
        }
        if clash := row.keys() & extra.keys():
            raise ValueError(f"extra: {sorted(clash)} are standard row fields")
        self.rows.append({**row, **extra})
        self._point(f"timed {method} {pass_} N={n} {row['dtype']}")
        return seconds

    def _point(self, label: str) -> None:
        if self.progress is not None:
            self.progress(label)

    def target(self, name: str, ratio: float, target: float, comparison: str, details: dict[str, Any]) -> None:
        """Record ``ratio`` against ``target`` (``comparison`` is ``"<="`` or ``">="``)."""
        if comparison not in ("<=", ">="):
            raise ValueError(f"comparison: expected '<=' or '>=', got {comparison!r}")
        met = ratio <= target if comparison == "<=" else ratio >= target
        self.targets.append(
            {"name": name, "ratio": ratio, "target": target, "comparison": comparison, "met": met, "details": details}
        )

    def skip(self, name: str, reason: str) -> None:
        """Record a measurement that was not run, and why."""
        self.skipped.append({"name": name, "reason": reason})

    def results(self) -> dict[str, Any]:
        """The JSON document of the run."""
        self.environment["load_average_end"] = _load_average()
        results = {
            "suite": self.suite,
            "date": self.date,
            "quick": self.quick,
            "device": self.device,
            "wall_seconds": time.perf_counter() - self._start,
            "environment": self.environment,
            "correctness": self.correctness,
            "rows": self.rows,
            "targets": self.targets,
            "skipped": self.skipped,
        }
        if clash := results.keys() & self.extra.keys():
            raise ValueError(f"extra: {sorted(clash)} are standard keys of the results")
        return {**results, **self.extra}


def timing_axes(ax: Axes, results: dict[str, Any], title: str, xlabel: str, ylabel: str) -> None:
    """The frame every timing sweep shares: log-log axes, a grid, the legend, and a title whose second line
    names the machine, threads, torch version and date of the run (quick runs say so)."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    env = results["environment"]
    quick = " (quick run)" if results["quick"] else ""
    ax.set_title(
        f"{title}{quick}\n{env['processor']}, {env['torch_threads']} threads, torch {env['torch']}, {results['date']}",
        fontsize="medium",
    )


def write_results(results: dict[str, Any], out_dir: Path, plot: Callable[[dict[str, Any]], Figure] | None) -> Path:
    """Write ``<suite>-<device>-<date>[-quick]`` ``.json``, ``.csv`` (the rows) and ``.png``; return the JSON path.

    The CSV's columns are :data:`ROW_FIELDS`, then any extra row keys in first-seen order (blank where absent).

    The plot is skipped (with a warning) when matplotlib is not installed.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{results['suite']}-{results['device']}-{results['date']}" + ("-quick" if results["quick"] else "")
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    extra_fields = dict.fromkeys(k for row in results["rows"] for k in row if k not in ROW_FIELDS)
    with open(out_dir / f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*ROW_FIELDS, *extra_fields])
        writer.writeheader()
        writer.writerows(results["rows"])
    if plot is not None and importlib.util.find_spec("matplotlib") is None:
        warnings.warn(f"{results['suite']}: matplotlib is not installed; no plot written", stacklevel=2)
    elif plot is not None:
        plot(results).savefig(out_dir / f"{stem}.png", dpi=120, bbox_inches="tight")
    return json_path


def load_latest(results_dir: Path, suite: str) -> dict[str, Any]:
    """The newest results of ``suite`` in ``results_dir``; a full run wins over a quick one of the same date."""
    runs = [json.loads(p.read_text()) for p in Path(results_dir).glob(f"{suite}-*.json")]
    runs = [r for r in runs if r.get("suite") == suite]
    if not runs:
        raise FileNotFoundError(f"no results of suite {suite!r} in {results_dir}")
    return max(runs, key=lambda r: (r["date"], not r["quick"], r["environment"]["timestamp"]))


def points(results: dict[str, Any]) -> int:
    """Measured points of a run: correctness checks and timing rows (what :func:`watch` counts)."""
    return len(results["correctness"]) + len(results["rows"])


def expected_points(suite: str, quick: bool, *results_dirs: Path) -> int | None:
    """Points of the newest earlier run of ``suite`` on this device with the same ``quick``; ``None`` if none."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    earlier = [
        json.loads(p.read_text())
        for d in dict.fromkeys(Path(d).resolve() for d in results_dirs)
        for p in d.glob(f"{suite}-{device}-*.json")
    ]
    earlier = [r for r in earlier if r.get("suite") == suite and r.get("quick") == quick]
    if not earlier:
        return None
    return points(max(earlier, key=lambda r: r["environment"]["timestamp"]))


@contextlib.contextmanager
def watch(suite: str, total: int | None, console: Console | None = None) -> Iterator[Callable[[str], None]]:
    """A rich progress bar (on stderr by default) over a run's measured points; yields the ``progress`` callback.

    ``total`` is the expected number of points (:func:`expected_points`; ``None``: unknown, the bar
    pulses); a run that measures more raises it, and the bar ends full.
    """
    with Progress(
        TextColumn(f"[bold]{suite}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}", markup=False),
        console=console or Console(stderr=True),
    ) as bar:
        task = bar.add_task("starting", total=total)

        def advance(label: str) -> None:
            done = bar.tasks[0].completed + 1
            if total is not None and done > (bar.tasks[0].total or 0):
                bar.update(task, total=done)
            bar.update(task, advance=1, description=label, refresh=True)

        yield advance
        bar.update(task, total=bar.tasks[0].completed, description="done")


def summary_table(results: dict[str, Any]) -> Table:
    """Each target of a run: its measured ratio, the target, and whether it was met."""
    table = Table(
        title=f"{results['suite']} on {results['device']}" + (" (quick sizes)" if results["quick"] else ""),
        caption=f"{points(results)} points measured in {results['wall_seconds']:.0f} s; "
        f"{len(results['skipped'])} measurement(s) not run (see the JSON's 'skipped')",
    )
    table.add_column("target", overflow="fold")
    table.add_column("ratio", justify="right")
    table.add_column("needed", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    for target in results["targets"]:
        table.add_row(
            Text(target["name"]),
            f"{target['ratio']:.3g}",
            f"{target['comparison']} {target['target']:g}",
            "[green]met[/]" if target["met"] else "[red]missed[/]",
        )
    return table
