"""The report page: a summary table and a plot of every finding, as one self-contained HTML file.

``render_report(summary, path)`` writes what ``crackle-otel analyze --report`` produces: the
findings as JSON, the page's own script and style, and plotly.js, all inline, so the file opens
offline and can be mailed or attached to a ticket. ``page(...)`` builds the same page for the
gateway's live view, which loads plotly.js and the findings from the gateway instead.

plotly.js comes from the ``plotly`` package (the ``[report]`` extra): its bundle ships inside the
wheel, so nothing is fetched from a CDN, at build time or when the page opens.
"""

from __future__ import annotations

import html
import json
import math
import os
import time
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from ..gateway.analyze import AnalysisSummary
    from .findings import Finding

_STATIC = "crackle_otel.report.static"


class ReportUnavailable(RuntimeError):
    """plotly (the ``[report]`` extra) is not installed."""


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """The minified plotly.js bundle shipped in the ``plotly`` package."""
    try:
        import plotly
    except ImportError as error:
        raise ReportUnavailable("the report needs plotly: pip install 'crackle-otel[report]'") from error
    path = os.path.join(os.path.dirname(plotly.__file__), "package_data", "plotly.min.js")
    with open(path, encoding="utf-8") as handle:
        return handle.read()


@lru_cache(maxsize=2)
def _static(name: str) -> str:
    return resources.files(_STATIC).joinpath(name).read_text(encoding="utf-8")


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null (statistics may hold an infinite effect)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    return value


def findings_document(findings: Iterable["Finding"], *, summary: str, title: str, live: bool = False) -> dict[str, Any]:
    """What the page's script renders: a one-line summary and every finding (``Finding.to_dict``)."""
    documents = []
    for finding in findings:
        document = finding.to_dict()
        for name in ("statistics", "places"):
            document[name] = _clean(document[name])
        documents.append(document)
    return {
        "title": title,
        "summary": summary,
        "live": live,
        "generated": time.time(),
        "findings": documents,
    }


def to_script_json(document: dict[str, Any]) -> str:
    """JSON safe inside <script>: no '</' can close the element early."""
    return json.dumps(document, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def page(title: str, *, data: dict[str, Any] | None = None, plotly_src: str | None = None,
         source: str | None = None, refresh_s: float = 5.0) -> str:
    """The report page. ``data`` embeds the findings; ``source`` makes the page fetch them every ``refresh_s``.

    ``plotly_src``: a URL to load plotly.js from; None inlines the bundle (offline report); "" leaves it
    out (the page then says plots need the ``[report]`` extra).
    """
    if plotly_src is None:
        plotly = f"<script>{plotly_js()}</script>"
    else:
        plotly = f'<script src="{html.escape(plotly_src)}"></script>' if plotly_src else ""
    embedded = (f'<script id="crackle-data" type="application/json">{to_script_json(data)}</script>'
                if data is not None else "")
    live = (f' data-source="{html.escape(source)}" data-refresh="{refresh_s:g}"' if source else "")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · crackle-otel</title>
<link rel="icon" href="data:,">
<style>{_static("report.css")}</style>
{plotly}
</head>
<body{live}>
<header><h1><span>crackle-otel</span> · {html.escape(title)}</h1><div class="meta" id="meta"></div></header>
<main>
<div class="controls">
  <input id="filter" type="search" placeholder="filter: words in kind, group, description, why, span ids" aria-label="filter">
  <select id="kind" aria-label="kind"><option value="">all kinds</option></select>
  <span class="count" id="shown"></span>
</div>
<table id="findings">
<thead><tr><th data-key="kind">Kind</th><th data-key="group">Group</th><th data-key="confidence">Confidence</th><th data-key="when">When</th><th data-key="description">Description</th></tr></thead>
<tbody></tbody>
</table>
<section id="patterns"></section>
</main>
{embedded}
<script>{_static("report.js")}</script>
</body>
</html>
"""


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(seconds))


def analysis_summary_line(summary: "AnalysisSummary") -> str:
    stats = summary.stats
    line = (f"{summary.spans:,} spans from {summary.files} file(s), {stats.get('tasks_recorded', 0):,} analysed in "
            f"{stats.get('groups', 0)} groups, {_when(summary.first_timestamp)} to {_when(summary.last_timestamp)}; "
            f"{len(summary.findings)} pattern{'' if len(summary.findings) == 1 else 's'}")
    problems = summary.problems.count + len(summary.unreadable) + summary.incomplete
    if problems:
        line += f"; {problems} input problem(s), see the command's output"
    return line


def render_report(summary: "AnalysisSummary", path: str, *, title: str) -> int:
    """Write the offline report of an analysis to ``path``; returns its size in bytes."""
    document = findings_document(summary.findings, summary=analysis_summary_line(summary), title=title)
    text = page(title, data=document)
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)  # never a half-written report under the real name
    return os.path.getsize(path)
