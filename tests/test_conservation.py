"""Conservation laws: real linear invariants, their violations, and no false laws (review sections 3-4)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from crackle_otel.detect import conservation
from crackle_otel.kiln import Kiln
from crackle_otel.matrix import MetricMatrix
from crackle_otel.patterns import PatternKind
from crackle_otel.profile import ThermalProfile

START = 1_790_000_000.0
LAW_KINDS = (PatternKind.CONSERVATION, PatternKind.CONSERVATION_VIOLATION)
ONLY_CONSERVATION = ThermalProfile.default().without_clustering().without_phase_transitions().without_correlations()


def _matrix(columns: dict[str, np.ndarray]) -> MetricMatrix:
    n = len(next(iter(columns.values())))
    return MetricMatrix.from_columns(columns, start=START, identities=[(i, i) for i in range(n)])


def _review_stream(n: int = 814, broken_from: int | None = 600, constant_in: bool = False, seed: int = 0):
    """The review's event stream: in/out/errors balance until records start getting lost."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    records_in = np.full(n, 1000.0) if constant_in else rng.integers(900, 1100, n).astype(float)
    errors = rng.poisson(np.where(i < 300, 2.0, 2.0 + (i - 300) / 10.0)).astype(float)
    lost = np.zeros(n)
    if broken_from is not None:
        lost[broken_from:] = rng.integers(50, 300, n - broken_from)
    return {
        "event_id": 1_000 + 10 * i + rng.integers(0, 3, n),
        "batch_id": i // 100,
        "records_in": records_in,
        "records_out": records_in - errors - lost,
        "errors": errors,
        "latency_ms": 10 + np.where(i < 300, 0.0, 0.15 * (i - 300)) + rng.normal(0, 1, n),
        "cpu_temp_c": rng.uniform(65, 80, n),
        "gc_pause_ms": rng.gamma(2, 2, n),
    }, lost


def _cool(columns: dict[str, np.ndarray], profile: ThermalProfile | None = None):
    """Every column through a real Kiln (record + cool), like spans would arrive."""
    kiln = Kiln(profile or ONLY_CONSERVATION)
    names = list(columns)
    table = np.column_stack([np.asarray(columns[name], dtype=float) for name in names])
    for i, row in enumerate(table):
        kiln.record(f"batch-{i}", dict(zip(names, row.tolist())), timestamp=START + i)
    return kiln.cool()


def _of(patterns, kind):
    return [p for p in patterns if p.kind is kind]


def _coefficients(pattern) -> dict[str, float]:
    return {name: pattern.statistics[f"coef.{name}"] for name in pattern.metrics}


def test_in_out_errors_law_is_found_with_unit_coefficients_and_tiny_residual():
    columns, _ = _review_stream(broken_from=None)
    laws = _of(conservation.detect(_matrix(columns), ThermalProfile.default()), PatternKind.CONSERVATION)
    assert len(laws) == 1
    law = laws[0]
    assert set(law.metrics) == {"records_in", "records_out", "errors"}
    assert _coefficients(law) == {"records_in": 1.0, "records_out": -1.0, "errors": -1.0}
    assert law.statistics["constant"] == 0.0
    assert law.statistics["relative_residual"] < 1e-9
    assert law.statistics["holding_fraction"] == 1.0
    assert law.statistics["tolerance"] == ThermalProfile.default().rate.conservation_tolerance
    assert "records_in - records_out - errors = 0" in law.description
    assert law.key == "conservation:errors - records_in + records_out"
    assert law.confidence > 0.9


def test_two_term_law_bytes_sent_is_eight_packets():
    rng = np.random.default_rng(1)
    packets = rng.integers(1, 100, 2000).astype(float)
    columns = {"bytes_sent": 8 * packets, "packets": packets, "noise": rng.normal(size=2000)}
    laws = _of(conservation.detect(_matrix(columns), ThermalProfile.default()), PatternKind.CONSERVATION)
    assert len(laws) == 1
    coefficients = _coefficients(laws[0])
    assert set(coefficients) == {"bytes_sent", "packets"}
    assert coefficients["packets"] / coefficients["bytes_sent"] == -8.0
    assert "bytes_sent - 8*packets = 0" in laws[0].description


def test_noisy_law_within_tolerance_is_found_and_reports_its_residual():
    rng = np.random.default_rng(2)
    packets = rng.uniform(100, 1000, 3000)
    columns = {"bytes_sent": 8 * packets + rng.normal(0, 2, 3000), "packets": packets}
    profile = ThermalProfile.default()
    (law,) = _of(conservation.detect(_matrix(columns), profile), PatternKind.CONSERVATION)
    assert 0 < law.statistics["relative_residual"] <= profile.rate.conservation_tolerance
    assert law.statistics["residual_rms"] == pytest.approx(2, rel=0.1)
    assert _coefficients(law) == {"bytes_sent": 1.0, "packets": -8.0}


