"""Phase transitions: where, in time order, a metric's level, spread or shape changed.

The crate compared the first half of the tasks with the second half, by mean only
(review finding 1). Here each metric is read as a time series (matrix rows are in
time order), from 10 tasks up, in three stages:

1. **level**: a piecewise mean, each segment flat or a line, under AR(1) noise
   (``_changepoints``): steps and ramps compete by penalised likelihood, so a ramp
   is one gradual transition and a staircase stays several steps. The penalty is
   calibrated by simulation so that a change-free series gets a false change with
   probability ``significance`` at any length; the p-value reads that calibration.
   Effect: level change / noise sd of the two sides (Cohen's d).
2. **spread**: the same search on log |residual| around that level fit, where a
   change of scale is a change of mean. Effect: ratio of the two sides' sds.
3. **shape**: within long stretches where level and spread hold still, quantile-bin
   codes of the values (``_shape``). Effect: Jensen-Shannon divergence.

A metric that varies by factors (positive, wide, its noise growing with its
level: latencies, sizes) is analysed on a log scale, so a
slowdown of heavy-tailed latency is a change of level (reported as a factor, with
medians and p95 on both sides), not a "widened spread". A metric that only grows
(a cumulative counter) is analysed through its increments and reported as a change
of rate; IDs (constant increments) have none.

Benjamini-Hochberg runs across every candidate of every metric, and a change is
reported only when its effect also clears the profile's threshold. At one change
point a metric reports one kind of change: level before spread before shape.
Metrics of the group that change at the same moment form one joint pattern.

One pattern per set of metrics and kind of shift, listing its change points in time
order, with key ``phase_transition:<metric>[+<metric>...]:<mean|spread|shape>``:
the streaming processor de-duplicates by key, and a second change of the same kind
on the same metrics is part of the same story (a level that rose and fell back).
Figures of the strongest change: ``change_index``, ``change_timestamp`` (Unix s),
``level_before``, ``level_after`` and ``ratio`` (after / before: means, medians
for log-scale metrics, sds for spread, rates for counters).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from ..matrix import MetricMatrix
from ..patterns import Pattern, PatternKind
from ..profile import ThermalProfile
from . import _changepoints as cp
from ._explain import Explainer
from ._interrupt import checkpoint
from ._shape import shape_changes
from ._stats import benjamini_hochberg, counter_columns, even_sample, median, quantile, rank_correlation, usable_columns

MEAN, SPREAD, SHAPE = "mean", "spread", "shape"

MAX_CHANGES = 8  # level change points per metric at most
LOG_SCALE_RANGE = 3.0  # a metric varies by factors only if its p99 / p1 exceeds this, and
MULTIPLICATIVE_CORRELATION = 0.2  # its noise grows with its level (rank correlation) beyond this
LATENCY_CORRELATION = 0.1  # ... or beyond this for a latency
CLEAR_EFFECT = 2.0  # a latency level change this many min_effect_size sds is reported below min_level_ratio
SCALE_SAMPLE = 10_000  # values (evenly spaced) that decide the scale
MIN_SEGMENT_SHARE = 0.02  # segments searched hold at least this share of the values (and MIN_FLAT)
PHASE_SHARE = 0.1  # a phase lasts this share of the values and of their time span: shorter is an excursion
EDGE_RAMP_SHARE = 0.2  # a ramp from the first or to the last task lasts this share
SPARSE_EVENTS = 5  # a mostly-constant metric's segments must hold this many non-typical values
COUNTER_MIN_STEPS = 3  # a never-decreasing metric is a counter once it stepped up this often
JOINT_TOLERANCE = 0.02  # changes of different metrics this close (share of tasks, >= 3) are one event
NUMERICAL_ZERO = 1e-12
HEADLINE_METRIC = "duration_ms"  # a span's duration leads the metrics that changed with it
_LATENCY_NAME = re.compile(r"(duration|latency|elapsed|wait|time)|_(ms|us|ns|s|sec|seconds)$", re.IGNORECASE)
_UNITS = (("_ms", " ms"), ("_us", " µs"), ("_ns", " ns"), ("_seconds", " s"), ("_sec", " s"), ("_s", " s"))


@dataclass
class _Series:
    """One metric as analysed: its present values in time order, on the scale searched."""

    name: str
    rows: np.ndarray  # matrix row of each value
    raw: np.ndarray  # values in the metric's units (increments for a counter)
    values: np.ndarray  # the scale searched: raw or log(raw)
    log_scale: bool
    rate: bool  # raw holds a counter's increments
    typical_share: float  # share of the values that hold the most common one
    times: np.ndarray  # timestamp of each value

    @property
    def sparse(self) -> bool:
        """Mostly one value (errors, retries): its rare values are the signal, not outliers."""
        return self.typical_share > 0.5

    @property
    def min_size(self) -> int:
        """Fewest values in a segment searched: MIN_SEGMENT_SHARE of the series, at least MIN_FLAT.

        A sparse metric changes by how often it leaves its usual value, so each
        segment must also hold about SPARSE_EVENTS values that are not the usual one.
        """
        size = max(cp.MIN_FLAT, int(math.ceil(MIN_SEGMENT_SHARE * self.values.size)))
        if self.sparse:
            size = max(size, int(math.ceil(SPARSE_EVENTS / max(1.0 - self.typical_share, NUMERICAL_ZERO))))
        return size

    def lasts(self, start: int, end: int, share: float = PHASE_SHARE) -> bool:
        """Whether values [start, end) span ``share`` of the values and of the time they cover."""
        if end - start < share * self.values.size:
            return False
        span = float(self.times[-1] - self.times[0])
        return span <= 0 or float(self.times[end - 1] - self.times[start]) >= share * span


@dataclass
class _Change:
    """One change point of one metric (positions index the series' values)."""

    series: _Series
    kind: str
    position: int
    start: int  # first value of the before side
    end: int  # one past the last value of the after side
    p_value: float
    effect: float  # d (mean), sd ratio (spread), JSD bits (shape)
    level_before: float
    level_after: float
    stats: dict[str, float] = field(default_factory=dict)
    ramp_end: int | None = None  # gradual changes: one past the ramp's last value

    @property
    def metric(self) -> str:
        return self.series.name

    @property
    def after_start(self) -> int:
        return self.ramp_end if self.ramp_end is not None else self.position

    @property
    def ratio(self) -> float:
        if self.level_before > 0 and self.level_after >= 0 and (self.kind == SPREAD or self.series.raw.min() >= 0):
            return self.level_after / self.level_before
        return math.nan


def detect(matrix: MetricMatrix, profile: ThermalProfile) -> list[Pattern]:
    rate = profile.rate
    min_tasks = max(cp.MIN_POINTS, rate.min_tasks)
    if matrix.n_tasks < min_tasks or matrix.n_metrics == 0:
        return []
    values = np.asfortranarray(matrix.values)  # contiguous columns: each metric is read as one series
    columns = usable_columns(values, min_tasks)
    # A flag switching on once (0 -> 1) or a single noiseless step never decreases either: those are
    # the cleanest phase transitions there are, not counters.
    counters = counter_columns(values, min_steps=COUNTER_MIN_STEPS)
    candidates: list[_Change] = []
    for j in columns:
        checkpoint()
        series = _series(matrix.metric_names[j], values[:, j], bool(counters[j]), min_tasks, matrix.timestamps)
        if series is not None:
            candidates.extend(_metric_changes(series, rate))
    if not candidates:
        return []
    significant = benjamini_hochberg(np.array([c.p_value for c in candidates]), rate.significance)
    thresholds = {MEAN: rate.min_effect_size, SPREAD: rate.min_variance_ratio, SHAPE: rate.min_jsd}
    clear = [ok and c.effect >= thresholds[c.kind] for c, ok in zip(candidates, significant)]
    kept = [c for c, ok in zip(candidates, clear) if ok and _moves_by_a_factor(c, rate.min_level_ratio, rate.min_effect_size)]
    # A latency that moved by less than the factor still counts beside another metric that moved then.
    kept += [c for c, ok in zip(candidates, clear) if ok and c not in kept and _beside(c, kept, matrix.n_tasks)]
    kept = _one_kind_per_change(kept)
    if not kept:
        return []
    for change in kept:
        _describe(change)
    explainer = Explainer(matrix)  # shared by the patterns: attribute codes are built once
    return [
        _pattern(matrix, events, profile, thresholds, explainer)
        for events in _stories(_joint_events(kept, matrix.n_tasks))
    ]


# --------------------------------------------------------------------- series
def _series(name: str, column: np.ndarray, counter: bool, min_tasks: int, timestamps: np.ndarray) -> _Series | None:
    rows = np.flatnonzero(np.isfinite(column))
    raw = column[rows]
    if counter:  # its increments carry the change (a rate that doubles); each belongs to the later task
        raw, rows = np.diff(raw), rows[1:]
    if raw.size < min_tasks or np.ptp(raw) <= 0:  # an ID (constant increments) or a constant
        return None
    log_scale = _multiplicative(raw, bool(_LATENCY_NAME.search(name)) and not counter)
    values = np.log(raw) if log_scale else raw.astype(float)
    _, counts = np.unique(values, return_counts=True)
    return _Series(name, rows, raw, values, log_scale, counter, counts.max() / values.size, timestamps[rows])


def _multiplicative(raw: np.ndarray, latency: bool) -> bool:
    """Whether a metric varies by factors (latency, sizes): positive, wide, noise growing with the level.

    Neighbours' difference against their mean is uncorrelated for additive noise (a
    ramp, a step of a gauge), clearly rank-correlated when the noise scales with
    the level; a latency (by its name) needs less evidence, since a few dozen
    spans show it only faintly. Such a metric is searched as log values, where a
    slowdown is a shift.
    """
    if raw.min() <= 0:
        return False
    low, high = quantile(raw, [0.01, 0.99])  # one partition for both (the same values as one each)
    if high <= LOG_SCALE_RANGE * low:
        return False
    sample = even_sample(raw, SCALE_SAMPLE)
    correlation = rank_correlation(np.abs(np.diff(sample)), sample[1:] + sample[:-1])
    return bool(correlation > (LATENCY_CORRELATION if latency else MULTIPLICATIVE_CORRELATION))


# --------------------------------------------------------------------- stages
def _metric_changes(series: _Series, rate) -> list[_Change]:
    n = series.values.size
    if n < 2 * series.min_size:
        return []
    # A sparse metric is searched as it is: its rare values are the signal, not outliers.
    fit = cp.search_level(series.values, rate.significance, min_size=series.min_size, max_changes=MAX_CHANGES,
                          robust=not series.sparse)
    level, searched, noise, beta = fit.segmentation, fit.searched, fit.noise, fit.beta
    if noise.innovation_sd <= 0:
        return []
    level, excursions = _phases_only(series.lasts, searched.size, level, beta, fit.without)
    residual = series.values - level.fitted()  # unclipped: effects are measured on what was observed
    changes = [_level_change(series, level, residual, transition, fit.p_value) for transition in _transitions(level)]
    for change in changes:
        change.stats["noise_autocorrelation"] = noise.phi

    checkpoint()
    if series.sparse:  # a mostly-constant metric's spread and shape are its rate: the level said it
        return changes
    # Spread and shape are read without the excursions (set aside above, not phases of their own).
    kept = np.flatnonzero(~excursions)
    level_bounds = np.searchsorted(kept, level.bounds)
    spread_changes = _spread_changes(series, kept, (searched - level.fitted())[kept], level_bounds, noise, rate)
    # Shape: only within stretches where level and spread hold still (not along a ramp).
    big_spread = [int(np.searchsorted(kept, c.position)) for c in spread_changes if c.effect >= rate.min_variance_ratio]
    edges = sorted({*level_bounds.tolist(), *big_spread})
    ramps = [(a, b) for a, b, sloped in zip(level_bounds[:-1], level_bounds[1:], level.sloped) if sloped]
    inflation = (1 + noise.phi) / (1 - noise.phi)
    shape = [
        _shape_change(series, kept, found)
        for a, b in zip(edges[:-1], edges[1:])
        if not any(start < b and a < end for start, end in ramps)
        for found in shape_changes(series.raw[kept], a, b, inflation)
    ]
    return changes + spread_changes + shape


def _spread_changes(series: _Series, kept: np.ndarray, residual: np.ndarray, level_bounds: np.ndarray,
                    noise: cp.Noise, rate) -> list[_Change]:
    """Spread changes, searched on the values ``kept`` (positions there), reported in the series' positions."""
    spread_min = max(cp.MIN_SPREAD, series.min_size)
    if kept.size < 2 * spread_min:
        return []
    values, spread_noise = cp.spread_input(residual, level_bounds, noise)
    if spread_noise.innovation_sd <= 0:
        return []
    beta = cp.penalty("spread", series.values.size, rate.significance)
    spread = cp.segment(values, spread_noise, beta, min_size=spread_min, slopes=False)

    def lasts(start: int, end: int, share: float = PHASE_SHARE) -> bool:
        return series.lasts(int(kept[start]), int(kept[end - 1]) + 1, share)

    def refit(segmentation: cp.Segmentation, gone: set[int]) -> cp.Segmentation:
        return cp.without(values, spread_noise, segmentation, gone, beta, min_size=spread_min, slopes=False)

    spread, _ = _phases_only(lasts, values.size, spread, beta, refit)
    return [_spread_change(series, kept, spread, residual, i) for i in range(spread.changes.size)]


def _phases_only(lasts, n: int, segmentation: cp.Segmentation, beta: float,
                 refit) -> tuple[cp.Segmentation, np.ndarray]:
    """Set aside every flat segment that does not last a phase: (segmentation, mask of the excursions).

    A burst of slow requests and back is an excursion, and a change in the last
    seconds of the window is not a phase yet (a later cool will see it last): both
    boundaries of such a segment go, and so does any boundary that then no longer
    pays its penalty. Sloped segments may be short: several make one curved ramp, and a
    steep one joins two phases; but a short one between two flat phases that are closer
    to each other than to it is a burst fitted as a line (a jump up, then back down
    through it), an excursion like a flat one.
    """
    excursions = np.zeros(n, dtype=bool)
    while segmentation.changes.size:
        bounds = segmentation.bounds
        last = bounds.size - 2
        # Flat segments must last; a ramp at either end twice as long (one between two phases may be
        # steep, but one still going at the last task is only a trend once it has gone on a while).
        short = [k for k in range(last + 1)
                 if (not segmentation.sloped[k] and not lasts(int(bounds[k]), int(bounds[k + 1])))
                 or (segmentation.sloped[k] and k in (0, last)
                     and not lasts(int(bounds[k]), int(bounds[k + 1]), EDGE_RAMP_SHARE))
                 or (0 < k < last and _sloped_excursion(segmentation, k)
                     and not lasts(int(bounds[k]), int(bounds[k + 1])))]
        if short:
            gone = _merge_short(segmentation, short[0], n)
            if len(gone) != 1 or short[0] in (0, bounds.size - 2):  # set aside, not joined to a neighbour
                excursions[bounds[short[0]] : bounds[short[0] + 1]] = True
        elif segmentation.gains.min() < beta:  # a boundary left over from an excursion no longer pays
            gone = {int(segmentation.changes[int(np.argmin(segmentation.gains))])}
        else:
            break
        segmentation = refit(segmentation, gone)
    return segmentation, excursions


def _transitions(level: cp.Segmentation) -> list[tuple[int, int, bool]]:
    """(first, last, ramp) segments of each transition: a step is (k, k + 1), a ramp its run of sloped segments.

    A run of sloped segments going the same way is one gradual transition (a curved
    ramp needs several lines); a line over the whole series is a trend, not a change.
    """
    sloped, slope, count = level.sloped, level.slope, level.sloped.size
    start_level, end_level = level.start_level, level.end_level()
    transitions = []
    k = 0
    while k < count:
        if sloped[k]:
            j = k
            while (j + 1 < count and sloped[j + 1] and np.sign(slope[j + 1]) == np.sign(slope[k])
                   and abs(start_level[j + 1] - end_level[j]) <= abs(end_level[j] - start_level[j])):
                j += 1
            # A jump at either end larger than the run's own rise is a step there (after a drift).
            rise = abs(end_level[j] - start_level[k])
            jump_in = abs(start_level[k] - end_level[k - 1]) if k > 0 else 0.0
            jump_out = abs(start_level[j + 1] - end_level[j]) if j + 1 < count else 0.0
            if max(jump_in, jump_out) > rise:
                if jump_in > rise and (k - 1, k, False) not in transitions:
                    transitions.append((k - 1, k, False))
                if jump_out > rise:
                    transitions.append((j, j + 1, False))
            elif k > 0 or j + 1 < count:
                transitions.append((k, j, True))
            k = j + 1
        else:
            if k + 1 < count and not sloped[k + 1] and (k, k + 1, False) not in transitions:
                transitions.append((k, k + 1, False))
            k += 1
    return sorted(transitions)


def _level_change(series: _Series, level: cp.Segmentation, residual: np.ndarray, transition, p_value) -> _Change:
    first, last, ramp = transition
    bounds, n_segments = level.bounds, level.sloped.size
    if ramp:
        before_segment = first - 1 if first > 0 else None
        after_segment = last + 1 if last + 1 < n_segments else None
        position, ramp_end = int(bounds[first]), int(bounds[last + 1])
        fitted_before = level.end_level()[first - 1] if before_segment is not None else level.start_level[first]
        fitted_after = level.start_level[last + 1] if after_segment is not None else level.end_level()[last]
        cps = [i - 1 for i in (first, last + 1) if 0 < i < n_segments]
    else:  # a step from segment first to last = first + 1 (either may be a drift)
        before_segment, after_segment = first, last
        position, ramp_end = int(bounds[last]), None
        fitted_before, fitted_after = level.end_level()[first], level.start_level[last]
        cps = [first]
    start = int(bounds[before_segment]) if before_segment is not None else position
    end = int(bounds[after_segment + 1]) if after_segment is not None else int(bounds[last + 1])
    gain = max(level.gains[i] for i in cps)
    # Cohen's d against the sides' own spread, outliers and minority modes included: a
    # mix of request types whose share wobbles is not a new phase of any of them.
    noise_sd = float(np.std(residual[start:end]))
    shift = abs(fitted_after - fitted_before)
    effect = shift / noise_sd if noise_sd > NUMERICAL_ZERO * max(1.0, shift) else (math.inf if shift > 0 else 0.0)
    change = _Change(
        series=series, kind=MEAN, position=position, start=start, end=end,
        p_value=p_value(float(gain)), effect=effect,
        level_before=math.nan, level_after=math.nan, ramp_end=ramp_end,
    )
    # Levels: the typical value of each side (median for metrics that vary by factors, else mean).
    typical = median if series.log_scale else np.mean
    before, after = _sides(change)
    change.level_before, change.level_after = float(typical(before)), float(typical(after))
    return change


def _sides(change: _Change) -> tuple[np.ndarray, np.ndarray]:
    """The values before and after a change; for a ramp from the first or to the last task, its ends."""
    raw = change.series.raw
    edge = max(cp.MIN_FLAT, int(PHASE_SHARE / 2 * raw.size))
    before, after = raw[change.start : change.position], raw[change.after_start : change.end]
    if before.size == 0:
        before = raw[change.position : change.position + edge]
    if after.size == 0:
        after = raw[max(0, change.end - edge) : change.end]
    return before, after


def _sloped_excursion(segmentation: cp.Segmentation, k: int) -> bool:
    """Whether interior sloped segment ``k`` stands apart from its flat neighbours, which are closer to each other."""
    if not segmentation.sloped[k] or segmentation.sloped[k - 1] or segmentation.sloped[k + 1]:
        return False
    before, after = segmentation.end_level()[k - 1], segmentation.start_level[k + 1]
    middle = (segmentation.start_level[k] + segmentation.end_level()[k]) / 2.0  # a line's mean
    return abs(before - after) < min(abs(middle - before), abs(middle - after))


def _merge_short(segmentation: cp.Segmentation, k: int, n: int) -> set[int]:
    """The boundaries to remove for short flat segment ``k``.

    Between two neighbours that are closer to each other than to it, it is an
    excursion: both boundaries go. Otherwise it is a sliver of one neighbour (a
    change point placed twice): it joins the nearer one. At an edge, its one
    boundary goes.
    """
    bounds, level = segmentation.bounds, segmentation.start_level
    if k == 0 or k == bounds.size - 2:
        return {int(bounds[1])} if k == 0 else {int(bounds[-2])}
    if _sloped_excursion(segmentation, k):
        return {int(bounds[k]), int(bounds[k + 1])}
    before, after = segmentation.end_level()[k - 1], level[k + 1]
    to_before, to_after = abs(level[k] - before), abs(level[k] - after)
    if abs(before - after) < min(to_before, to_after):
        return {int(bounds[k]), int(bounds[k + 1])}
    return {int(bounds[k])} if to_before <= to_after else {int(bounds[k + 1])}


def _spread_change(series: _Series, kept: np.ndarray, spread: cp.Segmentation, residual: np.ndarray,
                   i: int) -> _Change:
    start, position, end = (int(v) for v in spread.bounds[i : i + 3])  # positions among the kept values
    # Effect: ratio of the sides' sds around the level fit, outliers pulled in (a few
    # of them are no change of spread; a new mix of the same spread is one of shape).
    before, after = float(np.std(residual[start:position])), float(np.std(residual[position:end]))
    if min(before, after) > 0:
        ratio = max(after / before, before / after)
    else:
        ratio = math.inf if max(before, after) > 0 else 1.0
    return _Change(
        series=series, kind=SPREAD, position=int(kept[position]), start=int(kept[start]), end=int(kept[end - 1]) + 1,
        p_value=cp.p_value("spread", series.values.size, float(spread.gains[i])), effect=ratio,
        level_before=before, level_after=after,
    )


def _shape_change(series: _Series, kept: np.ndarray, found) -> _Change:
    return _Change(
        series=series, kind=SHAPE, position=int(kept[found.position]), start=int(kept[found.start]),
        end=int(kept[found.end - 1]) + 1, p_value=found.p_value, effect=found.jsd,
        level_before=math.nan, level_after=math.nan,
        stats={"jsd": found.jsd, "ks_statistic": found.ks_statistic, "sample_size": float(found.sample_size),
               "search_stride": float(found.stride)},
    )


# ------------------------------------------------------------ post-processing
def _beside(change: _Change, kept: list[_Change], n_tasks: int) -> bool:
    """Whether another metric's reported level change happened at the same moment as ``change``."""
    tolerance = max(3, int(JOINT_TOLERANCE * n_tasks))
    first, last = _span(change)
    return any(other.metric != change.metric and other.kind == MEAN and change.kind == MEAN
               and _span(other)[0] - tolerance <= last and first <= _span(other)[1] + tolerance for other in kept)


def _moves_by_a_factor(change: _Change, min_ratio: float, min_effect: float) -> bool:
    """A level change of a latency, or of a metric that varies by factors, must move it by ``min_ratio``.

    With thousands of spans a 1.2x drift of a narrow latency is significant and
    large in sds, and healthy traffic does that all the time; nobody acts on it.
    """
    if change.kind != MEAN or not (change.series.log_scale or _is_latency(change)):
        return True
    if change.effect >= CLEAR_EFFECT * min_effect:  # a small factor, but far outside the noise
        return True
    ratio = change.ratio
    return math.isfinite(ratio) and ratio > 0 and max(ratio, 1 / ratio) >= min_ratio


def _one_kind_per_change(changes: list[_Change]) -> list[_Change]:
    """A metric tells one story at a time: level, else spread, else shape.

    A slowdown also widens the spread of raw values and changes their shape, and
    CPU starvation makes latency erratic as well as slow; saying all of it would
    describe one fact as several, some contradictory. So a spread or shape change
    goes when a level change of the same metric falls within its two sides (or
    close to it).
    """
    order = {MEAN: 0, SPREAD: 1, SHAPE: 2}
    kept: list[_Change] = []
    for change in sorted(changes, key=lambda c: (order[c.kind], -c.effect)):
        tolerance = _tolerance(change.series.values.size)
        if not any(
            other.metric == change.metric
            and (other.position - tolerance <= change.position <= other.after_start + tolerance
                 or (other.kind == MEAN and change.kind != MEAN and change.start <= other.position < change.end))
            for other in kept
        ):
            kept.append(change)
    return kept


def _tolerance(n: int) -> int:
    """Changes of one metric closer than half a phase are one change."""
    return max(3, int(PHASE_SHARE / 2 * n))


def _describe(change: _Change) -> None:
    """The descriptive figures of a change that will be reported."""
    before, after = _sides(change)
    mean_b, mean_a = float(np.mean(before)), float(np.mean(after))
    sd_b = float(np.std(before, ddof=1)) if before.size > 1 else 0.0
    sd_a = float(np.std(after, ddof=1)) if after.size > 1 else 0.0
    pooled = math.sqrt((sd_b**2 + sd_a**2) / 2.0)
    figures = {
        "before_mean": mean_b,
        "after_mean": mean_a,
        "before_std": sd_b,
        "after_std": sd_a,
        "before_median": float(median(before)),
        "after_median": float(median(after)),
        "before_p95": float(quantile(before, 0.95)),
        "after_p95": float(quantile(after, 0.95)),
        # Standardised mean difference of the raw sides: near 0 for spread- or shape-only shifts.
        "mean_difference_d": abs(mean_a - mean_b) / pooled if pooled > 0 else 0.0,
    }
    for name, value in figures.items():
        change.stats.setdefault(name, value)


@dataclass
class _Event:
    """Changes of one or more metrics at (about) the same task: one fact."""

    changes: list[_Change]  # strongest first

    @property
    def lead(self) -> _Change:
        return self.changes[0]

    @property
    def row(self) -> int:
        return int(self.lead.series.rows[self.lead.position])


def _span(change: _Change) -> tuple[int, int]:
    """First and last task of a change (a step's is one task, a ramp's its whole course)."""
    rows = change.series.rows
    return int(rows[change.position]), int(rows[max(change.after_start - 1, change.position)])


def _joint_events(changes: list[_Change], n_tasks: int) -> list[_Event]:
    """Changes of different metrics whose tasks overlap (within JOINT_TOLERANCE), as events."""
    tolerance = max(3, int(JOINT_TOLERANCE * n_tasks))
    events: list[tuple[list[_Change], int]] = []  # members, last task covered
    for change in sorted(changes, key=_span):
        first, last = _span(change)
        if events and first <= events[-1][1] + tolerance and all(c.metric != change.metric for c in events[-1][0]):
            members, reach = events[-1]
            events[-1] = (members + [change], max(reach, last))
        else:
            events.append(([change], last))
    return [_Event(sorted(members, key=_strength, reverse=True)) for members, _ in events]


def _strength(change: _Change) -> tuple[int, bool, float]:
    # Level before spread before shape (the order a person reads them); a span's own duration
    # heads what moved with it; then by effect.
    return ({MEAN: 2, SPREAD: 1, SHAPE: 0}[change.kind], change.metric == HEADLINE_METRIC, change.effect)


def _stories(events: list[_Event]) -> list[list[_Event]]:
    """Events of the same metrics and kind, in time order: one pattern each."""
    stories: dict[tuple[tuple[str, ...], str], list[_Event]] = {}
    for event in events:
        stories.setdefault((_metrics(event), event.lead.kind), []).append(event)
    return [story for _, story in sorted(stories.items())]


def _metrics(event: _Event) -> tuple[str, ...]:
    return (event.lead.metric, *sorted(c.metric for c in event.changes[1:]))


# -------------------------------------------------------------------- pattern
def _when(timestamp: float) -> str:
    if timestamp >= 1e9:  # a Unix time: show it as UTC
        moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
        millis = moment.microsecond // 1000
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{millis:03d}" if millis else "") + "Z"
    return f"t={timestamp:g}"


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def _factor(ratio: float) -> str:
    return f"{ratio:.2g}x" if ratio < 10 else f"{ratio:.0f}x"


def _unit(metric: str) -> str:
    lower = metric.lower()
    return next((unit for suffix, unit in _UNITS if lower.endswith(suffix)), "")


def _is_latency(change: _Change) -> bool:
    return not change.series.rate and change.series.raw.min() >= 0 and bool(_LATENCY_NAME.search(change.metric))


def _where(change: _Change, matrix: MetricMatrix) -> str:
    row = int(change.series.rows[change.position])
    text = f"task {row} ({_when(float(matrix.timestamps[row]))})"
    if change.ramp_end is not None:
        end_row = int(change.series.rows[change.ramp_end - 1])
        return f"gradually from {text} to task {end_row}"
    return f"at {text}"


def _effect_text(change: _Change) -> str:
    return f"d={change.effect:.1f}" if math.isfinite(change.effect) else "without noise"


def _level_text(change: _Change) -> str:
    """What moved, in the words an operator acts on (no place, no metric name)."""
    rose = change.level_after > change.level_before
    ratio = change.ratio
    if _is_latency(change) and math.isfinite(ratio) and ratio > 0:
        unit = _unit(change.metric)
        stats = change.stats
        verb = f"slowed down {_factor(ratio)}" if rose else f"sped up {_factor(1 / ratio)}"
        figures = (f"median {_fmt(stats['before_median'])} -> {_fmt(stats['after_median'])}{unit}, "
                   f"p95 {_fmt(stats['before_p95'])} -> {_fmt(stats['after_p95'])}{unit}")
        return f"{verb} ({figures}; {_effect_text(change)})"
    factor = f"x{ratio:.2g}, " if math.isfinite(ratio) and ratio > 0 else ""
    what = "rate " if change.series.rate else "mean "
    per = " per task" if change.series.rate else ""
    levels = f"from {_fmt(change.level_before)} to {_fmt(change.level_after)}{per}"
    return f"{what}{'rose' if rose else 'fell'} {levels} ({factor}{_effect_text(change)})"


def _change_text(change: _Change) -> str:
    if change.kind == MEAN:
        return _level_text(change)
    stats = change.stats
    if change.kind == SPREAD:
        widened = change.level_after > change.level_before
        verb = "widened" if widened else "narrowed"
        ratio = f"x{change.effect:.1f}; " if math.isfinite(change.effect) else ""
        if change.series.log_scale:
            unit = _unit(change.metric)
            return (f"spread {verb} ({ratio}p95 {_fmt(stats['before_p95'])} -> {_fmt(stats['after_p95'])}{unit}, "
                    f"median {_fmt(stats['before_median'])} -> {_fmt(stats['after_median'])}{unit})")
        sides = [f"sd {_fmt(level)}" if level > 0 else "constant" for level in (change.level_before, change.level_after)]
        means = f"mean {_fmt(stats['before_mean'])} -> {_fmt(stats['after_mean'])}"
        return f"spread {verb} from {sides[0]} to {sides[1]} ({ratio}{means})"
    means = f"mean {_fmt(stats['before_mean'])} -> {_fmt(stats['after_mean'])}"
    sds = f"sd {_fmt(stats['before_std'])} -> {_fmt(stats['after_std'])}"
    return f"distribution shape changed (JSD {change.effect:.2f} bits, KS D={stats['ks_statistic']:.2f}; {means}, {sds})"


def _event_text(event: _Event, matrix: MetricMatrix) -> str:
    lead = event.lead
    text = f"{_change_text(lead)} {_where(lead, matrix)}"
    if len(event.changes) > 1:
        text += "; with it " + ", ".join(f"{c.metric} {_change_text(c)}" for c in event.changes[1:])
    return text


_EFFECT_NAME = {MEAN: "effect_size", SPREAD: "variance_ratio", SHAPE: "jsd"}
_THRESHOLD_NAME = {MEAN: "min_effect_size", SPREAD: "min_variance_ratio", SHAPE: "min_jsd"}


def _confidence(change: _Change, threshold: float, significance: float) -> float:
    # 0.5 at the effect threshold, -> 1 as the effect grows; halved at most by a borderline p-value.
    strength = change.effect / threshold if threshold > 0 else math.inf
    from_effect = 1.0 - 0.5 / strength**2 if strength > 0 else 0.0
    from_p = 1.0 - 0.5 * min(1.0, change.p_value / significance)
    return max(0.0, from_effect * from_p)


def _change_statistics(change: _Change, matrix: MetricMatrix) -> dict[str, float]:
    rows = change.series.rows
    row = int(rows[change.position])
    stats = {
        "change_index": row,
        "change_timestamp": float(matrix.timestamps[row]),
        _EFFECT_NAME[change.kind]: change.effect,
        "p_value": change.p_value,
        "level_before": change.level_before,
        "level_after": change.level_after,
        "ratio": change.ratio,
        **change.stats,
    }
    if change.ramp_end is not None:
        end_row = int(rows[change.ramp_end - 1])
        stats["ramp_end_index"] = end_row
        stats["ramp_end_timestamp"] = float(matrix.timestamps[end_row])
    # An infinite effect (a noiseless step, a constant side) is in the description;
    # JSON has no infinity, so it is left out of the figures.
    return {name: value for name, value in stats.items() if math.isfinite(value)}


def _event_statistics(event: _Event, matrix: MetricMatrix) -> dict[str, float]:
    stats = _change_statistics(event.lead, matrix)
    for other in event.changes[1:]:  # the other metrics that moved: <metric>.level_before, ...
        figures = _change_statistics(other, matrix)
        for name in ("level_before", "level_after", "ratio", _EFFECT_NAME[other.kind], "p_value"):
            if name in figures:
                stats[f"{other.metric}.{name}"] = figures[name]
    return stats


def _pattern(matrix: MetricMatrix, events: list[_Event], profile: ThermalProfile, thresholds: dict[str, float],
             explainer: Explainer) -> Pattern:
    rate = profile.rate
    kind = events[0].lead.kind
    metrics = _metrics(events[0])
    confidences = [_confidence(e.lead, thresholds[kind], rate.significance) for e in events]
    strongest = events[int(np.argmax(confidences))]
    statistics = _event_statistics(strongest, matrix)
    if len(events) > 1:
        # Every change in time order: change_1_index, change_1_p_value, change_2_index, ...
        for number, event in enumerate(events, start=1):
            for name, value in _event_statistics(event, matrix).items():
                statistics[f"change_{number}_{name.removeprefix('change_')}"] = value
    lead = strongest.lead
    statistics.update({
        "change_points": len(events),
        "tasks": lead.series.rows.size,
        "noise_autocorrelation": statistics.get("noise_autocorrelation", 0.0),
        "significance": rate.significance,
        _THRESHOLD_NAME[kind]: thresholds[kind],
    })
    subject = f"{metrics[0]} " if len(metrics) == 1 else f"{metrics[0]} (with {', '.join(metrics[1:])}) "
    description = subject + "; then ".join(_event_text(e, matrix) for e in events)
    # What changed with it: attribute values (a new service.version, another host) that the tasks
    # after the strongest change carry and the tasks before it do not.
    rows = lead.series.rows
    around = np.zeros(matrix.n_tasks, dtype=bool)
    around[rows[lead.start : lead.end]] = True
    explanation = explainer.over_represented(rows[lead.after_start : lead.end], around, "tasks after")
    return Pattern(
        kind=PatternKind.PHASE_TRANSITION,
        description=description,
        confidence=max(confidences),
        metrics=metrics,
        statistics=statistics,
        involved=_involved(matrix, [e.lead for e in events], profile.max_involved),
        explanation=explanation,
        key=f"phase_transition:{'+'.join(sorted(metrics))}:{kind}",
    )


def _involved(matrix: MetricMatrix, changes: list[_Change], max_involved: int):
    """Tasks just before and just after each change point, nearest first, sharing ``max_involved``."""
    per_side = max(1, max_involved // (2 * len(changes)))
    involved = []
    for change in changes:
        rows = change.series.rows
        before = np.arange(max(change.start, change.position - per_side), change.position)
        after = np.arange(change.position, min(change.end, change.position + per_side))
        # Closer to the change = more relevant.
        involved += matrix.involved(rows[before], "before", limit=per_side, priority=before - change.position)
        involved += matrix.involved(rows[after], "after", limit=per_side, priority=change.position - after)
    return tuple(involved[:max_involved])
