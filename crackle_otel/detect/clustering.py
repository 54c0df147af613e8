"""Clusters and outliers: groups of tasks that stand apart, and tasks far from every group.

The crate grouped tasks greedily, pair by pair: the result depended on the
input order, cost O(n²) and ignored tasks whose metric names differed. Here:

1. Each metric is read on the scale where it is most symmetric (as is, square
   root or log: latencies are often log-normal) and put in robust z (median /
   1.4826 MAD), so units and long tails do not dominate. IDs and counters are
   left out. A metric whose level moves over time (a deploy, a degradation)
   is read against its time-local level, on the scale where its spread moves
   least with that level: the halves of a shift are a phase transition (the
   phase detector's), not two clusters, and a slow host stays one cluster
   across the shift.
2. Discrete metrics (few distinct values: flags, status codes, item counts,
   and continuous metrics that are nearly a function of a count) have gaps
   between their values that look like valleys; they never set a cluster
   apart on their own, only add to a cluster continuous metrics set apart.
3. A sample of at most ``_SAMPLE_SIZE`` tasks, chosen and ordered by a hash of
   each task's values (the same tasks whatever the input order), is split
   top-down on the continuous metrics. A group is split in two only when its
   values along some direction (one metric, or a principal axis) have two
   peaks with a real valley between them and the two sides sit apart
   relative to their spreads. Noise, skewed and flat distributions have no
   valley (a unimodal density is at least as high between two points as at
   the lower of them), so they stay one group.
4. Every task is assigned to its most likely cluster in O(n·k) (Gaussian cost
   averaged over the metrics it shares with the centre, plus each cluster's
   share). A task is only put in a minority cluster if it has a metric that
   sets that cluster apart; a task sharing nothing with a centre is never
   assigned to it.
5. Every cluster but the largest (the baseline population) is a CLUSTERING
   pattern: size, centre, spread, the metrics that set it apart, and the label
   and attribute values over-represented in it (host.name=...). A "cluster"
   whose members are one stretch of time is a phase, and is not reported.
6. New tasks far out in their metric's own tail (robust z against their own
   cluster and moment, judged by a tail model of the metric itself, not a
   normal curve: latency is heavy-tailed) are OUTLIER patterns, one per
   metric and direction, worst first (see ``_outlier_patterns``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import median_filter, percentile_filter
from scipy.stats import binom, chi2, norm, poisson

from ..matrix import MetricMatrix
from ..patterns import Pattern, PatternKind
from ..profile import ThermalProfile
from . import _tails
from ._interrupt import checkpoint
from ._explain import Explainer
from ._stats import MAD_TO_SIGMA, column_medians, counter_columns, median, quantile, usable_columns

_SAMPLE_SIZE = 4000  # tasks the split search and the scale estimates read; the assignment reads all
_MAX_CLUSTERS = 8
_PRINCIPAL_AXES = 2  # principal directions tried besides every metric axis
_MAX_VALLEY_RATIO = 0.7  # valley density / lower peak density below which there are two modes
_WINDOW = 0.5  # peak and valley windows span ± this many spreads
_WINSOR = 0.005  # the split point ignores the most extreme 0.5 % on each side
_PCA_CLIP = 10.0  # robust-z clip while finding principal axes, so one wild task cannot own one
_MAX_GRID = 256  # valley positions tried per direction
_MIN_SPREAD = 0.25  # a cluster is never taken as tighter than this (robust-z units)
_COUNTER_MIN_COUNT = 8  # fewer rising values than this are no evidence of a counter (3 sensors can rise)
_MIN_SPARSE = 100  # a metric with fewer sampled values has its scale taken from all its values
_MIN_FOR_TRANSFORM = 20  # values needed before judging a metric's skew
_MIN_SKEW = 0.1  # octile skewness below which a metric is read as it is
_MIN_COUNT_LEVEL = 4  # counts mostly below this are never transformed
_MAX_DEFINING = 5  # metrics named as setting a cluster apart
_MAX_LEVELS = 16  # a metric with at most this many distinct values is discrete: its gaps are no valleys
_MIN_ORDINAL_LEVELS = 5  # a discrete metric with this many values is a quantity (items), not a category (a flag)
_MAX_SHARE_EXPLAINED = 0.9  # a continuous metric this much explained by such a quantity is read as discrete
_MIN_DRIFT_SAMPLE = 200  # values needed before judging whether a metric's level moves over time
_DRIFT_BLOCKS = 16  # consecutive blocks whose medians are compared
_MIN_BLOCK = 25  # values per block at least
_MIN_DRIFT = 0.5  # a level moving less than this many spreads cannot fake or hide a group
_MIN_LEVEL_WINDOW, _MAX_LEVEL_WINDOW = 25, 251  # running-median window (sampled values) of a moving level
_MIN_STEADIER = 0.05  # a moving metric changes scale only if its spread gets this much steadier (sd of log MAD)
_SIDE_WINDOW_MARGIN = 0.5  # a point sits at a step when both one-sided windows are this much tighter than the centred one
_PHASE_SHARE = 0.8  # a cluster with this share of its members in one stretch of time, making up this share of it, is a phase
_HASH_SEED = np.uint64(0x243F6A8885A308D3)
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)

_AS_IS, _SQUARE_ROOT, _LOG = 0, 1, 2
_SCALE_NAMES = {_SQUARE_ROOT: "square-root scale", _LOG: "log scale"}


def detect(matrix: MetricMatrix, profile: ThermalProfile) -> list[Pattern]:
    """CLUSTERING and OUTLIER patterns among the tasks of ``matrix``."""
    min_count = max(profile.rate.min_tasks, 3)
    if matrix.n_tasks < min_count or matrix.n_metrics == 0:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are expected and handled
        columns = _analysed_columns(matrix.values, min_count)
        if columns.size == 0:
            return []
        space = _Space.build(matrix, columns, profile.rate.significance)
        checkpoint()
        model = _fit_clusters(space, profile)
        checkpoint()
        explainer = Explainer(matrix)
        return _cluster_patterns(space, model, profile, explainer) + _outlier_patterns(
            space, model, profile, explainer
        )


# ------------------------------------------------------------------ the data
def _analysed_columns(values: np.ndarray, min_count: int) -> np.ndarray:
    """Columns with enough values and some spread, minus IDs and counters."""
    usable = usable_columns(values, min_count)
    if usable.size == 0:
        return usable
    counters = counter_columns(values[:, usable], min_count=max(min_count, _COUNTER_MIN_COUNT))
    return usable[~counters]


def _content_hash(values: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's values: equal rows, equal hashes, whatever their position."""
    canonical = np.where(np.isnan(values), np.inf, values) + 0.0  # one NaN, one zero (-0.0 -> 0.0)
    words = np.ascontiguousarray(canonical.T).view(np.uint64)
    hashed = np.full(values.shape[0], _HASH_SEED, dtype=np.uint64)
    for column in words:
        hashed ^= column
        hashed *= _HASH_MULTIPLIER
        hashed ^= hashed >> np.uint64(29)
    return hashed


