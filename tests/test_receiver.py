"""OTLPReceiver over real protocols on loopback: SDK exporters in, a collecting consumer out."""

from __future__ import annotations

import gzip
import http.client
import json
import shutil
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, StatusCode
from otlp_sink import OTLPSink

from crackle_otel.gateway import OTLPReceiver
from crackle_otel.gateway.otlp_json import message_to_otlp_dict, parse_otlp_json

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# Truncated length-delimited field: not decodable as any protobuf message.
MALFORMED_PROTOBUF = b"\x0a\xff\xff\xff\xff\x0f\x01"


# -- helpers -------------------------------------------------------------------
def trace_request(*names: str, attribute_bytes: int = 0) -> ExportTraceServiceRequest:
    spans = [
        Span(
            trace_id=bytes([index + 1]) * 16,
            span_id=bytes([index + 1]) * 8,
            name=name,
            start_time_unix_nano=1_000_000_000,
            end_time_unix_nano=1_005_000_000,
            attributes=[KeyValue(key="blob", value=AnyValue(string_value="x" * attribute_bytes))] if attribute_bytes else [],
        )
        for index, name in enumerate(names)
    ]
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])


def post(port: int, path: str, body: bytes, content_type: str = "application/x-protobuf",
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": content_type, **(headers or {})})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def raw_trace_export(channel: grpc.Channel, payload: bytes):
    """Raw bytes over TraceService/Export, so the test sees the server's exact answer."""
    return channel.unary_unary(TRACE_EXPORT)(payload, timeout=5)


def rpc_status_from_trailers(error: grpc.RpcError) -> status_pb2.Status:
    details = dict(error.trailing_metadata())["grpc-status-details-bin"]
    return status_pb2.Status.FromString(details)


def retry_delay_s(status: status_pb2.Status) -> float:
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    raise AssertionError(f"no RetryInfo in {status}")


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def sink():
    with OTLPSink() as running:
        yield running


# -- real SDK exporters --------------------------------------------------------
def _span_exporter(sink: OTLPSink, transport: str):
    if transport == "grpc":
        return GrpcSpanExporter(endpoint=sink.grpc_endpoint, insecure=True, timeout=5)
    if transport == "grpc-gzip":
        return GrpcSpanExporter(endpoint=sink.grpc_endpoint, insecure=True, timeout=5, compression=grpc.Compression.Gzip)
    if transport == "http":
        return HttpSpanExporter(endpoint=sink.traces_url, timeout=5)
    return HttpSpanExporter(endpoint=sink.traces_url, timeout=5, compression=HttpCompression.Gzip)


@pytest.mark.parametrize("transport", ["grpc", "grpc-gzip", "http", "http-gzip"])
def test_sdk_span_exporter_delivers_spans_with_links_and_attributes(sink, transport):
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(BatchSpanProcessor(_span_exporter(sink, transport)))
    tracer = provider.get_tracer("test.receiver")
    with tracer.start_as_current_span("load") as first:
        pass
    with tracer.start_as_current_span("load") as second:
        pass
    targets = [first.get_span_context(), second.get_span_context()]
    with tracer.start_as_current_span(
        "finding",
        links=[Link(targets[0], {"crackle.role": "member"}), Link(targets[1], {"crackle.role": "outlier"})],
        attributes={"records_in": 12, "ratio": 0.5, "cached": True, "hosts": ["a", "b"]},
    ) as finding:
        finding.set_status(StatusCode.ERROR, "bad")
    assert provider.force_flush(5_000)
    provider.shutdown()

    [received] = sink.wait_for_spans(lambda span: span.name == "finding")
    context = finding.get_span_context()
    assert received.identity == (context.trace_id, context.span_id)
    assert received.service_name == "checkout"
    assert received.scope_name == "test.receiver"
    assert received.attributes == {"records_in": 12, "ratio": 0.5, "cached": True, "hosts": ("a", "b")}
    assert received.status_code == 2 and received.status_message == "bad"
    assert [(link.trace_id, link.span_id) for link in received.links] == [(t.trace_id, t.span_id) for t in targets]
    assert [link.attributes["crackle.role"] for link in received.links] == ["member", "outlier"]
    # every link points at a span the sink really received
    assert {(link.trace_id, link.span_id) for link in received.links} <= sink.span_identities()
    stats = sink.receiver.stats()
    assert stats["spans_received"] == 3 and stats["requests_accepted"] >= 1


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_log_exporter_delivers_event_name(sink, transport):
    exporter = (GrpcLogExporter(endpoint=sink.grpc_endpoint, insecure=True, timeout=5) if transport == "grpc"
                else HttpLogExporter(endpoint=sink.logs_url, timeout=5))
    provider = LoggerProvider(resource=Resource.create({"service.name": "crackle"}))
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    emitted_at = time.time_ns()
    provider.get_logger("crackle_otel").emit(
        event_name="crackle.pattern",
        timestamp=emitted_at,
        body="latency_ms shifted up 3x at task 500",
        attributes={"crackle.pattern.kind": "phase_transition", "crackle.pattern.confidence": 0.93},
    )
    assert provider.force_flush(5_000)
    provider.shutdown()

    [record] = sink.wait_for_log_records(lambda r: r.event_name == "crackle.pattern")
    assert record.body == "latency_ms shifted up 3x at task 500"
    assert record.attributes == {"crackle.pattern.kind": "phase_transition", "crackle.pattern.confidence": 0.93}
    assert record.time_unix_nano == emitted_at
    assert record.scope_name == "crackle_otel" and record.resource["service.name"] == "crackle"
    assert sink.receiver.stats()["log_records_received"] == 1


def test_sdk_metric_exporter_delivers_points(sink):
    reader = PeriodicExportingMetricReader(
        GrpcMetricExporter(endpoint=sink.grpc_endpoint, insecure=True, timeout=5), export_interval_millis=60_000
    )
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": "metered"}))
    meter = provider.get_meter("test.receiver")
    meter.create_counter("requests").add(5, {"route": "/a"})
    meter.create_histogram("latency_ms").record(12.5)
    assert provider.force_flush(5_000)

    [counter] = sink.wait_for_metric_points(lambda p: p.name == "requests")
    assert (counter.kind, counter.value, counter.attributes) == ("sum", 5.0, {"route": "/a"})
    [histogram] = sink.wait_for_metric_points(lambda p: p.name == "latency_ms")
    assert (histogram.kind, histogram.count, histogram.sum) == ("histogram", 1, 12.5)
    provider.shutdown()
    assert sink.receiver.stats()["metric_points_received"] >= 2


# -- OTLP/JSON -------------------------------------------------------------------
TRACE_ID_HEX = "5b8efff798038103d269b633813fc60c"
SPAN_ID_HEX = "eee19b7ec3c1b174"
PARENT_ID_HEX = "eee19b7ec3c1b173"
LINKED_SPAN_HEX = "0102030405060708"

JSON_TRACES = {
    "resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
        "scopeSpans": [{
            "scope": {"name": "json.scope"},
            "spans": [{
                "traceId": TRACE_ID_HEX,
                "spanId": SPAN_ID_HEX,
                "parentSpanId": PARENT_ID_HEX,
                "name": "GET /items",
                "kind": 2,
                "startTimeUnixNano": "1544712660000000000",
                "endTimeUnixNano": 1544712661000000000,
                "attributes": [{"key": "http.status", "value": {"intValue": "200"}}],
                "links": [{"traceId": TRACE_ID_HEX, "spanId": LINKED_SPAN_HEX}],
                "status": {"code": 2},
                "someFutureField": {"ignored": True},
            }],
        }],
    }]
}


