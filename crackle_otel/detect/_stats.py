"""Small statistical helpers shared by the detectors (vectorised, NaN-aware)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.special import ndtr
from scipy.stats import false_discovery_control, mannwhitneyu

# 1.4826 * MAD estimates sigma for normal data.
MAD_TO_SIGMA = 1.4826


def benjamini_hochberg(p_values: np.ndarray, q: float) -> np.ndarray:
    """Boolean mask of the p-values that survive BH false-discovery control at level q."""
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return np.zeros(0, dtype=bool)
    adjusted = false_discovery_control(np.clip(np.nan_to_num(p, nan=1.0), 0.0, 1.0), method="bh")
    return adjusted <= q


def even_sample(values: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` of ``values``, evenly spaced (all of them when there are no more)."""
    if values.size <= limit:
        return values
    return values[np.linspace(0, values.size - 1, limit).round().astype(np.intp)]


def sorted_codes(values: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(the distinct values sorted, each value's index among them): ``np.unique(values, return_inverse=True)``
    for strings, from the few distinct ones (sorting a window's thousands of labels to find a handful of
    names was most of the time)."""
    names = sorted(set(values))
    index = {name: code for code, name in enumerate(names)}
    return names, np.fromiter(map(index.__getitem__, values), dtype=np.intp, count=len(values))


def rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation of two 1-D arrays: ``scipy.stats.spearmanr(x, y).statistic``, the same bits.

    The same ranks (average ranks of ties are exact in floating point, whichever sort found them)
    through the same ``np.corrcoef``, without spearmanr's per-call checks and ``apply_along_axis``
    (a third of its time on a window's 4096 values). NaN where spearmanr gives NaN: fewer than two
    values, a constant input, or a NaN in either.
    """
    if x.size <= 1 or (x[0] == x).all() or (y[0] == y).all() or np.isnan(x).any() or np.isnan(y).any():
        return math.nan
    return float(np.corrcoef(np.vstack([average_ranks(x), average_ranks(y)]))[1, 0])


def average_ranks(values: np.ndarray) -> np.ndarray:
    """``scipy.stats.rankdata(values)`` of 1-D values without NaN: 1-based ranks, ties given the mean
    of their ranks (exact in floating point, so the same numbers; without scipy's stable sort and
    array-API layers, about half its time)."""
    return _ranks_and_ties(values)[0]


def _ranks_and_ties(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(average ranks, size of each run of tied values) of 1-D values without NaN."""
    order = np.argsort(values)  # stability does not matter: tied values share one rank
    ordered = values[order]
    first = np.empty(values.size, dtype=bool)
    first[0] = True
    np.not_equal(ordered[:-1], ordered[1:], out=first[1:])
    starts = np.flatnonzero(first)
    counts = np.diff(starts, append=values.size)
    ranks = np.empty(values.size)
    ranks[order] = np.repeat((starts + 1) + (counts - 1) / 2, counts)
    return ranks, counts


def rank_sum_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided Mann-Whitney p-value of 1-D samples without NaN:
    ``scipy.stats.mannwhitneyu(x, y, alternative="two-sided").pvalue``, the same bits.

    Where scipy takes its normal approximation (both samples over 8, or ties) this is its
    arithmetic, step by step (ranks, rank sums and the tie term are exact in floating point
    whatever the order they are summed in), without its per-call validation and axis handling
    (most of its time at a few hundred values). Its exact small-sample law is left to scipy.
    """
    n1, n2 = x.size, y.size
    if n1 == 0 or n2 == 0:
        return float(mannwhitneyu(x, y, alternative="two-sided").pvalue)
    ranks, ties = _ranks_and_ties(np.concatenate([x, y]).astype(float, copy=False))
    if not ((n1 > 8 and n2 > 8) or (ties > 1).any()):
        return float(mannwhitneyu(x, y, alternative="two-sided").pvalue)
    r1 = np.sum(ranks[:n1])
    u1 = r1 - n1 * (n1 + 1) / 2
    u = np.maximum(u1, n1 * n2 - u1)
    n = n1 + n2
    tie_term = np.sum(ties.astype(float) ** 3 - ties)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
        z = (u - n1 * n2 / 2 - 0.5) / s
    return float(np.clip(ndtr(-z) * 2, 0.0, 1.0))


def median(values: np.ndarray) -> np.floating:
    """``np.median(values)`` of a 1-D array: the same value (NaN if any is NaN), without numpy's
    general-axis route, which costs more than the partition itself below a few thousand values
    (several thousand medians a window). Other arrays go to numpy."""
    n = values.size
    if values.ndim != 1 or values.dtype != np.float64 or n == 0:
        return np.median(values)
    half = n // 2
    if n % 2:
        part = np.partition(values, (half, n - 1))
        middle = (0.0 + part[half]) / 1  # numpy's mean of the middle value: its sum starts at 0.0
    else:
        part = np.partition(values, (half - 1, half, n - 1))
        middle = (0.0 + part[half - 1] + part[half]) / 2
    return part[-1] if np.isnan(part[-1]) else middle


def quantile(values: np.ndarray, q):
    """``np.quantile(values, q)`` (linear) of a 1-D float array, q a float or floats in [0, 1]: the same
    values, by numpy's own steps (virtual index (n - 1) q, the neighbouring order statistics by one
    partition, its interpolation ``_lerp``), without the general-axis route around them, which costs
    as much as the partition on the few thousand values a detector reads. Anything else: numpy."""
    weak = type(q) is float  # numpy: a Python float gives a scalar, interpolated with a Python-float weight
    qs = np.asarray(q)
    if (values.ndim != 1 or values.dtype != np.float64 or values.size == 0 or qs.dtype != np.float64
            or not (weak or qs.ndim == 1) or not ((qs >= 0.0) & (qs <= 1.0)).all()):
        return np.quantile(values, q)
    n = values.size
    if weak:
        virtual = (n - 1) * q
        below = -1 if virtual >= n - 1 else math.floor(virtual)
        above = -1 if below == -1 else below + 1
        part = np.partition(values, sorted({0, -1, below, above}))  # numpy's kth (which zero lands where)
        if np.isnan(part[-1]):  # numpy: NaN when a NaN was among the values
            return part[-1]
        low, high = part[below], part[above]
        weight = virtual - below
        difference = high - low
        return high - difference * (1 - weight) if weight >= 0.5 else low + difference * weight
    virtual = (n - 1) * qs
    beyond = virtual >= n - 1
    below = np.where(beyond, -1, np.floor(virtual)).astype(np.intp)
    above = np.where(beyond, -1, below + 1)
    part = np.partition(values, sorted({0, -1, *below.tolist(), *above.tolist()}))
    low, high = part[below], part[above]
    weight = virtual - below
    difference = high - low
    result = low + difference * weight
    np.subtract(high, difference * (1 - weight), out=result, where=weight >= 0.5)
    if np.isnan(part[-1]):
        result[:] = part[-1]
    return result


def column_medians(values: np.ndarray) -> np.ndarray:
    """Per-column median of a 2-D array, NaN left out (NaN for a column with none): ``np.nanmedian(axis=0)``.

    The same values, without numpy's route for it: on fewer than 600 rows nanmedian goes
    through masked arrays, on more through one Python call per column (0.5-2 ms a call on a
    window's sample; clustering makes several per window). Here columns without NaN take
    one ``np.median`` together and only the others are done one by one.
    """
    missing = np.isnan(values)
    if values.shape[0] == 0:
        return np.full(values.shape[1], np.nan)
    if not missing.any():
        return np.median(values, axis=0)
    gaps = missing.any(axis=0)
    result = np.empty(values.shape[1])
    if not gaps.all():
        result[~gaps] = np.median(values[:, ~gaps], axis=0)
    for j in np.flatnonzero(gaps):
        kept = values[~missing[:, j], j]
        result[j] = median(kept) if kept.size else np.nan
    return result


def usable_columns(values: np.ndarray, min_count: int) -> np.ndarray:
    """Indices of columns with at least ``min_count`` present values and some spread."""
    present = np.isfinite(values)
    counts = present.sum(axis=0)
    if values.shape[0] == 0:
        return np.zeros(0, dtype=np.intp)
    # fmax/fmin reductions skip NaN without nanmax's "All-NaN slice" warnings.
    spread = np.fmax.reduce(values, axis=0) - np.fmin.reduce(values, axis=0)
    return np.flatnonzero((counts >= min_count) & (np.nan_to_num(spread) > 0))


def counter_columns(values: np.ndarray, min_count: int = 3, min_steps: int = 1) -> np.ndarray:
    """Mask of columns that never decrease in time order (IDs, sequence and batch numbers, counters).

    Such a metric trends by construction: its "shift" is not a phase transition
    and its near-constant step is not a conservation law (review findings 1-2).
    ``min_steps``: how often it must step up (a flag switching on once never decreases either).
    """
    mask = np.zeros(values.shape[1], dtype=bool)
    present = np.isfinite(values)
    # Columns with no gaps: one vectorised diff; the rest column by column.
    complete = present.all(axis=0)
    if values.shape[0] >= min_count and complete.any():
        steps = np.diff(values[:, complete], axis=0)
        mask[complete] = (steps >= 0).all(axis=0) & (np.count_nonzero(steps > 0, axis=0) >= min_steps)
    for j in np.flatnonzero(~complete):
        column = values[present[:, j], j]
        if column.size >= min_count:
            steps = np.diff(column)
            mask[j] = bool(np.all(steps >= 0) and np.count_nonzero(steps > 0) >= min_steps)
    return mask
