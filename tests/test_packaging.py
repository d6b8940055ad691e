"""Packaging and architecture: the wheel works on its own; the layers import only what they may (CONTRIBUTING.md)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE_MODULES = tuple(f"attnverify.{p.stem}" for p in (ROOT / "src" / "attnverify").glob("*.py") if p.stem[0] != "_")

ENGINE = ROOT / "src" / "attnverify"
LAYERS = {
    # layer folder: the attnverify modules (prefixes) it may import
    "reference": (),
    "fast": ("attnverify.fast",),
    "proofs_checks": ("attnverify.proofs_checks", "attnverify.reference"),
    "benchmarks": ("attnverify.benchmarks", "attnverify.fast", "attnverify.reference", *ENGINE_MODULES),
}
"""``benchmarks`` imports the engine (one tolerance policy shared with the checks), ``reference`` and ``fast``."""
PAPER_LAYERS = ("attnverify.theory", "attnverify.reference", "attnverify.fast", "attnverify.proofs_checks")


def imported_modules(path: Path) -> set[str]:
    """Every ``attnverify...`` module that ``path`` imports, wherever the import statement stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {name for name in found if name.split(".")[0] == "attnverify"}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _allowed(name: str, prefixes: tuple[str, ...]) -> bool:
    return name == "attnverify" or _within(name, prefixes)


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_import_boundaries(layer: str) -> None:
    """``reference`` imports nothing of attnverify; ``fast`` only itself; ``proofs_checks`` itself and
    ``reference``; ``benchmarks`` the engine, ``reference`` and ``fast`` (so verification means something)."""
    files = sorted((ROOT / layer).rglob("*.py"))
    assert files
    for path in files:
        bad = {m for m in imported_modules(path) if not _allowed(m, LAYERS[layer])}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: the layers must stay independent"


def test_engine_imports_no_paper_module() -> None:
    """The engine reaches paper modules only through ``registry.PAPER_MODULES`` (imported by name)."""
    for path in sorted(ENGINE.rglob("*.py")):
        bad = {m for m in imported_modules(path) if _within(m, PAPER_LAYERS)}
        assert not bad, f"{path.relative_to(ROOT)} imports paper modules {sorted(bad)}"


def test_import_rule_sees_every_form_of_import(tmp_path: Path) -> None:
    """The AST reader catches ``import a.b``, ``from a import b``, and imports inside functions."""
    probe = tmp_path / "probe.py"
    probe.write_text("import attnverify.fast\ndef f():\n    from attnverify import reference\n    import os\n")
    assert imported_modules(probe) == {"attnverify.fast", "attnverify", "attnverify.reference"}
    assert not _allowed("attnverify.reference", LAYERS["fast"])


def test_fast_import_pulls_in_no_registry_sympy_hypothesis_or_triton() -> None:
    code = (
        "import sys, attnverify.fast; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sympy', 'hypothesis', 'triton') "
        "or m.startswith(('attnverify.theory', 'attnverify.reference', 'attnverify.registry'))))"
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
        "import attnverify, attnverify.fast, attnverify.fast.triton.aaren as t, attnverify.registry as r; "
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
