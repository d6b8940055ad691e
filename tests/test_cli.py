"""The command line: exit codes, the verdict table, ``--json`` and ``--impl`` (README.md)."""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any, NoReturn

import pytest

from attnverify import registry
from attnverify.cli import main

SCAN = "aaren.scan_equals_causal_softmax"
SHIFT = "aaren.shift_invariance"


def strict_load(path: Path) -> Any:
    """Parse JSON, rejecting the non-standard NaN/Infinity/-Infinity literals."""

    def reject(constant: str) -> NoReturn:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=reject)


def run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
        raise SystemExit(0)
    return int(exc.value.code or 0)


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user's module with a correct kernel, a wrong one and a non-callable, importable from the cwd."""
    (tmp_path / "mykernels.py").write_text(
        textwrap.dedent(
            """
            import torch

            def plain_softmax(scores, values):
                values = values.masked_fill((scores == float("-inf"))[..., None], 0.0)
                n = scores.shape[-1]
                rows = [torch.softmax(scores[..., :k + 1], -1)[..., None, :] @ values[..., :k + 1, :] for k in range(n)]
                return torch.cat(rows, -2) if rows else values.clone()

            def plain_softmax_nan_to_num(scores, values):
                return torch.nan_to_num(plain_softmax(scores, values), nan=0.0)

            good = plain_softmax_nan_to_num

            def zeros(scores, values):
                return torch.zeros_like(values)

            def three_arguments(scores, values, mask):
                return good(scores, values)

            def off_by_one(scores, values):
                out = good(scores, values)
                return torch.cat([torch.zeros_like(out[..., :1, :]), out[..., :-1, :]], -2)

            def wrong_shape(scores, values):
                return good(scores, values)[..., :-1, :]

            def crashes(scores, values):
                raise RuntimeError("kernel exploded")

            NOT_CALLABLE = 3
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "mykernels", raising=False)  # this test's file, not an earlier one's
    return "mykernels"


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["list"]) == 0
    out = capsys.readouterr().out
    for claim in registry.claims():
        assert claim.id in out
    assert "empty_prefix_is_zero" in out  # the conventions column


def test_verify_holds_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """(Every claim holding is tests/test_claims.py's job, and CI runs the README's bare ``attnverify verify``.)"""
    path = tmp_path / "out" / "evidence.json"
    chosen = ["aaren.combine_is_monoid", "aaren.streaming_equals_batch"]
    assert run(["verify", *(f"--claim={c}" for c in chosen), "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2/2 claims hold" in out and "FAILS" not in out
    payload = strict_load(path)
    assert [c["id"] for c in payload["claims"]] == chosen
    keys = {"id", "paper", "kind", "verdict", "holds", "metric", "tolerance", "cases", "symbolic_steps", "seconds"}
    for record in payload["claims"]:
        assert set(record) == {*keys, "details"}
        assert record["verdict"] == "holds" and record["holds"] is True and record["metric"] <= record["tolerance"]
        assert record["cases"] > 0 and all(n > 0 for n in record["details"]["cases_per_pair"].values())
    assert payload["claims"][0]["symbolic_steps"] > 0
    assert {"torch", "python", "platform", "date", "device"} <= set(payload["environment"])


def test_impl_wrong_kernel_fails(user_module: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["verify", "--claim", SCAN, "--impl", f"{user_module}:off_by_one", "--dtype", "float64"]) == 1
    out = capsys.readouterr().out
    # The terminal keeps each finding's implementation and dtype label (no markup eats "[float64]").
    assert "FAILS" in out and "--impl [float64]: o_1 = v_1" in out


def _failures(path: Path) -> list[dict[str, Any]]:
    (record,) = strict_load(path)["claims"]
    return [f for f in record["details"]["findings"] if not f["passed"]]


def test_nan_for_an_empty_prefix_is_one_finding_naming_the_convention(user_module: str, tmp_path: Path) -> None:
    """One root cause, one finding; the other comparisons leave the convention's positions out."""
    for claim in (SCAN, SHIFT):
        path = tmp_path / f"{claim}.json"
        argv = ["verify", "--claim", claim, "--dtype", "float64", "--json", str(path), "--impl"]
        assert run([*argv, f"{user_module}:plain_softmax"]) == 1
        (failure,) = _failures(path)
        assert failure["name"].startswith("convention empty_prefix_is_zero:"), failure
        assert failure["note"].startswith("--impl [float64]: ")
        assert run([*argv, f"{user_module}:plain_softmax_nan_to_num"]) == 0
        payload = strict_load(path)
        assert payload["claims"][0]["verdict"] == "holds"
        assert payload["claims"][0]["details"]["implementations"] == ["--impl"]
        assert payload["environment"]["impl"] == f"{user_module}:plain_softmax_nan_to_num"


def test_impl_with_the_wrong_shape_fails_clearly(user_module: str, tmp_path: Path) -> None:
    """One finding naming the implementation and the expected shape, and no location inside attnverify."""
    path = tmp_path / "e.json"
    assert run(["verify", "--claim", SCAN, "--impl", f"{user_module}:wrong_shape", "--json", str(path)]) == 1
    (failure,) = _failures(path)
    assert re.fullmatch(r"--impl returned shape \(.*\), expected \(.*\)", failure["note"]), failure


def test_impl_that_raises_is_one_finding_at_the_callers_line(
    user_module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "e.json"
    assert run(["verify", "--claim", SCAN, "--impl", f"{user_module}:crashes", "--json", str(path)]) == 1
    (failure,) = _failures(path)
    source = (tmp_path / "mykernels.py").read_text().splitlines()
    line = 1 + next(i for i, text in enumerate(source) if "kernel exploded" in text)
    assert failure["name"] == "--impl [float64], --impl [float32]: raised"
    assert failure["note"] == f"RuntimeError: kernel exploded (at {tmp_path / 'mykernels.py'}:{line})"
    assert failure["metric"] == "inf"  # strict JSON: non-finite numbers are strings
    assert "kernel exploded" in capsys.readouterr().out


def test_impl_that_cannot_take_the_arguments_exits_2_before_checking(
    user_module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["verify", "--claim", SCAN, "--impl", f"{user_module}:three_arguments"]) == 2
    err = capsys.readouterr().err
    assert "cannot be called as fn(scores, values)" in err and "missing a required argument: 'mask'" in err


def test_no_case_for_the_dtype_is_not_applicable_not_holds(
    user_module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The hole this closes: a kernel returning zeros "held" the shift claim under bfloat16."""
    path = tmp_path / "e.json"
    argv = ["verify", "--claim", SHIFT, "--impl", f"{user_module}:zeros", "--dtype", "bfloat16", "--json", str(path)]
    assert run(argv) == 3
    out = capsys.readouterr().out
    assert "n/a" in out and "holds" not in out.replace("claims hold", "") and "0/1 claims hold, 1 not applicable" in out
    (record,) = strict_load(path)["claims"]
    assert record["verdict"] == "not applicable" and record["holds"] is False and record["cases"] == 0
    assert record["metric"] == "nan"
    # Any failing claim outranks a not-applicable one.
    assert run(["verify", "--claim", "aaren.s[ch]*", "--impl", f"{user_module}:zeros", "--dtype", "bfloat16"]) == 1


def test_list_one_claim(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["list", "--claim", SCAN]) == 0
    out = capsys.readouterr().out
    claim = registry.get(SCAN)
    assert claim.statement in out and claim.subject is not None and claim.subject.signature in out
    assert "conventions:\n  - empty_prefix_is_zero: a position whose tokens so far are all masked" in out
    assert all(f"  - {m.name}: {m.description}" in out for m in claim.mutants)
    assert run(["list", "--claim", "aaren.nothing"]) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["verify", "--claim", "nope.*"], "--claim: no claim matches"),
        (["verify", "--impl", "mykernels"], "expected 'module:function'"),
        (["verify", "--claim", SCAN, "--impl", "no_such_module_xyz:f"], "cannot import module"),
        (["verify", "--claim", SCAN, "--impl", "mykernels:missing"], "has no attribute"),
        (["verify", "--claim", SCAN, "--impl", "mykernels:NOT_CALLABLE"], "not a callable"),
        (["verify", "--impl", "mykernels:good"], "different subjects"),
        (["verify", "--budget", "huge"], "Invalid value for '--budget'"),
        (["verify", "--no-such-option"], "No such option"),
        (["bench", "--suite", "nope"], "--suite: unknown suite"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], message: str, user_module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_device_cuda_without_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert run(["verify", "--device", "cuda"]) == 2
    assert "--device: cuda requested" in capsys.readouterr().err


def test_impl_for_claim_without_subject(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    base = registry.get("aaren.combine_is_monoid")
    symbolic_only = registry.Claim(
        id="test.symbolic_only", paper=base.paper, kind="symbolic", title="t", statement="s", check=base.check
    )
    monkeypatch.setattr(registry, "claims", lambda: (symbolic_only,))
    assert run(["verify", "--claim", "test.*", "--impl", "os:getcwd"]) == 2
    assert "have no subject to replace" in capsys.readouterr().err


def test_dtype_restriction_reaches_the_check(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    assert run(["verify", "--claim", "aaren.shift*", "--dtype", "float32", "--json", str(path)]) == 0
    findings = strict_load(path)["claims"][0]["details"]["findings"]
    assert any("[float32]" in f["name"] for f in findings)
    assert not any("[float64]" in f["name"] for f in findings)


def test_failing_claim_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    base = registry.get(SCAN)

    def impossible(rec, impls, ctx):
        rec.record("always wrong", 1.0, 0.0)
        rec.cases += 1

    broken = registry.Claim(
        id="test.broken", paper=base.paper, kind="identity", title="t", statement="s", check=impossible
    )
    monkeypatch.setattr(registry, "claims", lambda: (broken,))
    assert run(["verify"]) == 1


def test_help_documents_exit_codes_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["verify", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "0 every claim holds; 1 some claim fails; 2 bad arguments; 3 none fails but some claim is not" in out
    assert "non-finite numbers as the strings nan, inf, -inf" in out
