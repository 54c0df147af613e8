"""How far out a value is, judged against the data's own tail (peaks over threshold).

Latency is heavy-tailed even on a log scale: against a normal reference, the
slowest spans of a healthy service are "outliers" every minute. Here the tail
beyond a sample's 90th percentile is modelled by a generalized Pareto
distribution, the usual extreme-value model of a tail, and a value's tail
probability is what that model makes of it.

The fit reads quantiles, not moments: the 90th, 97th and 99.5th percentiles
fix scale and shape, so the handful of extreme values being judged (or a
burst of them) cannot widen the tail they are judged against, while the
rare stalls every real service has (a GC pause, a cold cache: often a
percent of its requests) do shape it. The shape is held between 0 (a tail
never taken as lighter than exponential) and 0.8; with fewer than 600
values, too few to place the 99.5th percentile, it is taken as 0.15, a
moderately heavy tail. The scale is at least half of what the body of the
sample (median to 90th percentile) implies, so a lumpy or discrete tail does
not make every value past its last step "impossible".
"""

from __future__ import annotations

import numpy as np

from ._stats import quantile

TAIL_FRACTION = 0.1  # the tail starts at the 90th percentile
MIN_VALUES = 80  # fewer: no tail model (8 values beyond the threshold)
_MID, _FAR = 0.03, 0.005  # tail probabilities of the quantiles that fix scale and shape
_MIN_FOR_SHAPE = 3 / _FAR  # values needed before the 99.5th percentile says anything about the shape
MAX_SHAPE = 0.8
UNKNOWN_SHAPE = 0.15  # too few values to read the shape: assume a moderately heavy tail
_SHAPES = np.linspace(1e-6, MAX_SHAPE, 400)
# (q99 - q90) / (q97 - q90) of a generalized Pareto tail, per shape (increasing in the shape).
_SPREAD_RATIOS = np.expm1(_SHAPES * np.log(TAIL_FRACTION / _FAR)) / np.expm1(_SHAPES * np.log(TAIL_FRACTION / _MID))
_MIN_SCALE = 1e-9


def fits(n_values: int) -> bool:
    """Whether ``n_values`` values are enough for a tail model."""
    return n_values >= MIN_VALUES


def tail_probability(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """P(X >= value) per value under the upper tail of ``reference``; 1 at or below its 90th percentile.

    ``reference`` holds finite values, at least ``MIN_VALUES`` of them.
    """
    threshold, shape, scale = _fit(reference)
    probability = np.ones(np.shape(values), dtype=float)
    beyond = values > threshold
    y = (values[beyond] - threshold) / scale
    survival = np.exp(-np.log1p(shape * y) / shape) if shape > 0 else np.exp(-y)
    probability[beyond] = TAIL_FRACTION * survival
    return probability


def _fit(reference: np.ndarray) -> tuple[float, float, float]:
    """(threshold, shape, scale) of the tail model of ``reference``."""
    median, threshold, mid, far = quantile(reference, [0.5, 1 - TAIL_FRACTION, 1 - _MID, 1 - _FAR])
    shape = UNKNOWN_SHAPE
    if reference.size >= _MIN_FOR_SHAPE and mid > threshold:
        shape = 0.0
        ratio = (far - threshold) / (mid - threshold)
        if ratio > _SPREAD_RATIOS[0]:
            shape = float(np.interp(ratio, _SPREAD_RATIOS, _SHAPES))
    log_mid = np.log(TAIL_FRACTION / _MID)
    scale = (mid - threshold) * (shape / np.expm1(shape * log_mid) if shape > 0 else 1 / log_mid)
    from_body = (threshold - median) / np.log(0.5 / TAIL_FRACTION)
    return float(threshold), shape, float(max(scale, 0.5 * from_body, _MIN_SCALE))
