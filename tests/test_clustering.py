"""Clusters and outliers: found when real, order-free, quiet on noise, honest about missing metrics."""

from __future__ import annotations

import re

import numpy as np
import pytest

from crackle_otel import Kiln, MetricMatrix, PatternKind, TaskOutput, ThermalProfile
from crackle_otel.detect import clustering


# ----------------------------------------------------------------- helpers
def _matrix(values, names, labels=None, identities=None) -> MetricMatrix:
    values = np.asarray(values, dtype=float)
    n = values.shape[0]
    return MetricMatrix(
        values=values,
        metric_names=tuple(names),
        labels=tuple(labels) if labels is not None else tuple(f"task-{i}" for i in range(n)),
        timestamps=np.arange(n, dtype=float),
        identities=tuple(identities) if identities is not None else tuple(range(n)),
    )


def _of_kind(patterns, kind):
    return [p for p in patterns if p.kind is kind]


def _bad_host(n=1000, share=0.05, seed=0):
    """n tasks; ``share`` of them on db-3, which answers 3x slower with 2x CPU."""
    rng = np.random.default_rng(seed)
    bad = rng.random(n) < share
    hosts = np.array([f"web-{i % 12}" for i in range(n)], dtype=object)
    hosts[bad] = "db-3"
    latency = rng.normal(10, 1, n)
    latency[bad] *= 3
    cpu = rng.normal(50, 5, n)
    cpu[bad] *= 2
    memory = rng.normal(512, 20, n)
    return _matrix(np.c_[latency, cpu, memory], ["latency_ms", "cpu", "memory_mb"], labels=hosts), bad


def _shuffled(matrix: MetricMatrix, seed: int) -> MetricMatrix:
    order = np.random.default_rng(seed).permutation(matrix.n_tasks)
    return MetricMatrix(
        values=matrix.values[order],
        metric_names=matrix.metric_names,
        labels=tuple(matrix.labels[i] for i in order),
        timestamps=matrix.timestamps,
        identities=tuple(matrix.identities[i] for i in order),
    )


class Sensor:
    def __init__(self, reading: float, sensor_id: str) -> None:
        self.reading, self.sensor_id = reading, sensor_id

    def fire(self) -> TaskOutput:
        return TaskOutput(self.reading, {"value": self.reading, "is_anomaly": self.reading > 40})

    def label(self) -> str:
        return self.sensor_id


# ---------------------------------------------------------- the README case
def test_readme_sensor_45_2_is_an_outlier_with_its_metric_and_robust_z():
    kiln = Kiln(ThermalProfile.fast_cooling())
    kiln.fire_all([Sensor(22.5, "s1"), Sensor(23.1, "s2"), Sensor(45.2, "s3")])
    patterns = kiln.cool()
    assert _of_kind(patterns, PatternKind.CLUSTERING) == []  # three tasks are no population to split
    [outlier] = _of_kind(patterns, PatternKind.OUTLIER)
    assert [(t.label, t.role) for t in outlier.involved] == [("s3", "outlier")]
    assert outlier.metrics[0] == "value"
    assert outlier.statistics["value.worst_value"] == 45.2
    assert outlier.statistics["value.worst_z"] > 20  # (45.2 - 23.1) / (1.4826 * 0.6)
    assert outlier.statistics["value.typical"] == pytest.approx(23.1)
    assert "45.2" in outlier.description and "s3" in outlier.description
    assert 0.5 < outlier.confidence <= 1.0


# ------------------------------------------------------------ a bad host
def test_bad_host_forms_a_cluster_with_the_right_members_metric_and_host():
    matrix, bad = _bad_host()
    patterns = clustering.detect(matrix, ThermalProfile.default())
    [cluster] = _of_kind(patterns, PatternKind.CLUSTERING)
    assert {t.identity for t in cluster.involved} == set(np.flatnonzero(bad))
    assert {t.role for t in cluster.involved} == {"member"}
    assert cluster.metrics[0] == "latency_ms" and "cpu" in cluster.metrics
    assert "memory_mb" not in cluster.metrics
    assert cluster.key == "clustering:cpu|latency_ms:++"
    assert cluster.statistics["size"] == bad.sum()
    assert cluster.statistics["latency_ms.center"] == pytest.approx(30, abs=1.5)
    assert cluster.statistics["latency_ms.rest_center"] == pytest.approx(10, abs=0.5)
    assert cluster.statistics["latency_ms.z_vs_rest"] > 5
    assert "db-3 (100% of cluster" in cluster.explanation["label"]
    assert re.search(r"^\d+ tasks \(\d+\.\d%\) form a separate cluster: latency_ms 3\.[01]x higher", cluster.description)
    assert cluster.confidence > 0.9
    assert _of_kind(patterns, PatternKind.OUTLIER) == []  # the slow host is a group, not outliers


