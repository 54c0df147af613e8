"""The bounded queue between the network side and the consumer.

The network side only decodes, counts and enqueues; ONE worker thread calls the
consumer, so a slow consumer costs queue space, never a network thread. The
queue is bounded in requests and in bytes: a request's bytes are reserved
(``reserve``) before its body is read or decoded, held while it waits and
released once it is consumed, so everything accepted and not yet consumed fits
in ``max_queue_bytes``. A full queue is refused (the transport tells the sender
to retry), never dropped. Queued requests are kept as their protobuf wire bytes
(a parsed request takes several times its wire size) and parsed by the worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from .signals import SIGNALS, Signal

logger = logging.getLogger(__name__)

_STOP = object()  # worker sentinel


@dataclass(frozen=True)
class Verdict:
    """What the transport should answer for one export request."""

    accepted: bool
    refusal: str = ""  # "full" or "stopping" when not accepted
    rejected_items: int = 0  # partial success reported by the consumer
    message: str = ""


class Reservation:
    """Bytes of the budget held for one request, from before its body is read until it is consumed."""

    __slots__ = ("size", "released")

    def __init__(self, size: int) -> None:
        self.size = size
        self.released = False


class RateLimitedLog:
    """Logs one warning per kind per interval and says how many were suppressed."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(kind, -self._interval_s) < self._interval_s:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += " (%d similar suppressed)"
            args = (*args, suppressed)
        logger.warning(message, *args)


_COUNTERS = (
    "requests",
    "requests_accepted",
    "requests_consumed",
    *(signal.received_stat for signal in SIGNALS),
    "rejected_full",
    "rejected_full_items",
    "rejected_malformed",
    "rejected_oversized",
    "rejected_stopping",
    "rejected_unauthenticated",
    "rejected_timeout",
    "consumer_rejected_items",
    "consumer_errors",
)


def parse_consumer_result(result: Any, item_count: int) -> tuple[int, str]:
    """A consumer returns None, a rejected-item count, or (count, message)."""
    if result is None:
        return 0, ""
    if isinstance(result, tuple) and len(result) == 2:
        rejected, message = result
    else:
        rejected, message = result, ""
    rejected = max(0, min(int(rejected), item_count))
    return rejected, str(message or "")


