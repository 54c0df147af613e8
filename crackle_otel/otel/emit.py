"""Patterns out: each Pattern becomes a span with links to the involved spans, and an OTel event.

The span ``crackle.pattern <kind>`` links to every involved span that has an
identity ``(trace_id, span_id)`` (most relevant first, up to ``max_links``); the
event is a log record named ``crackle.pattern`` emitted in the pattern span's
context, so a backend can jump from the event to the span and from the span to
the spans that made the pattern.

Both go through private providers (never the application's global ones) and
the SDK's batch processors with bounded queues, so ``emit`` only appends to a
queue: a dead backend costs at most ``max_queue_size`` patterns (and about
``max_queue_bytes``) and counted drops, never a blocked or crashed host.

Every pattern handed to ``emit`` is counted once, and the counts add up
(``delivery`` keeps the books)::

    patterns_received == patterns_exported + patterns_dropped + patterns_pending

Text that protobuf cannot encode (a lone surrogate from a badly decoded span
name) is replaced before it is queued, so one odd character never fails a batch.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import sys
import threading
import time
import weakref
from typing import IO, Any, Callable, Literal, Mapping, Sequence
from urllib.parse import urlparse

from opentelemetry import trace as trace_api
from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Link, SpanContext, TraceFlags

from ..patterns import Pattern, PatternKind
from .delivery import CountingExporter, Ledger, written_stats
from .forking import reinit_after_fork

logger = logging.getLogger(__name__)

#: Instrumentation scope of every pattern span and event; the span processor skips this scope.
INSTRUMENTATION_SCOPE = "crackle_otel"
EVENT_NAME = "crackle.pattern"
SPAN_NAME_PREFIX = "crackle.pattern"

# Kinds that say "something deviates from normal" go out as WARN; structure (clusters,
# correlations, conservation laws) as INFO.
_WARN_KINDS = frozenset({PatternKind.OUTLIER, PatternKind.CONSERVATION_VIOLATION, PatternKind.PHASE_TRANSITION})

# Evidence timestamps before 2001 are not wall-clock times (e.g. row numbers in a test
# matrix); a span dated 1970 would be hidden by every backend, so such spans use "now".
_PLAUSIBLE_EPOCH_S = 1e9
_MAX_FUTURE_S = 86_400.0

_MAX_TRACE_ID = 2**128 - 1
_MAX_SPAN_ID = 2**64 - 1

# A slice of the shutdown budget kept back to interrupt an export stuck in retries.
_INTERRUPT_GRACE_S = 1.0
_FULL_WARNING_INTERVAL_S = 10.0

# Memory held by a queued pattern, measured with tracemalloc (SDK 1.45): a span ~3.5 kB plus
# ~0.7 kB per link (128 links: ~88 kB), an event ~1.4 kB. Rounded up: the byte bound is an estimate.
SPAN_COST_BYTES = 4096
LINK_COST_BYTES = 768
EVENT_COST_BYTES = 2048
DEFAULT_MAX_QUEUE_BYTES = 16 * 1024 * 1024


def encodable(text: str) -> str:
    """``text`` as it can be sent: a lone surrogate (undecodable bytes) becomes a visible ``\\udce9`` escape."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def pattern_attributes(pattern: Pattern) -> dict[str, Any]:
    """The ``crackle.pattern.*`` attributes shared by the pattern span and the event."""
    attributes: dict[str, Any] = {
        "crackle.pattern.kind": pattern.kind.slug,
        "crackle.pattern.confidence": float(pattern.confidence),
        "crackle.pattern.group": encodable(str(pattern.group)),
        "crackle.pattern.key": encodable(str(pattern.key)),
        "crackle.pattern.metrics": tuple(encodable(str(name)) for name in pattern.metrics),
        "crackle.pattern.description": encodable(str(pattern.description)),
        "crackle.pattern.involved_count": len(pattern.involved),
    }
    for name, value in pattern.statistics.items():
        attributes[encodable(f"crackle.pattern.stat.{name}")] = float(value)
    for name, text in pattern.explanation.items():
        attributes[encodable(f"crackle.pattern.why.{name}")] = encodable(str(text))
    return attributes


