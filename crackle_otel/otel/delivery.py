"""Exact accounting of what the pattern emitter hands to its exporters.

Each signal (pattern spans, pattern events) has a ``Ledger``. An item is
admitted only while the signal's pending items stay under ``max_items`` and
their estimated size under ``max_bytes``; it then ends exactly once: exported,
failed (the exporter gave up on its batch), or abandoned at shutdown::

    admitted == exported + failed + abandoned + pending

Admission keeps ``pending`` below the SDK batch processor's own queue size, so
that queue never evicts an item silently (an item leaves the SDK's deque before
its export is settled, so the deque never holds more than ``pending``).

``CountingExporter`` wraps the real exporter and settles each batch in the
ledger. When the exporter *raises* (e.g. it cannot encode one item), the batch
is retried one item at a time, so one bad item never costs the others.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .forking import reinit_after_fork

logger = logging.getLogger(__name__)


class Ledger:
    """Counts of one signal's items; every method runs under the shared ``lock``."""

    def __init__(self, lock: threading.Lock, *, max_items: int, max_bytes: int) -> None:
        self.lock = lock
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.admitted = 0
        self.exported = 0
        self.failed = 0
        self.abandoned = 0
        self.pending_bytes = 0
        self.failed_exports = 0  # export calls that failed (each may hold many items)
        self.consecutive_failed_exports = 0  # since the last successful export: > 0 while the backend is down
        self.sealed = False  # after shutdown: late settlements are not counted again

    @property
    def pending(self) -> int:
        return self.admitted - self.exported - self.failed - self.abandoned

    def has_room(self, cost: int) -> bool:
        """Caller holds ``lock``. A lone item larger than ``max_bytes`` still goes when nothing is pending."""
        pending = self.pending
        return pending < self.max_items and (pending == 0 or self.pending_bytes + cost <= self.max_bytes)

    def admit(self, cost: int) -> None:
        """Caller holds ``lock``."""
        self.admitted += 1
        self.pending_bytes += cost

    def settle(self, count: int, cost: int, ok: bool) -> None:
        with self.lock:
            if self.sealed:
                return
            self.pending_bytes = max(0, self.pending_bytes - cost)
            if ok:
                self.exported += count
                self.consecutive_failed_exports = 0
            else:
                self.failed += count
                self.failed_exports += 1
                self.consecutive_failed_exports += 1

    def seal(self) -> int:
        """At shutdown: whatever is still pending is abandoned. Returns how many items that was."""
        with self.lock:
            if self.sealed:
                return 0
            abandoned = self.pending
            self.abandoned += abandoned
            self.pending_bytes = 0
            self.sealed = True
            return abandoned


class CountingExporter:
    """Settles every batch the SDK processor hands the real exporter, and can cut a stuck export short.

    ``interrupt`` shuts the real exporter down once, which makes the OTLP
    exporters abandon their retry back-off.
    """

    def __init__(self, exporter: Any, success: Any, ledger: Ledger, cost_of: Callable[[Any], int]) -> None:
        self._exporter = exporter
        self._success = success
        self._ledger = ledger
        self._cost_of = cost_of
        self._stop_lock = threading.Lock()
        self._stopped = False
        reinit_after_fork(self._fresh_lock_after_fork)

    def _fresh_lock_after_fork(self) -> None:
        self._stop_lock = threading.Lock()

    def export(self, batch: Sequence[Any]) -> Any:
        if self._stopped:  # after interrupt() the real exporter is closed: the batch fails without a try
            self._ledger.settle(len(batch), sum(self._cost_of(item) for item in batch), False)
            return None
        try:
            result = self._exporter.export(batch)
        except Exception:  # e.g. an item the exporter cannot encode: isolate it
            if len(batch) > 1:
                logger.warning("crackle pattern exporter %s raised on a batch of %d; retrying one by one",
                               type(self._exporter).__name__, len(batch), exc_info=True)
                return self._export_one_by_one(batch)
            logger.exception("crackle pattern exporter %s raised", type(self._exporter).__name__)
            result = None
        self._ledger.settle(len(batch), sum(self._cost_of(item) for item in batch), result == self._success)
        return result

    def _export_one_by_one(self, batch: Sequence[Any]) -> Any:
        outcome = self._success
        for item in batch:
            try:
                result = self._exporter.export([item])
            except Exception:
                logger.exception("crackle pattern exporter %s raised on one item", type(self._exporter).__name__)
                result = None
            if result != self._success:
                outcome = result
            self._ledger.settle(1, self._cost_of(item), result == self._success)
        return outcome

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        try:
            return bool(self._exporter.force_flush(timeout_millis))
        except Exception:
            logger.exception("crackle pattern exporter flush failed")
            return False

    def interrupt(self) -> None:
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            self._exporter.shutdown()
        except Exception:
            logger.exception("crackle pattern exporter shutdown failed")

    def shutdown(self, timeout_millis: int = 30_000, **_: Any) -> None:
        self.interrupt()


