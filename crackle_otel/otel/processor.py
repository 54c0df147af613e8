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
bounded by ``max_queue_size`` spans of at most ``MAX_KEPT_SPAN_BYTES`` (16 KiB) of
names and values each: a larger span is kept as a compact view (``kept_spans``,
counted in ``spans_trimmed``), which costs ``on_end`` a loop over the span's
attribute values.

The cooler itself is held to a CPU budget (``max_cooler_share``, 10 % by
default): under the GIL every microsecond it spends extracting or cooling is
taken from request threads, so under overload it analyses a sample and the
buffer drops the rest (counted), rather than taxing the host.

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

import itertools
import logging
import math
import os
import threading
import time
from collections import deque
from typing import Any, Callable

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from ..matrix import MetricMatrix
from ..patterns import Pattern
from .config import CrackleConfig, CrackleConfigError
from .delivery import delivery_counters
from .forking import reinit_after_fork
from .extract import ExtractedSpan, ExtractionRules, SpanView, extract, from_readable_span
from .furnace import Emitter, Furnace
from .kept_spans import kept_form
from .reporting import changed_materially  # noqa: F401 (public here too)

logger = logging.getLogger(__name__)

_DRAIN_CHUNK = 256  # spans recorded between two deadline checks (~2 ms)
OWN_SCOPE = "crackle_otel"  # == crackle_otel.otel.emit.INSTRUMENTATION_SCOPE (not imported: keeps this module light)