def _canonical_sample(values: np.ndarray, size: int) -> np.ndarray:
    """Rows with the ``size`` smallest content hashes, ordered by hash.

    Which rows and in which order depends only on the rows' values, so every
    later step (sums included) is bit-for-bit the same for any input order.
    """
    hashed = _content_hash(values)
    chosen = np.argpartition(hashed, size - 1)[:size] if hashed.size > size else np.arange(hashed.size)
    return chosen[np.argsort(hashed[chosen], kind="stable")]


def _octile_skewness(values: np.ndarray) -> float:
    """(q⅞ + q⅛ - 2 median) / (q⅞ - q⅛): 0 for symmetric values, > 0 for a long right tail."""
    low, mid, high = quantile(values, [0.125, 0.5, 0.875])
    return float((high + low - 2 * mid) / (high - low)) if high > low else 0.0


def _choose_scale(sampled: np.ndarray, smallest: float) -> int:
    """As is, square root or log: whichever makes the metric most symmetric.

    Counts (non-negative integers) default to the square root, where their
    spread no longer grows with their level (Anscombe); anything else stays as
    is unless a transform makes it clearly more symmetric. Small counts stay
    as they are: a root or log would open a gap between 0 and 1 that looks
    like a valley between two groups.
    """
    if sampled.size < _MIN_FOR_TRANSFORM or smallest < 0:
        return _AS_IS
    counts = bool(np.all(sampled == np.round(sampled)))
    if counts and quantile(sampled, 0.125) < _MIN_COUNT_LEVEL:
        return _AS_IS
    default = _SQUARE_ROOT if counts else _AS_IS
    skew = {_AS_IS: _octile_skewness(sampled)}
    if skew[_AS_IS] <= _MIN_SKEW:  # symmetric enough, or a left tail no power transform tames
        return default
    skew[_SQUARE_ROOT] = _octile_skewness(np.sqrt(sampled))
    if smallest > 0:
        skew[_LOG] = _octile_skewness(np.log(sampled))
    best = min(skew, key=lambda scale: (abs(skew[scale]), scale))
    return best if abs(skew[best]) < abs(skew[default]) - _MIN_SKEW / 2 else default


def _transform(values: np.ndarray, scale: int) -> np.ndarray:
    if scale == _LOG:
        return np.log(values)
    if scale == _SQUARE_ROOT:
        return np.sqrt(values)
    return values


def _transform_back(values: np.ndarray, scale: int) -> np.ndarray:
    if scale == _LOG:
        return np.exp(values)
    if scale == _SQUARE_ROOT:
        return values * values
    return values


def _untransform(value: float, scale: int) -> float:
    if scale == _LOG:
        return math.exp(value)
    if scale == _SQUARE_ROOT:
        return value * value
    return value


def _robust_center_scale(values: np.ndarray) -> tuple[float, float]:
    """Median and MAD-sigma of finite 1-D values (see _spread_without_mad when the MAD is 0; 1 if no spread)."""
    center = float(median(values))
    deviation = np.abs(values - center)
    scale = float(median(deviation)) * MAD_TO_SIGMA
    if scale <= 0:
        scale = _spread_without_mad(deviation, values)
    return center, scale if scale > 0 else 1.0


def _spread_without_mad(deviation: np.ndarray, values: np.ndarray) -> float:
    """The spread of values more than half of which share one value (retries: mostly 0).

    Measured among the other values, so that the ordinary tail of a count is
    not "beyond 5 sigma"; with fewer than 3 other values, the standard deviation.
    """
    off_center = deviation[deviation > 0]
    return float(median(off_center)) * MAD_TO_SIGMA if off_center.size >= 3 else float(np.std(values))


@dataclass(frozen=True)
class _Space:
    """The analysed metrics: original values, the scale each is read on, robust z.

    A metric whose typical level moves over time (a deploy, a degradation) is
    read against its time-local level (``levels``), so the halves of a shift
    do not look like two groups and a slow host stays one group across it.
    """

    matrix: MetricMatrix
    columns: np.ndarray  # indices into matrix.metric_names
    raw: np.ndarray  # n x m, original units
    scales: np.ndarray  # per column: _AS_IS, _SQUARE_ROOT or _LOG
    center: np.ndarray  # per column, on its scale
    spread: np.ndarray  # per column, on its scale
    z: np.ndarray  # n x m robust z against the time-local level (NaN = absent)
    sample: np.ndarray  # rows the split search and scale estimates read (canonical order)
    continuous: np.ndarray  # per column: may set clusters apart (discrete, low-cardinality ones may not)
    levels: dict[int, "_Level"]  # per drifting column: its time-local level

    @classmethod
    def build(cls, matrix: MetricMatrix, columns: np.ndarray, alpha: float) -> "_Space":
        raw = matrix.values[:, columns]
        n, m = raw.shape
        sample = _canonical_sample(raw, _SAMPLE_SIZE)
        in_time_order = np.sort(sample)
        smallest = np.nanmin(raw, axis=0)
        scales = np.zeros(m, dtype=int)
        center, spread = np.zeros(m), np.ones(m)
        continuous = np.zeros(m, dtype=bool)
        levels: dict[int, _Level] = {}
        on_scale = np.empty_like(raw)
        for j in range(m):
            checkpoint()
            sampled = raw[sample, j]
            sampled = sampled[np.isfinite(sampled)]
            continuous[j] = np.unique(sampled).size > _MAX_LEVELS
            rows = in_time_order[np.isfinite(raw[in_time_order, j])]
            if sampled.size < _MIN_SPARSE and n > sample.size:  # a sparse metric: use every value it has
                rows = np.flatnonzero(np.isfinite(raw[:, j]))
            scales[j], level = _scale_and_level(raw[:, j], rows, smallest[j], alpha / m, continuous[j])
            on_scale[:, j] = _transform(raw[:, j], scales[j])
            if level is not None:
                levels[j] = level
                on_scale[:, j] -= level.offset
            center[j], spread[j] = _robust_center_scale(on_scale[rows, j])
        z = (on_scale - center) / spread
        for j, level in levels.items():  # where the level itself is uncertain, so is how far a task is from it
            z[:, j] = (on_scale[:, j] - center[j]) / np.hypot(spread[j], level.uncertainty)
        continuous &= ~_follows_a_count(z[sample], raw[sample], continuous)
        return cls(matrix, columns, raw, scales, center, spread, z, sample, continuous, levels)

    def name(self, j: int) -> str:
        return self.matrix.metric_names[self.columns[j]]

    def to_original(self, j: int, z_value: float, row: int | None = None) -> float:
        """A robust-z value of metric j back in the metric's own units (at ``row``'s time-local level if given)."""
        if row is None or j not in self.levels:
            return _untransform(float(self.center[j] + z_value * self.spread[j]), int(self.scales[j]))
        level = self.levels[j]
        scale = math.hypot(self.spread[j], level.uncertainty[row])
        return _untransform(float(self.center[j] + z_value * scale + level.offset[row]), int(self.scales[j]))

    def level_adjusted(self, j: int, rows: np.ndarray) -> np.ndarray:
        """Metric j's present values at ``rows`` in its own units, moved to the overall level if it drifts."""
        values = self.raw[rows, j]
        if j in self.levels:
            steady = _transform(values, int(self.scales[j])) - self.levels[j].offset[rows]
            values = _transform_back(steady, int(self.scales[j]))
        return values[np.isfinite(values)]


