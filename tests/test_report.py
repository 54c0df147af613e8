"""The report (`crackle-otel analyze --report`) and the gateway's live page, opened in a real headless Chromium.

The spans are the demo's (a slow host, a latency shift, a broken records law, correlations),
saved as OTLP JSON lines the way the collector's file exporter writes them; the live page gets
the same spans over real OTLP/HTTP. Screenshots go to the ``screenshot_dir`` fixture's folder.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from crackle_otel.cli import main
from crackle_otel.demo import run_workload, save_spans
from crackle_otel.gateway.otlp_json import message_to_otlp_json
from crackle_otel.gateway.service import GatewayService, GatewaySettings
from crackle_otel.otel.config import CrackleConfig

pytest.importorskip("plotly", reason="the report needs the [report] extra (plotly)")


@pytest.fixture(scope="module")
def demo_spans(tmp_path_factory) -> Path:
    provider = TracerProvider(resource=Resource.create({"service.name": "crackle-demo-shop"}))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    run_workload(provider.get_tracer("crackle-demo"), seed=0)
    path = tmp_path_factory.mktemp("demo") / "demo.jsonl"
    save_spans(exporter.get_finished_spans(), str(path))
    provider.shutdown()
    return path


@pytest.fixture(scope="module")
def report(demo_spans: Path, tmp_path_factory) -> Path:
    """The demo's report, as `crackle-otel analyze --report` writes it."""
    path = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["analyze", str(demo_spans), "--report", str(path)]) == 0
    return path


def _visible_rows(browser) -> int:
    return browser.script("return [...document.querySelectorAll('#findings tbody tr')].filter(r => !r.hidden).length")


def _render_every_plot(browser) -> int:
    """Scroll each pattern into view (plots are drawn as they appear) and wait until all are drawn."""
    cards = browser.script("return document.querySelectorAll('.pattern').length")
    for index in range(cards):
        browser.script(f"document.querySelectorAll('.pattern')[{index}].scrollIntoView()")
        browser.wait_until(lambda: browser.script(
            f"return document.querySelectorAll('.pattern')[{index}].querySelector('.plot').dataset.rendered === '1'"),
            what=f"the plot of pattern {index}")
    browser.script("window.scrollTo(0, 0)")
    return cards


def _plots_per_pattern(browser) -> list[int]:
    """Drawn plotly plots (an SVG with at least one trace) in each pattern card."""
    return browser.script("""
        return [...document.querySelectorAll('.pattern')].map(card =>
            [...card.querySelectorAll('.js-plotly-plot')].filter(plot =>
                plot.querySelector('svg.main-svg') && plot.querySelectorAll('.trace, .point, .bars').length > 0).length);
    """)


def test_report_opens_offline_with_one_plot_per_pattern_and_filters(report, browser) -> None:
    path = report
    assert "<script src=" not in path.read_text()  # plotly.js is inline
    browser.open(path.as_uri())
    rows = browser.wait_until(lambda: _visible_rows(browser), what="the summary table")
    assert rows >= 8  # the demo's cluster, shifts, law, violation, correlations, outlier
    cards = _render_every_plot(browser)
    assert cards == rows
    assert _plots_per_pattern(browser) == [1] * cards
    kinds = browser.script("return [...document.querySelectorAll('.pattern')].map(c => c.dataset.kind)")
    assert {"phase_transition", "conservation_violation", "correlation"} <= set(kinds)
    assert {"clustering", "attribution"} & set(kinds)  # the slow host (an attribution where one is found)
    assert browser.console_errors() == []
    # Offline: drawing every plot fetched nothing (no CDN, no fonts, no map data).
    assert browser.script("return performance.getEntriesByType('resource').map(r => r.name)") == []
    browser.screenshot("report")

    # The filter box narrows table and cards alike; the kind menu too; clearing brings all back.
    search = browser.driver.find_element("id", "filter")
    search.send_keys("violation")
    violations = kinds.count("conservation_violation")
    browser.wait_until(lambda: _visible_rows(browser) == violations, what="the filtered table")
    visible_cards = browser.script("return [...document.querySelectorAll('.pattern')].filter(c => !c.hidden).length")
    assert visible_cards == violations
    assert browser.driver.find_element("id", "shown").text == f"{violations} of {rows} patterns"
    browser.screenshot("report-filtered", full_page=False)
    search.clear()
    browser.script("const s = document.getElementById('filter'); s.dispatchEvent(new Event('input'));")
    browser.wait_until(lambda: _visible_rows(browser) == rows, what="the whole table again")
    browser.script("const k = document.getElementById('kind'); k.value = 'phase_transition'; "
                   "k.dispatchEvent(new Event('change'));")
    assert _visible_rows(browser) == kinds.count("phase_transition")

    # Sorting: a click on Group orders the rows by group.
    browser.script("const k = document.getElementById('kind'); k.value = ''; k.dispatchEvent(new Event('change'));")
    browser.driver.find_element("css selector", "th[data-key=group]").click()
    groups = browser.script("return [...document.querySelectorAll('#findings tbody tr td.group')].map(td => td.textContent)")
    assert groups == sorted(groups)
    assert browser.console_errors() == []


