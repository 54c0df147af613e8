"""The kiln core's public API: tasks, outputs, kiln lifecycle, storage bounds, patterns, profiles."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest

from crackle_otel import (
    CoolingRate,
    GlazeLayer,
    InvalidMetricError,
    InvolvedTask,
    Kiln,
    KilnCooledError,
    Pattern,
    PatternKind,
    TaskOutput,
    ThermalProfile,
)


class Sensor:
    def __init__(self, reading: float, sensor_id: str) -> None:
        self.reading = reading
        self.sensor_id = sensor_id

    def fire(self) -> TaskOutput:
        return TaskOutput(self.reading, {"value": self.reading, "is_anomaly": self.reading > 40})

    def label(self) -> str:
        return self.sensor_id


# ------------------------------------------------------------------ TaskOutput
def test_task_output_validates_and_converts_bools():
    out = TaskOutput(1, {"ok": True, "bad": False, "x": 3}).with_metric("y", 2.5)
    assert dict(out.metrics) == {"ok": 1.0, "bad": 0.0, "x": 3.0, "y": 2.5}
    assert out.value == 1


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "12", None, [1], 10**400])
def test_task_output_rejects_non_finite_and_non_numeric(bad):
    with pytest.raises(InvalidMetricError, match="m"):
        TaskOutput(0, {"m": bad})


def test_task_output_is_immutable():
    out = TaskOutput(0, {"a": 1})
    with pytest.raises(TypeError):
        out.metrics["a"] = 2  # type: ignore[index]
    assert out.with_metric("a", 5).metrics["a"] == 5 and out.metrics["a"] == 1


# ------------------------------------------------------------------------ Kiln
def test_fire_and_record_keeps_timestamps_labels_and_metadata():
    kiln = Kiln()
    fired = kiln.fire_and_record(Sensor(22.5, "s1"), metadata={"rack": "a"})
    assert fired.label == "s1" and fired.value == 22.5 and fired.fired_at > 0
    assert fired.metadata == {"rack": "a"}
    kiln.cool()
    (task,) = kiln.tasks()
    assert task.cooled_at is not None and task.cooled_at >= task.fired_at
    assert task.metrics == {"value": 22.5, "is_anomaly": 0.0}


def test_cooled_kiln_refuses_fire_until_reset():
    kiln = Kiln()
    kiln.fire_all([Sensor(1, "a"), Sensor(2, "b")])
    kiln.cool()
    with pytest.raises(KilnCooledError, match="reset"):
        kiln.fire_and_record(Sensor(3, "c"))
    with pytest.raises(KilnCooledError):
        kiln.record("x", {"value": 1.0})
    kiln.reset()
    kiln.fire_and_record(Sensor(3, "c"))
    assert len(kiln) == 1 and not kiln.is_cooled


def test_streaming_kiln_keeps_accepting_after_cool():
    kiln = Kiln(seal_on_cool=False, capacity=10)
    for i in range(25):
        kiln.record("t", {"v": float(i)}, timestamp=float(i))
        if i % 5 == 0:
            kiln.cool()
    stats = kiln.stats()
    assert stats.recorded == 25 and stats.buffered == 10 and stats.dropped == 15
    # The window holds the newest tasks, oldest first.
    assert [t.metrics["v"] for t in kiln.tasks()] == [float(i) for i in range(15, 25)]


def test_record_skips_and_counts_bad_values_but_keeps_the_task(caplog):
    kiln = Kiln()
    assert kiln.record("span", {"ok": 1.5, "nan": math.nan, "inf": math.inf, "text": "x", "flag": True})
    assert not kiln.record("span", {"only_bad": math.nan})
    (task,) = kiln.tasks()
    assert task.metrics == {"ok": 1.5, "flag": 1.0}
    assert kiln.stats().rejected_values == 4
    assert "nan" in caplog.text and "finite" in caplog.text


def test_record_caps_metric_names_and_counts_the_rest():
    kiln = Kiln(max_metrics=3)
    kiln.record("t", {f"m{i}": float(i) for i in range(5)})
    assert kiln.metric_names == ("m0", "m1", "m2")
    assert kiln.stats().rejected_metric_names == 2
    # A task left with no metric at all is not stored.
    assert not kiln.record("t", {"m7": 1.0, "m8": 2.0})
    assert len(kiln) == 1 and kiln.stats().rejected_metric_names == 4


def test_columns_grow_beyond_initial_width_without_losing_values():
    kiln = Kiln(capacity=4)
    kiln.record("a", {"first": 1.0})
    kiln.record("b", {f"m{i}": float(i) for i in range(40)})
    matrix = kiln.snapshot()
    assert matrix.n_metrics == 41
    assert matrix.column("first")[0] == 1.0 and np.isnan(matrix.column("first")[1])
    assert matrix.column("m39")[1] == 39.0


def test_snapshot_is_in_time_order_whatever_the_arrival_order():
    kiln = Kiln()
    for ts in (3.0, 1.0, 2.0):
        kiln.record(f"t{ts}", {"v": ts}, timestamp=ts, identity=(1, int(ts)))
    matrix = kiln.snapshot()
    assert list(matrix.timestamps) == [1.0, 2.0, 3.0]
    assert matrix.labels == ("t1.0", "t2.0", "t3.0")
    assert matrix.identities == ((1, 1), (1, 2), (1, 3))


def test_record_is_thread_safe_and_counts_every_task():
    kiln = Kiln(capacity=1000, seal_on_cool=False)

    def worker(k: int) -> None:
        for i in range(2000):
            kiln.record(f"w{k}", {"v": float(i), f"w{k}": 1.0})

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = kiln.stats()
    assert stats.recorded == 16000
    assert stats.buffered + stats.dropped == stats.recorded
    assert np.isfinite(kiln.snapshot().column("v")).all()


def test_cool_hook_adds_metrics_and_a_failing_hook_keeps_the_task():
    class Relative(Sensor):
        def cool(self, output, all_metrics):
            mean = sum(m["value"] for _, m in all_metrics) / len(all_metrics)
            return {"vs_mean": output.value - mean}

    class Broken(Sensor):
        def cool(self, output, all_metrics):
            raise RuntimeError("boom")

    kiln = Kiln()
    kiln.fire_all([Relative(10, "a"), Relative(20, "b"), Broken(30, "c")])
    kiln.cool()
    tasks = {t.label: t for t in kiln.tasks()}
    assert tasks["a"].metrics["vs_mean"] == pytest.approx(-10)
    assert tasks["b"].metrics["vs_mean"] == pytest.approx(0)
    assert "vs_mean" not in tasks["c"].metrics and tasks["c"].metrics["value"] == 30
    assert kiln.stats().cool_hook_errors == 1


def test_a_failing_detector_does_not_hide_the_others(monkeypatch):
    from crackle_otel import detect

    def broken(matrix, profile):
        raise ZeroDivisionError("bug")

    monkeypatch.setitem(detect.DETECTORS, "clustering", ("clustering", broken))
    kiln = Kiln(ThermalProfile.fast_cooling())
    for i in range(50):
        kiln.record("t", {"a": float(i % 7), "b": float(i % 7) * 2 + 1}, timestamp=float(i))
    kiln.cool()
    assert kiln.stats().detector_errors == 1
    assert "clustering" in kiln.last_detector_errors


def test_no_detection_profile_finds_nothing():
    kiln = Kiln(ThermalProfile.no_detection())
    kiln.fire_all([Sensor(22.5, "s1"), Sensor(23.1, "s2"), Sensor(45.2, "s3")])
    assert kiln.cool() == []


def test_readme_sensor_outlier_is_found():
    kiln = Kiln(ThermalProfile.fast_cooling())
    kiln.fire_all([Sensor(22.5, "s1"), Sensor(23.1, "s2"), Sensor(45.2, "s3")])
    patterns = kiln.cool()
    outliers = [p for p in patterns if p.kind is PatternKind.OUTLIER]
    assert outliers, patterns
    assert [t.label for t in outliers[0].involved] == ["s3"]
    assert outliers[0].involved[0].role == "outlier"


def test_patterns_are_sorted_by_confidence():
    from crackle_otel.scenarios import event_stream

    matrix = event_stream().matrix
    kiln = Kiln(ThermalProfile.default())
    for i in range(matrix.n_tasks):
        row = {n: v for n, v in zip(matrix.metric_names, matrix.values[i])}
        kiln.record(matrix.labels[i], row, timestamp=matrix.timestamps[i])
    confidences = [p.confidence for p in kiln.cool()]
    assert confidences == sorted(confidences, reverse=True)


# -------------------------------------------------------------------- Pattern
def _pattern() -> Pattern:
    return Pattern(
        kind=PatternKind.CORRELATION,
        description="a and b move together (r=0.9)",
        confidence=1.7,
        metrics=("a", "b"),
        statistics={"r": 0.9, "p_value": 1e-9, "junk": math.nan},
        involved=(InvolvedTask("t1", "carrier", 3, 12.5, (0xABC, 0xDEF)),),
        explanation={"why": "because"},
    )


def test_pattern_is_immutable_clamped_and_round_trips_through_json():
    pattern = _pattern()
    assert pattern.confidence == 1.0
    assert "junk" not in pattern.statistics
    assert pattern.key == "correlation:a|b"
    with pytest.raises(Exception):
        pattern.confidence = 0.5  # type: ignore[misc]
    with pytest.raises(TypeError):
        pattern.statistics["r"] = 0  # type: ignore[index]
    restored = Pattern.from_json(pattern.to_json())
    assert restored == pattern
    assert json.loads(pattern.to_json())["kind"] == "correlation"


def test_pattern_kind_display_names():
    assert str(PatternKind.PHASE_TRANSITION) == "phase transition"
    assert str(PatternKind.CONSERVATION) == "conservation law"
    assert PatternKind.PHASE_TRANSITION.slug == "phase_transition"
    assert str(_pattern()).startswith("[correlation] a and b move together")


# -------------------------------------------------------------------- profile
def test_profiles_and_rates_expose_thresholds():
    assert CoolingRate.FAST.outlier_score < CoolingRate.MEDIUM.outlier_score < CoolingRate.SLOW.outlier_score
    assert CoolingRate.SLOW.significance < CoolingRate.FAST.significance
    assert "min_abs_correlation" in CoolingRate.MEDIUM.thresholds()
    profile = ThermalProfile.default().with_rate(CoolingRate.FAST).without_clustering().without_correlations()
    assert profile.rate is CoolingRate.FAST and not profile.clustering and not profile.correlations
    assert profile.phase_transitions and profile.conservation
    assert ThermalProfile.slow_cooling().rate is CoolingRate.SLOW
    assert not ThermalProfile.no_detection().detects_anything
    assert not ThermalProfile.default().without_phase_transitions().without_conservation().phase_transitions


# ---------------------------------------------------------------------- glaze
def test_glaze_adds_derived_metrics_and_survives_a_failing_one():
    glazed = (
        GlazeLayer(Sensor(-4.0, "s"))
        .with_derived_metric("magnitude", lambda out: abs(out.value))
        .with_derived_metric("log_value", lambda out: math.log(out.value))  # raises on negatives
        .with_derived_metric("nan_metric", lambda out: math.nan)
    )
    kiln = Kiln()
    kiln.fire_and_record(glazed)
    (task,) = kiln.tasks()
    assert task.label == "s"
    assert task.metrics == {"value": -4.0, "is_anomaly": 0.0, "magnitude": 4.0}
    assert glazed.errors == 2


def test_glaze_all_glazes_a_batch():
    batch = GlazeLayer.glaze_all([Sensor(1, "a"), Sensor(-2, "b")], {"magnitude": lambda out: abs(out.value)})
    kiln = Kiln()
    kiln.fire_all(batch)
    assert [t.metrics["magnitude"] for t in kiln.tasks()] == [1.0, 2.0]


def test_the_core_imports_nothing_from_opentelemetry():
    import subprocess
    import sys

    code = "import sys, crackle_otel; crackle_otel.Kiln().cool(); print(sorted(m for m in sys.modules if 'opentelemetry' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_otel_entry_points_are_reachable_from_the_package():
    import crackle_otel

    assert callable(crackle_otel.configure)
    assert crackle_otel.CrackleSpanProcessor.__name__ == "CrackleSpanProcessor"
    assert crackle_otel.CrackleMetricReader.__name__ == "CrackleMetricReader"
