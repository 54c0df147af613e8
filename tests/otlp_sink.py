"""Test helper: an in-process OTLP receiver that collects what it receives.

    with OTLPSink() as sink:                       # gRPC and HTTP on free loopback ports
        exporter = OTLPSpanExporter(endpoint=sink.grpc_endpoint, insecure=True)
        ...
        spans = sink.wait_for_spans(lambda s: s.name == "checkout", count=3)
        assert spans[0].links[0].span_id == ...

Received telemetry is flattened into small frozen dataclasses with ids as
ints (the project's task identity is (trace_id, span_id)) and attributes as
plain dicts. ``pause()`` blocks the consumer to provoke back-pressure.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from crackle_otel.gateway import OTLPReceiver

T = TypeVar("T")


# -- flattened views -----------------------------------------------------------
@dataclass(frozen=True)
class ReceivedLink:
    trace_id: int
    span_id: int
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpanEvent:
    name: str
    time_unix_nano: int
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: int
    span_id: int
    parent_span_id: int | None
    kind: int
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: dict[str, Any]
    events: tuple[ReceivedSpanEvent, ...]
    links: tuple[ReceivedLink, ...]
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    resource: dict[str, Any]
    scope_name: str

    @property
    def identity(self) -> tuple[int, int]:
        return (self.trace_id, self.span_id)

    @property
    def service_name(self) -> str | None:
        return self.resource.get("service.name")

    @property
    def duration_ms(self) -> float:
        return (self.end_time_unix_nano - self.start_time_unix_nano) / 1e6


@dataclass(frozen=True)
class ReceivedLogRecord:
    event_name: str
    body: Any
    attributes: dict[str, Any]
    severity_number: int
    severity_text: str
    time_unix_nano: int
    observed_time_unix_nano: int
    trace_id: int
    span_id: int
    resource: dict[str, Any]
    scope_name: str


@dataclass(frozen=True)
class ReceivedMetricPoint:
    name: str
    kind: str  # gauge, sum, histogram, exponential_histogram, summary
    attributes: dict[str, Any]
    value: float | None  # gauge and sum points
    count: int | None  # histogram-like points
    sum: float | None
    time_unix_nano: int
    unit: str
    resource: dict[str, Any]
    scope_name: str


def any_value(value: Any) -> Any:
    """opentelemetry.proto.common.v1.AnyValue -> Python value."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(any_value(item) for item in value.array_value.values)
    if kind == "kvlist_value":
        return attributes_dict(value.kvlist_value.values)
    return getattr(value, kind)


def attributes_dict(key_values: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in key_values}


