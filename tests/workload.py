"""The instrumented workload the end-to-end tests share: three problems, each in its own span group.

- ``GET /cart``: a latency shift, 20 ms then 60 ms halfway (a phase transition);
- ``GET /search``: host-7 (~10 %) answers 3x slower with 2x CPU (an attribution; its spans form a cluster);
- ``process batch``: records_out = records_in - errors until records get lost
  from batch 420 on (a conservation violation).
"""

from __future__ import annotations

import time

import numpy as np
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

STEP_NS = 10_000_000  # 10 ms between spans of one group


def end_spans(tracer, name, durations_ms, attributes, identities) -> None:
    """End one span per duration (explicit times, no sleeping); remember their identities."""
    start = time.time_ns() - len(durations_ms) * STEP_NS
    for i, duration in enumerate(durations_ms):
        begin = start + i * STEP_NS
        span = tracer.start_span(name, start_time=begin, attributes={k: v[i] for k, v in attributes.items()})
        span.end(end_time=begin + int(duration * 1e6))
        identities.add((span.context.trace_id, span.context.span_id))


def latency_shift(tracer, identities, rng, name="GET /cart", n=600) -> None:
    durations = np.where(np.arange(n) < n // 2, rng.normal(20, 2, n), rng.normal(60, 4, n))
    end_spans(tracer, name, durations, {"items": rng.integers(1, 6, n).tolist()}, identities)


def slow_host(tracer, identities, rng, name="GET /search", n=1000) -> None:
    hosts = rng.integers(0, 10, n)
    slow = hosts == 7
    attributes = {
        "host.name": [f"host-{h}" for h in hosts],
        "cpu_ms": (rng.normal(30, 4, n) * np.where(slow, 2.0, 1.0)).tolist(),
        "payload_kb": rng.lognormal(np.log(8), 0.3, n).tolist(),
    }
    end_spans(tracer, name, rng.lognormal(np.log(40), 0.15, n) * np.where(slow, 3.0, 1.0), attributes, identities)


def records_lost(tracer, identities, rng, name="process batch", n=600, lost_from=420) -> None:
    records_in = np.round(rng.normal(1000, 30, n))
    errors = rng.poisson(2, n).astype(float)
    lost = np.zeros(n)
    lost[lost_from:] = np.round(np.linspace(5, 300, n - lost_from))
    attributes = {
        "records_in": records_in.astype(int).tolist(),
        "records_out": (records_in - errors - lost).astype(int).tolist(),
        "errors": errors.astype(int).tolist(),
    }
    end_spans(tracer, name, rng.normal(50, 5, n), attributes, identities)


def run_workload(tracer, seed=11) -> set[tuple[int, int]]:
    """The three problems; returns the (trace_id, span_id) of every span ended."""
    rng = np.random.default_rng(seed)
    identities: set[tuple[int, int]] = set()
    latency_shift(tracer, identities, rng)
    slow_host(tracer, identities, rng)
    records_lost(tracer, identities, rng)
    return identities


def send_with_sdk(exporter, service: str, workload) -> set[tuple[int, int]]:
    """Run ``workload(tracer)`` in a provider for ``service`` whose spans go out through ``exporter``."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=4096, max_export_batch_size=512))
    identities = workload(provider.get_tracer("shop.app"))
    assert provider.force_flush(30_000)
    provider.shutdown()
    return identities
