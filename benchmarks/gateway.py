"""Spans per second the gateway receives AND analyses over OTLP/gRPC on loopback,
against the same load sent to a bare in-process OTLP receiver that only decodes.

A separate sender process (so its CPU and GIL are not the server's) sends
pre-built ExportTraceServiceRequests of ``--batch`` spans through a raw gRPC
stub from ``--senders`` threads, as a collector's OTLP exporter with several
consumers would. When the server answers RESOURCE_EXHAUSTED (its queue is
full, the back-pressure working) the sender retries after 5 ms, so the
measured rate is what the server sustains, not how long a back-off sleeps.
The clock runs from the first request sent to the last request consumed.

Both servers run in this process, one after the other, with the same load:

- bare:    OTLPReceiver + a consumer that does nothing (network, decode, queue);
- gateway: GatewayService (the same receiver, then extraction, grouping, kiln
           recording on the consumer thread, and cooling on the cooler thread
           whenever a group's kiln is half new; patterns go to a counting sink).

The last line is the consumer's ceiling (decode, extraction, kiln recording, no
network, no cooling), to tell transport costs from analysis costs.

    python benchmarks/gateway.py [--spans 200000] [--batch 512] [--senders 4] [--repeat 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import threading
import time

import numpy as np

from crackle_otel.cli import positive_int
from crackle_otel.gateway.receiver import OTLPReceiver
from crackle_otel.gateway.service import GatewayService, GatewaySettings
from crackle_otel.otel.config import CrackleConfig

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SERVICES = ("cart", "checkout", "search", "payments")
OPERATIONS = ("GET /items", "POST /order")


def build_requests(n_requests: int, batch: int, seed: int = 0) -> list[bytes]:
    """Serialized requests: one service per request, two operations, 3 numeric + 2 string attributes."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2

    rng = np.random.default_rng(seed)
    # Spans start 1 ms apart: realistic concurrency. (Much denser starts than durations would
    # make end-time order sort spans by duration, a trend that is not in the traffic.)
    spacing_ns = 1_000_000
    first_start = time.time_ns() - n_requests * batch * spacing_ns
    payloads = []
    for r in range(n_requests):
        request = trace_service_pb2.ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.add(
            key="service.name", value=common_pb2.AnyValue(string_value=SERVICES[r % len(SERVICES)]))
        resource_spans.resource.attributes.add(
            key="host.name", value=common_pb2.AnyValue(string_value=f"host-{r % 7}"))
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = "bench.app"
        durations = rng.lognormal(np.log(20), 0.3, batch)
        for i in range(batch):
            begin = first_start + (r * batch + i) * spacing_ns
            span = scope_spans.spans.add(
                trace_id=rng.bytes(16), span_id=rng.bytes(8), name=OPERATIONS[i % 2],
                start_time_unix_nano=begin, end_time_unix_nano=begin + int(durations[i] * 1e6))
            span.attributes.add(key="http.status_code", value=common_pb2.AnyValue(int_value=200))
            span.attributes.add(key="items", value=common_pb2.AnyValue(int_value=int(rng.integers(1, 9))))
            span.attributes.add(key="payload_kb", value=common_pb2.AnyValue(double_value=float(rng.random() * 8)))
            span.attributes.add(key="http.route", value=common_pb2.AnyValue(string_value="/items/{id}"))
            span.attributes.add(key="user.tier", value=common_pb2.AnyValue(string_value=("free", "pro")[i % 2]))
        payloads.append(request.SerializeToString())
    return payloads


