"""Stress: the span processor's budget, deadlines and memory under a busy host.

- the cooler's CPU budget is charged in its own CPU time, not in time it spends waiting;
- ``force_flush`` and ``shutdown`` keep their timeout (+0.5 s) while the app keeps ending
  spans into full kilns: a cool gives way at a safe point;
- the pending queue is bounded in bytes: a span with a huge attribute is kept as a compact view;
- extreme but valid values (1e308) cool without a numpy warning.
"""

from __future__ import annotations

import gc
import random
import threading
import time
import tracemalloc
import warnings

import numpy as np
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from crackle_otel import Kiln, ThermalProfile
from crackle_otel.otel.config import CrackleConfig
from crackle_otel.otel.furnace import Furnace
from crackle_otel.otel.kept_spans import MAX_KEPT_SPAN_BYTES
from crackle_otel.otel.processor import CrackleSpanProcessor
from test_processor import wait_until


def processor_on_provider(**config) -> tuple[CrackleSpanProcessor, TracerProvider]:
    processor = CrackleSpanProcessor(None, config=CrackleConfig(exporter="none", **config))
    provider = TracerProvider(resource=Resource.create({"service.name": "stress"}))
    provider.add_span_processor(processor)
    return processor, provider


def test_time_the_cooler_spends_waiting_is_not_charged_to_its_cpu_budget():
    # Extraction that waits 20 ms per span (as a cooler does while the app holds the GIL) but uses
    # no CPU. Charged on wall time, the first 10 spans (0.2 s) would pause the cooler for 1.8 s
    # (share 0.1) before the next 10; charged on CPU time the next 10 are recorded at once.
    def slow_group(view):
        time.sleep(0.02)
        return "waits"

    processor, provider = processor_on_provider(max_cooler_share=0.1, drain_batch_size=1, max_queue_size=100,
                                                group_by=slow_group, cool_interval_millis=3_600_000)
    tracer = provider.get_tracer("t")
    try:
        for wave in range(2):
            for i in range(10):
                tracer.start_span("op", attributes={"x": i}).end()
            assert wait_until(lambda: processor.stats()["spans_recorded"] == 10 * (wave + 1), 1.2), processor.stats()
    finally:
        processor.shutdown(100)
        provider.shutdown()


def fill_kilns(tracer, groups: int, per_group: int = 4096) -> None:
    rng = random.Random(7)
    for g in range(groups):
        for i in range(per_group):
            tracer.start_span(f"op{g}", attributes={f"m{j}": rng.random() * (j + 1) + (i % 40) * (j % 3)
                                                     for j in range(24)}).end()


@pytest.fixture
def loaded():
    """Two full kilns (4096 spans x 24 attributes) and an app thread that keeps ending spans into them."""
    processor, provider = processor_on_provider(max_cooler_share=1.0, max_queue_size=16_384, drain_batch_size=512,
                                                cool_interval_millis=3_600_000)
    tracer = provider.get_tracer("t")
    fill_kilns(tracer, groups=2)
    assert wait_until(lambda: processor.stats()["spans_recorded"] == 2 * 4096, 120)
    stop = threading.Event()

    def app() -> None:
        i = 0
        while not stop.is_set():
            tracer.start_span(f"op{i % 2}", attributes={f"m{j}": (i * 7919 + j) % 101 for j in range(24)}).end()
            i += 1

    thread = threading.Thread(target=app, daemon=True)
    thread.start()
    time.sleep(0.3)
    yield processor
    stop.set()
    thread.join()
    processor.shutdown(100)  # not the provider's 30 s: the final cool is not what is tested here
    provider.shutdown()


def test_force_flush_keeps_its_timeout_under_load(loaded):
    started = time.monotonic()
    loaded.force_flush(500)
    assert time.monotonic() - started <= 0.5 + 0.5


def test_shutdown_keeps_its_timeout_under_load(loaded):
    started = time.monotonic()
    loaded.shutdown(700)
    assert time.monotonic() - started <= 0.7 + 0.5
    stats = loaded.stats()  # what did not fit is still accounted for
    assert stats["spans_ended"] == (stats["spans_recorded"] + stats["spans_dropped"] + stats["spans_skipped_own"]
                                    + stats["spans_rejected"] + stats["spans_overflowed"] + stats["spans_pending"])


def test_an_interrupted_group_keeps_its_tasks_for_the_next_cool():
    furnace = Furnace(CrackleConfig(exporter="none", kiln_capacity=800))
    rng = random.Random(5)
    for group in ("a", "b"):
        for i in range(800):
            x = rng.gauss(0, 1)
            furnace.record(group, "op", {"x": x, "y": 2 * x + rng.gauss(0, 0.1), "z": float(i > 400)},
                           timestamp=1.7e9 + i)
    checkpoints = []

    def stop_after_ten() -> bool:
        checkpoints.append(1)
        return len(checkpoints) > 10

    assert furnace.cool(should_stop=stop_after_ten) == []  # stopped inside the first group's detectors
    stats = furnace.stats()
    assert (stats["cools_interrupted"], stats["cools_skipped"], stats["patterns_detected"]) == (1, 1, 0)
    assert furnace.has_filled_groups  # both groups are still due
    reported = furnace.cool()
    assert {pattern.group for pattern in reported} == {"a", "b"}
    assert not furnace.has_filled_groups


def test_huge_attribute_values_are_not_held_while_pending():
    processor, provider = processor_on_provider(max_queue_size=600, drain_batch_size=600,
                                                cool_interval_millis=3_600_000)
    tracer = provider.get_tracer("t")
    try:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(400):  # fewer than drain_batch_size: all of them wait in the queue
            body = f"{i:06d}" + "x" * (256 * 1024)  # a distinct 256 KiB string per span
            tracer.start_span("POST /upload", attributes={"http.request.body": body, "bytes": 262_144 + i,
                                                          "tags": ("a" * 40_000,)}).end()
            del body
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert processor.stats()["spans_pending"] >= 350  # (the very first span wakes the cooler)
        assert held < 400 * MAX_KEPT_SPAN_BYTES, f"{held / 2**20:.0f} MiB held for 400 pending spans"
        processor.force_flush(30_000)
        stats = processor.stats()
        assert stats["spans_recorded"] == 400 and stats["spans_trimmed"] == 400
        (group,) = processor.group_names()
        assert "bytes" in processor.group_snapshot(group).metric_names  # numbers survive the trim
    finally:
        provider.shutdown()


@pytest.mark.parametrize("profile", [ThermalProfile.fast_cooling(), ThermalProfile.default()])
def test_extreme_but_valid_values_cool_without_numpy_warnings(profile, capfd):
    rng = np.random.default_rng(3)
    kiln = Kiln(profile, capacity=1000, seal_on_cool=False)
    for i in range(600):
        x = float(rng.normal())
        kiln.record("t", {"huge": 1e308 if i % 2 else -1e308, "level": 1e308 if i > 300 else 1.0,
                          "scaled": x * 1e300, "tiny": 1e-308 * float(rng.random()), "x": x}, timestamp=1.7e9 + i)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any Python-level warning fails the test
        kiln.cool()
    assert "Warning" not in capfd.readouterr().err
