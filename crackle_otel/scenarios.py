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
    """A pattern of ``kind`` (or one of ``alternatives``) whose metrics include every name in ``metrics``.

    With ``key``, only the pattern of that key (e.g. ``attribution:host.name=db-7``) matches.
    """

    kind: PatternKind
    metrics: frozenset[str]
    alternatives: frozenset[PatternKind] = frozenset()
    key: str = ""

    def matches(self, pattern: Pattern) -> bool:
        return ((pattern.kind is self.kind or pattern.kind in self.alternatives)
                and self.metrics <= set(pattern.metrics) and (not self.key or pattern.key == self.key))

    def __str__(self) -> str:
        kinds = " or ".join(str(kind) for kind in (self.kind, *sorted(self.alternatives, key=str)))
        return f"{kinds} on {', '.join(sorted(self.metrics))}" + (f" ({self.key})" if self.key else "")


def expect(kind: PatternKind, *metrics: str) -> Expectation:
    return Expectation(kind, frozenset(metrics))


def expect_slow_subset(*metrics: str) -> Expectation:
    """A cluster on ``metrics``, or the attribution that names its attribute value and absorbed it."""
    return Expectation(PatternKind.CLUSTERING, frozenset(metrics), frozenset({PatternKind.ATTRIBUTION}))


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
    n = len(next(iter(columns.values())))
    return MetricMatrix.from_columns(columns, labels=labels, start=START_TIME, interval_s=interval_s,
                                     identities=[(0x5EED0000 + i, 0xC0FFEE00 + i) for i in range(n)])


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


def _shift_beside_noise(name: str, description: str, metric: str, values: np.ndarray,
                        rng: np.random.Generator, n_noise: int) -> Scenario:
    """One metric changes phase beside independent noise metrics that must stay quiet."""
    noise = [f"noise_{k}" for k in range(n_noise)]
    columns = {metric: values, **{name_: rng.normal(0, 1, values.size) for name_ in noise}}
    return Scenario(
        name=name,
        description=description,
        matrix=_matrix(columns),
        expected=(expect(PatternKind.PHASE_TRANSITION, metric),),
        forbidden=tuple(expect(PatternKind.PHASE_TRANSITION, n) for n in noise),
        # Either side of a shift can look like a group or hold tail values.
        acceptable=(_only({metric}, PatternKind.CLUSTERING, PatternKind.OUTLIER),),
    )


def mean_shift(seed: int = 0, n: int = 2000, at: int = 1200) -> Scenario:
    rng = np.random.default_rng(seed)
    latency = rng.normal(100, 10, n)
    latency[at:] += 30
    return _shift_beside_noise("mean_shift", f"latency_ms mean 100 -> 130 ms (sd 10) at task {at}; 5 noise metrics",
                               "latency_ms", latency, rng, 5)


def variance_shift(seed: int = 0, n: int = 2000, at: int = 1000) -> Scenario:
    rng = np.random.default_rng(seed)
    depth = rng.normal(50, 5, n)
    depth[at:] = rng.normal(50, 20, n - at)
    return _shift_beside_noise("variance_shift", f"queue_depth spread sd 5 -> 20 (same mean) at task {at}",
                               "queue_depth", depth, rng, 5)


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
        expected=(expect_slow_subset("latency_ms"),),
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


def noise_columns(rng: np.random.Generator, n: int, n_metrics: int, count_mean: float = 20) -> dict[str, np.ndarray]:
    """Independent stationary metrics of mixed shapes: Gaussian, heavy-tailed latency-like, counts."""
    columns = {}
    for k in range(n_metrics):
        if k % 3 == 0:
            columns[f"metric_{k:02d}"] = rng.normal(100, 15, n)
        elif k % 3 == 1:
            columns[f"metric_{k:02d}"] = rng.lognormal(3, 0.5, n)
        else:
            columns[f"metric_{k:02d}"] = rng.poisson(count_mean, n).astype(float)
    return columns


def pure_noise(seed: int = 0, n: int = 5000, n_metrics: int = 50) -> Scenario:
    columns = noise_columns(np.random.default_rng(seed), n, n_metrics)
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


