"""Kiln.record stores plain-number dicts through a cached row layout; it must keep exactly what the
general path keeps (the same kiln fed the same metrics as (name, value) pairs is the reference)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crackle_otel.errors import KilnCooledError
from crackle_otel.kiln import Kiln


def twin_kilns(**kwargs) -> tuple[Kiln, Kiln]:
    return Kiln(seal_on_cool=False, **kwargs), Kiln(seal_on_cool=False, **kwargs)


def record_both(fast: Kiln, general: Kiln, label: str, metrics: dict, **kwargs) -> bool:
    kept = fast.record(label, metrics, **kwargs)  # a dict of plain numbers: the layout path
    assert general.record(label, list(metrics.items()), **kwargs) == kept  # pairs: the general path
    return kept


def assert_same(fast: Kiln, general: Kiln) -> None:
    a, b = fast.snapshot(), general.snapshot()
    assert a.metric_names == b.metric_names
    np.testing.assert_array_equal(a.values, b.values)  # NaN where a task lacks a metric, in both
    assert (a.labels, a.identities, a.attributes) == (b.labels, b.identities, b.attributes)
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    assert fast.stats() == general.stats()


def test_plain_numbers_are_stored_as_by_the_general_path_whatever_the_order_of_names():
    fast, general = twin_kilns(capacity=64)
    record_both(fast, general, "a", {"x": 1, "y": 2.5, "flag": True}, timestamp=1.0, identity=(1, 2))
    record_both(fast, general, "b", {"y": -3.0, "x": 4}, timestamp=2.0)  # other order: not the first columns
    record_both(fast, general, "c", {"z": 7, "flag": False}, timestamp=3.0, attributes={"host.name": "h1"})
    record_both(fast, general, "d", {"x": 2**53 + 1, "y": 1e308}, timestamp=4.0)  # large but finite
    assert_same(fast, general)
    matrix = fast.snapshot()
    flag = matrix.column("flag")
    assert flag[0] == 1.0 and math.isnan(flag[1]) and flag[2] == 0.0
    assert math.isnan(matrix.column("z")[0])
    assert matrix.column("x")[1] == 4.0 and matrix.column("y")[1] == -3.0


@pytest.mark.parametrize(
    "bad",
    [
        {"x": math.nan},
        {"x": math.inf},
        {"x": math.inf, "y": -math.inf},  # inf - inf inside a sum
        {"x": 10**400},  # beyond float range
        {"x": 1e308, "y": 1e308},  # each finite, their sum is not: must not be rejected
        {"x": "1.5"},  # a numeric string is not a number
        {"x": np.float64(2.0), "y": np.bool_(True)},  # not plain types: the general rules decide
    ],
)
def test_bad_or_unusual_values_get_the_general_paths_verdict(bad):
    fast, general = twin_kilns(capacity=8)
    record_both(fast, general, "t", {"ok": 1.0, **bad}, timestamp=1.0)
    assert_same(fast, general)
    if all(isinstance(v, float) and math.isfinite(v) for v in bad.values()):
        assert fast.stats().rejected_values == 0


def test_names_beyond_max_metrics_are_skipped_and_counted_the_same_way():
    fast, general = twin_kilns(capacity=8, max_metrics=3)
    record_both(fast, general, "t", {"a": 1, "b": 2}, timestamp=1.0)
    record_both(fast, general, "t", {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}, timestamp=2.0)
    record_both(fast, general, "t", {"d": 4}, timestamp=3.0)  # a name without a column, again
    assert_same(fast, general)
    assert fast.stats().rejected_metric_names == 3


def test_a_growing_matrix_and_a_wrapping_ring_keep_rows_whole():
    fast, general = twin_kilns(capacity=5)
    for i in range(23):
        # New names every few rows (the matrix grows past 16, 32 columns); rows of other shapes overwrite
        # slots of wider ones: the columns a new row lacks must read NaN, not the old row's values.
        metrics = {f"m{j}": float(i * 100 + j) for j in range(i % 4, 2 * i + 1)}
        record_both(fast, general, f"t{i}", metrics, timestamp=float(i), identity=i)
        assert_same(fast, general)
    assert fast.stats().dropped == 18 and len(fast.metric_names) == 45


def test_reset_and_sealing_behave_as_before():
    kiln = Kiln(capacity=4)  # seal_on_cool=True
    kiln.record("t", {"x": 1.0, "y": 2}, timestamp=1.0)
    kiln.cool()
    with pytest.raises(KilnCooledError):
        kiln.record("t", {"x": 1.0, "y": 2}, timestamp=2.0)
    kiln.reset()
    assert kiln.record("t", {"y": 5, "x": 6.0}, timestamp=3.0)
    matrix = kiln.snapshot()
    assert matrix.metric_names == ("y", "x") and matrix.values.tolist() == [[5.0, 6.0]]


def test_rows_are_allocated_as_the_window_fills_and_every_task_keeps_its_place():
    import tracemalloc

    tracemalloc.start()
    quiet = Kiln(capacity=4096, seal_on_cool=False)  # a low-volume group of a real system
    for i in range(10):
        quiet.record("GET /rare", {"duration_ms": float(i)}, timestamp=float(i))
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert held < 64 * 1024, held  # a full 4,096-row window of 16 columns is 512 KiB of values alone
    assert quiet.snapshot().values[:, 0].tolist() == [float(i) for i in range(10)]

    fast, general = twin_kilns(capacity=300)
    for i in range(1000):  # grows 64 -> 128 -> 256 -> 300 rows, then slides
        metrics = {"x": float(i), f"m{i % 20}": float(-i)}  # new columns arrive while rows grow
        attributes = {"host.name": f"h{i % 3}"} if i % 2 else None
        record_both(fast, general, f"t{i}", metrics, timestamp=float(i), identity=(1, i), attributes=attributes)
        if i in (63, 64, 127, 299, 300, 999):
            snapshot = fast.snapshot()
            kept = list(range(max(0, i + 1 - 300), i + 1))
            assert snapshot.values[:, 0].tolist() == [float(k) for k in kept]
            assert list(snapshot.identities) == [(1, k) for k in kept]
            assert [(row or {}).get("host.name") for row in snapshot.attributes] == [f"h{k % 3}" if k % 2 else None
                                                                             for k in kept]
    assert_same(fast, general)
    assert fast.stats().dropped == 700