def test_bad_host_cluster_is_found_through_the_kiln():
    matrix, bad = _bad_host()
    # The clustering detector alone (with attribution on, "label=db-3 is 3x slower" absorbs the cluster).
    kiln = Kiln(ThermalProfile.default().without_correlations().without_conservation().without_phase_transitions()
                .without_attribution())
    for i, row in enumerate(matrix.values):
        kiln.record(matrix.labels[i], dict(zip(matrix.metric_names, row)), timestamp=float(i), identity=i)
    [cluster] = _of_kind(kiln.cool(), PatternKind.CLUSTERING)
    assert {t.identity for t in cluster.involved} == set(np.flatnonzero(bad))
    assert "db-3" in cluster.explanation["label"]


def test_members_are_capped_closest_to_the_centre_first():
    matrix, bad = _bad_host()
    profile = ThermalProfile.default().with_max_involved(10)
    [cluster] = _of_kind(clustering.detect(matrix, profile), PatternKind.CLUSTERING)
    assert len(cluster.involved) == 10 and cluster.statistics["size"] == bad.sum()
    chosen = [t.index for t in cluster.involved]
    members = matrix.values[bad]
    center = np.median(members, axis=0)
    spread = 1.4826 * np.median(np.abs(members - center), axis=0)
    distance = np.sqrt((((matrix.values - center) / spread) ** 2).mean(axis=1))
    assert set(chosen) <= set(np.flatnonzero(bad))
    assert distance[chosen].max() < np.median(distance[bad])


def test_the_scenario_bad_host_cluster_is_found_and_explained():
    scenarios = pytest.importorskip("crackle_otel.scenarios")
    scenario = scenarios.bad_host_cluster()
    patterns = clustering.detect(scenario.matrix, ThermalProfile.default())
    assert scenario.missing(patterns) == [] and scenario.violations(patterns) == []
    assert all(scenario.is_true_positive(p) for p in patterns)
    [cluster] = _of_kind(patterns, PatternKind.CLUSTERING)
    assert "host-7 (100% of cluster" in cluster.explanation["label"]
    assert {t.label for t in cluster.involved} == {"host-7"}


# ------------------------------------------------------------ order-free
@pytest.mark.parametrize("n", [1000, 12000])  # 12000: the split search reads a 4000-task sample
def test_shuffled_input_gives_the_same_patterns(n):
    matrix, _ = _bad_host(n=n, share=0.04, seed=1)
    values = matrix.values.copy()
    values[::5, 2] = np.nan  # some tasks lack a metric
    matrix = _matrix(values, matrix.metric_names, matrix.labels)

    def summary(m):
        return sorted(
            (
                p.key,
                p.description,
                round(p.confidence, 9),
                tuple(sorted((k, round(v, 9)) for k, v in p.statistics.items())),
                frozenset(m.identities[t.index] for t in p.involved) if len(p.involved) < 128 else len(p.involved),
            )
            for p in clustering.detect(m, ThermalProfile.fast_cooling())
        )

    expected = summary(matrix)
    assert any(key.startswith("clustering:") for key, *_ in expected)
    for seed in range(3):
        assert summary(_shuffled(matrix, seed)) == expected


def test_the_same_input_gives_identical_patterns():
    matrix, _ = _bad_host(seed=2)
    first = [p.to_dict() for p in clustering.detect(matrix, ThermalProfile.default())]
    assert first and first == [p.to_dict() for p in clustering.detect(matrix, ThermalProfile.default())]


