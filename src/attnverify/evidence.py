"""Evidence: what a check reports.  A list of findings, each a number against a tolerance.

A finding passes when ``metric <= tolerance`` (NaN never passes).  The evidence of a claim
holds when every finding passes; its headline metric is the *binding* finding, the one
closest to (or furthest past) its tolerance.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


class SymbolicStep(Protocol):
    """A step of a symbolic proof (``attnverify.proofs_checks.symbolic.SymbolicStep`` has this shape)."""

    name: str

    @property
    def holds(self) -> bool: ...

    def latex(self) -> str: ...


class ImplementationError(Exception):
    """An implementation under test raised; see :func:`invoke`."""


def invoke(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call an implementation under test, marking any exception it raises as its own."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        raise ImplementationError(f"{getattr(fn, '__name__', fn)!s} raised {type(exc).__name__}") from exc


@dataclass(frozen=True)
class Finding:
    """One measured fact: ``metric`` (an error, a count of failures...) against ``tolerance``."""

    name: str
    metric: float
    tolerance: float
    note: str = ""

    @property
    def passed(self) -> bool:
        return not math.isnan(self.metric) and self.metric <= self.tolerance

    @property
    def ratio(self) -> float:
        """``metric / tolerance`` (``inf`` for a failure against a zero tolerance or a NaN metric)."""
        if math.isnan(self.metric):
            return math.inf
        if self.tolerance == 0:
            return 0.0 if self.metric == 0 else math.inf
        return self.metric / self.tolerance


@dataclass(frozen=True)
class Evidence:
    """The result of one claim's check (CONTRIBUTING.md, "Claims, evidence, mutants")."""

    holds: bool
    metric: float
    tolerance: float
    cases: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def findings(self) -> list[Finding]:
        return [Finding(**f) for f in self.details.get("findings", [])]

    def failures(self) -> list[Finding]:
        return [f for f in self.findings if not f.passed]


class Worst:
    """The worst of several measurements, by ``metric / tolerance`` (see :meth:`Recorder.worst`)."""

    def __init__(self) -> None:
        self.finding: tuple[float, float, str] | None = None
        self.count = 0

    def add(self, metric: float, tolerance: float, label: str) -> None:
        self.count += 1
        ratio = Finding("", metric, tolerance).ratio
        if self.finding is None or ratio > Finding("", *self.finding[:2]).ratio:
            self.finding = (float(metric), float(tolerance), label)


class Recorder:
    """Collects findings while a check runs, then turns them into :class:`Evidence`."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.cases = 0
        self.notes: dict[str, Any] = {}
        self._start = time.perf_counter()

    def record(self, name: str, metric: float, tolerance: float, note: str = "") -> bool:
        """Add a finding; returns whether it passed."""
        finding = Finding(name, float(metric), float(tolerance), note)
        self.findings.append(finding)
        return finding.passed

    def require(self, name: str, condition: bool, note: str = "") -> bool:
        """A yes/no finding: metric 0 when ``condition`` holds, 1 otherwise, tolerance 0."""
        return self.record(name, 0.0 if condition else 1.0, 0.0, note)

    def symbolic(self, steps: Sequence[SymbolicStep], what: str) -> bool:
        """One finding for a list of sympy steps: how many fail."""
        failed = [s.name for s in steps if not s.holds]
        self.cases += len(steps)
        return self.record(
            f"symbolic: {len(steps)} steps ({what}) that do not simplify to 0", len(failed), 0, "; ".join(failed)
        )

    @contextmanager
    def worst(self, name: str, note: str = "") -> Iterator[Worst]:
        """Collect many ``(metric, tolerance, label)`` measurements; record the worst (by ratio) on exit."""
        acc = Worst()
        yield acc
        if acc.finding is not None:
            metric, tolerance, label = acc.finding
            self.record(name, metric, tolerance, f"{note}; worst: {label}" if note else f"worst: {label}")

    @contextmanager
    def guard(self, name: str) -> Iterator[None]:
        """Run a block that calls an implementation through :func:`invoke`.

        An exception raised *by the implementation* becomes a failed finding; an exception of
        the check's own code propagates, so a broken check can never pass off as a rejection.
        """
        try:
            yield
        except ImplementationError as exc:
            cause = exc.__cause__ or exc
            where = traceback.extract_tb(cause.__traceback__)[-1]
            self.record(
                f"{name}: raised",
                math.inf,
                0.0,
                f"{type(cause).__name__}: {cause} ({where.filename.rsplit('/', 1)[-1]}:{where.lineno})",
            )

    def evidence(self) -> Evidence:
        if self.cases == 0:
            self.require("at least one case ran", False, "no case ran (the requested dtypes exclude them?)")
        binding = max(self.findings, key=lambda f: f.ratio)
        return Evidence(
            holds=all(f.passed for f in self.findings),
            metric=binding.metric,
            tolerance=binding.tolerance,
            cases=self.cases,
            seconds=time.perf_counter() - self._start,
            details={
                "binding": binding.name,
                "findings": [asdict(f) for f in self.findings],
                **self.notes,
            },
        )
