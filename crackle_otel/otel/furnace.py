"""The furnace: groups of kilns fed with tasks, cooled, de-duplicated, emitted.

This is the part of span analysis that does not care where a task came from:
the SDK span processor feeds it spans it extracted on its cooler thread, the
OTLP gateway feeds it spans (and metric collections) decoded from OTLP
requests, and ``crackle-otel analyze`` feeds it spans read from files. All of
them group the same way, keep the same bounded kilns, cool them the same way
and report a standing pattern only once (again only when it changes materially).

Thread-safety: ``record`` may run on one thread while ``cool`` runs on another.
One short lock guards the group table and counters; detection runs outside it
(``Kiln.cool`` itself lets recording go on), and one cool runs at a time.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import deque
from typing import Any, Callable, Hashable, Iterable, Mapping, Protocol, Sequence

from ..errors import CoolInterrupted
from ..kiln import Kiln
from ..matrix import MetricMatrix
from ..patterns import Pattern
from .config import CrackleConfig
from .extract import ExtractedSpan
from .reporting import ReportedPatterns, changed_materially  # noqa: F401 (changed_materially: public here too)

logger = logging.getLogger(__name__)

_MAX_REPORTED_KEPT = 256  # recent reported patterns kept for reported_patterns()


class Emitter(Protocol):
    def emit(self, patterns: Sequence[Pattern]) -> None: ...

    def force_flush(self, timeout_millis: int = 30_000) -> bool: ...

    def shutdown(self, timeout_millis: int = 30_000) -> None: ...

    def stats(self) -> dict[str, int]: ...


class CoolObserver(Protocol):
    """Sees every cool of every group: what the detectors found (repeats included) and the window they read.

    ``window`` is the group's kiln as cooled: a pattern's ``InvolvedTask.index`` is a row
    of it. Called on the cooling thread after the emitter, with the group set on each
    pattern; it must be quick (errors are logged and counted, never raised).
    """

    def cooled(self, group: str, window: MetricMatrix, patterns: Sequence[Pattern]) -> None: ...


@dataclasses.dataclass
class _Group:
    kiln: Kiln
    reported: ReportedPatterns
    new_tasks: int = 0
    cools: int = 0


class Furnace:
    """Per-group kilns (capped), cooled on demand; new or materially changed patterns go to ``emitter``.

    Sizes come from ``config``: ``kiln_capacity`` (a sliding window per group),
    ``max_groups`` (tasks of further groups are counted in ``tasks_overflowed``,
    never mixed into a catch-all kiln), ``max_metrics_per_group``,
    ``pattern_memory_cools`` and the profile. ``keep_reported``: how many recently
    reported patterns ``reported_patterns()`` returns (each holds up to
    ``max_involved`` tasks, so 0 saves memory where nobody asks, e.g. offline analysis).
    """

    def __init__(self, config: CrackleConfig, emitter: Emitter | None = None, *,
                 keep_reported: int = _MAX_REPORTED_KEPT, observer: CoolObserver | None = None) -> None:
        self.config = config
        self.emitter = emitter
        self.observer = observer
        #: A group is "filled" (worth cooling before the interval) after this many new tasks.
        self.cool_after = max(config.profile.rate.min_tasks, config.kiln_capacity // 2)
        self._lock = threading.Lock()  # group table and counters
        self._cool_lock = threading.Lock()  # one cool at a time: reported-pattern memory, emit order
        self._groups: dict[str, _Group] = {}
        self._recorded = 0
        self._rejected = 0
        self._overflowed = 0
        self._filled = 0  # groups that reached cool_after new tasks since their last cool
        self._cools = 0
        self._cools_skipped = 0
        self._cools_interrupted = 0
        self._last_cool_seconds = 0.0
        self._total_cool_seconds = 0.0
        self._patterns_detected = 0
        self._patterns_reported = 0
        self._patterns_repeated = 0
        self._emit_errors = 0
        self._patterns_emit_failed = 0  # reported patterns in emit() calls that raised
        self._reported_recent: deque[Pattern] = deque(maxlen=keep_reported)

    # -------------------------------------------------------------- recording
    def record_span(self, span: ExtractedSpan) -> bool:
        """Record an extracted span into its group's kiln (see ``record``)."""
        return self.record(span.group, span.label, span.metrics, timestamp=span.timestamp_s,
                           identity=span.identity, attributes=span.attributes, failures=span.failures)

    def record(
        self,
        group: str,
        label: str,
        metrics: Mapping[str, Any],
        *,
        timestamp: float,
        identity: Hashable | None = None,
        attributes: Mapping[str, str] | None = None,
        failures: int = 0,
    ) -> bool:
        """Record one task into ``group``'s kiln. False when it was not kept (overflow or no usable metric)."""
        with self._lock:
            entry = self._groups.get(group)
            if entry is None:
                if len(self._groups) >= self.config.max_groups:
                    # Not analysed: mixing operations in one catch-all kiln would invent patterns.
                    self._overflowed += 1
                    return False
                entry = self._groups[group] = _Group(
                    kiln=Kiln(
                        self.config.profile,
                        capacity=self.config.kiln_capacity,
                        max_metrics=self.config.max_metrics_per_group,
                        seal_on_cool=False,
                    ),
                    reported=ReportedPatterns(self.config.pattern_memory_cools),
                )
            if not entry.kiln.record(label, metrics, timestamp=timestamp, identity=identity, attributes=attributes,
                                     failures=failures):
                self._rejected += 1
                return False
            self._recorded += 1
            entry.new_tasks += 1
            if entry.new_tasks == self.cool_after:
                self._filled += 1
            return True

    @property
    def has_filled_groups(self) -> bool:
        """Whether some group has ``cool_after`` new tasks (a cool with ``only_filled`` would do work)."""
        return self._filled > 0

    # ---------------------------------------------------------------- cooling
    def cool(self, *, only_filled: bool = False, deadline: float = math.inf,
             should_stop: Callable[[], bool] | None = None) -> list[Pattern]:
        """Cool the groups with new tasks (only those with ``cool_after`` new ones if ``only_filled``).

        The cool stops when ``deadline`` (``time.monotonic()``) passes or
        ``should_stop()`` holds: between groups, and inside a group's detectors at
        their safe points (a group interrupted there keeps its new tasks for the
        next cool and reports nothing; counted in ``cools_interrupted``). Groups
        left waiting are counted in ``cools_skipped``. Returns the patterns
        reported (new or materially changed, group set), which were also handed
        to the emitter.
        """

        def stop() -> bool:
            return time.monotonic() >= deadline or (should_stop is not None and should_stop())

        with self._cool_lock:
            started = time.perf_counter()
            with self._lock:
                due = [
                    (name, group)
                    for name, group in self._groups.items()
                    if group.new_tasks and not (only_filled and group.new_tasks < self.cool_after)
                ]
            reported: list[Pattern] = []
            cooled = False
            for position, (name, group) in enumerate(due):
                if stop():
                    with self._lock:
                        self._cools_skipped += len(due) - position
                    break
                try:
                    reported.extend(self._cool_group(name, group, stop))
                except CoolInterrupted:
                    with self._lock:
                        self._cools_interrupted += 1
                        self._cools_skipped += len(due) - position - 1
                    break
                cooled = True
            if cooled:
                elapsed = time.perf_counter() - started
                with self._lock:
                    self._last_cool_seconds = elapsed
                    self._total_cool_seconds += elapsed
                    self._cools += 1
            return reported

    def _cool_group(self, name: str, group: _Group, stop: Callable[[], bool]) -> list[Pattern]:
        with self._lock:
            waiting = group.new_tasks
            if waiting >= self.cool_after:
                self._filled -= 1
            group.new_tasks = 0
            group.cools += 1
        try:
            patterns, window = group.kiln.cool_with_matrix(should_stop=stop)
        except CoolInterrupted:
            with self._lock:  # as if this cool never started: the tasks are still new
                arrived = group.new_tasks  # recorded meanwhile (counted in _filled if they reached cool_after)
                group.new_tasks += waiting
                group.cools -= 1
                if arrived < self.cool_after <= group.new_tasks:
                    self._filled += 1
            raise
        fresh, repeats = group.reported.select(patterns, group.cools)
        fresh = [dataclasses.replace(p, group=name) for p in fresh]
        with self._lock:
            self._patterns_detected += len(patterns)
            self._patterns_repeated += repeats
            self._patterns_reported += len(fresh)
            self._reported_recent.extend(fresh)
        if fresh and self.emitter is not None:
            try:
                self.emitter.emit(fresh)
            except Exception:
                with self._lock:
                    self._emit_errors += 1
                    self._patterns_emit_failed += len(fresh)
                logger.exception("crackle: emitter failed")
        if self.observer is not None:
            try:
                self.observer.cooled(name, window, [dataclasses.replace(p, group=name) for p in patterns])
            except Exception:
                with self._lock:
                    self._emit_errors += 1
                logger.exception("crackle: cool observer failed")
        return fresh

    # ---------------------------------------------------------------- reading
    def stats(self) -> dict[str, Any]:
        """Counters: tasks_recorded/rejected/overflowed, groups, cools, patterns, kiln rejections, emit errors."""
        with self._lock:
            groups = list(self._groups.values())
            stats: dict[str, Any] = {
                "tasks_recorded": self._recorded,
                "tasks_rejected": self._rejected,
                "tasks_overflowed": self._overflowed,
                "groups": len(groups),
                "cools": self._cools,
                "cools_skipped": self._cools_skipped,
                "cools_interrupted": self._cools_interrupted,
                "cool_seconds_last": self._last_cool_seconds,
                "cool_seconds_total": self._total_cool_seconds,
                "patterns_detected": self._patterns_detected,
                "patterns_reported": self._patterns_reported,
                "patterns_repeated": self._patterns_repeated,
                # detected == reported + suppressed; today every suppressed pattern is a repeat
                "patterns_suppressed": self._patterns_repeated,
                "emit_errors": self._emit_errors,
                "patterns_emit_failed": self._patterns_emit_failed,
            }
        kiln_stats = [g.kiln.stats() for g in groups]
        stats["values_rejected"] = sum(s.rejected_values for s in kiln_stats)
        stats["metric_names_rejected"] = sum(s.rejected_metric_names for s in kiln_stats)
        stats["detector_errors"] = sum(s.detector_errors for s in kiln_stats)
        return stats

    def reported_patterns(self) -> list[Pattern]:
        """The most recently reported patterns (up to ``keep_reported``), oldest first, with their group set."""
        with self._lock:
            return list(self._reported_recent)

    def group_names(self) -> list[str]:
        with self._lock:
            return list(self._groups)

    def group_snapshot(self, group: str) -> MetricMatrix:
        """A copy of what ``group``'s kiln holds now (its sliding window), oldest first. KeyError if unknown."""
        with self._lock:
            kiln = self._groups[group].kiln
        return kiln.snapshot()