def test_otlp_json_post_decodes_hex_ids(sink):
    status, headers, body = post(sink.receiver.http_port, "/v1/traces", json.dumps(JSON_TRACES).encode(),
                                 "application/json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {}  # full success: no partialSuccess

    [span] = sink.wait_for_spans()
    assert span.trace_id == int(TRACE_ID_HEX, 16) and span.span_id == int(SPAN_ID_HEX, 16)
    assert span.parent_span_id == int(PARENT_ID_HEX, 16)
    assert span.links[0].span_id == int(LINKED_SPAN_HEX, 16)
    assert (span.kind, span.status_code, span.attributes) == (2, 2, {"http.status": 200})
    assert span.duration_ms == 1000.0

    # encoding back gives the same hex ids
    request = parse_otlp_json(json.dumps(JSON_TRACES), ExportTraceServiceRequest)
    encoded = message_to_otlp_dict(request)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert (encoded["traceId"], encoded["spanId"], encoded["parentSpanId"]) == (TRACE_ID_HEX, SPAN_ID_HEX, PARENT_ID_HEX)
    assert encoded["kind"] == 2


def test_otlp_json_logs_carry_event_name(sink):
    document = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{
        "timeUnixNano": "1700000000000000000", "eventName": "crackle.pattern",
        "body": {"stringValue": "hello"}, "traceId": TRACE_ID_HEX, "spanId": SPAN_ID_HEX,
        "severityNumber": 9,
    }]}]}]}
    status, _, _ = post(sink.receiver.http_port, "/v1/logs", json.dumps(document).encode(), "application/json; charset=utf-8")
    assert status == 200
    [record] = sink.wait_for_log_records()
    assert (record.event_name, record.body, record.severity_number) == ("crackle.pattern", "hello", 9)
    assert (record.trace_id, record.span_id) == (int(TRACE_ID_HEX, 16), int(SPAN_ID_HEX, 16))


