"""CrackleMetricReader: each collection of a MeterProvider is one fired task in a kiln.

Every data point (instrument + attribute set) becomes a metric of that task:

- gauges and sums: ``name{attr=value,...}`` = the reported value; for cumulative
  monotonic sums also ``….rate`` = the increase since the previous collection
  (a cumulative counter only grows; its per-interval delta is what moves);
- histograms: ``….count`` and ``….mean`` of the observations made since the
  previous collection (cumulative means barely move once a process has run a while).

Every ``cool_every`` collections, and on ``force_flush``/``shutdown``, the kiln
cools and patterns that are new (or whose description changed) go to the
emitter with group ``"metrics"``: a gauge that shifted, two instruments that
move together. The reader never raises into the SDK: failures are logged and counted.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import replace
from typing import Any, Mapping, Protocol, Sequence

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics import _Gauge as Gauge
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ExponentialHistogram,
    MetricReader,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.metrics.export import Gauge as GaugeData
from opentelemetry.sdk.metrics.export import Histogram as HistogramData

from ..kiln import Kiln
from ..patterns import Pattern
from ..profile import ThermalProfile
from .datapoints import CumulativeReadings, PointKind, add_point
from .emit import INSTRUMENTATION_SCOPE
from .forking import reinit_after_fork
from .reporting import ReportedPatterns

logger = logging.getLogger(__name__)

_CUMULATIVE = AggregationTemporality.CUMULATIVE
_HASH_LENGTH = 8  # hex digits that keep truncated stream names apart


class PatternSink(Protocol):
    """What the reader sends patterns to (PatternEmitter, ConsoleEmitter, or a test double)."""

    def emit(self, patterns: Sequence[Pattern]) -> None: ...

    def force_flush(self, timeout_millis: int = 30_000) -> bool: ...


def stream_name(instrument: str, attributes: Mapping[str, Any] | None, max_length: int = 200) -> str:
    """``instrument{a=1,b=x}`` with attributes sorted; longer names are cut and tagged with a short hash."""
    name = instrument
    if attributes:
        name += "{" + ",".join(f"{key}={_attribute_text(value)}" for key, value in sorted(attributes.items())) + "}"
    if len(name) <= max_length:
        return name
    digest = hashlib.blake2b(name.encode("utf-8", "replace"), digest_size=_HASH_LENGTH // 2).hexdigest()
    return name[: max(1, max_length - _HASH_LENGTH - 1)] + "~" + digest


def _attribute_text(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


class CrackleMetricReader(MetricReader):
    """A MetricReader that looks for patterns across collections and emits them.

    ``export_interval_millis`` > 0 starts a timer thread that collects at that
    interval (like PeriodicExportingMetricReader); 0 means collections happen only
    through ``collect()``/``force_flush()``. ``capacity`` is the number of
    collections the kiln keeps (a sliding window); ``max_streams`` caps the
    distinct data-point streams, further streams are counted in
    ``stats()["streams_overflowed"]``.
    """

    def __init__(
        self,
        *,
        emitter: PatternSink | None = None,
        profile: ThermalProfile | None = None,
        export_interval_millis: float = 10_000,
        cool_every: int = 30,
        capacity: int = 1_000,
        max_streams: int = 128,
        max_name_length: int = 200,
        group: str = "metrics",
        skip_scopes: Sequence[str] = (INSTRUMENTATION_SCOPE,),
    ) -> None:
        if export_interval_millis < 0:
            raise ValueError("export_interval_millis must be >= 0 (0 = collect only when asked)")
        if cool_every < 1:
            raise ValueError("cool_every must be at least 1")
        if max_streams < 1:
            raise ValueError("max_streams must be at least 1")
        if max_name_length < _HASH_LENGTH + 2:
            raise ValueError(f"max_name_length must be at least {_HASH_LENGTH + 2}")
        # Cumulative everywhere: every stream is reported at every collection, so a quiet
        # interval is a 0 delta rather than a missing value.
        super().__init__(
            preferred_temporality={
                instrument: _CUMULATIVE
                for instrument in (
                    Counter,
                    UpDownCounter,
                    Histogram,
                    Gauge,
                    ObservableCounter,
                    ObservableUpDownCounter,
                    ObservableGauge,
                )
            }
        )
        self.emitter = emitter
        self.group = group
        self.cool_every = cool_every
        self.max_streams = max_streams
        self.max_name_length = max_name_length
        self.export_interval_millis = export_interval_millis
        self._skip_scopes = frozenset(skip_scopes)
        # Each stream yields at most two metrics (value + rate, count + mean).
        self._kiln = Kiln(profile, capacity=capacity, max_metrics=2 * max_streams, seal_on_cool=False)
        self._lock = threading.Lock()  # stream state and counters
        self._cool_lock = threading.Lock()  # one cool at a time
        # stream name -> (start_time_unix_nano, cumulative value or (count, sum)) at the previous collection
        self._previous = CumulativeReadings()
        self._streams: set[str] = set()  # admitted streams (at most max_streams)
        self._reported = ReportedPatterns(forget_after_cools=1)
        self._standing: tuple[Pattern, ...] = ()
        self._collections = 0
        self._since_cool = 0
        self._overflowed_points = 0
        self._cools = 0
        self._patterns_detected = 0
        self._patterns_emitted = 0
        self._errors = 0
        self._closed = False
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        if export_interval_millis > 0:
            self._start_timer()
            reinit_after_fork(self._at_fork_reinit)

    # ------------------------------------------------------------------ timer
    def _at_fork_reinit(self) -> None:
        # Only the forking thread survives a fork: locks another thread held stay held and
        # the timer is gone. Fresh locks and a fresh timer, like the SDK's batch processors.
        self._lock = threading.Lock()
        self._cool_lock = threading.Lock()
        self._stop = threading.Event()
        self._start_timer()

    def _start_timer(self) -> None:
        if self._closed:
            return
        self._timer = threading.Thread(target=self._tick, name="CrackleMetricReader", daemon=True)
        self._timer.start()

    def _tick(self) -> None:
        interval_s = self.export_interval_millis / 1000
        while not self._stop.wait(interval_s):
            try:
                self.collect(timeout_millis=max(1_000.0, self.export_interval_millis))
            except Exception:  # e.g. MetricsTimeoutError from a slow callback: try again next tick
                with self._lock:
                    self._errors += 1
                logger.warning("crackle metric reader: collection failed", exc_info=True)

    # ------------------------------------------------------------- collection
    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            if self._closed:
                return
            values, timestamp_s = self._flatten(metrics_data)
            if values:
                self._kiln.record("otel.metrics collection", values, timestamp=timestamp_s)
            with self._lock:
                self._collections += 1
                self._since_cool += 1
                due = self._since_cool >= self.cool_every
            if due:
                self._cool_and_emit()
        except Exception:  # never into the SDK
            with self._lock:
                self._errors += 1
            logger.exception("crackle metric reader: could not record a collection")
        finally:
            detach(token)

    def _flatten(self, metrics_data: MetricsData) -> tuple[dict[str, float], float]:
        """One collection as {metric name: value} and its time (Unix seconds)."""
        values: dict[str, float] = {}
        latest_ns = 0
        seen: set[str] = set()
        with self._lock:
            for resource_metrics in metrics_data.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    if scope_metrics.scope.name in self._skip_scopes:
                        continue  # never analyse crackle's own telemetry
                    for metric in scope_metrics.metrics:
                        data = metric.data
                        for point in data.data_points:
                            name = stream_name(metric.name, point.attributes, self.max_name_length)
                            if name in seen:
                                continue  # same instrument name under two scopes: first one wins
                            if name not in self._streams:
                                if len(self._streams) >= self.max_streams:
                                    self._overflowed_points += 1
                                    continue
                                self._streams.add(name)
                            seen.add(name)
                            latest_ns = max(latest_ns, point.time_unix_nano)
                            self._add_point(values, name, data, point)
        timestamp_s = latest_ns / 1e9 if latest_ns else time.time()
        return values, timestamp_s

    def _add_point(self, values: dict[str, float], name: str, data: Any, point: Any) -> None:
        """Turn one data point into metrics. Caller holds the lock."""
        cumulative = getattr(data, "aggregation_temporality", _CUMULATIVE) == _CUMULATIVE
        if isinstance(data, (HistogramData, ExponentialHistogram)):
            add_point(values, name, PointKind.DISTRIBUTION, cumulative=cumulative, start_ns=point.start_time_unix_nano,
                      readings=self._previous, key=name, count=int(point.count), total=float(point.sum))
        elif isinstance(data, Sum) and data.is_monotonic:
            add_point(values, name, PointKind.MONOTONIC_SUM, cumulative=cumulative,
                      start_ns=point.start_time_unix_nano, readings=self._previous, key=name, value=float(point.value))
        elif isinstance(data, (Sum, GaugeData)):
            values[name] = float(point.value)

    # ---------------------------------------------------------------- cooling
    def _cool_and_emit(self) -> list[Pattern]:
        """Cool the kiln; send the patterns that are new or changed. Returns what was sent."""
        with self._cool_lock:
            with self._lock:
                self._since_cool = 0
            try:
                found = [replace(pattern, group=self.group) for pattern in self._kiln.cool()]
            except Exception:
                with self._lock:
                    self._errors += 1
                logger.exception("crackle metric reader: cool failed")
                return []
            # Only what stands now is remembered (forget after 1 cool): a pattern that goes away and
            # comes back is news; one that stands is news again only when it changes materially.
            fresh, _ = self._reported.select(found, self._cools + 1)
            self._standing = tuple(found)
            with self._lock:
                self._cools += 1
                self._patterns_detected += len(found)
            if fresh and self.emitter is not None:
                try:
                    self.emitter.emit(fresh)
                    with self._lock:
                        self._patterns_emitted += len(fresh)
                except Exception:
                    with self._lock:
                        self._errors += 1
                    logger.exception("crackle metric reader: emitter failed")
            return fresh

    @property
    def standing_patterns(self) -> tuple[Pattern, ...]:
        """The patterns found by the last cool (emitted or not)."""
        return self._standing

    @property
    def kiln(self) -> Kiln:
        return self._kiln

    # -------------------------------------------------------------- lifecycle
    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Collect now, cool, send new patterns and flush the emitter."""
        deadline = time.monotonic() + timeout_millis / 1000
        ok = True
        try:
            super().force_flush(timeout_millis=timeout_millis)
        except Exception:
            ok = False
            with self._lock:
                self._errors += 1
            logger.warning("crackle metric reader: collection on flush failed", exc_info=True)
        if self._closed:
            return False
        self._cool_and_emit()
        return self._flush_emitter(deadline) and ok

    def _flush_emitter(self, deadline: float) -> bool:
        if self.emitter is None:
            return True
        try:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            return bool(self.emitter.force_flush(remaining_ms))
        except Exception:
            with self._lock:
                self._errors += 1
            logger.exception("crackle metric reader: emitter flush failed")
            return False

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Stop the timer, take a last collection, cool, send what is new. The emitter is not shut down."""
        if self._closed:
            return
        deadline = time.monotonic() + timeout_millis / 1000
        self._stop.set()
        timer = self._timer
        if timer is not None and timer is not threading.current_thread():
            timer.join(max(0.0, deadline - time.monotonic()))
        try:
            self.collect(timeout_millis=max(0.0, (deadline - time.monotonic()) * 1000))
        except Exception:
            with self._lock:
                self._errors += 1
            logger.warning("crackle metric reader: last collection failed", exc_info=True)
        self._closed = True
        self._cool_and_emit()
        self._flush_emitter(deadline)

    def stats(self) -> dict[str, int]:
        """Counters: collections, streams (and points over the stream cap), cools, patterns, errors."""
        kiln = self._kiln.stats()
        with self._lock:
            return {
                "collections": self._collections,
                "streams": len(self._streams),
                "streams_overflowed": self._overflowed_points,
                "collections_dropped": kiln.dropped,
                "cools": self._cools,
                "patterns_detected": self._patterns_detected,
                "patterns_emitted": self._patterns_emitted,
                "errors": self._errors,
            }