# ------------------------------------------------------------------ noise
@pytest.mark.parametrize("n, m", [(1000, 5), (1000, 50), (10_000, 16), (100_000, 5), (100_000, 50)])
def test_gaussian_noise_has_no_clusters_and_no_outliers(n, m):
    values = np.random.default_rng(n + m).normal(100, 15, size=(n, m))
    patterns = clustering.detect(_matrix(values, [f"m{j}" for j in range(m)]), ThermalProfile.default())
    assert patterns == []


@pytest.mark.parametrize("n, m", [(1000, 50), (100_000, 16)])
def test_gaussian_noise_at_fast_cooling_flags_at_most_rare_outliers(n, m):
    values = np.random.default_rng(7).normal(size=(n, m))
    patterns = clustering.detect(_matrix(values, [f"m{j}" for j in range(m)]), ThermalProfile.fast_cooling())
    assert _of_kind(patterns, PatternKind.CLUSTERING) == []
    assert sum(p.statistics["count"] for p in patterns) <= max(2, n * 1e-4)


@pytest.mark.parametrize(
    "shape",
    ["lognormal", "exponential", "uniform", "counts", "few_values", "student_t"],
)
def test_one_population_of_any_shape_is_not_a_cluster(shape):
    rng = np.random.default_rng(11)
    n, m = 5000, 6
    values = {
        "lognormal": lambda: rng.lognormal(3, 0.8, (n, m)),
        "exponential": lambda: rng.exponential(5, (n, m)),
        "uniform": lambda: rng.uniform(65, 80, (n, m)),
        "counts": lambda: rng.poisson(20, (n, m)).astype(float),
        "few_values": lambda: rng.integers(0, 10, (n, m)).astype(float),
        "student_t": lambda: rng.standard_t(5, (n, m)),
    }[shape]()
    patterns = clustering.detect(_matrix(values, [f"m{j}" for j in range(m)]), ThermalProfile.default())
    assert _of_kind(patterns, PatternKind.CLUSTERING) == []


def test_the_pure_noise_scenario_gives_nothing():
    scenarios = pytest.importorskip("crackle_otel.scenarios")
    assert clustering.detect(scenarios.pure_noise().matrix, ThermalProfile.default()) == []


def test_mostly_zero_counts_have_no_outliers_in_their_ordinary_tail():
    retries = np.random.default_rng(4).poisson(0.2, 3000).astype(float)  # 0, sometimes 1, rarely 3
    patterns = clustering.detect(_matrix(retries[:, None], ["retries"]), ThermalProfile.default())
    assert patterns == []


# --------------------------------------------------------------- outliers
def test_outliers_are_grouped_per_metric_and_side_worst_first():
    rng = np.random.default_rng(5)
    values = np.c_[rng.normal(100, 10, 2000), rng.normal(0, 1, 2000)]
    values[[10, 20, 30], 0] = [400, 600, 500]
    values[40, 0] = -300
    labels = ["api"] * 2000
    for i in (10, 20, 30):
        labels[i] = "db-9"
    patterns = clustering.detect(_matrix(values, ["latency_ms", "noise"], labels), ThermalProfile.default())
    assert _of_kind(patterns, PatternKind.CLUSTERING) == []
    by_key = {p.key: p for p in patterns}
    assert set(by_key) == {"outlier:latency_ms:+", "outlier:latency_ms:-"}
    high = by_key["outlier:latency_ms:+"]
    assert [t.index for t in high.involved] == [20, 30, 10]  # worst first
    assert high.statistics["count"] == 3 and high.statistics["latency_ms.worst_value"] == 600
    assert high.description.startswith("3 tasks (0.1%) are high outliers on latency_ms; worst db-9: latency_ms=600")
    assert high.explanation["label"].startswith("db-9 (100% of outliers")
    low = by_key["outlier:latency_ms:-"]
    assert [t.index for t in low.involved] == [40] and low.statistics["latency_ms.worst_z"] < -20
    assert all(t.role == "outlier" for p in patterns for t in p.involved)