def sender(port: int, n_requests: int, batch: int, senders: int, ready, go, result) -> None:
    """Runs in its own process: build the requests, wait for go, send them all, report retries."""
    import grpc

    payloads = build_requests(n_requests, batch)
    channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for _ in range(senders)]
    calls = [channel.unary_unary(TRACE_EXPORT) for channel in channels]
    retries = [0] * senders
    ready.set()
    go.wait()

    def send(k: int) -> None:
        for payload in payloads[k::senders]:
            while True:
                try:
                    calls[k](payload, timeout=30)
                    break
                except grpc.RpcError as error:
                    if error.code() not in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
                        raise
                    retries[k] += 1
                    time.sleep(0.005)

    threads = [threading.Thread(target=send, args=(k,)) for k in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.put(sum(retries))
    for channel in channels:
        channel.close()


class CountingSink:
    """Where the gateway's patterns go in the benchmark (no network in the measure)."""

    def __init__(self) -> None:
        self.patterns = 0

    def emit(self, patterns) -> None:
        self.patterns += len(patterns)

    def force_flush(self, timeout_millis: int = 0) -> bool:
        return True

    def shutdown(self, timeout_millis: int = 0) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {"patterns_emitted": self.patterns}


class DecodeOnly:
    def consume_traces(self, request) -> None:
        pass


def measure(kind: str, n_requests: int, batch: int, senders: int) -> dict[str, float]:
    if kind == "bare":
        server = OTLPReceiver(DecodeOnly(), grpc_endpoint="127.0.0.1:0", http_endpoint=None).start()
        port, consumed, stop = server.grpc_port, lambda: server.stats()["requests_consumed"], server.stop
        extra = lambda: {}  # noqa: E731
    else:
        gateway = GatewayService(
            GatewaySettings(grpc_endpoint="127.0.0.1:0", http_endpoint=None, self_metrics_interval_s=0),
            CrackleConfig.load({}, exporter="none"),
            emitter=CountingSink(),
        ).start()
        port, stop = gateway.grpc_port, gateway.stop
        consumed = lambda: gateway.receiver.receiver_stats()["requests_consumed"]  # noqa: E731
        extra = lambda: {k: gateway.stats()[k] for k in ("tasks_recorded", "cools", "cool_seconds_total",  # noqa: E731
                                                          "patterns_reported")}
    context = mp.get_context("spawn")
    ready, go, result = context.Event(), context.Event(), context.Queue()
    process = context.Process(target=sender, args=(port, n_requests, batch, senders, ready, go, result))
    process.start()
    ready.wait()
    started = time.perf_counter()
    go.set()
    while consumed() < n_requests:
        time.sleep(0.002)
    elapsed = time.perf_counter() - started
    retries = result.get(timeout=60)
    process.join()
    figures = {"spans_per_s": n_requests * batch / elapsed, "seconds": elapsed, "retries": retries, **extra()}
    stop(5.0)
    return figures


def feed_only(n_requests: int, batch: int) -> float:
    """Spans/s of decode + extraction + kiln recording alone (no network, no cooling): the consumer's ceiling."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    from crackle_otel.gateway.feed import RequestFeeder
    from crackle_otel.otel.extract import ExtractionRules
    from crackle_otel.otel.furnace import Furnace

    payloads = build_requests(n_requests, batch)
    feeder = RequestFeeder(Furnace(CrackleConfig.load({}, exporter="none")), ExtractionRules())
    started = time.perf_counter()
    for payload in payloads:
        feeder.feed_traces(trace_service_pb2.ExportTraceServiceRequest.FromString(payload))
    return n_requests * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=positive_int, default=200_000)
    parser.add_argument("--batch", type=positive_int, default=512)
    parser.add_argument("--senders", type=positive_int, default=4)
    parser.add_argument("--repeat", type=positive_int, default=2)
    args = parser.parse_args()
    n_requests = max(1, args.spans // args.batch)
    print(f"{n_requests} requests x {args.batch} spans over OTLP/gRPC on loopback, {args.senders} sender threads "
          "in a separate process; best of", args.repeat)
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.repeat):
        for kind in ("bare", "gateway"):
            figures = measure(kind, n_requests, args.batch, args.senders)
            if kind not in best or figures["spans_per_s"] > best[kind]["spans_per_s"]:
                best[kind] = figures
    for kind, figures in best.items():
        details = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
                            if k != "spans_per_s")
        print(f"  {kind:8s} {figures['spans_per_s']:>10,.0f} spans/s   ({details})")
    print(f"  gateway / bare receiver: {best['gateway']['spans_per_s'] / best['bare']['spans_per_s']:.2f}")
    rate = feed_only(min(n_requests, 100), args.batch)
    print(f"  for reference, in-process decode + extract + record without network or cooling: {rate:,.0f} spans/s")


if __name__ == "__main__":
    main()
