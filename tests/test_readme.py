"""The README's first screen gives exactly two commands, and CI runs them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_SCREEN = 24  # lines


def test_first_screen_has_exactly_two_commands() -> None:
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:FIRST_SCREEN])
    blocks = re.findall(r"```bash\n(.*?)```", head, flags=re.S)
    assert len(blocks) == 2, blocks
    verify, test = (b.strip() for b in blocks)
    assert "\n" not in verify and "\n" not in test
    assert verify.endswith("attnverify verify") and "pip install torch==2.13.0" in verify
    assert "pytest" in test and '".[test]"' in test and "pip install torch==2.13.0" in test
    assert "<!-- command:verify -->" in head and "<!-- command:test -->" in head


def test_ci_runs_the_readme_commands() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_command test" in ci and "readme_command verify" in ci
    assert "attnverify book" in ci and "-m book" in ci


def test_book_landing_page_gives_the_same_commands() -> None:
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:FIRST_SCREEN])
    intro = (ROOT / "book" / "intro.md").read_text()
    for command in re.findall(r"```bash\n(.*?)```", head, flags=re.S):
        assert command.strip() in intro
