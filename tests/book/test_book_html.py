"""The built book, tested as a web page: headless Chromium, no network.

Build first (``attnverify book``), then ``pytest -m book tests/book``.  These tests never build
the book themselves, and they fail (they do not skip) when the build output is missing.  Each
page is loaded from ``file://`` in a fresh Chromium profile with background networking off. The
test reads the DOM after scripts have run and checks that MathJax typeset the maths from the
bundled copy, that the live tables are present, and that no traceback leaked into the page.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import pytest

from attnverify import registry

pytestmark = pytest.mark.book

HTML = Path(os.environ.get("ATTNVERIFY_BOOK_HTML") or Path(__file__).resolve().parents[2] / "book" / "_build" / "html")
"""The built book; ``ATTNVERIFY_BOOK_HTML`` points the tests at a build elsewhere."""
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # no host resolves: whatever renders, renders offline
    "--virtual-time-budget=8000",
    "--dump-dom",
)
TRACEBACK = "Traceback (most recent call last)"


def _page(name: str) -> Path:
    page = HTML / name
    if not page.is_file():
        pytest.fail(f"{page} is missing: build the book first with 'attnverify book' (from the repository root)")
    return page


@cache
def dom(name: str) -> str:
    """The DOM of ``book/_build/html/<name>`` after Chromium ran its scripts (MathJax included)."""
    page = _page(name)
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's 'chromium' package")
    with tempfile.TemporaryDirectory(prefix="attnverify-chromium-") as profile:
        done = subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", page.as_uri()],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    if done.returncode != 0 or "<html" not in done.stdout:
        pytest.fail(f"chromium exited {done.returncode} on {page}:\n{done.stderr[-2000:]}")
    return done.stdout


def _text(html: str) -> str:
    """Visible text, roughly: tags dropped, whitespace folded."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


CHAPTERS = {f"{m.rsplit('.', 1)[1]}.html": importlib.import_module(m).CLAIMS for m in registry.PAPER_MODULES}
"""Each paper module's chapter (``book/<module>.md``) and the claims whose mutants it must show."""
PAGES = ["index.html", *CHAPTERS]


@pytest.mark.parametrize("name", PAGES)
def test_maths_rendered_offline(name: str) -> None:
    html = dom(name)
    assert "_static/mathjax/" in html, "MathJax is not loaded from the bundled copy"
    assert re.search(r"<script[^>]+src=\"https?://", html) is None, "a script is loaded from the network"
    assert re.search(r"<link[^>]+href=\"https?://", html) is None, "a stylesheet or font is loaded from the network"
    count = html.count("<mjx-container")
    assert count > 0, "no mjx-container elements: MathJax did not typeset the page"
    assert "<mjx-merror" not in html, "MathJax reported a TeX error"


@pytest.mark.parametrize("name", PAGES)
def test_no_traceback(name: str) -> None:
    assert TRACEBACK not in _text(dom(name))


def test_landing_page_has_live_verification_table() -> None:
    html = dom("index.html")
    match = re.search(r'<table[^>]*id="verification-table".*?</table>', html, re.S)
    assert match, "the live verification table is missing from the landing page"
    table = match.group(0).replace("<wbr>", "")  # ids carry <wbr> break points after . and _
    missing = [c.id for c in registry.claims() if c.id not in table]
    assert not missing, f"claims missing from the verification table: {missing}"
    assert "FAILS" not in table
    assert table.count("holds") + table.count(">n/a<") == len(registry.claims())


def test_every_claim_belongs_to_a_chapter() -> None:
    assert sorted(c.id for claims in CHAPTERS.values() for c in claims) == sorted(c.id for c in registry.claims())


@pytest.mark.parametrize("name", sorted(CHAPTERS))
def test_chapter_shows_every_mutant_rejected(name: str) -> None:
    match = re.search(r'<table[^>]*id="mutants-table".*?</table>', dom(name), re.S)
    assert match, f"the mutants table is missing from {name}"
    table = match.group(0)
    for claim in CHAPTERS[name]:
        assert f"<code>{claim.id}</code>" in table, f"{claim.id} is not in the mutants table of {name}"
        for mutant in claim.mutants:
            assert mutant.name in table, f"mutant {mutant.name} of {claim.id} is not in the table"
    assert "ACCEPTED" not in table
    assert table.count("rejected by") == sum(len(c.mutants) for c in CHAPTERS[name])


