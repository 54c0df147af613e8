"""Offline change-point search: penalised optimal partitioning under AR(1) noise.

A series is modelled as a piecewise mean (each segment flat, or a line when that
pays for its slope) plus Gaussian AR(1) noise. ``segment`` finds the partition
that minimises

    sum over segments of (-2 log-likelihood in innovation-variance units)
    + beta per change point + gamma per sloped segment

exactly (dynamic programming over every candidate position), on a grid of at most
``GRID`` candidate positions; with more points than that, each change point is
then moved to its best position at full resolution.

Why this shape:
- **AR(1) likelihood, not an inflated penalty.** Each segment's cost is the exact
  likelihood of a stationary AR(1) stretch around its mean (the first point
  weighted by 1 - phi^2, the others through ``x_t - phi x_{t-1}``). Autocorrelated
  noise then needs no penalty inflation, so there is no cliff where a smooth
  background hides every real step; a step still shows as the jump of its first
  point, which is what sets it apart from wandering noise.
- **Noise from differences.** sigma and phi come from robust (MAD) variances of
  lag-1 and lag-2 differences: Var(x_{t+k} - x_t) = 2 sigma^2 (1 - phi^k) for any
  piecewise-constant mean, and a median ignores the few differences a change
  touches. A trend shifts every difference alike, which the median removes too.
- **Steps vs ramps by model comparison.** A ramp is one sloped segment (paying
  ``gamma``), a staircase several flat ones (paying ``beta`` each): whichever
  explains the data for less wins, so several steps stay several steps.
- **Penalty calibrated by simulation.** ``beta`` is chosen per length and false-
  change rate from a table measured on Gaussian white noise through this very
  pipeline (noise estimation included): the probability that a change-free series
  of length n gets any change point is ``alpha`` at every n (from 10 points up).
  ``p_value`` reads the same table backwards. ``benchmarks/changepoints.py
  --calibrate`` regenerates it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from ._stats import MAD_TO_SIGMA, median

GRID = 200  # candidate positions searched exactly; refinement restores full resolution
MIN_POINTS = 10  # shortest series searched
MIN_FLAT = 3  # fewest points in a flat segment
MIN_SLOPED = 5  # fewest points in a sloped segment (shorter "ramps" are steps)
MIN_SPREAD = 5  # fewest points in a segment of the spread search
MAX_PHI = 0.95  # autocorrelation beyond this is treated as 0.95 (the likelihood stays proper)
SLOPE_SHARE = 0.5  # a sloped segment pays this share of a change point's penalty

# Null calibration: P(a change-free series of n points gets >= 1 change point at penalty beta)
# ~ exp(-(beta - a) / b). Rows: n, a, b. The 90/95/98/99 % quantiles of the critical penalty were
# simulated on 1200 Gaussian white-noise series per n (noise estimation, the second pass and the
# minimum segment of ``phase`` included), then smoothed over n and alpha by least squares as
# a = c0 + c1 ln n, b = c2 + c3 / ln n (benchmarks/changepoints.py --calibrate prints the simulated
# quantiles and these rows). Interpolated in ln n; constant beyond 400 points, where the grid caps
# the candidate positions and the minimum segment grows with n, so the null law stops moving.
CALIBRATION = {
    "level": (
        (10, -2.226, 2.614),
        (12, -1.822, 2.481),
        (15, -1.327, 2.342),
        (20, -0.688, 2.194),
        (30, 0.211, 2.027),
        (50, 1.344, 1.867),
        (100, 2.882, 1.706),
        (200, 4.420, 1.587),
        (400, 5.957, 1.496),
    ),
    "spread": (
        (10, -1.021, 2.137),
        (12, -0.827, 2.158),
        (15, -0.590, 2.181),
        (20, -0.283, 2.205),
        (30, 0.148, 2.231),
        (50, 0.692, 2.257),
        (100, 1.430, 2.283),
        (200, 2.168, 2.302),
        (400, 2.906, 2.317),
    ),
}


def _tail(stage: str, n: int) -> tuple[float, float]:
    table = np.asarray(CALIBRATION[stage], dtype=float)
    log_n = math.log(max(n, 2))
    logs = np.log(table[:, 0])
    return float(np.interp(log_n, logs, table[:, 1])), float(np.interp(log_n, logs, table[:, 2]))


def penalty(stage: str, n: int, alpha: float) -> float:
    """beta for which a change-free series of ``n`` points gets a change point with probability ``alpha``."""
    a, b = _tail(stage, n)
    return a + b * math.log(1.0 / alpha)


def p_value(stage: str, n: int, gain: float) -> float:
    """Probability that noise alone gains ``gain`` from its best change point (searched positions included)."""
    a, b = _tail(stage, n)
    return float(min(1.0, math.exp(-(gain - a) / b)))


# ----------------------------------------------------------------------- noise
@dataclass(frozen=True)
class Noise:
    innovation_sd: float  # sd of what each point adds that its neighbour did not predict
    phi: float  # lag-1 autocorrelation, in [0, MAX_PHI]

    @property
    def sigma(self) -> float:
        """Marginal sd of the noise."""
        return self.innovation_sd / math.sqrt(1.0 - self.phi**2)


DIFFERENCE_CLIP = 3.0  # differences beyond this many robust sds (steps, outliers) are clipped
CLIPPED_VARIANCE = 0.9733  # E[min(Z^2, 9)] for a standard normal Z: undoes the clipping's shrinkage
SECOND_PASS_MIN = 100  # shorter series keep phi from differences (residuals of a short fit mislead more)


def estimate_noise(x: np.ndarray) -> Noise:
    """Innovation sd and phi of the noise, from the clipped first differences.

    For AR(1) noise around a piecewise-constant (or linear) mean, differences have
    variance 2 sigma^2 (1 - phi) and lag-1 autocorrelation -(1 - phi) / 2, so
    phi = 1 + 2 rho_d and the innovation variance is Var(d) (1 + phi) / 2. A step
    or an outlier is one or two extreme differences: clipping them at
    DIFFERENCE_CLIP robust sds keeps them from posing as noise or correlation,
    and the mean of the differences (a trend) drops out.
    """
    if x.size < 4:
        return Noise(float(np.std(x)), 0.0)
    d = np.diff(x)
    centre = float(median(d))
    scale = MAD_TO_SIGMA * float(median(np.abs(d - centre)))
    # Mostly constant (MAD 0: errors, retries): the rare differences are the noise, kept whole.
    clip = DIFFERENCE_CLIP * scale if scale > 0 else np.inf
    clipped = np.clip(d - centre, -clip, clip)
    clipped -= clipped.mean()
    square = float(np.mean(clipped * clipped))
    if square <= 0:
        return Noise(0.0, 0.0)
    rho = float(np.sum(clipped[1:] * clipped[:-1])) / (square * clipped.size)
    phi = float(np.clip(1.0 + 2.0 * rho, 0.0, MAX_PHI))
    correction = CLIPPED_VARIANCE if scale > 0 else 1.0
    return Noise(math.sqrt(square / correction * (1.0 + phi) / 2.0), phi)


WINSOR = 3.0  # values further than this many sigmas from their running median are pulled in
RUNNING_HALF_WIDTH = 2  # the running median spans 2 h + 1 points: it follows steps, not single outliers
SPREAD_FLOOR = 0.05  # |residual| below this share of sigma counts as this (log |r| has no floor)


def winsorize(x: np.ndarray, noise: Noise) -> np.ndarray:
    """``x`` with heavy-tailed excursions pulled to WINSOR sigmas of a running median.

    A running median follows steps and ramps, so this trims outliers without
    flattening a real change (a global clip would), and keeps a Gaussian cost
    from seeing a change in every cluster of tail values.
    """
    if noise.sigma <= 0 or x.size < 2 * RUNNING_HALF_WIDTH + 1:
        return x
    h = RUNNING_HALF_WIDTH
    padded = np.pad(x, h, mode="reflect")  # mirrored: an outlier at either end is no median of its own
    if h == 2:
        centre = _running_median_of_five(padded)
    else:
        centre = np.median(np.lib.stride_tricks.sliding_window_view(padded, 2 * h + 1), axis=1)
    bound = WINSOR * noise.sigma
    return np.clip(x, centre - bound, centre + bound)


_FIVE_SORTER = ((0, 1), (3, 4), (2, 4), (2, 3), (0, 3), (0, 2), (1, 4), (1, 3), (1, 2))  # a sorting network


def _running_median_of_five(padded: np.ndarray) -> np.ndarray:
    """The median of every five consecutive values: ``np.median(sliding_window_view(padded, 5), axis=1)``.

    The same values (NaN where a window holds one), by a sorting network over whole shifted
    copies (nine min/max pairs) rather than a partition per window: several times less CPU.
    Only the sign of a zero median may differ from numpy's (-0.0 for 0.0), which no bound
    ``centre -/+ a positive width`` sees.
    """
    n = padded.size - 4
    values = [padded[k : k + n] for k in range(5)]
    for i, j in _FIVE_SORTER:
        values[i], values[j] = np.minimum(values[i], values[j]), np.maximum(values[i], values[j])
    middle = values[2]
    missing = np.isnan(padded)
    if missing.any():  # np.median is NaN wherever a window holds a NaN
        near = np.convolve(missing, np.ones(5, dtype=int), mode="valid") > 0
        middle = np.where(near, np.nan, middle)
    return middle


def fit_level(x: np.ndarray, beta: float, *, min_size: int = MIN_FLAT, max_changes: int = 8,
              robust: bool = True, prepared: tuple[np.ndarray, Noise] | None = None
              ) -> tuple["Segmentation", np.ndarray, Noise]:
    """Level segmentation of ``x``: (segmentation, the series searched, its noise).

    Two passes: noise from differences, then, if the residuals show more
    autocorrelation than that, once more with it. ``robust=False`` searches the
    values as they are (mostly-constant metrics, whose rare values are the signal).
    ``prepared``: the (series searched, noise) the caller already read from ``x``.
    """
    if prepared is not None:
        searched, noise = prepared
    else:
        searched, noise = level_input(x) if robust else (x, estimate_noise(x))
    if noise.innovation_sd <= 0:
        return _constant(x.size), searched, noise
    level = segment(searched, noise, beta, min_size=min_size, max_changes=max_changes)
    refined = residual_noise(searched - level.fitted(), level.bounds, noise) if x.size >= SECOND_PASS_MIN else noise
    if refined is not noise:
        noise = refined
        level = segment(searched, noise, beta, min_size=min_size, max_changes=max_changes)
    return level, searched, noise


def _constant(n: int) -> "Segmentation":
    return Segmentation(np.array([0, n]), np.array([False]), np.zeros(0), np.zeros(1), np.zeros(1))


def level_input(x: np.ndarray) -> tuple[np.ndarray, Noise]:
    """The series the level search runs on (outliers pulled in) and its noise."""
    noise = estimate_noise(x)
    return winsorize(x, noise), noise


def residual_noise(residual: np.ndarray, bounds: np.ndarray, noise: Noise) -> Noise:
    """The noise re-estimated from the residuals of a segmentation, where that shows more dependence.

    phi from differences is robust to steps but loose when phi is high (its sd is
    about 2 / sqrt(n)); the lag-1 autocorrelation of the residuals within
    segments is tight there (sqrt((1 - phi^2) / n)), corrected for the bias of
    centring each segment. The larger phi is kept: the safe side for a search.
    """
    starts = np.zeros(residual.size, dtype=bool)
    starts[bounds[:-1]] = True
    pairs = ~starts[1:]  # (t - 1, t) within one segment
    squares = float(np.sum(residual * residual))
    if squares <= 0 or not pairs.any():
        return noise
    rho = float(np.sum(residual[1:][pairs] * residual[:-1][pairs])) / squares
    mean_length = residual.size / (bounds.size - 1)
    rho += (1 + 3 * rho) / mean_length
    phi = float(np.clip(rho, 0.0, MAX_PHI))
    if phi <= noise.phi:
        return noise
    innovations = innovation_residuals(residual, bounds, phi)
    return Noise(float(np.std(np.clip(innovations, -WINSOR * noise.sigma, WINSOR * noise.sigma))), phi)


def innovation_residuals(residual: np.ndarray, bounds: np.ndarray, phi: float) -> np.ndarray:
    """What each residual adds to its predecessor's (r_t - phi r_{t-1}); a segment's first, scaled alike."""
    innovations = np.empty_like(residual)
    innovations[1:] = residual[1:] - phi * residual[:-1]
    starts = bounds[:-1]
    innovations[starts] = residual[starts] * math.sqrt(1.0 - phi * phi)
    return innovations


def spread_input(residual: np.ndarray, bounds: np.ndarray, noise: Noise) -> tuple[np.ndarray, Noise]:
    """log |innovation| and its noise: a change of scale becomes a change of mean (log of the sd ratio).

    ``residual``: around the level fit whose segment bounds are ``bounds``.

    The innovations (residuals whitened by phi) are independent under the null,
    so their log magnitudes carry no wandering. Unlike squares, the log keeps
    heavy tails from dominating, and a change of scale moves every point by the
    same amount.
    """
    innovations = innovation_residuals(residual, bounds, noise.phi)
    floor = SPREAD_FLOOR * noise.innovation_sd if noise.innovation_sd > 0 else 1e-300
    spread = np.log(np.maximum(np.abs(innovations), floor))
    noise = estimate_noise(spread)
    return winsorize(spread, noise), noise


# ------------------------------------------------------------------------ cost
class ARSegmentCost:
    """-2 log-likelihood (innovation-variance units, constants dropped) of flat and sloped segments.

    Segment ``[s, e)`` with local time u = 0..L-1 and mean a + b u: the first
    point contributes (1 - phi^2)(x_s - a)^2, every later one
    (y_t - a c - b (c u + phi))^2 with y_t = x_t - phi x_{t-1} and c = 1 - phi.
    Sums over t come from prefix sums, so any segment costs O(1).
    """

    def __init__(self, x: np.ndarray, noise: Noise) -> None:
        self.n = x.size
        phi = noise.phi
        self.c = 1.0 - phi
        self.w0 = 1.0 - phi * phi
        self.phi = phi
        self.scale = 1.0 / max(noise.innovation_sd, 1e-300) ** 2
        self._x = x
        y = np.empty(self.n)
        y[0] = 0.0
        y[1:] = x[1:] - phi * x[:-1]
        self._offset = self.n // 2  # centred time keeps the t * y sums small
        t = np.arange(self.n, dtype=float) - self._offset
        self._y = _prefix(y)
        self._yy = _prefix(y * y)
        self._ty = _prefix(t * y)

    def sums(self, start, end, fresh: bool = False):
        """Per segment: (head weight, head value, sums over the points read as innovations, count, first u).

        Computed once for both costs. The series' first point is a stationary draw (weight
        1 - phi^2). A later segment's first point is read like the rest, through
        x_s - phi x_{s-1}: the noise runs on across a change point, so a jump is paid as an
        innovation, not forgiven by a fresh start (which let wandering noise cut itself into
        steps). With phi = 0 both agree. ``fresh``: every segment read as a fresh start.
        """
        start = np.asarray(start)
        end = np.asarray(end)
        if fresh:
            head, first, xs = 1.0, start + 1, self._x[np.minimum(start, self.n - 1)]
        else:
            head = (start == 0).astype(float)
            first, xs = start, self._x[0] * head  # y_0 = 0 in the prefix sums: a head's sums may start at 0
        sy = self._y[end] - self._y[first]
        syy = self._yy[end] - self._yy[first]
        sty = self._ty[end] - self._ty[first]
        m = end - start - (1.0 if fresh else head)  # points read as innovations
        return self.w0 * head, xs, sy, syy, sty - (start - self._offset) * sy, m, head

    def flat(self, sums) -> np.ndarray:
        w0, xs, sy, syy, _, m, _ = sums
        return _costs(self, _NormalEquations.of(self, w0, xs, sy, syy, m), flat=True, sloped=False)[0]

    def _line(self, sums) -> "_NormalEquations":
        """Normal equations of the line a + b u per segment."""
        w0, xs, sy, syy, suy, m, shift = sums
        su, suu = _local_time_sums(m, shift)
        return _NormalEquations.of(self, w0, xs, sy, syy, m, suy, su, suu)

    def sloped(self, sums) -> np.ndarray:
        return _costs(self, self._line(sums), flat=False, sloped=True)[1]

    def fits(self, starts: np.ndarray, ends: np.ndarray, sloped: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean at the segment's first point, slope per point) of every segment: the normal equations of all
        of them in one call, from each segment's own values (a fresh start: the jump into a segment says
        where it begins, not what its level is), then each solved on its own."""
        equations = self._line(self.sums(starts, ends, fresh=True))
        levels, slopes = np.zeros(starts.size), np.zeros(starts.size)
        for k, (a11, a12, a22, b1, b2) in enumerate(zip(*(np.asarray(v).tolist() for v in (
                equations.a11, equations.a12, equations.a22, equations.b1, equations.b2)))):
            levels[k], slopes[k] = _solved(a11, a12, a22, b1, b2, bool(sloped[k]))
        return levels, slopes