def test_non_simple_ratio_is_shown_with_three_significant_digits():
    rng = np.random.default_rng(3)
    b = rng.uniform(10, 20, 1000)
    patterns = conservation.detect(_matrix({"a": 1.2345 * b, "b": b}), ThermalProfile.default())
    (law,) = _of(patterns, PatternKind.CONSERVATION)
    assert _coefficients(law) == {"a": 1.0, "b": -1.23}
    assert "a - 1.23*b = 0" in law.description


def test_violation_found_at_the_right_task_with_violators_and_before_tasks():
    columns, lost = _review_stream(broken_from=600)
    patterns = _cool(columns)
    (law,) = _of(patterns, PatternKind.CONSERVATION)
    (violation,) = _of(patterns, PatternKind.CONSERVATION_VIOLATION)
    assert set(law.metrics) == set(violation.metrics) == {"records_in", "records_out", "errors"}
    assert law.statistics["holding_fraction"] == pytest.approx(600 / 814)
    stats = violation.statistics
    assert abs(stats["first_violation_index"] - 600) <= 3
    assert stats["last_violation_index"] == 813
    assert stats["first_violation_timestamp"] == START + stats["first_violation_index"]
    assert stats["violating_tasks"] == 214
    assert stats["tasks_held_before"] == 600
    assert stats["mean_imbalance"] == pytest.approx(lost[600:].mean())
    assert "held for 600 tasks, then broke at task 600" in violation.description
    assert "214 tasks" in violation.description
    assert violation.key == "conservation_violation:errors - records_in + records_out"

    roles = {task.role for task in violation.involved}
    assert roles == {"violator", "before"}
    violators = [t for t in violation.involved if t.role == "violator"]
    before = [t for t in violation.involved if t.role == "before"]
    assert all(t.index >= 600 for t in violators)
    assert all(t.index < 600 for t in before) and 0 < len(before) <= 8
    assert len(violation.involved) <= ThermalProfile.default().max_involved
    # The worst violators (largest imbalance) are the ones named.
    named_loss = np.array([lost[t.index] for t in violators])
    assert named_loss.min() >= np.sort(lost[600:])[-len(violators)]
    assert violation.confidence > 0.8


def test_violation_episode_that_recovers_and_one_at_the_start():
    rng = np.random.default_rng(12)
    n = 1000
    records_in = rng.integers(900, 1100, n).astype(float)
    errors = rng.poisson(3, n).astype(float)
    i = np.arange(n)
    for lost, first, last, wording in (
        (np.where((i >= 400) & (i < 500), 100.0, 0.0), 400, 499, "holds again on the 500 tasks after"),
        (np.where(i < 300, 100.0, 0.0), 0, 299, "is broken by 300 of 1000 tasks"),
    ):
        columns = {"records_in": records_in, "records_out": records_in - errors - lost, "errors": errors}
        patterns = conservation.detect(_matrix(columns), ThermalProfile.default())
        (violation,) = _of(patterns, PatternKind.CONSERVATION_VIOLATION)
        stats = violation.statistics
        assert (stats["first_violation_index"], stats["last_violation_index"]) == (first, last)
        assert violation.statistics["mean_imbalance"] == 100.0
        assert wording in violation.description


def test_involved_respects_max_involved():
    columns, _ = _review_stream(broken_from=600)
    profile = ThermalProfile.default().with_max_involved(10)
    (violation,) = _of(conservation.detect(_matrix(columns), profile), PatternKind.CONSERVATION_VIOLATION)
    assert len(violation.involved) <= 10
    assert {t.role for t in violation.involved} == {"violator", "before"}


def test_law_with_constant_records_in_is_stated_without_it():
    columns, _ = _review_stream(broken_from=600, constant_in=True)
    patterns = conservation.detect(_matrix(columns), ThermalProfile.default())
    (law,) = _of(patterns, PatternKind.CONSERVATION)
    assert set(law.metrics) == {"records_out", "errors"}
    assert "records_out + errors = 1000" in law.description
    (violation,) = _of(patterns, PatternKind.CONSERVATION_VIOLATION)
    assert abs(violation.statistics["first_violation_index"] - 600) <= 3