# ------------------------------------------------ realistic OTel span groups
# One group ("shop | GET /checkout") as the span processor extracts it: duration_ms,
# is_error, event_count, link_count and the span's numeric attributes as metrics;
# host.name and other strings as descriptive attributes; the span name as label.
CHECKOUT_HOSTS = tuple(f"shop-{k}" for k in range(8))
CHECKOUT_SPAN = "GET /checkout"


def _span_matrix(columns: dict[str, np.ndarray], attributes: list[dict[str, str]], interval_s: float) -> MetricMatrix:
    n = len(attributes)
    return MetricMatrix.from_columns(
        columns,
        labels=[CHECKOUT_SPAN] * n,
        start=START_TIME,
        interval_s=interval_s,
        identities=[(0x5EED0000 + i, 0xC0FFEE00 + i) for i in range(n)],
        attributes=attributes,
    )


def _checkout_columns(rng: np.random.Generator, n: int, db_factor, app_factor) -> dict[str, np.ndarray]:
    """Checkout spans: database time plus application time (which grows a little with the cart)."""
    items = rng.integers(1, 9, n).astype(float)  # uniform 1..8: a discrete metric with no groups in it
    failed = rng.random(n) < 0.02
    db_ms = rng.lognormal(np.log(12), 0.25, n) * db_factor
    app_ms = (rng.lognormal(np.log(18), 0.25, n) + 0.8 * items) * app_factor
    return {
        "duration_ms": db_ms + app_ms,
        "db.time_ms": db_ms,
        "cart.items": items,
        # One clump of sizes per item count (the valleys between clumps are no groups either).
        "http.request.body.size": np.round(350 + 180 * items + rng.normal(0, 12, n)),
        "http.response.status_code": np.where(failed, 500.0, 200.0),
        "is_error": failed.astype(float),
        "event_count": failed.astype(float),  # an error records its exception as a span event
        "link_count": np.zeros(n),
    }


def checkout_spans(seed: int = 0, n: int = 2000, slow_host: str = "shop-7") -> Scenario:
    rng = np.random.default_rng(seed)
    hosts = rng.integers(0, len(CHECKOUT_HOSTS), n)
    slow = hosts == CHECKOUT_HOSTS.index(slow_host)
    # The slow host's database answers 3x slower and its application work takes 2x longer.
    columns = _checkout_columns(rng, n, db_factor=np.where(slow, 3.0, 1.0), app_factor=np.where(slow, 2.0, 1.0))
    attributes = [{"host.name": CHECKOUT_HOSTS[h], "http.route": "/checkout"} for h in hosts]
    slow_metrics = {"duration_ms", "db.time_ms"}
    flags = {"http.response.status_code", "is_error", "event_count"}
    return Scenario(
        name="checkout_spans",
        description=f"OTel checkout spans: {slow_host} (12.5%) has 3x db time, ~2.4x duration; "
        "cart.items uniform 1..8, 2% errors (status 500)",
        matrix=_span_matrix(columns, attributes, interval_s=0.05),
        expected=(expect_slow_subset("db.time_ms"),),
        forbidden=(
            # Discrete metrics have gaps between their values, never groups of their own here.
            expect(PatternKind.CLUSTERING, "cart.items"),
            expect(PatternKind.CLUSTERING, "http.request.body.size"),
            *(expect(PatternKind.CLUSTERING, name) for name in flags),
            *(expect(PatternKind.PHASE_TRANSITION, name) for name in columns),
        ),
        acceptable=(
            # The slow host's tail on its defining metrics; the mixture correlates them.
            _only(slow_metrics, PatternKind.CLUSTERING, PatternKind.OUTLIER, PatternKind.CORRELATION),
            # Real dependencies: duration grows with the cart; errors, status 500 and events are one fact.
            _only(slow_metrics | {"cart.items", "http.request.body.size"}, PatternKind.CORRELATION, PatternKind.CONSERVATION),
            _only(flags, PatternKind.CORRELATION, PatternKind.CONSERVATION),
        ),
    )


