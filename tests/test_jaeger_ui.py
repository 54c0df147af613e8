"""A pattern in the Jaeger UI, as a person sees it: real Jaeger, real demo, real headless Chromium.

`crackle-otel demo --otlp-endpoint` sends its spans and its pattern spans to Jaeger; the browser opens
a pattern span's trace, finds the pattern's attributes and its references to the evidence spans,
follows one to the evidence span, and saves screenshots (``CRACKLE_SCREENSHOT_DIR`` keeps them).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline_infra import Jaeger, is_pattern_span, pattern_links, tags

pytestmark = pytest.mark.pipeline

DEMO_SERVICE = "crackle-demo-shop"

# The span detail's sections, found by their visible text (class names change between UI releases).
_TEXT_OF = "return document.body.innerText"
_CLICK_TEXT = """
const [text, selector] = arguments;
const nodes = [...document.querySelectorAll(selector)].filter(n => n.innerText && n.innerText.includes(text));
if (!nodes.length) return false;
const node = nodes.reduce((a, b) => (b.innerText.length < a.innerText.length ? b : a));  // the tightest match
node.scrollIntoView({block: 'center'});
node.click();
return true;
"""


def test_a_pattern_span_in_the_jaeger_ui_shows_its_attributes_and_leads_to_its_evidence(
        pipeline_binaries, browser, tmp_path):
    with Jaeger(pipeline_binaries, tmp_path) as jaeger:
        demo = subprocess.run([sys.executable, "-m", "crackle_otel.cli", "demo", "--otlp-endpoint",
                               f"http://{jaeger.otlp_grpc}"], capture_output=True, text=True, timeout=300)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        # Jaeger takes no logs: the summary says the events did not arrive, and the spans did.
        assert "4200 of 4200 workload spans exported" in demo.stdout, demo.stdout
        patterns = jaeger.wait_for_spans(DEMO_SERVICE, lambda s: is_pattern_span(s) and pattern_links(s))
        pattern = next((s for s in patterns if s["operationName"] == "crackle.pattern phase_transition"), patterns[0])
        trace_id, span_id = pattern["traceID"], pattern["spanID"]
        evidence_trace, evidence_span = pattern_links(pattern)[0]
        assert jaeger.holds_span(evidence_trace, evidence_span)

        # The pattern's trace: one span, named after the pattern.
        browser.open(f"{jaeger.ui_url}/trace/{trace_id}")
        browser.wait_until(lambda: pattern["operationName"] in browser.script(_TEXT_OF), timeout=30,
                           what="the trace view")
        assert "This is not the Jaeger UI" not in browser.script(_TEXT_OF)
        # Open the span's detail, then its attributes and its references.
        browser.wait_until(lambda: browser.script(_CLICK_TEXT, pattern["operationName"], "a.span-name"),
                           what="the pattern span's row")
        browser.wait_until(lambda: "References" in browser.script(_TEXT_OF), what="the span's detail")
        for section in ("Attributes", "Tags", "References"):
            browser.script(_CLICK_TEXT, section, "a, span, div, strong")
        description = tags(pattern)["crackle.pattern.description"]
        browser.wait_until(lambda: "crackle.pattern.description" in browser.script(_TEXT_OF), what="the attributes")
        text = browser.script(_TEXT_OF)
        assert description[:40] in text, text[:2000]
        assert "crackle.pattern.confidence" in text and "crackle.pattern.group" in text
        assert evidence_span in text or evidence_span.lstrip("0") in text, text[:3000]
        browser.screenshot("jaeger-pattern-span", full_page=False)

        # Follow the first reference: it is an evidence span of the demo's workload.
        href = browser.script(
            "return [...document.querySelectorAll('a')].map(a => a.href).find(h => h.includes(arguments[0]))",
            evidence_trace.lstrip("0"))
        assert href and evidence_span.lstrip("0") in href, href  # the reference names the evidence span itself
        browser.open(href)
        browser.wait_until(lambda: "GET /checkout" in browser.script(_TEXT_OF) or
                           "process_batch" in browser.script(_TEXT_OF), timeout=30, what="the evidence trace")
        assert DEMO_SERVICE in browser.script(_TEXT_OF)
        browser.screenshot("jaeger-evidence-span", full_page=False)
        assert browser.console_errors() == [] or all("favicon" in e for e in browser.console_errors())
