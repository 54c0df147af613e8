"""OTLP/JSON read without protobuf gives what the protobuf path gives.

The reference is always the protobuf route: the same document through
``parse_otlp_json`` (google.protobuf.json_format) and ``from_proto_span``.
The direct route is ``decode_json_traces`` (``view_of_json_span``) and ``extract``.
"""

from __future__ import annotations

import base64
import copy
import json
import math

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from crackle_otel.gateway.feed import RequestFeeder
from crackle_otel.gateway.otlp_files import OTLPFile, ProblemLog
from crackle_otel.gateway.otlp_json import (
    JSONTraces,
    OTLPJSONError,
    decode_json_traces,
    message_to_otlp_dict,
    message_to_otlp_json,
    parse_otlp_json,
)
from crackle_otel.otel.config import CrackleConfig
from crackle_otel.otel.emit import INSTRUMENTATION_SCOPE
from crackle_otel.otel.extract import (
    ExtractedSpan,
    ExtractionRules,
    attributes_of,
    extract,
    from_proto_span,
    view_of_json_span,
    view_of_proto_span,
)
from crackle_otel.otel.furnace import Furnace

START_NS = 1_790_000_000_000_000_000
RULES = (
    ExtractionRules(),
    # group by values of every kind (tuples, dicts, bytes, floats): their str() must match too
    ExtractionRules(group_by=["span.name", "service.name", "tags", "nested", "blob", "ratio", "host.name"]),
    ExtractionRules(allow=["records_*", "ratio"], deny=["*.id"]),
)


def any_value(value) -> common_pb2.AnyValue:
    if value is None:
        return common_pb2.AnyValue()
    if isinstance(value, bool):
        return common_pb2.AnyValue(bool_value=value)
    if isinstance(value, int):
        return common_pb2.AnyValue(int_value=value)
    if isinstance(value, float):
        return common_pb2.AnyValue(double_value=value)
    if isinstance(value, str):
        return common_pb2.AnyValue(string_value=value)
    if isinstance(value, bytes):
        return common_pb2.AnyValue(bytes_value=value)
    if isinstance(value, tuple):
        return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[any_value(v) for v in value]))
    return common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=key_values(value)))


def key_values(attributes: dict) -> list[common_pb2.KeyValue]:
    return [common_pb2.KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()]


def request() -> ExportTraceServiceRequest:
    """Spans with attributes of every AnyValue kind, events, links, dropped counts and every status."""
    message = ExportTraceServiceRequest()
    for service, host in (("checkout", "web-7"), ("grüße", None)):
        resource_spans = message.resource_spans.add()
        resource = {"service.name": service, "host.cores": 8, **({"host.name": host} if host else {})}
        resource_spans.resource.attributes.extend(key_values(resource))
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = "shop.cart"
        first = scope_spans.spans.add(
            trace_id=(2**128 - 3).to_bytes(16, "big"), span_id=(7).to_bytes(8, "big"), name="GET /cart",
            start_time_unix_nano=START_NS, end_time_unix_nano=START_NS + 12_500_000,
            dropped_events_count=2, dropped_links_count=1,
        )
        first.attributes.extend(key_values({
            "records_in": 120, "records_out": -(2**63), "big": 2**63 - 1, "cache.hit": True, "cold": False,
            "ratio": 0.25, "tiny": 1e-300, "negative_zero": -0.0, "nan_metric": math.nan, "inf_metric": math.inf,
            "http.route": "/cart", "note": "größe ✓", "long": "x" * 300, "tags": (1, "a", 2.5, True, None, (3,)),
            "nested": {"k": "v", "inner": {"n": 1}, "list": (1, 2)}, "blob": b"\x00\xffbytes", "empty": None,
            "": "empty key", "user.id": 42,
        }))
        for i in range(3):
            first.events.add(name=f"retry {i}", time_unix_nano=START_NS + i)
        first.links.add(trace_id=(5).to_bytes(16, "big"), span_id=(6).to_bytes(8, "big"))
        first.links.add(trace_id=(8).to_bytes(16, "big"), span_id=(9).to_bytes(8, "big"))
        first.status.code = trace_pb2.Status.STATUS_CODE_ERROR
        first.status.message = "boom"
        ok = scope_spans.spans.add(trace_id=(11).to_bytes(16, "big"), span_id=(12).to_bytes(8, "big"),
                                   name="GET /cart", start_time_unix_nano=START_NS + 10**9)  # no end time
        ok.status.code = trace_pb2.Status.STATUS_CODE_OK
        scope_spans.spans.add(name="idle", start_time_unix_nano=2**64 - 2, end_time_unix_nano=2**64 - 1)
    return message


