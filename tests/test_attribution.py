"""The attribution detector: which attribute values carry the slow, heavy and failing tasks, and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from crackle_otel import MetricMatrix, PatternKind, ThermalProfile
from crackle_otel.attribution_scenarios import (
    FAILING_ROUTE,
    SLOW_HOST,
    attribute_noise,
    failing_route,
    heavy_tenant,
    slow_host,
    slow_version,
)
from crackle_otel.detect import attribution, run_detectors
from crackle_otel.failures import Failure
from crackle_otel.otel.reporting import ReportedPatterns

DEFAULT = ThermalProfile.default()


def attributions(matrix, profile=DEFAULT):
    patterns, errors = run_detectors(matrix, profile)
    assert not errors
    return [p for p in patterns if p.kind is PatternKind.ATTRIBUTION]


def test_a_slow_host_is_named_with_its_figures_and_links_to_its_worst_spans():
    scenario = slow_host(seed=1, n=400, factor=3.0)
    (found,) = attributions(scenario.matrix)
    assert found.key == f"attribution:host.name={SLOW_HOST}"
    assert found.description.startswith(f"host.name={SLOW_HOST}: duration_ms ")
    stats = found.statistics
    assert 2.4 < stats["duration_ms.median_ratio"] < 3.6
    assert stats["duration_ms.median"] == pytest.approx(stats["duration_ms.rest_median"] * stats["duration_ms.median_ratio"])
    assert stats["duration_ms.p95"] > stats["duration_ms.rest_p95"]
    assert stats["duration_ms.superiority"] > 0.9 and stats["duration_ms.q_value"] < 1e-6
    assert 0.08 < stats["share"] < 0.18 and stats["tasks_with_value"] + stats["tasks_rest"] == 400
    assert f"p95 {stats['duration_ms.p95']:.4g} vs {stats['duration_ms.rest_p95']:.4g} ms" in found.description
    assert f"of tasks ({stats['tasks_with_value']:.0f} of 400)" in found.description
    # The worst spans of the value first, then a few typical spans of the rest.
    roles = [task.role for task in found.involved]
    assert roles[0] == "attributed" and set(roles) == {"attributed", "rest"}
    duration = scenario.matrix.column("duration_ms")
    hosts = [scenario.matrix.attributes[t.index]["host.name"] for t in found.involved]
    attributed = [t.index for t in found.involved if t.role == "attributed"]
    assert all(h == SLOW_HOST for h, t in zip(hosts, found.involved) if t.role == "attributed")
    assert all(h != SLOW_HOST for h, t in zip(hosts, found.involved) if t.role == "rest")
    assert list(duration[attributed]) == sorted(duration[attributed], reverse=True)
    assert found.confidence > 0.9


def test_a_failing_route_is_named_by_its_error_rate_with_the_signals_that_agree():
    (found,) = attributions(failing_route(seed=2, n=2000).matrix)
    assert found.key == f"attribution:http.route={FAILING_ROUTE}"
    stats = found.statistics
    assert stats["error_rate.rate"] > 5 * stats["error_rate.rest_rate"]
    assert stats["error_rate.failed_tasks"] >= 10
    # Status, exception and HTTP 5xx mark the same tasks: one phrase, not three.
    assert "errors " in found.description and "exceptions, HTTP 5xx" in found.description
    assert found.description.count("% vs ") == 1
    # The method is the same tasks (every POST is /pay): named once, as the more specific attribute.
    assert "http.request.method=POST" in found.explanation["same tasks"]
    failed = failing_route(seed=2, n=2000).matrix.failure_bits
    assert all(failed[t.index] for t in found.involved[:5])  # failing spans of the route first


@pytest.mark.parametrize("make, key", [
    (lambda: slow_version(seed=3, n=600), "attribution:service.version=1.5.0"),
    (lambda: heavy_tenant(seed=3, n=600), "attribution:app.tenant=acme"),
])
def test_a_slow_version_and_a_heavy_tenant_are_named(make, key):
    assert [p.key for p in attributions(make().matrix)] == [key]


@pytest.mark.parametrize("seed", range(3))
def test_fifty_noise_attributes_yield_nothing(seed):
    assert attributions(attribute_noise(seed=seed, n=2000).matrix) == []


def test_high_cardinality_attributes_are_skipped_and_counted_never_reported_value_by_value():
    rng = np.random.default_rng(4)
    n = 3000
    users = rng.integers(0, 500, n)
    users[: n // 5] = 7  # one user with a fifth of the requests, all slow
    hosts = rng.integers(0, 4, n)
    duration = rng.lognormal(3, 0.3, n) * np.where(users == 7, 4.0, 1.0) * np.where(hosts == 3, 2.0, 1.0)
    matrix = MetricMatrix.from_columns(
        {"duration_ms": duration}, labels=["GET /x"] * n,
        attributes=[{"user.name": f"user-{u}", "host.name": f"h{h}"} for u, h in zip(users, hosts)],
    )
    found = attributions(matrix)
    assert [p.key for p in found] == ["attribution:host.name=h3"]
    assert found[0].statistics["high_cardinality_attributes"] == 1


def test_one_slow_host_does_not_make_the_others_fast():
    # Against a rest that holds the slow host, every other host looks faster; against its peers it is not.
    (found,) = attributions(slow_host(seed=5, n=3000, factor=3.0).matrix, ThermalProfile.fast_cooling())
    assert found.key == f"attribution:host.name={SLOW_HOST}"


def test_a_value_that_only_rides_along_with_the_cause_is_explained_away():
    rng = np.random.default_rng(6)
    n = 3000
    new = np.arange(n) >= n // 2
    # A flag enabled on most requests of the new version (and few of the old), doing nothing itself.
    flag = rng.random(n) < np.where(new, 0.7, 0.2)
    duration = rng.lognormal(3, 0.3, n) * np.where(new, 1.8, 1.0)
    matrix = MetricMatrix.from_columns(
        {"duration_ms": duration},
        attributes=[{"service.version": "2.0" if late else "1.9", "feature.flag": "on" if f else "off"}
                    for late, f in zip(new, flag)],
    )
    assert [p.key for p in attributions(matrix)] == ["attribution:service.version=2.0"]


def test_two_values_are_one_finding_stated_from_the_higher_side():
    rng = np.random.default_rng(7)
    n = 1000
    cached = rng.random(n) < 0.5
    duration = rng.lognormal(3, 0.3, n) * np.where(cached, 1.0, 3.0)
    matrix = MetricMatrix.from_columns({"duration_ms": duration},
                                       attributes=[{"cache": "hit" if c else "miss"} for c in cached])
    assert [p.key for p in attributions(matrix)] == ["attribution:cache=miss"]


def test_aliases_are_one_pattern():
    scenario = slow_host(seed=8, n=800)
    rows = [dict(a, **{"k8s.pod.name": "pod-" + a["host.name"]}) for a in scenario.matrix.attributes]
    matrix = MetricMatrix.from_columns({name: scenario.matrix.column(name) for name in scenario.matrix.metric_names},
                                       attributes=rows)
    (found,) = attributions(matrix)
    assert found.key in (f"attribution:host.name={SLOW_HOST}", f"attribution:k8s.pod.name=pod-{SLOW_HOST}")
    assert "same tasks" in found.explanation


def test_attributes_describing_the_failure_are_not_attributions_of_it():
    rng = np.random.default_rng(9)
    n = 2000
    failed = rng.random(n) < 0.05
    attributes = [{"error.type": "timeout"} if f else {} for f in failed]
    for row, host in zip(attributes, rng.integers(0, 4, n)):
        row["host.name"] = f"h{host}"
    matrix = MetricMatrix.from_columns({"duration_ms": rng.lognormal(3, 0.3, n), "is_error": failed.astype(float)},
                                       attributes=attributes)
    assert attributions(matrix) == []


def test_status_codes_and_exception_bits_feed_rates_without_an_error_status():
    rng = np.random.default_rng(10)
    n = 3000
    region = rng.integers(0, 3, n)
    unavailable = rng.random(n) < np.where(region == 1, 0.08, 0.005)
    grpc = np.where(unavailable, 14.0, 0.0)  # UNAVAILABLE, while the span status stayed UNSET
    thrown = rng.random(n) < np.where(region == 2, 0.1, 0.005)
    matrix = MetricMatrix.from_columns(
        {"duration_ms": rng.lognormal(3, 0.3, n), "rpc.grpc.status_code": grpc},
        attributes=[{"cloud.region": f"r{r}"} for r in region],
        failures=np.where(thrown, int(Failure.EXCEPTION), 0),
    )
    found = {p.key: p for p in attributions(matrix)}
    assert set(found) == {"attribution:cloud.region=r1", "attribution:cloud.region=r2"}
    assert "grpc_error_rate" in found["attribution:cloud.region=r1"].metrics
    assert "exception_rate" in found["attribution:cloud.region=r2"].metrics
    assert "gRPC errors" in found["attribution:cloud.region=r1"].description


def test_a_metric_mostly_at_one_value_is_compared_by_how_often_it_leaves_it():
    rng = np.random.default_rng(11)
    n = 3000
    host = rng.integers(0, 6, n)
    retries = rng.poisson(np.where(host == 2, 0.6, 0.05))
    matrix = MetricMatrix.from_columns({"duration_ms": rng.lognormal(3, 0.3, n), "retries": retries.astype(float)},
                                       attributes=[{"host.name": f"h{h}"} for h in host])
    (found,) = attributions(matrix)
    assert found.key == "attribution:host.name=h2"
    assert "retries > 0 on " in found.description
    assert found.statistics["retries.usual_value"] == 0


def test_a_cluster_and_outliers_of_the_same_tasks_are_folded_into_the_attribution():
    matrix = slow_host(seed=12, n=3000, factor=3.0).matrix
    patterns, _ = run_detectors(matrix, DEFAULT)
    kinds = [p.kind for p in patterns]
    assert PatternKind.CLUSTERING not in kinds
    (found,) = [p for p in patterns if p.kind is PatternKind.ATTRIBUTION]
    assert found.statistics["cluster.size"] == pytest.approx(found.statistics["tasks_with_value"], rel=0.2)
    assert "separate cluster" in found.description
    # The clustering detector alone does find the cluster: it was folded, not missed.
    alone, _ = run_detectors(matrix, DEFAULT.without_attribution())
    assert PatternKind.CLUSTERING in [p.kind for p in alone]


def test_a_standing_attribution_is_reported_once_while_it_holds():
    reported = ReportedPatterns(forget_after_cools=10)
    fresh_counts = []
    for cool in range(8):
        (found,) = attributions(failing_route(seed=20 + cool, n=3000).matrix)
        fresh, _ = reported.select([found], cool)
        fresh_counts.append(len(fresh))
    assert fresh_counts[0] == 1 and sum(fresh_counts) <= 2, fresh_counts


def test_distinguishing_values_say_which_values_set_chosen_tasks_apart():
    scenario = slow_host(seed=13, n=800)
    chosen = np.flatnonzero([a["host.name"] == SLOW_HOST for a in scenario.matrix.attributes])
    (value,) = attribution.distinguishing_values(scenario.matrix, chosen)
    assert (value.attribute, value.value, value.inside_share) == ("host.name", SLOW_HOST, 1.0)
    assert value.outside_share == 0.0 and value.p_value < 1e-6


def test_nothing_below_the_minimum_of_tasks_per_value():
    matrix = slow_host(seed=14, n=60).matrix  # ~7 spans on the slow host
    assert attributions(matrix, ThermalProfile.slow_cooling()) == []


def test_through_a_real_sdk_the_processor_names_the_region_whose_spans_throw():
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from crackle_otel.otel.processor import CrackleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    processor = CrackleSpanProcessor(None, cool_interval_millis=3_600_000, exporter="none", max_queue_size=4096)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("shop.app")
    rng = np.random.default_rng(15)
    for _ in range(3000):
        region = f"r{rng.integers(0, 3)}"
        span = tracer.start_span("GET /quote", attributes={"cloud.region": region, "quote.items": int(rng.integers(1, 9))})
        if rng.random() < (0.08 if region == "r2" else 0.004):
            span.record_exception(TimeoutError("upstream"))  # handled: the status stays UNSET
        span.end()
    assert processor.force_flush(timeout_millis=30_000)
    found = [p for p in processor.reported_patterns() if p.kind is PatternKind.ATTRIBUTION]
    assert [p.key for p in found] == ["attribution:cloud.region=r2"]
    assert found[0].metrics[0] == "exception_rate" and found[0].group == "shop | GET /quote"
    provider.shutdown()


def test_a_span_name_attribution_is_plotted_from_its_tasks():
    # Groups that mix span names compare the label as a pseudo-attribute; the report must find its tasks too.
    from crackle_otel.report.evidence import evidence

    rng = np.random.default_rng(11)
    n = 1000
    slow = rng.random(n) < 0.2
    matrix = MetricMatrix.from_columns({"duration_ms": rng.lognormal(3, 0.3, n) * np.where(slow, 3.0, 1.0)},
                                       labels=["GET /slow" if s else "GET /fast" for s in slow])
    (found,) = attributions(matrix)
    assert found.key == f"attribution:{attribution.LABEL}=GET /slow"
    plot = evidence(found, matrix)
    assert plot["plot"] == "groups"
    assert len(plot["groups"]["label=GET /slow"]["t"]) == int(slow.sum())
