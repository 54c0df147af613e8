"""CrackleMetricReader: each MeterProvider collection is one fired task; patterns across collections go out."""

from __future__ import annotations

import io
import os
import threading
import time

import numpy as np
import pytest
from opentelemetry.sdk.metrics import MeterProvider

from crackle_otel import detect
from crackle_otel.otel.emit import INSTRUMENTATION_SCOPE, ConsoleEmitter
from crackle_otel.otel.reader import CrackleMetricReader, stream_name
from crackle_otel.patterns import Pattern, PatternKind


class RecordingEmitter:
    """Keeps what it is sent; same interface as PatternEmitter."""

    def __init__(self) -> None:
        self.patterns: list[Pattern] = []
        self.flushes = 0

    def emit(self, patterns):
        self.patterns.extend(patterns)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self.flushes += 1
        return True

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        pass

    def stats(self):
        return {"patterns_emitted": len(self.patterns), "patterns_dropped": 0}


@pytest.fixture
def manual_reader():
    emitter = RecordingEmitter()
    reader = CrackleMetricReader(emitter=emitter, export_interval_millis=0, cool_every=1_000)
    provider = MeterProvider(metric_readers=[reader])
    yield reader, provider.get_meter("shop"), emitter
    provider.shutdown()


def test_each_collection_is_one_task_with_one_metric_per_data_point(manual_reader):
    reader, meter, _ = manual_reader
    requests = meter.create_counter("requests")
    active = meter.create_up_down_counter("active")
    temperature = meter.create_gauge("temperature")
    latency = meter.create_histogram("latency")

    requests.add(5, {"route": "/a"})
    requests.add(1, {"route": "/b"})
    active.add(3)
    temperature.set(20.5)
    for value in (1, 2, 3):
        latency.record(value)
    reader.collect()
    requests.add(7, {"route": "/a"})
    active.add(-1)
    temperature.set(22.0)
    latency.record(10)
    reader.collect()

    matrix = reader.kiln.snapshot()
    assert matrix.n_tasks == 2
    assert set(matrix.metric_names) == {
        "requests{route=/a}",
        "requests{route=/a}.rate",
        "requests{route=/b}",
        "requests{route=/b}.rate",
        "active",
        "temperature",
        "latency.count",
        "latency.mean",
    }
    column = {name: matrix.column(name).tolist() for name in matrix.metric_names}
    assert column["requests{route=/a}"] == [5, 12]  # cumulative, as reported
    assert column["requests{route=/a}.rate"] == [5, 7]  # what moved in each interval
    assert column["requests{route=/b}.rate"] == [1, 0]  # a quiet interval is 0, not missing
    assert column["active"] == [3, 2]
    assert column["temperature"] == [20.5, 22.0]
    assert column["latency.count"] == [3, 1]  # observations in each interval
    assert column["latency.mean"] == [2.0, 10.0]  # their mean, not the all-time mean (3.0... 4.0)
    assert reader.stats()["collections"] == 2


def test_streams_beyond_the_cap_are_counted_not_stored():
    reader = CrackleMetricReader(export_interval_millis=0, max_streams=3)
    provider = MeterProvider(metric_readers=[reader])
    try:
        gauge = provider.get_meter("m").create_gauge("queue_depth")
        for queue in range(5):
            gauge.set(queue, {"queue": f"q{queue}"})
        reader.collect()
        reader.collect()
        stats = reader.stats()
        assert stats["streams"] == 3
        assert stats["streams_overflowed"] == 4  # 2 streams x 2 collections
        assert len(reader.kiln.snapshot().metric_names) == 3
    finally:
        provider.shutdown()


def test_stream_names_are_sorted_bounded_and_stay_distinct():
    assert stream_name("http.requests", {"status": 500, "route": "/a"}) == "http.requests{route=/a,status=500}"
    assert stream_name("m", {"tags": ("a", "b")}) == "m{tags=[a,b]}"
    long_a = stream_name("m", {"url": "/x" * 200 + "a"}, max_length=60)
    long_b = stream_name("m", {"url": "/x" * 200 + "b"}, max_length=60)
    assert len(long_a) <= 60 and len(long_b) <= 60
    assert long_a != long_b
    assert long_a == stream_name("m", {"url": "/x" * 200 + "a"}, max_length=60)  # stable


def test_crackle_own_instruments_are_not_analysed():
    reader = CrackleMetricReader(export_interval_millis=0)
    provider = MeterProvider(metric_readers=[reader])
    try:
        provider.get_meter(INSTRUMENTATION_SCOPE).create_counter("crackle.spans.recorded").add(3)
        provider.get_meter("app").create_counter("orders").add(1)
        reader.collect()
        assert reader.kiln.snapshot().metric_names == ("orders", "orders.rate")
    finally:
        provider.shutdown()


