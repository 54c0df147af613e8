"""End to end: instrumented workload -> CrackleSpanProcessor -> PatternEmitter.otlp -> a real OTLP receiver.

The workload (real SDK spans) has three problems, each in its own span group:
a latency shift (GET /cart), one slow host among ten (GET /search) and records
lost between records_in and records_out (process batch). Over OTLP/gRPC and
OTLP/HTTP the receiver must get a ``crackle.pattern <kind>`` span for each, whose
links all point at spans the workload really produced, and a correlated
``crackle.pattern`` event per pattern span.
"""

from __future__ import annotations

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from crackle_otel.otel.emit import PatternEmitter
from crackle_otel.otel.processor import CrackleSpanProcessor
from crackle_otel.otel.setup import configure
from otlp_sink import OTLPSink
from workload import latency_shift, run_workload

SERVICE = "shop"




EXPECTED = [
    # (span name suffix = kind slug, group, metrics that must be among the pattern's)
    ("phase_transition", f"{SERVICE} | GET /cart", {"duration_ms"}),
    ("attribution", f"{SERVICE} | GET /search", {"duration_ms"}),  # host-7 is slow (its spans form a cluster)
    ("conservation_violation", f"{SERVICE} | process batch", {"records_in", "records_out"}),
]


@pytest.fixture
def sink():
    with OTLPSink() as running:
        yield running


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_patterns_reach_an_otlp_backend_linked_to_real_spans(sink, protocol):
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    endpoint = sink.grpc_endpoint if protocol == "grpc" else sink.http_endpoint
    emitter = PatternEmitter.otlp(
        endpoint=endpoint,
        protocol=protocol,
        insecure=True if protocol == "grpc" else None,
        resource=provider.resource,  # patterns show up under the service they are about
        export_timeout_millis=5_000,
    )
    # A queue that holds the whole workload: this test is about the path, not about overload (a busy
    # machine slows the budgeted cooler, and the default 2048-span queue would drop the oldest spans).
    processor = CrackleSpanProcessor(emitter, profile="fast", cool_interval_millis=3_600_000, exporter="otlp",
                                     max_queue_size=4096)
    provider.add_span_processor(processor)

    identities = run_workload(provider.get_tracer("shop.app"))
    assert processor.force_flush(timeout_millis=30_000)
    stats = processor.stats()
    assert stats["spans_recorded"] == len(identities) == 2200
    reported = stats["patterns_reported"]
    assert reported > 0

    pattern_spans = sink.wait_for_spans(lambda s: s.name.startswith("crackle.pattern "), count=reported, timeout=15)
    events = sink.wait_for_log_records(lambda r: r.event_name == "crackle.pattern", count=reported, timeout=15)
    assert len(pattern_spans) == len(events) == reported

    summary = sorted(
        (s.name, s.attributes["crackle.pattern.group"], tuple(s.attributes["crackle.pattern.metrics"]))
        for s in pattern_spans
    )
    for slug, group, metrics in EXPECTED:
        matching = [
            s
            for s in pattern_spans
            if s.name == f"crackle.pattern {slug}"
            and s.attributes["crackle.pattern.group"] == group
            and metrics <= set(s.attributes["crackle.pattern.metrics"])
        ]
        assert matching, f"no {slug} pattern in {group} on {metrics}; received {summary}"
        assert any(s.links for s in matching), f"{slug} pattern span has no links"

    # The slow host is named (a span attribute, kept as a descriptive attribute), its cluster folded in.
    slow_host = [
        s
        for s in pattern_spans
        if s.name == "crackle.pattern attribution" and s.attributes["crackle.pattern.group"] == f"{SERVICE} | GET /search"
    ]
    assert [s.attributes["crackle.pattern.key"] for s in slow_host] == ["attribution:host.name=host-7"]
    assert slow_host[0].attributes["crackle.pattern.stat.cluster.size"] > 0
    roles = {link.attributes["crackle.role"] for link in slow_host[0].links}
    assert {"attributed", "rest"} <= roles

    # Every link points at a span the workload produced, and says what role it played.
    for span in pattern_spans:
        assert span.scope_name == "crackle_otel"
        assert span.resource.get("service.name") == SERVICE
        for link in span.links:
            assert (link.trace_id, link.span_id) in identities
            assert link.attributes["crackle.role"]
    # Each event is correlated with its pattern span and carries the description.
    by_identity = {s.identity: s for s in pattern_spans}
    for event in events:
        span = by_identity[(event.trace_id, event.span_id)]
        assert event.attributes["crackle.pattern.kind"] == span.attributes["crackle.pattern.kind"]
        assert event.body == span.attributes["crackle.pattern.description"]
    provider.shutdown()


def test_configure_sends_patterns_where_the_standard_otel_variables_say(sink, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.http_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("CRACKLE_PROFILE", "fast")
    monkeypatch.setenv("CRACKLE_COOL_INTERVAL_MILLIS", "3600000")
    monkeypatch.setenv("CRACKLE_MAX_QUEUE_SIZE", "4096")  # the whole workload: see the test above
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    processor = configure(provider)
    assert isinstance(processor.emitter, PatternEmitter)

    identities = run_workload(provider.get_tracer("shop.app"))
    assert processor.force_flush(timeout_millis=30_000)
    reported = processor.stats()["patterns_reported"]
    pattern_spans = sink.wait_for_spans(lambda s: s.name.startswith("crackle.pattern "), count=reported, timeout=15)
    assert {s.attributes["crackle.pattern.group"] for s in pattern_spans} >= {group for _, group, _ in EXPECTED}
    assert all((link.trace_id, link.span_id) in identities for s in pattern_spans for link in s.links)
    assert all(s.resource.get("service.name") == SERVICE for s in pattern_spans)
    provider.shutdown()