def _local_time_sums(m, shift):
    """Sums of u and u^2 over a segment's points read as innovations (u runs shift .. shift + m - 1)."""
    su = m * shift + m * (m - 1) / 2.0
    suu = m * shift * shift + shift * m * (m - 1) + (m - 1) * m * (2 * m - 1) / 6.0
    return su, suu


@dataclass
class _NormalEquations:
    """A segment's normal equations for its mean a + b u (``a12``, ``a22``, ``b2``: lines only) and its
    total sum of squares, per segment. One place for the arithmetic of every cost: the grid's, the
    refinements' and the fits' read the same bits."""

    a11: np.ndarray
    b1: np.ndarray
    total: np.ndarray
    a12: np.ndarray | None = None
    a22: np.ndarray | None = None
    b2: np.ndarray | None = None

    @classmethod
    def of(cls, cost: "ARSegmentCost", w0, xs, sy, syy, m, suy=None, su=None, suu=None) -> "_NormalEquations":
        c, phi = cost.c, cost.phi
        b1 = c * sy
        b1 += w0 * xs
        a11 = c * c * m
        a11 += w0
        total = syy + w0 * xs * xs
        if su is None:
            return cls(a11, b1, total)
        a12 = c * su
        a12 += phi * m
        a12 *= c
        a22 = c * c * suu
        a22 += 2 * c * phi * su
        a22 += phi * phi * m
        b2 = c * suy
        b2 += phi * sy
        return cls(a11, b1, total, a12, a22, b2)


