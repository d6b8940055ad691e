"""Evidence: what a check reports.  A list of findings, each a number against a tolerance.

A finding passes when ``metric <= tolerance`` (NaN never passes).  The evidence of a claim
holds when every finding passes *and* at least one numeric case ran for every requested
(implementation, dtype) pair; symbolic steps are counted apart and never make a claim hold.
Its headline metric is the *binding* finding, the one closest to (or furthest past) its
tolerance.  A claim with no case for the requested dtypes or device is "not applicable",
neither holding nor failing.
"""

from __future__ import annotations

import math
import sysconfig
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

Verdict = Literal["holds", "fails", "not applicable"]


class SymbolicStep(Protocol):
    """A step of a symbolic proof (``attnverify.proofs_checks.symbolic.SymbolicStep`` has this shape)."""

    @property
    def name(self) -> str: ...

    @property
    def holds(self) -> bool: ...

    def latex(self) -> str: ...


@dataclass(frozen=True)
class Convention:
    """A choice of ours where the mathematics leaves the output open (e.g. softmax over no token).

    A claim lists its conventions; its check judges each by :meth:`Recorder.convention` (one
    finding over all pairs) and leaves the positions it decides out of every other comparison:
    one root cause, one finding.
    """

    name: str
    description: str


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
    """The result of one claim's check (CONTRIBUTING.md, "Claims, evidence, mutants").

    ``cases`` counts numeric cases only; ``symbolic_steps`` the sympy steps, apart.  ``applicable``
    is false when the claim has no case for the requested dtypes or device: then ``holds`` is
    false too and :attr:`verdict` says ``"not applicable"``.
    """

    holds: bool
    metric: float
    tolerance: float
    cases: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    symbolic_steps: int = 0
    applicable: bool = True

    @classmethod
    def not_applicable(cls, reason: str) -> Evidence:
        """Evidence of a claim that has no case for what was requested (``reason`` says why)."""
        return cls(False, math.nan, math.nan, 0, 0.0, {"reason": reason, "findings": []}, 0, False)

    @property
    def verdict(self) -> Verdict:
        if not self.applicable:
            return "not applicable"
        return "holds" if self.holds else "fails"

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


