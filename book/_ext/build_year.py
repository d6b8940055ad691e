"""Sphinx extension: the footer's copyright year is the year the book is built.

Loaded by ``book/_config.yml`` (``sphinx.local_extensions``).  With ``SOURCE_DATE_EPOCH`` set (a
reproducible build), Sphinx itself then replaces the year with that date's.
"""

from __future__ import annotations

import datetime as dt
from typing import Any


def _set_year(app: Any, config: Any) -> None:
    config.copyright = str(dt.datetime.now(dt.timezone.utc).year)


def setup(app: Any) -> dict[str, Any]:
    app.connect("config-inited", _set_year, priority=100)  # before Sphinx's SOURCE_DATE_EPOCH correction (800)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
