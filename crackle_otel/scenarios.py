"""Labelled synthetic scenarios (fixed seeds) for the demo, tests and quality benchmark.

Each scenario is a MetricMatrix plus what a good cool must find (``expected``),
must not find (``forbidden``) and may find without it being a false positive
(``acceptable``: real but secondary effects, e.g. the correlations a mixture
of two populations induces).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .matrix import MetricMatrix
from .patterns import Pattern, PatternKind

START_TIME = 1_790_000_000.0  # a fixed epoch so timestamps are reproducible


@dataclass(frozen=True)
class Expectation:
    """A pattern of ``kind`` whose metrics include every name in ``metrics``."""

    kind: PatternKind
    metrics: frozenset[str]

    def matches(self, pattern: Pattern) -> bool:
        return pattern.kind is self.kind and self.metrics <= set(pattern.metrics)

    def __str__(self) -> str:
        return f"{self.kind} on {', '.join(sorted(self.metrics))}"


def expect(kind: PatternKind, *metrics: str) -> Expectation:
    return Expectation(kind, frozenset(metrics))


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    matrix: MetricMatrix
    expected: tuple[Expectation, ...] = ()
    forbidden: tuple[Expectation, ...] = ()
    acceptable: tuple[Callable[[Pattern], bool], ...] = field(default=())

    def is_true_positive(self, pattern: Pattern) -> bool:
        if any(f.matches(pattern) for f in self.forbidden):
            return False
        return any(e.matches(pattern) for e in self.expected) or any(ok(pattern) for ok in self.acceptable)

    def missing(self, patterns: list[Pattern]) -> list[Expectation]:
        return [e for e in self.expected if not any(e.matches(p) for p in patterns)]

    def violations(self, patterns: list[Pattern]) -> list[tuple[Expectation, Pattern]]:
        return [(f, p) for p in patterns for f in self.forbidden if f.matches(p)]


def _matrix(columns: dict[str, np.ndarray], labels=None, interval_s: float = 0.1) -> MetricMatrix:
    names = tuple(columns)
    values = np.column_stack([np.asarray(columns[name], dtype=float) for name in names])
    n = values.shape[0]
    return MetricMatrix(
        values=values,
        metric_names=names,
        labels=tuple(labels) if labels is not None else tuple(f"task-{i}" for i in range(n)),
        timestamps=START_TIME + interval_s * np.arange(n),
        identities=tuple((0x5EED0000 + i, 0xC0FFEE00 + i) for i in range(n)),
    )


def _only(metrics: set[str], *kinds: PatternKind) -> Callable[[Pattern], bool]:
    """Acceptable: a pattern of one of ``kinds`` about nothing but ``metrics``."""
    return lambda p: p.kind in kinds and set(p.metrics) <= metrics


# The review's event-stream case: healthy -> degrading -> conservation violation.
EVENT_STREAM_PHASES = {"healthy": (0, 400), "degrading": (400, 700), "violation": (700, 1000)}


def event_stream(seed: int = 0) -> Scenario:
    rng = np.random.default_rng(seed)
    n = 1000
    i = np.arange(n)
    degrading_start, violation_start = EVENT_STREAM_PHASES["degrading"][0], EVENT_STREAM_PHASES["violation"][0]
    # 0 while healthy, ramps 0 -> 1 while degrading, stays 1 after.
    ramp = np.clip((i - degrading_start) / (violation_start - degrading_start), 0.0, 1.0)
    latency = 10 + 75 * ramp + rng.normal(0, 0.6, n)
    errors = rng.poisson(2 + 28 * ramp).astype(float)
    records_in = np.round(rng.normal(1000, 30, n))
    # Records lost once the violation starts: 5 per batch at first, 300 by the end.
    lost = np.zeros(n)
    lost[violation_start:] = np.round(np.linspace(5, 300, n - violation_start))
    records_out = records_in - errors - lost
    columns = {
        "event_id": 1_000 + i,
        "batch_id": i // 100,
        "records_in": records_in,
        "records_out": records_out,
        "errors": errors,
        "latency_ms": latency,
        "latency_p99_ms": 1.5 * latency + rng.normal(0, 0.3, n),
        "throughput": 10_000 / latency + rng.normal(0, 5, n),
        "consumer_lag": 50 + 1950 * ramp + rng.normal(0, 15, n),
        "gc_pause_ms": 5 + 15 * ramp + rng.normal(0, 0.8, n),
        "cpu_temp_c": rng.uniform(65, 80, n),
        "memory_mb": rng.normal(512, 10, n),
        "max_batch": np.full(n, 1000.0),
    }
    degrading = {"latency_ms", "latency_p99_ms", "throughput", "errors", "consumer_lag", "gc_pause_ms", "records_out"}
    flow = {"records_in", "records_out", "errors"}
    idless = [
        expect(kind, name)
        for name in ("event_id", "batch_id")
        for kind in (PatternKind.PHASE_TRANSITION, PatternKind.CONSERVATION, PatternKind.CORRELATION, PatternKind.LEAD_LAG)
    ]
    return Scenario(
        name="event_stream",
        description="review case: 1000 events, healthy -> degrading (latency 10->85 ms) -> records lost",
        matrix=_matrix(columns),
        expected=(
            expect(PatternKind.PHASE_TRANSITION, "latency_ms"),
            expect(PatternKind.PHASE_TRANSITION, "throughput"),
            expect(PatternKind.PHASE_TRANSITION, "errors"),
            expect(PatternKind.PHASE_TRANSITION, "consumer_lag"),
            expect(PatternKind.PHASE_TRANSITION, "gc_pause_ms"),
            expect(PatternKind.CONSERVATION, *flow),
            expect(PatternKind.CONSERVATION_VIOLATION, *flow),
            expect(PatternKind.CORRELATION, "latency_ms", "throughput"),
            expect(PatternKind.CORRELATION, "latency_ms", "latency_p99_ms"),
        ),
        forbidden=(
            *idless,
            expect(PatternKind.CONSERVATION, "cpu_temp_c"),
            expect(PatternKind.CONSERVATION, "max_batch"),
            expect(PatternKind.PHASE_TRANSITION, "cpu_temp_c"),
            expect(PatternKind.PHASE_TRANSITION, "memory_mb"),
        ),
        acceptable=(
            _only(degrading, *PatternKind),
            # The law also holds among flows; records_in appears in violations/laws.
            _only(flow | degrading, PatternKind.CONSERVATION, PatternKind.CONSERVATION_VIOLATION,
                  PatternKind.CORRELATION, PatternKind.LEAD_LAG, PatternKind.PHASE_TRANSITION),
        ),
    )


def mean_shift(seed: int = 0, n: int = 2000, at: int = 1200) -> Scenario:
    rng = np.random.default_rng(seed)
    latency = rng.normal(100, 10, n)
    latency[at:] += 30
    columns = {"latency_ms": latency, **{f"noise_{k}": rng.normal(0, 1, n) for k in range(5)}}
    return Scenario(
        name="mean_shift",
        description=f"latency_ms mean 100 -> 130 ms (sd 10) at task {at}; 5 noise metrics",
        matrix=_matrix(columns),
        expected=(expect(PatternKind.PHASE_TRANSITION, "latency_ms"),),
        forbidden=tuple(expect(PatternKind.PHASE_TRANSITION, f"noise_{k}") for k in range(5)),
        acceptable=(_only({"latency_ms"}, PatternKind.CLUSTERING, PatternKind.OUTLIER),),
    )


def variance_shift(seed: int = 0, n: int = 2000, at: int = 1000) -> Scenario:
    rng = np.random.default_rng(seed)
    depth = rng.normal(50, 5, n)
    depth[at:] = rng.normal(50, 20, n - at)
    columns = {"queue_depth": depth, **{f"noise_{k}": rng.normal(0, 1, n) for k in range(5)}}
    return Scenario(
        name="variance_shift",
        description=f"queue_depth spread sd 5 -> 20 (same mean) at task {at}",
        matrix=_matrix(columns),
        expected=(expect(PatternKind.PHASE_TRANSITION, "queue_depth"),),
        forbidden=tuple(expect(PatternKind.PHASE_TRANSITION, f"noise_{k}") for k in range(5)),
        acceptable=(_only({"queue_depth"}, PatternKind.OUTLIER, PatternKind.CLUSTERING),),
    )


def bad_host_cluster(seed: int = 0, n: int = 3000, bad_host: str = "host-7") -> Scenario:
    rng = np.random.default_rng(seed)
    hosts = rng.integers(0, 10, n)
    labels = [f"host-{h}" for h in hosts]
    bad = np.array([label == bad_host for label in labels])
    latency = rng.lognormal(np.log(40), 0.15, n)
    cpu = rng.normal(30, 4, n)
    latency[bad] *= 3
    cpu[bad] *= 2
    columns = {
        "latency_ms": latency,
        "cpu_ms": cpu,
        "payload_kb": rng.lognormal(np.log(8), 0.3, n),
        "retries": rng.poisson(0.2, n).astype(float),
    }
    slow = {"latency_ms", "cpu_ms"}
    return Scenario(
        name="bad_host_cluster",
        description=f"{bad_host} (~10% of tasks) answers 3x slower with 2x CPU",
        matrix=_matrix(columns, labels=labels),
        expected=(expect(PatternKind.CLUSTERING, "latency_ms"),),
        forbidden=(expect(PatternKind.PHASE_TRANSITION, "payload_kb"),),
        # A mixture of two populations correlates its defining metrics; tails are real outliers.
        acceptable=(_only(slow, PatternKind.CORRELATION, PatternKind.OUTLIER, PatternKind.CLUSTERING),),
    )


def lagged_dependency(seed: int = 0, n: int = 3000, lag: int = 3) -> Scenario:
    rng = np.random.default_rng(seed)
    gc = rng.gamma(2.0, 2.0, n + lag)
    latency = 20 + 2.0 * gc[:-lag] + rng.normal(0, 1.5, n)
    columns = {
        "gc_pause_ms": gc[lag:],
        "latency_ms": latency,
        **{f"noise_{k}": rng.normal(0, 1, n) for k in range(4)},
    }
    return Scenario(
        name="lagged_dependency",
        description=f"latency_ms follows gc_pause_ms {lag} tasks later",
        matrix=_matrix(columns),
        expected=(expect(PatternKind.LEAD_LAG, "gc_pause_ms", "latency_ms"),),
        acceptable=(_only({"gc_pause_ms", "latency_ms"}, PatternKind.OUTLIER, PatternKind.CORRELATION),),
    )


def nonlinear_dependency(seed: int = 0, n: int = 3000) -> Scenario:
    rng = np.random.default_rng(seed)
    offset = rng.uniform(-3, 3, n)
    columns = {
        "load_offset": offset,
        "cpu_ms": 10 + 4 * offset**2 + rng.normal(0, 1.5, n),
        **{f"noise_{k}": rng.normal(0, 1, n) for k in range(4)},
    }
    return Scenario(
        name="nonlinear_dependency",
        description="cpu_ms = 10 + 4 load_offset^2 + noise: no linear correlation, strong dependence",
        matrix=_matrix(columns),
        expected=(expect(PatternKind.CORRELATION, "load_offset", "cpu_ms"),),
        acceptable=(_only({"load_offset", "cpu_ms"}, PatternKind.OUTLIER, PatternKind.CLUSTERING),),
    )


def pure_noise(seed: int = 0, n: int = 5000, n_metrics: int = 50) -> Scenario:
    rng = np.random.default_rng(seed)
    columns = {}
    for k in range(n_metrics):
        # Mix shapes: Gaussian, heavy-tailed latency-like, counts.
        if k % 3 == 0:
            columns[f"metric_{k:02d}"] = rng.normal(100, 15, n)
        elif k % 3 == 1:
            columns[f"metric_{k:02d}"] = rng.lognormal(3, 0.5, n)
        else:
            columns[f"metric_{k:02d}"] = rng.poisson(20, n).astype(float)
    return Scenario(
        name="pure_noise",
        description=f"{n_metrics} independent stationary metrics: every pattern is spurious",
        matrix=_matrix(columns),
    )


SCENARIOS: dict[str, Callable[..., Scenario]] = {
    "event_stream": event_stream,
    "mean_shift": mean_shift,
    "variance_shift": variance_shift,
    "bad_host_cluster": bad_host_cluster,
    "lagged_dependency": lagged_dependency,
    "nonlinear_dependency": nonlinear_dependency,
    "pure_noise": pure_noise,
}
