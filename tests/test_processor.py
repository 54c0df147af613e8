"""CrackleSpanProcessor on a real SDK TracerProvider: grouping, accounting, cooling, de-duplication, fork."""

from __future__ import annotations

import io
import os
import random
import threading
import time

import numpy as np
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

from crackle_otel.otel.config import CrackleConfig
from crackle_otel.otel.emit import INSTRUMENTATION_SCOPE, ConsoleEmitter, PatternEmitter
from crackle_otel.otel.furnace import Furnace
from crackle_otel.otel.processor import CrackleSpanProcessor, changed_materially
from crackle_otel.otel.setup import configure
from crackle_otel.patterns import Pattern, PatternKind

SERVICE = "checkout"
GROUP = "checkout | GET /cart"


def provider_with(processor: CrackleSpanProcessor, **kwargs) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}), **kwargs)
    provider.add_span_processor(processor)
    return provider


def quiet_processor(emitter=None, **kwargs) -> CrackleSpanProcessor:
    """A processor that cools only when asked (no interval or fill cool during a test)."""
    settings = dict(profile="fast", cool_interval_millis=3_600_000, exporter="none")
    settings.update(kwargs)
    return CrackleSpanProcessor(emitter, **settings)


def run_latency_shift(tracer, n_before=400, n_after=400, seed=7, name="GET /cart"):
    """Spans 20 ms +- 2 then 60 ms +- 4 (a latency shift), 10 ms apart, ending now. Returns identities."""
    rng = random.Random(seed)
    start = time.time_ns() - (n_before + n_after) * 10_000_000
    identities = []
    for i in range(n_before + n_after):
        latency_ms = rng.gauss(20, 2) if i < n_before else rng.gauss(60, 4)
        begin = start + i * 10_000_000
        span = tracer.start_span(name, start_time=begin, attributes={"records_in": 100 + rng.randint(0, 5)})
        span.end(end_time=begin + int(latency_ms * 1e6))
        identities.append((span.context.trace_id, span.context.span_id))
    return identities


def accounted(stats) -> int:
    return sum(
        stats[k]
        for k in (
            "spans_recorded",
            "spans_dropped",
            "spans_skipped_own",
            "spans_rejected",
            "spans_overflowed",
            "spans_pending",
        )
    )


def wait_until(condition, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# --------------------------------------------------------------- accounting
def test_spans_are_grouped_by_service_and_name_and_accounted():
    processor = quiet_processor()
    provider = provider_with(processor)
    tracer = provider.get_tracer("shop")
    for i in range(150):
        with tracer.start_as_current_span("GET /cart", attributes={"items": i % 7}):
            pass
        with tracer.start_as_current_span("POST /pay"):
            pass
    assert processor.force_flush()
    stats = processor.stats()
    assert stats["spans_ended"] == 300
    assert stats["spans_recorded"] == 300
    assert stats["spans_dropped"] == stats["spans_pending"] == 0
    assert stats["groups"] == 2
    assert sorted(processor.group_names()) == ["checkout | GET /cart", "checkout | POST /pay"]
    window = processor.group_snapshot(GROUP)
    assert window.n_tasks == 150
    assert {"duration_ms", "is_error", "event_count", "link_count", "items"} <= set(window.metric_names)
    provider.shutdown()


class RecordOnlySampler(Sampler):
    """Records every span but does not sample it (sampled flag off): it still reaches on_end."""

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None, trace_state=None):
        return SamplingResult(Decision.RECORD_ONLY, attributes)

    def get_description(self) -> str:
        return "RecordOnlySampler"


def test_unsampled_spans_are_ignored():
    processor = quiet_processor()
    provider = provider_with(processor, sampler=RecordOnlySampler())
    tracer = provider.get_tracer("shop")
    for _ in range(20):
        tracer.start_span("GET /cart").end()
    processor.force_flush()
    assert processor.stats()["spans_ended"] == 0
    assert processor.stats()["spans_recorded"] == 0
    provider.shutdown()


def test_own_pattern_spans_are_never_analysed():
    processor = quiet_processor()
    provider = provider_with(processor)
    for _ in range(10):
        provider.get_tracer(INSTRUMENTATION_SCOPE).start_span("crackle.pattern outlier").end()
        provider.get_tracer("shop").start_span("GET /cart").end()
    processor.force_flush()
    stats = processor.stats()
    assert stats["spans_skipped_own"] == 10
    assert stats["spans_recorded"] == 10
    assert processor.group_names() == [GROUP]
    provider.shutdown()