def same(a, b) -> bool:
    """Equal, NaN included, and of the same type all the way down (1 is not 1.0 is not True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if hasattr(a, "__dataclass_fields__"):
        return all(same(getattr(a, name), getattr(b, name)) for name in a.__dataclass_fields__)
    return a == b


def proto_route(message: ExportTraceServiceRequest, rules: ExtractionRules):
    views, extracted = [], []
    for resource_spans in message.resource_spans:
        resource = attributes_of(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                views.append(view_of_proto_span(span, resource, scope_spans.scope.name))
                extracted.append(from_proto_span(span, resource, scope_spans.scope.name, rules))
    return views, extracted


def json_route(document, rules: ExtractionRules):
    traces = decode_json_traces(document)
    views = [view for _, scope_views in traces.scopes for view in scope_views]
    return views, [extract(view, rules) for view in views]


def extracting_route(document, rules: ExtractionRules):
    """What ``analyze`` reads: spans extracted as they are decoded (``extract_json_span``)."""
    traces = decode_json_traces(document, rules)
    assert traces.extracted
    return [span for _, scope_spans in traces.scopes for span in scope_spans]


def assert_same_extraction(document) -> None:
    reference = parse_otlp_json(json.dumps(document), ExportTraceServiceRequest)
    for rules in RULES:
        proto_views, from_proto = proto_route(reference, rules)
        json_views, from_json = json_route(document, rules)
        assert len(from_json) == len(from_proto) > 0
        for a, b in zip(json_views, proto_views):
            assert same(a, b), (a, b)
        for a, b in zip(from_json, from_proto):
            assert same(a, b), (a, b)
        extracted = extracting_route(document, rules)
        assert len(extracted) == len(from_proto)
        for a, b in zip(extracted, from_proto):
            assert type(a) is ExtractedSpan and same(a, b), (a, b)


def hex_ids(document):
    """The ids of a json_format document (base64) as OTLP/JSON writes them (hex)."""
    for resource_spans in document["resource_spans"]:
        for scope_spans in resource_spans["scope_spans"]:
            for span in scope_spans["spans"]:
                for name in ("trace_id", "span_id"):
                    if name in span:
                        span[name] = base64.b64decode(span[name]).hex()
    return document


def test_json_and_proto_adapters_extract_identically():
    message = request()
    document = message_to_otlp_dict(message)  # what the collector's file exporter writes
    assert_same_extraction(document)
    _, extracted = json_route(document, ExtractionRules())
    first = extracted[0]
    assert first.metrics["event_count"] == 5 and first.metrics["link_count"] == 3 and first.metrics["is_error"] == 1.0
    assert first.metrics["big"] == 2**63 - 1 and first.metrics["cache.hit"] is True and "user.id" not in first.metrics
    assert first.attributes["host.name"] == "web-7" and len(first.attributes["long"]) == 128
    assert first.identity == (2**128 - 3, 7) and first.group == "checkout | GET /cart"
    assert extracted[1].metrics["is_error"] == 0.0 and extracted[1].metrics["duration_ms"] == 0.0
    # every kind of AnyValue, as the proto adapter gives it
    view = view_of_json_span(document["resourceSpans"][0]["scopeSpans"][0]["spans"][0], {}, "s")
    assert view.attributes["tags"] == (1, "a", 2.5, True, None, (3,))
    assert view.attributes["nested"] == {"k": "v", "inner": {"n": 1}, "list": (1, 2)}
    assert view.attributes["blob"] == b"\x00\xffbytes" and view.attributes["empty"] is None


def test_original_field_names_enum_names_and_base64_ids_are_read_too():
    message = request()
    snake = json_format.MessageToDict(message, preserving_proto_field_name=True)  # enums by name, base64 ids
    assert snake["resource_spans"][0]["scope_spans"][0]["spans"][0]["status"]["code"] == "STATUS_CODE_ERROR"
    assert_same_extraction(snake)  # base64 ids (what plain proto3 JSON would hold)
    assert_same_extraction(hex_ids(copy.deepcopy(snake)))


def test_numbers_as_json_numbers_nulls_and_unknown_fields_are_read_as_json_format_reads_them():
    document = message_to_otlp_dict(request())
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["startTimeUnixNano"] = int(span["startTimeUnixNano"])  # numbers, not strings
    span["droppedEventsCount"] = "2"
    span["someFutureField"] = {"ignored": [1, 2]}
    span["links"] = None  # null: not set
    attributes = span["attributes"]
    attributes.append({"key": "as_number", "value": {"intValue": 17}})
    attributes.append({"key": "exponent", "value": {"intValue": "1e3"}})
    attributes.append({"key": "quoted", "value": {"doubleValue": "2.5"}})
    attributes.append({"key": "infinite", "value": {"doubleValue": "-Infinity"}})
    attributes.append({"key": "whole", "value": {"doubleValue": 3}})
    attributes.append({"key": "unset", "value": {"intValue": None, "stringValue": "kept"}})
    attributes.append({"key": "future", "value": {"someNewKind": 1}})
    attributes.append({"key": "strindex", "value": {"stringValueStrindex": 3}})
    other = document["resourceSpans"][0]["scopeSpans"][0]["spans"][1]
    other["status"] = {"code": "STATUS_CODE_NOT_YET_INVENTED"}  # unknown names are ignored: unset
    document["resourceSpans"][1]["scopeSpans"][0]["spans"][0]["status"] = {"code": "2"}
    assert_same_extraction(document)


MALFORMED = {
    "int64 out of range": ("attributes", [{"key": "n", "value": {"intValue": str(2**63)}}]),
    "fractional integer": ("attributes", [{"key": "n", "value": {"intValue": "12.5"}}]),
    "boolean integer": ("attributes", [{"key": "n", "value": {"intValue": True}}]),
    "number as string value": ("attributes", [{"key": "n", "value": {"stringValue": 5}}]),
    "string as bool value": ("attributes", [{"key": "n", "value": {"boolValue": "true"}}]),
    "lowercase nan": ("attributes", [{"key": "n", "value": {"doubleValue": "nan"}}]),
    "two values": ("attributes", [{"key": "n", "value": {"stringValue": "a", "intValue": "1"}}]),
    "array of an object": ("attributes", [{"key": "n", "value": {"arrayValue": {"values": {}}}}]),
    "attributes as an object": ("attributes", {"n": 1}),
    "null attribute": ("attributes", [None]),
    "negative start": ("startTimeUnixNano", "-1"),
    "start beyond uint64": ("startTimeUnixNano", str(2**64)),
    "spaced start": ("startTimeUnixNano", " 5"),
    "numeric name": ("name", 5),
    "numeric trace id": ("traceId", 5),
    "negative dropped count": ("droppedEventsCount", -1),
    "events as an object": ("events", {}),
    "status as a number": ("status", 5),
    "status code beyond int32": ("status", {"code": 2**31}),
}


@pytest.mark.parametrize("field, value", MALFORMED.values(), ids=MALFORMED.keys())
def test_what_json_format_rejects_is_rejected(field, value):
    document = message_to_otlp_dict(request())
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][0][field] = value
    text = json.dumps(document)
    with pytest.raises(OTLPJSONError):
        parse_otlp_json(text, ExportTraceServiceRequest)
    with pytest.raises(OTLPJSONError) as as_views:
        decode_json_traces(text)
    with pytest.raises(OTLPJSONError) as extracting:  # the same checks, in the same order
        decode_json_traces(text, ExtractionRules())
    assert str(extracting.value) == str(as_views.value)


@pytest.mark.parametrize("text", [
    '{"resourceSpans": [null]}',
    '{"resourceSpans": {}}',
    '{"resourceSpans": [{"scopeSpans": [{"spans": [null]}]}]}',
    '{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "\\ud800"}]}]}]}',  # a lone surrogate
    '{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": "x", "value": {"doubleValue": NaN}}]}]}]}]}',
    '[1, 2, 3]',
    '{"resourceSpans": [ this is not json',
])
def test_malformed_documents_are_rejected_by_both_routes(text):
    with pytest.raises(OTLPJSONError):
        parse_otlp_json(text, ExportTraceServiceRequest)
    with pytest.raises(OTLPJSONError) as as_views:
        decode_json_traces(text)
    with pytest.raises(OTLPJSONError) as extracting:
        decode_json_traces(text, ExtractionRules())
    assert str(extracting.value) == str(as_views.value)


# ----------------------------------------------------------- file and feeder
def feeder() -> RequestFeeder:
    config = CrackleConfig.load({}, exporter="none", profile="fast")
    return RequestFeeder(Furnace(config, keep_reported=0), ExtractionRules())


def test_json_lines_read_as_span_views_feed_the_same_tasks_and_report_bad_lines(tmp_path):
    own = request()
    own.resource_spans[0].scope_spans[0].scope.name = INSTRUMENTATION_SCOPE  # never analysed, counted
    lines = [message_to_otlp_json(request()), message_to_otlp_json(own),
             '{"resourceSpans": [ this is not json',
             json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "-1"}]}]}]}),
             '{"resourceLogs": []}', "", message_to_otlp_json(request())]
    path = tmp_path / "spans.jsonl"
    path.write_text("\n".join(lines) + "\n")

    results = {}
    for route in ("records", "extracting", "requests"):
        problems = ProblemLog()
        source = OTLPFile(str(path), problems)
        target = feeder()
        if route == "extracting":  # what analyze reads: spans extracted as they are decoded
            records = list(source.records(target.rules))
            assert all(record.extracted for record in records)
        else:
            records = list(getattr(source, route)())
        for record in records:
            target.feed(record)
        if route != "requests":
            assert [type(r) for r in records] == [JSONTraces] * 3  # no protobuf on the way
        results[route] = (target, problems, source.counters, records)

    reference, problems, counters, _ = results.pop("requests")
    for direct, direct_problems, direct_counters, _ in results.values():
        assert direct.stats() == reference.stats()
        assert direct.stats()["spans_seen"] == 18 and direct.stats()["spans_skipped_own"] == 3
        assert direct_counters == counters and (counters.requests, counters.skipped_records) == (3, 1)
        assert direct_problems.count == problems.count == 2
        assert [p.split(": ")[0] for p in direct_problems.first] == [f"{path}:3", f"{path}:4"]
        for group in reference.furnace.group_names():
            a, b = direct.furnace.group_snapshot(group), reference.furnace.group_snapshot(group)
            assert (a.metric_names, a.labels, a.identities, a.attributes) == (b.metric_names, b.labels, b.identities,
                                                                              b.attributes)
            assert a.values.tobytes() == b.values.tobytes() and a.timestamps.tobytes() == b.timestamps.tobytes()


@pytest.mark.parametrize("kind", ["arrayValue", "kvlistValue"])
@pytest.mark.parametrize("where", ["span", "resource"])
def test_nesting_is_limited_where_json_format_limits_it(kind, where):
    verdicts = set()
    for depth in range(25, 52):
        value = {"intValue": "1"}
        for _ in range(depth):
            value = {kind: {"values": [value if kind == "arrayValue" else {"key": "k", "value": value}]}}
        attributes = [{"key": "deep", "value": value}]
        scope = {"spans": [{"name": "s", "attributes": attributes if where == "span" else []}]}
        resource = {"attributes": attributes if where == "resource" else []}
        text = json.dumps({"resourceSpans": [{"resource": resource, "scopeSpans": [scope]}]})
        try:
            parse_otlp_json(text, ExportTraceServiceRequest)
            expected = "accepted"
        except OTLPJSONError:
            expected = "rejected"
        try:
            decode_json_traces(text)
            verdict = "accepted"
        except OTLPJSONError:
            verdict = "rejected"
        assert verdict == expected, depth
        verdicts.add(verdict)
    assert verdicts == {"accepted", "rejected"}  # the limit lies within the depths tried


def test_a_span_whose_extraction_fails_while_decoding_is_extracted_again_by_the_feeder(monkeypatch):
    """Never seen (extraction by names does not fail on decoded JSON), but it must not lose the request."""
    import crackle_otel.gateway.otlp_json as otlp_json

    extract_json_span = otlp_json.extract_json_span

    def failing_on_idle(span, resource_attributes, rules):
        if span.get("name") == "idle":
            raise RuntimeError("a bug")
        return extract_json_span(span, resource_attributes, rules)

    text = message_to_otlp_json(request())
    expected = feeder()
    expected.feed(decode_json_traces(text))
    monkeypatch.setattr(otlp_json, "extract_json_span", failing_on_idle)
    target = feeder()
    traces = decode_json_traces(text, target.rules)
    assert [type(span).__name__ for _, spans in traces.scopes for span in spans].count("SpanView") == 2
    target.feed(traces)
    assert target.stats() == expected.stats() and target.stats()["spans_undecodable"] == 0
    assert target.furnace.stats()["tasks_recorded"] == expected.furnace.stats()["tasks_recorded"] == 6
