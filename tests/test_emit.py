"""Patterns out: each pattern as a span linked to the involved spans, plus a correlated OTel event."""

from __future__ import annotations

import io
import socket
import threading
import time
import pytest
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from crackle_otel.otel.emit import INSTRUMENTATION_SCOPE, ConsoleEmitter, PatternEmitter
from crackle_otel.patterns import InvolvedTask, Pattern, PatternKind

NOW = time.time()


def trace_and_span(n: int) -> tuple[int, int]:
    return (0x1000 + n) << 64 | n, 0xABC000 + n


def outlier_pattern(n_involved: int = 3, *, without_identity: int = 0, group: str = "checkout GET /cart") -> Pattern:
    involved = [
        InvolvedTask("GET /cart", "outlier", index=10 + i, timestamp=NOW - 60 + i, identity=trace_and_span(i))
        for i in range(n_involved)
    ]
    involved += [
        InvolvedTask("GET /cart", "outlier", index=100 + i, timestamp=NOW - 30, identity=None)
        for i in range(without_identity)
    ]
    return Pattern(
        kind=PatternKind.OUTLIER,
        description="3 of 400 GET /cart spans take > 900 ms (median 42 ms); all on host web-7",
        confidence=0.93,
        metrics=("duration_ms",),
        statistics={"robust_z": 11.5, "threshold": 5.0},
        involved=tuple(involved),
        explanation={"host.name": "web-7 (3 of 3 outliers, 1 of 397 others)"},
        key="outlier:duration_ms",
        group=group,
    )


def correlation_pattern() -> Pattern:
    return Pattern(
        kind=PatternKind.CORRELATION,
        description="consumer_lag rises with gc_pause_ms (Spearman 0.91)",
        confidence=0.8,
        metrics=("consumer_lag", "gc_pause_ms"),
        statistics={"spearman": 0.91, "p_value": 1e-9},
        key="correlation:consumer_lag|gc_pause_ms",
    )


@pytest.fixture
def in_memory():
    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    emitter = PatternEmitter(
        span_exporter=spans, log_exporter=logs, resource=Resource.create({"service.name": "crackle-test"})
    )
    yield emitter, spans, logs
    emitter.shutdown(timeout_millis=2_000)


def test_pattern_becomes_a_linked_span_and_an_event_in_its_context(in_memory):
    emitter, spans, logs = in_memory
    pattern = outlier_pattern(3, without_identity=1)
    emitter.emit([pattern])
    assert emitter.force_flush(5_000)

    (span,) = spans.get_finished_spans()
    assert span.name == "crackle.pattern outlier"
    assert span.instrumentation_scope.name == INSTRUMENTATION_SCOPE == "crackle_otel"
    assert span.parent is None
    assert span.resource.attributes["service.name"] == "crackle-test"
    attrs = span.attributes
    assert attrs["crackle.pattern.kind"] == "outlier"
    assert attrs["crackle.pattern.confidence"] == pytest.approx(0.93)
    assert attrs["crackle.pattern.group"] == "checkout GET /cart"
    assert attrs["crackle.pattern.key"] == "outlier:duration_ms"
    assert tuple(attrs["crackle.pattern.metrics"]) == ("duration_ms",)
    assert attrs["crackle.pattern.description"] == pattern.description
    assert attrs["crackle.pattern.stat.robust_z"] == pytest.approx(11.5)
    assert attrs["crackle.pattern.why.host.name"].startswith("web-7")
    assert attrs["crackle.pattern.involved_count"] == 4
    assert attrs["crackle.pattern.linked_count"] == 3

    linked = [(link.context.trace_id, link.context.span_id) for link in span.links]
    assert linked == [trace_and_span(i) for i in range(3)]  # in the pattern's order, no identity-less task
    assert all(link.context.is_remote and link.context.trace_flags.sampled for link in span.links)
    assert [link.attributes["crackle.role"] for link in span.links] == ["outlier"] * 3
    assert [link.attributes["crackle.task.index"] for link in span.links] == [10, 11, 12]
    assert span.links[0].attributes["crackle.task.label"] == "GET /cart"

    (record,) = [r.log_record for r in logs.get_finished_logs()]
    assert record.event_name == "crackle.pattern"
    assert record.body == pattern.description
    assert abs(record.timestamp / 1e9 - time.time()) < 60  # not 0 (the SDK's default)
    assert record.severity_text == "WARN"
    assert (record.trace_id, record.span_id) == (span.context.trace_id, span.context.span_id)
    assert record.attributes["crackle.pattern.kind"] == "outlier"
    assert record.attributes["crackle.pattern.group"] == "checkout GET /cart"
    assert record.attributes["crackle.pattern.stat.threshold"] == pytest.approx(5.0)
    assert logs.get_finished_logs()[0].instrumentation_scope.name == INSTRUMENTATION_SCOPE


