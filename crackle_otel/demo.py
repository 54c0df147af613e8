"""`crackle-otel demo`: a built-in instrumented workload through the real span processor.

A simulated shop service ends real OTel spans (explicit start/end times, so the
demo takes seconds, not the simulated half hour) through a TracerProvider with
CrackleSpanProcessor attached. Three things go wrong on purpose:

- ``GET /checkout`` gets ~2x slower halfway through (a phase transition);
- one host, ``shop-7``, always answers ~3x slower with more CPU (a cluster);
- ``process_batch`` keeps ``records_in = records_out + errors`` until 70% of
  the run, then starts losing records (a conservation violation).

Patterns go to the console, or over OTLP with ``--otlp-endpoint`` (or ``CRACKLE_EXPORTER=otlp`` and
the standard ``OTEL_EXPORTER_OTLP_*`` variables), together with the workload's own spans so that
every link of a pattern span resolves in the backend.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Any, Mapping

import numpy as np
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.trace import Status, StatusCode

from .otel.config import CrackleConfig, CrackleConfigError, env_name
from .otel.delivery import CountingExporter, Delivery, Ledger
from .otel.emit import _otlp_exporter, _run_bounded
from .otel.processor import CrackleSpanProcessor
from .otel.setup import build_emitter

CHECKOUTS = 3000
BATCHES = 1200
SIMULATED_SPAN_GAP_S = 0.2  # simulated time between two requests


def _end_checkout(tracer, rng, i: int, start_ns: int) -> None:
    host = f"shop-{rng.integers(0, 10)}"
    slow_host = host == "shop-7"
    shifted = i >= CHECKOUTS // 2
    db_ms = rng.lognormal(np.log(12), 0.2) * (3.0 if slow_host else 1.0) * (2.2 if shifted else 1.0)
    duration_ms = db_ms + rng.lognormal(np.log(25), 0.15) * (3.0 if slow_host else 1.0)
    span = tracer.start_span("GET /checkout", start_time=start_ns)
    span.set_attributes({
        "host.name": host,
        "http.route": "/checkout",
        "cart.items": int(rng.integers(1, 9)),
        "db.time_ms": round(float(db_ms), 3),
        "cpu.time_ms": round(float(duration_ms * (0.5 if slow_host else 0.3) + rng.normal(0, 1)), 3),
    })
    span.end(end_time=start_ns + int(duration_ms * 1e6))


def _end_batch(tracer, rng, i: int, start_ns: int) -> None:
    records_in = int(rng.normal(1000, 40))
    errors = int(rng.poisson(3))
    lost = int(max(0, (i - 0.7 * BATCHES) * 0.5)) if i >= 0.7 * BATCHES else 0
    span = tracer.start_span("process_batch", start_time=start_ns)
    span.set_attributes({"records_in": records_in, "records_out": records_in - errors - lost, "errors": errors})
    if errors > 8:
        span.set_status(Status(StatusCode.ERROR, "too many bad records"))
    span.end(end_time=start_ns + int(rng.lognormal(np.log(80), 0.1) * 1e6))


def run_workload(tracer, seed: int = 0, start_ns: int | None = None) -> int:
    """End the demo's spans (from ``start_ns``, by default so that the last ends now); returns how many."""
    rng = np.random.default_rng(seed)
    if start_ns is None:
        start_ns = time.time_ns() - int((CHECKOUTS + 1) * SIMULATED_SPAN_GAP_S * 1e9)
    gap_ns = int(SIMULATED_SPAN_GAP_S * 1e9)
    batch_every = CHECKOUTS / BATCHES
    batches = 0
    for i in range(CHECKOUTS):
        _end_checkout(tracer, rng, i, start_ns + i * gap_ns)
        while batches < BATCHES and batches * batch_every <= i:
            _end_batch(tracer, rng, batches, start_ns + i * gap_ns + gap_ns // 2)
            batches += 1
    return CHECKOUTS + batches


def save_spans(spans, path: str, *, batch: int = 512) -> int:
    """Write finished SDK spans as OTLP JSON lines (what the collector's file exporter writes); returns how many."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from .gateway.otlp_json import message_to_otlp_json

    spans = list(spans)
    with open(path, "w", encoding="utf-8") as out:
        for first in range(0, len(spans), batch):
            out.write(message_to_otlp_json(encode_spans(spans[first:first + batch])) + "\n")
    return len(spans)


# The demo cools once, at the end, over everything it fired; CRACKLE_* variables may still change these.
_COOL_BUDGET_MILLIS = 60_000
_DEMO_SETTINGS = {"cool_interval_millis": 3_600_000, "kiln_capacity": 4096, "max_queue_size": 8192}


def demo_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> CrackleConfig:
    """Flags, then CRACKLE_* variables, then the demo's own settings; every value validated."""
    environ = os.environ if environ is None else environ
    overrides: dict[str, Any] = {name: value for name, value in _DEMO_SETTINGS.items()
                                 if not environ.get(env_name(name), "").strip()}
    overrides["profile"] = args.profile
    if args.otlp_endpoint:
        overrides["exporter"] = "otlp"
    elif not environ.get(env_name("exporter"), "").strip():
        overrides["exporter"] = "console"
    config = CrackleConfig.load(environ, **overrides)
    if not config.enabled:
        raise CrackleConfigError(f"{env_name('enabled')}=false turns crackle off; unset it to run the demo")
    return config


class _WorkloadExport:
    """The demo's own spans to the OTLP endpoint too, so every link of a pattern span resolves there."""

    def __init__(self, endpoint: str | None, protocol: str | None, timeout_millis: int) -> None:
        capacity = CHECKOUTS + BATCHES
        self.ledger = Ledger(threading.Lock(), max_items=capacity, max_bytes=2**62)  # counts exported / failed
        self.exporter = CountingExporter(_otlp_exporter("traces", endpoint, protocol, None, None,
                                                        timeout_millis / 1000),
                                         SpanExportResult.SUCCESS, self.ledger, lambda _span: 0)
        self.processor = BatchSpanProcessor(self.exporter, max_queue_size=capacity,
                                            max_export_batch_size=512)

    def close(self, timeout_s: float) -> None:
        """Flush within ``timeout_s``; a backend that does not answer by then is abandoned."""
        if _run_bounded([lambda: self.processor.force_flush(int(timeout_s * 1000))],
                        time.monotonic() + timeout_s):
            self.exporter.interrupt()  # wakes an export sleeping in its retry back-off
        self.processor.shutdown()


def run_demo(args: argparse.Namespace) -> int:
    try:
        config = demo_config(args)
        resource = Resource.create({"service.name": "crackle-demo-shop"})
        emitter = build_emitter(config, resource, endpoint=args.otlp_endpoint, protocol=args.otlp_protocol)
        workload_export = (_WorkloadExport(args.otlp_endpoint, args.otlp_protocol, config.export_timeout_millis)
                           if config.exporter == "otlp" else None)
    except (CrackleConfigError, ValueError) as error:
        print(f"crackle-otel demo: {error}", file=sys.stderr)
        return 2
    provider = TracerProvider(resource=resource)
    if workload_export is not None:
        provider.add_span_processor(workload_export.processor)
    saved = None
    if args.save_spans:
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        saved = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(saved))
    processor = CrackleSpanProcessor(emitter, config=config)
    provider.add_span_processor(processor)
    over_otlp = config.exporter == "otlp"
    target = args.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "the default OTLP endpoint"
    print(f"firing a simulated shop service: {CHECKOUTS} checkouts, {BATCHES} batches "
          "(checkout slows 2x halfway; host shop-7 is 3x slower; batches lose records after 70%)"
          + (f"; spans and patterns go to {target}" if over_otlp else ""),
          end="\n" if over_otlp else "\n\n")  # console patterns get a blank line either side
    started = time.perf_counter()
    spans = run_workload(provider.get_tracer("crackle-demo"), seed=args.seed)
    # Cooling, then delivery of the patterns and of the workload, side by side: a dead backend
    # costs one export timeout, not one per signal.
    timeout_s = config.export_timeout_millis / 1000
    closing = [lambda: processor.shutdown(timeout_millis=_COOL_BUDGET_MILLIS + config.export_timeout_millis)]
    if workload_export is not None:
        closing.append(lambda: workload_export.close(timeout_s))
    _run_bounded(closing, time.monotonic() + _COOL_BUDGET_MILLIS / 1000 + timeout_s + 2)
    elapsed = time.perf_counter() - started
    stats = processor.stats()
    if config.exporter == "console":
        print()
    print(f"{spans} spans ended, {stats['spans_recorded']} recorded, {stats['spans_dropped']} dropped, "
          f"{stats['groups']} groups, {stats['patterns_detected']} patterns detected, "
          f"{stats['patterns_reported']} reported in {elapsed:.2f} s")
    if saved is not None:
        try:
            count = save_spans(saved.get_finished_spans(), args.save_spans)
        except OSError as error:
            print(f"crackle-otel demo: cannot write {args.save_spans}: {error}", file=sys.stderr)
            return 1
        print(f"{count} spans saved to {args.save_spans} (OTLP JSON lines: crackle-otel analyze {args.save_spans})")
    if workload_export is None or emitter is None:
        return 0
    exported, failed = workload_export.ledger.exported, workload_export.ledger.failed
    patterns = Delivery.of(emitter.stats())
    print(f"to {target}: {exported} of {spans} workload spans exported ({failed} failed, "
          f"{spans - exported - failed} not sent); {patterns.describe()}")
    if exported == 0 and patterns.nothing_delivered:
        print(f"crackle-otel demo: nothing reached {target}: is a backend listening there?", file=sys.stderr)
        return 1
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="workload random seed")
    parser.add_argument("--profile", choices=["fast", "default", "slow"], default=None,
                        help="cooling profile (default: CRACKLE_PROFILE, then default)")
    parser.add_argument("--otlp-endpoint", help="send the workload's spans and the patterns to this OTLP endpoint "
                                                "(e.g. http://localhost:4317) instead of printing the patterns")
    parser.add_argument("--otlp-protocol", choices=["grpc", "http/protobuf"], default=None,
                        help="OTLP protocol (default: OTEL_EXPORTER_OTLP_PROTOCOL, else grpc)")
    parser.add_argument("--save-spans", metavar="FILE",
                        help="also write the demo's spans to FILE as OTLP JSON lines, for crackle-otel analyze")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    sys.exit(run_demo(parser.parse_args()))