def _follows_a_count(z: np.ndarray, raw: np.ndarray, continuous: np.ndarray) -> np.ndarray:
    """Mask of continuous metrics that are nearly a function of a discrete metric with many values.

    ``payload_bytes ~ 1024 x cart.items`` has one clump per item count, with
    real valleys between them: a group it sets apart is a cart size, not a
    population. Measured by the correlation ratio (share of variance between
    the discrete metric's values) on sampled rows.
    """
    follows = np.zeros(continuous.size, dtype=bool)
    counts = [d for d in np.flatnonzero(~continuous) if np.unique(raw[np.isfinite(raw[:, d]), d]).size >= _MIN_ORDINAL_LEVELS]
    for j in np.flatnonzero(continuous):
        for d in counts:
            both = np.isfinite(z[:, j]) & np.isfinite(raw[:, d])
            if both.sum() < 2 * _MIN_ORDINAL_LEVELS:
                continue
            values = np.clip(z[both, j], -_PCA_CLIP, _PCA_CLIP)
            _, codes = np.unique(raw[both, d], return_inverse=True)
            sizes = np.bincount(codes)
            means = np.bincount(codes, weights=values) / sizes
            total = float(np.sum((values - values.mean()) ** 2))
            between = float(np.sum(sizes * (means - values.mean()) ** 2))
            if total > 0 and between >= _MAX_SHARE_EXPLAINED * total:
                follows[j] = True
                break
    return follows


def _scale_and_level(column: np.ndarray, rows: np.ndarray, smallest: float, alpha: float, continuous: bool):
    """The scale a metric is read on and its time-local level on that scale (None: it does not move).

    ``column`` is the metric for every task, ``rows`` the (sampled) tasks
    holding it, in time order. A metric whose level moves is read on the
    scale where its spread moves least with the level (log for latencies: a
    2x slowdown doubles their spread as well), not on the most symmetric one
    (two halves of a shift look skewed).
    """
    values = column[rows]
    scale = _choose_scale(values, smallest)
    if not continuous:
        return scale, None
    level = _time_local_level(rows, _transform(column, scale), alpha)
    if level is None:
        return scale, None
    # The level in the metric's own units, so each scale's residuals around it can be compared.
    local = _transform_back(_center_spread(_transform(values, scale))[0] + level.offset[rows], scale)
    allowed = [_AS_IS] + ([_SQUARE_ROOT] if smallest >= 0 else []) + ([_LOG] if smallest > 0 else [])
    instability = {s: _spread_instability(_transform(values, s) - _transform(local, s)) for s in allowed}
    steadiest = min(allowed, key=lambda s: (instability[s], s))
    if instability[steadiest] >= instability[scale] - _MIN_STEADIER:
        return scale, level
    return steadiest, _time_local_level(rows, _transform(column, steadiest), alpha)