def test_structure_patterns_are_info_and_span_time_is_the_evidence_window(in_memory):
    emitter, spans, logs = in_memory
    emitter.emit([correlation_pattern(), outlier_pattern(5)])
    assert emitter.force_flush(5_000)
    by_kind = {s.attributes["crackle.pattern.kind"]: s for s in spans.get_finished_spans()}
    assert [r.log_record.severity_text for r in logs.get_finished_logs()] == ["INFO", "WARN"]
    # No involved tasks: the span is "now"; with evidence: it spans the first to the last involved task.
    correlation = by_kind["correlation"]
    assert abs(correlation.start_time / 1e9 - time.time()) < 60
    assert len(correlation.links) == 0
    outlier = by_kind["outlier"]
    assert outlier.start_time / 1e9 == pytest.approx(NOW - 60, abs=1e-3)
    assert outlier.end_time / 1e9 == pytest.approx(NOW - 56, abs=1e-3)


def test_row_numbers_are_not_taken_for_wall_clock_times(in_memory):
    emitter, spans, _ = in_memory
    involved = tuple(InvolvedTask("t", "member", i, float(i), trace_and_span(i)) for i in range(4))
    emitter.emit([Pattern(PatternKind.CLUSTERING, "a cluster", 0.7, ("x",), involved=involved)])
    emitter.force_flush(5_000)
    (span,) = spans.get_finished_spans()
    assert abs(span.start_time / 1e9 - time.time()) < 60


def test_events_alone_never_borrow_the_callers_trace():
    logs = InMemoryLogRecordExporter()
    emitter = PatternEmitter(log_exporter=logs)  # no span exporter: events only
    app = TracerProvider()
    try:
        with app.get_tracer("app").start_as_current_span("request"):
            emitter.emit([correlation_pattern()])
        assert emitter.force_flush(5_000)
        (record,) = [r.log_record for r in logs.get_finished_logs()]
        assert record.event_name == "crackle.pattern"
        assert not record.trace_id and not record.span_id
    finally:
        emitter.shutdown(2_000)
        app.shutdown()


def test_pattern_spans_are_roots_even_when_emitted_inside_a_request(in_memory):
    emitter, spans, logs = in_memory
    app = TracerProvider()
    with app.get_tracer("app").start_as_current_span("request") as request:
        emitter.emit([correlation_pattern()])
    emitter.force_flush(5_000)
    (span,) = spans.get_finished_spans()
    assert span.parent is None
    assert span.context.trace_id != request.get_span_context().trace_id
    assert logs.get_finished_logs()[0].log_record.span_id == span.context.span_id
    app.shutdown()


def test_links_keep_the_most_relevant_up_to_the_limit():
    spans = InMemorySpanExporter()
    emitter = PatternEmitter(span_exporter=spans, max_links=4)
    try:
        emitter.emit([outlier_pattern(10, without_identity=2)])
        emitter.force_flush(5_000)
        (span,) = spans.get_finished_spans()
        assert [link.context.span_id for link in span.links] == [trace_and_span(i)[1] for i in range(4)]
        assert span.attributes["crackle.pattern.linked_count"] == 4
        assert span.attributes["crackle.pattern.involved_count"] == 12
        assert span.dropped_links == 0  # capped by us (relevance order), not by the SDK (oldest dropped)
    finally:
        emitter.shutdown(2_000)