def _costs(cost: "ARSegmentCost", equations: _NormalEquations, *, flat: bool, sloped: bool) -> tuple:
    """(flat, sloped) costs from segments' normal equations (None where not asked for)."""
    a11, b1, total = equations.a11, equations.b1, equations.total
    flat_explained = b1 * b1
    flat_explained /= a11
    flat_cost = sloped_cost = None
    if flat:
        flat_cost = np.maximum(total - flat_explained, 0.0)
        flat_cost *= cost.scale
    if sloped:
        a12, a22, b2 = equations.a12, equations.a22, equations.b2
        det = a11 * a22
        det -= a12 * a12
        explained = a22 * b1
        explained *= b1
        cross = 2 * a12
        cross *= b1
        cross *= b2
        explained -= cross
        b2b2 = a11 * b2
        b2b2 *= b2
        explained += b2b2
        explained /= det
        np.copyto(explained, flat_explained, where=~(det > 0))
        sloped_cost = np.maximum(total - explained, 0.0)
        sloped_cost *= cost.scale
    return flat_cost, sloped_cost


def _solved(a11: float, a12: float, a22: float, b1: float, b2: float, sloped: bool) -> tuple[float, float]:
    """(mean at the first point, slope) from a segment's normal equations (a flat mean unless ``sloped``)."""
    det = a11 * a22 - a12 * a12
    if not sloped or det <= 0:
        return b1 / a11, 0.0
    return (a22 * b1 - a12 * b2) / det, (a11 * b2 - a12 * b1) / det