def test_group_cap_counts_overflow_and_metric_cap_counts_rejected_names():
    processor = quiet_processor(max_groups=2, max_metrics_per_group=6)
    provider = provider_with(processor)
    tracer = provider.get_tracer("shop")
    for name in ("a", "b", "c", "d"):
        for _ in range(5):
            # 4 built-in metrics + 4 attributes: 2 names over the cap per span
            tracer.start_span(name, attributes={"m1": 1, "m2": 2, "m3": 3, "m4": 4}).end()
    processor.force_flush()
    stats = processor.stats()
    assert stats["groups"] == 2
    assert stats["spans_recorded"] == 10
    assert stats["spans_overflowed"] == 10
    assert stats["metric_names_rejected"] == 2 * 10
    assert accounted(stats) == stats["spans_ended"] == 20
    provider.shutdown()


def test_full_buffer_drops_the_oldest_spans_and_counts_them():
    # The cooler drains once, then pauses for ~forever (share 1e-6): the buffer overflows.
    processor = quiet_processor(max_queue_size=16, drain_batch_size=16, max_cooler_share=1e-6)
    provider = provider_with(processor)
    tracer = provider.get_tracer("shop")
    identities = []
    for i in range(200):
        span = tracer.start_span("GET /cart", attributes={"i": i})
        span.end()
        identities.append((span.context.trace_id, span.context.span_id))
    processor.force_flush()
    stats = processor.stats()
    assert stats["spans_ended"] == 200
    assert stats["spans_recorded"] + stats["spans_dropped"] == 200
    assert stats["spans_dropped"] >= 200 - 32
    window = processor.group_snapshot(GROUP)
    assert list(window.identities[-16:]) == identities[-16:]  # the newest survive
    provider.shutdown()


def test_accounting_is_exact_with_eight_threads_and_a_small_buffer():
    processor = quiet_processor(max_queue_size=64, drain_batch_size=32)
    provider = provider_with(processor)
    tracer = provider.get_tracer("shop")

    def work():
        for _ in range(2000):
            tracer.start_span("GET /cart").end()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    processor.force_flush()
    stats = processor.stats()
    assert stats["spans_ended"] == 16_000
    assert stats["spans_recorded"] + stats["spans_dropped"] == 16_000
    assert stats["spans_pending"] == 0
    provider.shutdown()


def test_on_end_never_raises_and_spans_after_shutdown_are_dropped():
    processor = quiet_processor()
    provider = provider_with(processor)
    processor.on_end(None)  # garbage in: swallowed, not raised into Span.end()
    processor.on_end(object())
    tracer = provider.get_tracer("shop")
    tracer.start_span("GET /cart").end()
    provider.shutdown()
    for _ in range(5):
        tracer.start_span("GET /cart").end()
    stats = processor.stats()
    assert stats["spans_recorded"] == 1
    assert stats["spans_ended"] == 6 and stats["spans_dropped"] == 5
    assert processor.force_flush() is False
    processor.shutdown()  # idempotent


def test_a_sampled_span_the_processor_cannot_read_is_counted_as_dropped():
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.trace import SpanKind

    from crackle_otel.otel.simulate import readable_span

    processor = quiet_processor()
    nameless = readable_span(None, 1, 2, 0, 0, 1_000_000, Resource({"service.name": "shop"}), SpanKind.SERVER)
    processor.on_end(nameless)  # a sampled span whose size cannot be measured: swallowed, and counted
    assert processor.force_flush()
    stats = processor.stats()
    assert stats["spans_ended"] == 1 and stats["spans_dropped"] == 1 and stats["spans_recorded"] == 0
    processor.shutdown()


# ------------------------------------------------------------------ cooling
def test_cooler_cools_a_group_once_half_its_window_is_new():
    processor = quiet_processor(kiln_capacity=200, drain_batch_size=10)
    provider = provider_with(processor)
    run_latency_shift(provider.get_tracer("shop"), n_before=60, n_after=60)
    assert wait_until(lambda: processor.stats()["cools"] >= 1), processor.stats()
    provider.shutdown()


def test_cooler_cools_every_interval():
    processor = quiet_processor(cool_interval_millis=100)
    provider = provider_with(processor)
    tracer = provider.get_tracer("shop")
    for _ in range(20):  # fewer than drain_batch_size: only the interval drains and cools
        tracer.start_span("GET /cart").end()
    assert wait_until(lambda: processor.stats()["cools"] >= 1 and processor.stats()["spans_pending"] == 0)
    assert processor.stats()["spans_recorded"] == 20
    provider.shutdown()