class Intake:
    """Bounded queue + one consumer worker + the receiver's counters."""

    def __init__(
        self,
        consumer: Any,
        *,
        max_queue_size: int,
        max_queue_bytes: int,
        partial_success_wait_s: float,
        log: RateLimitedLog,
    ) -> None:
        if max_queue_size < 1:
            raise ValueError(f"max_queue_size must be >= 1, got {max_queue_size}")
        if max_queue_bytes < 1:
            raise ValueError(f"max_queue_bytes must be >= 1, got {max_queue_bytes}")
        if partial_success_wait_s < 0:
            raise ValueError(f"partial_success_wait_s must be >= 0, got {partial_success_wait_s}")
        self._handlers = {signal.name: getattr(consumer, signal.consumer_method, None) for signal in SIGNALS}
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue_size)
        self._max_queue_size = max_queue_size
        self._max_queue_bytes = max_queue_bytes
        self._reserved_bytes = 0
        self.partial_success_wait_s = partial_success_wait_s
        self._log = log
        # One lock for counters and for the accepting flag, so no request can
        # slip into the queue after drain() has put the sentinel. Re-entrant
        # because stop() may run in a signal handler that interrupted a holder.
        self._lock = threading.RLock()
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._accepting = False
        self._worker: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        self._worker = threading.Thread(target=self._run, name="crackle-otlp-consumer", daemon=True)
        with self._lock:
            self._accepting = True
        self._worker.start()

    def stop_accepting(self) -> None:
        with self._lock:
            self._accepting = False

    def drain(self, timeout_s: float) -> bool:
        """Let the worker consume what is queued, then end it. True if it finished in time."""
        self.stop_accepting()
        worker = self._worker
        if worker is None or not worker.is_alive():
            return True
        if worker is threading.current_thread():  # stop() called by the consumer itself
            return False
        deadline = time.monotonic() + max(0.0, timeout_s)
        try:
            self._queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
        except queue.Full:
            return False
        worker.join(max(0.0, deadline - time.monotonic()))
        # The worker may not have reached the sentinel yet; what matters is that every accepted request was consumed.
        return not worker.is_alive() or self.unconsumed() == 0

    def unconsumed(self) -> int:
        """Accepted requests the consumer has not finished (queued or in progress)."""
        with self._lock:
            return self._counters["requests_accepted"] - self._counters["requests_consumed"]

    @property
    def accepting(self) -> bool:
        return self._accepting

    # -- network side --------------------------------------------------------
    def reserve(self, size: int) -> Reservation | str:
        """Hold ``size`` bytes of the budget for a request about to be read; "full" or "stopping" if refused.

        A refusal counts as a request. A lone request larger than the budget is
        let in when nothing else is held (the message size limit bounds it).
        """
        with self._lock:
            if self._accepting and (self._reserved_bytes == 0 or self._reserved_bytes + size <= self._max_queue_bytes):
                self._reserved_bytes += size
                return Reservation(size)
            self._counters["requests"] += 1
            refusal = "stopping" if not self._accepting else "full"
            self._counters["rejected_stopping" if refusal == "stopping" else "rejected_full"] += 1
        if refusal == "full":
            self._log.warning("full", "OTLP receiver queue full (%d bytes held); asking senders to retry",
                              self._max_queue_bytes)
        return refusal

    def release(self, reservation: Reservation) -> None:
        with self._lock:
            if not reservation.released:
                reservation.released = True
                self._reserved_bytes -= reservation.size

    def submit(self, signal: Signal, payload: bytes, items: int,
               reservation: Reservation) -> tuple[Verdict, concurrent.futures.Future | None]:
        """Queue a decoded request (its protobuf bytes). With a future: the consumer's partial-success answer.

        The reservation is resized to the payload and released when the request is
        consumed (or at once, if it is refused here).
        """
        done: concurrent.futures.Future | None = concurrent.futures.Future() if self.partial_success_wait_s > 0 else None
        with self._lock:
            self._counters["requests"] += 1
            if not self._accepting:
                self._counters["rejected_stopping"] += 1
                refusal = "stopping"
            else:
                try:
                    self._queue.put_nowait((signal, payload, items, done, reservation))
                except queue.Full:
                    self._counters["rejected_full"] += 1
                    self._counters["rejected_full_items"] += items
                    refusal = "full"
                else:
                    self._reserved_bytes += len(payload) - reservation.size
                    reservation.size = len(payload)
                    self._counters["requests_accepted"] += 1
                    self._counters[signal.received_stat] += items
                    return Verdict(accepted=True), done
        self.release(reservation)
        if refusal == "full":
            self._log.warning("full", "OTLP receiver queue full (%d requests); asking senders to retry",
                              self._max_queue_size)
        return Verdict(accepted=False, refusal=refusal), None

    async def consumer_answer(self, done: concurrent.futures.Future | None) -> tuple[int, str]:
        """(rejected items, message) from the consumer if it answers within ``partial_success_wait_s``,
        else (0, ""): the request is queued either way. Awaited on the network loop."""
        if done is None:
            return 0, ""
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(done)), self.partial_success_wait_s)
        except asyncio.TimeoutError:
            return 0, ""  # the consumer's answer comes too late to be reported

    def note_unauthenticated(self, transport: str) -> None:
        with self._lock:
            self._counters["requests"] += 1
            self._counters["rejected_unauthenticated"] += 1
        self._log.warning("unauthenticated", "rejected an OTLP request over %s without the expected bearer token",
                          transport)

    def note_timeout(self, transport: str) -> None:
        """A call whose request did not arrive within the per-call deadline (a stalled or trickling sender)."""
        with self._lock:
            self._counters["requests"] += 1
            self._counters["rejected_timeout"] += 1
        self._log.warning("timeout", "gave up on an OTLP request over %s: its message did not arrive in time", transport)

    def note_malformed(self, transport: str, signal: Signal | None, error: object) -> None:
        with self._lock:
            self._counters["requests"] += 1
            self._counters["rejected_malformed"] += 1
        self._log.warning("malformed", "rejected malformed OTLP %s request over %s: %s",
                          signal.name if signal else "?", transport, error)

    def note_oversized(self, transport: str, signal: Signal | None, size: int | None, limit: int) -> None:
        with self._lock:
            self._counters["requests"] += 1
            self._counters["rejected_oversized"] += 1
        self._log.warning("oversized", "rejected oversized OTLP %s request over %s (%s bytes, limit %d)",
                          signal.name if signal else "?", transport, "?" if size is None else size, limit)

    def stats(self) -> dict[str, int]:
        with self._lock:
            counters = dict(self._counters)
            counters["queue_bytes"] = self._reserved_bytes
        counters["queue_depth"] = self._queue.qsize()
        counters["queue_capacity"] = self._max_queue_size
        counters["queue_bytes_capacity"] = self._max_queue_bytes
        return counters

    # -- worker side ---------------------------------------------------------
    def _run(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is _STOP:
                return
            signal, payload, items, done, reservation = entry
            rejected, message = self._consume(signal, payload, items)
            del payload, entry
            self.release(reservation)
            with self._lock:
                self._counters["requests_consumed"] += 1
                self._counters["consumer_rejected_items"] += rejected
            if done is not None and not done.done():
                done.set_result((rejected, message))

    def _consume(self, signal: Signal, payload: bytes, items: int) -> tuple[int, str]:
        handler = self._handlers[signal.name]
        if handler is None:
            return 0, ""
        try:
            return parse_consumer_result(handler(signal.request_type.FromString(payload)), items)
        except Exception as error:  # a consumer bug must not kill the worker
            with self._lock:
                self._counters["consumer_errors"] += 1
            self._log.warning("consumer", "OTLP consumer %s failed: %r", signal.consumer_method, error)
            return items, f"consumer failed: {type(error).__name__}"
