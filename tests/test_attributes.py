"""Descriptive attributes in the kiln: dictionary-encoded, bounded, read back as they were recorded."""

from __future__ import annotations

import tracemalloc

import numpy as np

from crackle_otel import Kiln
from crackle_otel.attributes import MAX_VALUE_LENGTH, MAX_VALUES_PER_ATTRIBUTE, TABLE_SIZE, AttributeTable


def record(kiln, i, attributes):
    kiln.record("GET /x", {"duration_ms": float(i % 7)}, timestamp=float(i), attributes=attributes)


def test_recorded_attributes_read_back_per_task_from_the_matrix_and_tasks():
    kiln = Kiln(capacity=8, seal_on_cool=False)
    rows = [{"host.name": "a", "http.route": "/x"}, None, {"http.route": "/y"}, {"host.name": "b", "tier": "gold"}]
    for i, row in enumerate(rows):
        record(kiln, i, row)
    matrix = kiln.snapshot()
    assert list(matrix.attributes) == rows
    assert matrix.attributes == tuple(rows)  # compares as the sequence of mappings it stands for
    assert [t.metadata for t in kiln.tasks()] == [row or {} for row in rows]
    table = matrix.attribute_table
    assert table.keys == ("host.name", "http.route", "tier")
    values, codes = table.column("host.name")
    assert [values[c - 1] if c > 0 else None for c in codes] == ["a", None, None, "b"]


def test_the_ring_buffer_overwrites_attributes_with_the_row():
    kiln = Kiln(capacity=3, seal_on_cool=False)
    for i in range(5):
        record(kiln, i, {"n": str(i)} if i != 3 else None)
    assert list(kiln.snapshot().attributes) == [{"n": "2"}, None, {"n": "4"}]


def test_a_high_cardinality_attribute_stops_keeping_values_and_is_counted():
    kiln = Kiln(capacity=2000, seal_on_cool=False)
    for i in range(2000):
        record(kiln, i, {"user.name": f"user-{i}", "host.name": f"h{i % 4}"})
    stats = kiln.stats()
    assert stats.attribute_values_not_kept == 2000 - TABLE_SIZE
    table = kiln.snapshot().attribute_table
    assert table.high_cardinality == {"user.name"}
    assert len(table.column("user.name")[0]) <= TABLE_SIZE  # memory: values held per name are bounded
    assert {row["host.name"] for row in table} == {"h0", "h1", "h2", "h3"}  # other names are untouched
    assert all("user.name" not in row for row in table[TABLE_SIZE:])


def test_values_that_come_and_go_are_compacted_not_taken_for_high_cardinality():
    # Pods replaced over time: 10 live at once, 1,000 over the kiln's life.
    kiln = Kiln(capacity=200, seal_on_cool=False)
    for i in range(5000):
        record(kiln, i, {"k8s.pod.name": f"pod-{i // 50 * 10 + i % 10}"})
    assert kiln.stats().attribute_values_not_kept == 0
    matrix = kiln.snapshot()
    assert matrix.attribute_table.high_cardinality == frozenset()
    expected = [f"pod-{i // 50 * 10 + i % 10}" for i in range(4800, 5000)]
    assert [row["k8s.pod.name"] for row in matrix.attributes] == expected
    assert len(matrix.attribute_table.column("k8s.pod.name")[0]) <= TABLE_SIZE


def test_a_burst_of_ids_is_forgotten_once_the_window_has_turned_over():
    kiln = Kiln(capacity=500, seal_on_cool=False)
    for i in range(1000):
        record(kiln, i, {"client": f"scanner-{i}"})  # a scan: every request a new value
    assert "client" in kiln.snapshot().attribute_table.high_cardinality
    for i in range(1000, 2200):
        record(kiln, i, {"client": f"app-{i % 3}"})
    table = kiln.snapshot().attribute_table
    assert table.high_cardinality == frozenset()
    assert {row["client"] for row in table} == {"app-0", "app-1", "app-2"}


def test_names_beyond_the_cap_are_skipped_and_counted_and_odd_values_never_raise():
    kiln = Kiln(capacity=10, seal_on_cool=False)
    record(kiln, 0, {f"k{j}": "v" for j in range(40)})
    record(kiln, 1, {"long": "x" * 1000, "number": 7, "list": [1, 2]})
    stats = kiln.stats()
    assert stats.rejected_attribute_names == 8 + 3  # 40 - 32 names; then 3 new ones, no room left
    first, second = kiln.snapshot().attributes
    assert len(first) == 32
    assert second is None

    roomy = Kiln(capacity=10, seal_on_cool=False)
    record(roomy, 0, {"long": "x" * 1000, "number": 7, "list": [1, 2]})
    (row,) = roomy.snapshot().attributes
    assert row == {"long": "x" * MAX_VALUE_LENGTH, "number": "7", "list": "[1, 2]"}


def test_attributes_cost_a_few_bytes_per_task_not_a_dictionary():
    kiln = Kiln(capacity=4096, seal_on_cool=False)
    rng = np.random.default_rng(0)
    for i in range(4096):  # names and the (grown) code matrix: a fixed cost
        record(kiln, i, {f"attr.{j}": "v" for j in range(16)})
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(8192):
        # Fresh strings every span, as a gateway decodes them.
        record(kiln, i, {f"attr.{j}": "".join(["value-", str(rng.integers(0, 6)), "-" * 20]) for j in range(16)})
    per_task = (tracemalloc.get_traced_memory()[0] - before) / 4096
    tracemalloc.stop()
    assert per_task < 150, per_task  # a dict of 16 fresh strings per task kept ~2,500 bytes


def test_tables_built_from_mappings_mark_nothing_high_cardinality_but_keep_every_value():
    rows = [{"id": f"i{k}"} for k in range(3 * MAX_VALUES_PER_ATTRIBUTE)]
    table = AttributeTable.from_mappings(rows)
    assert list(table) == rows and table.high_cardinality == frozenset()
    assert table.take(np.array([2, 0])) == [rows[2], rows[0]]


def test_long_values_sharing_their_first_characters_are_one_value_and_cost_nothing_more():
    kiln = Kiln(capacity=1000, seal_on_cool=False)
    prefix = "select * from orders where " + "x" * MAX_VALUE_LENGTH
    for i in range(1000):  # the ring's rows are allocated as it fills: a fixed cost
        record(kiln, i, {"db.statement": prefix + f"id = {i}"})
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(1000, 6000):
        record(kiln, i, {"db.statement": prefix + f"id = {i}"})
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    values, _ = kiln.snapshot().attribute_table.column("db.statement")
    assert values == (prefix[:MAX_VALUE_LENGTH],)
    assert grown < 50_000, grown  # no per-span entry anywhere (5,000 statements of ~170 characters)


def test_the_processor_counts_attribute_values_it_did_not_keep():
    from opentelemetry.sdk.trace import TracerProvider

    from crackle_otel.otel.processor import CrackleSpanProcessor

    provider = TracerProvider()
    processor = CrackleSpanProcessor(None, cool_interval_millis=3_600_000, exporter="none", max_queue_size=4096)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    for i in range(1000):
        tracer.start_span("GET /x", attributes={"session": f"s-{i}", "route": "/x"}).end()
    assert processor.force_flush(timeout_millis=30_000)
    stats = processor.stats()
    assert stats["attribute_values_not_kept"] == 1000 - TABLE_SIZE and stats["attribute_names_rejected"] == 0
    provider.shutdown()
