"""CrackleSpanProcessor: finished spans in, patterns out, without slowing the host.

Why the hot path keeps the span object instead of copying its numbers
(a deliberate deviation from DESIGN.md's "copy numbers on the hot path"):
``on_end`` runs inside ``Span.end()`` on the request thread, and the promise is
that it costs no more than the SDK's own BatchSpanProcessor, whose ``on_end``
is a sampled check plus a ``deque.appendleft`` (and an ``os.getpid()``).
Reading a span's attributes, status, events and links costs several
microseconds in Python, more than that whole budget. So ``on_end`` does only:
sampled check, ``deque.append`` on a bounded deque (drop-oldest when full, like
the SDK), one ``next()`` on an ``itertools.count`` (atomic under the GIL,
unlike ``+= 1``) and, every ``drain_batch_size`` spans, an ``Event.set()``.
Extraction, grouping, recording and cooling all happen on the cooler thread.
An ended SDK span is immutable, so reading it later is safe; memory stays
bounded by ``max_queue_size`` spans.

Even the "own pattern span" check (instrumentation scope ``crackle_otel``) is
done on the cooler thread: it is two property reads per span on the hot path
for spans that normally never reach this processor at all (the emitter sends
them through a private TracerProvider). The result is the same: they are never
analysed, and are counted in ``spans_skipped_own``.

Accounting (exact once the buffer is drained, e.g. after ``force_flush``)::

    spans_ended == spans_recorded + spans_dropped + spans_skipped_own
                   + spans_rejected + spans_overflowed + spans_pending

``spans_dropped`` is derived (ended - drained - pending) rather than counted on
the hot path, so a drop costs nothing and no race can lose one.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import threading
import time
import weakref
from collections import deque
from typing import Any, Iterable, Protocol, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from ..kiln import Kiln
from ..matrix import MetricMatrix
from ..patterns import Pattern
from .config import CrackleConfig, CrackleConfigError
from .extract import ExtractionRules, from_readable_span

logger = logging.getLogger(__name__)

OWN_SCOPE = "crackle_otel"  # == crackle_otel.otel.emit.INSTRUMENTATION_SCOPE (not imported: keeps this module light)

# "Materially changed" (a pattern already reported is reported again only then):
CONFIDENCE_TOLERANCE = 0.1  # confidence moved by at least this much, or
STATISTIC_FACTOR = 2.0  # a statistic (p-values aside: confidence covers them) grew/shrank 2x or flipped sign
_NEGLIGIBLE = 1e-12
_MAX_REMEMBERED_PER_GROUP = 1024
_MAX_REPORTED_KEPT = 256  # recent reported patterns kept for reported_patterns()


class Emitter(Protocol):
    def emit(self, patterns: Sequence[Pattern]) -> None: ...

    def force_flush(self, timeout_millis: int = 30_000) -> bool: ...

    def shutdown(self, timeout_millis: int = 30_000) -> None: ...

    def stats(self) -> dict[str, int]: ...


def _counter_value(counter: itertools.count) -> int:
    """How many times ``next()`` was called on ``itertools.count(0)`` (its repr is ``count(N)``)."""
    return int(repr(counter)[6:-1])


def _is_p_value(name: str) -> bool:
    lowered = name.lower()
    return "p_value" in lowered or "pvalue" in lowered or "q_value" in lowered


def changed_materially(before: Pattern, after: Pattern) -> bool:
    """Whether ``after`` (same key) says something the report of ``before`` did not.

    Descriptions are not compared: they embed figures that wobble every cool.
    """
    if abs(after.confidence - before.confidence) >= CONFIDENCE_TOLERANCE:
        return True
    for name, old in before.statistics.items():
        new = after.statistics.get(name)
        if new is None or _is_p_value(name) or not (math.isfinite(old) and math.isfinite(new)):
            continue
        if old * new < 0:
            return True
        small, large = sorted((abs(old), abs(new)))
        if small > _NEGLIGIBLE and large / small >= STATISTIC_FACTOR:
            return True
    return False


class _ReportedPatterns:
    """What one group already reported: pattern key -> (pattern as reported, last cool it was seen)."""

    def __init__(self, forget_after_cools: int) -> None:
        self.forget_after_cools = forget_after_cools
        self._entries: dict[str, tuple[Pattern, int]] = {}

    def select(self, patterns: Iterable[Pattern], cool_number: int) -> tuple[list[Pattern], int]:
        """(patterns new or materially changed, how many were repeats)."""
        fresh: list[Pattern] = []
        repeats = 0
        for pattern in patterns:
            entry = self._entries.get(pattern.key)
            if entry is None or changed_materially(entry[0], pattern):
                fresh.append(pattern)
                self._entries[pattern.key] = (pattern, cool_number)
            else:
                repeats += 1
                # Keep comparing with what was reported, so slow drift adds up to a change.
                self._entries[pattern.key] = (entry[0], cool_number)
        self._forget(cool_number)
        return fresh, repeats

    def _forget(self, cool_number: int) -> None:
        stale = [k for k, (_, seen) in self._entries.items() if cool_number - seen >= self.forget_after_cools]
        for key in stale:
            del self._entries[key]
        if len(self._entries) > _MAX_REMEMBERED_PER_GROUP:
            by_age = sorted(self._entries, key=lambda k: self._entries[k][1])
            for key in by_age[: len(self._entries) - _MAX_REMEMBERED_PER_GROUP]:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


@dataclasses.dataclass
class _Group:
    kiln: Kiln
    reported: _ReportedPatterns
    new_tasks: int = 0
    cools: int = 0


class CrackleSpanProcessor(SpanProcessor):
    """Groups finished spans, cools each group's kiln on a background thread, emits what it finds.

    ``emitter``: a PatternEmitter / ConsoleEmitter (or None: patterns are only
    counted and kept in ``reported_patterns()``). Configuration: either
    ``config=CrackleConfig(...)`` or keyword arguments of ``CrackleConfig``
    (which also reads ``CRACKLE_*`` variables).
    """

    def __init__(self, emitter: Emitter | None = None, *, config: CrackleConfig | None = None, **config_kwargs: Any):
        if config is None:
            config = CrackleConfig.load(**config_kwargs)
        elif config_kwargs:
            raise CrackleConfigError("pass either config= or configuration keyword arguments, not both")
        self.config = config
        self.emitter = emitter
        self.rules = ExtractionRules(
            allow=config.attributes_allow, deny=config.attributes_deny, group_by=config.group_by
        )
        self._cool_after = max(config.profile.rate.min_tasks, config.kiln_capacity // 2)
        self._shutdown_lock = threading.Lock()
        self._is_shutdown = False
        self._start()
        if hasattr(os, "register_at_fork"):
            weak_reinit = weakref.WeakMethod(self._at_fork_reinit)

            def _after_in_child() -> None:
                reinit = weak_reinit()
                if reinit is not None:
                    reinit()

            os.register_at_fork(after_in_child=_after_in_child)

    # ------------------------------------------------------------------ state
    def _start(self) -> None:
        """Fresh buffer, counters, groups, locks and cooler thread (at init and in a forked child)."""
        self._buffer: deque = deque(maxlen=self.config.max_queue_size)
        self._append = self._buffer.append
        self._ended = itertools.count()
        self._wake_every = self.config.drain_batch_size
        self._wake = threading.Event()
        self._work_lock = threading.Lock()  # groups, drain and cool: cooler thread vs force_flush/shutdown
        self._groups: dict[str, _Group] = {}
        self._drained = 0
        self._dropped_seen = 0
        self._recorded = 0
        self._skipped_own = 0
        self._rejected = 0
        self._overflowed = 0
        self._cools = 0
        self._cools_skipped = 0
        self._last_cool_seconds = 0.0
        self._total_cool_seconds = 0.0
        self._patterns_detected = 0
        self._patterns_reported = 0
        self._patterns_repeated = 0
        self._emit_errors = 0
        self._reported_recent: deque[Pattern] = deque(maxlen=_MAX_REPORTED_KEPT)
        self._stopping = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="CrackleCooler", daemon=True)
        if not self._is_shutdown:
            self._thread.start()

    def _at_fork_reinit(self) -> None:
        # The parent's cooler thread does not exist here and its locks (ours, the kilns') may be
        # held forever: like the SDK's BatchSpanProcessor, the child starts empty.
        self._shutdown_lock = threading.Lock()
        self._start()

    # --------------------------------------------------------------- hot path
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        try:
            if span.context.trace_flags & 1:  # sampled; `& 1` skips the .sampled property (~100 ns)
                self._append(span)
                if next(self._ended) % self._wake_every == 0:
                    self._wake.set()
        except Exception:  # never raise into the application's Span.end()
            pass

    # ----------------------------------------------------------- cooler side
    def _run(self) -> None:
        interval = self.config.cool_interval_millis / 1000
        # Pause after each piece of work so the thread is busy at most max_cooler_share of the time.
        pause_per_busy_second = 1.0 / self.config.max_cooler_share - 1.0
        next_cool = time.monotonic() + interval
        while not self._stopping:
            self._wake.wait(max(0.0, next_cool - time.monotonic()))
            self._wake.clear()
            if self._stopping:
                break
            started = time.monotonic()
            try:
                with self._work_lock:
                    self._drain_locked()
                    if time.monotonic() >= next_cool:
                        self._cool_locked(only_filled=False, deadline=math.inf)
                        next_cool = time.monotonic() + interval
                    else:
                        self._cool_locked(only_filled=True, deadline=math.inf)
            except Exception:  # the cooler must survive anything (a bug here must not stop analysis)
                logger.exception("crackle cooler: unexpected error")
            busy = time.monotonic() - started
            if pause_per_busy_second > 0:
                self._stop.wait(busy * pause_per_busy_second)

    def _drain_locked(self) -> None:
        buffer = self._buffer
        count = len(buffer)
        # Counted before popping: a concurrent stats() may then under-report drops for a moment,
        # never over-report them. Only this (locked) path pops, so count pops always succeed.
        self._drained += count
        popleft = buffer.popleft
        for _ in range(count):
            self._record(popleft())

    def _record(self, span: Any) -> None:
        try:
            scope = span.instrumentation_scope
            if scope is not None and scope.name == OWN_SCOPE:
                self._skipped_own += 1
                return
            extracted = from_readable_span(span, self.rules)
        except Exception:
            self._rejected += 1
            logger.debug("crackle: could not extract a span", exc_info=True)
            return
        group = self._groups.get(extracted.group)
        if group is None:
            if len(self._groups) >= self.config.max_groups:
                # Not analysed: mixing operations in one catch-all kiln would invent patterns.
                self._overflowed += 1
                return
            group = self._groups[extracted.group] = _Group(
                kiln=Kiln(
                    self.config.profile,
                    capacity=self.config.kiln_capacity,
                    max_metrics=self.config.max_metrics_per_group,
                    seal_on_cool=False,
                ),
                reported=_ReportedPatterns(self.config.pattern_memory_cools),
            )
        if group.kiln.record(
            extracted.label, extracted.metrics, timestamp=extracted.timestamp_s, identity=extracted.identity
        ):
            self._recorded += 1
            group.new_tasks += 1
        else:
            self._rejected += 1

    def _cool_locked(self, *, only_filled: bool, deadline: float) -> None:
        """Cool the groups with new tasks (only those with ``_cool_after`` new ones if ``only_filled``)."""
        started = time.perf_counter()
        cooled = False
        for name, group in list(self._groups.items()):
            if group.new_tasks == 0 or (only_filled and group.new_tasks < self._cool_after):
                continue
            if time.monotonic() >= deadline:
                self._cools_skipped += 1
                continue
            cooled = True
            self._cool_group(name, group)
        if cooled:
            self._last_cool_seconds = time.perf_counter() - started
            self._total_cool_seconds += self._last_cool_seconds
            self._cools += 1

    def _cool_group(self, name: str, group: _Group) -> None:
        group.new_tasks = 0
        group.cools += 1
        patterns = group.kiln.cool()
        self._patterns_detected += len(patterns)
        fresh, repeats = group.reported.select(patterns, group.cools)
        self._patterns_repeated += repeats
        if not fresh:
            return
        fresh = [dataclasses.replace(p, group=name) for p in fresh]
        self._patterns_reported += len(fresh)
        self._reported_recent.extend(fresh)
        if self.emitter is not None:
            try:
                self.emitter.emit(fresh)
            except Exception:
                self._emit_errors += 1
                logger.exception("crackle: emitter failed")

    # ------------------------------------------------------------- lifecycle
    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Drain, cool every group with new spans now, emit, and flush the emitter."""
        if self._is_shutdown:
            return False
        deadline = time.monotonic() + timeout_millis / 1000
        if not self._work_lock.acquire(timeout=max(0.0, timeout_millis / 1000)):
            return False
        try:
            self._drain_locked()
            self._cool_locked(only_filled=False, deadline=deadline)
        except Exception:
            logger.exception("crackle force_flush: unexpected error")
            return False
        finally:
            self._work_lock.release()
        return self._flush_emitter(deadline)

    def _flush_emitter(self, deadline: float) -> bool:
        if self.emitter is None:
            return time.monotonic() < deadline
        remaining = max(0, int((deadline - time.monotonic()) * 1000))
        try:
            return bool(self.emitter.force_flush(remaining))
        except Exception:
            logger.exception("crackle: emitter flush failed")
            return False

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        """Stop accepting spans, cool what is left, emit, stop the thread and the emitter.

        Bounded by ``timeout_millis``; groups left uncooled at the deadline are counted in
        ``cools_skipped``. Idempotent.
        """
        with self._shutdown_lock:
            if self._is_shutdown:
                return
            self._is_shutdown = True
        deadline = time.monotonic() + timeout_millis / 1000
        self._append = deque(maxlen=0).append  # later spans: counted as ended, then dropped
        self._stopping = True
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._work_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            try:
                self._drain_locked()
                self._cool_locked(only_filled=False, deadline=deadline)
            except Exception:
                logger.exception("crackle shutdown: unexpected error")
            finally:
                self._work_lock.release()
        if self.emitter is not None:
            try:
                self.emitter.shutdown(max(0, int((deadline - time.monotonic()) * 1000)))
            except Exception:
                logger.exception("crackle: emitter shutdown failed")

    # ---------------------------------------------------------------- reading
    def stats(self) -> dict[str, Any]:
        """Own counters (the same ones selfmetrics exports as OTel metrics)."""
        ended = _counter_value(self._ended)  # read first: later reads can only make drops look smaller
        drained = self._drained
        pending = len(self._buffer)
        self._dropped_seen = dropped = max(self._dropped_seen, ended - drained - pending)
        groups = list(self._groups.values())
        kiln_stats = [g.kiln.stats() for g in groups]
        stats: dict[str, Any] = {
            "spans_ended": ended,
            "spans_recorded": self._recorded,
            "spans_dropped": dropped,
            "spans_skipped_own": self._skipped_own,
            "spans_rejected": self._rejected,
            "spans_overflowed": self._overflowed,
            "spans_pending": pending,
            "groups": len(groups),
            "cools": self._cools,
            "cools_skipped": self._cools_skipped,
            "cool_seconds_last": self._last_cool_seconds,
            "cool_seconds_total": self._total_cool_seconds,
            "values_rejected": sum(s.rejected_values for s in kiln_stats),
            "metric_names_rejected": sum(s.rejected_metric_names for s in kiln_stats),
            "detector_errors": sum(s.detector_errors for s in kiln_stats),
            "patterns_detected": self._patterns_detected,
            "patterns_reported": self._patterns_reported,
            "patterns_repeated": self._patterns_repeated,
            "patterns_emitted": 0,
            "patterns_dropped": 0,
            "emit_errors": self._emit_errors,
        }
        if self.emitter is not None:
            try:
                emitter_stats = self.emitter.stats()
                stats["patterns_emitted"] = int(emitter_stats.get("patterns_emitted", 0))
                stats["patterns_dropped"] = int(emitter_stats.get("patterns_dropped", 0))
            except Exception:
                logger.debug("crackle: emitter stats failed", exc_info=True)
        return stats

    def reported_patterns(self) -> list[Pattern]:
        """The most recently reported patterns (up to 256), oldest first, with their group set."""
        return list(self._reported_recent)

    def group_names(self) -> list[str]:
        return list(self._groups)

    def group_snapshot(self, group: str) -> MetricMatrix:
        """A copy of what ``group``'s kiln holds now (its sliding window), oldest first. KeyError if unknown."""
        return self._groups[group].kiln.snapshot()
