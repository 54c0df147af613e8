"""Correlation and lead/lag detection, through detect() and Kiln.cool()."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from crackle_otel import scenarios
from crackle_otel.detect import correlation
from crackle_otel.kiln import Kiln
from crackle_otel.matrix import MetricMatrix
from crackle_otel.scenarios import noise_columns
from crackle_otel.patterns import PatternKind
from crackle_otel.profile import ThermalProfile

DEFAULT = ThermalProfile.default()


def make_matrix(columns: dict[str, np.ndarray], interval_s: float = 0.1) -> MetricMatrix:
    return MetricMatrix.from_columns(columns, start=1_700_000_000.0, interval_s=interval_s)


def noise_matrix(seed: int, n: int = 500, n_metrics: int = 50) -> MetricMatrix:
    return make_matrix(noise_columns(np.random.default_rng(seed), n, n_metrics, count_mean=4))


def by_key(patterns, key):
    found = [p for p in patterns if p.key == key]
    assert len(found) == 1, f"expected one pattern {key}, got {[p.key for p in patterns]}"
    return found[0]


# ------------------------------------------------------------------ linear
def test_linear_pairs_found_with_correct_sign_and_exact_coefficients():
    rng = np.random.default_rng(1)
    n = 1000
    latency = rng.normal(50, 10, n)
    throughput = 2000 - 20 * latency + rng.normal(0, 40, n)
    cpu = 0.5 * latency + rng.normal(0, 3, n)
    unrelated = rng.normal(0, 1, n)
    patterns = correlation.detect(
        make_matrix({"latency_ms": latency, "throughput": throughput, "cpu_ms": cpu, "unrelated": unrelated}), DEFAULT
    )
    negative = by_key(patterns, "correlation:latency_ms|throughput")
    positive = by_key(patterns, "correlation:cpu_ms|latency_ms")
    assert negative.kind is PatternKind.CORRELATION
    assert negative.statistics["pearson_r"] < -0.9
    assert negative.statistics["pearson_r"] == pytest.approx(pearsonr(latency, throughput)[0], abs=1e-9)
    assert negative.statistics["spearman_rho"] == pytest.approx(spearmanr(latency, throughput)[0], abs=1e-9)
    assert "opposite directions" in negative.description
    assert positive.statistics["pearson_r"] > 0.8 and "together" in positive.description
    assert negative.statistics["p_value"] < 1e-12 and negative.statistics["q_value"] <= DEFAULT.rate.significance
    assert negative.statistics["n"] == n
    assert 0.9 < negative.confidence <= 1.0
    assert not any("unrelated" in p.metrics for p in patterns)
    # The review's junk statistics are gone.
    assert not any("len" in name for p in patterns for name in p.statistics)


def test_monotone_but_not_linear_is_described_as_such():
    rng = np.random.default_rng(2)
    x = rng.uniform(-3, 3, 2000)
    patterns = correlation.detect(make_matrix({"x": x, "y": np.exp(2 * x) * rng.lognormal(0, 0.1, 2000)}), DEFAULT)
    pattern = by_key(patterns, "correlation:x|y")
    assert "monotonically but not linearly" in pattern.description
    assert pattern.statistics["spearman_rho"] > 0.95 > pattern.statistics["pearson_r"]


def test_counters_and_ids_are_not_correlated_with_trends():
    rng = np.random.default_rng(3)
    n = 800
    trend = np.linspace(0, 10, n) + rng.normal(0, 0.5, n)
    matrix = make_matrix({"event_id": 1000 + np.arange(n), "batch_id": np.arange(n) // 100, "load": trend})
    assert correlation.detect(matrix, DEFAULT) == []


# ------------------------------------------------------------------- noise
def test_fifty_noise_metrics_give_near_zero_patterns():
    # 1225 pairs x 4 tests each. Few tasks and the fast profile (|r| >= 0.3, 5 % false
    # discovery) make the multiple-testing control do the work: without it, ~50-100 hits.
    fast = ThermalProfile.fast_cooling()
    assert len(correlation.detect(noise_matrix(seed=0, n=60), fast)) <= 2
    assert len(correlation.detect(noise_matrix(seed=0, n=500), DEFAULT)) <= 2
    counts = [len(correlation.detect(noise_matrix(seed, n=40), fast)) for seed in range(1, 5)]
    assert np.mean(counts) <= 1.0


def test_independent_random_walks_are_not_correlated():
    # Drifting series correlate by chance (spurious regression); the effective sample
    # size of autocorrelated series keeps that from passing as significant.
    found = 0
    for seed in range(3):
        rng = np.random.default_rng(seed)
        walks = make_matrix({f"walk_{k}": np.cumsum(rng.normal(size=2000)) for k in range(10)})
        found += len(correlation.detect(walks, DEFAULT))
    assert found <= 1


def test_pure_noise_scenario_is_quiet():
    scenario = scenarios.pure_noise()
    assert correlation.detect(scenario.matrix, DEFAULT) == []


# -------------------------------------------------------------- non-linear
def test_quadratic_dependence_found_by_mutual_information():
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, 1500)
    y = x**2 + rng.normal(0, 0.05, 1500)
    noise = rng.normal(0, 1, 1500)
    patterns = correlation.detect(make_matrix({"x": x, "y": y, "noise": noise}), DEFAULT)
    pattern = by_key(patterns, "correlation:x|y")
    assert pattern.explanation["method"] == "mutual information"
    assert "non-linearly" in pattern.description
    assert abs(pattern.statistics["pearson_r"]) < 0.2 and abs(pattern.statistics["spearman_rho"]) < 0.2
    assert pattern.statistics["normalized_mi"] >= DEFAULT.rate.min_normalized_mi
    assert pattern.statistics["mutual_information_bits"] > 0.5
    assert pattern.statistics["q_value"] <= DEFAULT.rate.significance
    assert len(patterns) == 1


def test_nonlinear_dependency_scenario():
    scenario = scenarios.nonlinear_dependency()
    patterns = correlation.detect(scenario.matrix, DEFAULT)
    assert scenario.missing(patterns) == []
    assert all(scenario.is_true_positive(p) for p in patterns)
    assert patterns[0].explanation["method"] == "mutual information"


# ---------------------------------------------------------------- lead/lag
def test_lagged_pair_found_as_a_leads_b_by_three():
    rng = np.random.default_rng(5)
    n, lag = 2000, 3
    a = rng.normal(0, 1, n + lag)
    b = a[:-lag] + rng.normal(0, 0.5, n)  # b_t = a_{t-3} + noise
    patterns = correlation.detect(make_matrix({"a": a[lag:], "b": b}, interval_s=0.1), DEFAULT)
    pattern = by_key(patterns, "lead_lag:a>b")
    assert pattern.kind is PatternKind.LEAD_LAG
    assert pattern.metrics == ("a", "b")
    assert "a leads b by 3 tasks" in pattern.description
    assert pattern.statistics["lag"] == 3
    assert pattern.statistics["lag_seconds"] == pytest.approx(0.3)
    assert pattern.statistics["spearman_at_lag"] > 0.8
    assert abs(pattern.statistics["spearman_at_lag0"]) < 0.1
    assert pattern.statistics["transfer_entropy_bits"] > 5 * pattern.statistics["reverse_transfer_entropy_bits"]
    # The weak contemporaneous relation is not reported separately.
    assert [p.kind for p in patterns] == [PatternKind.LEAD_LAG]
    roles = {task.role for task in pattern.involved}
    assert roles == {"leader", "follower"}


def test_contemporaneous_pair_is_not_a_lead_lag():
    rng = np.random.default_rng(6)
    n = 2000
    a = np.zeros(n)
    shocks = rng.normal(0, 1, n)
    for t in range(1, n):  # autocorrelated, so lagged correlations are high too
        a[t] = 0.8 * a[t - 1] + shocks[t]
    patterns = correlation.detect(make_matrix({"a": a, "b": a + rng.normal(0, 0.5, n)}), DEFAULT)
    assert [p.kind for p in patterns] == [PatternKind.CORRELATION]


def test_lagged_dependency_scenario():
    scenario = scenarios.lagged_dependency()
    patterns = correlation.detect(scenario.matrix, DEFAULT)
    assert scenario.missing(patterns) == []
    assert all(scenario.is_true_positive(p) for p in patterns)
    lead = by_key(patterns, "lead_lag:gc_pause_ms>latency_ms")
    assert lead.statistics["lag"] == 3


# ---------------------------------------------------------------- involved
def test_involved_is_a_capped_subset_that_carries_the_pair():
    rng = np.random.default_rng(7)
    n = 1000
    x = rng.normal(0, 1, n)
    y = 0.8 * x + rng.normal(0, 0.6, n)
    matrix = make_matrix({"x": x, "y": y})
    pattern = by_key(correlation.detect(matrix, DEFAULT), "correlation:x|y")
    assert 0 < len(pattern.involved) <= DEFAULT.max_involved < n
    assert {task.role for task in pattern.involved} == {"carrier"}
    index = np.array([task.index for task in pattern.involved])
    contribution = (x[index] - x.mean()) * (y[index] - y.mean())
    assert (contribution > 0).all()
    # They are the strongest carriers, not a random draw of concordant tasks.
    assert np.median(contribution) > 3 * np.median(np.clip((x - x.mean()) * (y - y.mean()), 0, None))
    assert [task.label for task in pattern.involved] == [f"task-{i}" for i in index]

    capped = by_key(correlation.detect(matrix, DEFAULT.with_max_involved(10)), "correlation:x|y")
    assert len(capped.involved) == 10


def test_involved_excludes_tasks_against_the_relationship_even_under_the_cap():
    rng = np.random.default_rng(11)
    x = rng.normal(0, 1, 100)
    y = -0.7 * x + rng.normal(0, 0.7, 100)
    pattern = by_key(correlation.detect(make_matrix({"x": x, "y": y}), DEFAULT), "correlation:x|y")
    index = np.array([task.index for task in pattern.involved])
    assert 0 < index.size < 100
    assert ((x[index] - x.mean()) * (y[index] - y.mean()) < 0).all()


# ----------------------------------------------------------------- missing
def test_missing_values_are_handled_pairwise():
    rng = np.random.default_rng(8)
    n = 1200
    a = rng.normal(0, 1, n)
    b = -a + rng.normal(0, 0.5, n)
    c = rng.normal(0, 1, n)
    a[rng.random(n) < 0.3] = np.nan
    b[rng.random(n) < 0.3] = np.nan
    patterns = correlation.detect(make_matrix({"a": a, "b": b, "c": c}), DEFAULT)
    pattern = by_key(patterns, "correlation:a|b")
    both = np.isfinite(a) & np.isfinite(b)
    assert pattern.statistics["n"] == both.sum()
    assert pattern.statistics["pearson_r"] == pytest.approx(pearsonr(a[both], b[both])[0], abs=1e-9)
    assert pattern.statistics["pearson_r"] < -0.8
    assert all(both[task.index] for task in pattern.involved)
    assert len(patterns) == 1


def test_metrics_on_disjoint_tasks_are_not_compared():
    rng = np.random.default_rng(9)
    n = 400
    a = rng.normal(0, 1, n)
    b = a + rng.normal(0, 0.1, n)
    a[n // 2 :] = np.nan
    b[: n // 2] = np.nan
    assert correlation.detect(make_matrix({"a": a, "b": b}), DEFAULT) == []


# ------------------------------------------------------------- end to end
def test_kiln_cool_reports_the_correlation():
    rng = np.random.default_rng(10)
    kiln = Kiln(ThermalProfile.default().without_clustering().without_phase_transitions().without_conservation())
    for i in range(400):
        queue = rng.gamma(2.0, 5.0)
        kiln.record(
            "consume",
            {"message_id": float(i), "queue_depth": queue, "wait_ms": 3.0 * queue + rng.normal(0, 2.0)},
            timestamp=1_700_000_000.0 + i,
        )
    patterns = kiln.cool()
    assert [p.key for p in patterns] == ["correlation:queue_depth|wait_ms"]
    assert patterns[0].statistics["pearson_r"] > 0.9
    assert all(task.label == "consume" for task in patterns[0].involved)


def test_event_stream_scenario_finds_the_review_correlations_and_no_id_patterns():
    scenario = scenarios.event_stream()
    patterns = correlation.detect(scenario.matrix, DEFAULT)
    ours = (PatternKind.CORRELATION, PatternKind.LEAD_LAG)
    correlation_expectations = [e for e in scenario.expected if e.kind in ours]
    assert correlation_expectations
    assert not [e for e in correlation_expectations if not any(e.matches(p) for p in patterns)]
    assert scenario.violations(patterns) == []
    assert all(scenario.is_true_positive(p) for p in patterns)


def test_output_is_deterministic_and_json_safe():
    scenario = scenarios.lagged_dependency()
    first = [p.to_json() for p in correlation.detect(scenario.matrix, DEFAULT)]
    second = [p.to_json() for p in correlation.detect(scenario.matrix, DEFAULT)]
    assert first == second and first


def test_too_few_tasks_or_metrics_give_nothing():
    assert correlation.detect(make_matrix({"a": np.arange(5.0) % 3, "b": np.arange(5.0) % 2}), DEFAULT) == []
    assert correlation.detect(make_matrix({"a": np.random.default_rng(0).normal(size=100)}), DEFAULT) == []
