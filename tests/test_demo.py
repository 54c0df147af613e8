"""The README's main command, `crackle-otel demo`, as a new user runs it (console, and to an OTLP backend)."""

from __future__ import annotations

import subprocess
import sys

from otlp_sink import OTLPSink

DEMO = [sys.executable, "-m", "crackle_otel.cli", "demo"]


def test_demo_prints_the_three_planted_problems():
    out = subprocess.run(DEMO, capture_output=True, text=True, timeout=120, check=True).stdout
    lines = out.splitlines()
    assert any(l.startswith("[phase transition] duration_ms") and "GET /checkout" in l for l in lines), out
    # The slow host is named as such; the cluster its spans form is part of that one finding.
    assert any(l.startswith("[attribution] host.name=shop-7: duration_ms") and "separate cluster" in l for l in lines), out
    assert not any(l.startswith("[clustering]") for l in lines), out
    assert any(l.startswith("[conservation violation] records_in - records_out - errors = 0") for l in lines), out
    assert "0 dropped" in out


def test_demo_sends_linked_pattern_spans_and_events_over_otlp():
    with OTLPSink() as sink:
        subprocess.run([*DEMO, "--otlp-endpoint", f"http://{sink.grpc_endpoint}"], capture_output=True, text=True,
                       timeout=120, check=True)
        spans = sink.wait_for_spans(lambda s: s.name.startswith("crackle.pattern "), count=5, timeout=20)
        events = sink.wait_for_log_records(lambda r: r.event_name == "crackle.pattern", count=5, timeout=20)
    # Every pattern links its evidence; a law that holds has no particular spans to point at.
    assert all(span.links for span in spans if span.name != "crackle.pattern conservation")
    assert len(events) >= len(spans) >= 5