def test_emit_never_raises_and_a_bad_pattern_does_not_lose_the_others(in_memory):
    emitter, spans, logs = in_memory
    emitter.emit([None, correlation_pattern()])  # type: ignore[list-item]
    emitter.emit(42)  # type: ignore[arg-type]
    assert emitter.force_flush(5_000)
    assert [s.attributes["crackle.pattern.kind"] for s in spans.get_finished_spans()] == ["correlation"]
    stats = emitter.stats()
    assert stats["patterns_dropped_build_failed"] == 1
    assert stats["patterns_dropped"] == 1
    assert stats["patterns_received"] == 2 and stats["patterns_exported"] == 1
    assert stats["spans_exported"] == 1 and stats["events_exported"] == 1


class BlockingSpanExporter(SpanExporter):
    """Holds the first export until released, like a backend that hangs."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.exported = 0

    def export(self, spans):
        self.entered.set()
        self.release.wait(10)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self):
        self.release.set()


def test_a_hung_backend_costs_a_bounded_queue_and_counted_drops():
    exporter = BlockingSpanExporter()
    emitter = PatternEmitter(span_exporter=exporter, max_queue_size=4)
    try:
        emitter.emit([correlation_pattern()] * 4)  # a full batch: the worker takes it and hangs
        assert exporter.entered.wait(5)
        started = time.monotonic()
        emitter.emit([correlation_pattern()] * 16)  # 4 pending in the export: the queue is full, 16 dropped
        assert time.monotonic() - started < 0.5  # emit never waits for the backend
        stats = emitter.stats()
        assert stats["patterns_received"] == 20
        assert stats["patterns_dropped"] == stats["patterns_dropped_queue_full"] == 16
        assert stats["patterns_pending"] == 4
        exporter.release.set()
        assert emitter.force_flush(5_000)
        assert exporter.exported == 4
        stats = emitter.stats()
        assert stats["patterns_exported"] == 4 and stats["patterns_pending"] == 0
        assert stats["patterns_exported"] + stats["patterns_dropped"] == 20
    finally:
        exporter.release.set()
        emitter.shutdown(2_000)


def test_emit_after_shutdown_is_counted_not_sent(in_memory):
    emitter, spans, _ = in_memory
    emitter.shutdown(2_000)
    emitter.emit([correlation_pattern()])
    assert emitter.stats()["patterns_dropped"] == 1
    assert spans.get_finished_spans() == ()
    assert emitter.force_flush(100) is False


def dead_port() -> int:
    with socket.socket() as sock:  # bound then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_flush_and_shutdown_are_bounded_when_the_backend_is_dead(protocol):
    emitter = PatternEmitter.otlp(endpoint=f"http://127.0.0.1:{dead_port()}", protocol=protocol, insecure=True)
    started = time.monotonic()
    emitter.emit([outlier_pattern(3)] * 5)
    assert time.monotonic() - started < 0.5

    started = time.monotonic()
    assert emitter.force_flush(timeout_millis=800) is False
    assert time.monotonic() - started < 0.8 + 0.5

    started = time.monotonic()
    emitter.shutdown(timeout_millis=1_500)  # the OTLP exporter alone would retry for ~7-8 s
    assert time.monotonic() - started < 1.5 + 0.5
    emitter.emit([outlier_pattern(3)])
    assert emitter.stats()["patterns_dropped"] >= 1


def test_unknown_protocol_is_a_clear_error():
    with pytest.raises(ValueError, match="grpc.*http/protobuf"):
        PatternEmitter.otlp(protocol="thrift")  # type: ignore[arg-type]


@pytest.fixture
def sink():
    """The project's in-process OTLP receiver (gRPC + HTTP) collecting what arrives."""
    otlp_sink = pytest.importorskip("otlp_sink", reason="tests/otlp_sink.py (OTLP receiver) not available")
    with otlp_sink.OTLPSink() as running:
        yield running


def workload_spans(exporter: SpanExporter, n: int = 6) -> list:
    """An application's own spans, exported the usual way; returns them as the SDK saw them."""
    seen = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(seen))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop")
    for i in range(n):
        with tracer.start_as_current_span("GET /cart"):
            with tracer.start_as_current_span("SELECT cart"):
                pass
    provider.shutdown()
    return list(seen.get_finished_spans())


