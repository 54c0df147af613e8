"""The per-span analysis path: extraction, grouping and kiln recording, per span origin.

Three measurements, each the best (minimum time) of ``--rounds`` runs:

- ``sdk``: the span processor's cooler work per span. A TracerProvider with a
  CrackleSpanProcessor that never drains or cools on its own ends N spans (6
  attributes: 4 numeric, 2 strings); then ``_drain_locked()`` is timed: for
  each buffered span, extraction (``from_readable_span``), grouping and
  ``Furnace.record`` -> ``Kiln.record``.
- ``proto``: the gateway's work per span: ``RequestFeeder.feed_traces`` on
  already decoded ExportTraceServiceRequests of the same spans (200 a request);
  protobuf decoding is shown apart (``decode``).

In both, the groups' kilns exist before the clock starts (a first drain / feed
creates them): allocating a kiln is a cost per group, not per span, and at
these capacities (NaN-filling megabytes) it would otherwise be ~1 us a span.
- ``analyze``: ``analyze_files`` (what ``crackle-otel analyze`` runs) on the same
  spans written as OTLP JSON lines (the collector file exporter's default) and as
  length-prefixed protobuf (``format: proto``), in spans/s; ``feed`` = the same
  without the time spent cooling (detectors), i.e. reading, decoding, extraction
  and recording.

    python benchmarks/extract.py [--spans 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from hot_path import request_attributes  # benchmarks/ is on sys.path when run as a script

from crackle_otel.cli import positive_int
from crackle_otel.gateway.analyze import analyze_files
from crackle_otel.gateway.feed import RequestFeeder
from crackle_otel.gateway.otlp_files import write_length_prefixed
from crackle_otel.gateway.otlp_json import message_to_otlp_json
from crackle_otel.otel.config import CrackleConfig
from crackle_otel.otel.emit import ConsoleEmitter
from crackle_otel.otel.extract import ExtractionRules
from crackle_otel.otel.furnace import Furnace
from crackle_otel.otel.processor import CrackleSpanProcessor

SERVICES = ("cart", "checkout", "search", "payments")
OPERATIONS = ("GET /checkout", "POST /order")
SPANS_PER_REQUEST = 200


span_attributes = request_attributes  # the same 6 attributes as the hot-path benchmark


def timed(function) -> float:
    gc.collect()
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


# ------------------------------------------------------------------- SDK
def sdk_seconds(spans: int) -> float:
    with open(os.devnull, "w") as devnull:
        processor = CrackleSpanProcessor(
            ConsoleEmitter(devnull), cool_interval_millis=3_600_000, max_queue_size=spans + 10_000,
            drain_batch_size=spans + 10_000, kiln_capacity=2 * spans, max_cooler_share=1.0,
        )
        provider = TracerProvider(resource=Resource.create({"service.name": "bench"}), sampler=ALWAYS_ON)
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("bench.app")
        with processor._work_lock:  # the cooler thread sleeps (no interval, no wake-up but the first): keep it out
            for i in range(len(OPERATIONS)):  # creates the groups' kilns
                tracer.start_span(OPERATIONS[i], attributes=span_attributes(i)).end()
            processor._drain_locked()
            for i in range(spans):
                tracer.start_span(OPERATIONS[i % 2], attributes=span_attributes(i)).end()
            seconds = timed(processor._drain_locked)
        assert processor.stats()["spans_recorded"] == spans + len(OPERATIONS), processor.stats()
        provider.shutdown()
    return seconds


# ----------------------------------------------------------------- proto
def requests_of(spans: int, start_ns: int = 1_790_000_000 * 10**9) -> list[trace_service_pb2.ExportTraceServiceRequest]:
    """The same kind of spans as OTLP requests: one service per request, two operations, 1 ms apart."""
    from opentelemetry.proto.common.v1 import common_pb2

    def any_value(value) -> common_pb2.AnyValue:
        if isinstance(value, str):
            return common_pb2.AnyValue(string_value=value)
        if isinstance(value, float):
            return common_pb2.AnyValue(double_value=value)
        return common_pb2.AnyValue(int_value=value)

    requests = []
    for first in range(0, spans, SPANS_PER_REQUEST):
        request = trace_service_pb2.ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        service = SERVICES[(first // SPANS_PER_REQUEST) % len(SERVICES)]
        resource_spans.resource.attributes.add(key="service.name", value=any_value(service))
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = "bench.app"
        for i in range(first, min(first + SPANS_PER_REQUEST, spans)):
            begin = start_ns + i * 1_000_000
            span = scope_spans.spans.add(
                trace_id=(i + 1).to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"), name=OPERATIONS[i % 2],
                start_time_unix_nano=begin, end_time_unix_nano=begin + 20_000_000 + (i % 37) * 100_000,
            )
            for key, value in span_attributes(i).items():
                span.attributes.add(key=key, value=any_value(value))
            if i % 50 == 0:
                span.status.code = span.status.STATUS_CODE_ERROR
                span.events.add(name="retry", time_unix_nano=begin)
        requests.append(request)
    return requests


def proto_seconds(payloads: list[bytes]) -> tuple[float, float]:
    """(decode seconds, feed seconds) for the serialized requests."""
    decoded: list = []
    decode = timed(lambda: decoded.extend(trace_service_pb2.ExportTraceServiceRequest.FromString(p)
                                          for p in payloads))
    config = CrackleConfig.load({}, exporter="none", kiln_capacity=2 * len(payloads) * SPANS_PER_REQUEST)
    feeder = RequestFeeder(Furnace(config), ExtractionRules())
    for request in decoded:  # creates the groups' kilns
        feeder.feed_traces(request)
    feed = timed(lambda: [feeder.feed_traces(request) for request in decoded])
    assert feeder.furnace.stats()["tasks_recorded"] == 2 * sum(
        len(s.spans) for r in decoded for rs in r.resource_spans for s in rs.scope_spans)
    return decode, feed


# --------------------------------------------------------------- analyze
class Discard:
    def emit(self, patterns) -> None:
        pass

    def force_flush(self, timeout_millis: int = 0) -> bool:
        return True

    def shutdown(self, timeout_millis: int = 0) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {}


def analyze_seconds(path: str, spans: int) -> tuple[float, float]:
    """(seconds for analyze_files, of which cooling)."""
    config = CrackleConfig.load({}, exporter="none")
    gc.collect()
    started = time.perf_counter()
    summary = analyze_files([path], config, Discard())
    seconds = time.perf_counter() - started
    assert summary.spans == spans and summary.problems.count == 0, (summary.spans, summary.problems.first)
    return seconds, summary.stats["cool_seconds_total"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=positive_int, default=20_000)
    parser.add_argument("--rounds", type=positive_int, default=3)
    args = parser.parse_args()
    n = args.spans
    requests = requests_of(n)
    payloads = [r.SerializeToString() for r in requests]

    sdk = min(sdk_seconds(n) for _ in range(args.rounds))
    proto = min((proto_seconds(payloads) for _ in range(args.rounds)), key=lambda pair: pair[1])
    print(f"{n:,} spans, 6 attributes each; best of {args.rounds}")
    print(f"sdk    (from_readable_span + record): {sdk / n * 1e6:6.2f} us/span")
    print(f"proto  (feed_traces: from_proto_span + record): {proto[1] / n * 1e6:6.2f} us/span"
          f"   (+ decode {proto[0] / n * 1e6:.2f} us/span)")

    with tempfile.TemporaryDirectory() as directory:
        json_path = os.path.join(directory, "spans.jsonl")
        with open(json_path, "w") as out:
            out.writelines(message_to_otlp_json(r) + "\n" for r in requests)
        proto_path = os.path.join(directory, "spans.binpb")
        with open(proto_path, "wb") as out:
            write_length_prefixed(out, requests)
        for name, path in (("JSON lines", json_path), ("length-prefixed proto", proto_path)):
            seconds, cooling = min((analyze_seconds(path, n) for _ in range(args.rounds)), key=lambda p: p[0])
            print(f"analyze {name:>22}: {n / seconds:9,.0f} spans/s   "
                  f"(feed without cooling: {n / (seconds - cooling):9,.0f} spans/s; cooling {cooling:.2f} s)")


if __name__ == "__main__":
    main()