# -- bad input -----------------------------------------------------------------
def test_malformed_payloads_are_refused_and_the_server_keeps_serving(sink):
    port = sink.receiver.http_port
    status, _, body = post(port, "/v1/traces", MALFORMED_PROTOBUF)
    assert status == 400
    assert status_pb2.Status.FromString(body).code == code_pb2.INVALID_ARGUMENT

    status, headers, body = post(port, "/v1/traces", b"{not json", "application/json")
    assert status == 400 and json.loads(body)["code"] == code_pb2.INVALID_ARGUMENT

    status, _, _ = post(port, "/v1/traces", b"not gzip at all", headers={"Content-Encoding": "gzip"})
    assert status == 400

    with grpc.insecure_channel(sink.grpc_endpoint) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            raw_trace_export(channel, MALFORMED_PROTOBUF)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert rpc_status_from_trailers(refused.value).code == code_pb2.INVALID_ARGUMENT
        # still serving, on both transports
        response = TraceServiceStub(channel).Export(trace_request("after-grpc"), timeout=5)
        assert not response.HasField("partial_success")
    status, _, body = post(port, "/v1/traces", trace_request("after-http").SerializeToString())
    assert status == 200 and ExportTraceServiceResponse.FromString(body) == ExportTraceServiceResponse()

    assert {s.name for s in sink.wait_for_spans(count=2)} == {"after-grpc", "after-http"}
    stats = sink.receiver.stats()
    assert stats["rejected_malformed"] == 4 and stats["requests_accepted"] == 2


def test_wrong_path_content_type_or_encoding(sink):
    port = sink.receiver.http_port
    assert post(port, "/v1/spans", b"x" * 5000)[0] == 404
    assert post(port, "/health", b"")[0] == 405
    with urllib.request.urlopen(f"{sink.http_endpoint}/health", timeout=5):
        pass
    with pytest.raises(urllib.error.HTTPError) as wrong_method:
        urllib.request.urlopen(sink.traces_url, timeout=5)
    assert wrong_method.value.code == 405
    assert post(port, "/v1/traces", b"", "text/plain")[0] == 415
    assert post(port, "/v1/traces", b"", headers={"Content-Encoding": "br"})[0] == 415
    assert post(port, "/v1/traces", b"")[0] == 200  # an empty protobuf is a valid empty request


def test_oversized_payloads_get_413_and_resource_exhausted():
    limit = 32 * 1024
    with OTLPSink(max_message_bytes=limit) as sink:
        big = trace_request("big", attribute_bytes=200 * 1024).SerializeToString()
        port = sink.receiver.http_port
        status, headers, body = post(port, "/v1/traces", big)
        assert status == 413 and status_pb2.Status.FromString(body).code == code_pb2.RESOURCE_EXHAUSTED
        # compresses to ~1 KiB but expands past the limit: refused without inflating it all
        status, _, _ = post(port, "/v1/traces", gzip.compress(big), headers={"Content-Encoding": "gzip"})
        assert status == 413
        # announced with Expect: 100-continue, refused before the body is sent
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.putrequest("POST", "/v1/traces")
        for header, value in (("Content-Type", "application/x-protobuf"), ("Content-Length", str(len(big))),
                              ("Expect", "100-continue")):
            connection.putheader(header, value)
        connection.endheaders()
        assert connection.getresponse().status == 413
        connection.close()
        with grpc.insecure_channel(sink.grpc_endpoint) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                raw_trace_export(channel, big)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            TraceServiceStub(channel).Export(trace_request("small-grpc"), timeout=5)
        assert post(port, "/v1/traces", trace_request("small-http").SerializeToString())[0] == 200
        assert len(sink.wait_for_spans(count=2)) == 2
        wait_until(lambda: sink.receiver.stats()["rejected_oversized"] == 4)


