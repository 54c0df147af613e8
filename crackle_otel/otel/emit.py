"""Patterns out: each Pattern becomes a span with links to the involved spans, and an OTel event.

The span ``crackle.pattern <kind>`` links to every involved span that has an
identity ``(trace_id, span_id)`` (most relevant first, up to ``max_links``); the
event is a log record named ``crackle.pattern`` emitted in the pattern span's
context, so a backend can jump from the event to the span and from the span to
the spans that made the pattern.

Both go through private providers (never the application's global ones) and
the SDK's batch processors with bounded queues, so ``emit`` only appends to a
queue: a dead backend costs at most ``max_queue_size`` items per signal and
counted drops, never a blocked or crashed host.
"""

from __future__ import annotations

import atexit
import logging
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


def pattern_attributes(pattern: Pattern) -> dict[str, Any]:
    """The ``crackle.pattern.*`` attributes shared by the pattern span and the event."""
    attributes: dict[str, Any] = {
        "crackle.pattern.kind": pattern.kind.slug,
        "crackle.pattern.confidence": float(pattern.confidence),
        "crackle.pattern.group": pattern.group,
        "crackle.pattern.key": pattern.key,
        "crackle.pattern.metrics": tuple(str(name) for name in pattern.metrics),
        "crackle.pattern.description": pattern.description,
        "crackle.pattern.involved_count": len(pattern.involved),
    }
    for name, value in pattern.statistics.items():
        attributes[f"crackle.pattern.stat.{name}"] = float(value)
    for name, text in pattern.explanation.items():
        attributes[f"crackle.pattern.why.{name}"] = str(text)
    return attributes


def span_context_of(identity: Any) -> SpanContext | None:
    """The remote SpanContext an identity ``(trace_id, span_id)`` points at, or None if it is not one."""
    if not isinstance(identity, tuple) or len(identity) != 2:
        return None
    trace_id, span_id = identity
    if not isinstance(trace_id, int) or not isinstance(span_id, int) or isinstance(trace_id, bool):
        return None
    if not (0 < trace_id <= _MAX_TRACE_ID and 0 < span_id <= _MAX_SPAN_ID):
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))


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
                    "crackle.role": task.role,
                    "crackle.task.label": task.label,
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