def test_ids_counters_temperature_and_constants_are_never_laws():
    columns, _ = _review_stream(broken_from=600, constant_in=True)
    for profile in (ThermalProfile.fast_cooling(), ThermalProfile.default(), ThermalProfile.slow_cooling()):
        patterns = conservation.detect(_matrix(columns), profile.with_constant_notes())
        for pattern in patterns:
            if pattern.kind in LAW_KINDS:
                assert not {"event_id", "batch_id", "cpu_temp_c", "records_in"} & set(pattern.metrics), pattern


def test_constant_metric_is_only_a_low_confidence_note_when_asked_for():
    columns, _ = _review_stream(broken_from=None, constant_in=True)
    matrix = _matrix(columns)
    assert not _of(conservation.detect(matrix, ThermalProfile.default()), PatternKind.CONSTANT)
    notes = _of(conservation.detect(matrix, ThermalProfile.default().with_constant_notes()), PatternKind.CONSTANT)
    assert [note.metrics for note in notes] == [("records_in",)]
    assert notes[0].confidence <= 0.3
    assert notes[0].statistics["value"] == 1000.0
    assert notes[0].key == "constant:records_in"


@pytest.mark.parametrize("rate", ["fast_cooling", "default", "slow_cooling"])
def test_pure_noise_has_no_laws(rate):
    rng = np.random.default_rng(4)
    columns = {f"m{k}": rng.normal(100, 15, 3000) for k in range(8)}
    columns.update({f"p{k}": rng.poisson(20, 3000) for k in range(4)})
    columns.update({f"l{k}": rng.lognormal(3, 0.5, 3000) for k in range(4)})
    assert conservation.detect(_matrix(columns), getattr(ThermalProfile, rate)()) == []


def test_few_tasks_many_metrics_do_not_fit_spurious_laws():
    rng = np.random.default_rng(5)
    columns = {f"m{k}": rng.normal(size=40) for k in range(30)}
    assert conservation.detect(_matrix(columns), ThermalProfile.fast_cooling()) == []


def test_highly_correlated_but_not_linked_metrics_are_no_law():
    rng = np.random.default_rng(6)
    a = rng.normal(50, 10, 3000)
    b = 0.9 * a + np.sqrt(1 - 0.81) * 10 * rng.normal(size=3000)
    assert conservation.detect(_matrix({"a": a, "b": b}), ThermalProfile.fast_cooling()) == []


def test_metrics_sharing_only_a_trend_are_no_law():
    # Latency and lag both ramp with one degradation: a line fits across the ramp,
    # but task by task their wiggles are unrelated.
    rng = np.random.default_rng(7)
    ramp = np.clip((np.arange(3000) - 1000) / 1000, 0, 1)
    columns = {
        "latency_ms": 10 + 75 * ramp + rng.normal(0, 0.6, 3000),
        "consumer_lag": 50 + 1950 * ramp + rng.normal(0, 15, 3000),
    }
    assert conservation.detect(_matrix(columns), ThermalProfile.fast_cooling()) == []


def test_only_minimal_laws_are_reported_not_their_combinations():
    rng = np.random.default_rng(8)
    x, y, z = rng.normal(10, 3, 2000), rng.normal(20, 5, 2000), rng.normal(5, 1, 2000)
    columns = {"total": x + y + z, "subtotal": x + y, "extra": z, "eighth": (x + y) / 8, "noise": rng.normal(size=2000)}
    laws = _of(conservation.detect(_matrix(columns), ThermalProfile.default()), PatternKind.CONSERVATION)
    # total - subtotal - extra = 0 and subtotal = 8 eighth; total - extra - 8 eighth = 0 is implied.
    assert sorted(sorted(law.metrics) for law in laws) == [["eighth", "subtotal"], ["extra", "subtotal", "total"]]


def test_scattered_violations_are_found_without_losing_the_law():
    rng = np.random.default_rng(9)
    n = 3000
    records_in = rng.integers(900, 1100, n).astype(float)
    errors = rng.poisson(3, n).astype(float)
    glitch = rng.random(n) < 0.02
    records_out = records_in - errors - np.where(glitch, rng.integers(10, 50, n), 0)
    columns = {"records_in": records_in, "records_out": records_out, "errors": errors}
    patterns = conservation.detect(_matrix(columns), ThermalProfile.default())
    (law,) = _of(patterns, PatternKind.CONSERVATION)
    assert _coefficients(law) == {"records_in": 1.0, "records_out": -1.0, "errors": -1.0}
    (violation,) = _of(patterns, PatternKind.CONSERVATION_VIOLATION)
    assert violation.statistics["violating_tasks"] == glitch.sum()
    assert {t.index for t in violation.involved if t.role == "violator"} == set(np.flatnonzero(glitch).tolist())
    assert "broken by" in violation.description  # scattered: not "held, then broke"


