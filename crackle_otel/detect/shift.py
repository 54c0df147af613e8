"""Shifts at a stream's edge: the newest tasks against the group's usual.

The phase detector searches a whole window for change points and needs tasks
on both sides of one, so a change that began seconds ago stays invisible to it
until enough tasks follow, and in a sparse group that can take minutes. In a
stream that is the change that matters most: an incident begins at the edge.
This detector compares, metric by metric, the newest tasks of a stream (those
no earlier cool saw, widened to at least ``MIN_RECENT`` tasks, none more than
``MAX_AGE_S`` older than the newest) with the ``REFERENCE`` tasks before them:

- a rank test (Mann-Whitney U): latency is heavy-tailed, ranks do not care;
- an effect that matters: the ratio of medians reaches the profile's
  ``min_shift_ratio`` (metrics of positive values only: times, sizes, counts);
- false alarms controlled across groups and cools, not per test: each test
  is held to ``significance / 100`` shared among the metrics tested, so a
  system of hundreds of groups cooled every few seconds stays quiet;
- where it began: the split of the recent stretch (and as many tasks before
  it) that best separates low ranks from high ones.

It reports a PHASE_TRANSITION (key ``phase_transition:<metric>:edge``) with the
change time, the medians and 95th percentiles on both sides and their ratio.
Batches (every task fresh) have no edge: the detector is silent there.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
from scipy.stats import mannwhitneyu

from ..matrix import MetricMatrix
from ..patterns import Pattern, PatternKind
from ..profile import ThermalProfile
from ._stats import counter_columns, usable_columns

MIN_RECENT = 6  # fewest newest tasks a shift is judged on
MIN_REFERENCE = 12  # fewest tasks before them
REFERENCE = 512  # the usual: at most this many tasks before the recent stretch
MAX_AGE_S = 90.0  # the recent stretch reaches back at most this far from the newest task
FAMILY_SHARE = 0.01  # each group's tests share significance x this
_MIN_LEVELS = 5  # a metric with fewer distinct values is a flag or a category, not a level
_PER_SIDE = 16  # linked tasks on each side of the change


def detect(matrix: MetricMatrix, profile: ThermalProfile) -> list[Pattern]:
    """PHASE_TRANSITION patterns for metrics whose newest tasks moved away from the usual."""
    if matrix.fresh is None or not matrix.fresh.any():
        return []
    recent = _recent_rows(matrix)
    if recent is None:
        return []
    first = int(recent[0])
    reference = np.arange(max(0, first - REFERENCE), first)
    if reference.size < MIN_REFERENCE:
        return []
    rows = np.concatenate([reference, recent])
    values = matrix.values[rows]
    columns = usable_columns(values, MIN_REFERENCE)
    counters = counter_columns(values)
    candidates = [j for j in columns if not counters[j] and _is_level(values[:, j])]
    if not candidates:
        return []
    alpha = profile.rate.significance * FAMILY_SHARE / len(candidates)
    patterns = []
    for j in candidates:
        pattern = _shift(matrix, int(j), reference, recent, alpha, profile)
        if pattern is not None:
            patterns.append(pattern)
    return patterns


def _recent_rows(matrix: MetricMatrix) -> np.ndarray | None:
    """The newest tasks: the fresh ones, widened to MIN_RECENT, none older than MAX_AGE_S before the newest."""
    n = matrix.n_tasks
    fresh = np.flatnonzero(matrix.fresh)
    start = min(int(fresh[0]), n - MIN_RECENT)
    newest = float(matrix.timestamps[-1])
    young = np.flatnonzero(matrix.timestamps[max(0, start):] >= newest - MAX_AGE_S)
    if young.size < MIN_RECENT:
        return None
    return max(0, start) + young


def _is_level(column: np.ndarray) -> bool:
    present = column[np.isfinite(column)]
    return bool(present.size and present.min() > 0 and np.unique(present).size >= _MIN_LEVELS)


def _shift(matrix: MetricMatrix, j: int, reference: np.ndarray, recent: np.ndarray, alpha: float,
           profile: ThermalProfile) -> Pattern | None:
    column = matrix.values[:, j]
    before_rows = reference[np.isfinite(column[reference])]
    after_rows = recent[np.isfinite(column[recent])]
    if before_rows.size < MIN_REFERENCE or after_rows.size < MIN_RECENT:
        return None
    before, after = column[before_rows], column[after_rows]
    level_before, level_after = float(np.median(before)), float(np.median(after))
    ratio = level_after / level_before
    if max(ratio, 1 / ratio) < profile.rate.min_shift_ratio:
        return None
    p_value = float(mannwhitneyu(after, before, alternative="two-sided").pvalue)
    if not p_value < alpha:
        return None
    rose = ratio > 1
    start = _where_it_began(column, before_rows, after_rows, rose)
    changed = after_rows[after_rows >= start]
    unchanged = np.concatenate([before_rows, after_rows[after_rows < start]])
    name = matrix.metric_names[j]
    p95_before, p95_after = (float(np.percentile(column[r], 95)) for r in (unchanged, changed))
    statistics = {
        "change_index": int(start),
        "change_timestamp": float(matrix.timestamps[start]),
        "level_before": level_before,
        "level_after": level_after,
        "ratio": ratio,
        "p95_before": p95_before,
        "p95_after": p95_after,
        "p_value": p_value,
        "significance": alpha,
        "min_shift_ratio": profile.rate.min_shift_ratio,
        "tasks_before": before_rows.size,
        "tasks_after": after_rows.size,
    }
    strength = math.log(max(ratio, 1 / ratio)) / math.log(profile.rate.min_shift_ratio)
    confidence = (1 - 0.5 ** (strength**2)) * (1 - 0.5 * min(1.0, p_value / alpha))
    unit = " ms" if name.endswith("_ms") else ""
    description = (
        f"{name} {'rose' if rose else 'fell'} x{ratio:.2g} in the newest {after_rows.size} tasks "
        f"(median {_fmt(level_before)}{unit} -> {_fmt(level_after)}{unit}, "
        f"p95 {_fmt(p95_before)}{unit} -> {_fmt(p95_after)}{unit}) from {_when(float(matrix.timestamps[start]))} "
        f"(rank test p={p_value:.1g})"
    )
    involved = (matrix.involved(unchanged[-_PER_SIDE:], "before", _PER_SIDE)
                + _worst_first(matrix, changed, column, rose, profile.max_involved - _PER_SIDE))
    return Pattern(
        kind=PatternKind.PHASE_TRANSITION,
        description=description,
        confidence=confidence,
        metrics=(name,),
        statistics=statistics,
        involved=involved,
        key=f"phase_transition:{name}:edge",
    )


def _where_it_began(column: np.ndarray, before_rows: np.ndarray, after_rows: np.ndarray, rose: bool) -> int:
    """The first row of the changed stretch: the split (within the recent tasks and as many before them)
    after which ranks run highest (lowest for a fall) against the tasks before it."""
    window = np.concatenate([before_rows[-after_rows.size:], after_rows])
    values = column[window]
    ranks = np.argsort(np.argsort(values if rose else -values, kind="stable"), kind="stable") + 1.0
    n = ranks.size
    tail_sums = np.cumsum(ranks[::-1])[::-1]  # rank sum from each split to the end
    sizes = n - np.arange(n)
    expected = sizes * (n + 1) / 2
    scale = np.sqrt(sizes * (n - sizes) * (n + 1) / 12 + 1e-12)
    score = (tail_sums - expected) / scale
    score[0] = -np.inf  # a split needs tasks on both sides
    return int(window[int(np.argmax(score))])


def _worst_first(matrix: MetricMatrix, rows: np.ndarray, column: np.ndarray, rose: bool, limit: int):
    priority = column[rows] if rose else -column[rows]
    return matrix.involved(rows, "after", max(1, limit), priority=priority)


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _when(timestamp: float) -> str:
    if timestamp >= 1e9:
        return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%H:%M:%SZ")
    return f"t={timestamp:g}"