def written_stats(written: int, dropped: int, failed_writes: int = 0) -> dict[str, int]:
    """The counters of an emitter that writes each pattern at once (console, JSON lines): nothing is pending."""
    return {
        "patterns_received": written + dropped,
        "patterns_exported": written,
        "patterns_dropped": dropped,
        "patterns_pending": 0,
        "export_failures": failed_writes,
        "consecutive_export_failures": 0,
    }


DELIVERY_KEYS = ("patterns_exported", "patterns_dropped", "patterns_pending", "export_failures",
                 "consecutive_export_failures")
#: What ``Delivery.of`` reads besides ``DELIVERY_KEYS``.
SUMMARY_KEYS = (*DELIVERY_KEYS, "patterns_received", "events_exported", "events_dropped")


def delivery_counters(emitter: Any, analysis: dict[str, Any], keys: Sequence[str] = DELIVERY_KEYS) -> dict[str, int]:
    """What became of the reported patterns, for ``stats()`` of the processor and the gateway.

    ``analysis`` is ``Furnace.stats()``; with an emitter the counts add up:
    ``patterns_reported == patterns_exported + patterns_dropped + patterns_pending``
    (patterns in an ``emit()`` call that raised count as dropped). ``keys``: the emitter
    counters copied (``SUMMARY_KEYS`` for a ``Delivery`` summary); they include ``DELIVERY_KEYS``.
    """
    counters = dict.fromkeys(keys, 0)
    if emitter is None:
        return counters
    try:
        emitted = emitter.stats()
    except Exception:
        logger.debug("crackle: emitter stats failed", exc_info=True)
        emitted = {}
    for key in keys:
        counters[key] = int(emitted.get(key, 0))
    counters["patterns_dropped"] += int(analysis.get("patterns_emit_failed", 0))
    return counters


@dataclass(frozen=True)
class Delivery:
    """An emitter's outcome in words, for the summaries of demo, analyze and serve: only what the
    backend confirmed counts as exported, drops are named, "nothing arrived" is a verdict for the exit status."""

    patterns: int  # handed to the emitter
    exported: int  # patterns whose span the backend accepted
    dropped: int  # patterns that will never arrive (queue full, export failed, shutdown)
    pending: int  # still queued
    events_exported: int  # crackle.pattern events the backend accepted
    events_dropped: int

    @classmethod
    def of(cls, stats: Mapping[str, int]) -> "Delivery":
        return cls(
            patterns=int(stats.get("patterns_received", 0)),
            exported=int(stats.get("patterns_exported", 0)),
            dropped=int(stats.get("patterns_dropped", 0)),
            pending=int(stats.get("patterns_pending", 0)),
            events_exported=int(stats.get("events_exported", 0)),
            events_dropped=int(stats.get("events_dropped", 0)),
        )

    @property
    def nothing_delivered(self) -> bool:
        """There was something to send and none of it arrived (no span, no event)."""
        return self.patterns > 0 and self.exported == 0 and self.events_exported == 0

    def describe(self) -> str:
        """E.g. '13 of 13 patterns exported as spans and 0 as events (13 events dropped)'."""
        lost = [f"{self.dropped} pattern{_s(self.dropped)} dropped"] if self.dropped else []
        if self.events_dropped:
            lost.append(f"{self.events_dropped} event{_s(self.events_dropped)} dropped")
        if self.pending:
            lost.append(f"{self.pending} still queued")
        return (f"{self.exported} of {self.patterns} pattern{_s(self.patterns)} exported as spans and "
                f"{self.events_exported} as events" + (f" ({', '.join(lost)})" if lost else ""))


def _s(count: int) -> str:
    return "" if count == 1 else "s"