def _blocks(values: np.ndarray) -> list[np.ndarray]:
    """Consecutive blocks of time-ordered values, each of at least _MIN_BLOCK, as rows of at most two matrices.

    As ``np.array_split`` into min(_DRIFT_BLOCKS, size // _MIN_BLOCK) blocks (the first
    ``size % count`` one value longer), but one block per row: a median per block is
    then one call per matrix (``axis=1``), not one per block (the same medians).
    """
    count = max(1, min(_DRIFT_BLOCKS, values.size // _MIN_BLOCK))
    size, longer = divmod(values.size, count)
    cut = longer * (size + 1)
    matrices = [values[:cut].reshape(longer, size + 1), values[cut:].reshape(count - longer, size)]
    return [matrix for matrix in matrices if matrix.shape[0]]


def _spread_instability(residuals: np.ndarray) -> float:
    """How much the spread of time-ordered residuals (around a moving level) changes from block to block (sd of log MAD)."""
    spreads = np.concatenate([np.median(np.abs(blocks - np.median(blocks, axis=1, keepdims=True)), axis=1)
                              for blocks in _blocks(residuals)])
    spreads = spreads[spreads > 0]
    return float(np.std(np.log(spreads))) if spreads.size >= 2 else math.inf


@dataclass(frozen=True)
class _Level:
    """A metric's time-local level, per row, on its scale."""

    offset: np.ndarray  # time-local level minus overall level
    uncertainty: np.ndarray  # how much the candidate local levels disagree (steep ramps, the edge of a step)


def _time_local_level(rows: np.ndarray, column: np.ndarray, alpha: float) -> _Level | None:
    """Per task, how far a metric's time-local level sits from its overall level; None if it does not move.

    ``column`` is the metric (on its scale) for every task; ``rows`` the
    (sampled) tasks it is estimated from, in time order. The level moves when
    the medians of consecutive blocks differ beyond their sampling error
    (chi-square at ``alpha``) and by at least _MIN_DRIFT spreads; it is then
    an edge-preserving running median (see _edge_preserving_median).
    """
    values = column[rows]
    size = values.size
    if size < _MIN_DRIFT_SAMPLE:
        return None
    overall, spread = _center_spread(values)
    if not spread > 0:
        return None
    blocks = _blocks(values)
    medians = np.concatenate([np.median(rows_of_blocks, axis=1) for rows_of_blocks in blocks])
    if np.max(np.abs(medians - overall)) < _MIN_DRIFT * spread:
        return None
    # Standard error of a block median: 1 / (2 f sqrt(size)), f the density at the overall median.
    density = np.count_nonzero(np.abs(values - overall) < 0.5 * spread) / (size * spread)
    if density <= 0:
        return None
    sizes = np.concatenate([np.full(matrix.shape[0], matrix.shape[1]) for matrix in blocks])
    standard_errors = 1.0 / (2 * density * np.sqrt(sizes))
    statistic = float(np.sum(((medians - overall) / standard_errors) ** 2))
    if chi2.sf(statistic, sizes.size - 1) > alpha:
        return None
    window = min(_MAX_LEVEL_WINDOW, max(_MIN_LEVEL_WINDOW, size // _DRIFT_BLOCKS)) | 1
    local, uncertainty = _edge_preserving_median(values, window, rows, column)
    return _Level(local - overall, uncertainty)


def _edge_preserving_median(values: np.ndarray, window: int, rows: np.ndarray, column: np.ndarray):
    """Running median of time-ordered ``values`` (at ``rows``) that keeps steps sharp, for every task of ``column``.

    Returns (level, uncertainty) per task. A centred window straddling a step
    mixes both levels and blurs the step over a window's width. Where the
    windows just before and just after a point are both clearly tighter (IQR)
    than the centred one, the point sits at a step between two flat
    stretches: the step is placed where the levels on either side fit that
    stretch best (least absolute deviations), and each task takes the level
    of its side. Elsewhere a task takes the centred median, uncertain by half
    the difference between the medians of the window's two halves (large on
    a steep ramp or where it bends: there a median lags, and a task is not
    called far from a level nobody knows). Windows are mirrored at the ends:
    padding with the edge value would let one task set the level there.
    """
    centred = median_filter(values, size=window, mode="mirror")
    spread = percentile_filter(values, 75, size=window, mode="mirror") - percentile_filter(values, 25, size=window, mode="mirror")
    index, half = np.arange(values.size), window // 2
    before, after = np.maximum(index - half, 0), np.minimum(index + half, values.size - 1)
    at_step = np.maximum(spread[before], spread[after]) < _SIDE_WINDOW_MARGIN * spread
    halves = median_filter(values, size=half | 1, mode="mirror")
    quarter = half // 2
    disagreement = np.abs(halves[np.minimum(index + quarter, values.size - 1)] - halves[np.maximum(index - quarter, 0)])

    every_task = np.arange(column.size)
    level = np.interp(every_task, rows, centred)
    uncertainty = np.interp(every_task, rows, disagreement / 2)
    edges = np.diff(np.r_[0, at_step.astype(np.int8), 0])
    for start, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):  # one stretch per step
        earlier, later = centred[before[start]], centred[after[stop - 1]]
        stretch = values[start:stop]
        misfit_before = np.r_[0.0, np.cumsum(np.abs(stretch - earlier))]
        misfit_after = np.r_[0.0, np.cumsum(np.abs(stretch - later))]
        cut = start + int(np.argmin(misfit_before + (misfit_after[-1] - misfit_after)))
        first, last = rows[start], rows[stop - 1]
        boundary = rows[cut] if cut < stop else last + 1
        tasks = slice(first, last + 1)
        level[tasks] = np.where(every_task[tasks] < boundary, earlier, later)
        uncertainty[tasks] = 0.0
    return level, uncertainty


# -------------------------------------------------------- is it two groups?
@dataclass(frozen=True)
class _Split:
    """Evidence that a group is two: where, how far apart, how deep the valley."""

    threshold: float  # projected values above it form the upper side
    separation: float  # distance of the peaks / pooled spread
    valley_ratio: float  # valley density / lower peak density
    p_value: float  # chance of a valley this deep under a unimodal density


def _center_spread(values: np.ndarray) -> tuple[float, float]:
    """Median and MAD-sigma (standard deviation when the MAD is 0) of finite 1-D values."""
    center = float(median(values))
    spread = float(median(np.abs(values - center))) * MAD_TO_SIGMA
    return center, spread if spread > 0 else float(np.std(values))


def _sorted_center_spread(values: np.ndarray) -> tuple[float, float]:
    """``_center_spread`` of sorted values, the same numbers without a partition or a temporary array.

    The median is the middle of the sorted values (numpy's mean of the middle two when even).
    The absolute deviations fall towards the median and rise after it, two sorted runs: their
    median is found by bisecting how many of the smallest deviations come from each run.
    Only a zero median's sign may differ from np.median's (which of 0.0 and -0.0 its partition puts
    in the middle): the spread is the same, and a split reads the peaks only through differences
    and +/- positive widths, where the sign of a zero does not show.
    """
    n = values.size
    if n < 2 or not (math.isfinite(values[0]) and math.isfinite(values[-1])):
        return _center_spread(values)
    half = n // 2
    center = float(values[half]) if n % 2 else _mean_of_two(float(values[half - 1]), float(values[half]))
    split = int(np.searchsorted(values, center))  # values[:split] < center <= values[split:]
    if n % 2:
        deviation = _merged_deviation(values, center, split, half)
    else:
        deviation = _mean_of_two(_merged_deviation(values, center, split, half - 1),
                                 _merged_deviation(values, center, split, half))
    spread = deviation * MAD_TO_SIGMA
    return center, spread if spread > 0 else float(np.std(values))


def _mean_of_two(a: float, b: float) -> float:
    """``np.mean([a, b])`` in Python floats: numpy's sum starts from 0.0 (so -0.0 and -0.0 make 0.0)."""
    return (0.0 + a + b) / 2


def _merged_deviation(values: np.ndarray, center: float, split: int, k: int) -> float:
    """The k-th smallest (from 0) of |values - center|, sorted ``values`` split at ``center`` by ``split``.

    Below the split the deviations grow leftwards, above it rightwards: the k-th smallest of the
    two runs takes i from the first and k + 1 - i from the second, i found by bisection.
    """
    n = values.size
    below, above = split, n - split

    def left(i: int) -> float:  # i-th smallest deviation below the split
        return abs(float(values[split - 1 - i]) - center)

    def right(j: int) -> float:  # j-th smallest deviation above it
        return abs(float(values[split + j]) - center)

    low, high = max(0, k + 1 - above), min(k + 1, below)
    while True:
        i = (low + high) // 2
        j = k + 1 - i
        if i > 0 and j < above and left(i - 1) > right(j):
            high = i - 1
        elif j > 0 and i < below and right(j - 1) > left(i):
            low = i + 1
        else:
            return max(left(i - 1) if i > 0 else -math.inf, right(j - 1) if j > 0 else -math.inf)


def _lattice_step(sorted_values: np.ndarray) -> float:
    """Spacing of a discrete metric's values, 0 for a continuous one.

    Windows narrower than this would take the gaps between possible values
    (0, 1, 2 retries) for valleys.
    """
    distinct = sorted_values[np.r_[True, np.diff(sorted_values) > 0]]
    if distinct.size < 2 or distinct.size > sorted_values.size // 4:
        return 0.0
    return float(median(np.diff(distinct)))


def _window_counts(sorted_values: np.ndarray, centers: np.ndarray, half_width: float) -> np.ndarray:
    """How many values fall in [c - h, c + h) for each centre c."""
    upper = np.searchsorted(sorted_values, centers + half_width, side="left")
    lower = np.searchsorted(sorted_values, centers - half_width, side="left")
    return upper - lower


def _two_means_cut(values: np.ndarray, min_side: int) -> int | None:
    """Size of the lower side of the exact 1-D 2-means split of sorted values (winsorised), or None."""
    n = values.size
    low, high = values[int(_WINSOR * (n - 1))], values[int(round((1 - _WINSOR) * (n - 1)))]
    clipped = np.clip(values, low, high) - values[n // 2]
    sums, squares = np.cumsum(clipped), np.cumsum(clipped * clipped)
    cuts = np.arange(min_side, n - min_side + 1)
    cuts = cuts[values[cuts - 1] < values[np.minimum(cuts, n - 1)]]  # never between equal values
    if cuts.size == 0:
        return None
    left_sse = squares[cuts - 1] - sums[cuts - 1] ** 2 / cuts
    right_sse = (squares[-1] - squares[cuts - 1]) - (sums[-1] - sums[cuts - 1]) ** 2 / (n - cuts)
    return int(cuts[np.argmin(left_sse + right_sse)])


def _two_peak_split(values: np.ndarray, min_side: int, alpha: float, min_separation: float) -> _Split | None:
    """Where sorted 1-D ``values`` split into two modes, or None when they are one.

    The cut is the exact 1-D 2-means split. It is kept only if the two sides'
    peaks are ``min_separation`` pooled spreads apart and the emptiest window
    between them is at most half as dense as the lower peak, significantly so:
    a binomial test of the valley count against the peak count, Bonferroni-
    corrected for the valley windows searched and the two widths tried.
    """
    n = values.size
    if n < 2 * min_side:
        return None
    span = float(values[-1] - values[0])
    cut = _two_means_cut(values, min_side) if span > 0 else None
    if cut is None:
        return None

    step = _lattice_step(values)
    floor = max(step / 2, 1e-3 * span)
    (peak1, spread1), (peak2, spread2) = _sorted_center_spread(values[:cut]), _sorted_center_spread(values[cut:])
    spread1, spread2 = max(spread1, floor), max(spread2, floor)
    separation = (peak2 - peak1) / math.sqrt((spread1**2 + spread2**2) / 2)
    if separation < min_separation:
        return None

    half1, half2 = max(_WINDOW * spread1, step), max(_WINDOW * spread2, step)
    gap_start, gap_end = peak1 + half1, peak2 - half2
    if gap_end <= gap_start:
        return None
    peak_counts = (
        int(_window_counts(values, np.array([peak1]), half1)[0]),
        int(_window_counts(values, np.array([peak2]), half2)[0]),
    )
    lower = 0 if peak_counts[0] / half1 <= peak_counts[1] / half2 else 1
    peak_count, peak_width = peak_counts[lower], 2 * (half1, half2)[lower]
    if peak_count == 0:
        return None

    best: tuple[float, float, float] | None = None  # (p-value, ratio, threshold)
    for half in sorted({max(_WINDOW * min(spread1, spread2), step), max(_WINDOW * max(spread1, spread2), step)}):
        half = min(half, (gap_end - gap_start) / 2)
        if half <= 0 or half < step:
            continue
        room = gap_end - gap_start - 2 * half
        positions = np.linspace(gap_start + half, gap_end - half, max(1, int(min(_MAX_GRID, room / (half / 2) + 1))))
        counts = _window_counts(values, positions, half)
        deepest = int(np.argmin(counts))
        valley = int(counts[deepest])
        ratio = (valley / (2 * half)) / (peak_count / peak_width)
        p_value = float(binom.cdf(valley, valley + peak_count, 2 * half / (2 * half + peak_width)))
        p_value *= max(1.0, (gap_end - gap_start) / (2 * half))  # the deepest of that many disjoint windows
        if best is None or (p_value, ratio) < best[:2]:
            best = (p_value, ratio, float(positions[deepest]))
    if best is None:
        return None
    p_value, ratio, threshold = min(1.0, 2 * best[0]), best[1], best[2]
    if ratio > _MAX_VALLEY_RATIO or p_value > alpha:
        return None
    return _Split(threshold, separation, ratio, p_value)


def _candidate_projections(points: np.ndarray, min_side: int) -> list[np.ndarray]:
    """The group's values along each metric and its principal axes (NaN: not placeable).

    A task missing some metrics is projected on the part of the axis it has,
    rescaled; a task holding less than half of an axis is left out of it.
    """
    n, m = points.shape
    present = np.isfinite(points)
    projections = [points[:, j] for j in range(m) if present[:, j].sum() >= 2 * min_side]
    # Principal axes need many more tasks than metrics, or noise looks separable.
    if m >= 2 and n >= 5 * m:
        center = column_medians(points)
        centred = np.where(present & np.isfinite(center), points - np.nan_to_num(center), 0.0)
        clipped = np.clip(centred, -_PCA_CLIP, _PCA_CLIP)
        checkpoint()
        _, vectors = np.linalg.eigh(clipped.T @ clipped)
        for axis in vectors[:, ::-1][:, :_PRINCIPAL_AXES].T:
            weight = present.astype(float) @ (axis * axis)
            with np.errstate(all="ignore"):
                projected = (centred @ axis) / np.sqrt(weight)
            projections.append(np.where(weight >= 0.5, projected, np.nan))
    return projections


def _best_split(points: np.ndarray, min_side: int, alpha: float, min_separation: float):
    """(upper-side mask, evidence) for the clearest two-mode direction of a group, or None."""
    best: tuple[np.ndarray, _Split] | None = None
    candidates = _candidate_projections(points, min_side)
    for projected in candidates:
        checkpoint()
        placeable = np.isfinite(projected)
        # Bonferroni over the directions tried: the best of many looks must still be a rare valley.
        split = _two_peak_split(np.sort(projected[placeable]), min_side, alpha / len(candidates), min_separation)
        if split is not None and (best is None or split.separation > best[1].separation):
            best = (projected, split)
    if best is None:
        return None
    projected, split = best
    placeable = np.isfinite(projected)
    upper = projected > split.threshold
    if upper.sum() * 2 > placeable.sum():  # tasks the direction cannot place join the larger side
        upper |= ~placeable
    return upper, split


def _split_sample(points: np.ndarray, min_side: int, alpha: float, min_separation: float):
    """Top-down splitting of the sample: member rows and evidence per group."""
    groups = [np.arange(points.shape[0])]
    evidence: list[_Split | None] = [None]
    queue = [0]
    while queue and len(groups) < _MAX_CLUSTERS:
        g = queue.pop(0)
        found = _best_split(points[groups[g]], min_side, alpha, min_separation)
        if found is None:
            continue
        upper, split = found
        members = groups[g]
        larger, smaller = members[~upper], members[upper]
        if larger.size < smaller.size:
            larger, smaller = smaller, larger
        groups[g] = larger
        groups.append(smaller)
        evidence[g] = split
        evidence.append(split)
        queue += [g, len(groups) - 1]
    return groups, evidence


# ------------------------------------------------------------ the clusters
@dataclass(frozen=True)
class _Model:
    """Cluster centres (robust z) and every task's cluster (-1: shares nothing with any)."""

    labels: np.ndarray  # per task
    centers: np.ndarray  # k x m, NaN where a cluster has no value for a metric
    spreads: np.ndarray  # k x m, floored at _MIN_SPREAD
    evidence: tuple[_Split | None, ...]  # per cluster: the split that set it apart
    main: int  # the largest cluster (the baseline)


def _min_separation(profile: ThermalProfile) -> float:
    """Peaks 2 pooled spreads apart (where two equal normals stop being unimodal), plus a margin."""
    return 2.0 + profile.rate.min_effect_size


def _group_center_spread(z_rows: np.ndarray, min_present: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Per-metric median and MAD-sigma of some rows; NaN where too few have the metric."""
    if z_rows.shape[0] == 0:
        return np.full(z_rows.shape[1], np.nan), np.full(z_rows.shape[1], np.nan)
    center = column_medians(z_rows)
    deviation = np.abs(z_rows - center)
    spread = column_medians(deviation) * MAD_TO_SIGMA
    for j in np.flatnonzero(~(spread > 0) & np.isfinite(center)):
        present = np.isfinite(z_rows[:, j])
        spread[j] = _spread_without_mad(deviation[present, j], z_rows[present, j])
    enough = np.isfinite(z_rows).sum(axis=0) >= min_present
    return np.where(enough, center, np.nan), np.where(enough, spread, np.nan)


def _standardised_difference(center_a, spread_a, center_b, spread_b) -> np.ndarray:
    """(a - b) / pooled spread, spreads floored at _MIN_SPREAD (robust-z units)."""
    pooled = np.sqrt((np.fmax(spread_a, _MIN_SPREAD) ** 2 + np.fmax(spread_b, _MIN_SPREAD) ** 2) / 2)
    return (center_a - center_b) / pooled


def _setting_apart(difference: np.ndarray) -> np.ndarray:
    """Mask of the metrics on which a cluster differs clearly, or most, from another."""
    magnitude = np.nan_to_num(np.abs(difference))
    strongest = magnitude.max(initial=0.0)
    if strongest == 0:
        return np.zeros(magnitude.shape, dtype=bool)
    # Clearly apart (2 pooled spreads), or close to the strongest difference.
    return magnitude >= min(2.0, max(0.5 * strongest, min(1.0, strongest)))


def _baseline_where_alike(centers: np.ndarray, spreads: np.ndarray, apart: np.ndarray, main: int):
    """Centres and spreads for assignment: a cluster takes the baseline's on metrics that do not set it apart.

    Otherwise the sampling noise of a small cluster's centre and spread on a
    dozen unrelated metrics outweighs the one or two metrics that define it.
    """
    alike = ~apart & np.isfinite(centers) & np.isfinite(centers[main])
    alike[main] = False
    baseline_centers, baseline_spreads = np.broadcast_to(centers[main], centers.shape), np.broadcast_to(spreads[main], spreads.shape)
    return np.where(alike, baseline_centers, centers), np.where(alike, baseline_spreads, spreads)


def _assign(z: np.ndarray, centers: np.ndarray, spreads: np.ndarray, apart: np.ndarray, main: int, shares: np.ndarray) -> np.ndarray:
    """Each task's most likely cluster in O(n·m·k): Gaussian cost per shared metric, averaged.

    The cost includes each cluster's share (-2 log share, as in a mixture), so
    the ordinary tail of a large population is not handed to a small cluster.

    Averaging over the metrics a task shares with a centre makes tasks with
    different metric sets comparable; a task sharing no metric with a centre,
    or none of the metrics that set a minority cluster apart, is not put in it.
    (Metric-major loops: tall-skinny matrix products are slower here, BLAS
    threads fight over two cores.)
    """
    by_metric = np.ascontiguousarray(z.T)
    present = np.isfinite(by_metric)
    n = by_metric.shape[1]
    cost = np.full((centers.shape[0], n), np.inf)
    for g in range(centers.shape[0]):
        total, shared = np.zeros(n), np.zeros(n)
        eligible = np.full(n, g == main)
        for j in np.flatnonzero(np.isfinite(centers[g])):
            deviation = (by_metric[j] - centers[g, j]) / spreads[g, j]
            total += np.where(present[j], deviation * deviation + 2 * math.log(spreads[g, j]), 0.0)
            shared += present[j]
            if apart[g, j]:
                eligible |= present[j]
        with np.errstate(all="ignore"):
            cost[g] = np.where(eligible & (shared > 0), (total - 2 * math.log(shares[g])) / shared, np.inf)
    labels = np.argmin(cost, axis=0)
    labels[~np.isfinite(cost[labels, np.arange(n)])] = -1
    return labels


def _bounded_rows(labels: np.ndarray, g: int, in_sample: np.ndarray) -> np.ndarray:
    """The members of cluster g, or only its sampled members when it is large (bounded cost)."""
    members = np.flatnonzero(labels == g)
    return members if members.size <= _SAMPLE_SIZE else members[in_sample[members]]


def _fit_clusters(space: _Space, profile: ThermalProfile) -> _Model:
    """Split the sample, then assign every task; clusters below the minimum size are dissolved.

    Only continuous metrics split and assign: a discrete one (a flag, a count
    of 1..8 items) has gaps between its values that look like valleys, and a
    group it alone sets apart is one of its values, not a population.
    """
    rate = profile.rate
    n, m = space.z.shape
    sample = space.sample
    single = _Model(np.zeros(n, dtype=int), np.zeros((1, m)), np.ones((1, m)), (None,), 0)
    defining = np.flatnonzero(space.continuous)
    if defining.size == 0:
        return single
    min_side = max(3, math.ceil(rate.min_cluster_size * sample.size / n))
    z_sample = space.z[sample][:, defining]
    groups, evidence = _split_sample(z_sample, min_side, rate.significance, _min_separation(profile))
    if len(groups) == 1:
        return single

    stats = [_group_center_spread(z_sample[rows], min_present=min(3, rows.size)) for rows in groups]
    centers = np.array([center for center, _ in stats])
    spreads = np.fmax(np.array([spread for _, spread in stats]), _MIN_SPREAD)
    z_defining = space.z[:, defining]
    keep = np.arange(len(groups))
    while True:
        main = int(np.argmax([groups[g].size for g in keep]))
        apart = np.array(
            [
                _setting_apart(_standardised_difference(centers[g], spreads[g], centers[keep[main]], spreads[keep[main]]))
                for g in keep
            ]
        )
        shares = np.array([groups[g].size for g in keep]) / sample.size
        labels = _assign(z_defining, *_baseline_where_alike(centers[keep], spreads[keep], apart, main), apart, main, shares)
        sizes = np.bincount(labels[labels >= 0], minlength=keep.size)
        too_small = (sizes < rate.min_cluster_size) & (np.arange(keep.size) != main)
        if not too_small.any():
            break
        keep = keep[~too_small]
    # Tasks holding only discrete metrics cannot be placed by them: they belong to the baseline.
    labels[(labels < 0) & np.isfinite(space.z).any(axis=1) & ~np.isfinite(z_defining).any(axis=1)] = main
    sizes = np.bincount(labels[labels >= 0], minlength=keep.size)
    # Final centres and spreads from the members (the sampled ones of a large cluster), on every metric.
    in_sample = np.zeros(n, dtype=bool)
    in_sample[sample] = True
    final = [_group_center_spread(space.z[_bounded_rows(labels, g, in_sample)]) for g in range(keep.size)]
    return _Model(
        labels=labels,
        centers=np.array([center for center, _ in final]),
        spreads=np.fmax(np.array([spread for _, spread in final]), _MIN_SPREAD),
        evidence=tuple(evidence[g] for g in keep),
        main=int(np.argmax(sizes)),  # the baseline is the largest cluster over all tasks
    )


# ----------------------------------------------------------------- patterns
def _cluster_patterns(space: _Space, model: _Model, profile: ThermalProfile, explainer: Explainer) -> list[Pattern]:
    k = model.centers.shape[0]
    if k < 2:
        return []
    n = space.matrix.n_tasks
    assigned = model.labels >= 0
    in_sample = np.zeros(n, dtype=bool)
    in_sample[space.sample] = True
    min_separation = _min_separation(profile)
    patterns: list[Pattern] = []
    used_keys: set[str] = set()
    for g in range(k):
        if g == model.main:
            continue
        members = np.flatnonzero(model.labels == g)
        rows = _bounded_rows(model.labels, g, in_sample)
        rest_rows = np.flatnonzero(assigned & (model.labels != g) & in_sample)
        center, spread = _group_center_spread(space.z[rows])
        rest_center, rest_spread = _group_center_spread(space.z[rest_rows])
        difference = _standardised_difference(center, spread, rest_center, rest_spread)
        apart = np.flatnonzero(_setting_apart(difference))
        apart = apart[np.argsort(-np.abs(difference[apart]), kind="stable")][:_MAX_DEFINING]
        # Continuous metrics must set the cluster apart; discrete ones may only add to the picture.
        defining = apart[space.continuous[apart]]
        separation = float(np.sqrt(np.sum(difference[defining] ** 2)))
        if defining.size == 0 or separation < min_separation:
            continue
        start, stop, inside = _densest_run(model.labels == g)
        if inside >= _PHASE_SHARE * members.size and inside >= _PHASE_SHARE * (stop - start):
            continue  # one stretch of time, not a population: a phase transition (the phase detector's)
        names = [space.name(j) for j in apart]
        statistics: dict[str, float] = {
            "size": members.size,
            "share": members.size / n,
            "separation": separation,
            "min_separation": min_separation,
            "clusters": k,
            "min_cluster_size": profile.rate.min_cluster_size,
        }
        split = model.evidence[g]
        if split is not None:
            statistics.update(
                split_separation=split.separation, valley_ratio=split.valley_ratio, valley_p_value=split.p_value
            )
        if space.sample.size < n:
            statistics["sample_size"] = space.sample.size
        drifting = [name for j, name in zip(apart, names) if j in space.levels]
        if drifting:
            statistics["time_adjusted_metrics"] = len(drifting)
        phrases = []
        for j, name in zip(apart, names):
            value, rest_value = space.to_original(j, center[j]), space.to_original(j, rest_center[j])
            statistics[f"{name}.center"] = value
            statistics[f"{name}.spread"] = _center_spread(space.level_adjusted(j, rows))[1]
            statistics[f"{name}.rest_center"] = rest_value
            statistics[f"{name}.z_vs_rest"] = difference[j]
            phrases.append(_difference_phrase(name, value, rest_value, float(difference[j])))

        signs = {name: "+" if difference[j] > 0 else "-" for j, name in zip(apart, names)}
        key = f"clustering:{'|'.join(sorted(names))}:{''.join(signs[name] for name in sorted(names))}"
        while key in used_keys:  # two clusters apart on the same metrics the same way
            key += "'"
        used_keys.add(key)
        valley = split.valley_ratio if split is not None else 0.0
        closeness = _distance_to(space.z[members], model.centers[g], model.spreads[g])
        patterns.append(
            Pattern(
                kind=PatternKind.CLUSTERING,
                description=f"{members.size} tasks ({members.size / n:.1%}) form a separate cluster: "
                + ", ".join(phrases[:3])
                + (f" (vs. tasks of the same time; {', '.join(drifting[:2])} drift)" if drifting else ""),
                # Separation beyond the minimum, discounted by how shallow the valley is.
                confidence=(1 - 0.5 ** ((separation / min_separation) ** 2)) * (1 - valley),
                metrics=tuple(names),
                statistics=statistics,
                involved=space.matrix.involved(members, "member", profile.max_involved, priority=-closeness),
                explanation=explainer.over_represented(members, assigned, noun="cluster"),
                key=key,
            )
        )
    return patterns


def _densest_run(member: np.ndarray) -> tuple[int, int, int]:
    """The stretch of consecutive rows where members most outnumber the others: (start, stop, members in it).

    Maximum-sum segment of +1 (member) / -1 (other) in time order, vectorised
    with a running minimum of the prefix sums.
    """
    totals = np.concatenate(([0], np.cumsum(np.where(member, 1, -1))))
    gain = totals - np.minimum.accumulate(totals)
    stop = int(np.argmax(gain))
    start = int(np.argmin(totals[: stop + 1]))
    return start, stop, (int(gain[stop]) + stop - start) // 2


def _distance_to(z_rows: np.ndarray, center: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Root mean squared standardised distance to a centre over the metrics a task shares with it."""
    deviation = (z_rows - center) / spread
    shared = np.isfinite(deviation)
    with np.errstate(all="ignore"):
        return np.sqrt(np.where(shared, deviation * deviation, 0.0).sum(axis=1) / shared.sum(axis=1))


def _difference_phrase(name: str, value: float, rest: float, z: float) -> str:
    """'latency_ms 3.1x higher (z=+6.2)'; a plain comparison when a ratio means nothing."""
    ratio = value / rest if value > 0 and rest > 0 else 0.0
    if 0.01 <= ratio <= 100:  # beyond that one of them is ~0 and a ratio misleads
        if ratio >= 1.05:
            return f"{name} {_times(ratio)} higher (z={z:+.1f})"
        if ratio <= 1 / 1.05:
            return f"{name} {_times(1 / ratio)} lower (z={z:+.1f})"
    return f"{name} {value:.4g} vs {rest:.4g} elsewhere (z={z:+.1f})"


def _times(ratio: float) -> str:
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


# ------------------------------------------------------------------ outliers
def _outlier_patterns(space: _Space, model: _Model, profile: ThermalProfile, explainer: Explainer) -> list[Pattern]:
    """New tasks far out in their group's own tail on some metric: one pattern per metric and direction.

    A value's tail probability comes from the metric's own tail (``_tails``: a
    generalized Pareto fit beyond the 90th percentile of the robust z against
    each task's cluster), so heavy-tailed latency is judged by its usual
    extremes, not a normal curve's. A task is an outlier when that probability
    is below what the profile's outlier score is under normal noise, shared
    among the metrics the task has. Each task is judged once, when it is new
    (``matrix.fresh``): a stream's false alarms stay at that rate per task
    however often it cools. In a stream, a metric's outliers wait until it
    has enough values for a tail model (warm-up): robust z from a few dozen
    heavy-tailed values calls every slow request impossible. A batch (every
    task fresh: the kiln's own use) with too few values, or a discrete metric
    (whose quantiles are its steps), is judged against a normal reference at
    twice the score.
    """
    assigned = model.labels >= 0
    if model.centers.shape[0] == 1:
        z = space.z  # one population: its robust z is the global one
    else:
        own = np.where(assigned, model.labels, 0)
        z = (space.z - model.centers[own]) / model.spreads[own]
        z[~assigned] = np.nan
    present = np.isfinite(z)
    held = present.sum(axis=1)
    per_value = float(norm.sf(profile.rate.outlier_score))  # one side of one metric
    stream = space.matrix.fresh is not None
    high = np.ones(z.shape)
    low = np.ones(z.shape)
    for j in range(z.shape[1]):
        rows = np.flatnonzero(present[:, j])
        values = z[rows, j]
        if _tails.fits(values.size) and space.continuous[j]:
            high[rows, j] = _tails.tail_probability(values, values)
            low[rows, j] = _tails.tail_probability(-values, -values)
        elif not stream:
            high[rows, j] = norm.sf(values / 2)
            low[rows, j] = norm.sf(-values / 2)
    tail = np.minimum(high, low)
    limit = np.where(held > 0, per_value / np.maximum(held, 1), 0.0)
    dominant = np.argmin(np.where(present, tail, np.inf), axis=1)
    worst = tail[np.arange(z.shape[0]), dominant]
    flagged = np.flatnonzero((worst < limit) & space.matrix.fresh_rows)
    if flagged.size == 0:
        return []
    side = np.where(high[flagged, dominant[flagged]] <= low[flagged, dominant[flagged]], 1.0, -1.0)
    # Each (metric, side) group is tested against chance: many tasks and metrics
    # do cross any fixed threshold now and then.
    groups_tested = 2 * z.shape[1]
    judged = space.matrix.fresh_rows
    sizes = np.bincount(model.labels[assigned])
    patterns = []
    for j in np.unique(dominant[flagged]):
        holders = present[:, j] & judged
        expected = float(limit[holders].sum())
        for direction in (1.0, -1.0):
            group = flagged[(dominant[flagged] == j) & (side == direction)]
            if group.size == 0:
                continue
            group = group[np.argsort(worst[group], kind="stable")]
            chance = _chance_of_outliers(group.size, float(worst[group[0]]), expected, int(holders.sum()))
            if chance > profile.rate.significance / groups_tested:
                continue
            patterns.append(
                _outlier_pattern(
                    space, model, profile, explainer, z, int(j), direction, group, worst, limit,
                    expected, chance, int(sizes[model.labels[group[0]]]),
                )
            )
    return patterns


def _chance_of_outliers(count: int, worst: float, expected: float, holders: int) -> float:
    """How likely the metric's own tail gives this many flags, or a value this extreme, on one side.

    ``expected`` flags by chance (each task's share of the per-task rate summed);
    ``holders`` tasks each had one draw at the worst tail probability. The
    smaller of the two chances, doubled for looking at both.
    """
    by_count = float(poisson.sf(count - 1, expected))
    by_extreme = -math.expm1(-holders * worst)
    return min(1.0, 2 * min(by_count, by_extreme))


def _outlier_pattern(
    space, model, profile, explainer, z, j, direction, group, tail, limit, expected, chance, cluster_size
) -> Pattern:
    name = space.name(j)
    n = space.matrix.n_tasks
    worst = int(group[0])
    worst_z, worst_value = float(z[worst, j]), float(space.raw[worst, j])
    typical = space.to_original(j, float(np.nan_to_num(model.centers[model.labels[worst], j])), row=worst)
    statistics: dict[str, float] = {
        "count": group.size,
        "share": group.size / n,
        "outlier_score": profile.rate.outlier_score,
        "tail_probability": float(tail[worst]),
        "max_tail_probability": float(limit[worst]),
        "expected_by_chance": expected,
        "p_value": chance,
        f"{name}.worst_value": worst_value,
        f"{name}.worst_z": worst_z,
        f"{name}.typical": typical,
    }
    metrics = [name]
    # Other metrics on which the same tasks are beyond their threshold too.
    beyond = np.abs(np.nan_to_num(z[group])) > norm.isf(limit[group, None])
    for other in np.flatnonzero(beyond.any(axis=0)):
        if other != j:
            other_name = space.name(other)
            column = np.nan_to_num(z[group, other])
            metrics.append(other_name)
            statistics[f"{other_name}.worst_z"] = float(column[np.argmax(np.abs(column))])
            statistics[f"{other_name}.count"] = int(beyond[:, other].sum())
    scale = _SCALE_NAMES.get(int(space.scales[j]))
    odds = f"1 in {1 / max(float(tail[worst]), 1e-300):.2g} by this group's own tail"
    detail = (f"{name}={worst_value:.4g} (typical {typical:.4g}; robust z={worst_z:+.1f}"
              f"{', ' + scale if scale else ''}; {odds})")
    label = space.matrix.labels[worst]
    if group.size == 1:
        description = f"{label} is an outlier: {detail}"
    else:
        side = "high" if direction > 0 else "low"
        description = f"{group.size} tasks ({group.size / n:.1%}) are {side} outliers on {name}; worst {label}: {detail}"
    # How far past the limit, in decades of tail probability (the scale of a small cluster
    # is uncertain, so its evidence is discounted), times how unlikely these flags are by chance.
    excess = math.log10(float(limit[worst]) / max(float(tail[worst]), 1e-300)) / (1 + 1 / math.sqrt(cluster_size))
    strength = 1 - 0.5 ** (1 + excess)
    return Pattern(
        kind=PatternKind.OUTLIER,
        description=description,
        confidence=strength * (1 - chance),
        metrics=tuple(metrics),
        statistics=statistics,
        involved=space.matrix.involved(group, "outlier", profile.max_involved, priority=-np.log(np.maximum(tail[group], 1e-300))),
        explanation=explainer.over_represented(group, model.labels >= 0, noun="outliers"),
        key=f"outlier:{name}:{'+' if direction > 0 else '-'}",
    )
