"""Time to cool n tasks x 16 metrics with every detector on, and how it grows with n.

Data: a realistic mix (a latency shift, a slow-host cluster, a conservation law,
correlated and independent metrics) so every detector has work to do.

    python benchmarks/cool.py [--sizes 1000 10000 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from crate_port import crate_detect  # benchmarks/ is on sys.path when run as a script

from crackle_otel import Kiln, ThermalProfile
from crackle_otel.cli import positive_int
from crackle_otel.detect import run_detectors
from crackle_otel.matrix import MetricMatrix


def workload(n: int, n_metrics: int = 16, seed: int = 0) -> MetricMatrix:
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    slow_host = rng.random(n) < 0.05
    latency = rng.lognormal(np.log(20), 0.2, n) * np.where(slow_host, 3.0, 1.0)
    latency[n // 2 :] *= 1.4
    records_in = rng.poisson(500, n).astype(float)
    errors = rng.poisson(3, n).astype(float)
    columns = {
        "duration_ms": latency,
        "cpu_ms": 0.6 * latency + rng.normal(0, 1, n),
        "records_in": records_in,
        "errors": errors,
        "records_out": records_in - errors,
        "queue_depth": rng.normal(40, 5, n),
        "is_error": (rng.random(n) < 0.01).astype(float),
        "event_id": i.astype(float),
    }
    k = 0
    while len(columns) < n_metrics:
        columns[f"noise_{k}"] = rng.normal(0, 1, n)
        k += 1
    return MetricMatrix.from_columns(columns, labels=np.where(slow_host, "host-b", "host-a").tolist(), start=1.79e9,
                                     interval_s=0.001, identities=[(1, int(x)) for x in i])


def time_cool(matrix: MetricMatrix, profile: ThermalProfile, repeat: int) -> tuple[float, int, dict]:
    best = float("inf")
    per_detector: dict[str, float] = {}
    patterns = []
    for _ in range(repeat):
        start = time.perf_counter()
        patterns, _ = run_detectors(matrix, profile)
        best = min(best, time.perf_counter() - start)
    # Per detector, once (for the breakdown).
    for name in ("clustering", "phase_transitions", "conservation", "correlations"):
        only = ThermalProfile(rate=profile.rate, **{s: s == name for s in
                              ("clustering", "phase_transitions", "conservation", "correlations")})
        start = time.perf_counter()
        run_detectors(matrix, only)
        per_detector[name] = time.perf_counter() - start
    return best, len(patterns), per_detector


def time_record(matrix: MetricMatrix) -> float:
    """Seconds to record every row through Kiln.record (the path spans take)."""
    kiln = Kiln(capacity=matrix.n_tasks, seal_on_cool=False)
    names = matrix.metric_names
    rows = [dict(zip(names, row)) for row in matrix.values.tolist()]
    start = time.perf_counter()
    for label, ts, row in zip(matrix.labels, matrix.timestamps.tolist(), rows):
        kiln.record(label, row, timestamp=ts)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=positive_int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--metrics", type=positive_int, default=16)
    parser.add_argument("--repeat", type=positive_int, default=3)
    parser.add_argument("--baseline-max", type=positive_int, default=30_000, help="largest n for the O(n^2) crate baseline")
    args = parser.parse_args()
    profile = ThermalProfile.default()
    parser_baseline_max = args.baseline_max
    print(f"cool: all detectors, {args.metrics} metrics, best of {args.repeat}; "
          f"baseline: the seed crate's detectors ported to numpy (up to {parser_baseline_max} tasks: O(n^2))")
    print(f"{'tasks':>8}{'cool s':>9}{'tasks/s':>11}{'patterns':>9}{'crate s':>9}{'ratio':>7}"
          "  per detector (s)                          record us/task")
    results = []
    for n in args.sizes:
        matrix = workload(n, args.metrics)
        seconds, count, per = time_cool(matrix, profile, args.repeat)
        if n <= parser_baseline_max:
            start = time.perf_counter()
            crate_detect(matrix, cluster_threshold=1.5)  # CoolingRate::Fast, as the crate's README uses
            crate_seconds = time.perf_counter() - start
            baseline = f"{crate_seconds:>9.3f}{seconds / crate_seconds:>7.2f}"
        else:
            baseline = f"{'-':>9}{'-':>7}"
        record_us = time_record(matrix) / n * 1e6
        results.append((n, seconds))
        breakdown = " ".join(f"{k[:5]}={v:.3f}" for k, v in per.items())
        print(f"{n:>8}{seconds:>9.3f}{n / seconds:>11,.0f}{count:>9}{baseline}  {breakdown}  {record_us:6.2f}")
    if len(results) >= 2:
        (n0, t0), (n1, t1) = results[0], results[-1]
        exponent = np.log(t1 / t0) / np.log(n1 / n0)
        print(f"growth exponent (log t / log n, {n0} -> {n1}): {exponent:.2f}  (1.0 = linear, n log n ~ 1.1)")
    print("seed crate (review): ~3,700 events/s including analysis")


if __name__ == "__main__":
    main()
