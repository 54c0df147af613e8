"""One extraction for SDK spans and OTLP proto spans: same label, group, time, identity, metrics."""

from __future__ import annotations

import math

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, Status, StatusCode

from crackle_otel.kiln import Kiln
from crackle_otel.otel.extract import (
    ExtractionRules,
    attributes_of,
    from_proto_span,
    from_readable_span,
    view_of_readable_span,
)

START_NS = 1_790_000_000_000_000_000


@pytest.fixture
def finished_spans():
    """Ended SDK spans from a real TracerProvider, with every kind of attribute value."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout", "host.cores": 8}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop.cart")
    first = tracer.start_span(
        "GET /cart",
        start_time=START_NS,
        attributes={
            "records_in": 120,
            "records_out": 118,
            "cache.hit": True,
            "ratio": 0.25,
            "http.route": "/cart",
            "sizes": (1, 2, 3),
            "db.rows": 40,
            "db.statement": "select 1",
        },
    )
    first.add_event("retry")
    first.add_event("retry")
    first.set_status(Status(StatusCode.ERROR, "boom"))
    first.end(end_time=START_NS + 12_500_000)
    second = tracer.start_span(
        "GET /cart",
        start_time=START_NS + 1_000_000_000,
        links=[Link(first.get_span_context())],
        attributes={"records_in": 5, "nan_metric": float("nan")},
    )
    second.end(end_time=START_NS + 1_003_000_000)
    spans = exporter.get_finished_spans()
    provider.shutdown()
    return spans


def proto_spans_of(spans):
    """The same spans as OTLP protos (encoded by the real OTLP exporter's encoder)."""
    request = encode_spans(spans)
    result = []
    for resource_spans in request.resource_spans:
        resource_attributes = attributes_of(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                result.append((span, resource_attributes, scope_spans.scope.name))
    return result


def test_sdk_and_proto_spans_extract_identically(finished_spans):
    rules = ExtractionRules()
    from_sdk = [from_readable_span(s, rules) for s in finished_spans]
    from_proto = [from_proto_span(p, r, scope, rules) for p, r, scope in proto_spans_of(finished_spans)]
    assert len(from_sdk) == len(from_proto) == 2
    for a, b in zip(from_sdk, from_proto):
        assert (a.label, a.group, a.timestamp_s, a.identity) == (b.label, b.group, b.timestamp_s, b.identity)
        assert a.metrics.keys() == b.metrics.keys()
        for name in a.metrics:
            x, y = float(a.metrics[name]), float(b.metrics[name])
            assert x == y or (math.isnan(x) and math.isnan(y)), name


def test_metrics_of_a_span(finished_spans):
    first, second = (from_readable_span(s, ExtractionRules()) for s in finished_spans)
    assert first.label == "GET /cart"
    assert first.group == "checkout | GET /cart"
    assert first.timestamp_s == pytest.approx((START_NS + 12_500_000) / 1e9)
    context = finished_spans[0].context
    assert first.identity == (context.trace_id, context.span_id)
    metrics = first.metrics
    assert metrics["duration_ms"] == pytest.approx(12.5)
    assert metrics["is_error"] == 1.0
    assert metrics["event_count"] == 2
    assert metrics["link_count"] == 0
    assert metrics["records_in"] == 120 and metrics["records_out"] == 118
    assert metrics["cache.hit"] is True  # the kiln turns booleans into 0/1
    assert metrics["ratio"] == 0.25
    # strings and arrays are not metrics; resource attributes neither
    for skipped in ("http.route", "sizes", "db.statement", "host.cores", "service.name"):
        assert skipped not in metrics
    assert second.metrics["is_error"] == 0.0
    assert second.metrics["link_count"] == 1
    assert math.isnan(second.metrics["nan_metric"])


def test_bad_values_are_left_to_the_kiln_which_skips_and_counts_them(finished_spans):
    kiln = Kiln(capacity=16, seal_on_cool=False)
    for span in finished_spans:
        extracted = from_readable_span(span, ExtractionRules())
        extracted.metrics["too_big"] = 10**400
        assert kiln.record(extracted.label, extracted.metrics, timestamp=extracted.timestamp_s, identity=extracted.identity)
    stats = kiln.stats()
    assert stats.recorded == 2
    assert stats.rejected_values == 3  # NaN once, 10**400 twice
    matrix = kiln.snapshot()
    assert "nan_metric" not in matrix.metric_names
    assert matrix.column("cache.hit")[0] == 1.0
    assert matrix.identities[0] == (finished_spans[0].context.trace_id, finished_spans[0].context.span_id)


def test_allow_and_deny_by_exact_name_and_prefix(finished_spans):
    span = finished_spans[0]
    only_records = from_readable_span(span, ExtractionRules(allow=["records_*"]))
    assert {"records_in", "records_out"} <= only_records.metrics.keys()
    assert "db.rows" not in only_records.metrics and "ratio" not in only_records.metrics
    # built-in metrics are always there
    assert {"duration_ms", "is_error", "event_count", "link_count"} <= only_records.metrics.keys()

    denied = from_readable_span(span, ExtractionRules(deny=["db.*", "ratio"]))
    assert "db.rows" not in denied.metrics and "ratio" not in denied.metrics
    assert "records_in" in denied.metrics

    deny_wins = from_readable_span(span, ExtractionRules(allow=["records_*"], deny=["records_out"]))
    assert "records_in" in deny_wins.metrics and "records_out" not in deny_wins.metrics

    nothing_extra = from_readable_span(span, ExtractionRules(deny=["*"]))
    assert set(nothing_extra.metrics) == {"duration_ms", "is_error", "event_count", "link_count"}


def test_an_attribute_cannot_overwrite_a_builtin_metric():
    provider = TracerProvider()
    span = provider.get_tracer("t").start_span("op", start_time=START_NS, attributes={"duration_ms": 999})
    span.end(end_time=START_NS + 2_000_000)
    assert from_readable_span(span, ExtractionRules()).metrics["duration_ms"] == pytest.approx(2.0)


def test_group_by_attributes_span_first_then_resource_and_missing_values(finished_spans):
    span = finished_spans[0]
    rules = ExtractionRules(group_by=["http.route", "service.name", "deployment.environment"])
    assert from_readable_span(span, rules).group == "/cart | checkout | unknown"
    by_name_only = ExtractionRules(group_by=["span.name"])
    assert from_readable_span(span, by_name_only).group == "GET /cart"


def test_group_by_callable_sees_the_span_view(finished_spans):
    rules = ExtractionRules(group_by=lambda view: ("errors" if view.is_error else "ok", view.scope_name))
    groups = [from_readable_span(s, rules).group for s in finished_spans]
    assert groups == ["errors | shop.cart", "ok | shop.cart"]
    assert view_of_readable_span(finished_spans[0]).resource_attributes["service.name"] == "checkout"


def test_descriptive_attributes_are_strings_and_instance_resource_attributes():
    provider = TracerProvider(
        resource=Resource.create({"service.name": "checkout", "host.name": "web-7", "telemetry.sdk.name": "x"})
    )
    span = provider.get_tracer("t").start_span(
        "op", attributes={"http.route": "/cart", "db.statement": "select " + "x" * 500, "retries": 2, "ok": True}
    )
    span.end()
    extracted = from_readable_span(span, ExtractionRules(deny=["peer.*"]))
    assert extracted.attributes["http.route"] == "/cart"
    assert extracted.attributes["host.name"] == "web-7"  # tells instances apart
    assert len(extracted.attributes["db.statement"]) == 128  # long values are cut
    assert "telemetry.sdk.name" not in extracted.attributes  # constant per process: not descriptive
    assert "service.name" not in extracted.attributes  # a group_by attribute: constant within the group
    assert "retries" not in extracted.attributes and "ok" not in extracted.attributes  # numbers are metrics

    denied = from_readable_span(span, ExtractionRules(deny=["db.*", "host.name"]))
    assert "db.statement" not in denied.attributes and "host.name" not in denied.attributes

    bare = TracerProvider(resource=Resource.get_empty()).get_tracer("t").start_span("op", attributes={"n": 1})
    bare.end()
    assert from_readable_span(bare, ExtractionRules()).attributes is None


def test_identifier_attributes_are_denied_by_default_and_suffix_patterns_work():
    from crackle_otel.otel.extract import ExtractionRules

    rules = ExtractionRules()
    for identifier in ("net.peer.port", "server.port", "process.pid", "user.id", "code.lineno", "thread.id"):
        assert not rules.allows(identifier), identifier
    for measure in ("db.time_ms", "http.response.status_code", "records_in", "cart.items"):
        assert rules.allows(measure), measure
    custom = ExtractionRules(deny=("*_bytes", "db.*"))
    assert not custom.allows("request_bytes") and not custom.allows("db.rows")
    assert custom.allows("net.peer.port")  # a given deny list replaces the default one


def test_failure_signals_of_a_span_are_recorded_as_bits_by_every_adapter():
    from crackle_otel.failures import Failure

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    cases = [
        ({}, None, False, 0),
        ({}, StatusCode.ERROR, False, Failure.ERROR_STATUS),
        ({"http.response.status_code": 503}, None, False, Failure.HTTP_5XX),
        ({"http.status_code": 404}, None, False, Failure.HTTP_4XX),  # the old attribute name
        ({"http.response.status_code": 200}, None, True, Failure.EXCEPTION),  # recorded, handled, status unset
        ({"rpc.grpc.status_code": 14}, StatusCode.ERROR, True, Failure.GRPC_ERROR | Failure.ERROR_STATUS | Failure.EXCEPTION),
        ({"rpc.grpc.status_code": 0, "http.response.status_code": "500"}, None, False, 0),  # a string code is no number
    ]
    for attributes, status, thrown, _ in cases:
        span = tracer.start_span("op", attributes=attributes)
        if thrown:
            span.record_exception(ValueError("boom"))
        span.add_event("log line")
        if status is not None:
            span.set_status(Status(status))
        span.end()
    spans = exporter.get_finished_spans()
    rules = ExtractionRules()
    from_sdk = [from_readable_span(s, rules).failures for s in spans]
    from_proto = [from_proto_span(p, r, scope, rules).failures for p, r, scope in proto_spans_of(spans)]
    assert from_sdk == from_proto == [int(bits) for *_, bits in cases]


def test_instance_attributes_are_kept_when_a_span_has_more_strings_than_the_cap():
    from crackle_otel.otel.extract import MAX_DESCRIPTIVE_ATTRIBUTES

    provider = TracerProvider(resource=Resource.create({"service.name": "checkout", "host.name": "web-7"}))
    span = provider.get_tracer("t").start_span("op", attributes={f"tag.{k}": "x" for k in range(40)})
    span.end()
    attributes = from_readable_span(span, ExtractionRules()).attributes
    assert attributes["host.name"] == "web-7"  # which instance it ran on is never pushed out
    assert len(attributes) == MAX_DESCRIPTIVE_ATTRIBUTES
