"""Build the executed book (DESIGN §6): ``attnverify book`` calls :func:`find_source` and :func:`build`.

The book is Jupyter Book 1.x source in ``book/`` of a source checkout.  Every page is executed
during the build (``execute_notebooks: force`` in ``book/_config.yml``).  Errors are fatal in two
ways.  The config sets ``raise_on_error``, so a failing cell aborts the build, and the build runs
with ``--warningiserror --keep-going``, so any Sphinx warning (a ``literalinclude`` whose
``:pyobject:`` has gone, a missing image...) also makes the exit code non-zero.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
