"""Recording in batches (``Furnace.record_spans``, ``Kiln.record_many``, ``SpanPositions.note_many``) must
leave exactly what recording one task at a time leaves: the same rows, counters, cool triggers and findings."""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
import pytest

from crackle_otel.kiln import Kiln
from crackle_otel.otel.config import CrackleConfig
from crackle_otel.otel.extract import ExtractionRules, from_readable_span
from crackle_otel.otel.furnace import Furnace
from crackle_otel.otel.simulate import Fault, Traffic
from crackle_otel.report.findings import SpanPositions

SLOW_SERVICE = "catalog"


def assert_same_window(a: Kiln | Furnace, b: Kiln | Furnace, group: str | None = None) -> None:
    left, right = (a.snapshot(), b.snapshot()) if group is None else (a.group_snapshot(group), b.group_snapshot(group))
    assert left.metric_names == right.metric_names
    np.testing.assert_array_equal(left.values, right.values)
    np.testing.assert_array_equal(left.timestamps, right.timestamps)
    assert (left.labels, left.identities, left.attributes) == (right.labels, right.identities, right.attributes)
    if left.failures is None or right.failures is None:
        assert left.failures is None and right.failures is None
    else:
        np.testing.assert_array_equal(left.failures, right.failures)
    np.testing.assert_array_equal(left.fresh, right.fresh)


def kiln_tasks(count: int) -> list[tuple]:
    """Tasks of varying names, attributes and failures, with bad values and names beyond max_metrics."""
    tasks = []
    for i in range(count):
        metrics: dict = {"duration_ms": 1.0 + i % 7, "bytes": i * 3}
        if i % 5 == 1:
            metrics = {"bytes": i, "duration_ms": 2.5}  # other order
        if i % 11 == 3:
            metrics["retries"] = math.nan  # not finite: the general path skips and counts it
        if i % 13 == 4:
            metrics = {"duration_ms": "slow"}  # nothing usable: not kept
        if i % 9 == 8:
            metrics[f"extra_{i}"] = 1.0  # names beyond max_metrics: skipped and counted
        attributes = {"host.name": f"h{i % 3}", "user": f"u{i}"} if i % 2 else None
        tasks.append((f"op{i % 4}", metrics, 1000.0 + i * 0.5, (1, i), attributes, i % 3))
    return tasks


@pytest.mark.parametrize("capacity", [8, 64])
def test_record_many_leaves_the_kiln_of_one_record_per_task(capacity, caplog):
    tasks = kiln_tasks(70)  # 70 > 8: the batch wraps the ring several times
    one_by_one = Kiln(capacity=capacity, max_metrics=4, seal_on_cool=False)
    batched = Kiln(capacity=capacity, max_metrics=4, seal_on_cool=False)
    with caplog.at_level(logging.WARNING, logger="crackle_otel.kiln"):
        kept = [one_by_one.record(label, metrics, timestamp=timestamp, identity=identity, attributes=attributes,
                                  failures=failures)
                for label, metrics, timestamp, identity, attributes, failures in copy.deepcopy(tasks)]
        logged_one_by_one = [record.getMessage() for record in caplog.records]
        caplog.clear()
        assert batched.record_many(copy.deepcopy(tasks[:30])) + batched.record_many(copy.deepcopy(tasks[30:])) == kept
        assert [record.getMessage() for record in caplog.records] == logged_one_by_one
    assert False in kept and True in kept
    assert_same_window(one_by_one, batched)
    assert one_by_one.stats() == batched.stats()
    stats = batched.stats()
    assert stats.rejected_values > 0 and stats.rejected_metric_names > 0 and stats.dropped == kept.count(True) - capacity


def extracted_traffic(seconds: float, seed: int = 3, bad_values: bool = True) -> list:
    rules = ExtractionRules()
    spans = Traffic(seconds=seconds, rate=40, seed=seed, fault=Fault(SLOW_SERVICE, at_s=seconds / 2, factor=6.0)).spans()
    extracted = [from_readable_span(span, rules) for span in spans]
    for i, span in enumerate(extracted if bad_values else ()):
        if i % 97 == 5:
            span.metrics["queue_ms"] = math.inf  # not finite: that task takes the general path
        if i % 89 == 7:
            span.metrics = {name: math.nan for name in span.metrics}  # nothing usable: rejected
    return extracted


def furnace_pair(**config) -> tuple[Furnace, Furnace]:
    settings = CrackleConfig(exporter="none", **config)
    return Furnace(settings, keep_reported=1000), Furnace(settings, keep_reported=1000)


def test_record_spans_leaves_the_furnace_of_record_span_per_span():
    spans = extracted_traffic(40.0)
    # A small window (cool_after 40) and fewer groups than the traffic has: batches cross the ring's
    # wrap and the fill threshold, and tasks of the groups beyond max_groups are turned away.
    one_by_one, batched = furnace_pair(kiln_capacity=80, max_groups=9)
    copies = copy.deepcopy(spans)  # the call graph adds self time to a span's metrics
    cools = []
    start = 0
    for size in [1, 7, 64, 500, 3, 250] * 40:
        chunk = slice(start, start + size)
        for span in spans[chunk]:
            one_by_one.record_span(span)
        batched.record_spans(copies[chunk])
        assert one_by_one.has_filled_groups == batched.has_filled_groups
        if one_by_one.has_filled_groups:  # as analyze and the gateway cool: between requests
            cools.append(one_by_one.cool(only_filled=True) == batched.cool(only_filled=True))
        start += size
        if start >= len(spans):
            break
    assert start >= len(spans) and len(cools) > 5 and all(cools)
    assert one_by_one.cool(final=True) == batched.cool(final=True)
    stats = batched.stats()
    assert one_by_one.stats() | {"cool_seconds_last": 0, "cool_seconds_total": 0} == stats | {
        "cool_seconds_last": 0, "cool_seconds_total": 0}
    assert stats["tasks_overflowed"] > 0 and stats["tasks_rejected"] > 0 and stats["values_rejected"] > 0
    assert stats["calls_joined"] > 0
    assert stats["patterns_reported"] > 0
    assert one_by_one.group_names() == batched.group_names()
    for group in batched.group_names():
        assert_same_window(one_by_one, batched, group)


def test_one_span_batches_and_record_span_agree_on_what_was_kept():
    furnace = Furnace(CrackleConfig(exporter="none", max_groups=1))
    spans = extracted_traffic(2.0, bad_values=False)
    groups = {span.group for span in spans}
    assert len(groups) > 1
    kept = [furnace.record_span(span) for span in spans]
    first_group = spans[0].group
    assert kept == [span.group == first_group for span in spans]  # the one group made; the others overflow


@pytest.mark.parametrize("batches", [[5], [3, 4, 9], [30], [1] * 12])
def test_note_many_leaves_the_ring_of_one_note_per_task(batches):
    one_by_one, batched = SpanPositions(8), SpanPositions(8)
    ordinal = 100
    for size in batches:
        ordinals = list(range(ordinal, ordinal + size))
        for each in ordinals:
            one_by_one.note("g", each)
        batched.note_many("g", ordinals)
        ordinal += size
        assert one_by_one.recorded("g") == batched.recorded("g")
        for rows in range(min(8, batched.recorded("g")) + 1):
            np.testing.assert_array_equal(one_by_one.window_ordinals("g", rows), batched.window_ordinals("g", rows))