def test_tasks_in_a_cluster_are_not_outliers_of_the_main_population():
    matrix, bad = _bad_host(n=2000, share=0.1, seed=3)
    values = matrix.values.copy()
    values[7, 0] = 200.0  # one task far from both groups
    patterns = clustering.detect(_matrix(values, matrix.metric_names, matrix.labels), ThermalProfile.default())
    assert len(_of_kind(patterns, PatternKind.CLUSTERING)) == 1
    [outlier] = _of_kind(patterns, PatternKind.OUTLIER)
    assert [t.index for t in outlier.involved] == [7]


def test_outlier_confidence_grows_with_distance():
    rng = np.random.default_rng(6)
    values = rng.normal(0, 1, (1000, 2))
    mild, wild = values.copy(), values.copy()
    # 10 sd: just past the limit of a tail never taken as lighter than exponential (see _tails).
    mild[0, 0], wild[0, 0] = 10.0, 40.0
    [p_mild] = clustering.detect(_matrix(mild, "ab"), ThermalProfile.default())
    [p_wild] = clustering.detect(_matrix(wild, "ab"), ThermalProfile.default())
    assert 0 <= p_mild.confidence < p_wild.confidence <= 1


# ---------------------------------------------------- missing metrics, NaN
def test_tasks_with_different_metric_sets_are_compared_on_what_they_share():
    rng = np.random.default_rng(8)
    n = 1200
    values = np.full((n, 3), np.nan)
    frontend = np.arange(n) < 600  # frontend tasks report a, b; backend tasks report b, c
    values[frontend, 0] = rng.normal(10, 1, frontend.sum())
    values[:, 1] = rng.normal(5, 0.5, n)
    values[~frontend, 2] = rng.normal(100, 10, (~frontend).sum())
    slow = ~frontend & (rng.random(n) < 0.08)
    values[slow, 2] *= 3
    matrix = _matrix(values, ["a", "b", "c"], np.where(slow, "db-3", "app"))
    [cluster] = _of_kind(clustering.detect(matrix, ThermalProfile.default()), PatternKind.CLUSTERING)
    assert cluster.metrics == ("c",)
    assert {t.identity for t in cluster.involved} == set(np.flatnonzero(slow))  # no frontend task pulled in


def test_tasks_sharing_no_metric_do_not_crash_and_are_left_out():
    rng = np.random.default_rng(9)
    values = np.full((600, 2), np.nan)
    values[:300, 0] = rng.normal(0, 1, 300)
    values[300:, 1] = rng.normal(50, 5, 300)
    values[299, 0] = 30.0
    patterns = clustering.detect(_matrix(values, ["x", "y"]), ThermalProfile.default())
    assert [(p.kind, p.key, [t.index for t in p.involved]) for p in patterns] == [
        (PatternKind.OUTLIER, "outlier:x:+", [299])
    ]


def test_nan_columns_are_ignored_and_sparse_ones_tolerated():
    matrix, bad = _bad_host(seed=4)
    n = matrix.n_tasks
    sparse = np.full(n, np.nan)
    sparse[::50] = np.random.default_rng(1).normal(size=n)[::50]
    values = np.c_[matrix.values, np.full(n, np.nan), sparse]
    wider = _matrix(values, [*matrix.metric_names, "never_set", "sparse"], matrix.labels)
    [cluster] = _of_kind(clustering.detect(wider, ThermalProfile.default()), PatternKind.CLUSTERING)
    assert {t.identity for t in cluster.involved} == set(np.flatnonzero(bad))
    assert "never_set" not in cluster.metrics


def test_ids_and_counters_are_not_analysed():
    rng = np.random.default_rng(10)
    n = 1000
    values = np.c_[np.arange(n) * 1000.0, rng.normal(0, 1, n)]
    values[-1, 0] = 1e12  # a counter's leap is not an outlier
    assert clustering.detect(_matrix(values, ["event_id", "x"]), ThermalProfile.default()) == []


# ---------------------------------------------------------------- too little
def test_fewer_tasks_than_min_tasks_find_nothing():
    profile = ThermalProfile.default()  # min_tasks = 8
    values = np.array([[1.0], [1.1], [0.9], [1.0], [1000.0]])
    assert clustering.detect(_matrix(values, ["x"]), profile) == []
    assert clustering.detect(_matrix(np.empty((20, 0)), []), profile) == []
    assert clustering.detect(_matrix(np.full((20, 2), np.nan), ["a", "b"]), profile) == []


