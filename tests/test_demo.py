"""The README's main command, `crackle-otel demo`, as a new user runs it (console, and to an OTLP backend)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

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


def test_demo_sends_its_spans_and_linked_pattern_spans_and_events_over_otlp():
    with OTLPSink() as sink:
        run = subprocess.run([*DEMO, "--otlp-endpoint", f"http://{sink.grpc_endpoint}"], capture_output=True,
                             text=True, timeout=120, check=True)
        spans = sink.wait_for_spans(lambda s: s.name.startswith("crackle.pattern "), count=5, timeout=20)
        events = sink.wait_for_log_records(lambda r: r.event_name == "crackle.pattern", count=5, timeout=20)
        workload = sink.wait_for_spans(lambda s: s.service_name == "crackle-demo-shop", count=4200, timeout=20)
    # Every pattern links its evidence; a law that holds has no particular spans to point at.
    assert all(span.links for span in spans if span.name != "crackle.pattern conservation")
    assert len(events) >= len(spans) >= 5
    # ... and every link resolves to a span the backend holds.
    held = {span.identity for span in workload}
    assert all((link.trace_id, link.span_id) in held for span in spans for link in span.links)
    assert (f"4200 of 4200 workload spans exported (0 failed, 0 not sent); {len(spans)} of {len(spans)} patterns "
            f"exported as spans and {len(events)} as events\n") in run.stdout


def test_demo_with_no_backend_says_nothing_was_delivered_and_fails():
    run = subprocess.run([*DEMO, "--otlp-endpoint", f"http://127.0.0.1:{dead_port()}"], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "CRACKLE_EXPORT_TIMEOUT_MILLIS": "1500"})
    assert run.returncode == 1, run.stdout + run.stderr
    assert "0 of 4200 workload spans exported" in run.stdout
    assert re.search(r"0 of \d+ patterns exported as spans and 0 as events \(\d+ patterns dropped", run.stdout)
    assert "nothing reached" in run.stderr
    assert "patterns sent" not in run.stdout


@pytest.mark.parametrize("variable, value, expected", [
    ("CRACKLE_EXPORTER", "jaeger", "CRACKLE_EXPORTER='jaeger': expected one of otlp, console, none"),
    ("CRACKLE_PROFILE", "turbo", "CRACKLE_PROFILE='turbo': expected one of fast, default, slow"),
    ("CRACKLE_KILN_CAPACITY", "lots", "CRACKLE_KILN_CAPACITY='lots': expected a positive integer"),
    ("CRACKLE_ENABLED", "false", "CRACKLE_ENABLED=false turns crackle off"),
])
def test_demo_names_a_bad_crackle_variable_instead_of_a_traceback(variable, value, expected):
    run = subprocess.run(DEMO, capture_output=True, text=True, timeout=60, env={**os.environ, variable: value})
    assert run.returncode == 2
    assert expected in run.stderr
    assert "Traceback" not in run.stderr


def test_demo_honours_crackle_variables():
    run = subprocess.run(DEMO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "CRACKLE_EXPORTER": "none", "CRACKLE_PROFILE": "fast"}, check=True)
    assert "[phase transition]" not in run.stdout  # no console output: the exporter is none
    assert "4200 spans ended, 4200 recorded" in run.stdout


def dead_port() -> int:
    with socket.socket() as sock:  # bound then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