def drive_shop_workload(reader, meter, collections: int = 80, shift_at: int = 40, seed: int = 7) -> None:
    """Load drives requests and latency together; temperature steps up halfway; the rest is noise."""
    rng = np.random.default_rng(seed)
    requests = meter.create_counter("shop.requests")
    active = meter.create_up_down_counter("shop.active_sessions")
    temperature = meter.create_gauge("host.temperature")
    latency = meter.create_histogram("shop.latency_ms")
    active_level = 50.0
    active.add(active_level)
    for step in range(collections):
        load = rng.uniform(20, 100)
        requests.add(int(load))
        new_level = rng.normal(50, 5)  # stationary, independent of everything else
        active.add(new_level - active_level)
        active_level = new_level
        temperature.set(60.0 + (15.0 if step >= shift_at else 0.0) + rng.normal(0, 1.0))
        for _ in range(5):
            latency.record(20 + 0.8 * load + rng.normal(0, 3))
        reader.collect()


def involves(pattern: Pattern, *fragments: str) -> bool:
    return all(any(fragment in metric for metric in pattern.metrics) for fragment in fragments)


def test_a_gauge_shift_and_a_moving_pair_are_emitted_as_patterns(manual_reader):
    """Waits on the phase-transition and correlation detectors (placeholders return [])."""
    reader, meter, emitter = manual_reader
    drive_shop_workload(reader, meter)
    assert reader.force_flush(5_000)

    assert all(p.group == "metrics" for p in emitter.patterns)
    shifts = [p for p in emitter.patterns if p.kind is PatternKind.PHASE_TRANSITION]
    assert any(involves(p, "host.temperature") for p in shifts), [str(p) for p in emitter.patterns]
    pairs = [p for p in emitter.patterns if p.kind is PatternKind.CORRELATION]
    assert any(involves(p, "shop.requests", "shop.latency_ms.mean") for p in pairs), [
        str(p) for p in emitter.patterns
    ]
    # The stationary, independent noise is not said to move with anything.
    assert not any(involves(p, "shop.active_sessions") for p in pairs)


def test_console_emitter_shows_metric_patterns(manual_reader):
    """Waits on the phase-transition detector (placeholder returns [])."""
    reader, meter, _ = manual_reader
    out = io.StringIO()
    reader.emitter = ConsoleEmitter(out)
    drive_shop_workload(reader, meter)
    reader.force_flush(5_000)
    assert "[phase transition]" in out.getvalue()
    assert "group=metrics" in out.getvalue()


@pytest.fixture
def scripted_detector(monkeypatch):
    """Replace the detectors by one whose finding follows the data, to test the reader's bookkeeping.

    (This stands in for crackle's own detectors, not for anything of OpenTelemetry.)
    """

    def detect_level(matrix, profile):
        if "level" not in matrix.metric_names:
            return []
        latest = matrix.column("level")[-1]
        if latest < 0:
            return []  # the pattern goes away
        return [Pattern(PatternKind.PHASE_TRANSITION, f"level is now {latest:g}", 0.9, ("level",),
                        statistics={"level": latest}, key="level")]

    monkeypatch.setattr(detect, "DETECTORS", {"scripted": ("phase_transitions", detect_level)})


def test_standing_patterns_are_emitted_when_new_or_changed(scripted_detector):
    emitter = RecordingEmitter()
    reader = CrackleMetricReader(emitter=emitter, export_interval_millis=0, cool_every=10)
    provider = MeterProvider(metric_readers=[reader])
    gauge = provider.get_meter("m").create_gauge("level")
    try:

        def collections(value: float, count: int) -> None:
            gauge.set(value)
            for _ in range(count):
                reader.collect()

        collections(1, 10)  # the 10th collection cools: the pattern appears
        assert [p.description for p in emitter.patterns] == ["level is now 1"]
        collections(1, 10)  # still standing, unchanged: not sent again
        assert len(emitter.patterns) == 1
        collections(2, 10)  # changed
        collections(-1, 10)  # gone
        collections(2, 10)  # back: news again
        assert [p.description for p in emitter.patterns] == ["level is now 1", "level is now 2", "level is now 2"]
        assert all(p.group == "metrics" for p in emitter.patterns)
        assert reader.stats()["cools"] == 5
        assert reader.stats()["patterns_emitted"] == 3
    finally:
        provider.shutdown()


