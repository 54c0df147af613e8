"""Phase transitions: where, in time order, a metric's level, spread or shape changed.

The crate compared the first half of the tasks with the second half, by mean only
(review finding 1). Here each metric is read as a time series (matrix rows are in
time order) and decomposed in three stages, each with its own change-point search
(binary segmentation over prefix-sum costs, see ``_changepoints``) and its own test:

1. **level** ("mean"): piecewise-linear fit of the winsorised series, so a ramp is
   one segment, reported once as "rose from X to Y gradually from task a to b".
   Test: Chow F test (one line vs two). Effect: level change / pooled sd of the two
   segments (Cohen's d).
2. **spread**: on the residuals around that level fit, piecewise-constant mean
   absolute residual. Test: Brown-Forsythe (Levene, median-centred). Effect: ratio
   of the two sides' sds, so a shift in mean alone never shows up here.
3. **shape**: within stretches where level and spread hold still (and not along a
   ramp), quantile-bin codes of the values; multinomial (G statistic) search. Test:
   two-sample KS. Effect: Jensen-Shannon divergence (bits, small-sample bias removed).

Each test's p-value is Bonferroni-corrected for the split positions the search
could choose, Benjamini-Hochberg runs across every candidate of every metric, and
a change is reported only when its effect also clears the profile's threshold:
with 100k tasks every p-value is tiny, so the effect size is what keeps this honest.

IDs and counters that merely increase (``counter_columns``) are skipped: their
trend is their definition, not a transition.

One pattern per metric and kind of shift, listing its change points in time
order, with key ``phase_transition:<metric>:<mean|spread|shape>``: the streaming
processor de-duplicates by key, and a second change of the same kind on the same
metric is part of the same story (a level that rose and fell back).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import numpy as np
from scipy.stats import f as f_distribution
from scipy.stats import ks_2samp, kstwobign, levene

from .. import information
from ..matrix import MetricMatrix
from ..patterns import Pattern, PatternKind
from ..profile import ThermalProfile
from ._interrupt import checkpoint
from ._changepoints import LinearTrendCost, MeanCost, MultinomialCost, binary_segmentation
from ._explain import Explainer
from ._stats import benjamini_hochberg, counter_columns, usable_columns

MEAN, SPREAD, SHAPE = "mean", "spread", "shape"

MIN_SEGMENT = 20  # fewest tasks on either side of a change point
MAX_SEGMENT_FLOOR = 200  # the minimum segment grows with n (2 %) up to this
MAX_CHANGES = {MEAN: 6, SPREAD: 4, SHAPE: 3}  # candidates per metric and stage
# Penalties per change point, BIC-like: parameters a split adds x log(n), in units of
# the noise variance (level, spread) or in nats per free bin (shape).
LEVEL_PENALTY = 3.0
SPREAD_PENALTY = 3.0
SHAPE_PENALTY = 1.5
SEARCH_BINS = 8  # quantile bins for the shape search
MAX_JSD_BINS = 16  # finer bins to measure a divergence
DIVERGENCE_SAMPLE = 5000  # at most this many values per side for KS and JSD (even stride)
SHAPE_SEARCH_SAMPLE = 20_000  # the shape search reads every k-th value, at most this many
SPREAD_SAMPLE = 20_000  # at most this many values per side for spread estimates and Levene
SCALE_SAMPLE = 10_000  # values (evenly spaced in time) that pick centre, scale and bin edges
TREND_T = 4.0  # slope t-statistic from which a segment counts as a ramp
RAMP_SEGMENTS = 3  # a ramp spans at least this many minimum segments
WINSOR = 6.0  # robust z beyond which values are clipped for the search and the fits
SPREAD_TRIM = 0.05  # share of largest absolute deviations left out of a spread estimate
TRIMMED_DEVIATION_PER_SIGMA = 0.7168  # E|Z| over the 95 % smallest |Z|, for normal data
NUMERICAL_ZERO = 1e-9  # in robust z units: below this a spread is rounding error
COUNTER_MIN_STEPS = 3  # a never-decreasing metric is a counter once it stepped up this often
AUTOCORRELATION_BLOCKS = 500  # blocks (evenly spaced) that estimate the noise's autocorrelation
MAX_AUTOCORRELATION = 0.95


@dataclass
class _Change:
    """One tested change point of one metric (positions index the metric's present values)."""

    metric: str
    kind: str
    position: int
    start: int  # before-segment start
    end: int  # after-segment end
    p_value: float
    effect: float  # d (mean), sd ratio (spread), JSD bits (shape)
    before_level: float
    after_level: float
    stats: dict[str, float] = field(default_factory=dict)
    ramp_end: int | None = None  # mean changes that are gradual: where the ramp ends
    short_after: bool = False  # the after-segment is too short to tell a ramp from a step
    ratio_scale: bool = False  # the metric is never negative, so "x4.8" means something


def detect(matrix: MetricMatrix, profile: ThermalProfile) -> list[Pattern]:
    rate = profile.rate
    if matrix.n_tasks < 2 * MIN_SEGMENT or matrix.n_metrics == 0:
        return []  # too short to have two phases (and usable_columns needs rows)
    values = np.asfortranarray(matrix.values)  # contiguous columns: each metric is read as one series
    columns = usable_columns(values, max(rate.min_tasks, 2 * MIN_SEGMENT))
    counters = counter_columns(values) & _stepping_often(values)
    candidates: list[_Change] = []
    present_rows: dict[str, np.ndarray] = {}
    series: dict[str, np.ndarray] = {}
    for j in columns:
        checkpoint()
        if counters[j]:
            continue
        name = matrix.metric_names[j]
        rows = np.flatnonzero(np.isfinite(values[:, j]))
        present_rows[name] = rows
        series[name] = values[rows, j]
        candidates.extend(_metric_changes(name, series[name], rate))
    if not candidates:
        return []
    significant = benjamini_hochberg(np.array([c.p_value for c in candidates]), rate.significance)
    thresholds = {MEAN: rate.min_effect_size, SPREAD: rate.min_variance_ratio, SHAPE: rate.min_jsd}
    kept = [c for c, ok in zip(candidates, significant) if ok and c.effect >= thresholds[c.kind]]
    kept = _merge_ramps(kept)
    kept = _drop_explained(kept, rate.min_variance_ratio)
    for change in kept:
        _describe(change, series[change.metric])
    explainer = Explainer(matrix)  # shared by the patterns: attribute codes are built once
    groups: dict[tuple[str, str], list[_Change]] = {}
    for change in kept:
        groups.setdefault((change.metric, change.kind), []).append(change)
    return [
        _pattern(matrix, present_rows[metric], kind, sorted(changes, key=_position), profile, thresholds[kind],
                 explainer)
        for (metric, kind), changes in sorted(groups.items())
    ]


def _position(change: _Change) -> int:
    return change.position


# --------------------------------------------------------------------- stages
def _min_segment(n: int, min_tasks: int) -> int:
    return max(MIN_SEGMENT, min_tasks, min(n // 50, MAX_SEGMENT_FLOOR))


def _stepping_often(values: np.ndarray) -> np.ndarray:
    """Columns whose value changes at least COUNTER_MIN_STEPS times between neighbours.

    ``counter_columns`` also matches a flag switching on once (0 -> 1) or a single
    noiseless step: those are the cleanest phase transitions there are, not counters.
    """
    mask = np.zeros(values.shape[1], dtype=bool)
    for j in range(values.shape[1]):
        column = values[:, j]
        column = column[np.isfinite(column)]
        mask[j] = np.count_nonzero(np.diff(column)) >= COUNTER_MIN_STEPS
    return mask


def _robust_scale(values: np.ndarray) -> float:
    """A scale for robust z-scores that never collapses while the values vary.

    The MAD is 0 as soon as half the values are equal (a metric idle half the
    time), and then a handful of values would blow up to huge z-scores; the
    trimmed mean absolute deviation only reaches 0 when 95 % are equal.
    """
    scale = _trimmed_deviation_sd(values)
    if scale > 0:
        return scale
    std = float(np.std(values))
    return std if std > 0 else 1.0


def _trimmed_deviation_sd(values: np.ndarray) -> float:
    """sd from the mean absolute deviation from the median, largest deviations trimmed.

    Brown-Forsythe's quantity, so it agrees with the test; unlike the MAD it does
    not collapse to 0 on counts that are mostly zero. Trimming the top 5 % (at
    least two values) keeps one outlier in a flat metric from passing for a
    change of spread: that is an outlier, not a new phase.
    """
    deviations = np.sort(np.abs(values - np.median(values)))
    keep = max(1, min(int(deviations.size * (1 - SPREAD_TRIM)), deviations.size - 2))
    deviation = float(np.mean(deviations[:keep])) / TRIMMED_DEVIATION_PER_SIGMA
    return deviation if deviation > NUMERICAL_ZERO else 0.0


def _metric_changes(name: str, x: np.ndarray, rate) -> list[_Change]:
    n = x.size
    min_size = _min_segment(n, rate.min_tasks)
    if n < 2 * min_size:
        return []
    # Centre and scale only condition the arithmetic; an even sample gives them cheaply.
    sample = _even_sample(x, SCALE_SAMPLE)
    center = float(np.median(sample))
    scale = _robust_scale(sample)
    # Robust z-scores, winsorised: a few huge values of a heavy-tailed metric must
    # not drag a least-squares fit (and fake a level or spread change around them).
    z = np.clip((x - center) / scale, -WINSOR, WINSOR)
    # Noise variance from differences (they ignore steps and ramps), scaled up to the
    # long-run variance when neighbours are correlated: a slowly wandering metric
    # must not pass its wanderings off as transitions.
    rho = _lag1_autocorrelation(z, min_size)
    inflation = _inflation(rho)
    noise_var = float(np.var(np.diff(z))) / (2.0 * (1 - rho)) * inflation
    if noise_var <= 0:
        return []
    log_n = math.log(n)

    level = LinearTrendCost(z)
    level_changes = binary_segmentation(level, min_size, LEVEL_PENALTY * noise_var * log_n, MAX_CHANGES[MEAN])
    bounds = np.array([0, *level_changes, n])
    length, mean, slope, rss = level.fit(bounds[:-1], bounds[1:])
    ramp_length = RAMP_SEGMENTS * min_size
    end_level, trending = zip(*(_end_level(*fit, min_length=ramp_length) for fit in zip(length, mean, slope, rss)))
    model = _LevelModel(bounds, end_level, trending, center, scale, inflation, non_negative=bool(x.min() >= 0))
    changes = [_level_change(name, x, model, i, level, min_size) for i in range(1, bounds.size - 1)]

    # Residuals around the level fit: what is left once level and trend are explained.
    # A flat segment is centred on its median, so one outlier in an otherwise constant
    # metric does not tilt the fit and smear deviations over its neighbours.
    segment = np.repeat(np.arange(bounds.size - 1), np.diff(bounds))
    segment_centre = (bounds[:-1] + bounds[1:] - 1) / 2.0
    sloped = _clearly_sloped(length, slope, rss)
    flat_level = np.array([np.median(_even_sample(z[a:b], SCALE_SAMPLE)) for a, b in zip(bounds[:-1], bounds[1:])])
    fitted = np.where(sloped, mean, flat_level)[segment]
    fitted += np.where(sloped, slope, 0.0)[segment] * (np.arange(n) - segment_centre[segment])
    residual = z - fitted

    magnitude = np.minimum(np.abs(residual), WINSOR)
    rho_spread = _lag1_autocorrelation(magnitude, min_size)
    spread_inflation = _inflation(rho_spread)
    spread_var = float(np.var(np.diff(magnitude))) / (2.0 * (1 - rho_spread)) * spread_inflation
    spread_changes: list[int] = []
    if spread_var > 0:
        spread = MeanCost(magnitude)
        spread_penalty = SPREAD_PENALTY * spread_var * log_n
        spread_changes = binary_segmentation(spread, min_size, spread_penalty, MAX_CHANGES[SPREAD])
    spread_bounds = np.array([0, *spread_changes, n])
    changes += [
        _spread_change(name, residual, spread_bounds, i, scale, min_size, spread_inflation)
        for i in range(1, spread_bounds.size - 1)
    ]

    # Shape: searched only within stretches where level and spread hold still (not
    # along a ramp), on the raw values. Standardising each segment instead would
    # shift the atoms of discrete metrics (counts) between segments and fake a
    # shape change.
    ramps = [(int(bounds[i]), int(bounds[i + 1])) for i, is_ramp in enumerate(trending) if is_ramp]
    still = {0, n, *(edge for ramp in ramps for edge in ramp)}
    still |= {c.position for c in changes if c.kind == MEAN and c.effect >= rate.min_effect_size}
    still |= {c.position for c in changes if c.kind == SPREAD and c.effect >= rate.min_variance_ratio}
    stretch_bounds = sorted(still)
    for a, b in zip(stretch_bounds[:-1], stretch_bounds[1:]):
        if b - a >= 2 * min_size and not any(a < ramp_end and ramp_start < b for ramp_start, ramp_end in ramps):
            changes += _shape_changes(name, x, a, b, min_size, rate)
    return changes


def _lag1_autocorrelation(series: np.ndarray, block: int) -> float:
    """Lag-1 autocorrelation of the noise, in [0, MAX_AUTOCORRELATION].

    The median over blocks of ``block`` values, each centred on its own mean, so
    steps and ramps (a few blocks) do not pass for correlation; corrected for the
    downward bias of short blocks (about (1 + 3 rho) / block).
    """
    block = max(block, 4)
    count = min(series.size // block, AUTOCORRELATION_BLOCKS)
    if count < 3:
        return 0.0
    # Evenly spaced blocks: the estimate costs the same at any n.
    starts = np.linspace(0, series.size - block, count).round().astype(np.intp)
    blocks = series[starts[:, None] + np.arange(block)].astype(float)
    centred = blocks - blocks.mean(axis=1, keepdims=True)
    squares = np.sum(centred * centred, axis=1)
    varying = squares > NUMERICAL_ZERO * block  # a constant block holds only rounding error
    per_block = np.sum(centred[varying, 1:] * centred[varying, :-1], axis=1) / squares[varying]
    if per_block.size < 3:  # (nearly) constant blocks: no noise to speak of
        return 0.0
    rho = float(np.median(per_block))
    rho += (1 + 3 * rho) / block
    return float(np.clip(rho, 0.0, MAX_AUTOCORRELATION))


def _inflation(rho: float) -> float:
    """Long-run variance / variance for an AR(1)-like series: how much less each value tells."""
    return (1 + rho) / (1 - rho)


def _clearly_sloped(length: np.ndarray, slope: np.ndarray, rss: np.ndarray) -> np.ndarray:
    """Segments whose slope is clearly non-zero (t >= TREND_T), whatever their length."""
    sii = (length**3 - length) / 12.0
    residual_sd = np.sqrt(rss / np.maximum(length - 2.0, 1.0))
    explained = np.abs(slope) * np.sqrt(sii)  # sd the slope accounts for, times sqrt(length)
    return (explained > NUMERICAL_ZERO) & (explained >= TREND_T * residual_sd)


def _end_level(length: float, mean: float, slope: float, rss: float, min_length: int) -> tuple[float, bool]:
    """Level a segment reached at its end, and whether it is a ramp.

    A ramp: at least ``min_length`` long (a short segment's slope, picked by the
    search, is mostly noise), the slope is clearly non-zero (t >= TREND_T) and
    moves the level by more than one residual sd; its end is its line's last value.
    """
    if length < min_length:
        return mean, False
    sii = (length**3 - length) / 12.0
    residual_sd = math.sqrt(rss / max(length - 2.0, 1.0))
    rise = abs(slope) * (length - 1)
    explained = abs(slope) * math.sqrt(sii)
    if rise > NUMERICAL_ZERO and rise >= residual_sd and explained >= TREND_T * residual_sd:
        return mean + slope * (length - 1) / 2.0, True
    return mean, False


@dataclass(frozen=True)
class _LevelModel:
    """The piecewise-linear level fit of one metric, in robust z units."""

    bounds: np.ndarray  # segment edges: 0, change points..., n
    end_level: tuple[float, ...]  # per segment, the level it reached at its end
    trending: tuple[bool, ...]  # per segment, whether it is a ramp
    center: float  # z = (x - center) / scale
    scale: float
    inflation: float  # long-run variance factor of the noise (autocorrelation)
    non_negative: bool  # the metric is never negative


def _level_change(name: str, x: np.ndarray, model: _LevelModel, i: int, cost, min_size: int) -> _Change:
    bounds, trending, end_level = model.bounds, model.trending, model.end_level
    center, scale, inflation = model.center, model.scale, model.inflation
    start, at, end = int(bounds[i - 1]), int(bounds[i]), int(bounds[i + 1])
    before, after = x[start:at], x[at:end]
    moments = _moments(before, after)
    # A flat segment's level is its raw mean; a ramp's is where its (robust) line ends.
    before_level = center + scale * end_level[i - 1] if trending[i - 1] else moments["before_mean"]
    after_level = center + scale * end_level[i] if trending[i] else moments["after_mean"]
    # Cohen's d with the segments' own sd: for steps the usual d; along a ramp the
    # ramp's own spread counts as noise, so the end of a ramp (the level stops
    # moving) is not a second transition.
    pooled_sd = math.sqrt((moments["before_std"] ** 2 + moments["after_std"] ** 2) / 2.0)
    shift = abs(after_level - before_level)
    effect = shift / pooled_sd if pooled_sd > 0 else (math.inf if shift > 0 else 0.0)
    # Chow test: one line over both segments vs one line each.
    merged = float(cost.cost(np.array([start]), np.array([end]))[0])
    rss_split = float(np.sum(cost.cost(np.array([start, at]), np.array([at, end]))))
    dof = (end - start) - 4
    if rss_split > 0 and dof > 0:
        # Correlated neighbours carry less information: divide by the variance inflation.
        f_stat = max(merged - rss_split, 0.0) / 2.0 / (rss_split / dof) / inflation
        p_value = float(f_distribution.sf(f_stat, 2, dof))
    else:
        p_value = 0.0 if merged > rss_split else 1.0
    return _Change(
        metric=name,
        kind=MEAN,
        position=at,
        start=start,
        end=end,
        p_value=_searched(p_value, start, end, min_size),
        effect=effect,
        before_level=before_level,
        after_level=after_level,
        stats=moments,
        ramp_end=end if trending[i] else None,
        short_after=(end - at) < RAMP_SEGMENTS * min_size,
        ratio_scale=model.non_negative,
    )


def _spread_change(name, residual, bounds, i, scale, min_size, inflation) -> _Change:
    start, at, end = int(bounds[i - 1]), int(bounds[i]), int(bounds[i + 1])
    # Spread and its test from evenly spaced samples: the effect and the p-value are
    # already decisive at this size, and the medians inside stay cheap.
    before = _even_sample(residual[start:at], SPREAD_SAMPLE)
    after = _even_sample(residual[at:end], SPREAD_SAMPLE)
    sd_before, sd_after = _trimmed_deviation_sd(before), _trimmed_deviation_sd(after)
    statistic = float(levene(before, after, center="median").statistic)
    p_value = float(f_distribution.sf(statistic / inflation, 1, before.size + after.size - 2))
    if min(sd_before, sd_after) > 0:
        ratio = max(sd_after / sd_before, sd_before / sd_after)
    else:  # flat on one side: a change only if the other side really varies
        ratio = math.inf if max(sd_before, sd_after) > 0 else 1.0
    return _Change(
        metric=name,
        kind=SPREAD,
        position=at,
        start=start,
        end=end,
        p_value=_searched(p_value if math.isfinite(p_value) else 1.0, start, end, min_size),
        effect=ratio,
        before_level=sd_before * scale,
        after_level=sd_after * scale,
        stats={"sample_size": float(before.size + after.size)},
    )


def _shape_changes(name: str, x: np.ndarray, first: int, last: int, min_size: int, rate) -> list[_Change]:
    """Shape changes within ``x[first:last]``, a stretch of steady level and spread.

    The search reads every ``stride``-th value (at most SHAPE_SEARCH_SAMPLE), so a
    shape change is placed to within ``stride`` tasks; KS and JSD read at most
    DIVERGENCE_SAMPLE evenly spaced values per side. A split whose sides differ
    in mean or spread beyond the profile's thresholds is not a change of *shape*
    (the level and spread stages speak for it) and is dropped.
    """
    stretch = x[first:last]
    stride = max(1, -(-stretch.size // SHAPE_SEARCH_SAMPLE))
    searched = stretch[::stride]
    n_bins = SEARCH_BINS if searched.size >= 20 * SEARCH_BINS else 4
    edges = np.unique(np.quantile(_even_sample(searched, SCALE_SAMPLE), np.linspace(0, 1, n_bins + 1)[1:-1]))
    n_codes = edges.size + 1
    if n_codes < 3:  # two values: any change of their mix is a change of the mean
        return []
    cost = MultinomialCost(np.searchsorted(edges, searched, side="right"), n_codes)
    inflation = _inflation(_lag1_autocorrelation(searched, max(2, min_size // stride)))
    penalty = SHAPE_PENALTY * (n_codes - 1) * math.log(searched.size) * inflation
    found = binary_segmentation(cost, -(-min_size // stride), penalty, MAX_CHANGES[SHAPE])
    bounds = [0, *(stride * k for k in found), stretch.size]
    changes = []
    for start, at, end in zip(bounds[:-2], bounds[1:-1], bounds[2:]):
        before, after = stretch[start:at], stretch[at:end]
        sample_before, sample_after = _even_sample(before, DIVERGENCE_SAMPLE), _even_sample(after, DIVERGENCE_SAMPLE)
        moments = _moments(sample_before, sample_after)
        sd_low, sd_high = sorted((moments["before_std"], moments["after_std"]))
        if moments["mean_difference_d"] >= rate.min_effect_size or sd_high >= rate.min_variance_ratio * sd_low:
            continue
        ks = ks_2samp(sample_before, sample_after)
        # Effective sizes shrink with autocorrelation; the asymptotic KS law then gives p.
        n_eff = sample_before.size * sample_after.size / (sample_before.size + sample_after.size) / inflation
        ks_p = float(kstwobign.sf(ks.statistic * math.sqrt(n_eff))) if inflation > 1 else float(ks.pvalue)
        shape_jsd = _binned_jsd(before, after)
        changes.append(
            _Change(
                metric=name,
                kind=SHAPE,
                position=first + at,
                start=first + start,
                end=first + end,
                p_value=_searched(ks_p, start, end, min_size),
                effect=shape_jsd,
                before_level=float("nan"),
                after_level=float("nan"),
                stats={
                    "jsd": shape_jsd,
                    "ks_statistic": float(ks.statistic),
                    "sample_size": float(sample_before.size + sample_after.size),  # KS test
                    "search_stride": float(stride),
                },
            )
        )
    return changes


def _describe(change: _Change, x: np.ndarray) -> None:
    """Fill in the descriptive figures of a change that will be reported (skipped for the rest)."""
    before, after = x[change.start : change.position], x[change.position : change.end]
    for name, value in _moments(before, after).items():
        change.stats.setdefault(name, value)
    change.stats.setdefault("jsd", _binned_jsd(before, after))


def _searched(p_value: float, start: int, end: int, min_size: int) -> float:
    """Bonferroni over the split positions the search could choose in ``[start, end)``.

    The test compares the two sides of the best split found, so its plain p-value
    is optimistic; real shifts keep p-values far below any level after this.
    """
    return min(1.0, p_value * max(1, end - start - 2 * min_size + 1))


def _moments(before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    mean_b, mean_a = float(np.mean(before)), float(np.mean(after))
    sd_b, sd_a = float(np.std(before, ddof=1)), float(np.std(after, ddof=1))
    pooled = math.sqrt((sd_b**2 + sd_a**2) / 2.0)
    return {
        "before_mean": mean_b,
        "after_mean": mean_a,
        "before_std": sd_b,
        "after_std": sd_a,
        # Standardised mean difference of the raw segments: near 0 for spread- or shape-only shifts.
        "mean_difference_d": abs(mean_a - mean_b) / pooled if pooled > 0 else 0.0,
    }


def _even_sample(values: np.ndarray, limit: int) -> np.ndarray:
    if values.size <= limit:
        return values
    return values[np.linspace(0, values.size - 1, limit).round().astype(np.intp)]


def _binned_jsd(before: np.ndarray, after: np.ndarray) -> float:
    """JSD (bits) of two samples over shared quantile bins, minus its small-sample bias.

    Quantile bins of the pooled sample follow heavy tails; the plug-in JSD of two
    samples from one distribution is about (k - 1)(1/n_a + 1/n_b) / (8 ln 2) bits,
    which is subtracted so that short segments do not look different by chance.
    """
    before, after = _even_sample(before, DIVERGENCE_SAMPLE), _even_sample(after, DIVERGENCE_SAMPLE)
    n_bins = int(np.clip(round(math.sqrt(min(before.size, after.size) / 4.0)), 4, MAX_JSD_BINS))
    pooled = np.concatenate([before, after])
    edges = np.unique(np.quantile(pooled, np.linspace(0, 1, n_bins + 1)[1:-1]))
    k = edges.size + 1
    if k < 2:
        return 0.0
    counts_before = np.bincount(np.searchsorted(edges, before, side="right"), minlength=k)
    counts_after = np.bincount(np.searchsorted(edges, after, side="right"), minlength=k)
    divergence = information.jsd(counts_before, counts_after)
    bias = (k - 1) * (1.0 / before.size + 1.0 / after.size) / (8.0 * math.log(2.0))
    return max(0.0, divergence - bias)


# ------------------------------------------------------------ post-processing
def _merge_ramps(changes: list[_Change]) -> list[_Change]:
    """Fold consecutive level changes along one ramp into one gradual transition.

    They merge when they go the same way and the segment between them is a ramp
    or too short to be a phase of its own: a curved ramp (throughput = 1/latency)
    needs several lines, and a person wants "fell from X to Y over tasks a-b".
    """
    merged: list[_Change] = []
    for change in sorted(changes, key=lambda c: (c.metric, c.kind, c.position)):
        last = merged[-1] if merged else None
        if (
            change.kind == MEAN
            and last is not None
            and last.kind == MEAN
            and last.metric == change.metric
            and last.end == change.position
            and (last.ramp_end is not None or last.short_after)
            and (change.after_level - change.before_level) * (last.after_level - last.before_level) > 0
        ):
            merged[-1] = replace(
                last,
                end=change.end,
                after_level=change.after_level,
                ramp_end=change.ramp_end if change.ramp_end is not None else change.position,
                short_after=change.short_after,
                effect=max(last.effect, change.effect),
                p_value=max(last.p_value, change.p_value),
                stats={},  # described afresh over the whole transition
            )
        else:
            merged.append(change)
    return merged


def _drop_explained(changes: list[_Change], min_ratio: float) -> list[_Change]:
    """Drop changes that a reported change at the same place already explains.

    - a spread change where the noise grew in proportion to the level (constant
      coefficient of variation: the level moved, the noise just scales with it);
    - a shape change next to a level or spread change (shape is searched between
      those, so this only guards the edges of a stretch).
    """
    anchors: dict[str, list[_Change]] = {}
    for change in changes:
        if change.kind != SHAPE:
            anchors.setdefault(change.metric, []).append(change)
    kept = []
    for change in changes:
        near = [
            anchor
            for anchor in anchors.get(change.metric, [])
            if anchor is not change and abs(anchor.position - change.position) <= _tolerance(anchor)
        ]
        if change.kind == SHAPE and near:
            continue
        if change.kind == SPREAD and any(a.kind == MEAN and _proportional(a, change, min_ratio) for a in near):
            continue
        kept.append(change)
    return kept


def _tolerance(change: _Change) -> int:
    return max(MIN_SEGMENT, (change.end - change.start) // 20)


def _proportional(level: _Change, spread: _Change, min_ratio: float) -> bool:
    if level.before_level <= 0 or level.after_level <= 0:
        return False
    cv_before = spread.before_level / level.before_level
    cv_after = spread.after_level / level.after_level
    return cv_before > 0 and cv_after > 0 and max(cv_after / cv_before, cv_before / cv_after) < min_ratio


# -------------------------------------------------------------------- pattern
def _when(timestamp: float) -> str:
    if timestamp >= 1e9:  # a Unix time: show it as UTC
        moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
        millis = moment.microsecond // 1000
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{millis:03d}" if millis else "") + "Z"
    return f"t={timestamp:g}"


def _fmt(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def _phrase(change: _Change, matrix: MetricMatrix, rows: np.ndarray) -> str:
    row = int(rows[change.position])
    where = f"task {row} ({_when(float(matrix.timestamps[row]))})"
    if change.kind == MEAN:
        rose = change.after_level > change.before_level
        ratio = ""
        if change.ratio_scale and change.before_level > 0 and change.after_level > 0:
            ratio = f"x{change.after_level / change.before_level:.2g}, "
        levels = f"from {_fmt(change.before_level)} to {_fmt(change.after_level)}"
        effect = f"d={change.effect:.1f}" if math.isfinite(change.effect) else "without noise"
        text = f"{'rose' if rose else 'fell'} {levels} ({ratio}{effect})"
        if change.ramp_end is not None:
            end_row = int(rows[change.ramp_end - 1])
            return f"{text} gradually from {where} to task {end_row}"
        return f"{text} at {where}"
    if change.kind == SPREAD:
        widened = change.after_level > change.before_level
        means = f"mean {_fmt(change.stats['before_mean'])} -> {_fmt(change.stats['after_mean'])}"
        sides = [f"sd {_fmt(level)}" if level > 0 else "constant" for level in (change.before_level, change.after_level)]
        ratio = f"x{change.effect:.1f}; " if math.isfinite(change.effect) else ""
        return f"{'widened' if widened else 'narrowed'} from {sides[0]} to {sides[1]} ({ratio}{means}) at {where}"
    means = f"mean {_fmt(change.stats['before_mean'])} -> {_fmt(change.stats['after_mean'])}"
    sds = f"sd {_fmt(change.stats['before_std'])} -> {_fmt(change.stats['after_std'])}"
    return f"changed (JSD {change.effect:.2f} bits, KS D={change.stats['ks_statistic']:.2f}; {means}, {sds}) at {where}"


_SUBJECT = {MEAN: "mean", SPREAD: "spread", SHAPE: "distribution shape"}
_EFFECT_NAME = {MEAN: "effect_size", SPREAD: "variance_ratio", SHAPE: "jsd"}
_THRESHOLD_NAME = {MEAN: "min_effect_size", SPREAD: "min_variance_ratio", SHAPE: "min_jsd"}


def _confidence(change: _Change, threshold: float, significance: float) -> float:
    # 0.5 at the effect threshold, -> 1 as the effect grows; halved at most by a borderline p-value.
    strength = change.effect / threshold if threshold > 0 else math.inf
    from_effect = 1.0 - 0.5 / strength**2 if strength > 0 else 0.0
    from_p = 1.0 - 0.5 * min(1.0, change.p_value / significance)
    return max(0.0, from_effect * from_p)


def _change_statistics(change: _Change, matrix: MetricMatrix, rows: np.ndarray) -> dict[str, float]:
    row = int(rows[change.position])
    stats = {
        "change_index": row,
        "change_timestamp": float(matrix.timestamps[row]),
        _EFFECT_NAME[change.kind]: change.effect,
        "p_value": change.p_value,
        **change.stats,
    }
    if change.kind == MEAN:
        stats["before_level"] = change.before_level
        stats["after_level"] = change.after_level
    if change.ramp_end is not None:
        end_row = int(rows[change.ramp_end - 1])
        stats["ramp_end_index"] = end_row
        stats["ramp_end_timestamp"] = float(matrix.timestamps[end_row])
    # An infinite effect (a noiseless step, a constant side) is in the description;
    # JSON has no infinity, so it is left out of the figures.
    return {name: value for name, value in stats.items() if math.isfinite(value)}


def _pattern(matrix, rows, kind, changes, profile: ThermalProfile, threshold: float, explainer: Explainer) -> Pattern:
    metric = changes[0].metric
    rate = profile.rate
    confidences = [_confidence(c, threshold, rate.significance) for c in changes]
    strongest = changes[int(np.argmax(confidences))]
    statistics = _change_statistics(strongest, matrix, rows)
    if len(changes) > 1:
        # Every change in time order: change_1_index, change_1_p_value, change_2_index, ...
        for number, change in enumerate(changes, start=1):
            for name, value in _change_statistics(change, matrix, rows).items():
                statistics[f"change_{number}_{name.removeprefix('change_')}"] = value
    statistics.update(
        {
            "change_points": len(changes),
            "tasks": rows.size,
            "min_segment": _min_segment(rows.size, rate.min_tasks),
            "significance": rate.significance,
            _THRESHOLD_NAME[kind]: threshold,
        }
    )
    description = f"{metric} {_SUBJECT[kind]} " + "; then ".join(_phrase(c, matrix, rows) for c in changes)
    # What changed with it: attribute values (a new service.version, another host) that the tasks
    # after the strongest change carry and the tasks before it do not.
    around = np.zeros(matrix.n_tasks, dtype=bool)
    around[rows[strongest.start : strongest.end]] = True
    explanation = explainer.over_represented(rows[strongest.position : strongest.end], around, "tasks after")
    return Pattern(
        kind=PatternKind.PHASE_TRANSITION,
        description=description,
        confidence=max(confidences),
        metrics=(metric,),
        statistics=statistics,
        involved=_involved(matrix, rows, changes, profile.max_involved),
        explanation=explanation,
        key=f"phase_transition:{metric}:{kind}",
    )


def _involved(matrix: MetricMatrix, rows: np.ndarray, changes: list[_Change], max_involved: int):
    """Tasks just before and just after each change point, nearest first, sharing ``max_involved``."""
    per_side = max(1, max_involved // (2 * len(changes)))
    involved = []
    for change in changes:
        before = np.arange(max(change.start, change.position - per_side), change.position)
        after = np.arange(change.position, min(change.end, change.position + per_side))
        # Closer to the change = more relevant.
        involved += matrix.involved(rows[before], "before", limit=per_side, priority=before - change.position)
        involved += matrix.involved(rows[after], "after", limit=per_side, priority=change.position - after)
    return tuple(involved[:max_involved])
