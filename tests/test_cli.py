"""The command line: exit codes, the verdict table, ``--json`` and ``--impl`` (README.md)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from attnverify import registry
from attnverify.cli import main

SCAN = "aaren.scan_equals_causal_softmax"


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

            def good(scores, values):
                s = scores.to(torch.float64)
                n = s.shape[-1]
                causal = torch.ones(n, n, dtype=torch.bool).tril()
                S = s[..., None, :].expand(*s.shape, n).masked_fill(~causal, float("-inf"))
                empty = torch.isinf(S).all(-1, keepdim=True)
                P = torch.softmax(S.masked_fill(empty, 0.0), -1).masked_fill(empty, 0.0)
                return (P @ values.to(torch.float64)).to(values.dtype)

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
    return "mykernels"


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["list"]) == 0
    out = capsys.readouterr().out
    for claim in registry.claims():
        assert claim.id in out


def test_verify_holds_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """(Every claim holding is tests/test_claims.py's job, and CI runs the README's bare ``attnverify verify``.)"""
    path = tmp_path / "out" / "evidence.json"
    chosen = ["aaren.combine_is_monoid", "aaren.streaming_equals_batch"]
    assert run(["verify", *(f"--claim={c}" for c in chosen), "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2/2 claims hold" in out and "FAILS" not in out
    payload = json.loads(path.read_text())
    assert [c["id"] for c in payload["claims"]] == chosen
    for record in payload["claims"]:
        assert set(record) == {"id", "paper", "kind", "holds", "metric", "tolerance", "cases", "seconds", "details"}
        assert record["holds"] is True and record["metric"] <= record["tolerance"]
    assert {"torch", "python", "platform", "date", "device"} <= set(payload["environment"])


def test_impl_correct_kernel_holds(user_module: str, tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    code = run(
        [
            "verify",
            "--claim",
            SCAN,
            "--claim",
            "aaren.shift_invariance",
            "--impl",
            f"{user_module}:good",
            "--json",
            str(path),
        ]
    )
    assert code == 0
    payload = json.loads(path.read_text())
    assert payload["environment"]["impl"] == f"{user_module}:good"
    assert all(c["details"]["implementations"] == ["--impl"] for c in payload["claims"])


def test_impl_wrong_kernel_fails(user_module: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["verify", "--claim", SCAN, "--impl", f"{user_module}:off_by_one"]) == 1
    out = capsys.readouterr().out
    assert "FAILS" in out and "o_1 = v_1" in out


def test_impl_with_the_wrong_shape_fails_clearly(user_module: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["verify", "--claim", SCAN, "--impl", f"{user_module}:wrong_shape"]) == 1
    assert "returned shape" in capsys.readouterr().out


def test_impl_that_raises_fails_with_its_message(user_module: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["verify", "--claim", SCAN, "--impl", f"{user_module}:crashes"]) == 1
    assert "kernel exploded" in capsys.readouterr().out


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
    findings = json.loads(path.read_text())["claims"][0]["details"]["findings"]
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