def test_shutdown_cools_what_is_left_bounded_and_stops_the_thread():
    processor = quiet_processor()
    provider = provider_with(processor)
    run_latency_shift(provider.get_tracer("shop"), n_before=50, n_after=50)
    started = time.monotonic()
    processor.shutdown(timeout_millis=20_000)
    assert time.monotonic() - started < 20
    assert processor.stats()["cools"] == 1
    assert processor.stats()["spans_recorded"] == 100
    assert not processor._thread.is_alive()


# ---------------------------------------------------- patterns (need detectors)
def test_latency_shift_is_reported_with_its_group_and_links_to_real_spans():
    stream = io.StringIO()
    processor = quiet_processor(ConsoleEmitter(stream))
    provider = provider_with(processor)
    identities = set(run_latency_shift(provider.get_tracer("shop")))
    processor.force_flush()
    shifts = [
        p
        for p in processor.reported_patterns()
        if p.kind is PatternKind.PHASE_TRANSITION and "duration_ms" in p.metrics
    ]
    assert shifts, [str(p) for p in processor.reported_patterns()]
    assert all(p.group == GROUP for p in processor.reported_patterns())
    assert all(task.identity in identities for p in shifts for task in p.involved)
    assert "phase transition" in stream.getvalue() and GROUP in stream.getvalue()
    assert processor.stats()["patterns_exported"] == len(processor.reported_patterns())
    provider.shutdown()


def test_a_standing_pattern_is_not_reported_again_every_cool():
    processor = quiet_processor()
    provider = provider_with(processor)
    tracer = provider.get_tracer("shop")
    run_latency_shift(tracer, seed=1)
    processor.force_flush()
    first = {p.key for p in processor.reported_patterns() if p.kind is PatternKind.PHASE_TRANSITION}
    assert first
    # 50 more spans of the new regime: the same shift is still in the window, nothing new to say.
    rng = random.Random(2)
    for _ in range(50):
        begin = time.time_ns()
        span = tracer.start_span("GET /cart", start_time=begin, attributes={"records_in": 100 + rng.randint(0, 5)})
        span.end(end_time=begin + int(rng.gauss(60, 4) * 1e6))
    before = len(processor.reported_patterns())
    processor.force_flush()
    again = [p for p in processor.reported_patterns()[before:] if p.key in first]
    assert not again, [str(p) for p in again]
    assert processor.stats()["patterns_repeated"] >= len(first)
    provider.shutdown()


def test_pattern_spans_link_to_workload_spans_and_are_not_analysed():
    exporter = InMemorySpanExporter()
    emitter = PatternEmitter(span_exporter=exporter)
    processor = quiet_processor(emitter)
    provider = provider_with(processor)
    identities = set(run_latency_shift(provider.get_tracer("shop")))
    assert processor.force_flush()
    pattern_spans = exporter.get_finished_spans()
    assert pattern_spans
    for span in pattern_spans:
        assert span.instrumentation_scope.name == INSTRUMENTATION_SCOPE
        assert span.attributes["crackle.pattern.group"] == GROUP
        for link in span.links:
            assert (link.context.trace_id, link.context.span_id) in identities
    assert processor.stats()["spans_recorded"] == len(identities)  # pattern spans never came back in
    provider.shutdown()


# ----------------------------------------------------------- de-duplication
def _pattern(confidence=0.8, **statistics):
    return Pattern(PatternKind.CORRELATION, "a and b move together", confidence, ("a", "b"), statistics or {"r": 0.6})


def test_what_counts_as_a_material_change():
    base = _pattern(0.8, r=0.6, p_value=1e-6, n=400)
    assert not changed_materially(base, _pattern(0.85, r=0.65, p_value=1e-9, n=500))
    assert changed_materially(base, _pattern(0.65, r=0.6, p_value=1e-6, n=400))  # confidence -0.15
    assert changed_materially(base, _pattern(0.8, r=-0.6, p_value=1e-6, n=400))  # sign flipped
    assert not changed_materially(base, _pattern(0.8, r=0.6, p_value=1e-6, n=900))  # a fuller window is no news
    assert not changed_materially(base, _pattern(0.8, r=0.6, p_value=1e-12, n=400))  # p-values left to confidence
    # Positions move as the window slides; the change itself is the same.
    shift = _pattern(0.8, mean_difference_d=2.0, change_index=900, change_timestamp=1e9, change_2_index=1200)
    slid = _pattern(0.8, mean_difference_d=2.1, change_index=300, change_timestamp=1e9, change_2_index=500)
    assert not changed_materially(shift, slid)
    assert changed_materially(shift, _pattern(0.8, mean_difference_d=4.5, change_index=300))  # twice the effect


