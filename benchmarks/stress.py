"""Hardening figures: the long versions of tests/test_stress_*.py, each against its goal.

Each section runs in a fresh process (so peak RSS is its own) and prints one line:

  stalled   gRPC export latency beside N stalled calls        goal: unchanged with 64 stalled
  queue     gateway peak RSS with a full queue of 3 MB requests goal: <= 2 x byte budget + 200 MB
  longline  analyze peak RSS on a ~2 MB gzip of one long line  goal: <= 300 MB
  zeros     analyze time on 2 GiB of zeros                     goal: < 30 s
  share     cooler CPU share beside a busy app thread          goal: within 10 % of the configured share
  shutdown  shutdown(5000) / force_flush(3000) under load      goal: <= timeout + 0.5 s
  deadend   pattern counters after a dead-backend run          goal: reconcile exactly

    python benchmarks/stress.py [SECTION ...] [--repeat N]

Timings are repeated (``--repeat``, default 3; interleaved where there is more than one
configuration) and quoted as median and range: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib

SECTIONS = ("stalled", "queue", "longline", "zeros", "share", "shutdown", "deadend")
MiB = 1 << 20


def spread(values: list[float], unit: str = "s", digits: int = 2) -> str:
    return (f"{statistics.median(values):.{digits}f} {unit} (range {min(values):.{digits}f}-{max(values):.{digits}f}, "
            f"n={len(values)})")


def peak_rss_mib(pid: int | None = None) -> float:
    """VmHWM of a process (this one by default), in MiB."""
    with open(f"/proc/{pid or 'self'}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------------ gateway
def trace_request(name: str, attribute_bytes: int = 0):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    attributes = [KeyValue(key="blob", value=AnyValue(string_value="x" * attribute_bytes))] if attribute_bytes else []
    span = Span(trace_id=b"\1" * 16, span_id=b"\1" * 8, name=name, start_time_unix_nano=1, end_time_unix_nano=2,
                attributes=attributes)
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])])


class Collecting:
    def __init__(self) -> None:
        self.spans = 0
        self.hold = threading.Event()
        self.hold.set()

    def consume_traces(self, request) -> None:
        self.hold.wait()
        self.spans += 1


def section_stalled(repeat: int) -> str:
    import grpc
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

    from crackle_otel.gateway import OTLPReceiver

    method = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    receiver = OTLPReceiver(Collecting(), grpc_endpoint="127.0.0.1:0", http_endpoint=None).start()
    endpoint = f"127.0.0.1:{receiver.grpc_port}"
    release = threading.Event()

    def held_back(channel) -> None:
        def messages():
            release.wait(60)
            yield b""
        try:
            channel.stream_unary(method)(messages(), timeout=60)
        except grpc.RpcError:
            pass

    latencies: dict[int, list[float]] = {0: [], 8: [], 64: []}
    request = trace_request("probe")
    try:
        with grpc.insecure_channel(endpoint) as stalled_channel, grpc.insecure_channel(endpoint) as channel:
            stub = TraceServiceStub(channel)
            stub.Export(request, timeout=5)  # warm up the connection
            for _ in range(repeat):
                for stalled in (0, 8, 64):  # interleaved
                    threads = [threading.Thread(target=held_back, args=(stalled_channel,), daemon=True)
                               for _ in range(stalled)]
                    for thread in threads:
                        thread.start()
                    time.sleep(0.3)
                    for _ in range(10):
                        started = time.perf_counter()
                        stub.Export(request, timeout=30)
                        latencies[stalled].append((time.perf_counter() - started) * 1000)
                    release.set()
                    for thread in threads:
                        thread.join(10)
                    release.clear()
    finally:
        release.set()
        receiver.stop(2)
    return "; ".join(f"{n} stalled: {spread(values, 'ms', 1)}" for n, values in latencies.items())


def section_queue(repeat: int) -> str:
    """A child gateway receiver whose consumer is held; the parent fills its queue with 3 MB requests."""
    budget = 64 * MiB
    results = []
    for _ in range(repeat):
        child = subprocess.Popen([sys.executable, __file__, "--child-queue", str(budget)], stdout=subprocess.PIPE,
                                 text=True)
        port = int(child.stdout.readline())
        import grpc

        payload = trace_request("big", attribute_bytes=3 * MiB - 200).SerializeToString()
        accepted = refused = 0
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 8 * MiB)]) as channel:
            call = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            for _ in range(128):
                try:
                    call(payload, timeout=30)
                    accepted += 1
                except grpc.RpcError as error:
                    refused += error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        child.stdin = None
        peak = peak_rss_mib(child.pid)
        child.terminate()
        child.wait(30)
        results.append((peak, accepted, refused))
    peaks = [p for p, _, _ in results]
    return (f"budget {budget // MiB} MiB, 128 requests of 3 MB: peak RSS {spread(peaks, 'MiB', 0)} "
            f"(goal <= {2 * budget // MiB + 200} MiB); accepted {results[0][1]}, refused {results[0][2]} "
            f"(RESOURCE_EXHAUSTED)")


def child_queue(budget: int) -> None:
    from crackle_otel.gateway import OTLPReceiver

    consumer = Collecting()
    consumer.hold.clear()  # the queue only fills
    receiver = OTLPReceiver(consumer, grpc_endpoint="127.0.0.1:0", http_endpoint=None, max_queue_bytes=budget,
                            partial_success_wait_s=0).start()
    print(receiver.grpc_port, flush=True)
    time.sleep(600)


# ------------------------------------------------------------------ analyze
def run_and_measure(argv: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit code) of a child process."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    return time.perf_counter() - started, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def section_longline(repeat: int) -> str:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "long-line.jsonl.gz")
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        piece = b"a" * (64 * MiB)
        with open(path, "wb") as out:
            out.write(compressor.compress(b'{"resourceSpans":[{"x":"'))
            while out.tell() < 2 * MiB:
                out.write(compressor.compress(piece))
            out.write(compressor.compress(b'"}]}\n') + compressor.flush())
        size = os.path.getsize(path)
        line = 0
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(64 * MiB):
                line += len(chunk)
        runs = [run_and_measure([sys.executable, "-m", "crackle_otel.cli", "analyze", path]) for _ in range(repeat)]
    return (f"{size / MiB:.1f} MiB gzip holding one {line / 2**30:.1f} GiB line: peak RSS "
            f"{spread([r[1] for r in runs], 'MiB', 0)} (goal <= 300 MiB), {spread([r[0] for r in runs])}, "
            f"exit {runs[0][2]}")


def section_zeros(repeat: int) -> str:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "zeros.bin")
        with open(path, "wb") as out:
            out.truncate(2 << 30)  # sparse: reads as zeros, uses no disk
        runs = [run_and_measure([sys.executable, "-m", "crackle_otel.cli", "analyze", path]) for _ in range(repeat)]
    return (f"2 GiB of zeros: {spread([r[0] for r in runs])} (goal < 30 s), peak RSS "
            f"{spread([r[1] for r in runs], 'MiB', 0)}, exit {runs[0][2]}")


# ---------------------------------------------------------------- processor
def thread_cpu_s(native_id: int) -> float:
    with open(f"/proc/self/task/{native_id}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def section_share(repeat: int) -> str:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from crackle_otel.otel.config import CrackleConfig
    from crackle_otel.otel.processor import CrackleSpanProcessor

    shares: dict[int, list[float]] = {200: [], 60_000: []}
    rates: dict[int, list[float]] = {200: [], 60_000: []}
    process_shares: list[float] = []
    for _ in range(repeat):
        for interval in (200, 60_000):  # interleaved
            processor = CrackleSpanProcessor(None, config=CrackleConfig(cool_interval_millis=interval, exporter="none"))
            provider = TracerProvider(resource=Resource.create({"service.name": "stress"}))
            provider.add_span_processor(processor)
            tracer = provider.get_tracer("t")
            cooler = processor._thread.native_id
            cpu0, wall0, process0 = thread_cpu_s(cooler), time.monotonic(), time.process_time()
            i = 0
            while time.monotonic() - wall0 < 8:
                tracer.start_span("GET /x", attributes={"a": i % 7, "b": 1.5 * (i % 11), "host.name": "h"}).end()
                i += 1
            wall = time.monotonic() - wall0
            shares[interval].append((thread_cpu_s(cooler) - cpu0) / wall)
            process_shares.append((time.process_time() - process0) / wall)
            rates[interval].append(processor.stats()["spans_recorded"] / wall)
            processor.shutdown(1000)
    configured = CrackleConfig().max_cooler_share
    return ("; ".join(f"interval {interval} ms: cooler CPU {spread(values, 'of a core', 3)}, analysed "
                      f"{statistics.median(rates[interval]):,.0f} spans/s" for interval, values in shares.items())
            + f" (configured {configured}; goal {0.9 * configured:.3f}-{1.1 * configured:.3f}; the whole process got "
              f"{statistics.median(process_shares):.2f} of a core)")


def section_shutdown(repeat: int) -> str:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from crackle_otel.otel.config import CrackleConfig
    from crackle_otel.otel.processor import CrackleSpanProcessor

    took: dict[str, list[float]] = {"shutdown(5000)": [], "force_flush(3000)": []}
    for _ in range(repeat):
        for operation in took:  # interleaved
            processor = CrackleSpanProcessor(None, config=CrackleConfig(
                exporter="none", max_cooler_share=1.0, max_queue_size=16_384, cool_interval_millis=3_600_000))
            provider = TracerProvider(resource=Resource.create({"service.name": "stress"}))
            provider.add_span_processor(processor)
            tracer = provider.get_tracer("t")
            rng = random.Random(1)
            for g in range(4):  # four full kilns of 24 metrics
                for i in range(4096):
                    tracer.start_span(f"op{g}", attributes={f"m{j}": rng.random() * (j + 1) + (i % 50) * (j % 3)
                                                             for j in range(24)}).end()
            deadline = time.monotonic() + 120
            while processor.stats()["spans_pending"] and time.monotonic() < deadline:  # all recorded (or dropped)
                time.sleep(0.05)
            stop = threading.Event()

            def app() -> None:
                i = 0
                while not stop.is_set():
                    tracer.start_span(f"op{i % 4}", attributes={f"m{j}": (i * 7919 + j) % 101 for j in range(24)}).end()
                    i += 1

            thread = threading.Thread(target=app, daemon=True)
            thread.start()
            time.sleep(1.0)
            started = time.monotonic()
            if operation.startswith("shutdown"):
                processor.shutdown(5000)
            else:
                processor.force_flush(3000)
            took[operation].append(time.monotonic() - started)
            stop.set()
            thread.join()
            processor.shutdown(100)
    return "; ".join(f"{operation} under load: {spread(values)}" for operation, values in took.items()) + \
        " (goal: timeout + 0.5 s)"


def section_deadend(repeat: int) -> str:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from crackle_otel.otel.emit import PatternEmitter
    from crackle_otel.otel.processor import CrackleSpanProcessor

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    lines = []
    for _ in range(repeat):
        emitter = PatternEmitter.otlp(endpoint=dead, protocol="grpc", export_timeout_millis=1000)
        processor = CrackleSpanProcessor(emitter, profile="fast", cool_interval_millis=3_600_000)
        provider = TracerProvider(resource=Resource.create({"service.name": "stress"}))
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("t")
        rng = random.Random(2)
        for cycle in range(6):  # six shifts in six groups, cooled one after another
            for i in range(2000):
                shifted = i > 1000
                tracer.start_span(f"op{cycle}", attributes={"db.ms": rng.gauss(50 if shifted else 20, 3),
                                                             "host.name": f"h{i % 4}"}).end()
            processor.force_flush(10_000)
        provider.shutdown()
        s = processor.stats()
        detected_ok = s["patterns_detected"] == s["patterns_reported"] + s["patterns_suppressed"]
        reported_ok = s["patterns_reported"] == s["patterns_exported"] + s["patterns_dropped"] + s["patterns_pending"]
        lines.append(f"detected {s['patterns_detected']} = reported {s['patterns_reported']} + suppressed "
                     f"{s['patterns_suppressed']} ({'ok' if detected_ok else 'MISMATCH'}); reported = exported "
                     f"{s['patterns_exported']} + dropped {s['patterns_dropped']} + pending {s['patterns_pending']} "
                     f"({'ok' if reported_ok else 'MISMATCH'}); export failures {s['export_failures']}")
    return " | ".join(sorted(set(lines)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", choices=(*SECTIONS, []), metavar="SECTION")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child-queue", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--section", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_queue:
        child_queue(args.child_queue)
        return 0
    if args.section:  # one section, in this (fresh) process
        print(f"{args.section:9} {globals()['section_' + args.section](args.repeat)}", flush=True)
        return 0
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}")
    for section in args.sections or SECTIONS:
        subprocess.run([sys.executable, __file__, "--section", section, "--repeat", str(args.repeat)], check=False)
    return 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