# ------------------------------------------------ discrete metrics, time
def _span_like(columns, hosts=None, start=0.0):
    """A span group's matrix: every task labelled like its span, host.name as an attribute."""
    n = len(next(iter(columns.values())))
    attributes = [{"host.name": h} for h in hosts] if hosts is not None else None
    return MetricMatrix.from_columns(columns, labels=["GET /checkout"] * n, start=start, attributes=attributes)


def _discrete_columns(kind, rng, n):
    items = rng.integers(1, 9, n).astype(float)
    return {
        "items": {"cart.items": items},
        "flag": {"is_error": (rng.random(n) < 0.03).astype(float)},
        "status": {"http.response.status_code": rng.choice([200.0, 404.0, 500.0], n, p=[0.9, 0.07, 0.03])},
        # Derived from a count: one tight clump of sizes per item count, real gaps between clumps.
        "clumped": {"cart.items": items, "http.request.body.size": 1024 * items + rng.normal(0, 30, n)},
        "scaled": {"cart.items": items, "records_in": 10 * items, "records_out": 10 * items - (rng.random(n) < 0.1)},
    }[kind]


@pytest.mark.parametrize("n", [1000, 4000])
@pytest.mark.parametrize("kind", ["items", "flag", "status", "clumped", "scaled"])
def test_discrete_metrics_alone_never_make_a_cluster(kind, n):
    for seed in range(20):  # the gaps between values are real: a valley test alone is fooled now and then
        rng = np.random.default_rng(seed)
        columns = {"duration_ms": rng.lognormal(np.log(30), 0.2, n), **_discrete_columns(kind, rng, n)}
        patterns = clustering.detect(_span_like(columns), ThermalProfile.fast_cooling())
        assert _of_kind(patterns, PatternKind.CLUSTERING) == [], (seed, [str(p) for p in patterns])


def test_a_flag_may_set_a_cluster_apart_together_with_a_continuous_metric():
    rng = np.random.default_rng(13)
    n = 3000
    failed = rng.random(n) < 0.05
    duration = np.where(failed, rng.lognormal(np.log(4), 0.2, n), rng.lognormal(np.log(40), 0.2, n))  # errors fail fast
    columns = {"duration_ms": duration, "is_error": failed.astype(float), "cart.items": rng.integers(1, 9, n)}
    [cluster] = _of_kind(clustering.detect(_span_like(columns), ThermalProfile.default()), PatternKind.CLUSTERING)
    assert cluster.metrics[0] == "duration_ms" and "is_error" in cluster.metrics and "cart.items" not in cluster.metrics
    assert {t.index for t in cluster.involved} <= set(np.flatnonzero(failed))


def test_the_halves_of_a_latency_shift_are_not_clusters_nor_their_edges_outliers():
    rng = np.random.default_rng(14)
    n = 4000
    duration = rng.lognormal(np.log(30), 0.1, n) * np.where(np.arange(n) >= 1700, 1.8, 1.0)
    columns = {"duration_ms": duration, "cpu_ms": rng.normal(10, 1, n)}
    assert clustering.detect(_span_like(columns), ThermalProfile.default()) == []


def test_a_short_burst_in_time_is_a_phase_not_a_cluster():
    rng = np.random.default_rng(15)
    n = 4000
    duration = rng.lognormal(np.log(30), 0.2, n)
    duration[1000:1080] *= 3  # 80 consecutive slow tasks: an incident, reported by the phase detector
    columns = {"duration_ms": duration, "cpu_ms": rng.normal(10, 1, n)}
    assert _of_kind(clustering.detect(_span_like(columns), ThermalProfile.default()), PatternKind.CLUSTERING) == []