# ------------------------------------------------------------------- fork
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_survives_fork_the_child_gets_a_fresh_working_processor():
    processor = quiet_processor()
    provider = provider_with(processor)
    tracer = provider.get_tracer("shop")
    for _ in range(30):
        tracer.start_span("GET /cart").end()
    pid = os.fork()
    if pid == 0:  # child: record, flush, report through the exit code
        code = 1
        try:
            identities = set(run_latency_shift(tracer, seed=3))
            ok_flush = processor.force_flush(timeout_millis=60_000)
            stats = processor.stats()
            code = 2
            if ok_flush and processor._thread.is_alive() and stats["spans_ended"] == stats["spans_recorded"] == 800:
                code = 3
                patterns = processor.reported_patterns()
                if patterns and all(t.identity in identities for p in patterns for t in p.involved):
                    code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status)
    assert os.WEXITSTATUS(status) == 0, "child exit code (2: stats/thread wrong, 3: no patterns)"
    processor.force_flush()
    assert processor.stats()["spans_recorded"] == 30  # the parent is untouched
    provider.shutdown()


# ----------------------------------------------------- configure() and metrics
def test_configure_attaches_once_and_exports_own_counters_as_metrics():
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    processor = configure(provider, meter_provider, exporter="console", profile="fast", cool_interval_millis=3_600_000)
    assert isinstance(processor, CrackleSpanProcessor)
    assert isinstance(processor.emitter, ConsoleEmitter)
    assert configure(provider, meter_provider, exporter="console") is processor  # no second processor
    assert configure(TracerProvider(), meter_provider, enabled=False) is None
    tracer = provider.get_tracer("shop")
    rng = np.random.default_rng(1)
    for _ in range(25):  # records in = out + errors: a law to report
        records, errors = int(rng.integers(50, 150)), int(rng.integers(0, 5))
        tracer.start_span("process batch", attributes={"records_in": records, "records_out": records - errors,
                                                       "errors": errors}).end()
    processor.force_flush()
    points = {}
    for resource_metrics in reader.get_metrics_data().resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    points[(metric.name, tuple(sorted(point.attributes.items())))] = point.value
    assert points[("crackle.spans.recorded", ())] == 25
    assert points[("crackle.spans.ended", ())] == 25
    assert points[("crackle.groups", ())] == 1
    assert points[("crackle.spans.skipped", (("crackle.reason", "overflow"),))] == 0
    assert ("crackle.cool.duration", ()) in points
    # The pattern counters add up in the metrics too: detected = reported + suppressed,
    # reported = exported + dropped + pending.
    detected, reported, suppressed = (points[(f"crackle.patterns.{name}", ())]
                                      for name in ("detected", "reported", "suppressed"))
    exported, dropped, pending = (points[(f"crackle.patterns.{name}", ())]
                                  for name in ("exported", "dropped", "pending"))
    assert reported > 0 and detected == reported + suppressed
    assert reported == exported + dropped + pending
    provider.shutdown()
    meter_provider.shutdown()


def test_a_final_cool_gives_the_full_detectors_what_only_had_the_cheap_look():
    """A group that goes quiet right after a cheap look (a service stopped just after its traffic slowed
    down) still gets its full detectors at flush / shutdown / the end of a file."""
    furnace = Furnace(CrackleConfig(exporter="none", kiln_capacity=800))
    rng = random.Random(3)
    start = 1.7e9
    for i in range(400):
        furnace.record("shop | GET /checkout", "op", {"duration_ms": rng.gauss(10, 1)}, timestamp=start + i * 0.01)
    furnace.cool()  # the group's first cool: every detector
    for i in range(400, 700):  # fewer than cool_after, seconds of span time: the next cool is the cheap look
        furnace.record("shop | GET /checkout", "op", {"duration_ms": rng.gauss(30, 1)}, timestamp=start + i * 0.01)
    cheap = furnace.cool()
    assert not [p for p in cheap if p.kind is PatternKind.PHASE_TRANSITION]
    final = furnace.cool(final=True)  # nothing new since the cheap look
    shifts = [p for p in final if p.kind is PatternKind.PHASE_TRANSITION and "duration_ms" in p.metrics]
    assert shifts, [p.description for p in final]