def _prefix(values: np.ndarray) -> np.ndarray:
    out = np.empty(values.size + 1)
    out[0] = 0.0
    np.cumsum(values, out=out[1:])
    return out


# ---------------------------------------------------------------------- search
@dataclass(frozen=True)
class Segmentation:
    bounds: np.ndarray  # 0, change points..., n
    sloped: np.ndarray  # per segment: fitted as a line
    gains: np.ndarray  # per change point: cost saved by it against merging its two neighbours (best model)
    start_level: np.ndarray  # per segment: fitted mean at its first point
    slope: np.ndarray  # per segment: fitted slope per point (0 when flat)

    @property
    def changes(self) -> np.ndarray:
        return self.bounds[1:-1]

    def end_level(self) -> np.ndarray:
        """Per segment: fitted mean at its last point."""
        return self.start_level + self.slope * (np.diff(self.bounds) - 1)

    def fitted(self) -> np.ndarray:
        """The fitted mean at every point."""
        lengths = np.diff(self.bounds)
        local = np.arange(self.bounds[-1]) - np.repeat(self.bounds[:-1], lengths)
        return np.repeat(self.start_level, lengths) + np.repeat(self.slope, lengths) * local


@dataclass(frozen=True)
class _Cells:
    """Grid segments of one kind of start (at 0, or not) with what their costs need that no data changes.

    ``m``, ``su`` and ``suu``: the count and sums of local time ``ARSegmentCost._line`` reads
    (``_local_time_sums``), once for both costs of a grid.
    Not cached with the grid's cells: three more arrays per cached grid tripled its memory.
    """

    head: float  # 1.0: every segment starts at 0; 0.0: none does
    starts: np.ndarray
    ends: np.ndarray
    centred_starts: np.ndarray | None  # start - n // 2 (ARSegmentCost's centred time); lines only
    m: np.ndarray  # points read as innovations
    su: np.ndarray | None  # lines only
    suu: np.ndarray | None

    @classmethod
    def of(cls, head: float, starts: np.ndarray, ends: np.ndarray, n: int, lines: bool) -> "_Cells":
        m = ends - starts - head
        if not lines:
            return cls(head, starts, ends, None, m, None, None)
        su, suu = _local_time_sums(m, head)
        return cls(head, starts, ends, starts - n // 2, m, su, suu)


@functools.lru_cache(maxsize=32)
def _grid_cells(n: int, min_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candidate positions for ``n`` points, and which grid segments are long enough: (positions, mask, starts, ends).

    The same for every series of a window (its metrics, both passes of a level search): cached.
    """
    positions = np.unique(np.linspace(0, n, min(GRID, n) + 1).round().astype(np.intp))
    start, end = np.meshgrid(positions, positions, indexing="ij")
    ok = end - start >= min_size
    cells = (positions, ok, start[ok], end[ok])
    for array in cells:
        array.flags.writeable = False
    return cells


def _grid_batches(n: int, min_size: int, lines: bool) -> tuple[np.ndarray, np.ndarray, tuple[_Cells, _Cells]]:
    """(positions, mask, (segments starting at 0, the rest)) of the grid, segments in the mask's row-major order."""
    positions, ok, starts, ends = _grid_cells(n, min_size)
    k = int(np.count_nonzero(ok[0]))  # the first row of ``ok``: the segments starting at 0
    return positions, ok, (_Cells.of(1.0, starts[:k], ends[:k], n, lines), _Cells.of(0.0, starts[k:], ends[k:], n, lines))


def _cell_costs(cost: ARSegmentCost, cells: _Cells, flat: bool, sloped: bool) -> tuple:
    """(flat, sloped) costs of ``cells`` (None where not asked for), as ``ARSegmentCost.flat`` and ``.sloped``
    give them (the same arithmetic), with the head terms scalars and the local-time sums shared by both."""
    w0 = cost.w0 * cells.head
    xs = cost._x[0] if cells.head else 0.0
    starts, ends = cells.starts, cells.ends
    sy = cost._y[ends]
    sy -= cost._y[starts]
    syy = cost._yy[ends]
    syy -= cost._yy[starts]
    suy = None
    if sloped:
        suy = cost._ty[ends]
        suy -= cost._ty[starts]
        suy -= cells.centred_starts * sy
    return _costs(cost, _NormalEquations.of(cost, w0, xs, sy, syy, cells.m, suy, cells.su, cells.suu),
                  flat=flat, sloped=sloped)


class _Grid:
    """Segment costs between every pair of candidate positions (inf where a segment is too short)."""

    def __init__(self, cost: ARSegmentCost, min_size: int, slopes: bool) -> None:
        # Shorter segments than a line may take (small series only) have their own, shorter list.
        separate = slopes and min_size < MIN_SLOPED
        self.positions, ok, batches = _grid_batches(cost.n, min_size, slopes and not separate)
        shape = (self.positions.size, self.positions.size)
        parts = [_cell_costs(cost, cells, True, slopes and not separate) for cells in batches]
        self.flat = np.full(shape, np.inf)
        self.flat[ok] = np.concatenate([flat for flat, _ in parts])
        self.sloped = np.full(shape, np.inf)
        if separate:
            _, ok, batches = _grid_batches(cost.n, MIN_SLOPED, True)
            parts = [_cell_costs(cost, cells, False, True) for cells in batches]
        if slopes:
            self.sloped[ok] = np.concatenate([sloped for _, sloped in parts])

    def costs(self, gamma: float) -> np.ndarray:
        """Best-model cost of every grid segment, a sloped one paying ``gamma``."""
        return np.minimum(self.flat, self.sloped + gamma)


def _optimal_partition(costs: np.ndarray, beta: float, max_changes: int) -> list[int]:
    """Grid indices of the change points minimising total cost + beta per change point."""
    g = costs.shape[0]
    best = np.full(g, np.inf)
    best[0] = -beta
    previous = np.zeros(g, dtype=np.intp)
    into = np.ascontiguousarray(costs.T)  # into[j, i]: segment i -> j, read a row at a time
    candidates = np.empty(g)  # one buffer for every row's sums (a row is a few microseconds of work)
    for j in range(1, g):
        row = candidates[:j]
        np.add(best[:j], into[j, :j], out=row)
        i = int(row.argmin())
        best[j] = row[i] + beta
        previous[j] = i
    changes = []
    j = g - 1
    while j > 0:
        j = int(previous[j])
        if j > 0:
            changes.append(j)
    changes.reverse()
    if len(changes) > max_changes:  # keep the strongest (rare: only on wildly non-stationary series)
        changes = sorted(sorted(changes, key=lambda k: -_local_gain(costs, changes, k))[:max_changes])
    return changes


def _local_gain(costs: np.ndarray, changes: list[int], k: int) -> float:
    bounds = [0, *changes, costs.shape[0] - 1]
    i = bounds.index(k)
    left, right = bounds[i - 1], bounds[i + 1]
    return float(costs[left, right] - costs[left, k] - costs[k, right])


def _min_size(n: int, min_size: int) -> int:
    """Fewest points in a segment of a series of ``n``: at least MIN_FLAT and one grid cell."""
    return max(min_size, MIN_FLAT, int(math.ceil(n / GRID)))


def _slope_penalty(beta: float, slopes: bool) -> float:
    return SLOPE_SHARE * beta if slopes else np.inf


def segment(x: np.ndarray, noise: Noise, beta: float, *, min_size: int = MIN_FLAT, slopes: bool = True,
            max_changes: int = 8) -> Segmentation:
    """The penalised best partition of ``x`` (see module docstring); segments hold at least ``min_size`` points."""
    n = x.size
    min_size = _min_size(n, min_size)
    cost = ARSegmentCost(x, noise)
    grid = _Grid(cost, min_size, slopes)
    gamma = _slope_penalty(beta, slopes)
    costs = grid.costs(gamma)
    changes = [int(grid.positions[k]) for k in _optimal_partition(costs, beta, max_changes)]
    if grid.positions.size < n + 1:
        changes = _refine(cost, changes, min_size, gamma, slopes)
        if slopes:
            changes = _steps_for_short_ramps(cost, changes, min_size, beta, gamma)
    return _describe(cost, changes, gamma, slopes, min_size)


def _segment_cost(cost: ARSegmentCost, start, end, gamma: float, slopes: bool, min_size: int):
    """Best-model cost of segments (arrays), and whether each is sloped."""
    start, end = np.asarray(start), np.asarray(end)
    sums = cost.sums(start, end)
    flat = cost.flat(sums)
    if not slopes:
        return flat, np.zeros(flat.shape, dtype=bool)
    sloped = np.where(end - start >= max(MIN_SLOPED, min_size), cost.sloped(sums) + gamma, np.inf)
    return np.minimum(flat, sloped), sloped < flat


def _split_costs(cost: ARSegmentCost, start: int, cuts: np.ndarray, end: int, gamma: float, slopes: bool,
                 min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Best-model costs of [start, cut) and of [cut, end) for every cut: one ``_segment_cost`` call for both
    (element by element the same numbers; a call on a few dozen segments is mostly numpy's overhead)."""
    k = cuts.size
    starts = np.empty(2 * k, dtype=np.intp)
    starts[:k], starts[k:] = start, cuts
    ends = np.empty(2 * k, dtype=np.intp)
    ends[:k], ends[k:] = cuts, end
    both, _ = _segment_cost(cost, starts, ends, gamma, slopes, min_size)
    return both[:k], both[k:]


def neighbourhood(changes: list[int], i: int, n: int, min_size: int, block: int):
    """(start, end, positions): change point i's neighbours and where it may move, within ``block``."""
    start = changes[i - 1] if i > 0 else 0
    end = changes[i + 1] if i + 1 < len(changes) else n
    return start, end, np.arange(max(start + min_size, changes[i] - block), min(end - min_size, changes[i] + block) + 1)


def _refine(cost: ARSegmentCost, changes: list[int], min_size: int, gamma: float, slopes: bool) -> list[int]:
    """Move each change point to its best full-resolution position between its neighbours' grid cells."""
    block = int(math.ceil(cost.n / GRID))
    changes = list(changes)
    for i in range(len(changes)):
        start, end, window = neighbourhood(changes, i, cost.n, min_size, block)
        if window.size:
            left, right = _split_costs(cost, start, window, end, gamma, slopes, min_size)
            changes[i] = int(window[np.argmin(left + right)])
    return changes


def _steps_for_short_ramps(cost: ARSegmentCost, changes: list[int], min_size: int, beta: float,
                           gamma: float) -> list[int]:
    """Replace a sloped segment and its two ends by one step where that costs less.

    On the grid a step that falls inside a cell can only be fitted as a short ramp
    across the cell; at full resolution it is one change point.
    """
    i = 0
    while i + 1 < len(changes):
        bounds = [0, *changes, cost.n]
        left, a, b, right = bounds[i], bounds[i + 1], bounds[i + 2], bounds[i + 3]
        # The middle segment, and (read in the same call) the two around it.
        costs, sloped = _segment_cost(cost, np.array([a, left, b]), np.array([b, a, right]), gamma, True, min_size)
        if sloped[0]:
            window = np.arange(max(a, left + min_size), min(b, right - min_size) + 1)
            if window.size:
                first, second = _split_costs(cost, left, window, right, gamma, True, min_size)
                k = int(np.argmin(first + second))
                old = float(costs[1:].sum())
                if first[k] + second[k] <= old + costs[0] + beta:
                    changes[i : i + 2] = [int(window[k])]
                    continue
        i += 1
    return changes


def without(x: np.ndarray, noise: Noise, segmentation: Segmentation, gone: set[int], beta: float, *,
            min_size: int = MIN_FLAT, slopes: bool = True) -> Segmentation:
    """``segmentation`` with the change points ``gone`` removed, the segments around them refitted as one."""
    changes = [int(c) for c in segmentation.changes if int(c) not in gone]
    return _describe(ARSegmentCost(x, noise), changes, _slope_penalty(beta, slopes), slopes, _min_size(x.size, min_size))


def _describe(cost: ARSegmentCost, changes: list[int], gamma: float, slopes: bool, min_size: int) -> Segmentation:
    bounds = np.array([0, *changes, cost.n], dtype=np.intp)
    # One cost call for the segments and, per change point, its merged and its two sides.
    inner, left, right = bounds[1:-1], bounds[:-2], bounds[2:]
    costs, sloped = _segment_cost(cost, np.concatenate([bounds[:-1], left, left, inner]),
                                  np.concatenate([bounds[1:], right, inner, right]), gamma, slopes, min_size)
    segments, k = bounds.size - 1, inner.size
    sloped = sloped[:segments]
    merged, before, after = costs[segments : segments + k], costs[segments + k : segments + 2 * k], costs[segments + 2 * k :]
    gains = merged - before - after if changes else np.zeros(0)
    start_level, slope = cost.fits(bounds[:-1], bounds[1:], sloped)
    return Segmentation(bounds, sloped, gains, start_level, slope)


def critical_beta(x: np.ndarray, noise: Noise, betas: np.ndarray, *, slopes: bool, min_size: int = MIN_FLAT) -> float:
    """The smallest of ``betas`` (ascending) at which ``x`` gets no change point (calibration)."""
    grid = _Grid(ARSegmentCost(x, noise), _min_size(x.size, min_size), slopes)

    def changes_at(k: int) -> bool:
        return bool(_optimal_partition(grid.costs(_slope_penalty(betas[k], slopes)), betas[k], 1))

    lo, hi = 0, betas.size - 1
    if changes_at(hi):
        return float(betas[hi])
    while lo < hi:  # fewer change points as beta grows: bisect for the first beta with none
        mid = (lo + hi) // 2
        if changes_at(mid):
            lo = mid + 1
        else:
            hi = mid
    return float(betas[lo])


# --------------------------------------------------------------- short series
# Up to SHORT_MAX points, every placement of at most two change points between flat
# segments is tried, against no change (flat, or one line over the whole series: a trend is no
# change), with phi and the innovation sd profiled out of each model: -2 log L = n ln(RSS / n)
# - ln(1 - phi^2). Nothing is read from differences first, so neither a step (which inflates a
# difference-based sd) nor a dozen differences' loose phi (sd ~0.5 at 15 points) blunts the search.
# Unlike the long search's segment costs, the noise runs on through a change point
# (x_t - mu_t = phi (x_{t-1} - mu_{t-1}) + e_t): a step must show as one large innovation. With a
# fresh start per segment, a wandering series could cut itself into "steps" for free.
# Up to 60 points: there the long search's phi, read from a few dozen differences, let AR(1) noise with
# phi 0.9 pass as a step in 17 % of 50-point series (4 % here), and two change points cover what such a
# window shows; ~3 ms per series at 60 points against ~1 ms for the long search.
SHORT_MAX = 60
# Fewest points per flat segment of the short search. Three-point segments between two change points
# let wandering AR(1) noise cut itself into steps more cheaply, which raised the penalty every short
# series pays (by 0.3-1.7 at 10-30 points, measured); a four-point phase is still 10 % of 40 points.
SHORT_MIN_FLAT = 4
# Fewest points in the last segment: a change in the newest three tasks of a sparse group (a call every
# 10-20 s) is the earliest a stream sees it (at four, Nezha's TrainTicket preserve-service fault was
# reported 30-45 s later than by the long search, which allows three). Only the newest: a three-point
# first segment is an old phase's tail, no news, and allowing it too raised the penalty more (with
# both ends at three, the 15-30-point band lost 0.005-0.015 covering under the former penalty).
SHORT_MIN_NEWEST = 3
PHI_GRID = np.round(np.linspace(0.0, MAX_PHI, 20), 3)
# Penalties (in beta) the lone trend pays as a change-free model. At half a change point (as a sloped
# segment pays in the long search) two steps had to beat a straight line by 1.5 beta, and a rising
# staircase of 20-40 points was folded into a trend; as dear as a whole one, a single step beat a
# noisy straight line whenever it fitted as well (17-24 % of 30-point trends rising 2-4 sds reported
# as a change). Three quarters: 2-14 % of such trends (a step is what they end up closest to).
TREND_SHARE = 0.75
# Null law of the short search's critical penalty per n: rows (n, a, b) with P(critical > beta) ~
# exp(-(beta - a) / b) on Gaussian white noise, so that, like the long search (and the detector before
# the short search), it holds ``significance`` per series on white noise. benchmarks/changepoints.py
# --calibrate short prints it. Its rate on AR(1) noise is measured and documented, not held: holding
# 5 % at phi 0.9 too (a dozen points of such noise wander like steps) raised the penalty by ~3 at every
# length, and on real sparse groups, where a dozen spans seconds apart are rarely that smooth, it
# delayed the first report of Nezha's TrainTicket preserve-service fault from 52 to 97 s.
SHORT_CALIBRATION: tuple = (
    (10, -0.077, 2.192),
    (12, 0.929, 2.025),
    (15, 1.596, 1.932),
    (20, 2.219, 1.805),
    (25, 2.558, 1.805),
    (30, 2.694, 1.862),
    (40, 3.128, 1.716),
    (50, 3.140, 1.859),
    (60, 3.373, 1.853),
)



def _whitened(x: np.ndarray, phi: float) -> np.ndarray:
    """Innovations of x under AR(1) noise: sqrt(1 - phi^2) x_0, then x_t - phi x_{t-1}."""
    z = np.empty_like(x, dtype=float)
    z[0] = math.sqrt(1.0 - phi * phi) * x[0]
    z[1:] = x[1:] - phi * x[:-1]
    return z


def _segment_system(z: np.ndarray, phi: float, bounds: np.ndarray):
    """Normal equations of the flat means of segments ``bounds`` (rows: configurations) under running noise.

    The whitened indicator of segment [s, e) is 1 at s (sqrt(1 - phi^2) when s = 0),
    1 - phi inside and -phi at e: its Gram matrix is tridiagonal, and every sum
    comes from prefix sums of z. Returns (G, h) of shapes (m, K, K) and (m, K).
    """
    n = z.size
    prefix = _prefix(z)
    w0, c = math.sqrt(1.0 - phi * phi), 1.0 - phi
    starts, ends = bounds[:, :-1], bounds[:, 1:]
    head = np.where(starts == 0, w0, 1.0)
    closed = ends < n
    diagonal = head * head + (ends - starts - 1) * c * c + np.where(closed, phi * phi, 0.0)
    inside = prefix[ends] - prefix[np.minimum(starts + 1, ends)]
    after = np.where(closed, z[np.minimum(ends, n - 1)], 0.0)
    h = head * z[starts] + c * inside - phi * after
    k = diagonal.shape[1]
    gram = np.zeros((*diagonal.shape, k))
    idx = np.arange(k)
    gram[:, idx, idx] = diagonal
    gram[:, idx[:-1], idx[1:]] = -phi
    gram[:, idx[1:], idx[:-1]] = -phi
    return gram, h


def running_fit(x: np.ndarray, phi: float, bounds) -> tuple[float, np.ndarray]:
    """(residual sum of squared innovations, segment means) of flat segments ``bounds`` under running noise."""
    z = _whitened(x, phi)
    gram, h = _segment_system(z, phi, np.asarray(bounds, dtype=np.intp)[None, :])
    means = np.linalg.solve(gram[0], h[0])
    return float(z @ z - h[0] @ means), means


def _trend_rss(z: np.ndarray, phi: float) -> float:
    """Residual sum of squared innovations of one line a + b t over the whole series."""
    n = z.size
    t = np.arange(n, dtype=float)
    ones = np.full(n, 1.0 - phi)
    ones[0] = math.sqrt(1.0 - phi * phi)
    slope = (1.0 - phi) * t + phi
    slope[0] = 0.0
    design = np.column_stack([ones, slope])
    coef, *_ = np.linalg.lstsq(design, z, rcond=None)
    residual = z - design @ coef
    return float(residual @ residual)


def _weight(model: tuple[int, int]) -> float:
    """Penalties (in beta) that model (change points, sloped segments) pays; the lone trend pays TREND_SHARE."""
    changes, sloped = model
    return TREND_SHARE if model == (0, 1) else changes + SLOPE_SHARE * sloped


@dataclass(frozen=True)
class ShortFit:
    """The best short-series model per (change points, sloped segments): (-2 log L, changes, phi, rss)."""

    scores: dict
    phi: float  # phi of the best two-change model

    def critical(self) -> float:
        """The smallest penalty per change point at which a change-free model wins.

        Model (k, s) costs its score + (k + SLOPE_SHARE s) beta; the change-free ones are
        flat (0, 0) and a trend (0, 1). An alternative's excess over their minimum grows
        with beta, so it has one root: the smaller of its roots against each.
        """
        flat = self.scores[(0, 0)][0]
        trend = self.scores[(0, 1)][0]
        worst = 0.0
        for model, (score, *_rest) in self.scores.items():
            if model[0] == 0 or not np.isfinite(score):
                continue
            weight = _weight(model)
            if weight > TREND_SHARE:
                against_trend = (trend - score) / (weight - TREND_SHARE)
            else:  # as dear as the trend: better or worse at every penalty
                against_trend = np.inf if score < trend else -np.inf
            worst = max(worst, min((flat - score) / weight, against_trend))
        return worst

    def best(self, beta: float) -> tuple[tuple[int, ...], float, float]:
        """(changes, phi, rss) of the model with the lowest penalised cost at ``beta``."""
        key = min(self.scores, key=lambda m: self.scores[m][0] + _weight(m) * beta)
        return self.scores[key][1:]


@functools.lru_cache(maxsize=64)
def _placements(n: int, min_size: int, min_newest: int) -> tuple[np.ndarray, np.ndarray]:
    """Every single change point, and every pair, leaving ``min_newest`` points in the last segment and
    ``min_size`` in the others (cached per n)."""
    ones = np.arange(min_size, n - min_newest + 1, dtype=np.intp)
    a, b = np.meshgrid(ones, ones, indexing="ij")
    keep = b - a >= min_size
    pairs = np.column_stack([a[keep], b[keep]])
    for array in (ones, pairs):
        array.flags.writeable = False
    return ones, pairs


def short_fit(x: np.ndarray, min_size: int = MIN_FLAT, max_changes: int = 2) -> ShortFit:
    """Every flat model of ``x`` with at most two change points, and the trend, profiled over phi.

    All of PHI_GRID at once: the whitened segment indicators' Gram matrix is
    tridiagonal (diagonal d_k, off-diagonal -phi), so the explained sum of squares
    of one or two change points has a closed form, and every placement at every phi
    is one array expression.
    """
    n = x.size
    min_newest, min_size = max(min_size, SHORT_MIN_NEWEST), max(min_size, SHORT_MIN_FLAT)
    floor = 1e-12 * max(float(np.sum((x - x.mean()) ** 2)), 1e-300)
    phi = PHI_GRID.astype(float)[:, None]  # (P, 1)
    w0, c = np.sqrt(1.0 - phi * phi), 1.0 - phi
    z = np.empty((phi.size, n))
    z[:, :1] = w0 * x[0]
    z[:, 1:] = x[1:] - phi * x[:-1]
    total = np.einsum("pt,pt->p", z, z)[:, None]
    prefix = np.zeros((phi.size, n + 1))
    np.cumsum(z, axis=1, out=prefix[:, 1:])
    t = np.arange(1, n, dtype=float)
    sum_z, sum_tz = prefix[:, n:] - prefix[:, 1:2], (z[:, 1:] @ t)[:, None]

    def segment(start, end):
        """(diagonal entry, h) of segments [start, end) at every phi: shapes (P, m)."""
        head = w0 if start is None else 1.0
        first = np.zeros_like(end) if start is None else start
        closed = end < n
        diagonal = head * head + (end - first - 1) * c * c + np.where(closed, phi * phi, 0.0)
        inside = prefix[:, end] - prefix[:, np.minimum(first + 1, end)]
        after = np.where(closed, z[:, np.minimum(end, n - 1)], 0.0)
        return diagonal, head * z[:, first] + c * inside - phi * after

    scores: dict = {}

    def keep(model, rss: np.ndarray, placements) -> np.ndarray:
        """The best placement per phi, then the best phi; returns the model's score per phi."""
        k = np.argmin(rss, axis=1) if rss.ndim == 2 and rss.shape[1] > 1 else np.zeros(phi.size, dtype=np.intp)
        best = rss[np.arange(phi.size), k] if rss.ndim == 2 else rss
        score = n * np.log(np.maximum(best, floor) / n) - np.log(1.0 - phi[:, 0] ** 2)
        p = int(np.argmin(score))
        changes = tuple(int(v) for v in np.atleast_1d(placements[k[p]])) if placements is not None else ()
        scores[model] = (float(score[p]), changes, float(phi[p, 0]), float(best[p]))
        return score

    flat_diagonal = w0 * w0 + (n - 1) * c * c
    flat_h = w0 * z[:, :1] + c * sum_z
    keep((0, 0), (total - flat_h * flat_h / flat_diagonal)[:, 0], None)
    # One line a + b t: its whitened slope column is 0 at t = 0, then c t + phi.
    a12 = c * (c * t.sum() + phi * (n - 1))
    a22 = c * c * float(t @ t) + 2 * c * phi * t.sum() + phi * phi * (n - 1)
    b2 = c * sum_tz + phi * sum_z
    det = flat_diagonal * a22 - a12 * a12
    explained = (a22 * flat_h * flat_h - 2 * a12 * flat_h * b2 + flat_diagonal * b2 * b2) / det
    keep((0, 1), (total - explained)[:, 0], None)

    ones, pairs = _placements(n, min_size, min_newest)
    fit_phi = None
    if max_changes >= 1 and ones.size:
        d1, h1 = segment(None, ones)
        d2, h2 = segment(ones, np.full(ones.size, n))
        quad = (d2 * h1 * h1 + 2 * phi * h1 * h2 + d1 * h2 * h2) / (d1 * d2 - phi * phi)
        keep((1, 0), total - quad, ones)
    if max_changes >= 2 and pairs.size:
        a, b = pairs[:, 0], pairs[:, 1]
        d1, h1 = segment(None, a)
        d2, h2 = segment(a, b)
        d3, h3 = segment(b, np.full(b.size, n))
        det3 = d1 * d2 * d3 - phi * phi * (d1 + d3)
        quad = ((d2 * d3 - phi * phi) * h1 * h1 + d1 * d3 * h2 * h2 + (d1 * d2 - phi * phi) * h3 * h3
                + 2 * phi * d3 * h1 * h2 + 2 * phi * phi * h1 * h3 + 2 * phi * d1 * h2 * h3) / det3
        keep((2, 0), total - quad, pairs)
        fit_phi = scores[(2, 0)][2]
    if fit_phi is None:  # too short for two change points: condition on the one-change model
        fit_phi = scores.get((1, 0), scores[(0, 0)])[2]
    return ShortFit(scores, fit_phi)


def _interpolate(lengths, cells, n: int) -> tuple[float, float]:
    logs, cells, log_n = np.log(np.asarray(lengths, dtype=float)), np.asarray(cells, dtype=float), math.log(max(n, 2))
    return float(np.interp(log_n, logs, cells[:, 0])), float(np.interp(log_n, logs, cells[:, 1]))


def short_penalty(n: int, alpha: float) -> tuple[float, float, float]:
    """(beta, a, b) of the short search at ``n`` points (see SHORT_CALIBRATION)."""
    a, b = _interpolate([row[0] for row in SHORT_CALIBRATION], [row[1:] for row in SHORT_CALIBRATION], n)
    return a + b * math.log(1.0 / alpha), a, b


def long_penalty(n: int, alpha: float) -> tuple[float, float, float]:
    """(beta, a, b) of the long search at ``n`` points (white-noise law, CALIBRATION["level"]).

    Its AR(1) segment costs take the noise's phi into account; a law conditioned on the phi
    read from differences was tried and was too loose to use below ~100 points (the
    differences' phi misclassifies a wandering series as white, so the white bin would
    have had to pay for it).
    """
    a, b = _tail("level", n)
    return a + b * math.log(1.0 / alpha), a, b


@dataclass(frozen=True)
class LevelFit:
    """A level segmentation with what judging it needs: the series searched, its noise, the penalty used."""

    segmentation: "Segmentation"
    searched: np.ndarray
    noise: Noise
    beta: float
    tail: tuple[float, float]  # (a, b): P(noise alone gains >= g) ~ exp(-(g - a) / b)
    running: bool  # the short search's model (noise running on through change points)
    min_size: int

    def p_value(self, gain: float) -> float:
        a, b = self.tail
        return float(min(1.0, math.exp(-(gain - a) / b)))

    def without(self, segmentation: "Segmentation", gone: set[int]) -> "Segmentation":
        """``segmentation`` with the change points ``gone`` removed, refitted by the same model."""
        if self.running:
            return _running_segmentation(self.searched, self.noise.phi,
                                         [int(c) for c in segmentation.changes if int(c) not in gone])
        return without(self.searched, self.noise, segmentation, gone, self.beta, min_size=self.min_size)


def _running_segmentation(x: np.ndarray, phi: float, changes: list[int]) -> "Segmentation":
    """Flat segments at ``changes`` under running noise; gains in -2 log L with the sd profiled."""
    n = x.size
    bounds = np.array([0, *changes, n], dtype=np.intp)
    rss, means = running_fit(x, phi, bounds)
    gains = np.zeros(len(changes))
    for i in range(len(changes)):
        merged, _ = running_fit(x, phi, np.delete(bounds, i + 1))
        gains[i] = n * math.log(max(merged, 1e-300) / max(rss, 1e-300))
    k = len(changes) + 1
    return Segmentation(bounds, np.zeros(k, dtype=bool), gains, means, np.zeros(k))


def search_level(x: np.ndarray, alpha: float, *, min_size: int = MIN_FLAT, max_changes: int = 8,
                 robust: bool = True) -> LevelFit:
    """The level segmentation of ``x`` whose false-change probability on change-free noise is ``alpha``.

    Up to SHORT_MAX points the exhaustive short search; longer series the penalised
    optimal partition of ``fit_level`` (see SHORT_CALIBRATION, CALIBRATION).
    """
    n = x.size
    searched, noise = level_input(x) if robust else (x, estimate_noise(x))
    if n > SHORT_MAX or not SHORT_CALIBRATION:
        beta, a, b = long_penalty(n, alpha)
        level, searched, noise = fit_level(x, beta, min_size=min_size, max_changes=max_changes,
                                           prepared=(searched, noise))
        return LevelFit(level, searched, noise, beta, (a, b), False, min_size)
    if np.ptp(searched) <= 0:
        return LevelFit(_constant(n), searched, Noise(0.0, 0.0), np.inf, (np.inf, 1.0), True, min_size)
    fit = short_fit(searched, min_size, max_changes)
    beta, a, b = short_penalty(n, alpha)
    changes, phi, rss = fit.best(beta)
    noise = Noise(math.sqrt(max(rss, 0.0) / n), phi)
    return LevelFit(_running_segmentation(searched, phi, list(changes)), searched, noise, beta, (a, b), True, min_size)