def span_context_of(identity: Any) -> SpanContext | None:
    """The remote SpanContext an identity ``(trace_id, span_id)`` points at, or None if it is not one."""
    ids = span_ids_of(identity)
    if ids is None:
        return None
    return SpanContext(ids[0], ids[1], is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))


def span_ids_of(identity: Any) -> tuple[int, int] | None:
    """(trace_id, span_id) when an identity is a span's, else None (``span_context_of`` without the object)."""
    if not isinstance(identity, tuple) or len(identity) != 2:
        return None
    trace_id, span_id = identity
    if not isinstance(trace_id, int) or not isinstance(span_id, int) or isinstance(trace_id, bool):
        return None
    if not (0 < trace_id <= _MAX_TRACE_ID and 0 < span_id <= _MAX_SPAN_ID):
        return None
    return trace_id, span_id


def pattern_links(pattern: Pattern, max_links: int) -> list[Link]:
    """Links to the involved spans in the pattern's order (most relevant first), at most ``max_links``.

    Tasks without a span identity are skipped: they still count in ``involved_count``.
    """
    links: list[Link] = []
    for task in pattern.involved:
        if len(links) >= max_links:
            break
        context = span_context_of(task.identity)
        if context is None:
            continue
        links.append(
            Link(
                context,
                attributes={
                    "crackle.role": encodable(str(task.role)),
                    "crackle.task.label": encodable(str(task.label)),
                    "crackle.task.index": int(task.index),
                },
            )
        )
    return links


def evidence_window_ns(pattern: Pattern, now_ns: int) -> tuple[int, int]:
    """(start, end) of the time the evidence covers, in ns; (now, now) when there is none."""
    stamps = [task.timestamp for task in pattern.involved]
    if not stamps:
        return now_ns, now_ns
    first, last = min(stamps), max(stamps)
    if first < _PLAUSIBLE_EPOCH_S or last > now_ns / 1e9 + _MAX_FUTURE_S:
        return now_ns, now_ns
    return int(first * 1e9), int(last * 1e9)


class _SpanExporterAdapter(CountingExporter, SpanExporter):
    def __init__(self, exporter: SpanExporter, ledger: Ledger) -> None:
        CountingExporter.__init__(self, exporter, SpanExportResult.SUCCESS, ledger, _span_cost_of)


class _LogExporterAdapter(CountingExporter, LogRecordExporter):
    def __init__(self, exporter: LogRecordExporter, ledger: Ledger) -> None:
        CountingExporter.__init__(self, exporter, LogRecordExportResult.SUCCESS, ledger, _event_cost_of)


def _span_cost(links: int) -> int:
    return SPAN_COST_BYTES + LINK_COST_BYTES * links


def _span_cost_of(span: Any) -> int:
    return _span_cost(len(getattr(span, "links", ()) or ()))


def _event_cost_of(_record: Any) -> int:
    return EVENT_COST_BYTES


