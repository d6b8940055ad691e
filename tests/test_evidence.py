"""Evidence semantics: NaN never passes, exceptions of the check are never mistaken for rejections,
no claim holds on nothing (a numeric case per requested pair), conventions are judged once."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch

from attnverify import registry
from attnverify.evidence import Convention, Finding, ImplementationError, Recorder, invoke
from attnverify.harness import as_tensor, dtype_name
from attnverify.numerics import bitwise_mismatches, identity_tolerance, scaled_error

F64, F32, BF16 = torch.float64, torch.float32, torch.bfloat16


def test_nan_metric_never_passes() -> None:
    assert not Finding("x", math.nan, 1.0).passed
    assert Finding("x", math.nan, 1.0).ratio == math.inf


def test_binding_finding_is_the_worst_ratio() -> None:
    rec = Recorder()
    rec.record("small", 1e-13, 1e-12)
    rec.record("close", 9e-6, 1e-5)
    rec.cases = 2
    ev = rec.evidence()
    assert ev.holds and ev.details["binding"] == "close" and ev.metric == 9e-6


def test_no_case_means_no_pass() -> None:
    rec = Recorder()
    rec.record("vacuous", 0.0, 1.0)
    assert not rec.evidence().holds


class _Step:
    name = "a step that holds"
    holds = True

    def latex(self) -> str:
        return "0"


def test_symbolic_steps_never_count_as_cases() -> None:
    rec = Recorder()
    rec.symbolic([_Step(), _Step()], "two steps")
    ev = rec.evidence()
    assert not ev.holds and ev.cases == 0 and ev.symbolic_steps == 2
    assert ev.failures()[0].name == "at least one numeric case ran"


def test_every_requested_pair_needs_a_numeric_case() -> None:
    rec = Recorder(["a [float64]", "a [float32]", "b [float64]"])
    with rec.guard("a [float64]"):
        rec.cases += 3
    with rec.guard("b [float64] P=2"):  # a name that starts with the pair counts for it
        rec.cases += 1
    rec.cases += 5  # outside any pair: counted, but for no pair
    with rec.guard("a [float32]"):
        rec.record("a [float32]: error", 0.0, 1.0)
    ev = rec.evidence()
    assert ev.details["cases_per_pair"] == {"a [float64]": 3, "a [float32]": 0, "b [float64]": 1}
    assert ev.cases == 9 and not ev.holds
    assert [f.name for f in ev.failures()] == ["a [float32]: ran a numeric case"]


def test_a_raising_implementation_is_one_finding() -> None:
    """Not also a "ran no case" finding per pair, and the same failure in two dtypes is one finding."""

    def kernel(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("kernel exploded")

    rec = Recorder(["k [float64]", "k [float32]"])
    for dtype in (F64, F32):
        with rec.guard(f"k [{dtype_name(dtype)}]"):
            invoke(kernel, torch.zeros(2, dtype=dtype))
            rec.cases += 1
    (failure,) = rec.evidence().failures()
    assert failure.name == "k [float64], k [float32]: raised"
    line = kernel.__code__.co_firstlineno + 1
    assert failure.note == f"RuntimeError: kernel exploded (at {__file__}:{line})"


def test_a_wrong_shape_names_the_implementation_without_our_location() -> None:
    rec = Recorder(["k [float64]"])
    with rec.guard("k [float64]"):
        as_tensor(torch.zeros(3), "k", (4,))
    (failure,) = rec.evidence().failures()
    assert failure.note == "k returned shape (3,), expected (4,)"


def test_a_convention_is_one_finding_over_all_pairs() -> None:
    zero = Convention("empty_is_zero", "no token gives 0")
    rec = Recorder(["a [float64]", "a [float32]"])
    for pair, broken in (("a [float64]", 3), ("a [float32]", 4)):
        with rec.guard(pair):
            rec.convention(zero, pair, broken)
            rec.cases += 1
    (failure,) = rec.evidence().failures()
    assert failure.name == "convention empty_is_zero: no token gives 0 (entries differing)"
    assert failure.metric == 7 and failure.note == "a [float64]: 3; a [float32]: 4"
    kept = Recorder(["a [float64]"])
    with kept.guard("a [float64]"):
        kept.convention(zero, "a [float64]", 0)
        kept.cases += 1
    assert kept.evidence().holds


# Synthetic claims, one per kind: the rules of evidence do not depend on the kind.

PAPER = registry.Paper("test", "t", "a", 2026, "0000.00000")
SUBJECT = registry.Subject("double", "fn(x: (N,)) -> (N,)", lambda device: (), args=("x",))


def _check(kind: str, skip: torch.dtype | None = None) -> registry.CheckFn:
    """A check in the idiom every paper uses; ``skip`` silently leaves one dtype out."""

    def check(rec: Recorder, impls: Sequence[registry.Implementation], ctx: registry.CheckContext) -> None:
        if kind == "symbolic":
            rec.symbolic([_Step()], "one step")
        for impl in impls:
            for dtype in ctx.dtypes_for(impl):
                name = f"{impl.label} [{dtype_name(dtype)}]"
                if dtype == skip:
                    continue
                with rec.guard(name):
                    x = torch.arange(8, dtype=dtype)
                    out = as_tensor(invoke(impl.fn, x), impl.label, x.shape)
                    if kind == "statistical":  # a count of failed trials against an allowed count
                        rec.record(f"{name}: trials off", int((out != 2 * x).sum()), 1)
                    else:
                        tol = 0.0 if kind in ("symbolic", "identity") else identity_tolerance(dtype)
                        rec.record(f"{name}: error", scaled_error(out, 2 * x, 1.0), tol)
                    rec.cases += 1

    return check


def _claim(kind: str, skip: torch.dtype | None = None) -> registry.Claim:
    return registry.Claim(
        id=f"test.{kind}",
        paper=PAPER,
        kind=kind,  # type: ignore[arg-type]
        title="t",
        statement="s",
        check=_check(kind, skip),
        subject=SUBJECT,
        dtypes=(F64, F32),
    )


def _double(x: torch.Tensor) -> torch.Tensor:
    return 2 * x


@pytest.mark.parametrize("kind", registry.KINDS)
def test_holds_needs_evidence_for_every_kind(kind: str) -> None:
    claim = _claim(kind)
    ev = claim.run(impl=_double)
    assert ev.verdict == "holds" and ev.details["cases_per_pair"] == {"--impl [float64]": 1, "--impl [float32]": 1}
    assert ev.symbolic_steps == (kind == "symbolic")
    # Asked for a dtype the claim has no case for: not applicable, never "holds" (nor "fails").
    zeros = claim.run(registry.CheckContext(dtypes=(BF16,)), impl=torch.zeros_like)
    assert zeros.verdict == "not applicable" and not zeros.holds
    assert "applies to float64, float32" in zeros.details["reason"]
    assert claim.run(registry.CheckContext(dtypes=(F32, BF16)), impl=torch.zeros_like).verdict == "fails"
    # A requested, applicable pair that ran no numeric case fails (a silent skip).
    skipping = _claim(kind, skip=F32)
    ev = skipping.run(impl=_double)
    assert ev.verdict == "fails"
    assert [f.name for f in ev.failures()] == ["--impl [float32]: ran a numeric case"]
    assert skipping.run(registry.CheckContext(dtypes=(F64,)), impl=_double).verdict == "holds"


def test_a_claim_off_its_devices_is_not_applicable() -> None:
    claim = registry.Claim(
        id="test.gpu_only", paper=PAPER, kind="identity", title="t", statement="s", check=_check("identity"),
        subject=SUBJECT, devices=("cuda",),
    )  # fmt: skip
    assert claim.run(impl=_double).verdict == "not applicable"


def test_no_implementation_in_the_requested_dtype_is_not_applicable() -> None:
    ours = registry.Subject("double", "fn(x)", lambda device: (registry.Implementation("ours", _double, (F64,)),))
    claim = registry.Claim(
        id="test.ours", paper=PAPER, kind="identity", title="t", statement="s", check=_check("identity"), subject=ours
    )
    assert claim.run().verdict == "holds"
    ev = claim.run(registry.CheckContext(dtypes=(F32,)))
    assert ev.verdict == "not applicable" and ev.details["reason"].startswith("no implementation runs")


def test_subject_arguments_bind() -> None:
    assert SUBJECT.cannot_call(_double) is None
    assert SUBJECT.cannot_call(lambda x, y: x) is not None
    assert SUBJECT.cannot_call(lambda *args: args) is None
    assert registry.Subject("s", "fn()", lambda device: ()).cannot_call(lambda: 0) is None  # args not declared


def test_guard_records_implementation_errors_only() -> None:
    rec = Recorder()
    with rec.guard("impl"):
        invoke(lambda: 1 / 0)
    assert rec.findings[-1].name == "impl: raised" and "ZeroDivisionError" in rec.findings[-1].note
    with pytest.raises(KeyError), rec.guard("impl"):
        {}["a bug in the check itself"]


def test_worst_of_many() -> None:
    rec = Recorder()
    with rec.worst("w") as w:
        w.add(5e-6, 1e-5, "a")
        w.add(1e-13, 1e-12, "b")
    assert rec.findings[0].note == "worst: a"


def test_scaled_error_nan_and_shape() -> None:
    a = torch.tensor([1.0, math.nan])
    assert scaled_error(a, torch.tensor([1.0, 2.0]), 1.0) == math.inf
    assert scaled_error(torch.ones(2), torch.ones(3), 1.0) == math.inf
    assert scaled_error(torch.ones(0), torch.ones(0), 1.0) == 0.0
    assert bitwise_mismatches(torch.tensor([math.nan]), torch.tensor([math.nan])) == 1


def test_tolerances() -> None:
    assert identity_tolerance(torch.float64) == 1e-12
    assert identity_tolerance(torch.float32, 16384) == pytest.approx(2e-5)
    assert identity_tolerance(torch.bfloat16) == pytest.approx(2 * 2**-8 + 1e-5)
    with pytest.raises(TypeError):
        identity_tolerance(torch.int32)


def test_implementation_error_keeps_the_cause() -> None:
    with pytest.raises(ImplementationError) as exc:
        invoke(int, "x")
    assert isinstance(exc.value.__cause__, ValueError)