def test_aaren_chapter_figures_and_code() -> None:
    html = dom("aaren.html")
    images = re.findall(r'<img[^>]+src="([^"]+\.(?:png|svg))"', html)
    assert len(images) >= 3, f"expected the error, overflow and benchmark figures, found {images}"
    for src in images:
        assert (HTML / src).is_file(), f"image {src} is missing from the build"
    for literal in ("def stable_cell_step", "def _chunk_scan", "class _PrefixSoftmax", "def _scan_kernel"):
        assert literal in _text(html), f"literalinclude of {literal!r} is missing"


def test_sequence_parallel_chapter_shows_traffic_and_code() -> None:
    html = dom("sequence_parallel.html")
    text = _text(html)
    for literal in (
        "def _exclusive_prefix",
        "def _sequence_parallel_scan",
        "class _ExclusivePrefixSum",
        "def _handshake",
    ):
        assert literal in text, f"literalinclude of {literal!r} is missing"
    assert "forward sent" in text and "backward received" in text, "the traffic table is missing"
    images = re.findall(r'<img[^>]+src="([^"]+\.(?:png|svg))"', html)
    assert len(images) >= 2, f"expected the bytes-per-rank and benchmark figures, found {images}"


FIT_PROBE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const table = document.getElementById("verification-table");
  const article = table.closest("article") || document.body;
  const box = (el) => el.getBoundingClientRect();
  const cells = [...table.querySelectorAll("th, td")];
  document.body.setAttribute("data-fit", JSON.stringify({
    article_left: box(article).left, article_right: box(article).right,
    table_right: box(table).right, table_width: table.scrollWidth,
    wrapper_width: table.parentElement.clientWidth,
    cells_right: Math.max(...cells.map((c) => box(c).right)),
    last_header: table.querySelector("thead th:last-child").textContent,
  }));
}, 500));
</script>"""
"""Measures the rendered verification table against the article column, after layout."""


@pytest.mark.parametrize("width", [1280, 1024])
def test_verification_table_fits_the_page(width: int, tmp_path: Path) -> None:
    """Every column of the landing page's table, the last one included, lies inside the article column."""
    page = _page("intro.html")  # the landing page (index.html redirects to it)
    html = page.read_text()
    probe = html.replace("<head>", f'<head><base href="{HTML.as_uri()}/">', 1).replace("</body>", FIT_PROBE + "</body>")
    copy = tmp_path / "index.html"
    copy.write_text(probe)
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's 'chromium' package")
    with tempfile.TemporaryDirectory(prefix="attnverify-chromium-") as profile:
        done = subprocess.run(
            [CHROMIUM, *FLAGS, f"--window-size={width},2000", f"--user-data-dir={profile}", copy.as_uri()],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    match = re.search(r'data-fit="([^"]*)"', done.stdout)
    assert match, f"the layout probe did not run (chromium exited {done.returncode}):\n{done.stderr[-2000:]}"
    fit = json.loads(match.group(1).replace("&quot;", '"'))
    assert fit["last_header"] == "verdict"
    assert fit["table_width"] <= fit["wrapper_width"] + 1, f"the table overflows its box at {width}px: {fit}"
    assert fit["cells_right"] <= fit["article_right"] + 1, f"a column is cut off at {width}px: {fit}"
    assert fit["table_right"] <= fit["article_right"] + 1, fit


def test_copyright_follows_the_build_year() -> None:
    """The footer's year is the year the page was built (its file's modification time), not a fixed one."""
    page = _page("intro.html")
    built = dt.datetime.fromtimestamp(page.stat().st_mtime, dt.timezone.utc).year
    footer = _text(re.search(r"<footer.*</footer>", page.read_text(), re.S).group(0))
    years = re.findall(r"Copyright (\d{4})", footer)
    assert years == [str(built)], f"footer {footer!r}: expected the build year {built}"
