"""Packaging and architecture: the wheel works on its own; the layers import only what they may (DESIGN §2)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    # layer: the attnverify subpackages it must never import
    "fast": {"reference", "theory", "proofs_checks", "benchmarks"},
    "reference": {"fast", "theory", "proofs_checks", "benchmarks"},
    "proofs_checks": {"fast", "theory", "benchmarks"},
    "benchmarks": {"theory", "proofs_checks"},
}
ALLOWED = {"attnverify.theory.numerics"}
"""The tolerance policy: one copy, shared by the checks and the benchmarks' correctness-first step."""


def imported_subpackages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "attnverify" and len(parts) > 1 and name not in ALLOWED:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_import_boundaries(layer: str) -> None:
    for path in sorted((ROOT / layer).rglob("*.py")):
        bad = imported_subpackages(path) & FORBIDDEN[layer]
        assert not bad, f"{path.relative_to(ROOT)} imports attnverify.{bad}: the layers must stay independent"


def test_fast_import_pulls_in_no_registry_sympy_hypothesis_or_triton() -> None:
    code = (
        "import sys, attnverify.fast; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sympy', 'hypothesis', 'triton') "
        "or m.startswith(('attnverify.theory', 'attnverify.reference'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_wheel_installs_and_runs(tmp_path: Path) -> None:
    """Build the wheel, install it alone into a target directory, import it from there and run the CLI."""
    dist, site = tmp_path / "dist", tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = dist.glob("attnverify-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = (
        "import attnverify, attnverify.fast, attnverify.fast.triton.aaren as t, attnverify.theory.registry as r; "
        "print(attnverify.__file__); print(len(r.claims()))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    where, count = out.stdout.split()
    assert where.startswith(str(site)) and int(count) >= 5
    listing = subprocess.run(
        [sys.executable, "-m", "attnverify", "list"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert listing.returncode == 0 and "aaren.scan_equals_causal_softmax" in listing.stdout
    assert not list(site.glob("attnverify/benchmarks/results/*")), "benchmark results must not ship in the wheel"


def test_ruff_clean() -> None:
    """The repository is ruff-clean (rules in pyproject.toml), so CI keeps it so."""
    ruff = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True)
    assert ruff.returncode == 0, ruff.stdout[-4000:]
