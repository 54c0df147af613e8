"""The kiln: a bounded, columnar, thread-safe buffer of fired tasks, and its cool.

Storage is a ring buffer of ``capacity`` rows over a float64 matrix with one
column per metric name (NaN where a task lacks the metric). When full, the
oldest task is overwritten and counted in ``stats().dropped``. ``record`` is the
path for data fired elsewhere (spans, OTLP): it never raises on bad values, it
skips them and counts them.
"""

from __future__ import annotations

import logging
import math
import struct
import threading
import time
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Callable, Collection, Hashable, Iterable, Mapping

import numpy as np

from . import information
from .attributes import AttributeStore
from .detect import run_detectors
from .errors import InvalidMetricError, KilnCooledError
from .matrix import MetricMatrix
from .patterns import Pattern
from .profile import ThermalProfile
from .task import CrackleTask, FiredTask, MetricInput, TaskOutput, _metric_items, coerce_metric, task_label

logger = logging.getLogger(__name__)

_INITIAL_COLUMNS = 4
# Rows are allocated as they fill, doubling up to ``capacity``: a quiet group (most of a real system's
# hundreds) holds what it buffered, not a full window.
_INITIAL_ROWS = 64
_MAX_WARNED_NAMES = 256  # bounded memory for "already warned about this metric"
_PLAIN_NUMBER_TYPES = frozenset({float, int, bool})
_all_plain_types = _PLAIN_NUMBER_TYPES.issuperset  # bound once: the span path calls it per task
_fsum = math.fsum
_MAX_ROW_LAYOUTS = 256  # bounded memory for "where do these metric names go in a row"
#: A task fired elsewhere, as ``Kiln.record_many`` takes it: (label, metrics, timestamp, identity, attributes, failures).
RecordedTask = tuple[str, MetricInput, float, "Hashable | None", "Mapping[str, str] | None", int]


@dataclass(frozen=True)
class KilnStats:
    recorded: int  # tasks accepted since creation (or reset)
    dropped: int  # oldest tasks overwritten because the kiln was full
    buffered: int  # tasks held now
    rejected_values: int  # metric values skipped: NaN, inf, non-numeric
    rejected_metric_names: int  # values skipped because the kiln already holds max_metrics names
    cool_hook_errors: int  # task.cool() hooks that raised (their metrics skipped, task kept)
    detector_errors: int  # detectors that raised during a cool (their patterns missing, others kept)
    metrics: int  # distinct metric names held
    cools: int
    rejected_attribute_names: int = 0  # attribute values skipped: the kiln already holds 32 attribute names
    attribute_values_not_kept: int = 0  # values of high-cardinality attributes (ids, user names), not kept


@dataclass(frozen=True)
class _RowLayout:
    """Where the values of one sequence of metric names go in a row of one matrix.

    The whole row is written with one ``struct`` call into ``buffer`` (the matrix's
    bytes) rather than a NaN fill and a fancy-indexed numpy assignment (~0.5 us less).
    When the names are the row's first columns, in order (the usual case: they made
    the columns), the values are followed by ``tail`` (NaNs); otherwise ``gather``
    turns (*values, nan) into the row in column order.
    """

    buffer: memoryview
    row_bytes: int
    pack: Callable[..., None]
    tail: tuple[float, ...]
    gather: Callable[[tuple], tuple] | None