# -- back-pressure -------------------------------------------------------------------
def test_full_queue_asks_senders_to_retry_and_loses_nothing():
    with OTLPSink(max_queue_size=2, partial_success_wait_s=0, retry_after_s=2) as sink:
        sink.pause()
        port = sink.receiver.http_port
        outcomes: dict[str, bool] = {}  # span name -> accepted

        status, _, _ = post(port, "/v1/traces", trace_request("http-0").SerializeToString())
        outcomes["http-0"] = status == 200
        wait_until(lambda: sink.receiver.stats()["queue_depth"] == 0)  # the consumer holds http-0

        for name in ("http-1", "http-2", "http-3"):
            status, headers, body = post(port, "/v1/traces", trace_request(name).SerializeToString())
            outcomes[name] = status == 200
            if status != 200:
                assert status == 429 and headers["Retry-After"] == "2"
                refusal = status_pb2.Status.FromString(body)
                assert refusal.code == code_pb2.RESOURCE_EXHAUSTED and retry_delay_s(refusal) == 2.0
        with grpc.insecure_channel(sink.grpc_endpoint) as channel:
            for name in ("grpc-0", "grpc-1"):
                try:
                    raw_trace_export(channel, trace_request(name).SerializeToString())
                    outcomes[name] = True
                except grpc.RpcError as error:
                    outcomes[name] = False
                    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert retry_delay_s(rpc_status_from_trailers(error)) == 2.0
                    # the trailer the OTLP Python exporter reads its backoff from
                    info = error_details_pb2.RetryInfo.FromString(dict(error.trailing_metadata())["google.rpc.retryinfo-bin"])
                    assert info.retry_delay.seconds == 2

        accepted = {name for name, ok in outcomes.items() if ok}
        assert accepted == {"http-0", "http-1", "http-2"}  # one in the consumer + a queue of two
        stats = sink.receiver.stats()
        assert stats["requests_accepted"] + stats["rejected_full"] == len(outcomes) == stats["requests"]
        assert stats["rejected_full_items"] == 3

        sink.resume()
        assert {span.name for span in sink.wait_for_spans(count=3)} == accepted
        wait_until(lambda: sink.receiver.stats()["requests_consumed"] == 3)
        assert len(sink.spans()) == 3


# -- consumer verdicts -----------------------------------------------------------------
class PickyConsumer:
    """Rejects one span per request, crashes on logs, has no metrics method."""

    def consume_traces(self, request):
        return 1, "one span had no name"

    def consume_logs(self, request):
        raise RuntimeError("boom")


def test_consumer_rejections_become_partial_success():
    receiver = OTLPReceiver(PickyConsumer(), grpc_endpoint="127.0.0.1:0", http_endpoint="127.0.0.1:0",
                            partial_success_wait_s=5.0)
    with receiver:
        with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
            response = TraceServiceStub(channel).Export(trace_request("a", "b"), timeout=5)
        assert response.partial_success.rejected_spans == 1
        assert response.partial_success.error_message == "one span had no name"

        status, _, body = post(receiver.http_port, "/v1/traces",
                               json.dumps(message_to_otlp_dict(trace_request("c", "d"))).encode(), "application/json")
        assert status == 200
        assert json.loads(body) == {"partialSuccess": {"rejectedSpans": "1", "errorMessage": "one span had no name"}}

        logs = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[LogRecord()] * 3)])])
        status, _, body = post(receiver.http_port, "/v1/logs", logs.SerializeToString())
        partial = ExportLogsServiceResponse.FromString(body).partial_success
        assert status == 200 and partial.rejected_log_records == 3 and "RuntimeError" in partial.error_message

        gauge = Metric(name="g", gauge=Gauge(data_points=[NumberDataPoint(as_double=1.0)] * 4))
        metrics = ExportMetricsServiceRequest(resource_metrics=[ResourceMetrics(scope_metrics=[ScopeMetrics(metrics=[gauge])])])
        status, _, body = post(receiver.http_port, "/v1/metrics", metrics.SerializeToString())
        assert status == 200 and body == b""  # no consume_metrics: accepted and ignored

        stats = receiver.stats()
        assert stats["consumer_rejected_items"] == 1 + 1 + 3 and stats["consumer_errors"] == 1
        assert stats["metric_points_received"] == 4 and stats["log_records_received"] == 3


