"""Change points on short labelled series: crackle vs ruptures Binseg / Pelt and "no change".

A suite of series made with fixed seeds, 15 to 800 points: single and multiple
steps, ramps (labelled at start and end), variance-only changes, steps in AR(1)
noise (phi 0.3-0.9), steps in heavy-tailed noise (Student t3, lognormal latency),
cumulative counters whose rate changes, and series with no change. Every method
sees the same series in the same run:

- crackle: ``phase.detect`` on a one-metric matrix at the default profile (the
  code path span groups, the metric reader and ``analyze`` use); its change
  points are the reported ``change_index`` (and ``ramp_end_index`` + 1);
- ruptures ``Binseg`` and ``Pelt``, model ``l2``, ``min_size=2``, ``jump=1``,
  penalty 2 ln(n) sigma^2 with sigma from the MAD of first differences / sqrt 2;
- "no change": no change point at all (TCPDBench's ``zero`` baseline).

Scores are TCPDBench's (van den Burg & Williams 2020, re-implemented below): F1
with a margin of 5 points where the start index 0 counts as a change point of both
truth and prediction, and segmentation covering. The false-change rate is the share
of change-free series (white Gaussian, AR(1), heavy-tailed) given any change point.

    pip install -e '.[bench]'
    python benchmarks/changepoints.py [--per-cell 6] [--noise-series 300] [--seed 11] [--noise-seed 5]
    python benchmarks/changepoints.py --calibrate level|spread|short   # regenerate a penalty table
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from crackle_otel.cli import positive_int
from crackle_otel.detect import _changepoints as cp
from crackle_otel.detect import phase
from crackle_otel.matrix import MetricMatrix
from crackle_otel.profile import ThermalProfile

LENGTHS = (15, 20, 30, 50, 100, 200, 400, 800)
BANDS = {"15-30": (15, 20, 30), "50-100": (50, 100), "200-800": (200, 400, 800)}
MARGIN = 5
PROFILE = ThermalProfile.default()


@dataclass(frozen=True)
class Series:
    category: str
    n: int
    values: np.ndarray
    changes: tuple[int, ...]  # index of the first value of each new segment


# --------------------------------------------------------------------- suite
def _positions(rng: np.random.Generator, n: int, count: int) -> list[int]:
    """``count`` change positions at least max(5, n / 8) apart and from both ends."""
    gap = max(5, n // 8)
    for _ in range(1000):
        positions = sorted(rng.integers(gap, n - gap + 1, count).tolist())
        if all(b - a >= gap for a, b in zip(positions, positions[1:])):
            return positions
    return [n * (k + 1) // (count + 1) for k in range(count)]


def _levels(rng: np.random.Generator, count: int, low: float, high: float) -> np.ndarray:
    """Cumulative levels of ``count`` steps of random sign and size in [low, high]."""
    steps = rng.uniform(low, high, count) * rng.choice([-1.0, 1.0], count)
    return np.concatenate([[0.0], np.cumsum(steps)])


def _piecewise(n: int, positions: list[int], levels: np.ndarray) -> np.ndarray:
    return levels[np.searchsorted(positions, np.arange(n), side="right")]


def _ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """AR(1) noise with marginal sd 1 (started from its stationary law)."""
    e = rng.normal(0, 1, n + 200)
    return lfilter([1.0], [1.0, -phi], e)[200:] * math.sqrt(1 - phi * phi)


def make_suite(per_cell: int, seed: int = 11) -> list[Series]:
    rng = np.random.default_rng(seed)
    suite: list[Series] = []
    for n in LENGTHS:
        many = 2 if n < 50 else 3
        for _ in range(per_cell):
            at = _positions(rng, n, 1)
            suite.append(Series("step", n, _piecewise(n, at, _levels(rng, 1, 1.5, 4)) + rng.normal(0, 1, n), tuple(at)))
            at = _positions(rng, n, many)
            suite.append(Series("steps", n, _piecewise(n, at, _levels(rng, many, 2, 4)) + rng.normal(0, 1, n), tuple(at)))
            # Rising staircase: several steps one way must stay several steps, not one ramp.
            at = _positions(rng, n, many)
            rise = np.concatenate([[0.0], np.cumsum(rng.uniform(2, 4, many))])
            suite.append(Series("staircase", n, _piecewise(n, at, rise) + rng.normal(0, 1, n), tuple(at)))
            start, end = _ramp(rng, n)
            ramp = np.clip((np.arange(n) - start) / (end - start), 0, 1) * rng.uniform(4, 8) * rng.choice([-1, 1])
            suite.append(Series("ramp", n, ramp + rng.normal(0, 1, n), (start, end)))
            at = _positions(rng, n, 1)
            sd = np.where(np.arange(n) < at[0], 1.0, 3.0) if rng.random() < 0.5 else np.where(np.arange(n) < at[0], 3.0, 1.0)
            suite.append(Series("variance", n, rng.normal(0, 1, n) * sd, tuple(at)))
            phi = float(rng.choice([0.3, 0.6, 0.9]))
            at = _positions(rng, n, 1)
            suite.append(Series(f"ar1", n, _piecewise(n, at, _levels(rng, 1, 2, 4)) + _ar1(rng, n, phi), tuple(at)))
            at = _positions(rng, n, 1)
            t3 = rng.standard_t(3, n) / math.sqrt(3)  # unit variance
            suite.append(Series("heavy_t3", n, _piecewise(n, at, _levels(rng, 1, 2, 4)) + t3, tuple(at)))
            at = _positions(rng, n, 1)
            factor = np.where(np.arange(n) < at[0], 1.0, rng.uniform(2, 5))
            suite.append(Series("latency", n, 20 * factor * rng.lognormal(0, 0.5, n), tuple(at)))
            at = _positions(rng, n, 1)
            rate = np.where(np.arange(n) < at[0], 5.0, 5.0 * rng.choice([0.3, 2.5, 3.0]))
            suite.append(Series("counter", n, 1000 + np.cumsum(rng.poisson(rate)).astype(float), tuple(at)))
            suite.append(Series("none", n, rng.normal(0, 1, n), ()))
            suite.append(Series("none_ar1", n, _ar1(rng, n, float(rng.choice([0.3, 0.6, 0.9]))), ()))
            suite.append(Series("none_latency", n, 20 * rng.lognormal(0, 0.5, n), ()))
    return suite


def _ramp(rng: np.random.Generator, n: int) -> tuple[int, int]:
    length = max(5, int(rng.uniform(0.15, 0.35) * n))
    start = int(rng.integers(max(3, n // 8), n - length - max(3, n // 8) + 1))
    return start, start + length


# ------------------------------------------------------------------ methods
def crackle(values: np.ndarray) -> list[int]:
    matrix = MetricMatrix.from_columns({"value": values}, start=1_790_000_000.0, interval_s=1.0)
    found = []
    for pattern in phase.detect(matrix, PROFILE):
        stats = pattern.statistics
        count = int(stats["change_points"])
        prefixes = ["change_"] if count == 1 else [f"change_{k}_" for k in range(1, count + 1)]
        for prefix in prefixes:
            found.append(int(stats[f"{prefix}index"]))
            ramp_end = stats.get(f"{prefix}ramp_end_index" if count > 1 else "ramp_end_index")
            if ramp_end is not None and ramp_end + 1 < values.size:
                found.append(int(ramp_end) + 1)
    return sorted(set(found))


def _ruptures_penalty(values: np.ndarray) -> float:
    sigma = 1.4826 * np.median(np.abs(np.diff(values) - np.median(np.diff(values)))) / math.sqrt(2)
    return 2 * math.log(values.size) * max(sigma, 1e-12) ** 2


def binseg(values: np.ndarray) -> list[int]:
    import ruptures

    return ruptures.Binseg(model="l2", min_size=2, jump=1).fit(values).predict(pen=_ruptures_penalty(values))[:-1]


def pelt(values: np.ndarray) -> list[int]:
    import ruptures

    return ruptures.Pelt(model="l2", min_size=2, jump=1).fit(values).predict(pen=_ruptures_penalty(values))[:-1]


def no_change(values: np.ndarray) -> list[int]:
    return []


METHODS = {"crackle": crackle, "binseg": binseg, "pelt": pelt, "zero": no_change}


# ------------------------------------------------------ TCPDBench's metrics
def true_positives(truth: set[int], predicted: set[int], margin: int = MARGIN) -> set[int]:
    """Truths matched to a distinct prediction within ``margin`` (closest first), no double counting."""
    left = set(predicted)
    matched = set()
    for tau in sorted(truth):
        close = sorted((abs(tau - x), x) for x in left if abs(tau - x) <= margin)
        if close:
            matched.add(tau)
            left.remove(close[0][1])
    return matched


def f1(truth, predicted, margin: int = MARGIN) -> float:
    truth, predicted = set(truth) | {0}, set(predicted) | {0}  # the start counts, as in TCPDBench
    precision = len(true_positives(truth, predicted, margin)) / len(predicted)
    recall = len(true_positives(truth, predicted, margin)) / len(truth)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _partition(changes, n: int) -> list[set[int]]:
    edges = [0, *sorted(c for c in set(changes) if 0 < c < n), n]
    return [set(range(a, b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def covering(truth, predicted, n: int) -> float:
    """Segmentation covering of the true segmentation by the predicted one."""
    predicted_parts = _partition(predicted, n)
    total = 0.0
    for part in _partition(truth, n):
        total += len(part) * max(len(part & other) / len(part | other) for other in predicted_parts)
    return total / n


# ---------------------------------------------------------------- reporting
def evaluate(suite: list[Series], names: list[str] | None = None) -> dict:
    methods = {name: METHODS[name] for name in names or METHODS}
    results = {name: [] for name in methods}
    seconds = {name: 0.0 for name in methods}
    for series in suite:
        for name, method in methods.items():
            started = time.perf_counter()
            found = method(series.values)
            seconds[name] += time.perf_counter() - started
            results[name].append((series, f1(series.changes, found), covering(series.changes, found, series.n),
                                  len(found)))
    return {"results": results, "seconds": seconds}


def _mean(rows, column: int, keep) -> float:
    values = [row[column] for row in rows if keep(row[0])]
    return float(np.mean(values)) if values else math.nan


def report(evaluation: dict) -> None:
    results = evaluation["results"]
    names = list(results)
    print(f"\nF1 (margin {MARGIN}) / covering, by length band ({len(results['crackle'])} series)")
    print(f"{'band':<10}" + "".join(f"{name:>18}" for name in names))
    for band, lengths in BANDS.items():
        cells = [f"{_mean(results[m], 1, lambda s: s.n in lengths):.3f} / "
                 f"{_mean(results[m], 2, lambda s: s.n in lengths):.3f}" for m in names]
        print(f"{band:<10}" + "".join(f"{cell:>18}" for cell in cells))
    print(f"{'all':<10}" + "".join(f"{_mean(results[m], 1, lambda s: True):.3f} / "
                                    f"{_mean(results[m], 2, lambda s: True):.3f}".rjust(18) for m in names))
    categories = sorted({s.category for s, *_ in results["crackle"]})
    print("\nF1 by category (all lengths)")
    print(f"{'category':<14}" + "".join(f"{name:>10}" for name in names))
    for category in categories:
        print(f"{category:<14}" + "".join(f"{_mean(results[m], 1, lambda s: s.category == category):>10.3f}"
                                          for m in names))
    print("\nseconds per series: " + ", ".join(
        f"{m} {evaluation['seconds'][m] / len(results[m]) * 1000:.1f} ms" for m in names))


def false_change_rates(count: int, seed: int = 5, with_pelt: bool = True) -> None:
    """Share of change-free series given any change point, per length and kind of noise."""
    rng = np.random.default_rng(seed)
    kinds = {
        "white": lambda n: rng.normal(0, 1, n),
        "t3": lambda n: rng.standard_t(3, n),
        "lognormal": lambda n: rng.lognormal(3, 0.8, n),
        "ar1 0.5": lambda n: _ar1(rng, n, 0.5),
        "ar1 0.9": lambda n: _ar1(rng, n, 0.9),
    }
    lengths = (10, *LENGTHS, 2000)
    print(f"\nfalse-change rate on change-free series ({count} per cell; crackle at the default profile,"
          f" significance {PROFILE.rate.significance}; ruptures Pelt in brackets)")
    print(f"{'noise':<11}" + "".join(f"{n:>13}" for n in lengths))
    for kind, make in kinds.items():
        cells = []
        for n in lengths:
            series = [make(n) for _ in range(count)]
            ours = np.mean([bool(crackle(x)) for x in series])
            theirs = (np.mean([bool(pelt(x)) for x in series[: max(20, count // 5)]])
                      if n <= 800 and with_pelt else math.nan)
            cells.append(f"{ours:.3f} ({theirs:.2f})")
        print(f"{kind:<11}" + "".join(f"{cell:>13}" for cell in cells))


# -------------------------------------------------------------- calibration
CALIBRATION_LENGTHS = (10, 12, 15, 20, 30, 50, 100, 200, 400)
TAIL = np.array([0.1, 0.05, 0.02, 0.01])
BETAS = np.exp(np.linspace(math.log(0.5), math.log(300), 1200))


def _critical(stage: str, x: np.ndarray) -> float:
    """The penalty at which ``x`` stops getting a change point, searched as ``phase`` searches it."""
    min_size = max(cp.MIN_FLAT, math.ceil(phase.MIN_SEGMENT_SHARE * x.size))  # as phase searches
    beta = cp.penalty("level", x.size, PROFILE.rate.significance)
    level, searched, noise = cp.fit_level(x, beta, min_size=min_size)
    if stage == "level":
        # The noise as the second pass sees it (residual autocorrelation), at the usual penalty.
        return cp.critical_beta(searched, noise, BETAS, slopes=True, min_size=min_size)
    spread, spread_noise = cp.spread_input(searched - level.fitted(), level.bounds, noise)
    return cp.critical_beta(spread, spread_noise, BETAS, slopes=False, min_size=max(cp.MIN_SPREAD, min_size))


def calibrate(stage: str, count: int, seed: int = 20240611) -> None:
    """Print CALIBRATION rows: the null tail of the critical penalty, a + b ln(1 / alpha), smoothed over n."""
    rng = np.random.default_rng(seed)
    simulated = []
    for n in CALIBRATION_LENGTHS:
        critical = np.array([_critical(stage, rng.normal(0, 1, n)) for _ in range(count)])
        simulated.append((n, np.quantile(critical, 1 - TAIL)))
        print(f"# n={n}: 90/95/98/99 % of the critical penalty {np.round(simulated[-1][1], 2).tolist()}", flush=True)
    # Least squares over every (n, alpha): a = c0 + c1 ln n, b = c2 + c3 / ln n; the 99 % points count double.
    rows, targets, weights = [], [], []
    for n, quantiles in simulated:
        log_n = math.log(min(n, CALIBRATION_LENGTHS[-1]))
        for alpha, value in zip(TAIL, quantiles):
            surprise = math.log(1 / alpha)
            rows.append([1.0, log_n, surprise, surprise / log_n])
            targets.append(value)
            weights.append(math.sqrt(2.0) if alpha < 0.015 else 1.0)
    w = np.array(weights)
    c = np.linalg.lstsq(np.array(rows) * w[:, None], np.array(targets) * w, rcond=None)[0]
    for n, _ in simulated:
        log_n = math.log(n)
        print(f"        ({n}, {c[0] + c[1] * log_n:.3f}, {c[2] + c[3] / log_n:.3f}),")


SHORT_LENGTHS = (10, 12, 15, 20, 25, 30, 40, 50, 60)
EXCEEDANCE = 0.2  # the tail is fitted to this top share of the critical penalties


def _exponential_tail(critical: np.ndarray) -> tuple[float, float]:
    """(a, b) with P(critical > beta) ~ exp(-(beta - a) / b), fitted to the top EXCEEDANCE share.

    Above its (1 - EXCEEDANCE) quantile q the excess is taken as exponential with mean b
    (maximum likelihood: the mean excess): far steadier than a 99 % quantile of a few hundred.
    """
    q = float(np.quantile(critical, 1 - EXCEEDANCE))
    b = max(float(np.mean(critical[critical > q] - q)), 0.5)
    return q - b * math.log(1 / EXCEEDANCE), b


def calibrate_short(count: int, seed: int = 20261207) -> None:
    """Print SHORT_CALIBRATION (the short search's null law on Gaussian white noise, per n)."""
    rng = np.random.default_rng(seed)
    print("SHORT_CALIBRATION: tuple = (")
    for n in SHORT_LENGTHS:
        min_size = max(cp.MIN_FLAT, math.ceil(phase.MIN_SEGMENT_SHARE * n))
        critical = np.array([cp.short_fit(cp.level_input(rng.normal(0.0, 1.0, n))[0], min_size).critical()
                             for _ in range(count)])
        a, b = _exponential_tail(critical)
        print(f"    ({n}, {a:.3f}, {b:.3f}),", flush=True)
    print(")")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-cell", type=positive_int, default=6, help="series per category and length")
    parser.add_argument("--noise-series", type=positive_int, default=300, help="change-free series per length and noise")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated subset of " + ", ".join(METHODS) + " (ruptures' do not change between runs)")
    parser.add_argument("--no-pelt-noise", action="store_true", help="leave Pelt (slow) out of the false-change table")
    parser.add_argument("--seed", type=int, default=11, help="seed of the labelled suite (another one checks for overfitting)")
    parser.add_argument("--noise-seed", type=int, default=5, help="seed of the change-free series")
    parser.add_argument("--calibrate", choices=["level", "spread", "short"], help="print a null calibration table instead")
    parser.add_argument("--calibration-series", type=positive_int, default=4000)
    args = parser.parse_args()
    if args.calibrate == "short":
        calibrate_short(args.calibration_series)
        return
    if args.calibrate:
        calibrate(args.calibrate, args.calibration_series)
        return
    report(evaluate(make_suite(args.per_cell, args.seed), args.methods.split(",")))
    if args.noise_series:
        false_change_rates(args.noise_series, args.noise_seed, with_pelt=not args.no_pelt_noise)


if __name__ == "__main__":
    main()
