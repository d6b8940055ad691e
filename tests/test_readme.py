"""The README's first screen gives exactly two commands, CI runs them, and the repository cites only itself."""

from __future__ import annotations

import re
import subprocess
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


def test_readme_states_test_duration_and_how_to_get_torchs_cpu_build() -> None:
    text = (ROOT / "README.md").read_text()
    assert re.search(r"\*\*Test command duration: about \d+ minutes on two CPU cores", text)
    # PyPI's default Linux torch wheel bundles CUDA; the CPU build comes from PyTorch's CPU index
    assert "bundles CUDA" in text
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in text


FORBIDDEN = ("brief" + " §", "shared" + "/papers", ".." + "/shared", "DESIGN" + ".md")
"""Citations of notes that live outside the repository (spelled so this file does not match itself)."""


def test_repository_cites_only_itself_and_papers() -> None:
    """No tracked (or new, not ignored) text file points a reader at notes outside the repository.

    Cite the paper (arXiv id, section, equation), a book chapter's section ("Our formulation and the
    paper's") or CONTRIBUTING.md instead.
    """
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    offenders = []
    for name in filter(None, listed.split("\0")):
        path = ROOT / name
        if not path.is_file():
            continue  # deleted in the working tree
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary
        for number, line in enumerate(text.splitlines(), 1):
            offenders += [f"{name}:{number}: {word!r}" for word in FORBIDDEN if word.lower() in line.lower()]
    assert not offenders, "cite the paper or the project's own docs instead:\n" + "\n".join(offenders)