class Kiln:
    """Fire tasks (or record data fired elsewhere), then ``cool()`` to find patterns.

    ``seal_on_cool=True`` (the crate's behaviour): after a cool the kiln refuses
    new tasks with ``KilnCooledError`` until ``reset()``. ``False`` makes it a
    sliding window for streams: each cool sees the latest ``capacity`` tasks.
    """

    def __init__(
        self,
        profile: ThermalProfile | None = None,
        *,
        capacity: int = 100_000,
        max_metrics: int = 256,
        seal_on_cool: bool = True,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if max_metrics < 1:
            raise ValueError("max_metrics must be at least 1")
        self.profile = profile or ThermalProfile.default()
        self.capacity = capacity
        self.max_metrics = max_metrics
        self.seal_on_cool = seal_on_cool
        self._lock = threading.Lock()
        self._allocate()

    # ----------------------------------------------------------------- storage
    def _allocate(self) -> None:
        width = min(_INITIAL_COLUMNS, self.max_metrics)
        rows = self._rows = min(_INITIAL_ROWS, self.capacity)
        self._values = np.full((rows, width), np.nan)
        self._timestamps = np.zeros(rows)
        # Rows written before the last full cool are cooled (at that time): a watermark, not a column
        # written per row (a numpy store per task on the span path).
        self._cooled_total = 0  # ``_total`` at the last full cool
        self._cooled_time = math.nan
        self._labels: list[str] = [""] * rows
        self._identities: list[Hashable | None] = [None] * rows
        self._attributes = AttributeStore(self.capacity, rows=rows)  # dictionary-encoded: ~2 bytes per value
        self._failures = bytearray(rows)  # Failure bits per task (crackle_otel.failures)
        self._has_failures = False
        # (task, output, metadata) for tasks fired here; None for recorded data.
        self._extras: list[tuple[Any, Any, Mapping[str, Any]] | None] = [None] * rows
        self._columns: dict[str, int] = {}
        self._layouts: dict[tuple[str, ...], _RowLayout] = {}  # they point into this matrix
        self._total = 0  # rows ever written; next slot = _total % capacity
        self._dropped = 0
        self._rejected_values = 0
        self._rejected_names = 0
        self._cool_hook_errors = 0
        self._detector_errors = 0
        self._cools = 0
        self._warned: set[str] = set()
        self._sealed = False
        self.last_detector_errors: dict[str, str] = {}

    def _grow_rows(self) -> None:
        """Double the rows (the allocated ones are full, the window is not); called before a write."""
        rows = self._rows
        grown_rows = min(self.capacity, 2 * rows)
        more = grown_rows - rows
        values = np.full((grown_rows, self._values.shape[1]), np.nan)
        values[:rows] = self._values
        self._values = values
        self._timestamps = np.concatenate([self._timestamps, np.zeros(more)])
        self._labels.extend([""] * more)
        self._identities.extend([None] * more)
        self._extras.extend([None] * more)
        self._failures.extend(bytes(more))
        self._attributes.grow(grown_rows)
        self._layouts = {}  # they point into the old matrix
        self._rows = grown_rows

    def _column_for(self, name: str) -> int | None:
        column = self._columns.get(name)
        if column is not None:
            return column
        if len(self._columns) >= self.max_metrics:
            return None
        column = len(self._columns)
        if column >= self._values.shape[1]:
            width = min(self.max_metrics, self._values.shape[1] * 2)
            grown = np.full((self._rows, width), np.nan)
            grown[:, : self._values.shape[1]] = self._values
            self._values = grown
            self._layouts = {}  # they point into the old matrix
        self._columns[name] = column
        return column

    def _warn_once(self, name: str, message: str) -> None:
        if name not in self._warned and len(self._warned) < _MAX_WARNED_NAMES:
            self._warned.add(name)
            logger.warning("crackle kiln: %s (further problems with this metric are only counted)", message)

    def _write(
        self,
        label: str,
        metrics: Iterable[tuple[str, float]],
        timestamp: float,
        identity: Hashable | None,
        extra: tuple[Any, Any, Mapping[str, Any]] | None,
        attributes: Mapping[str, str] | None = None,
        failures: int = 0,
    ) -> bool:
        """Store one row of finite floats, skipping (and counting) names beyond ``max_metrics``.

        False (nothing stored) when no metric got a column and the task was not fired here. Caller holds the lock.
        """
        if self._sealed:
            raise KilnCooledError("the kiln was cooled; call reset() before firing into it again")
        kept: dict[str, float] = {}
        lookup = self._columns.get
        for name, value in metrics:
            if lookup(name) is None and self._column_for(name) is None:
                self._rejected_names += 1
                self._warn_once(name, f"metric {name!r} skipped: the kiln already holds {self.max_metrics} metric names")
                continue
            kept[name] = value  # a repeated name: its last value, as a row assignment would keep
        if not kept and extra is None:  # a recorded task with no metric left is no task
            return False
        return self._write_row(label, kept, timestamp, identity, extra, attributes, failures)

    def _write_row(
        self,
        label: str,
        metrics: dict[str, float | int | bool],
        timestamp: float,
        identity: Hashable | None,
        extra: tuple[Any, Any, Mapping[str, Any]] | None,
        attributes: Mapping[str, str] | None,
        failures: int,
    ) -> bool:
        """Store one row of finite plain numbers through a cached row layout; the ring buffer's accounting.

        False (nothing stored) when a name gets no column: ``_write`` then stores the rest and counts it.
        Caller holds the lock. The one place a row is written (fired tasks, checked values and spans).
        """
        if self._sealed:
            raise KilnCooledError("the kiln was cooled; call reset() before firing into it again")
        total = self._total
        if total == self._rows < self.capacity:
            self._grow_rows()
        names = tuple(metrics)
        layout = self._layouts.get(names)
        if layout is None:
            layout = self._layout_for(names)
            if layout is None:
                return False
        slot = total % self.capacity
        if layout.gather is None:
            layout.pack(layout.buffer, slot * layout.row_bytes, *metrics.values(), *layout.tail)
        else:
            layout.pack(layout.buffer, slot * layout.row_bytes, *layout.gather((*metrics.values(), math.nan)))
        if total >= self.capacity:
            self._dropped += 1
        self._timestamps[slot] = timestamp
        self._labels[slot] = label
        self._identities[slot] = identity
        self._attributes.write(slot, attributes)
        if failures or self._has_failures:
            self._failures[slot] = failures & 0xFF
            self._has_failures = True
        self._extras[slot] = extra
        self._total = total + 1
        return True

    def _layout_for(self, names: tuple[str, ...]) -> _RowLayout | None:
        columns = []
        for name in names:
            column = self._column_for(name)  # may grow the matrix (and drop the layouts)
            if column is None:
                return None
            columns.append(column)
        width = self._values.shape[1]
        gather: Callable[[tuple], tuple] | None = None
        tail = (math.nan,) * (width - len(names))
        if columns != list(range(len(columns))):
            position_of = {column: position for position, column in enumerate(columns)}
            missing = len(names)  # the position of the NaN after the values
            positions = [position_of.get(column, missing) for column in range(width)]
            tail = ()
            if width == 1:
                gather = lambda padded, position=positions[0]: (padded[position],)  # noqa: E731
            else:
                gather = itemgetter(*positions)
        if len(self._layouts) >= _MAX_ROW_LAYOUTS:
            self._layouts.clear()
        layout = self._layouts[names] = _RowLayout(
            memoryview(self._values).cast("B"), width * 8, struct.Struct(f"{width}d").pack_into, tail, gather
        )
        return layout

    # ------------------------------------------------------------------ firing
    def fire_and_record(self, task: CrackleTask, *, metadata: Mapping[str, Any] | None = None) -> FiredTask:
        """Fire ``task`` and keep its output. Raises KilnCooledError on a cooled kiln."""
        if self._sealed:
            raise KilnCooledError("the kiln was cooled; call reset() before firing into it again")
        output = task.fire()
        if not isinstance(output, TaskOutput):
            raise TypeError(f"{type(task).__name__}.fire() must return a TaskOutput, got {type(output).__name__}")
        label = task_label(task)
        fired_at = time.time()
        # String metadata doubles as descriptive attributes, so patterns can say which values set tasks apart.
        attributes = {k: v for k, v in (metadata or {}).items() if isinstance(v, str)} or None
        with self._lock:
            self._write(label, output.metrics.items(), fired_at, None, (task, output, dict(metadata or {})), attributes)
        return FiredTask(label, output.metrics, fired_at, value=output.value, metadata=dict(metadata or {}))

    def fire_all(self, tasks: Iterable[CrackleTask]) -> list[FiredTask]:
        """Fire every task in order; returns what each recorded."""
        return [self.fire_and_record(task) for task in tasks]

    def record(
        self,
        label: str,
        metrics: MetricInput,
        *,
        timestamp: float | None = None,
        identity: Hashable | None = None,
        attributes: Mapping[str, str] | None = None,
        failures: int = 0,
    ) -> bool:
        """Keep metrics of a task fired elsewhere (a span, an OTLP record).

        Values that are not finite numbers are skipped, counted and logged once
        per metric name; the rest of the task is kept. Returns False only when
        no metric survived (the task is then not stored). ``attributes`` are
        descriptive strings (host, route ...) that patterns use to explain why
        tasks stand apart; they are not analysed as metrics. ``failures``: how the
        task failed (``crackle_otel.failures.Failure`` bits: error status,
        exception, HTTP 5xx/4xx, gRPC error), for failure rates. Thread-safe.
        """
        return self.record_task(
            (label, metrics, time.time() if timestamp is None else timestamp, identity, attributes, failures)
        )

    def record_many(self, tasks: Iterable[RecordedTask]) -> list[bool]:
        """``record_task`` each task in order: whether each was kept.

        One hold of the lock for all of them: a cool's ``take_window`` waits for the batch (the furnace
        records a request's tasks of one group at once, a few dozen to a few hundred; ~10 us each).
        """
        with self._lock:
            record = self._record_locked
            return [record(task) for task in tasks]

    def record_task(self, task: RecordedTask) -> bool:
        """``record`` of one ``(label, metrics, timestamp, identity, attributes, failures)``, positional (the span path)."""
        with self._lock:
            return self._record_locked(task)

    def _record_locked(self, task: RecordedTask) -> bool:
        """``record_task``'s work; caller holds the lock."""
        label, metrics, timestamp, identity, attributes, failures = task
        if type(metrics) is dict and metrics and _all_plain_types(map(type, metrics.values())):
            # The common case (spans): plain numbers. fsum raises on an int beyond float range and on
            # inf - inf, and its result is finite only when every value is, so one C call checks them all.
            try:
                total = _fsum(metrics.values())
            except (OverflowError, ValueError):
                total = math.nan
            # str() and float() only where needed: a builtin call each per task otherwise.
            if total - total == 0.0 and self._write_row(label if type(label) is str else str(label), metrics,
                                                        timestamp if type(timestamp) is float else float(timestamp),
                                                        identity, None, attributes, failures):
                return True
            # Else some value (or name) is bad: the general path below finds, skips and counts it.
        return self._write_checked(label, metrics, timestamp, identity, attributes, failures)

    def _write_checked(self, label: Any, metrics: MetricInput, timestamp: Any, identity: Hashable | None,
                       attributes: Mapping[str, str] | None, failures: int) -> bool:
        """``record``'s general path: values that are not finite numbers skipped and counted. Caller holds the lock."""
        clean: list[tuple[str, float]] = []
        rejected: list[tuple[str, str]] = []
        for name, raw in _metric_items(metrics):
            kind = type(raw)
            # Fast path for plain floats and ints: x - x is 0.0 only when x is finite.
            if kind is float or kind is int:
                try:
                    value = float(raw)
                except OverflowError:
                    value = math.inf
                if value - value == 0.0:
                    clean.append((name, value))
                    continue
            try:
                clean.append((name, coerce_metric(name, raw)))
            except InvalidMetricError as exc:
                rejected.append((str(name), str(exc)))
        for name, message in rejected:
            self._rejected_values += 1
            self._warn_once(name, message)
        if not clean:
            return False
        return self._write(str(label), clean, float(timestamp), identity, None, attributes, failures)

    # ----------------------------------------------------------------- reading
    def _ordered_slots(self) -> np.ndarray:
        """Slots of the buffered tasks, oldest first by timestamp (stable for ties)."""
        size = min(self._total, self.capacity)
        start = self._total % self.capacity if self._total > self.capacity else 0
        slots = (start + np.arange(size)) % self.capacity
        order = np.argsort(self._timestamps[slots], kind="stable")
        return slots[order]

    def _serials(self, slots: np.ndarray) -> np.ndarray:
        """Which row ever written (0, 1, ... ``_total`` - 1) each buffered slot holds."""
        first = self._total - min(self._total, self.capacity)  # the oldest buffered row
        return first + (slots - first) % self.capacity

    def snapshot(self) -> MetricMatrix:
        """A copy of the buffered tasks as a MetricMatrix (time order, used columns only)."""
        with self._lock:
            return self._snapshot_locked()

    def _snapshot_locked(self) -> MetricMatrix:
        slots = self._ordered_slots()
        width = len(self._columns)
        return MetricMatrix(
            values=self._values[slots, :width].copy(),
            metric_names=tuple(self._columns),
            labels=tuple(self._labels[s] for s in slots),
            timestamps=self._timestamps[slots].copy(),
            identities=tuple(self._identities[s] for s in slots),
            attributes=self._attributes.table(slots) if self._attributes.has_attributes else (),
            failures=np.frombuffer(self._failures, dtype=np.uint8)[slots].copy() if self._has_failures else None,
            # A sliding window is a stream: what earlier cools saw is not news. A sealed kiln is a batch.
            fresh=None if self.seal_on_cool else self._serials(slots) >= self._cooled_total,
        )

    def tasks(self) -> list[FiredTask]:
        """The buffered tasks, oldest first."""
        with self._lock:
            slots = self._ordered_slots()
            names = list(self._columns)
            result = []
            for s, cooled in zip(slots, (self._serials(slots) < self._cooled_total).tolist()):
                row = self._values[s, : len(names)]
                metrics = {names[j]: float(row[j]) for j in np.flatnonzero(np.isfinite(row))}
                extra = self._extras[s]
                result.append(
                    FiredTask(
                        label=self._labels[s],
                        metrics=metrics,
                        fired_at=float(self._timestamps[s]),
                        cooled_at=self._cooled_time if cooled else None,
                        value=extra[1].value if extra else None,
                        identity=self._identities[s],
                        metadata=extra[2] if extra else self._attributes.row(s),
                    )
                )
            return result

    def __len__(self) -> int:
        return min(self._total, self.capacity)

    @property
    def is_cooled(self) -> bool:
        return self._sealed

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(self._columns)

    def stats(self) -> KilnStats:
        with self._lock:
            return KilnStats(
                recorded=self._total,
                dropped=self._dropped,
                buffered=min(self._total, self.capacity),
                rejected_values=self._rejected_values,
                rejected_metric_names=self._rejected_names,
                cool_hook_errors=self._cool_hook_errors,
                detector_errors=self._detector_errors,
                metrics=len(self._columns),
                cools=self._cools,
                rejected_attribute_names=self._attributes.keys_rejected,
                attribute_values_not_kept=self._attributes.values_not_kept,
            )

    # ----------------------------------------------------------------- cooling
    def _run_cool_hooks(self) -> None:
        """Give fired tasks with a ``cool(output, all_metrics)`` hook their say. Caller holds the lock."""
        slots = [s for s in self._ordered_slots() if self._extras[s] and hasattr(self._extras[s][0], "cool")]
        if not slots:
            return
        names = list(self._columns)
        all_metrics = []
        for s in self._ordered_slots():
            row = self._values[s, : len(names)]
            all_metrics.append((self._labels[s], {names[j]: float(row[j]) for j in np.flatnonzero(np.isfinite(row))}))
        for s in slots:
            task, output, _ = self._extras[s]
            try:
                added = task.cool(output, all_metrics) or {}
                extra_metrics = [(name, coerce_metric(name, v)) for name, v in _metric_items(added)]
            except Exception as exc:  # a hook must not lose the task or the cool
                self._cool_hook_errors += 1
                logger.warning("crackle kiln: cool hook of %r failed: %s", self._labels[s], exc)
                continue
            for name, value in extra_metrics:
                column = self._column_for(name)
                if column is None:
                    self._rejected_names += 1
                    continue
                self._values[s, column] = value

    def cool(self, *, should_stop: Callable[[], bool] | None = None) -> list[Pattern]:
        """Run the profile's detectors over every buffered task.

        Returns patterns sorted by confidence (highest first). With
        ``seal_on_cool`` the kiln then refuses new tasks until ``reset()``.
        ``should_stop`` (checked at safe points) ends the cool early with
        ``CoolInterrupted``; its partial findings are discarded.
        """
        return self.cool_with_matrix(should_stop=should_stop)[0]

    def cool_with_matrix(
        self, *, should_stop: Callable[[], bool] | None = None, only: Collection[str] | None = None
    ) -> tuple[list[Pattern], MetricMatrix]:
        """``cool()``, and the matrix it ran on (for layers above that measure what the patterns say).

        ``only``: run just these detectors (names in ``detect.DETECTORS``): a partial look that
        leaves every task as new as it was (sliding windows only: a sealed kiln cools once).
        """
        matrix = self.take_window(only=only)
        # Detection runs outside the lock: recording goes on meanwhile.
        patterns, errors = run_detectors(matrix, self.profile, should_stop=should_stop, only=only)
        self.note_detector_errors(errors)
        return patterns, matrix

    def take_window(self, *, only: Collection[str] | None = None) -> MetricMatrix:
        """The first half of ``cool_with_matrix``: the window its detectors read, its tasks marked cooled.

        For a caller that runs ``run_detectors`` on it elsewhere (another process) and then
        hands the errors to ``note_detector_errors``.
        """
        partial = only is not None
        with self._lock:
            if self._sealed:
                raise KilnCooledError("the kiln was already cooled; call reset() before cooling again")
            if partial and self.seal_on_cool:
                raise ValueError("a sealed kiln cools once, with every detector")
            if not partial:
                self._run_cool_hooks()
            matrix = self._snapshot_locked()
            if not partial:
                self._cooled_total = self._total  # every buffered row is cooled now
                self._cooled_time = time.time()
                self._cools += 1
                if self.seal_on_cool:
                    self._sealed = True
        return matrix

    def note_detector_errors(self, errors: dict[str, str]) -> None:
        """What ``run_detectors`` reported failing over a window of this kiln (counted, kept as the last)."""
        if errors:
            with self._lock:
                self._detector_errors += len(errors)
        self.last_detector_errors = errors

    def reset(self) -> None:
        """Empty the kiln (counters included) and make it accept tasks again."""
        with self._lock:
            self._allocate()

    # ---------------------------------------------- information-theoretic views
    def _time_ordered_column(self, metric: str) -> np.ndarray:
        matrix = self.snapshot()
        if metric not in matrix.metric_names:
            raise KeyError(f"no metric named {metric!r} in the kiln")
        column = matrix.column(metric)
        return column[np.isfinite(column)]

    def mi_matrix(self, bins: int | None = None) -> tuple[tuple[str, ...], np.ndarray]:
        """Mutual information (bits) between every pair of metrics, on tasks that have both."""
        matrix = self.snapshot()
        m = matrix.n_metrics
        result = np.zeros((m, m))
        for i in range(m):
            for j in range(i, m):
                both = np.isfinite(matrix.values[:, i]) & np.isfinite(matrix.values[:, j])
                if both.sum() < 2:
                    continue
                x, y = matrix.values[both, i], matrix.values[both, j]
                result[i, j] = result[j, i] = information.mutual_information(x, y, bins=bins)
        return matrix.metric_names, result

    def distribution_shift(self, metric: str, bins: int | None = None) -> float:
        """KL divergence (bits) of the metric's second half (in time) from its first half."""
        first, second = _halves(self._time_ordered_column(metric))
        p, q = information.shared_histograms(second, first, bins=bins, smoothing=0.5)
        return information.kl_divergence(p, q)

    def jsd_shift(self, metric: str, bins: int | None = None) -> float:
        """Jensen-Shannon divergence (bits, in [0, 1]) between the metric's two halves in time."""
        first, second = _halves(self._time_ordered_column(metric))
        p, q = information.shared_histograms(first, second, bins=bins)
        return information.jsd(p, q)

    def permutation_entropies(self, order: int = 3, delay: int = 1) -> dict[str, float]:
        """Normalised permutation entropy of each metric's time series (0 = regular, 1 = random)."""
        matrix = self.snapshot()
        result = {}
        for j, name in enumerate(matrix.metric_names):
            column = matrix.values[:, j]
            column = column[np.isfinite(column)]
            if column.size >= order + (order - 1) * (delay - 1) + 1:
                result[name] = information.permutation_entropy(column, order=order, delay=delay, normalize=True)
        return result


def _halves(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if values.size < 2:
        raise ValueError("need at least two values to compare halves")
    mid = values.size // 2
    return values[:mid], values[mid:]