def test_outliers_are_judged_against_the_level_of_their_time():
    rng = np.random.default_rng(16)
    n = 3000
    i = np.arange(n)
    level = 20 * (1 + np.clip((i - 1000) / 1000, 0, 1) * 2)  # degrades 20 -> 60 ms between tasks 1000 and 2000
    duration = level * rng.lognormal(0, 0.05, n)
    duration[1500] = 1.6 * level[1500]  # far above its moment's level, within the spread of the whole window
    patterns = clustering.detect(_span_like({"duration_ms": duration}), ThermalProfile.default())
    [outlier] = patterns  # and no other task of the ramp, nor where it starts or ends
    assert [t.index for t in outlier.involved] == [1500]
    assert outlier.statistics["duration_ms.typical"] == pytest.approx(level[1500], rel=0.1)


def _cluster_and_members(scenario, profile):
    patterns = clustering.detect(scenario.matrix, profile)
    clusters = _of_kind(patterns, PatternKind.CLUSTERING)
    assert len(clusters) == 1, [str(p) for p in clusters]  # the slow host once, nothing else
    return clusters[0], patterns


@pytest.mark.parametrize("profile", [ThermalProfile.fast_cooling(), ThermalProfile.default(), ThermalProfile.slow_cooling()])
def test_checkout_spans_slow_host_is_one_cluster_named_by_its_host(profile):
    scenarios = pytest.importorskip("crackle_otel.scenarios")
    scenario = scenarios.checkout_spans()
    cluster, patterns = _cluster_and_members(scenario, profile)
    assert {"db.time_ms", "duration_ms"} <= set(cluster.metrics)
    assert cluster.explanation["host.name"].startswith("shop-7 (") and "0% elsewhere" in cluster.explanation["host.name"]
    hosts = [scenario.matrix.attributes[t.index]["host.name"] for t in cluster.involved]
    assert hosts.count("shop-7") >= 0.9 * len(hosts)
    assert all("cart.items" not in p.metrics and "http.request.body.size" not in p.metrics for p in patterns)


@pytest.mark.parametrize("profile", [ThermalProfile.fast_cooling(), ThermalProfile.default(), ThermalProfile.slow_cooling()])
def test_a_slow_host_is_one_cluster_across_a_latency_shift(profile):
    scenarios = pytest.importorskip("crackle_otel.scenarios")
    scenario = scenarios.slow_host_during_shift()
    n = scenario.matrix.n_tasks
    cluster, _ = _cluster_and_members(scenario, profile)
    assert "db.pool.wait_ms" not in cluster.metrics  # the shift's own metric does not set it apart
    assert "0% elsewhere" in cluster.explanation["host.name"]
    late = sum(t.index >= n // 2 for t in cluster.involved)
    assert 0.3 < late / len(cluster.involved) < 0.7  # before and after the shift alike
    assert "same time" in cluster.description


@pytest.mark.parametrize("profile", [ThermalProfile.fast_cooling(), ThermalProfile.default(), ThermalProfile.slow_cooling()])
def test_deploy_shift_halves_are_no_clusters(profile):
    scenarios = pytest.importorskip("crackle_otel.scenarios")
    patterns = clustering.detect(scenarios.deploy_shift().matrix, profile)
    assert _of_kind(patterns, PatternKind.CLUSTERING) == []


def test_outliers_outside_every_cluster_stay_reported_when_tasks_have_no_identity():
    # Consolidation folds an outlier set into a cluster made of the same tasks; tasks
    # recorded without an identity (None for all) must not all count as the same task.
    from crackle_otel.detect import run_detectors

    rng = np.random.default_rng(3)
    n = 2000
    a = np.where(rng.random(n) < 0.3, 100.0, 10.0) * np.exp(rng.normal(0, 0.05, n))
    b = np.where(a > 50, 5.0, 1.0) + rng.normal(0, 0.1, n)
    c = rng.normal(50, 1, n)
    c[[1500, 1700, 1900]] = 90  # far out on a metric the cluster does not involve
    matrix = MetricMatrix.from_rows([{"a": a[i], "b": b[i], "c": c[i]} for i in range(n)])
    patterns, _ = run_detectors(matrix, ThermalProfile.default())
    assert [p.key for p in _of_kind(patterns, PatternKind.OUTLIER)] == ["outlier:c:+"]
    assert all("outliers_merged" not in p.statistics for p in _of_kind(patterns, PatternKind.CLUSTERING))