def test_meter_provider_shutdown_cools_and_emits_what_is_left(scripted_detector):
    emitter = RecordingEmitter()
    reader = CrackleMetricReader(emitter=emitter, export_interval_millis=0, cool_every=1_000)
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("m").create_gauge("level").set(3)
    for _ in range(9):
        reader.collect()
    assert emitter.patterns == []
    provider.shutdown()
    assert [p.description for p in emitter.patterns] == ["level is now 3"]
    assert reader.stats()["collections"] == 10  # the last collection was taken at shutdown
    assert emitter.flushes == 1
    reader.collect()  # after shutdown: ignored, no error
    assert reader.stats()["collections"] == 10


class BrokenEmitter(RecordingEmitter):
    def emit(self, patterns):
        raise RuntimeError("backend client bug")

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        raise RuntimeError("backend client bug")


def test_a_failing_emitter_never_reaches_the_sdk(scripted_detector):
    reader = CrackleMetricReader(emitter=BrokenEmitter(), export_interval_millis=0, cool_every=10)
    provider = MeterProvider(metric_readers=[reader])
    try:
        provider.get_meter("m").create_gauge("level").set(1)
        for _ in range(10):
            reader.collect()  # the 10th cools and emits into the broken emitter
        assert reader.force_flush(1_000) is False
        assert provider.force_flush(1_000)
        assert reader.stats()["errors"] >= 3
    finally:
        provider.shutdown()


def test_the_timer_collects_on_its_own_and_stops_on_shutdown():
    reader = CrackleMetricReader(export_interval_millis=20, cool_every=5)
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("m").create_gauge("level").set(1)
    deadline = time.monotonic() + 5
    while reader.stats()["cools"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert reader.stats()["collections"] >= 5
    assert reader.stats()["cools"] >= 1
    started = time.monotonic()
    provider.shutdown(timeout_millis=2_000)
    assert time.monotonic() - started < 2.0
    assert not any(t.name == "CrackleMetricReader" and t.is_alive() for t in threading.enumerate())
    settled = reader.stats()["collections"]
    time.sleep(0.1)
    assert reader.stats()["collections"] == settled


def test_invalid_options_are_rejected_clearly():
    with pytest.raises(ValueError, match="export_interval_millis"):
        CrackleMetricReader(export_interval_millis=-1)
    with pytest.raises(ValueError, match="cool_every"):
        CrackleMetricReader(export_interval_millis=0, cool_every=0)
    with pytest.raises(ValueError, match="max_streams"):
        CrackleMetricReader(export_interval_millis=0, max_streams=0)


def test_metric_patterns_reach_an_otlp_backend():
    """Waits on the phase-transition detector (placeholder returns [])."""
    otlp_sink = pytest.importorskip("otlp_sink", reason="tests/otlp_sink.py (OTLP receiver) not available")
    from crackle_otel.otel.emit import PatternEmitter

    with otlp_sink.OTLPSink() as sink:
        emitter = PatternEmitter.otlp(endpoint=sink.grpc_endpoint, protocol="grpc", insecure=True)
        reader = CrackleMetricReader(emitter=emitter, export_interval_millis=0, cool_every=1_000)
        provider = MeterProvider(metric_readers=[reader])
        try:
            drive_shop_workload(reader, provider.get_meter("shop"))
            assert reader.force_flush(5_000)
            (span,) = sink.wait_for_spans(lambda s: s.name == "crackle.pattern phase_transition")
            assert span.attributes["crackle.pattern.group"] == "metrics"
            assert "host.temperature" in span.attributes["crackle.pattern.metrics"]
            assert span.links == () and span.attributes["crackle.pattern.involved_count"] > 0
            (event,) = sink.wait_for_log_records(lambda r: r.span_id == span.span_id)
            assert event.event_name == "crackle.pattern"
        finally:
            provider.shutdown()
            emitter.shutdown(2_000)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_the_timer_runs_again_in_a_forked_child():
    reader = CrackleMetricReader(export_interval_millis=20, cool_every=1_000)
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("m").create_gauge("level").set(1)
    try:
        pid = os.fork()
        if pid == 0:  # child: its own timer must keep collecting
            before = reader.stats()["collections"]
            deadline = time.monotonic() + 3
            while reader.stats()["collections"] < before + 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            os._exit(0 if reader.stats()["collections"] >= before + 3 else 1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.waitstatus_to_exitcode(status) == 0
                break
            time.sleep(0.05)
        else:
            os.kill(pid, 9)
            pytest.fail("forked child hung")
    finally:
        provider.shutdown()
