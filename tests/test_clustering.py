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
    kiln = Kiln(ThermalProfile.default().without_correlations().without_conservation().without_phase_transitions())
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
    mild[0, 0], wild[0, 0] = 7.0, 40.0
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