class _CountingExporter:
    """Counts what the batch processor hands the real exporter, and can cut a stuck export short.

    ``handed`` lets the emitter mirror the processor's bounded queue (and so count the
    oldest items it silently evicts); ``interrupt`` shuts the real exporter down once,
    which makes the OTLP exporters abandon their retry back-off.
    """

    def __init__(self, exporter: Any, success: Any) -> None:
        self._exporter = exporter
        self._success = success
        self._lock = threading.Lock()
        self._stopped = False
        self.handed = 0
        self.exported = 0
        self.failed = 0
        reinit_after_fork(self._fresh_lock_after_fork)

    def _fresh_lock_after_fork(self) -> None:
        self._lock = threading.Lock()

    def export(self, batch: Sequence[Any]) -> Any:
        with self._lock:
            self.handed += len(batch)
        try:
            result = self._exporter.export(batch)
        except Exception:  # an exporter bug must not kill the processor's worker
            logger.exception("crackle pattern exporter %s raised", type(self._exporter).__name__)
            result = None
        with self._lock:
            if result == self._success:
                self.exported += len(batch)
            else:
                self.failed += len(batch)
        return result

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        try:
            return bool(self._exporter.force_flush(timeout_millis))
        except Exception:
            logger.exception("crackle pattern exporter flush failed")
            return False

    def interrupt(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            self._exporter.shutdown()
        except Exception:
            logger.exception("crackle pattern exporter shutdown failed")

    def shutdown(self, timeout_millis: int = 30_000, **_: Any) -> None:
        self.interrupt()


class _SpanExporterAdapter(_CountingExporter, SpanExporter):
    def __init__(self, exporter: SpanExporter) -> None:
        _CountingExporter.__init__(self, exporter, SpanExportResult.SUCCESS)


class _LogExporterAdapter(_CountingExporter, LogRecordExporter):
    def __init__(self, exporter: LogRecordExporter) -> None:
        _CountingExporter.__init__(self, exporter, LogRecordExportResult.SUCCESS)


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
        export_timeout_millis: int = 10_000,
    ) -> None:
        if max_links < 0:
            raise ValueError("max_links must be >= 0")
        if max_queue_size < 1:
            raise ValueError("max_queue_size must be at least 1")
        if export_timeout_millis <= 0:
            raise ValueError("export_timeout_millis must be positive")
        self.max_links = max_links
        self.max_queue_size = max_queue_size
        self.export_timeout_millis = export_timeout_millis
        self._lock = threading.Lock()
        self._closed = False
        self._flush_lock = threading.Lock()
        reinit_after_fork(self._fresh_locks_after_fork)
        self._flush_threads: list[threading.Thread] = []
        self._emitted = 0
        self._dropped = 0
        self._events_dropped = 0
        self._build_failures = 0
        self._accepted_spans = 0
        self._accepted_events = 0
        resource = resource if resource is not None else Resource.create()
        batch = min(512, max_queue_size)

        self._span_exporter = _SpanExporterAdapter(span_exporter) if span_exporter is not None else None
        self._tracer_provider: TracerProvider | None = None
        self._tracer = None
        if self._span_exporter is not None:
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

        self._log_exporter = _LogExporterAdapter(log_exporter) if log_exporter is not None else None
        self._logger_provider: LoggerProvider | None = None
        self._event_logger = None
        if self._log_exporter is not None:
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

    # ------------------------------------------------------------------ emitting
    def emit(self, patterns: Sequence[Pattern]) -> None:
        """Queue each pattern as a span and an event. Never blocks on the network, never raises."""
        try:
            patterns = list(patterns)
        except Exception:
            logger.exception("crackle emit: patterns are not iterable")
            return
        for pattern in patterns:
            try:
                self._emit_one(pattern)
            except Exception:  # one bad pattern must not lose the others, nor reach the caller
                logger.exception("crackle emit: could not build telemetry for a pattern")
                with self._lock:
                    self._build_failures += 1
                    self._dropped += 1

    def _emit_one(self, pattern: Pattern) -> None:
        # Build everything that can fail before counting the pattern as emitted.
        attributes = pattern_attributes(pattern)
        now_ns = time.time_ns()
        links = pattern_links(pattern, self.max_links) if self._tracer is not None else []
        start_ns, end_ns = evidence_window_ns(pattern, now_ns)
        with self._lock:
            if self._closed:
                self._dropped += 1
                return
            # Mirror the batch processors' bounded deques: a full queue evicts its oldest item.
            if self._span_exporter is not None:
                if self._accepted_spans - self._span_exporter.handed >= self.max_queue_size:
                    self._dropped += 1
                self._accepted_spans += 1
            if self._log_exporter is not None:
                if self._accepted_events - self._log_exporter.handed >= self.max_queue_size:
                    self._events_dropped += 1
                self._accepted_events += 1
            self._emitted += 1
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
                body=pattern.description,
                attributes=attributes,
                event_name=EVENT_NAME,
            )

    # ------------------------------------------------------------- lifecycle
    def _providers(self) -> list[Any]:
        return [p for p in (self._tracer_provider, self._logger_provider) if p is not None]

    def _adapters(self) -> list[_CountingExporter]:
        return [a for a in (self._span_exporter, self._log_exporter) if a is not None]

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
            failures_before = sum(adapter.failed for adapter in self._adapters())
            deadline = time.monotonic() + timeout_millis / 1000
            # The SDK's flush ignores its timeout and blocks on the export: wait in threads instead.
            jobs = [lambda p=p: p.force_flush(timeout_millis) for p in self._providers()]
            self._flush_threads = _run_bounded(jobs, deadline)
            failures_after = sum(adapter.failed for adapter in self._adapters())
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
        with self._lock:
            if self._span_exporter is not None:
                self._dropped += max(0, self._accepted_spans - self._span_exporter.handed)
                self._accepted_spans = self._span_exporter.handed

    def stats(self) -> dict[str, int]:
        """Counters: patterns emitted (queued) and dropped, and what the exporters did with them."""
        with self._lock:
            stats = {
                "patterns_emitted": self._emitted,
                "patterns_dropped": self._dropped,
                "events_dropped": self._events_dropped,
                "build_failures": self._build_failures,
                "spans_exported": 0,
                "events_exported": 0,
                "export_failures": 0,
            }
        if self._span_exporter is not None:
            stats["spans_exported"] = self._span_exporter.exported
            stats["export_failures"] += self._span_exporter.failed
        if self._log_exporter is not None:
            stats["events_exported"] = self._log_exporter.exported
            stats["export_failures"] += self._log_exporter.failed
        return stats


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
        self._emitted = 0
        self._dropped = 0
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
        return line

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
                    self._emitted += 1
                except Exception:  # a closed or broken stream must not reach the caller
                    self._dropped += 1
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
            return {"patterns_emitted": self._emitted, "patterns_dropped": self._dropped}


def _task_id(task: Any) -> str:
    context = span_context_of(task.identity)
    if context is not None:
        return f"{context.trace_id:032x}/{context.span_id:016x}"
    return f"{task.label}#{task.index}"
