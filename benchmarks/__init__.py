"""Benchmarks (benchmarks/README.md): named suites, each run correctness first and written as JSON, CSV and a plot.

``run_suite("aaren", Path("benchmarks/results"))`` is what ``attnverify bench`` calls.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from attnverify.benchmarks import aaren, dsf, lla, mpnn_vn, rfa, sequence_parallel
from attnverify.benchmarks.runner import Recorder, Suite, write_results

SUITES: dict[str, Suite] = {
    "aaren": aaren.SUITE,
    "sequence_parallel": sequence_parallel.SUITE,
    "dsf": dsf.SUITE,
    "mpnn_vn": mpnn_vn.SUITE,
    "lla": lla.SUITE,
    "rfa": rfa.SUITE,
}
"""Every suite by name; a :class:`Suite` is called with a :class:`Recorder`."""


def run_suite(name: str, out_dir: Path, *, quick: bool = False, progress: Callable[[str], None] | None = None) -> Path:
    """Run suite ``name`` (``quick``: small sizes, seconds) and write its results to ``out_dir``.

    ``progress`` is called after every measured point (:class:`~attnverify.benchmarks.runner.Recorder`).
    Returns the JSON path; the CSV (the timing rows) and PNG (the plot) sit next to it.
    Raises ``KeyError`` for an unknown suite and :class:`~attnverify.benchmarks.runner.CorrectnessError`
    when a fast configuration disagrees with its float64 reference.
    """
    if name not in SUITES:
        raise KeyError(f"unknown benchmark suite {name!r}; known suites: {', '.join(sorted(SUITES))}")
    suite = SUITES[name]
    recorder = Recorder(name, quick=quick, progress=progress)
    suite(recorder)
    return write_results(recorder.results(), Path(out_dir), suite.plot)


__all__ = ["SUITES", "run_suite"]
