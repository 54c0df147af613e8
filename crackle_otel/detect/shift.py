"""Shifts at a stream's edge: the newest tasks against the group's usual.

The phase detector searches a whole window for change points and needs tasks
on both sides of one, so a change that began seconds ago stays invisible to it
until enough tasks follow, and in a sparse group that can take minutes. In a
stream that is the change that matters most: an incident begins at the edge.
This detector compares, metric by metric, the newest tasks of a stream with
the ``REFERENCE`` tasks before its recent stretch (the tasks of the last
``MAX_AGE_S`` before the newest, at least ``MIN_RECENT``, some of them new
since the last cool):

- how many of the newest tasks changed is not known: the newest k tasks are
  compared for k = MIN_RECENT, 1.5 MIN_RECENT, ... up to the whole stretch,
  and the k that sets them apart most is kept, its p-value multiplied by the
  number of k tried;
- two tests: a rank test (Mann-Whitney U; latency is heavy-tailed, ranks do
  not care) from ``MIN_RECENT`` tasks on, and from ``MIN_FEW`` on a test of
  them all lying far out in the usual tail (``_all_beyond``): a sparse
  service's three calls at twenty times their usual latency are a shift,
  even when its usual is only a dozen calls (how far beyond everything seen
  they lie is read from a log-normal fit of the usual, its uncertainty
  included);
- an effect that matters: the ratio of medians reaches the profile's
  ``min_shift_ratio`` (metrics of positive values: times, sizes, counts; the
  rare zero or negative value of such a metric — a call whose callee's span
  outlasted the caller's — has no place on a log scale and is left out);
- false alarms controlled across groups and cools, not per test: each test
  is held to ``significance / 100`` shared among the metrics tested, so a
  system of hundreds of groups cooled every few seconds stays quiet;
- where it began: the split of the changed tasks (and as many before them)
  that best separates low ranks from high ones.

It reports a PHASE_TRANSITION (key ``phase_transition:<metric>:edge``) with the
change time, the medians and 95th percentiles on both sides and their ratio.
Batches (every task fresh) have no edge: the detector is silent there.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
from scipy.stats import chi2, norm

from ..matrix import MetricMatrix
from ..patterns import Pattern, PatternKind
from ..profile import ThermalProfile
from . import _tails
from ._stats import counter_columns, median, rank_sum_p, usable_columns

MIN_RECENT = 6  # fewest newest tasks the rank test reads
MIN_FEW = 3  # fewest newest tasks judged at all: all of them far out in the usual tail (see _all_beyond)
MIN_FEW_SPAN_S = 5.0  # fewer than MIN_RECENT tasks must span this much time (a stall hits requests at once)
MIN_REFERENCE = 8  # fewest tasks before them (a sparse edge sees a few calls a minute)
REFERENCE = 512  # the usual: at most this many tasks before the recent stretch
MAX_AGE_S = 90.0  # the recent stretch reaches back at most this far from the newest task
FAMILY_SHARE = 0.01  # each group's tests share significance x this
_MIN_LEVELS = 5  # a metric with fewer distinct values is a flag or a category, not a level
_MAX_NOT_POSITIVE = 0.05  # share (or one value) of a level's values that may be zero or less (left out)
# Least spread (sd of log values) granted a small usual: a dozen calls that happened to agree
# closely do not show how much a service's latency wanders (0.4: about +-50 %).
_MIN_LOG_SPREAD = 0.4
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
    """The tasks of the last MAX_AGE_S before the newest (at least MIN_FEW), if some are new."""
    n = matrix.n_tasks
    newest = float(matrix.timestamps[-1])
    start = min(int(np.searchsorted(matrix.timestamps, newest - MAX_AGE_S)), n - MIN_FEW)
    if start < 0 or not matrix.fresh[start:].any():
        return None
    return np.arange(start, n)


def _is_level(column: np.ndarray) -> bool:
    present = column[np.isfinite(column)]
    positive = present[present > 0]
    not_positive = present.size - positive.size
    return bool(not_positive <= max(1.0, _MAX_NOT_POSITIVE * present.size)
                and np.unique(positive).size >= _MIN_LEVELS)


def _sizes(available: int) -> list[int]:
    """The numbers of newest tasks tried: MIN_FEW, then about 1.5x each time, up to all of them."""
    sizes = []
    k = float(MIN_FEW)
    while int(k) < available:
        if not sizes or int(k) > sizes[-1]:
            sizes.append(int(k))
        k *= 1.5
    return sizes + [available]


def _shift(matrix: MetricMatrix, j: int, reference: np.ndarray, recent: np.ndarray, alpha: float,
           profile: ThermalProfile) -> Pattern | None:
    column = matrix.values[:, j]
    before_rows = reference[column[reference] > 0]  # NaN compares False: missing values drop out too
    present = recent[column[recent] > 0]
    if before_rows.size < MIN_REFERENCE or present.size < MIN_FEW:
        return None
    before = column[before_rows]
    log_before = np.log(before)
    level_before = float(median(before))
    sizes = _sizes(present.size)
    best = None
    for k in sizes:
        rows = present[-k:]
        if k < MIN_RECENT and matrix.timestamps[rows[-1]] - matrix.timestamps[rows[0]] < MIN_FEW_SPAN_S:
            continue  # a few slow tasks at one moment are one stall, not a shift
        after = column[rows]
        ratio = float(median(after)) / level_before
        if max(ratio, 1 / ratio) < profile.rate.min_shift_ratio:
            continue
        p_value = 2 * _all_beyond(np.log(after), log_before, ratio > 1)
        if k >= MIN_RECENT:
            p_value = min(p_value, 2 * rank_sum_p(after, before))
        if best is None or p_value < best[0]:
            best = (p_value, k, ratio)
    if best is None:
        return None
    p_value = min(1.0, best[0] * len(sizes))  # the best of several looks
    if not p_value < alpha:
        return None
    _, k, ratio = best
    after_rows = present[-k:]
    level_after = float(median(column[after_rows]))
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


def _all_beyond(log_after: np.ndarray, log_before: np.ndarray, rose: bool) -> float:
    """How likely k tasks of the usual all land at least as far out as the least extreme of them.

    That is q ** k, with q the tail probability (on a log scale) of that least extreme
    value under the usual: the tail model of ``_tails`` where the reference is large
    enough, else the share of reference values as far out (plus one, for the unseen).
    Beyond every reference value that share can only say "under 1/(n+1)" each; there a
    normal fit of the few reference log values (``_beyond_all_seen``) says how far under.
    """
    reference = log_before if rose else -log_before
    nearest = float(log_after.min() if rose else -log_after.max())
    k = log_after.size
    if _tails.fits(reference.size):
        return float(_tails.tail_probability(reference, np.array([nearest]))[0]) ** k
    as_far = np.count_nonzero(reference >= nearest)
    p_value = ((as_far + 1) / (reference.size + 1)) ** k
    if as_far == 0:
        p_value = min(p_value, _beyond_all_seen(reference, nearest, k))
    return p_value


# Posterior draws of a normal sample's spread and centre, as standard quantiles: the spread
# through chi-square quantiles (per sample size), the centre through Gauss-Hermite nodes.
_SPREAD_PROBABILITIES = (np.arange(256) + 0.5) / 256
_CENTRE_NODES, _CENTRE_WEIGHTS = np.polynomial.hermite_e.hermegauss(24)
_CENTRE_WEIGHTS = _CENTRE_WEIGHTS / _CENTRE_WEIGHTS.sum()


def _beyond_all_seen(reference: np.ndarray, value: float, k: int) -> float:
    """P(k new values all >= value) if values are normal like the few ``reference`` values
    (log scale). Centre and spread are not known, only estimated from the reference, and
    the k values share that uncertainty: the probability is averaged over the posterior of
    both (flat prior on the centre and the log spread), not taken as a power of one tail
    probability, which would treat one lucky narrow estimate as k independent surprises.
    The sample's spread is taken as at least ``_MIN_LOG_SPREAD``."""
    n = reference.size
    spread = max(float(np.std(reference, ddof=1)), _MIN_LOG_SPREAD)
    sigma = spread * np.sqrt((n - 1) / chi2.ppf(_SPREAD_PROBABILITIES, n - 1))  # (S,)
    centre = float(np.mean(reference)) + np.outer(sigma / math.sqrt(n), _CENTRE_NODES)  # (S, C)
    tail = norm.sf((value - centre) / sigma[:, None])
    return float(np.mean((tail**k) @ _CENTRE_WEIGHTS))


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