def pattern_over(spans: list) -> Pattern:
    involved = tuple(
        InvolvedTask(span.name, "outlier", index=i, timestamp=span.start_time / 1e9,
                     identity=(span.context.trace_id, span.context.span_id))
        for i, span in enumerate(spans)
    )
    return Pattern(PatternKind.OUTLIER, f"{len(spans)} slow spans", 0.9, ("duration_ms",),
                   {"robust_z": 8.0}, involved, key="outlier:duration_ms", group="shop GET /cart")


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_patterns_reach_an_otlp_backend_linked_to_spans_it_received(sink, protocol):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    app_spans = workload_spans(OTLPSpanExporter(endpoint=sink.grpc_endpoint, insecure=True))
    slow = [span for span in app_spans if span.name == "SELECT cart"][:3]
    endpoint = sink.grpc_endpoint if protocol == "grpc" else sink.http_endpoint
    emitter = PatternEmitter.otlp(endpoint=endpoint, protocol=protocol, insecure=True,
                                  resource=Resource.create({"service.name": "crackle"}))
    emitter.emit([pattern_over(slow)])
    assert emitter.force_flush(5_000)
    emitter.shutdown(2_000)

    (pattern_span,) = sink.wait_for_spans(lambda s: s.scope_name == INSTRUMENTATION_SCOPE)
    assert pattern_span.name == "crackle.pattern outlier"
    assert pattern_span.resource["service.name"] == "crackle"
    linked = [(link.trace_id, link.span_id) for link in pattern_span.links]
    assert linked == [(s.context.trace_id, s.context.span_id) for s in slow]
    assert set(linked) <= sink.span_identities()  # every link points at a span the backend has
    assert {link.attributes["crackle.role"] for link in pattern_span.links} == {"outlier"}
    (event,) = sink.wait_for_log_records(lambda r: r.event_name == "crackle.pattern")
    assert event.body == "3 slow spans"
    assert (event.trace_id, event.span_id) == pattern_span.identity
    assert event.attributes["crackle.pattern.group"] == "shop GET /cart"
    assert event.severity_text == "WARN" and event.time_unix_nano > 0


def test_otlp_exporters_take_endpoint_protocol_and_headers_from_the_standard_env(sink, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.http_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=crackle")
    emitter = PatternEmitter.otlp()
    emitter.emit([outlier_pattern(2)])
    assert emitter.force_flush(5_000)
    emitter.shutdown(2_000)
    (span,) = sink.wait_for_spans(lambda s: s.scope_name == INSTRUMENTATION_SCOPE)
    assert [link.span_id for link in span.links] == [trace_and_span(i)[1] for i in range(2)]
    (event,) = sink.wait_for_log_records()
    assert event.event_name == "crackle.pattern" and event.span_id == span.span_id


def test_console_emitter_can_show_more_tasks():
    out = io.StringIO()
    ConsoleEmitter(out, max_tasks_shown=3).emit([outlier_pattern(5)])
    assert f"{trace_and_span(2)[1]:016x}" in out.getvalue() and "(+2 more)" in out.getvalue()


def test_console_emitter_prints_one_line_per_pattern_with_group_and_tasks():
    out = io.StringIO()
    console = ConsoleEmitter(out)
    console.emit([outlier_pattern(5), correlation_pattern()])
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("[outlier] 3 of 400 GET /cart spans")
    assert "group=checkout GET /cart" in lines[0]
    trace_id, span_id = trace_and_span(0)
    assert f"{trace_id:032x}/{span_id:016x}" in lines[0]
    assert f"{trace_and_span(1)[1]:016x}" not in lines[0]  # only the most relevant task
    assert "(+4 more)" in lines[0]
    assert "group=" not in lines[1] and "tasks=" not in lines[1]
    stats = console.stats()
    assert (stats["patterns_received"], stats["patterns_exported"], stats["patterns_dropped"]) == (2, 2, 0)


def test_console_emitter_survives_a_closed_stream():
    out = io.StringIO()
    console = ConsoleEmitter(out)
    out.close()
    console.emit([correlation_pattern()])
    stats = console.stats()
    assert (stats["patterns_exported"], stats["patterns_dropped"], stats["export_failures"]) == (0, 1, 1)
    console.force_flush()
    console.shutdown()
    console.emit([correlation_pattern()])
    assert console.stats()["patterns_dropped"] == 2
