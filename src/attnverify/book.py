"""Build the executed book (CONTRIBUTING.md, "Adding a paper"), and the helpers its pages share.

``attnverify book`` calls :func:`find_source` and :func:`build`; the chapters call the page
helpers at the end of this module, so every chapter shows claims, proofs and mutants alike.

The book is Jupyter Book 1.x source in ``book/`` of a source checkout.  Every page is executed
during the build (``execute_notebooks: force`` in ``book/_config.yml``).  Errors are fatal in two
ways.  The config sets ``raise_on_error``, so a failing cell aborts the build, and the build runs
with ``--warningiserror --keep-going``, so any Sphinx warning (a ``literalinclude`` whose
``:pyobject:`` has gone, a missing image...) also makes the exit code non-zero.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from attnverify.evidence import SymbolicStep
    from attnverify.registry import Claim

_LAUNCHER = "import sys; from jupyter_book.cli.main import main; sys.argv[0] = 'jupyter-book'; sys.exit(main())"
"""Runs Jupyter Book's CLI in *this* interpreter, so the notebooks' kernel imports this attnverify."""


def _is_source(folder: Path) -> bool:
    """Whether ``folder`` is a Jupyter Book source (``_config.yml`` and ``_toc.yml``) titled attnverify."""
    config = folder / "_config.yml"
    if not (config.is_file() and (folder / "_toc.yml").is_file()):
        return False
    try:
        return "attnverify" in config.read_text(encoding="utf-8")
    except OSError:
        return False


def find_source(start: Path | None = None) -> Path | None:
    """The ``book/`` folder of a source checkout, or ``None``.

    Looks in the current directory (or ``start``) and each of its parents, then next to this
    package's own files (an editable install).  A folder counts if it holds ``_config.yml``
    (mentioning attnverify) and ``_toc.yml``.
    """
    here = (start or Path.cwd()).resolve()
    candidates = [here] if here.name == "book" else []
    candidates += [folder / "book" for folder in (here, *here.parents)]
    candidates += [folder / "book" for folder in Path(__file__).resolve().parents[:3]]
    for candidate in candidates:
        if _is_source(candidate):
            return candidate
    return None


def build_command(source: Path) -> list[str]:
    """The command :func:`build` runs: an HTML build into ``source/_build/html`` with errors fatal."""
    source = Path(source).resolve()
    return [
        sys.executable,
        "-c",
        _LAUNCHER,
        "build",
        str(source),
        "--path-output",
        str(source),
        "--builder",
        "html",
        "--all",
        "--warningiserror",
        "--keep-going",
    ]


def build(source: Path) -> int:
    """Build the book in ``source`` into ``source/_build/html``; returns the build's exit code.

    Output streams to this process's stdout and stderr as the build runs.  The exit code is
    non-zero if a cell raises (a claim that fails, a mutant that passes...) or Sphinx warns.
    """
    source = Path(source).resolve()
    if not _is_source(source):
        print(f"book: {source} has no _config.yml and _toc.yml", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiets a debugger notice at kernel start
    sys.stdout.flush()
    sys.stderr.flush()
    return subprocess.run(build_command(source), cwd=source.parent, env=env, check=False).returncode


# ---------------------------------------------------------------------------
# Page helpers: what every chapter shows the same way (claims, symbolic steps, mutants, benchmarks)
# ---------------------------------------------------------------------------


def code(text: object) -> str:
    """Inline code in Markdown."""
    return "`" + str(text).replace("`", "'") + "`"


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> Any:
    """A Markdown table for ``IPython.display`` (MyST renders it, maths included)."""
    from IPython.display import Markdown

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return Markdown("\n".join(lines))


def claim_boxes(claims: Sequence[Claim]) -> list[Any]:
    """One admonition per claim: id, kind, title, statement, the implementations checked, its mutants.

    Refuses a statement with control characters: one written without a raw string has lost its
    backslashes to escapes such as ``\\b`` and ``\\t``.
    """
    import torch
    from IPython.display import Markdown

    garbled = [c.id for c in claims if re.search(r"[\x00-\x09\x0b-\x1f\x7f]", c.statement)]
    if garbled:
        raise ValueError(f"claim statements with control characters (a lost backslash?): {garbled}")
    boxes = []
    for claim in claims:
        impls = [i.label for i in claim.subject.implementations(torch.device("cpu"))] if claim.subject else []
        mutants = ", ".join(code(m.name) for m in claim.mutants) or "none"
        boxes.append(
            Markdown(
                f":::{{admonition}} {code(claim.id)} ({claim.kind})\n:class: note\n\n"
                f"**{claim.title}.**\n\n{claim.statement}\n\n"
                f"*Checked on:* {', '.join(impls) or 'n/a'} (on this machine's CPU). "
                f"*Mutants it must reject:* {mutants}.\n:::"
            )
        )
    return boxes


def steps_table(steps: Sequence[SymbolicStep], what: str) -> Any:
    """The sympy steps with their simplified residuals; raises if any step does not hold."""
    failing = [s.name for s in steps if not s.holds]
    if failing:
        raise AssertionError(f"symbolic steps that do not hold: {failing}")
    return md_table(
        [what, "residual (lhs − rhs, simplified)", "holds"], [(code(s.name), f"${s.latex()}$", "✓") for s in steps]
    )


def mutants_table(claims: Sequence[Claim]) -> Any:
    """Run every mutant of ``claims`` and show the first finding that rejects it; raises if one is accepted."""
    from IPython.display import HTML

    esc = html.escape
    rows, accepted, count = [], [], 0
    for claim in claims:
        rows.append(f'<tr><th colspan="2">claim <code>{esc(claim.id)}</code> ({claim.kind})</th></tr>')
        for mutant in claim.mutants:
            count += 1
            evidence = claim.run_mutant(mutant)
            failures = evidence.failures()
            who = f"<code>{esc(mutant.name)}</code><br>{esc(mutant.description)}"
            if evidence.holds or not failures:
                accepted.append((claim.id, mutant.name))
                verdict = "<b>&#x2717; ACCEPTED</b>: the check did not catch this bug"
            else:
                first = failures[0]
                label = re.sub(r"^--impl \[([^\]]+)\]", r"[\1]", first.name)  # the mutant runs as --impl
                verdict = (
                    f"&#x2713; rejected by <code>{esc(label)}</code><br>metric {first.metric:.3g} &gt; tolerance "
                    f"{first.tolerance:.3g}; {len(failures)} of {len(evidence.findings)} findings failed"
                )
            rows.append(f'<tr><td style="width: 38%">{who}</td><td>{verdict}</td></tr>')
    if accepted:
        raise AssertionError(f"mutants accepted by their claims: {accepted}")
    return HTML(
        '<table class="table" id="mutants-table" style="font-size: 0.85em">'
        "<thead><tr><th>mutant: the bug</th><th>verdict: the first finding that fails</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        f"<p><small>{count} of {count} mutant runs rejected.</small></p>"
    )


def targets_table(results: dict[str, Any]) -> list[Any]:
    """The benchmark targets of a stored run (and what was skipped), with the run's date and machine."""
    from IPython.display import Markdown

    def number(x: object) -> str:
        return f"{x:.3g}" if isinstance(x, int | float) and not isinstance(x, bool) else str(x)

    signs = {"<=": "≤", ">=": "≥"}
    rows = [
        (
            t["name"],
            number(t["ratio"]),
            f"{signs.get(t['comparison'], t['comparison'])} {number(t['target'])}",
            "✓ met" if t["met"] else "✗ not met",
        )
        for t in results["targets"]
    ]
    rows += [
        (s["name"], "—", "—", f"not run: {s['reason'].removeprefix('not run: ')}") for s in results.get("skipped", [])
    ]
    env = results["environment"]
    return [
        md_table(["target", "measured ratio", "target", "verdict"], rows),
        Markdown(
            f"Run of {results['date']}{' (quick sizes)' if results['quick'] else ''} on {results['device']}: "
            f"{env.get('processor', '?')}, torch {env.get('torch', '?')}, {env.get('torch_threads', '?')} threads."
        ),
    ]
