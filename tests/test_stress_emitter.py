"""Stress: the pattern emitter under hostile text, a raising exporter and a dead backend.

Counters must add up at every step (received = exported + dropped + pending),
one bad pattern must never cost another, and a dead backend must cost bounded
memory and time.
"""

from __future__ import annotations

import dataclasses
import socket
import time

import pytest
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from crackle_otel.otel.emit import LINK_COST_BYTES, SPAN_COST_BYTES, PatternEmitter, encodable
from otlp_sink import OTLPSink
from test_emit import correlation_pattern, outlier_pattern


def reconciles(stats: dict) -> bool:
    return stats["patterns_received"] == stats["patterns_exported"] + stats["patterns_dropped"] + stats["patterns_pending"]


def test_encodable_replaces_lone_surrogates_only():
    assert encodable("GET /café") == "GET /café"
    assert encodable("GET /caf\udce9") == "GET /caf\\udce9"
    "GET /caf\udce9".encode("utf-8", "surrogatepass")  # the input really is not UTF-8 encodable
    encodable("GET /caf\udce9").encode("utf-8")


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_one_undecodable_character_costs_nothing_over_real_otlp(protocol):
    bad = "GET /caf\udce9"
    patterns = [outlier_pattern(group=f"shop | GET /{i}") for i in range(11)]
    patterns.append(dataclasses.replace(outlier_pattern(), description=f"{bad} is slow", group=f"shop | {bad}",
                                        explanation={bad: bad}, metrics=(bad,), statistics={bad: 1.0}))
    with OTLPSink(grpc_endpoint="127.0.0.1:0", http_endpoint="127.0.0.1:0") as sink:
        endpoint = sink.grpc_endpoint if protocol == "grpc" else sink.http_endpoint
        emitter = PatternEmitter.otlp(endpoint=endpoint, protocol=protocol, insecure=True)
        try:
            emitter.emit(patterns)
            assert emitter.force_flush(10_000)
            spans = sink.wait_for_spans(count=12)
            events = sink.wait_for_log_records(count=12)
        finally:
            emitter.shutdown(2_000)
    groups = {span.attributes["crackle.pattern.group"] for span in spans}
    assert "shop | GET /caf\\udce9" in groups and len(groups) == 12
    assert any(event.body == "GET /caf\\udce9 is slow" for event in events)
    stats = emitter.stats()
    assert stats["patterns_exported"] == stats["patterns_received"] == 12
    assert stats["events_exported"] == 12 and stats["export_failures"] == 0
    assert reconciles(stats)


class RaisesOnOneSpan(SpanExporter):
    """An exporter that cannot encode one particular span (and so fails any batch holding it)."""

    def __init__(self) -> None:
        self.exported: list = []

    def export(self, spans):
        if any(span.attributes["crackle.pattern.group"] == "poison" for span in spans):
            raise ValueError("cannot encode")
        self.exported.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


def test_an_exporter_that_raises_on_one_pattern_loses_only_that_one():
    exporter = RaisesOnOneSpan()
    emitter = PatternEmitter(span_exporter=exporter)
    try:
        emitter.emit([outlier_pattern(group=f"g{i}") for i in range(5)] + [outlier_pattern(group="poison")])
        emitter.force_flush(5_000)
    finally:
        emitter.shutdown(2_000)
    assert len(exporter.exported) == 5
    stats = emitter.stats()
    assert (stats["patterns_exported"], stats["patterns_dropped_export_failed"], stats["patterns_pending"]) == (5, 1, 0)
    assert reconciles(stats)


def test_the_queue_is_bounded_in_bytes_too():
    class Hangs(SpanExporter):
        def export(self, spans):
            time.sleep(30)

        def shutdown(self):
            pass

    budget = 8 * (SPAN_COST_BYTES + 128 * LINK_COST_BYTES)  # eight fully linked patterns
    emitter = PatternEmitter(span_exporter=Hangs(), max_queue_size=2048, max_queue_bytes=budget)
    try:
        emitter.emit([outlier_pattern(n_involved=128)] * 100)
        stats = emitter.stats()
        assert stats["patterns_pending"] == 8 and stats["queue_bytes"] <= budget
        assert stats["patterns_dropped_queue_full"] == 92
        emitter.emit([correlation_pattern()])  # no links: small, but the queue is still full by bytes
        assert emitter.stats()["patterns_dropped_queue_full"] == 93
        assert reconciles(emitter.stats())
    finally:
        emitter.shutdown(500)
    stats = emitter.stats()
    assert stats["patterns_pending"] == 0 and stats["patterns_dropped"] == 101 and reconciles(stats)


def dead_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_dead_backend_costs_bounded_time_and_counts_every_pattern_once():
    emitter = PatternEmitter.otlp(endpoint=dead_endpoint(), protocol="grpc", export_timeout_millis=1_000,
                                  max_queue_size=64)
    slowest = 0.0
    try:
        for _ in range(20):
            batch = [outlier_pattern(n_involved=128) for _ in range(25)]
            started = time.perf_counter()
            emitter.emit(batch)
            slowest = max(slowest, time.perf_counter() - started)
            assert reconciles(emitter.stats())
        before = emitter.stats()
        assert before["patterns_exported"] == 0 and before["patterns_received"] == 500
        assert before["patterns_pending"] <= 64
    finally:
        started = time.monotonic()
        emitter.shutdown(2_000)
        shutdown_s = time.monotonic() - started
    after = emitter.stats()
    assert shutdown_s < 3.0
    assert slowest < 2.0, f"one emit() of 25 patterns took {slowest:.2f} s"
    # Each pattern is dropped exactly once: never more drops than patterns (the old double count).
    assert after["patterns_dropped"] == after["patterns_received"] == 500
    assert after["patterns_pending"] == 0 and after["patterns_exported"] == 0
    assert after["patterns_dropped_shutdown"] + after["patterns_dropped_export_failed"] \
        + after["patterns_dropped_queue_full"] == 500
    assert reconciles(after)