def test_laws_among_metrics_reported_on_different_tasks():
    rng = np.random.default_rng(10)
    n = 2000
    values = np.full((n, 4), np.nan)
    http, queue = np.arange(n) % 2 == 0, np.arange(n) % 2 == 1
    requests = rng.integers(1, 50, n).astype(float)
    values[http, 0] = requests[http]
    values[http, 1] = 3 * requests[http] + 2
    values[queue, 2] = rng.normal(size=queue.sum())
    values[queue, 3] = rng.normal(size=queue.sum())
    names = ("requests", "bytes_kb", "depth", "wait")
    matrix = MetricMatrix(values, names, tuple(map(str, range(n))), START + np.arange(n, dtype=float), (None,) * n)
    (law,) = conservation.detect(matrix, ThermalProfile.default())
    assert set(law.metrics) == {"requests", "bytes_kb"}
    assert law.statistics["tasks_checked"] == n // 2


def test_keys_are_stable_across_cools_of_a_sliding_kiln():
    columns, _ = _review_stream(n=1200, broken_from=1000)
    names = list(columns)
    table = np.column_stack([np.asarray(columns[name], dtype=float) for name in names])
    kiln = Kiln(ONLY_CONSERVATION, capacity=900, seal_on_cool=False)
    keys = []
    for start, stop in ((0, 700), (700, 1200)):  # the second cool sees tasks 300-1199
        for i in range(start, stop):
            kiln.record(f"b{i}", dict(zip(names, table[i].tolist())), timestamp=START + i)
        keys.append({p.key for p in kiln.cool() if p.kind in LAW_KINDS})
    assert keys[0] == {"conservation:errors - records_in + records_out"}
    assert keys[1] == keys[0] | {"conservation_violation:errors - records_in + records_out"}


def test_same_input_same_output():
    columns, _ = _review_stream(broken_from=600)
    first = [p.to_dict() for p in conservation.detect(_matrix(columns), ThermalProfile.default())]
    second = [p.to_dict() for p in conservation.detect(_matrix(columns), ThermalProfile.default())]
    assert first == second


def test_review_event_stream_scenario():
    scenarios = pytest.importorskip("crackle_otel.scenarios")
    scenario = scenarios.event_stream()
    patterns = conservation.detect(scenario.matrix, ThermalProfile.default().with_constant_notes())
    assert not [e for e in scenario.missing(patterns) if e.kind in LAW_KINDS]
    assert not scenario.violations(patterns)
    assert all(scenario.is_true_positive(p) for p in patterns if p.kind in LAW_KINDS)
    (violation,) = _of(patterns, PatternKind.CONSERVATION_VIOLATION)
    start = scenarios.EVENT_STREAM_PHASES["violation"][0]
    assert abs(violation.statistics["first_violation_index"] - start) <= 3
    assert [p.metrics for p in _of(patterns, PatternKind.CONSTANT)] == [("max_batch",)]


NO_LAW_SCENARIOS = [
    "mean_shift", "variance_shift", "bad_host_cluster", "lagged_dependency", "nonlinear_dependency", "pure_noise",
]


@pytest.mark.parametrize("name", NO_LAW_SCENARIOS)
def test_scenarios_without_laws_yield_none(name):
    scenarios = pytest.importorskip("crackle_otel.scenarios")
    for profile in (ThermalProfile.fast_cooling(), ThermalProfile.default()):
        assert not [p for p in conservation.detect(scenarios.SCENARIOS[name]().matrix, profile) if p.kind in LAW_KINDS]


def test_hundred_thousand_tasks_stay_fast_and_exact():
    rng = np.random.default_rng(11)
    n = 100_000
    records_in = rng.integers(900, 1100, n).astype(float)
    errors = rng.poisson(3, n).astype(float)
    lost = np.zeros(n)
    lost[80_000:] = 40
    columns = {"records_in": records_in, "records_out": records_in - errors - lost, "errors": errors}
    columns.update({f"m{k}": rng.normal(size=n) for k in range(13)})
    matrix = _matrix(columns)
    started = time.perf_counter()
    patterns = conservation.detect(matrix, ThermalProfile.default())
    elapsed = time.perf_counter() - started
    (violation,) = _of(patterns, PatternKind.CONSERVATION_VIOLATION)
    assert violation.statistics["first_violation_index"] == 80_000
    assert violation.statistics["violating_tasks"] == 20_000
    assert elapsed < 3.0  # ~0.1 s measured; a generous bound that still catches quadratic blow-ups