def deploy_shift(seed: int = 0, n: int = 2000) -> Scenario:
    rng = np.random.default_rng(seed)
    at = n // 2
    after = np.arange(n) >= at
    # A deploy makes the application code 1.8x slower halfway; the database is untouched.
    columns = _checkout_columns(rng, n, db_factor=1.0, app_factor=1.0)
    columns["duration_ms"] = columns["duration_ms"] * np.where(after, 1.8, 1.0)
    del columns["db.time_ms"]  # nothing but the duration moves
    hosts = rng.integers(0, len(CHECKOUT_HOSTS), n)
    attributes = [
        {"host.name": CHECKOUT_HOSTS[h], "http.route": "/checkout", "service.version": "1.5.0" if late else "1.4.2"}
        for h, late in zip(hosts, after)
    ]
    flags = {"http.response.status_code", "is_error", "event_count"}
    return Scenario(
        name="deploy_shift",
        description=f"OTel checkout spans: duration_ms 1.8x slower from task {at} (a deploy), nothing else changes",
        matrix=_span_matrix(columns, attributes, interval_s=0.05),
        # The new version's spans are slower than the old one's: an attribution as well as a transition.
        expected=(expect(PatternKind.PHASE_TRANSITION, "duration_ms"), expect(PatternKind.ATTRIBUTION, "duration_ms")),
        forbidden=(
            expect(PatternKind.CLUSTERING),  # the halves of a time shift are a phase transition, not clusters
            *(expect(PatternKind.PHASE_TRANSITION, name) for name in columns if name != "duration_ms"),
        ),
        acceptable=(
            _only({"duration_ms"}, PatternKind.OUTLIER),
            _only({"duration_ms", "cart.items", "http.request.body.size"}, PatternKind.CORRELATION, PatternKind.CONSERVATION),
            _only(flags, PatternKind.CORRELATION, PatternKind.CONSERVATION),
        ),
    )


def slow_host_during_shift(seed: int = 0, n: int = 3000, slow_host: str = "shop-7") -> Scenario:
    rng = np.random.default_rng(seed)
    hosts = rng.integers(0, len(CHECKOUT_HOSTS), n)
    slow = hosts == CHECKOUT_HOSTS.index(slow_host)
    # Halfway the connection pool runs dry: every host waits ~6x longer for a connection and its
    # database time grows 2.2x. The slow host stays 3x slower than its peers throughout.
    exhausted = np.arange(n) >= n // 2
    db_factor = np.where(slow, 3.0, 1.0) * np.where(exhausted, 2.2, 1.0)
    columns = _checkout_columns(rng, n, db_factor=db_factor, app_factor=np.where(slow, 2.0, 1.0))
    columns["db.pool.wait_ms"] = rng.lognormal(np.log(0.5), 0.3, n) * np.where(exhausted, 6.0, 1.0)
    attributes = [{"host.name": CHECKOUT_HOSTS[h], "http.route": "/checkout"} for h in hosts]
    moving = {"duration_ms", "db.time_ms", "db.pool.wait_ms"}
    flags = {"http.response.status_code", "is_error", "event_count"}
    return Scenario(
        name="slow_host_during_shift",
        description=f"OTel checkout spans: {slow_host} (12.5%) 3x db time throughout; from task {n // 2} "
        "every host waits 6x longer for a db connection and db time grows 2.2x",
        matrix=_span_matrix(columns, attributes, interval_s=0.05),
        expected=(
            expect_slow_subset("db.time_ms"),
            expect(PatternKind.PHASE_TRANSITION, "db.pool.wait_ms"),  # (db.time_ms's shift is blurred by the slow host)
        ),
        forbidden=(
            # The halves of the shift are a phase transition: a "cluster" of the late tasks
            # would be set apart by the pool wait, which the slow host does not change.
            expect(PatternKind.CLUSTERING, "db.pool.wait_ms"),
            expect(PatternKind.CLUSTERING, "cart.items"),
            expect(PatternKind.CLUSTERING, "http.request.body.size"),
            *(expect(PatternKind.CLUSTERING, name) for name in flags),
            *(expect(PatternKind.PHASE_TRANSITION, name) for name in ("cart.items", "http.request.body.size", *flags)),
        ),
        acceptable=(
            _only(moving, PatternKind.CLUSTERING, PatternKind.OUTLIER, PatternKind.CORRELATION,
                  PatternKind.LEAD_LAG, PatternKind.PHASE_TRANSITION),
            _only(moving | {"cart.items", "http.request.body.size"}, PatternKind.CORRELATION, PatternKind.CONSERVATION),
            _only(flags, PatternKind.CORRELATION, PatternKind.CONSERVATION),
        ),
    )


