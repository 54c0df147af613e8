"""`crackle-otel serve` end to end, over real OTLP on loopback.

Real OTLPSpanExporters (gRPC and HTTP, as a collector would send) feed the
gateway a workload with three problems, each in its own span group: a latency
shift (GET /cart), one slow host among ten (GET /search) and records lost
between records_in and records_out (process batch). The gateway exports its
patterns to an in-process OTLP receiver (tests/otlp_sink.py): pattern spans
whose links all point at spans it received, and crackle.pattern events.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from crackle_otel.gateway.metric_points import MetricCollections
from crackle_otel.gateway.receiver import OTLPReceiver
from crackle_otel.gateway.service import GatewayService, GatewaySettings
from crackle_otel.otel.config import CrackleConfig, CrackleConfigError
from otlp_sink import OTLPSink
from workload import latency_shift, run_workload, send_with_sdk

REPO = Path(__file__).resolve().parent.parent
SERVICE = "shop"
TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS_EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
EXPECTED = [
    # (kind slug, group, metrics that must be among the pattern's)
    ("phase_transition", f"{SERVICE} | GET /cart", {"duration_ms"}),
    ("attribution", f"{SERVICE} | GET /search", {"duration_ms"}),  # host-7 is slow (its spans form a cluster)
    ("conservation_violation", f"{SERVICE} | process batch", {"records_in", "records_out"}),
]






# ------------------------------------------------------------------ fixtures
def quiet_config(**overrides) -> CrackleConfig:
    """Fast profile; cools only when asked (force_flush / stop), never on the interval during a test."""
    return CrackleConfig.load({}, **{"profile": "fast", "cool_interval_millis": 3_600_000, **overrides})


@contextmanager
def running_gateway(sink: OTLPSink, *, protocol="grpc", config=None, **settings):
    endpoint = sink.grpc_endpoint if protocol == "grpc" else sink.http_endpoint
    options = dict(grpc_endpoint="127.0.0.1:0", http_endpoint="127.0.0.1:0", export_endpoint=endpoint,
                   export_protocol=protocol, self_metrics_interval_s=0)
    options.update(settings)
    meter_provider = options.pop("meter_provider", None)
    gateway = GatewayService(GatewaySettings(**options), config or quiet_config(), meter_provider=meter_provider)
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop(timeout_s=10)


@pytest.fixture
def sink():
    with OTLPSink() as running:
        yield running


def pattern_spans_of(sink, count, timeout=15.0):
    return sink.wait_for_spans(lambda s: s.name.startswith("crackle.pattern "), count=count, timeout=timeout)


def assert_expected_patterns(pattern_spans, expected=EXPECTED):
    summary = sorted((s.name, s.attributes["crackle.pattern.group"]) for s in pattern_spans)
    for slug, group, metrics in expected:
        matching = [
            s for s in pattern_spans
            if s.name == f"crackle.pattern {slug}"
            and s.attributes["crackle.pattern.group"] == group
            and metrics <= set(s.attributes["crackle.pattern.metrics"])
        ]
        assert matching, f"no {slug} pattern in {group} on {metrics}; received {summary}"
        assert any(s.links for s in matching), f"{slug} pattern span has no links"


def wait_until(condition, timeout_s=10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def raw_call(port: int, method: str):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return channel, channel.unary_unary(method)


# ---------------------------------------------------------------- end to end
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_patterns_from_received_spans_reach_the_backend_linked_to_received_span_ids(sink, protocol):
    reader = InMemoryMetricReader()
    with running_gateway(sink, protocol=protocol, meter_provider=MeterProvider(metric_readers=[reader])) as gateway:
        if protocol == "grpc":
            exporter = GrpcSpanExporter(endpoint=f"127.0.0.1:{gateway.grpc_port}", insecure=True)
        else:
            exporter = HttpSpanExporter(endpoint=f"http://127.0.0.1:{gateway.http_port}/v1/traces")
        identities = send_with_sdk(exporter, SERVICE, run_workload)
        assert gateway.force_flush(timeout_s=30)
        stats = gateway.stats()
        assert stats["spans_received"] == stats["tasks_recorded"] == len(identities) == 2200
        assert stats["groups"] == 3
        reported = stats["patterns_reported"]
        assert reported >= len(EXPECTED)

        pattern_spans = pattern_spans_of(sink, reported)
        events = sink.wait_for_log_records(lambda r: r.event_name == "crackle.pattern", count=reported, timeout=15)
        assert len(pattern_spans) == len(events) == reported
        assert_expected_patterns(pattern_spans)
        for span in pattern_spans:
            assert span.scope_name == "crackle_otel"
            assert span.resource.get("service.name") == "crackle-otel-gateway"
            for link in span.links:
                assert (link.trace_id, link.span_id) in identities  # a span the gateway received
                assert link.attributes["crackle.role"]
        by_identity = {s.identity: s for s in pattern_spans}
        for event in events:
            assert event.body == by_identity[(event.trace_id, event.span_id)].attributes["crackle.pattern.description"]

        # Its own counters, as OTel metrics and on the health endpoint.
        points = {
            metric.name: metric.data.data_points
            for resource in reader.get_metrics_data().resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }
        assert points["crackle.gateway.spans.received"][0].value == 2200
        assert points["crackle.patterns.reported"][0].value == reported
        with urllib.request.urlopen(f"http://127.0.0.1:{gateway.http_port}/health", timeout=5) as response:
            health = json.load(response)
        assert health["status"] == "ok"
        assert health["stats"]["tasks_recorded"] == 2200 and health["stats"]["patterns_reported"] == reported


def test_own_pattern_spans_are_not_analysed(sink):
    request = trace_service_pb2.ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    scope_spans.scope.name = "crackle_otel"
    for i in range(1, 6):
        scope_spans.spans.add(trace_id=i.to_bytes(16, "big"), span_id=i.to_bytes(8, "big"),
                              name="crackle.pattern outlier", start_time_unix_nano=1, end_time_unix_nano=2)
    with running_gateway(sink) as gateway:
        channel, export = raw_call(gateway.grpc_port, TRACE_EXPORT)
        export(request.SerializeToString(), timeout=5)
        channel.close()
        assert gateway.force_flush(timeout_s=10)
        stats = gateway.stats()
        assert stats["spans_skipped_own"] == 5 and stats["tasks_recorded"] == 0 and stats["groups"] == 0


# --------------------------------------------------------------- pass-through
def _rich_request(seed: int) -> trace_service_pb2.ExportTraceServiceRequest:
    """A request with every kind of attribute value, events, links, status and a schema url."""
    rng = np.random.default_rng(seed)
    request = trace_service_pb2.ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.26.0")
    resource_spans.resource.attributes.add(key="service.name", value=common_pb2.AnyValue(string_value="inventory"))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name, scope_spans.scope.version = "inventory.db", "2.1"
    for i in range(50):
        span = scope_spans.spans.add(
            trace_id=rng.bytes(16), span_id=rng.bytes(8), parent_span_id=rng.bytes(8), name="SELECT stock",
            kind=trace_pb2.Span.SPAN_KIND_CLIENT, start_time_unix_nano=1_700_000_000_000_000_000 + i * 1000,
            end_time_unix_nano=1_700_000_000_000_000_000 + i * 1000 + 500, trace_state="vendor=1",
            flags=0x101, dropped_attributes_count=i % 3,
        )
        span.attributes.add(key="db.rows", value=common_pb2.AnyValue(int_value=int(rng.integers(0, 100))))
        span.attributes.add(key="db.ratio", value=common_pb2.AnyValue(double_value=float(rng.random())))
        span.attributes.add(key="db.cached", value=common_pb2.AnyValue(bool_value=bool(i % 2)))
        span.attributes.add(key="db.blob", value=common_pb2.AnyValue(bytes_value=rng.bytes(4)))
        span.attributes.add(key="db.tags", value=common_pb2.AnyValue(array_value=common_pb2.ArrayValue(
            values=[common_pb2.AnyValue(string_value="a"), common_pb2.AnyValue(int_value=2)])))
        span.events.add(time_unix_nano=span.start_time_unix_nano + 10, name="retry")
        span.links.add(trace_id=rng.bytes(16), span_id=rng.bytes(8), flags=0x100)
        span.status.code, span.status.message = trace_pb2.Status.STATUS_CODE_ERROR, "timeout"
    return request


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_pass_through_forwards_the_received_requests_unchanged(sink, protocol):
    sent = [_rich_request(seed) for seed in range(3)]
    with running_gateway(sink, protocol=protocol, pass_through=True, config=quiet_config(exporter="none")) as gateway:
        channel, export = raw_call(gateway.grpc_port, TRACE_EXPORT)
        for request in sent:
            export(request.SerializeToString(), timeout=5)  # as a collector's otlp exporter sends them
        channel.close()
        # Counted once the downstream has answered, which is just after the sink stored the request.
        assert wait_until(lambda: gateway.stats()["pass_through_spans_forwarded"] == 150)
        assert sink.trace_requests == sent  # same messages, same order
        stats = gateway.stats()
        assert stats["pass_through_spans_dropped"] == stats["pass_through_spans_failed"] == 0
        assert stats["tasks_recorded"] == 150  # and analysed on the way


def test_pass_through_without_a_downstream_or_to_itself_is_refused():
    with pytest.raises(CrackleConfigError, match="export_endpoint"):
        GatewaySettings(pass_through=True)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    settings = GatewaySettings(grpc_endpoint=f"127.0.0.1:{port}", http_endpoint=None,
                               export_endpoint=f"http://localhost:{port}", pass_through=True, self_metrics_interval_s=0)
    gateway = GatewayService(settings, quiet_config(exporter="none"))
    with pytest.raises(CrackleConfigError, match="every span back to itself"):
        gateway.start()
    assert not gateway.receiver.serving
    # Patterns alone sent to the gateway's own port would be skipped as its own: refused too.
    patterns_only = GatewaySettings(grpc_endpoint=f"127.0.0.1:{port}", http_endpoint=None,
                                    export_endpoint=f"http://localhost:{port}", self_metrics_interval_s=0)
    gateway = GatewayService(patterns_only, quiet_config(exporter="otlp"))
    with pytest.raises(CrackleConfigError, match="its patterns"):
        gateway.start()
    assert not gateway.receiver.serving


# --------------------------------------------------------------- robustness
def test_malformed_requests_are_refused_and_the_gateway_keeps_serving(sink):
    with running_gateway(sink) as gateway:
        channel, export = raw_call(gateway.grpc_port, TRACE_EXPORT)
        with pytest.raises(grpc.RpcError) as refused:
            export(b"\xff\xff\xff not protobuf", timeout=5)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        post = urllib.request.Request(f"http://127.0.0.1:{gateway.http_port}/v1/traces", data=b"{not json",
                                      headers={"Content-Type": "application/json"}, method="POST")
        with pytest.raises(urllib.error.HTTPError) as http_refused:
            urllib.request.urlopen(post, timeout=5)
        assert http_refused.value.code == 400

        export(_rich_request(1).SerializeToString(), timeout=5)  # still serving
        channel.close()
        assert gateway.force_flush(timeout_s=10)
        stats = gateway.stats()
        assert stats["rejected_malformed"] == 2
        assert stats["tasks_recorded"] == 50


# ---------------------------------------------------------------- metrics
def _gauge_request(service: str, values: np.ndarray, start_ns: int) -> metrics_service_pb2.ExportMetricsServiceRequest:
    """One collection per value (10 s apart): a gauge and a cumulative counter growing by 5 per collection."""
    request = metrics_service_pb2.ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.add(key="service.name", value=common_pb2.AnyValue(string_value=service))
    scope = resource_metrics.scope_metrics.add()
    gauge = scope.metrics.add(name="queue.depth")
    counter = scope.metrics.add(name="jobs.done")
    counter.sum.is_monotonic = True
    counter.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    for i, value in enumerate(values):
        time_ns = start_ns + i * 10_000_000_000
        point = gauge.gauge.data_points.add(time_unix_nano=time_ns, as_double=float(value))
        point.attributes.add(key="queue", value=common_pb2.AnyValue(string_value="email"))
        counter.sum.data_points.add(time_unix_nano=time_ns, start_time_unix_nano=start_ns, as_int=5 * (i + 1))
    return request


def test_metric_collections_are_named_and_differenced_like_the_metric_reader():
    request = _gauge_request("mailer", np.array([3.0, 4.0, 6.0]), 1_700_000_000_000_000_000)
    collections = list(MetricCollections().collections(request))
    assert [c.service for c in collections] == ["mailer"] * 3
    assert [c.values["queue.depth{queue=email}"] for c in collections] == [3.0, 4.0, 6.0]
    assert [c.values["jobs.done"] for c in collections] == [5.0, 10.0, 15.0]
    assert [c.values["jobs.done.rate"] for c in collections] == [5.0, 5.0, 5.0]  # first reading: all of it is new


def test_received_metrics_are_analysed_per_service(sink):
    rng = np.random.default_rng(3)
    depth = np.where(np.arange(300) < 180, rng.normal(20, 2, 300), rng.normal(45, 3, 300))
    with running_gateway(sink) as gateway:
        channel, export = raw_call(gateway.grpc_port, METRICS_EXPORT)
        export(_gauge_request("mailer", depth, time.time_ns() - 3000 * 10**9).SerializeToString(), timeout=5)
        channel.close()
        assert gateway.force_flush(timeout_s=20)
        assert gateway.stats()["metric_collections"] == 300
        reported = gateway.stats()["patterns_reported"]
        shifts = [s for s in pattern_spans_of(sink, reported)
                  if s.name == "crackle.pattern phase_transition"
                  and s.attributes["crackle.pattern.group"] == "mailer | otel.metrics"]
        assert any("queue.depth{queue=email}" in s.attributes["crackle.pattern.metrics"] for s in shifts)


# ------------------------------------------------------- SIGTERM (a process)
def test_sigterm_stops_cleanly_after_emitting_the_patterns(sink):
    command = [sys.executable, "-m", "crackle_otel.cli", "serve", "--grpc-endpoint", "127.0.0.1:0",
               "--http-endpoint", "127.0.0.1:0", "--export-endpoint", sink.grpc_endpoint, "--profile", "fast",
               "--cool-interval", "3600", "--self-metrics-interval", "0", "--shutdown-timeout", "20"]
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=environment, cwd=REPO)
    try:
        banner = process.stderr.readline()
        found = re.search(r"grpc [\d.]+:(\d+)", banner)
        assert found, banner
        exporter = GrpcSpanExporter(endpoint=f"127.0.0.1:{found.group(1)}", insecure=True)
        identities = send_with_sdk(exporter, SERVICE, run_workload)
        assert not sink.spans()  # cool interval is an hour: nothing yet
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=40)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, rest
    assert f"patterns to http://{sink.grpc_endpoint} (grpc); cooling every 3600 s" in banner
    assert "2200 spans received" in rest
    pattern_spans = [s for s in sink.spans() if s.name.startswith("crackle.pattern ")]  # flushed before exit
    assert_expected_patterns(pattern_spans)
    assert all((link.trace_id, link.span_id) in identities for s in pattern_spans for link in s.links)
    # The final cool has its line; the stop line counts what the backend confirmed.
    assert re.search(r"cooled 3 groups in [\d.]+ s: \d+ patterns? found, \d+ reported", rest), rest
    count = len(pattern_spans)
    assert f"{count} of {count} patterns exported as spans and {count} as events\n" in rest, rest


def test_a_failing_backend_shows_in_health_every_cool_line_and_the_exit_status(tmp_path):
    with socket.socket() as sock:  # bound then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    http_port = free_port()
    command = [sys.executable, "-m", "crackle_otel.cli", "serve", "--grpc-endpoint", "127.0.0.1:0",
               "--http-endpoint", f"127.0.0.1:{http_port}", "--export-endpoint", dead, "--profile", "fast",
               "--cool-interval", "1", "--self-metrics-interval", "0", "--shutdown-timeout", "5"]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "CRACKLE_EXPORT_TIMEOUT_MILLIS": "1000"}
    log = tmp_path / "serve.log"
    with open(log, "w") as output:
        process = subprocess.Popen(command, stderr=output, text=True, env=environment, cwd=REPO)
    try:
        assert wait_until(lambda: "listening on" in log.read_text(), 120), log.read_text()
        port = re.search(r"grpc [\d.]+:(\d+)", log.read_text()).group(1)
        send_with_sdk(GrpcSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True), SERVICE, run_workload)

        def health():
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=5) as response:
                return response.status, json.load(response)

        assert wait_until(lambda: health()[1]["status"] == "degraded", 30), health()
        status, body = health()
        assert status == 200 and body["stats"]["export_failures"] > 0 and body["stats"]["patterns_exported"] == 0
        # The next cool's line carries the failures so far.
        send_with_sdk(GrpcSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True), SERVICE, run_workload)
        dropped = r"cooled \d+ groups? .*; 0 of \d+ patterns exported as spans and 0 as events \(.*[1-9]\d* \w+ dropped"
        assert wait_until(lambda: re.search(dropped, log.read_text()), 60), log.read_text()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=40)
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert process.returncode == 1, text
    assert re.search(r"stopped; 4400 spans received.*; 0 of (\d+) patterns exported as spans and 0 as events "
                     r"\(\1 patterns dropped, \1 events dropped\)", text), text
    assert f"no pattern reached {dead}" in text
    assert "Traceback" not in text


# --------------------------------------------------- scale-out behind a router
SHARDED_SERVICES = ("cart", "checkout", "payments", "search")


def shard_of(service: str) -> int:
    return zlib.crc32(service.encode()) % 2


class ServiceRouter:
    """The collector's load-balancing exporter with routing_key: service, in miniature:
    each ResourceSpans goes to gateway ``crc32(service.name) % 2``."""

    def __init__(self, gateway_ports):
        self.channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for port in gateway_ports]
        self.exports = [channel.unary_unary(TRACE_EXPORT) for channel in self.channels]

    def consume_traces(self, request):
        for resource_spans in request.resource_spans:
            service = next((kv.value.string_value for kv in resource_spans.resource.attributes
                            if kv.key == "service.name"), "")
            routed = trace_service_pb2.ExportTraceServiceRequest(resource_spans=[resource_spans])
            self.exports[shard_of(service)](routed.SerializeToString(), timeout=10)

    def close(self):
        for channel in self.channels:
            channel.close()


def test_two_gateways_behind_a_service_router_each_find_their_own_services_patterns(sink):
    assert sorted(shard_of(s) for s in SHARDED_SERVICES) == [0, 0, 1, 1]  # a real split
    with running_gateway(sink, http_endpoint=None) as first, running_gateway(sink, http_endpoint=None) as second:
        gateways = (first, second)
        router = ServiceRouter([g.grpc_port for g in gateways])
        with OTLPReceiver(router, grpc_endpoint="127.0.0.1:0", http_endpoint=None) as front:
            rng = np.random.default_rng(5)
            identities: set[tuple[int, int]] = set()
            for service in SHARDED_SERVICES:
                exporter = GrpcSpanExporter(endpoint=f"127.0.0.1:{front.grpc_port}", insecure=True)
                identities |= send_with_sdk(exporter, service,
                                            lambda tracer: _shift(tracer, rng))
            deadline = time.monotonic() + 10
            while front.stats()["requests_consumed"] < front.stats()["requests_accepted"]:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        router.close()
        for shard, gateway in enumerate(gateways):
            assert gateway.force_flush(timeout_s=30)
            mine = {f"{s} | GET /items" for s in SHARDED_SERVICES if shard_of(s) == shard}
            assert set(gateway.furnace.group_names()) == mine
            # Its services shift at the same moment: one incident naming both groups, or their transitions.
            found = set()
            for pattern in gateway.furnace.reported_patterns():
                if pattern.kind.slug == "phase_transition":
                    found.add(pattern.group)
                elif pattern.kind.slug == "incident":
                    found.update(pattern.explanation["groups"].split(", "))
            assert found == mine
        total = sum(g.stats()["patterns_reported"] for g in gateways)
        pattern_spans = pattern_spans_of(sink, total)
        named = set()
        for span in pattern_spans:
            named.add(span.attributes["crackle.pattern.group"])
            named.update(set(span.attributes.get("crackle.pattern.why.groups", "").split(", ")) - {""})
        assert named == {f"{s} | GET /items" for s in SHARDED_SERVICES}
        assert all((link.trace_id, link.span_id) in identities for s in pattern_spans for link in s.links)


def _shift(tracer, rng):
    identities: set[tuple[int, int]] = set()
    latency_shift(tracer, identities, rng, name="GET /items", n=400)
    return identities


# ------------------------------------------------------------ configuration
def test_settings_come_from_flags_then_crackle_gateway_variables_then_otel_ones():
    environ = {
        "CRACKLE_GATEWAY_HTTP_ENDPOINT": "",  # turns OTLP/HTTP off
        "CRACKLE_GATEWAY_PASS_THROUGH": "yes",
        "CRACKLE_GATEWAY_MAX_QUEUE_SIZE": "32",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    settings = GatewaySettings.load(environ, max_queue_size=8)
    assert settings.grpc_endpoint == "127.0.0.1:4317" and settings.http_endpoint is None
    assert settings.pass_through is True and settings.max_queue_size == 8  # the flag wins
    assert settings.export_endpoint == "http://collector:4317" and settings.export_protocol == "http/protobuf"
    with pytest.raises(CrackleConfigError, match="CRACKLE_GATEWAY_MAX_QUEUE_SIZE='many'"):
        GatewaySettings.load({"CRACKLE_GATEWAY_MAX_QUEUE_SIZE": "many"})
    with pytest.raises(CrackleConfigError, match="export_protocol"):
        GatewaySettings.load({}, export_protocol="carrier-pigeon")


def test_serve_without_a_downstream_says_what_to_do(monkeypatch, capsys):
    from crackle_otel.cli import main

    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "CRACKLE_GATEWAY_EXPORT_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert main(["serve", "--grpc-endpoint", "127.0.0.1:0", "--http-endpoint", ""]) == 2
    assert "--export-endpoint" in capsys.readouterr().err


def test_pass_through_backlog_is_bounded_and_every_request_accounted_for():
    from crackle_otel.gateway.forward import Downstream, PassThrough

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    dead_port = probe.getsockname()[1]
    probe.close()  # nobody listens there: every send fails and is retried
    forwarder = PassThrough(Downstream.parse(f"127.0.0.1:{dead_port}", "grpc"), max_queue_size=1, block_s=0.05,
                            timeout_s=1.0, max_attempts=3)
    request = _rich_request(0)
    accepted = [forwarder.submit(request, 50) for _ in range(4)]
    assert accepted.count(False) >= 2  # one in flight, one queued, the rest refused after block_s
    forwarder.shutdown(timeout_s=0.5)
    stats = forwarder.stats()
    assert stats["requests_forwarded"] == 0
    assert stats["requests_failed"] + stats["requests_dropped"] == 4
    assert stats["spans_failed"] + stats["spans_dropped"] == 200


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI to make a test certificate")
def test_serves_otlp_over_tls(sink, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )
    with running_gateway(sink, http_endpoint=None, tls_cert_file=str(cert), tls_key_file=str(key)) as gateway:
        exporter = GrpcSpanExporter(endpoint=f"https://localhost:{gateway.grpc_port}",
                                    credentials=grpc.ssl_channel_credentials(root_certificates=cert.read_bytes()))
        identities = send_with_sdk(exporter, SERVICE, run_workload)
        assert gateway.force_flush(timeout_s=30)
        assert gateway.stats()["tasks_recorded"] == len(identities)
        assert_expected_patterns(pattern_spans_of(sink, gateway.stats()["patterns_reported"]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
