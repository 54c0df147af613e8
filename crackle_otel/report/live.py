"""The gateway's live pattern page: the report's view of what the gateway found recently, refreshed.

Served read-only on the gateway's OTLP/HTTP endpoint (same address, same TLS, same
interface binding as the rest of it; nothing is served when HTTP is off):

- ``GET /patterns``: the page (the report's table and plots);
- ``GET /patterns/data.json``: the most recently seen findings, fetched by the page every few seconds;
- ``GET /patterns/plotly.min.js``: plotly.js from the ``[report]`` extra, cached by the browser.

Without the extra the page still lists the findings, saying plots need it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Callable

from ..gateway.http_server import Page
from .findings import FindingLedger
from .html import ReportUnavailable, findings_document, page, plotly_js

PAGE_PATH = "/patterns"
DATA_PATH = "/patterns/data.json"
PLOTLY_PATH = "/patterns/plotly.min.js"
DEFAULT_REFRESH_S = 5.0
DEFAULT_RECENT = 200
_HTML = "text/html; charset=utf-8"
_NO_STORE = (("Cache-Control", "no-store"),)


class LivePatterns:
    """Pages of the live view over a ``FindingLedger`` the gateway's furnace feeds."""

    def __init__(self, ledger: FindingLedger, stats: Callable[[], dict[str, Any]], *,
                 title: str = "live patterns", refresh_s: float = DEFAULT_REFRESH_S,
                 recent: int = DEFAULT_RECENT) -> None:
        self.ledger = ledger
        self.stats = stats
        self.title = title
        self.refresh_s = refresh_s
        self.recent = recent

    def pages(self) -> dict[str, Callable[[], Page]]:
        return {PAGE_PATH: self.page, DATA_PATH: self.data, PLOTLY_PATH: self.plotly}

    def page(self) -> Page:
        try:
            plotly_js()
            plotly_src = PLOTLY_PATH
        except ReportUnavailable:
            plotly_src = ""  # the page still lists the findings and says plots need the extra
        text = page(self.title, plotly_src=plotly_src, source=DATA_PATH, refresh_s=self.refresh_s)
        return Page(text.encode("utf-8"), _HTML, _NO_STORE)

    def data(self) -> Page:
        stats = self.stats()
        findings = self.ledger.recent(self.recent)
        summary = (f"{stats.get('spans_received', 0):,} spans received, {stats.get('tasks_recorded', 0):,} analysed "
                   f"in {stats.get('groups', 0)} groups, {stats.get('cools', 0):,} cools; "
                   f"{len(findings)} most recent of {len(self.ledger)} patterns")
        document = findings_document(findings, summary=summary, title=self.title, live=True)
        return Page(json.dumps(document, separators=(",", ":"), allow_nan=False).encode("utf-8"),
                    "application/json", _NO_STORE)

    def plotly(self) -> Page:
        try:
            return Page(_plotly_bytes(), "text/javascript; charset=utf-8", (("Cache-Control", "max-age=86400"),))
        except ReportUnavailable:
            return Page(b"/* plotly is not installed: pip install 'crackle-otel[report]' */",
                        "text/javascript; charset=utf-8", _NO_STORE)


@lru_cache(maxsize=1)
def _plotly_bytes() -> bytes:
    return plotly_js().encode("utf-8")