def _counter_value(counter: itertools.count) -> int:
    """How many times ``next()`` was called on ``itertools.count(0)`` (its repr is ``count(N)``)."""
    return int(repr(counter)[6:-1])


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
        self._shutdown_lock = threading.Lock()
        self._is_shutdown = False
        self._start()
        reinit_after_fork(self._at_fork_reinit)

    # ------------------------------------------------------------------ state
    def _start(self) -> None:
        """Fresh buffer, counters, groups, locks and cooler thread (at init and in a forked child)."""
        self._buffer: deque = deque(maxlen=self.config.max_queue_size)
        # After shutdown (also in a child forked after it) spans go nowhere and count as dropped.
        self._append = deque(maxlen=0).append if self._is_shutdown else self._buffer.append
        self._ended = itertools.count()
        self._wake_every = self.config.drain_batch_size
        self._wake = threading.Event()
        self._work_lock = threading.Lock()  # groups, drain and cool: cooler thread vs force_flush/shutdown
        # Grouping, kilns, cooling, de-duplication and emitting: shared with the OTLP gateway.
        self._furnace = Furnace(self.config, self.emitter)
        self._drained = 0
        self._dropped_seen = 0
        self._skipped_own = 0
        self._rejected = 0  # spans extraction failed on (the furnace counts the rest)
        self._trimmed = 0  # spans kept as a compact view (values too large to hold while pending)
        self._stopping = False
        self._callers_waiting = 0  # force_flush/shutdown calls waiting for the work lock
        self._waiting_lock = threading.Lock()
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
                try:
                    kept = kept_form(span)  # a span with huge values: a compact view (bounds the bytes)
                except Exception:
                    next(self._ended)  # an unreadable span: ended and never drained, so counted as dropped
                    return
                self._append(kept)
                if next(self._ended) % self._wake_every == 0:
                    self._wake.set()
        except Exception:  # never raise into the application's Span.end()
            pass

    # ----------------------------------------------------------- cooler side
    def _run(self) -> None:
        """Drain on wake-ups, cool filled groups and every interval, within a CPU budget.

        Budget (a token bucket): the thread earns ``max_cooler_share`` seconds of CPU per
        second of wall time, starting from nothing and capped at ``max_cooler_share *
        cool_interval``; work is paid for afterwards, in the thread's own CPU time
        (``time.thread_time``: waiting for the GIL or for a core costs nothing), by
        pausing. A cool of a filled group (the big-ticket item) only starts when the drain
        before it left credit; the interval cool always runs. Under sustained overload the
        drains use the whole budget, so groups are cooled once per interval on the latest
        window, and the rest of the spans are dropped (counted). A cool gives way at its
        next safe point when shutdown begins or ``force_flush`` waits for it.
        """
        share = self.config.max_cooler_share
        interval = self.config.cool_interval_millis / 1000
        max_credit = share * interval
        credit = 0.0
        earned_until = time.monotonic()
        next_cool = earned_until + interval
        while not self._stopping:
            # A filled group waiting for credit: come back as soon as the pause is over.
            self._wake.wait(0.0 if self._furnace.has_filled_groups else max(0.0, next_cool - time.monotonic()))
            self._wake.clear()
            if self._stopping:
                break
            if self._callers_waiting:  # force_flush/shutdown wants the work lock: let it have it
                self._stop.wait(0.005)
                continue
            started = time.monotonic()
            started_cpu = time.thread_time()
            credit = min(max_credit, credit + (started - earned_until) * share)
            try:
                with self._work_lock:
                    drained = self._drain_locked(self._give_way)
                    drain_cost = time.thread_time() - started_cpu if drained else 0.0
                    if time.monotonic() >= next_cool:
                        self._cool_locked(only_filled=False, deadline=math.inf, should_stop=self._give_way)
                        next_cool = time.monotonic() + interval
                    elif self._furnace.has_filled_groups and credit - drain_cost >= 0:
                        self._cool_locked(only_filled=True, deadline=math.inf, should_stop=self._give_way)
            except Exception:  # the cooler must survive anything (a bug here must not stop analysis)
                logger.exception("crackle cooler: unexpected error")
            earned_until = time.monotonic()
            credit += (earned_until - started) * share - (time.thread_time() - started_cpu)
            if credit < 0:
                self._stop.wait(-credit / share)  # pause until the work is paid for
                credit = 0.0
                earned_until = time.monotonic()

    def _give_way(self) -> bool:
        """Whether a background cool should stop at its next safe point."""
        return self._stopping or self._callers_waiting > 0

    def _drain_locked(self, should_stop: Callable[[], bool] | None = None) -> int:
        """Record the buffered spans (until ``should_stop()``, checked every 256); returns how many."""
        buffer = self._buffer
        count = len(buffer)
        popleft = buffer.popleft
        done = 0
        while done < count and not (should_stop is not None and should_stop()):
            chunk = min(_DRAIN_CHUNK, count - done)
            # Counted before popping: a concurrent stats() may then under-report drops for a moment,
            # never over-report them. Only this (locked) path pops, so these pops always succeed.
            self._drained += chunk
            extracted = [self._extracted(popleft()) for _ in range(chunk)]
            self._furnace.record_spans([span for span in extracted if span is not None])  # one batch a chunk
            done += chunk
        return done

    def _extracted(self, span: Any) -> ExtractedSpan | None:
        """The span as a task to record; None (counted) for crackle's own spans and spans that cannot be extracted."""
        try:
            if type(span) is SpanView:  # kept_form() trimmed a large span
                self._trimmed += 1
                if span.scope_name == OWN_SCOPE:
                    self._skipped_own += 1
                    return None
                return extract(span, self.rules)
            scope = span.instrumentation_scope
            if scope is not None and scope.name == OWN_SCOPE:
                self._skipped_own += 1
                return None
            return from_readable_span(span, self.rules)
        except Exception:
            self._rejected += 1
            logger.debug("crackle: could not extract a span", exc_info=True)
            return None

    def _cool_locked(self, *, only_filled: bool, deadline: float, should_stop: Any = None,
                     final: bool = False) -> None:
        """Cool the groups with new tasks (only the filled ones if ``only_filled``)."""
        self._furnace.cool(only_filled=only_filled, deadline=deadline, should_stop=should_stop, final=final)

    def _acquire_work_lock(self, deadline: float) -> bool:
        """Take the work lock before ``deadline``; a background cool holding it gives way meanwhile."""
        with self._waiting_lock:
            self._callers_waiting += 1
        try:
            return self._work_lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
        finally:
            with self._waiting_lock:
                self._callers_waiting -= 1

    # ------------------------------------------------------------- lifecycle
    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Drain, cool every group with new spans now, emit, and flush the emitter."""
        if self._is_shutdown:
            return False
        deadline = time.monotonic() + timeout_millis / 1000
        return self._drain_and_cool(deadline, final=True, caller="force_flush") and self._flush_emitter(deadline)

    def cool_now(self, timeout_millis: int = 30_000) -> bool:
        """Drain and cool every group with new spans now, exactly as the interval cool does.

        Unlike ``force_flush`` a change standing alone stays held back (others may
        still join it) and the emitter is not flushed: a caller that keeps its own
        cadence (a replay in span time, a scheduler) cools as the thread would.
        """
        if self._is_shutdown:
            return False
        return self._drain_and_cool(time.monotonic() + timeout_millis / 1000, final=False, caller="cool_now")

    def _drain_and_cool(self, deadline: float, *, final: bool, caller: str) -> bool:
        """Take the work lock, record the buffered spans and cool every group with new tasks, before
        ``deadline``. False when the lock was not had in time or the work failed."""
        if not self._acquire_work_lock(deadline):
            return False
        try:
            self._drain_locked(lambda: time.monotonic() >= deadline)
            self._cool_locked(only_filled=False, deadline=deadline, final=final)
        except Exception:
            logger.exception("crackle %s: unexpected error", caller)
            return False
        finally:
            self._work_lock.release()
        return True

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
        self._drain_and_cool(deadline, final=True, caller="shutdown")
        if self.emitter is not None:
            try:
                self.emitter.shutdown(max(0, int((deadline - time.monotonic()) * 1000)))
            except Exception:
                logger.exception("crackle: emitter shutdown failed")

    # ---------------------------------------------------------------- reading
    def stats(self) -> dict[str, Any]:
        """Own counters (the same ones selfmetrics exports as OTel metrics).

        Patterns: ``patterns_detected == patterns_reported + patterns_suppressed +
        patterns_held`` (a standing pattern is reported once; a pattern an incident
        explains is folded into it; a lone change may be held back for one interval),
        and with an emitter ``patterns_reported == patterns_exported + patterns_dropped
        + patterns_pending``.
        """
        ended = _counter_value(self._ended)  # read first: later reads can only make drops look smaller
        drained = self._drained
        pending = len(self._buffer)
        self._dropped_seen = dropped = max(self._dropped_seen, ended - drained - pending)
        furnace = self._furnace.stats()
        stats: dict[str, Any] = {
            "spans_ended": ended,
            "spans_recorded": furnace["tasks_recorded"],
            "spans_dropped": dropped,
            "spans_skipped_own": self._skipped_own,
            "spans_rejected": self._rejected + furnace["tasks_rejected"],
            "spans_overflowed": furnace["tasks_overflowed"],
            "spans_pending": pending,
            "spans_trimmed": self._trimmed,
            "groups": furnace["groups"],
            "cools": furnace["cools"],
            "cools_skipped": furnace["cools_skipped"],
            "cools_interrupted": furnace["cools_interrupted"],
            "cool_seconds_last": furnace["cool_seconds_last"],
            "cool_seconds_total": furnace["cool_seconds_total"],
            "values_rejected": furnace["values_rejected"],
            "metric_names_rejected": furnace["metric_names_rejected"],
            "attribute_names_rejected": furnace["attribute_names_rejected"],  # beyond 32 per group
            "attribute_values_not_kept": furnace["attribute_values_not_kept"],  # of high-cardinality attributes
            "detector_errors": furnace["detector_errors"],
            "patterns_detected": furnace["patterns_detected"],
            "patterns_reported": furnace["patterns_reported"],
            "patterns_repeated": furnace["patterns_repeated"],
            "patterns_suppressed": furnace["patterns_suppressed"],
            "patterns_held": furnace["patterns_held"],
            "patterns_folded": furnace["patterns_folded"],
            "incidents_reported": furnace["incidents_reported"],
            "incidents_open": furnace["incidents_open"],
            "emit_errors": furnace["emit_errors"],
        }
        stats.update(delivery_counters(self.emitter, furnace))
        return stats

    def reported_patterns(self) -> list[Pattern]:
        """The most recently reported patterns (up to 256), oldest first, with their group set."""
        return self._furnace.reported_patterns()

    def group_names(self) -> list[str]:
        return self._furnace.group_names()

    def group_snapshot(self, group: str) -> MetricMatrix:
        """A copy of what ``group``'s kiln holds now (its sliding window), oldest first. KeyError if unknown."""
        return self._furnace.group_snapshot(group)
