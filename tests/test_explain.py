"""Patterns explain themselves with the label and attribute values that set their tasks apart."""

from __future__ import annotations

import numpy as np

from crackle_otel import Kiln, PatternKind, ThermalProfile
from crackle_otel.detect._explain import Explainer
from crackle_otel.matrix import MetricMatrix


def _matrix(n=400, bad_every=10):
    rows, attributes = [], []
    for i in range(n):
        bad = i % bad_every == 0
        rows.append({"latency_ms": 100.0 if bad else 10.0 + (i % 7)})
        attributes.append({"host.name": "db-3" if bad else f"db-{i % 3 + 4}", "region": "eu"})
    return MetricMatrix.from_rows(rows, labels=["GET /x"] * n, attributes=attributes)


def test_over_represented_attribute_values_are_named_with_their_shares():
    matrix = _matrix()
    chosen = np.arange(0, 400, 10)
    why = Explainer(matrix).over_represented(chosen, noun="cluster")
    assert why == {"host.name": "db-3 (100% of cluster, 0% elsewhere)"}


def test_values_common_everywhere_explain_nothing():
    matrix = _matrix()
    assert Explainer(matrix).over_represented(np.arange(0, 200)) == {}


def test_tasks_without_attributes_are_not_an_explanation():
    matrix = MetricMatrix.from_rows([{"a": 1.0}] * 10, attributes=[None] * 5 + [{"k": "v"}] * 5)
    assert Explainer(matrix).over_represented(np.arange(5)) == {}


def test_kiln_carries_recorded_attributes_to_the_matrix_and_tasks():
    kiln = Kiln()
    kiln.record("span", {"v": 1.0}, attributes={"host.name": "a"})
    kiln.record("span", {"v": 2.0})
    matrix = kiln.snapshot()
    assert matrix.attributes == ({"host.name": "a"}, None)
    assert [t.metadata for t in kiln.tasks()] == [{"host.name": "a"}, {}]


def test_a_cluster_pattern_names_the_host_that_sets_it_apart():
    rng = np.random.default_rng(3)
    kiln = Kiln(ThermalProfile.default().without_attribution())  # (with it, host-7's attribution absorbs the cluster)
    for i in range(2000):
        host = f"host-{rng.integers(0, 10)}"
        slow = host == "host-7"
        kiln.record("GET /checkout", {"duration_ms": rng.lognormal(np.log(40), 0.15) * (3 if slow else 1),
                                      "cpu_ms": rng.normal(30, 3) * (2 if slow else 1)},
                    timestamp=float(i), attributes={"host.name": host})
    clusters = [p for p in kiln.cool() if p.kind is PatternKind.CLUSTERING]
    assert clusters
    assert any("host-7" in p.explanation.get("host.name", "") for p in clusters), [dict(p.explanation) for p in clusters]


def test_a_value_shared_by_chance_is_no_explanation():
    # 2 of 5 chosen tasks on host-0, which carries 10% of the others: not evidence.
    attributes = [{"host.name": f"host-{i % 10}"} for i in range(1000)]
    matrix = MetricMatrix.from_rows([{"a": 1.0}] * 1000, attributes=attributes)
    chosen = np.array([0, 10, 1, 2, 3])
    assert "host.name" not in Explainer(matrix).over_represented(chosen)


def test_a_conservation_violation_names_what_its_violators_share():
    rng = np.random.default_rng(5)
    kiln = Kiln(ThermalProfile.default())
    for i in range(1200):
        worker = f"worker-{i % 4}"
        records_in = float(rng.integers(900, 1100))
        errors = float(rng.poisson(3))
        lost = 40.0 if (i >= 800 and worker == "worker-2") else 0.0
        kiln.record("process_batch", {"records_in": records_in, "errors": errors,
                                      "records_out": records_in - errors - lost},
                    timestamp=float(i), attributes={"worker": worker})
    violations = [p for p in kiln.cool() if p.kind is PatternKind.CONSERVATION_VIOLATION]
    assert violations
    assert "worker-2 (100% of violators" in violations[0].explanation.get("worker", ""), dict(violations[0].explanation)


def test_a_phase_transition_names_the_attribute_value_that_came_with_it():
    from crackle_otel.scenarios import deploy_shift

    patterns = Kiln(ThermalProfile.default())
    scenario = deploy_shift()
    matrix = scenario.matrix
    for i in range(matrix.n_tasks):
        patterns.record(matrix.labels[i], dict(zip(matrix.metric_names, matrix.values[i].tolist())),
                        timestamp=float(matrix.timestamps[i]), attributes=matrix.attributes[i])
    (shift,) = [p for p in patterns.cool() if p.kind is PatternKind.PHASE_TRANSITION and p.metrics == ("duration_ms",)]
    assert shift.explanation["service.version"].startswith("1.5.0 (100% of tasks after")
