"""Evidence semantics: NaN never passes, exceptions of the check are never mistaken for rejections."""

from __future__ import annotations

import math

import pytest
import torch

from attnverify.evidence import Finding, ImplementationError, Recorder, invoke
from attnverify.numerics import bitwise_mismatches, identity_tolerance, scaled_error


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
