"""Every labelled scenario: the expected findings are made, the forbidden ones are not.

The event stream is the crate review's own test case: healthy -> degrading ->
conservation violation, with event_id / batch_id counters, a constant-by-design
metric and a noisy temperature that the crate wrongly called "conserved".
"""

from __future__ import annotations

import pytest

from crackle_otel import Kiln, PatternKind, ThermalProfile
from crackle_otel.detect import run_detectors
from crackle_otel.scenarios import EVENT_STREAM_PHASES, SCENARIOS, event_stream

PROFILES = {"fast": ThermalProfile.fast_cooling(), "default": ThermalProfile.default(),
            "slow": ThermalProfile.slow_cooling()}


@pytest.mark.parametrize("profile_name", PROFILES)
@pytest.mark.parametrize("name", [n for n in SCENARIOS if n != "pure_noise"])
def test_scenario_findings_and_non_findings(name, profile_name):
    scenario = SCENARIOS[name](seed=0)
    patterns, errors = run_detectors(scenario.matrix, PROFILES[profile_name])
    assert not errors
    assert not scenario.missing(patterns), [str(e) for e in scenario.missing(patterns)]
    assert not scenario.violations(patterns), [(str(e), str(p)) for e, p in scenario.violations(patterns)]
    false_positives = [str(p) for p in patterns if not scenario.is_true_positive(p)]
    assert not false_positives


@pytest.mark.parametrize("seed", range(3))
def test_pure_noise_yields_nothing_worth_reporting(seed):
    patterns, _ = run_detectors(SCENARIOS["pure_noise"](seed=seed).matrix, ThermalProfile.default())
    assert len(patterns) <= 1, [str(p) for p in patterns]


def _cooled_event_stream():
    scenario = event_stream()
    matrix = scenario.matrix
    kiln = Kiln(ThermalProfile.default())
    for i in range(matrix.n_tasks):
        kiln.record(matrix.labels[i], dict(zip(matrix.metric_names, matrix.values[i].tolist())),
                    timestamp=float(matrix.timestamps[i]), identity=matrix.identities[i])
    return kiln.cool()


def test_review_case_through_the_kiln():
    patterns = _cooled_event_stream()
    by_kind = {}
    for p in patterns:
        by_kind.setdefault(p.kind, []).append(p)

    # The conservation law, as an equation, not "low coefficient of variation".
    (law,) = [p for p in by_kind[PatternKind.CONSERVATION] if set(p.metrics) == {"records_in", "records_out", "errors"}]
    assert "= 0" in law.description
    # Its violation starts where records began to get lost.
    (violation,) = by_kind[PatternKind.CONSERVATION_VIOLATION]
    start = EVENT_STREAM_PHASES["violation"][0]
    assert abs(violation.statistics["first_violation_index"] - start) <= 5
    assert {t.role for t in violation.involved} <= {"violator", "before"}

    # The degrading phase is a phase transition on latency, near where it began.
    latency = [p for p in by_kind[PatternKind.PHASE_TRANSITION] if p.metrics[0] == "latency_ms"]
    assert latency and abs(latency[0].statistics["change_index"] - EVENT_STREAM_PHASES["degrading"][0]) <= 30

    # Never: counters as transitions or laws; constants or noise as "conserved".
    for p in patterns:
        assert not {"event_id", "batch_id"} & set(p.metrics), str(p)
        if p.kind is PatternKind.CONSERVATION:
            assert not {"cpu_temp_c", "max_batch", "memory_mb"} & set(p.metrics), str(p)
        # Correlations name the tasks that carry them, not every task.
        if p.kind is PatternKind.CORRELATION:
            assert len(p.involved) <= ThermalProfile.default().max_involved
        # No junk statistics.
        assert not any("hash" in k or k.endswith("_len") for k in p.statistics), dict(p.statistics)