def _id(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def flatten_spans(request: Any) -> list[ReceivedSpan]:
    out = []
    for resource_spans in request.resource_spans:
        resource = attributes_dict(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append(ReceivedSpan(
                    name=span.name,
                    trace_id=_id(span.trace_id),
                    span_id=_id(span.span_id),
                    parent_span_id=_id(span.parent_span_id) if span.parent_span_id else None,
                    kind=span.kind,
                    start_time_unix_nano=span.start_time_unix_nano,
                    end_time_unix_nano=span.end_time_unix_nano,
                    attributes=attributes_dict(span.attributes),
                    events=tuple(ReceivedSpanEvent(e.name, e.time_unix_nano, attributes_dict(e.attributes))
                                 for e in span.events),
                    links=tuple(ReceivedLink(_id(link.trace_id), _id(link.span_id), attributes_dict(link.attributes))
                                for link in span.links),
                    status_code=span.status.code,
                    status_message=span.status.message,
                    resource=resource,
                    scope_name=scope_spans.scope.name,
                ))
    return out


def flatten_log_records(request: Any) -> list[ReceivedLogRecord]:
    out = []
    for resource_logs in request.resource_logs:
        resource = attributes_dict(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                out.append(ReceivedLogRecord(
                    event_name=record.event_name,
                    body=any_value(record.body),
                    attributes=attributes_dict(record.attributes),
                    severity_number=record.severity_number,
                    severity_text=record.severity_text,
                    time_unix_nano=record.time_unix_nano,
                    observed_time_unix_nano=record.observed_time_unix_nano,
                    trace_id=_id(record.trace_id),
                    span_id=_id(record.span_id),
                    resource=resource,
                    scope_name=scope_logs.scope.name,
                ))
    return out


def flatten_metric_points(request: Any) -> list[ReceivedMetricPoint]:
    out = []
    for resource_metrics in request.resource_metrics:
        resource = attributes_dict(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                for point in getattr(metric, kind).data_points:
                    number = point.WhichOneof("value") if kind in ("gauge", "sum") else None
                    out.append(ReceivedMetricPoint(
                        name=metric.name,
                        kind=kind,
                        attributes=attributes_dict(point.attributes),
                        value=float(getattr(point, number)) if number else None,
                        count=int(point.count) if kind not in ("gauge", "sum") else None,
                        sum=float(point.sum) if kind not in ("gauge", "sum") else None,
                        time_unix_nano=point.time_unix_nano,
                        unit=metric.unit,
                        resource=resource,
                        scope_name=scope_metrics.scope.name,
                    ))
    return out


# -- the sink ------------------------------------------------------------------
class OTLPSink:
    """A collecting consumer wrapped around a running OTLPReceiver."""

    def __init__(self, **receiver_kwargs: Any) -> None:
        receiver_kwargs.setdefault("grpc_endpoint", "127.0.0.1:0")
        receiver_kwargs.setdefault("http_endpoint", "127.0.0.1:0")
        self._changed = threading.Condition()
        self._open = threading.Event()
        self._open.set()
        self.trace_requests: list[Any] = []
        self.metrics_requests: list[Any] = []
        self.logs_requests: list[Any] = []
        self._spans: list[ReceivedSpan] = []
        self._log_records: list[ReceivedLogRecord] = []
        self._metric_points: list[ReceivedMetricPoint] = []
        self.receiver = OTLPReceiver(self, **receiver_kwargs)

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> OTLPSink:
        self.receiver.start()
        return self

    def stop(self, grace_s: float = 5.0) -> bool:
        self.resume()
        return self.receiver.stop(grace_s)

    def __enter__(self) -> OTLPSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- where to send -------------------------------------------------------
    @property
    def grpc_endpoint(self) -> str:
        """For OTLP gRPC exporters (use insecure=True)."""
        return f"127.0.0.1:{self.receiver.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.receiver.http_port}"

    @property
    def traces_url(self) -> str:
        return self.http_endpoint + "/v1/traces"

    @property
    def metrics_url(self) -> str:
        return self.http_endpoint + "/v1/metrics"

    @property
    def logs_url(self) -> str:
        return self.http_endpoint + "/v1/logs"

    # -- back-pressure control -------------------------------------------------
    def pause(self) -> None:
        """Block the consumer (the receiver's queue then fills up)."""
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    # -- consumer interface (called on the receiver's worker thread) ----------
    def consume_traces(self, request: Any) -> None:
        self._open.wait()
        self._store(self.trace_requests, request, self._spans, flatten_spans(request))

    def consume_metrics(self, request: Any) -> None:
        self._open.wait()
        self._store(self.metrics_requests, request, self._metric_points, flatten_metric_points(request))

    def consume_logs(self, request: Any) -> None:
        self._open.wait()
        self._store(self.logs_requests, request, self._log_records, flatten_log_records(request))

    def _store(self, requests: list, request: Any, items: list, new_items: list) -> None:
        with self._changed:
            requests.append(request)
            items.extend(new_items)
            self._changed.notify_all()

    # -- accessors -------------------------------------------------------------
    def spans(self) -> list[ReceivedSpan]:
        with self._changed:
            return list(self._spans)

    def log_records(self) -> list[ReceivedLogRecord]:
        with self._changed:
            return list(self._log_records)

    def metric_points(self) -> list[ReceivedMetricPoint]:
        with self._changed:
            return list(self._metric_points)

    def span_identities(self) -> set[tuple[int, int]]:
        return {span.identity for span in self.spans()}

    def clear(self) -> None:
        with self._changed:
            for collected in (self.trace_requests, self.metrics_requests, self.logs_requests,
                              self._spans, self._log_records, self._metric_points):
                collected.clear()

    # -- waiting ---------------------------------------------------------------
    def wait_for_spans(self, predicate: Callable[[ReceivedSpan], bool] | None = None, *,
                       count: int = 1, timeout: float = 5.0) -> list[ReceivedSpan]:
        """Spans matching predicate once at least ``count`` arrived; AssertionError on timeout."""
        return self._wait(self._spans, predicate, count, timeout, "spans", lambda s: s.name)

    def wait_for_log_records(self, predicate: Callable[[ReceivedLogRecord], bool] | None = None, *,
                             count: int = 1, timeout: float = 5.0) -> list[ReceivedLogRecord]:
        return self._wait(self._log_records, predicate, count, timeout, "log records",
                          lambda r: r.event_name or r.body)

    def wait_for_metric_points(self, predicate: Callable[[ReceivedMetricPoint], bool] | None = None, *,
                               count: int = 1, timeout: float = 5.0) -> list[ReceivedMetricPoint]:
        return self._wait(self._metric_points, predicate, count, timeout, "metric points", lambda p: p.name)

    def _wait(self, items: list[T], predicate: Callable[[T], bool] | None, count: int, timeout: float,
              what: str, describe: Callable[[T], Any]) -> list[T]:
        def matching() -> list[T]:
            return [item for item in items if predicate is None or predicate(item)]

        deadline = time.monotonic() + timeout
        with self._changed:
            found = matching()
            while len(found) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = sorted({str(describe(item)) for item in items})[:20]
                    raise AssertionError(
                        f"waited {timeout}s for {count} matching {what}, got {len(found)} "
                        f"(received {len(items)} in all: {seen})"
                    )
                self._changed.wait(remaining)
                found = matching()
            return found