# -- health, lifecycle -----------------------------------------------------------------
def test_health_endpoint_reports_status_and_counters(sink):
    post(sink.receiver.http_port, "/v1/traces", trace_request("a").SerializeToString())
    with urllib.request.urlopen(f"{sink.http_endpoint}/health", timeout=5) as response:
        assert response.status == 200
        health = json.loads(response.read())
    assert health["status"] == "ok"
    assert health["stats"]["requests"] == 1 and health["stats"]["spans_received"] == 1
    assert {"rejected_full", "rejected_malformed", "rejected_oversized", "queue_depth"} <= set(health["stats"])


def test_stop_drains_the_queue_and_is_idempotent():
    sink = OTLPSink(partial_success_wait_s=0).start()
    grpc_port, http_port = sink.receiver.grpc_port, sink.receiver.http_port
    sink.pause()
    for name in ("a", "b", "c"):
        assert post(http_port, "/v1/traces", trace_request(name).SerializeToString())[0] == 200
    threading.Timer(0.3, sink.resume).start()

    results: list[bool] = []
    stoppers = [threading.Thread(target=lambda: results.append(sink.receiver.stop(grace_s=5))) for _ in range(2)]
    for stopper in stoppers:
        stopper.start()
    for stopper in stoppers:
        stopper.join(10)
    assert results == [True, True]
    assert sorted(span.name for span in sink.spans()) == ["a", "b", "c"]
    assert sink.receiver.stop() is True  # again: a no-op
    assert not sink.receiver.serving
    with pytest.raises(OSError):
        post(http_port, "/v1/traces", b"")
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel, pytest.raises(grpc.RpcError):
        TraceServiceStub(channel).Export(trace_request("late"), timeout=0.5)


def test_stop_with_a_stuck_consumer_returns_within_grace():
    sink = OTLPSink(grpc_endpoint=None, partial_success_wait_s=0).start()
    sink.pause()
    assert post(sink.receiver.http_port, "/v1/traces", trace_request("stuck").SerializeToString())[0] == 200
    started = time.monotonic()
    assert sink.receiver.stop(grace_s=0.3) is False
    assert time.monotonic() - started < 2.0
    sink.resume()  # let the daemon worker finish


def test_busy_port_fails_start_cleanly(sink):
    taken = f"127.0.0.1:{sink.receiver.http_port}"
    with pytest.raises(OSError):
        OTLPReceiver(object(), grpc_endpoint="127.0.0.1:0", http_endpoint=taken).start()
    with pytest.raises(OSError):
        OTLPReceiver(object(), grpc_endpoint=f"127.0.0.1:{sink.receiver.grpc_port}", http_endpoint=None).start()
    with pytest.raises(ValueError):
        OTLPReceiver(object(), grpc_endpoint=None, http_endpoint=None)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI to make a test certificate")
def test_tls_on_both_transports(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=20,
    )
    with OTLPSink(tls_cert_file=str(cert), tls_key_file=str(key)) as sink:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(sink.grpc_endpoint, credentials) as channel:
            TraceServiceStub(channel).Export(trace_request("over-tls-grpc"), timeout=5)
        context = ssl.create_default_context(cafile=str(cert))
        connection = http.client.HTTPSConnection("127.0.0.1", sink.receiver.http_port, context=context, timeout=5)
        connection.request("POST", "/v1/traces", body=trace_request("over-tls-http").SerializeToString(),
                           headers={"Content-Type": "application/x-protobuf"})
        assert connection.getresponse().status == 200
        connection.close()
        assert {s.name for s in sink.wait_for_spans(count=2)} == {"over-tls-grpc", "over-tls-http"}