_LIBRARIES = tuple(str(Path(p).resolve()) for p in {sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")})


def _ours(frame: Any) -> bool:
    return str(frame.f_globals.get("__name__", "")).split(".")[0] == "attnverify"


def blame(exc: BaseException) -> str:
    """Where ``exc`` was raised, as ``file:line``: the deepest frame of the caller's own code.

    Frames inside attnverify are skipped, and so are frames inside installed libraries (torch...)
    when the caller's code appears at all; ``""`` when no frame is left.
    """
    frames = [(f, line) for f, line in traceback.walk_tb(exc.__traceback__) if not _ours(f)]
    users = [(f, line) for f, line in frames if not str(Path(f.f_code.co_filename).resolve()).startswith(_LIBRARIES)]
    if not (users or frames):
        return ""
    frame, line = (users or frames)[-1]
    return f"{frame.f_code.co_filename}:{line}"


class Recorder:
    """Collects findings while a check runs, then turns them into :class:`Evidence`.

    ``pairs`` are the requested (implementation, dtype) pairs, named ``f"{label} [{dtype}]"``
    (:func:`attnverify.registry.pair_name`).  A check runs each pair's block inside
    ``with rec.guard(name):``; every ``rec.cases += n`` there counts ``n`` numeric cases for the
    pair whose name ``name`` is or starts with.  A requested pair that ran no case and did not
    already fail gets a failing finding of its own (a silent skip is a failure).
    """

    def __init__(self, pairs: Sequence[str] = ()) -> None:
        self.findings: list[Finding] = []
        self.notes: dict[str, Any] = {}
        self.symbolic_steps = 0
        self.pairs: dict[str, int] = dict.fromkeys(pairs, 0)
        """Numeric cases per requested pair."""
        self._unattributed = 0
        self._current: str | None = None
        self._failed: set[str] = set()
        self._conventions: dict[Convention, dict[str, int]] = {}
        self._start = time.perf_counter()

    @property
    def cases(self) -> int:
        """Numeric cases so far, over all pairs; ``rec.cases += n`` adds ``n`` to the current pair."""
        return sum(self.pairs.values()) + self._unattributed

    @cases.setter
    def cases(self, value: int) -> None:
        added = value - self.cases
        if self._current in self.pairs:
            self.pairs[self._current] += added
        else:
            self._unattributed += added

    def pair_of(self, name: str) -> str | None:
        """The requested pair that ``name`` (a guard or finding name) is about, if any."""
        found = [p for p in self.pairs if name == p or name.startswith((p + ":", p + " "))]
        return max(found, key=len) if found else None

    def record(self, name: str, metric: float, tolerance: float, note: str = "") -> bool:
        """Add a finding; returns whether it passed."""
        finding = Finding(name, float(metric), float(tolerance), note)
        self.findings.append(finding)
        if not finding.passed:
            pair = self.pair_of(name) or self._current
            if pair is not None:
                self._failed.add(pair)
        return finding.passed

    def require(self, name: str, condition: bool, note: str = "") -> bool:
        """A yes/no finding: metric 0 when ``condition`` holds, 1 otherwise, tolerance 0."""
        return self.record(name, 0.0 if condition else 1.0, 0.0, note)

    def symbolic(self, steps: Sequence[SymbolicStep], what: str) -> bool:
        """One finding for a list of sympy steps: how many fail (counted apart from numeric cases)."""
        failed = [s.name for s in steps if not s.holds]
        self.symbolic_steps += len(steps)
        return self.record(
            f"symbolic: {len(steps)} steps ({what}) that do not simplify to 0", len(failed), 0, "; ".join(failed)
        )

    def convention(self, convention: Convention, pair: str, violations: int) -> None:
        """Count the entries of ``pair``'s outputs that break ``convention``; all pairs make one finding."""
        self._conventions.setdefault(convention, {})
        self._conventions[convention][pair] = self._conventions[convention].get(pair, 0) + int(violations)
        if violations:
            self._failed.add(self.pair_of(pair) or pair)

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
        """Run one pair's block (``name`` is, or starts with, the pair's name) that calls code under test.

        Cases counted inside count for that pair.  An exception raised *by the implementation*
        (through :func:`invoke`, or an :class:`ImplementationError` of a harness helper) becomes one
        failed finding, merged with the same failure of other pairs; an exception of the check's own
        code propagates, so a broken check can never pass off as a rejection.
        """
        outer, self._current = self._current, self.pair_of(name) or name
        try:
            yield
        except ImplementationError as exc:
            self._raised(name, exc)
        finally:
            self._current = outer

    def _raised(self, name: str, exc: ImplementationError) -> None:
        cause = exc.__cause__
        if cause is None:  # a harness helper judged the output: the message says it all
            note = str(exc)
        else:
            where = blame(cause)
            note = f"{type(cause).__name__}: {cause}" + (f" (at {where})" if where else "")
        for i, f in enumerate(self.findings):
            if f.name.endswith(": raised") and f.note == note:  # one root cause, one finding
                self.findings[i] = Finding(f"{f.name.removesuffix(': raised')}, {name}: raised", f.metric, 0.0, note)
                self._failed.add(self._current or name)
                return
        self.record(f"{name}: raised", math.inf, 0.0, note)

    def evidence(self) -> Evidence:
        for convention, counts in self._conventions.items():
            broken = [f"{pair}: {n}" for pair, n in counts.items() if n]
            self.record(
                f"convention {convention.name}: {convention.description} (entries differing)",
                sum(counts.values()),
                0,
                "; ".join(broken) if broken else f"kept by {', '.join(counts)}",
            )
        for pair, count in self.pairs.items():
            if count == 0 and pair not in self._failed:
                self.require(f"{pair}: ran a numeric case", False, "requested and applicable, yet skipped")
        if not self.pairs and self.cases == 0:
            self.require("at least one numeric case ran", False, "symbolic steps alone never make a claim hold")
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
                "cases_per_pair": dict(self.pairs),
                **self.notes,
            },
            symbolic_steps=self.symbolic_steps,
        )