def test_report_lists_the_evidence_span_ids_of_the_file(report, demo_spans, browser) -> None:
    path = report
    span_ids = set()
    for line in demo_spans.read_text().splitlines():
        for resource in json.loads(line)["resourceSpans"]:
            for scope in resource["scopeSpans"]:
                span_ids.update(span["spanId"].lower() for span in scope["spans"])
    browser.open(path.as_uri())
    listed = browser.script("""
        return [...document.querySelectorAll('.pattern details.spans code')].map(c => c.textContent)""")
    assert listed
    for text in listed:
        trace_id, span_id = text.split()
        assert len(trace_id) == 32 and span_id in span_ids
    # The copy button puts every id of the pattern on the clipboard (or the fallback copy): it says so.
    browser.script("document.querySelector('.pattern details.spans').open = true")
    button = browser.driver.find_element("css selector", ".pattern details.spans button.copy")
    button.click()
    browser.wait_until(lambda: button.text == "copied", what="the copy button")
    assert browser.console_errors() == []


def _incident_spans(path: Path, n: int = 3000, seed: int = 0) -> Path:
    """frontend (GET /home) calls backend (Query); halfway, backend gets 5x slower, and frontend with it."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as out:
        for first in range(0, n, 200):
            request = trace_service_pb2.ExportTraceServiceRequest()
            scopes = {}
            for service in ("frontend", "backend"):
                resource_spans = request.resource_spans.add()
                resource_spans.resource.attributes.add(key="service.name").value.string_value = service
                scopes[service] = resource_spans.scope_spans.add()
            for i in range(first, min(first + 200, n)):
                backend_ms = rng.lognormal(np.log(10), 0.1) * (5.0 if i >= n // 2 else 1.0)
                own_ms = rng.lognormal(np.log(5), 0.1)
                trace_id = bytes(rng.integers(1, 256, 16, dtype=np.uint8))
                front_id, back_id = bytes(rng.integers(1, 256, 8, dtype=np.uint8)), bytes(rng.integers(1, 256, 8, dtype=np.uint8))
                begin = 1_790_000_000 * 10**9 + i * 50_000_000
                scopes["frontend"].spans.add(
                    trace_id=trace_id, span_id=front_id, name="GET /home", kind=trace_pb2.Span.SPAN_KIND_SERVER,
                    start_time_unix_nano=begin, end_time_unix_nano=begin + int((own_ms + backend_ms) * 1e6))
                scopes["backend"].spans.add(
                    trace_id=trace_id, span_id=back_id, parent_span_id=front_id, name="Query",
                    kind=trace_pb2.Span.SPAN_KIND_SERVER, start_time_unix_nano=begin + int(own_ms / 2 * 1e6),
                    end_time_unix_nano=begin + int((own_ms / 2 + backend_ms) * 1e6))
            out.write(message_to_otlp_json(request) + "\n")
    return path


def test_an_incident_is_drawn_as_a_timeline_of_its_groups_and_a_call_graph_with_the_origin(tmp_path, browser):
    spans = _incident_spans(tmp_path / "incident.jsonl")
    report = tmp_path / "incident.html"
    assert main(["analyze", str(spans), "--report", str(report)]) == 0
    browser.open(report.as_uri())
    kinds = browser.script("return [...document.querySelectorAll('.pattern')].map(c => c.dataset.kind)")
    assert kinds == ["incident"]  # the two groups' shifts are part of it, not patterns of their own
    assert _render_every_plot(browser) == 1 and _plots_per_pattern(browser) == [1]
    traces = browser.script("""
        const plot = document.querySelector('[data-kind=incident] .js-plotly-plot');
        return plot.data.map(t => ({name: t.name, y: t.y, text: t.text}));""")
    timeline, _, services = traces
    assert set(timeline["y"]) == {"backend | Query", "frontend | GET /home"}
    assert "\u25b6 backend (origin)" in services["text"] and "frontend" in services["text"]
    folded = browser.script("return [...document.querySelectorAll('[data-kind=incident] details.folded li')].map(li => li.textContent)")
    # The two groups' changes (as the stream found them: at its edge, then in the whole window).
    assert all(text.startswith("[phase transition]") for text in folded)
    assert {text.split(":")[0].removeprefix("[phase transition] ") for text in folded} == {
        "backend | Query", "frontend | GET /home"}
    assert browser.console_errors() == []
    browser.screenshot("incident")


def _post_json_lines(url: str, path: Path) -> None:
    for line in path.read_text().splitlines():
        request = urllib.request.Request(url, data=line.encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200


def test_live_page_shows_the_gateways_recent_patterns_and_refreshes(demo_spans, browser) -> None:
    settings = GatewaySettings(grpc_endpoint=None, http_endpoint="127.0.0.1:0")
    service = GatewayService(settings, CrackleConfig.load({}, exporter="none", cool_interval_millis=3_600_000))
    service.live.refresh_s = 0.5
    with service:
        base = f"http://127.0.0.1:{service.http_port}"
        browser.open(f"{base}/patterns")
        browser.wait_until(lambda: browser.script("return document.querySelector('.empty') !== null"),
                           what="the empty live page")
        _post_json_lines(f"{base}/v1/traces", demo_spans)  # real OTLP/HTTP (JSON) requests
        assert service.force_flush(60)
        # No reload: the page fetches the findings again by itself.
        expected = len(service.findings)
        assert expected >= 8
        browser.wait_until(lambda: _visible_rows(browser) == expected, what="the live table to fill")
        cards = _render_every_plot(browser)
        assert _plots_per_pattern(browser) == [1] * cards
        # Live descriptions place changes in time, not in rows of a sliding window.
        descriptions = browser.script("return [...document.querySelectorAll('.pattern .desc')].map(p => p.textContent)")
        assert not any(" task " in text and "at task" in text for text in descriptions), descriptions
        assert browser.console_errors() == []
        browser.screenshot("live")

        # Read-only: the page's paths take GET only.
        for path in ("/patterns", "/patterns/data.json"):
            request = urllib.request.Request(base + path, data=b"{}", method="POST",
                                             headers={"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code == 405
        with urllib.request.urlopen(f"{base}/patterns/plotly.min.js", timeout=10) as script:
            assert "max-age" in script.headers["Cache-Control"] and len(script.read()) > 1_000_000


def test_live_page_is_not_served_when_http_is_off() -> None:
    settings = GatewaySettings(grpc_endpoint="127.0.0.1:0", http_endpoint=None)
    with GatewayService(settings, CrackleConfig.load({}, exporter="none")) as service:
        assert service.http_port is None  # the page lives on the HTTP endpoint, with its address and TLS


def test_report_without_plotly_is_a_usage_error(tmp_path, demo_spans, monkeypatch, capsys) -> None:
    import crackle_otel.report.html as html

    html.plotly_js.cache_clear()
    monkeypatch.setitem(__import__("sys").modules, "plotly", None)  # as if the extra were not installed
    try:
        assert main(["analyze", str(demo_spans), "--report", str(tmp_path / "r.html")]) == 2
        assert "pip install 'crackle-otel[report]'" in capsys.readouterr().err
        assert not (tmp_path / "r.html").exists()
    finally:
        html.plotly_js.cache_clear()