def _run_bounded(jobs: Sequence[Callable[[], Any]], deadline: float) -> list[threading.Thread]:
    """Run jobs in parallel daemon threads; wait until ``deadline`` (monotonic). Returns those still running."""
    threads = [threading.Thread(target=_quietly(job), name="crackle-emit-wait", daemon=True) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [thread for thread in threads if thread.is_alive()]


def _quietly(job: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        try:
            job()
        except Exception:
            logger.exception("crackle pattern pipeline: flush/shutdown step failed")

    return run


class PatternEmitter:
    """Sends patterns to any span/log exporter (OTLP by ``PatternEmitter.otlp()``).

    ``emit`` never blocks on the network and never raises; ``force_flush`` and
    ``shutdown`` return within their timeout even if the backend is dead.
    """

    def __init__(
        self,
        *,
        span_exporter: SpanExporter | None = None,
        log_exporter: LogRecordExporter | None = None,
        resource: Resource | None = None,
        max_links: int = 128,
        max_queue_size: int = 2048,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        export_timeout_millis: int = 10_000,
    ) -> None:
        if max_links < 0:
            raise ValueError("max_links must be >= 0")
        if max_queue_size < 1:
            raise ValueError("max_queue_size must be at least 1")
        if max_queue_bytes < 1:
            raise ValueError("max_queue_bytes must be at least 1")
        if export_timeout_millis <= 0:
            raise ValueError("export_timeout_millis must be positive")
        self.max_links = max_links
        self.max_queue_size = max_queue_size
        self.max_queue_bytes = max_queue_bytes
        self.export_timeout_millis = export_timeout_millis
        self._lock = threading.Lock()  # pattern counters and both ledgers
        self._closed = False
        self._flush_lock = threading.Lock()
        reinit_after_fork(self._fresh_locks_after_fork)
        self._flush_threads: list[threading.Thread] = []
        self._received = 0
        self._dropped_build_failed = 0
        self._dropped_queue_full = 0
        self._dropped_closed = 0
        self._last_full_warning = -math.inf
        resource = resource if resource is not None else Resource.create()
        batch = min(512, max_queue_size)

        self._span_ledger: Ledger | None = None
        self._span_exporter: _SpanExporterAdapter | None = None
        self._tracer_provider: TracerProvider | None = None
        self._tracer = None
        if span_exporter is not None:
            self._span_ledger = Ledger(self._lock, max_items=max_queue_size, max_bytes=max_queue_bytes)
            self._span_exporter = _SpanExporterAdapter(span_exporter, self._span_ledger)
            # Private provider: never the app's (whose processors would analyse or sample our
            # spans). ALWAYS_ON because patterns are rare and an OTEL_TRACES_SAMPLER ratio meant
            # for request spans would silently lose findings.
            self._tracer_provider = TracerProvider(
                resource=resource,
                sampler=ALWAYS_ON,
                span_limits=SpanLimits(max_links=max_links),
                shutdown_on_exit=False,
            )
            self._tracer_provider.add_span_processor(
                BatchSpanProcessor(
                    self._span_exporter,
                    max_queue_size=max_queue_size,
                    max_export_batch_size=batch,
                    export_timeout_millis=export_timeout_millis,
                )
            )
            self._tracer = self._tracer_provider.get_tracer(INSTRUMENTATION_SCOPE)

        self._event_ledger: Ledger | None = None
        self._log_exporter: _LogExporterAdapter | None = None
        self._logger_provider: LoggerProvider | None = None
        self._event_logger = None
        if log_exporter is not None:
            self._event_ledger = Ledger(self._lock, max_items=max_queue_size, max_bytes=max_queue_bytes)
            self._log_exporter = _LogExporterAdapter(log_exporter, self._event_ledger)
            self._logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
            self._logger_provider.add_log_record_processor(
                BatchLogRecordProcessor(
                    self._log_exporter,
                    max_queue_size=max_queue_size,
                    max_export_batch_size=batch,
                    export_timeout_millis=export_timeout_millis,
                )
            )
            self._event_logger = self._logger_provider.get_logger(INSTRUMENTATION_SCOPE)

        # The SDK's own exit hooks would wait unboundedly on a dead backend; ours is bounded.
        self_ref = weakref.ref(self)

        def _at_exit() -> None:
            emitter = self_ref()
            if emitter is not None:
                emitter.shutdown(timeout_millis=emitter.export_timeout_millis)

        self._at_exit = _at_exit
        atexit.register(_at_exit)

    # ------------------------------------------------------------ construction
    @classmethod
    def otlp(
        cls,
        endpoint: str | None = None,
        protocol: Literal["grpc", "http/protobuf"] | None = None,
        headers: Mapping[str, str] | None = None,
        insecure: bool | None = None,
        resource: Resource | None = None,
        **kw: Any,
    ) -> "PatternEmitter":
        """An emitter with the standard OTLP span and log exporters.

        ``endpoint`` is a base endpoint like ``OTEL_EXPORTER_OTLP_ENDPOINT``
        (``http://collector:4317`` for gRPC, ``http://collector:4318`` for HTTP,
        where ``/v1/traces`` and ``/v1/logs`` are appended unless the URL
        already names a path). Anything not given (endpoint, headers, TLS,
        timeout, compression) is read by the exporters themselves from the
        ``OTEL_EXPORTER_OTLP_*`` variables. ``protocol`` defaults, per signal,
        to ``OTEL_EXPORTER_OTLP_{TRACES,LOGS}_PROTOCOL``, then
        ``OTEL_EXPORTER_OTLP_PROTOCOL``, then ``grpc`` (as the SDK's configurator does).
        Other keyword arguments go to the constructor.
        """
        # The batch processors ignore export_timeout_millis; the exporter's own timeout is what
        # bounds one export (its retries included), so that is where it goes when given.
        timeout_s = kw["export_timeout_millis"] / 1000 if "export_timeout_millis" in kw else None
        span_exporter = _otlp_exporter("traces", endpoint, protocol, headers, insecure, timeout_s)
        log_exporter = _otlp_exporter("logs", endpoint, protocol, headers, insecure, timeout_s)
        return cls(span_exporter=span_exporter, log_exporter=log_exporter, resource=resource, **kw)

    def _fresh_locks_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        for ledger in self._ledgers():
            ledger.lock = self._lock

    def _ledgers(self) -> list[Ledger]:
        return [ledger for ledger in (self._span_ledger, self._event_ledger) if ledger is not None]

    # ------------------------------------------------------------------ emitting
    def emit(self, patterns: Sequence[Pattern]) -> None:
        """Queue each pattern as a span and an event. Never blocks on the network, never raises."""
        try:
            patterns = list(patterns)
        except Exception:
            logger.exception("crackle emit: patterns are not iterable")
            return
        for pattern in patterns:
            with self._lock:
                self._received += 1
            try:
                self._emit_one(pattern)
            except Exception:  # one bad pattern must not lose the others, nor reach the caller
                logger.exception("crackle emit: could not build telemetry for a pattern")
                with self._lock:
                    self._dropped_build_failed += 1

    def _emit_one(self, pattern: Pattern) -> None:
        # Build everything that can fail before the pattern is admitted to a queue.
        attributes = pattern_attributes(pattern)
        description = attributes["crackle.pattern.description"]
        now_ns = time.time_ns()
        links = pattern_links(pattern, self.max_links) if self._tracer is not None else []
        start_ns, end_ns = evidence_window_ns(pattern, now_ns)
        if not self._admit(len(links)):
            return
        # Never the caller's context: the event belongs to the pattern span only. (An empty
        # Context is falsy and the SDK would then take the current one; INVALID_SPAN is not.)
        event_context = trace_api.set_span_in_context(trace_api.INVALID_SPAN, Context())
        if self._tracer is not None:
            span = self._tracer.start_span(
                f"{SPAN_NAME_PREFIX} {pattern.kind.slug}",
                context=Context(),  # a root span: not a child of whatever the caller is doing
                attributes={**attributes, "crackle.pattern.linked_count": len(links)},
                links=links,
                start_time=start_ns,
            )
            span.end(end_time=end_ns)
            event_context = trace_api.set_span_in_context(span, Context())
        if self._event_logger is not None:
            self._event_logger.emit(
                timestamp=now_ns,  # without it the record goes out with timestamp 0
                context=event_context,  # carries the pattern span's trace and span id
                severity_number=SeverityNumber.WARN if pattern.kind in _WARN_KINDS else SeverityNumber.INFO,
                severity_text="WARN" if pattern.kind in _WARN_KINDS else "INFO",
                body=description,
                attributes=attributes,
                event_name=EVENT_NAME,
            )

    def _admit(self, links: int) -> bool:
        """Admit one pattern to every signal's queue, or count it dropped (closed, or a queue is full)."""
        costs = [(self._span_ledger, _span_cost(links)), (self._event_ledger, EVENT_COST_BYTES)]
        costs = [(ledger, cost) for ledger, cost in costs if ledger is not None]
        with self._lock:
            if self._closed:
                self._dropped_closed += 1
                return False
            if not all(ledger.has_room(cost) for ledger, cost in costs):
                self._dropped_queue_full += 1
                warn = time.monotonic() - self._last_full_warning >= _FULL_WARNING_INTERVAL_S
                if warn:
                    self._last_full_warning = time.monotonic()
            else:
                for ledger, cost in costs:
                    ledger.admit(cost)
                return True
        if warn:
            logger.warning("crackle emit: export queue full (backend slow or down?); dropping new patterns")
        return False

    # ------------------------------------------------------------- lifecycle
    def _providers(self) -> list[Any]:
        return [p for p in (self._tracer_provider, self._logger_provider) if p is not None]

    def _adapters(self) -> list[CountingExporter]:
        return [a for a in (self._span_exporter, self._log_exporter) if a is not None]

    def _failed_exports(self) -> int:
        with self._lock:
            return sum(ledger.failed_exports for ledger in self._ledgers())

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export what is queued. True if it all went out before the timeout.

        False when the timeout passed first (the export goes on in the background)
        or an export failed. ``emit`` is never held up by a flush.
        """
        if self._closed or not self._flush_lock.acquire(blocking=False):
            return False  # closed, or an earlier flush is still waiting on the backend
        try:
            if any(thread.is_alive() for thread in self._flush_threads):
                return False  # do not pile up threads behind a stuck export
            failures_before = self._failed_exports()
            deadline = time.monotonic() + timeout_millis / 1000
            # The SDK's flush ignores its timeout and blocks on the export: wait in threads instead.
            jobs = [lambda p=p: p.force_flush(timeout_millis) for p in self._providers()]
            self._flush_threads = _run_bounded(jobs, deadline)
            failures_after = self._failed_exports()
            return not self._flush_threads and failures_after == failures_before
        finally:
            self._flush_lock.release()

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        """Export what is left and stop; returns within ``timeout_millis`` even if the backend is dead."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            atexit.unregister(self._at_exit)
        except Exception:
            pass
        timeout_s = max(0.0, timeout_millis / 1000)
        deadline = time.monotonic() + timeout_s
        grace = min(_INTERRUPT_GRACE_S, timeout_s / 4)
        jobs = [p.shutdown for p in self._providers()]
        stuck = _run_bounded(jobs, deadline - grace)
        if stuck:
            # An export is sleeping in the OTLP retry back-off: shutting the exporter down wakes it.
            logger.warning("crackle emit: backend did not answer within the shutdown timeout; abandoning queued patterns")
            for adapter in self._adapters():
                adapter.interrupt()
            for thread in stuck:
                thread.join(max(0.0, deadline - time.monotonic()))
        for ledger in self._ledgers():
            ledger.seal()  # what is still queued or stuck in an export is dropped, counted once

    def stats(self) -> dict[str, int]:
        """Counters that add up: ``patterns_received == patterns_exported + patterns_dropped + patterns_pending``.

        A pattern is exported when its span is (its event when there is no span
        exporter); ``patterns_dropped`` = ``_queue_full`` (dropped on arrival:
        a queue at its item or byte limit) + ``_export_failed`` (the exporter
        gave up on its batch) + ``_build_failed`` + ``_shutdown`` (arrived
        after shutdown, or still queued when it ended). ``export_failures``
        counts failed export calls of both signals; ``consecutive_export_failures``
        is > 0 while the latest export of some signal failed. Events have their
        own ``events_exported`` / ``events_dropped``.
        """
        with self._lock:
            primary = self._span_ledger if self._span_ledger is not None else self._event_ledger
            events = self._event_ledger
            export_failed = primary.failed if primary is not None else 0
            abandoned = primary.abandoned if primary is not None else 0
            dropped_on_arrival = self._dropped_queue_full + self._dropped_closed + self._dropped_build_failed
            return {
                "patterns_received": self._received,
                "patterns_exported": primary.exported if primary is not None else 0,
                "patterns_dropped": dropped_on_arrival + export_failed + abandoned,
                "patterns_pending": primary.pending if primary is not None else 0,
                "patterns_dropped_queue_full": self._dropped_queue_full,
                "patterns_dropped_export_failed": export_failed,
                "patterns_dropped_build_failed": self._dropped_build_failed,
                "patterns_dropped_shutdown": self._dropped_closed + abandoned,
                "export_failures": sum(ledger.failed_exports for ledger in self._ledgers()),
                "consecutive_export_failures": max((l.consecutive_failed_exports for l in self._ledgers()), default=0),
                "spans_exported": self._span_ledger.exported if self._span_ledger is not None else 0,
                "events_exported": events.exported if events is not None else 0,
                "events_dropped": (dropped_on_arrival + events.failed + events.abandoned) if events is not None else 0,
                "queue_bytes": sum(ledger.pending_bytes for ledger in self._ledgers()),
            }


def _otlp_protocol(signal: str, protocol: str | None) -> str:
    chosen = (
        protocol
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    ).strip()
    if chosen not in ("grpc", "http/protobuf"):
        raise ValueError(f"OTLP protocol must be 'grpc' or 'http/protobuf', got {chosen!r}")
    return chosen


def _http_signal_url(endpoint: str, signal: str) -> str:
    if urlparse(endpoint).path.strip("/"):
        return endpoint  # the caller named the full URL
    return endpoint.rstrip("/") + f"/v1/{signal}"


def _otlp_exporter(
    signal: str,
    endpoint: str | None,
    protocol: str | None,
    headers: Mapping[str, str] | None,
    insecure: bool | None,
    timeout_s: float | None = None,
) -> Any:
    """The standard OTLP exporter for ``signal`` ("traces" or "logs"); None arguments are left to the env."""
    kwargs: dict[str, Any] = {}
    if headers is not None:
        kwargs["headers"] = dict(headers)
    if timeout_s is not None:
        kwargs["timeout"] = timeout_s
    if _otlp_protocol(signal, protocol) == "grpc":
        if endpoint is not None:
            kwargs["endpoint"] = endpoint
        if insecure is not None:
            kwargs["insecure"] = insecure
        if signal == "traces":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter(**kwargs)
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter(**kwargs)
    if endpoint is not None:
        kwargs["endpoint"] = _http_signal_url(endpoint, signal)
    if signal == "traces":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPSpanExporter

        return HTTPSpanExporter(**kwargs)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HTTPLogExporter

    return HTTPLogExporter(**kwargs)


class ConsoleEmitter:
    """Prints one line per pattern (demos, debugging): the pattern, its *why*, its group and its most
    relevant involved task(s) as trace/span ids to look up in a tracing UI."""

    def __init__(self, stream: IO[str] | None = None, *, max_tasks_shown: int = 1) -> None:
        self._stream = stream
        self.max_tasks_shown = max_tasks_shown
        self._lock = threading.Lock()
        self._closed = False
        self._written = 0
        self._dropped = 0
        self._failed_writes = 0
        reinit_after_fork(self._fresh_lock_after_fork)

    def _fresh_lock_after_fork(self) -> None:
        self._lock = threading.Lock()

    @property
    def stream(self) -> IO[str]:
        # Resolved late so a replaced sys.stdout (pytest's capsys, a redirect) is honoured.
        return self._stream if self._stream is not None else sys.stdout

    @staticmethod
    def format(pattern: Pattern, max_tasks_shown: int = 1) -> str:
        line = str(pattern)
        if pattern.explanation:
            line += "  why: " + "; ".join(f"{key}={text}" for key, text in pattern.explanation.items())
        if pattern.group:
            line += f"  group={pattern.group}"
        if pattern.involved:
            shown = ", ".join(_task_id(task) for task in pattern.involved[:max_tasks_shown])
            more = len(pattern.involved) - max_tasks_shown
            line += f"  tasks={shown}" + (f" (+{more} more)" if more > 0 else "")
        return encodable(line)

    def emit(self, patterns: Sequence[Pattern]) -> None:
        try:
            patterns = list(patterns)
        except Exception:
            logger.exception("crackle console emit: patterns are not iterable")
            return
        with self._lock:
            for pattern in patterns:
                if self._closed:
                    self._dropped += 1
                    continue
                try:
                    self.stream.write(self.format(pattern, self.max_tasks_shown) + "\n")
                    self._written += 1
                except Exception:  # a closed or broken stream must not reach the caller
                    self._dropped += 1
                    self._failed_writes += 1
                    logger.debug("crackle console emit failed", exc_info=True)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        try:
            self.stream.flush()
            return True
        except Exception:
            return False

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        self.force_flush(timeout_millis)
        with self._lock:
            self._closed = True

    def stats(self) -> dict[str, int]:
        with self._lock:
            return written_stats(self._written, self._dropped, self._failed_writes)


def _task_id(task: Any) -> str:
    context = span_context_of(task.identity)
    if context is not None:
        return f"{context.trace_id:032x}/{context.span_id:016x}"
    return f"{task.label}#{task.index}"
