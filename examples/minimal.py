"""The smallest crackle set-up: an SDK TracerProvider, one configure() call, spans, patterns.

    python examples/minimal.py

A "resize" operation takes ~20 ms, then gets ~2.5x slower halfway through.
Spans carry explicit start/end times so the script runs in about a second.
Shutting the provider down makes crackle cool what it holds and print the patterns.
"""

import random
import time

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from crackle_otel.otel.setup import configure

provider = TracerProvider(resource=Resource.create({"service.name": "minimal"}))
configure(provider, exporter="console")  # patterns printed to stdout (exporter="otlp" sends them to a backend)
tracer = provider.get_tracer("minimal")

rng = random.Random(1)
now_ns = time.time_ns()
for i in range(1000):
    slow = i >= 500
    duration_ms = rng.lognormvariate(3.0, 0.2) * (2.5 if slow else 1.0)  # ~20 ms, then ~50 ms
    span = tracer.start_span("resize", start_time=now_ns)
    span.set_attribute("image.kb", rng.randint(50, 500))
    span.end(end_time=now_ns + int(duration_ms * 1e6))
    now_ns += 100_000_000  # one request every 100 ms of simulated time

provider.shutdown()  # crackle cools, prints, stops
