"""Distribution-shape changes: where a metric's shape changed while its level and spread held still.

Searched on quantile-bin codes of the raw values (multinomial likelihood, binary
segmentation), tested with a two-sample KS test corrected for the searched
positions and for autocorrelation, sized by the Jensen-Shannon divergence with its
small-sample bias removed. Only long stretches are searched: a few dozen values
say little about a shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import ks_2samp, kstwobign

from .. import information
from ._binseg import MultinomialCost, binary_segmentation
from ._stats import even_sample, quantile

MIN_SHAPE_SEGMENT = 50  # fewest values on either side of a shape change
SHAPE_PENALTY = 1.5  # per free bin, x log(n), in nats
MAX_SHAPE_CHANGES = 3
SEARCH_BINS = 8  # quantile bins for the search
MAX_JSD_BINS = 16  # finer bins to measure a divergence
DIVERGENCE_SAMPLE = 5000  # at most this many values per side for KS and JSD (even stride)
SEARCH_SAMPLE = 20_000  # the search reads every k-th value, at most this many
SCALE_SAMPLE = 10_000  # values that pick the bin edges


@dataclass(frozen=True)
class ShapeChange:
    position: int  # index into the series
    start: int  # before-segment start
    end: int  # after-segment end
    p_value: float  # KS, corrected for the searched positions
    jsd: float  # bits, bias removed
    ks_statistic: float
    sample_size: int
    stride: int


def shape_changes(x: np.ndarray, first: int, last: int, inflation: float) -> list[ShapeChange]:
    """Shape changes within ``x[first:last]`` (positions index ``x``).

    ``inflation`` (long-run / marginal variance of the noise) shrinks the
    effective sample sizes of correlated values. The search reads every
    ``stride``-th value, so a change is placed to within ``stride`` values.
    """
    stretch = x[first:last]
    if stretch.size < 2 * MIN_SHAPE_SEGMENT:
        return []
    stride = max(1, -(-stretch.size // SEARCH_SAMPLE))
    searched = stretch[::stride]
    n_bins = SEARCH_BINS if searched.size >= 20 * SEARCH_BINS else 4
    edges = np.unique(quantile(even_sample(searched, SCALE_SAMPLE), np.linspace(0, 1, n_bins + 1)[1:-1]))
    n_codes = edges.size + 1
    if n_codes < 3:  # two values: any change of their mix is a change of the mean
        return []
    cost = MultinomialCost(np.searchsorted(edges, searched, side="right"), n_codes)
    penalty = SHAPE_PENALTY * (n_codes - 1) * math.log(searched.size) * inflation
    min_size = -(-MIN_SHAPE_SEGMENT // stride)
    found = binary_segmentation(cost, min_size, penalty, MAX_SHAPE_CHANGES)
    bounds = [0, *(stride * k for k in found), stretch.size]
    changes = []
    for start, at, end in zip(bounds[:-2], bounds[1:-1], bounds[2:]):
        before = even_sample(stretch[start:at], DIVERGENCE_SAMPLE)
        after = even_sample(stretch[at:end], DIVERGENCE_SAMPLE)
        ks = ks_2samp(before, after)
        # Effective sizes shrink with autocorrelation; the asymptotic KS law then gives p.
        n_eff = before.size * after.size / (before.size + after.size) / inflation
        ks_p = float(kstwobign.sf(ks.statistic * math.sqrt(n_eff))) if inflation > 1 else float(ks.pvalue)
        searched_positions = max(1, end - start - 2 * MIN_SHAPE_SEGMENT + 1)
        changes.append(ShapeChange(
            position=first + at, start=first + start, end=first + end,
            p_value=min(1.0, ks_p * searched_positions),
            jsd=binned_jsd(before, after),
            ks_statistic=float(ks.statistic), sample_size=before.size + after.size, stride=stride,
        ))
    return changes


def binned_jsd(before: np.ndarray, after: np.ndarray) -> float:
    """JSD (bits) of two samples over shared quantile bins, minus its small-sample bias.

    Quantile bins of the pooled sample follow heavy tails; the plug-in JSD of two
    samples from one distribution is about (k - 1)(1/n_a + 1/n_b) / (8 ln 2) bits,
    which is subtracted so that short segments do not look different by chance.
    """
    before, after = even_sample(before, DIVERGENCE_SAMPLE), even_sample(after, DIVERGENCE_SAMPLE)
    if before.size == 0 or after.size == 0:
        return 0.0
    n_bins = int(np.clip(round(math.sqrt(min(before.size, after.size) / 4.0)), 4, MAX_JSD_BINS))
    pooled = np.concatenate([before, after])
    edges = np.unique(quantile(pooled, np.linspace(0, 1, n_bins + 1)[1:-1]))
    k = edges.size + 1
    if k < 2:
        return 0.0
    counts_before = np.bincount(np.searchsorted(edges, before, side="right"), minlength=k)
    counts_after = np.bincount(np.searchsorted(edges, after, side="right"), minlength=k)
    divergence = information.jsd(counts_before, counts_after)
    bias = (k - 1) * (1.0 / before.size + 1.0 / after.size) / (8.0 * math.log(2.0))
    return max(0.0, divergence - bias)