SCENARIOS["checkout_spans"] = checkout_spans
SCENARIOS["deploy_shift"] = deploy_shift
SCENARIOS["slow_host_during_shift"] = slow_host_during_shift


# ---------------------------------------------------------------- hard suite
# Effects near the default thresholds, missing values and small samples: recall below 1
# here is expected and honest. Tests hold the standard suite to every finding; the
# quality benchmark reports both.

def subtle_shift(seed: int = 0, n: int = 600, at: int = 300) -> Scenario:
    """A d = 1.0 latency shift in heavy-tailed noise, beside 10 noise metrics."""
    rng = np.random.default_rng(seed)
    latency = rng.lognormal(np.log(50), 0.3, n)
    latency[at:] *= 1.35  # ~ one spread on the log scale
    return _shift_beside_noise("subtle_shift", f"latency_ms x1.35 (about one spread) at task {at} of {n}, lognormal noise",
                               "latency_ms", latency, rng, 10)


def sparse_flow(seed: int = 0, n: int = 1500, missing: float = 0.3) -> Scenario:
    """The records law and its violation when 30% of tasks don't report the flow metrics at all."""
    rng = np.random.default_rng(seed)
    records_in = np.round(rng.normal(1000, 30, n))
    errors = rng.poisson(3, n).astype(float)
    lost = np.zeros(n)
    lost[1100:] = np.round(np.linspace(5, 200, n - 1100))
    records_out = records_in - errors - lost
    absent = rng.random(n) < missing
    for column in (records_in, errors, records_out):
        column[absent] = np.nan
    latency = rng.lognormal(np.log(30), 0.2, n)
    latency[rng.random(n) < missing] = np.nan
    flow = {"records_in", "records_out", "errors"}
    return Scenario(
        name="sparse_flow",
        description=f"records_in - records_out - errors = 0 until task 1100; {missing:.0%} of tasks lack the flow metrics",
        matrix=_matrix({"records_in": records_in, "records_out": records_out, "errors": errors, "latency_ms": latency}),
        expected=(expect(PatternKind.CONSERVATION, *flow), expect(PatternKind.CONSERVATION_VIOLATION, *flow)),
        acceptable=(_only(flow, PatternKind.PHASE_TRANSITION, PatternKind.CORRELATION, PatternKind.OUTLIER),),
    )


def small_event_stream(seed: int = 0) -> Scenario:
    """The review's event stream cut to every 8th event: 125 tasks, the same three phases."""
    full = event_stream(seed)
    keep = np.arange(0, full.matrix.n_tasks, 8)
    m = full.matrix
    matrix = MetricMatrix(values=m.values[keep], metric_names=m.metric_names, labels=tuple(m.labels[i] for i in keep),
                          timestamps=m.timestamps[keep], identities=tuple(m.identities[i] for i in keep))
    return Scenario(name="small_event_stream", description="the review's event stream with 125 tasks",
                    matrix=matrix, expected=full.expected, forbidden=full.forbidden, acceptable=full.acceptable)


def weak_correlation(seed: int = 0, n: int = 400) -> Scenario:
    """r ~ 0.45 between two of 20 metrics: real, but below the default |r| threshold of 0.5."""
    rng = np.random.default_rng(seed)
    queue = rng.normal(0, 1, n)
    columns = {"queue_depth": queue, "wait_ms": 0.5 * queue + rng.normal(0, 1, n),
               **{f"noise_{k}": rng.normal(0, 1, n) for k in range(18)}}
    return Scenario(
        name="weak_correlation",
        description="wait_ms = 0.5 queue_depth + noise (r ~ 0.45), n=400, 18 noise metrics",
        matrix=_matrix(columns),
        expected=(expect(PatternKind.CORRELATION, "queue_depth", "wait_ms"),),
    )


HARD_SCENARIOS: dict[str, Callable[..., Scenario]] = {
    "subtle_shift": subtle_shift,
    "sparse_flow": sparse_flow,
    "small_event_stream": small_event_stream,
    "weak_correlation": weak_correlation,
}
