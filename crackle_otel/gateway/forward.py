"""Pass-through: forward received ExportTraceServiceRequests unchanged to the downstream.

So the gateway can sit inline (app -> collector -> gateway -> backend) without
the backend losing a span. A bounded queue and one sender thread: when the
queue is full, ``submit`` waits up to ``block_s`` (which stalls the receiver's
consumer, fills the receiver's queue and so makes senders back off and retry,
as OTLP intends); only past that is a request dropped, and counted. Failed
sends are retried with exponential back-off (honouring RetryInfo / Retry-After)
on the status codes OTLP calls transient, then counted as failed.

The bytes sent are the request as received (re-serialised protobuf: same
fields, unknown fields kept). No dependency on private SDK exporter internals:
gRPC goes through a generic unary call, HTTP through ``http.client``.
"""

from __future__ import annotations

import http.client
import logging
import queue
import random
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import urlsplit

import grpc
from google.rpc import error_details_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from .rpc_status import RETRY_INFO_TRAILER
from .signals import TRACES

logger = logging.getLogger(__name__)

_TRACE_EXPORT_METHOD = f"/{TRACES.grpc_service}/Export"
# As the SDK's OTLP exporters: these codes mean "try again later".
_RETRYABLE_GRPC = frozenset({
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
})
_RETRYABLE_HTTP = frozenset({429, 502, 503, 504})
_MAX_BACKOFF_S = 8.0
_STOP = object()


class _Transient(Exception):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Downstream:
    """Where to forward: ``grpc`` to host:port, or ``http/protobuf`` to a /v1/traces URL."""

    protocol: str
    target: str  # grpc: host:port; http: full URL
    secure: bool

    @classmethod
    def parse(cls, endpoint: str, protocol: str) -> "Downstream":
        """``http://h:p``, ``https://h:p`` or ``h:p`` (plain text); for HTTP ``/v1/traces`` is appended
        unless the URL names a path (as PatternEmitter.otlp does)."""
        if protocol not in ("grpc", "http/protobuf"):
            raise ValueError(f"protocol must be 'grpc' or 'http/protobuf', got {protocol!r}")
        url = endpoint if "://" in endpoint else f"http://{endpoint}"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"downstream endpoint must look like http(s)://host:port, got {endpoint!r}")
        secure = parts.scheme == "https"
        if protocol == "grpc":
            port = parts.port or (443 if secure else 4317)
            host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
            return cls(protocol, f"{host}:{port}", secure)
        path = parts.path if parts.path.strip("/") else "/v1/traces"
        return cls(protocol, f"{parts.scheme}://{parts.netloc}{path}", secure)


class PassThrough:
    """Forwards trace requests to a downstream OTLP endpoint from a bounded queue."""

    def __init__(
        self,
        downstream: Downstream,
        *,
        headers: Mapping[str, str] | None = None,
        max_queue_size: int = 64,
        max_queue_bytes: int = 64 * 1024 * 1024,
        block_s: float = 5.0,
        timeout_s: float = 10.0,
        max_attempts: int = 5,
    ) -> None:
        if max_queue_size < 1:
            raise ValueError("max_queue_size must be at least 1")
        self.downstream = downstream
        self.headers = dict(headers or {})
        self.block_s = block_s
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue_size)
        self.max_queue_bytes = max_queue_bytes
        self._queued_bytes = 0
        self._room = threading.Condition()  # queued bytes went down
        self._lock = threading.Lock()
        self._closed = False
        self._abort = threading.Event()  # shutdown deadline passed: stop retrying
        self._counters = dict.fromkeys(
            ("requests_forwarded", "spans_forwarded", "requests_failed", "spans_failed",
             "requests_dropped", "spans_dropped", "retries", "failing"), 0)
        self._channel: grpc.Channel | None = None
        self._call = None
        self._http: http.client.HTTPConnection | None = None
        self._thread = threading.Thread(target=self._run, name="crackle-pass-through", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ intake
    def submit(self, request: trace_service_pb2.ExportTraceServiceRequest, spans: int) -> bool:
        """Queue a request for forwarding; False (counted) if it had to be dropped.

        The queue is bounded in requests and in bytes (``max_queue_bytes``): a full one
        makes ``submit`` wait up to ``block_s`` before dropping.
        """
        if not self._closed:
            payload = request.SerializeToString()
            deadline = time.monotonic() + self.block_s
            with self._room:
                fits = self._room.wait_for(
                    lambda: self._queued_bytes == 0 or self._queued_bytes + len(payload) <= self.max_queue_bytes,
                    timeout=self.block_s)
                if fits:
                    self._queued_bytes += len(payload)
            if fits:
                try:
                    self._queue.put((payload, spans), timeout=max(0.0, deadline - time.monotonic()))
                    return True
                except queue.Full:
                    self._release(len(payload))
        with self._lock:
            self._counters["requests_dropped"] += 1
            self._counters["spans_dropped"] += spans
        logger.warning("crackle pass-through: downstream backlog full; dropped a request of %d spans", spans)
        return False

    # ------------------------------------------------------------------ sender
    def _run(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is _STOP:
                return
            payload, spans = entry
            self._release(len(payload))  # held by this thread now, one at a time
            if self._send_with_retries(payload):
                outcome = ("requests_forwarded", "spans_forwarded")
            else:
                outcome = ("requests_failed", "spans_failed")
            with self._lock:
                self._counters[outcome[0]] += 1
                self._counters[outcome[1]] += spans
                self._counters["failing"] = int(outcome[0] == "requests_failed")  # the latest send failed

    def _release(self, size: int) -> None:
        with self._room:
            self._queued_bytes -= size
            self._room.notify_all()

    def _send_with_retries(self, payload: bytes) -> bool:
        for attempt in range(self.max_attempts):
            if self._abort.is_set():
                return False
            try:
                self._send(payload)
                return True
            except _Transient as error:
                if attempt + 1 == self.max_attempts:
                    logger.warning("crackle pass-through: giving up after %d attempts: %s", attempt + 1, error)
                    return False
                delay = error.retry_after_s
                if delay is None:
                    delay = min(_MAX_BACKOFF_S, 0.5 * 2**attempt) * random.uniform(0.8, 1.2)
                with self._lock:
                    self._counters["retries"] += 1
                if self._abort.wait(min(delay, _MAX_BACKOFF_S)):
                    return False
            except Exception as error:  # a permanent refusal (bad request, unauthenticated ...)
                logger.warning("crackle pass-through: downstream refused a request: %s", error)
                return False
        return False

    def _send(self, payload: bytes) -> None:
        if self.downstream.protocol == "grpc":
            self._send_grpc(payload)
        else:
            self._send_http(payload)

    def _send_grpc(self, payload: bytes) -> None:
        if self._call is None:
            if self.downstream.secure:
                self._channel = grpc.secure_channel(self.downstream.target, grpc.ssl_channel_credentials())
            else:
                self._channel = grpc.insecure_channel(self.downstream.target)
            # No serialiser: the payload is already the request's bytes.
            self._call = self._channel.unary_unary(_TRACE_EXPORT_METHOD)
        try:
            self._call(payload, timeout=self.timeout_s, metadata=tuple(self.headers.items()) or None)
        except grpc.RpcError as error:
            code = error.code() if hasattr(error, "code") else None
            if code in _RETRYABLE_GRPC:
                raise _Transient(f"{code}: {error.details()}", _grpc_retry_delay(error)) from None
            raise RuntimeError(f"{code}: {error.details() if hasattr(error, 'details') else error}") from None

    def _send_http(self, payload: bytes) -> None:
        parts = urlsplit(self.downstream.target)
        if self._http is None:
            if self.downstream.secure:
                self._http = http.client.HTTPSConnection(parts.netloc, timeout=self.timeout_s,
                                                         context=ssl.create_default_context())
            else:
                self._http = http.client.HTTPConnection(parts.netloc, timeout=self.timeout_s)
        headers = {"Content-Type": "application/x-protobuf", **self.headers}
        try:
            self._http.request("POST", parts.path or "/v1/traces", body=payload, headers=headers)
            response = self._http.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as error:
            self._http.close()
            self._http = None  # reconnect next time
            raise _Transient(f"connection failed: {error}") from None
        if 200 <= response.status < 300:
            return
        if response.status in _RETRYABLE_HTTP:
            raise _Transient(f"HTTP {response.status}", _retry_after(response.getheader("Retry-After")))
        raise RuntimeError(f"HTTP {response.status}")

    # --------------------------------------------------------------- lifecycle
    def shutdown(self, timeout_s: float = 10.0) -> bool:
        """Forward what is queued, within ``timeout_s``; True if everything was sent (or given up on)."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        self._closed = True
        try:
            self._queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
        except queue.Full:
            pass
        self._thread.join(max(0.0, deadline - time.monotonic()))
        finished = not self._thread.is_alive()
        if not finished:
            self._abort.set()  # stop retrying; what is still queued is lost (counted below)
            self._thread.join(1.0)
            self._count_abandoned()
        if self._channel is not None:
            self._channel.close()
        if self._http is not None:
            self._http.close()
        return finished

    def _count_abandoned(self) -> None:
        while True:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                return
            if entry is _STOP:
                continue
            with self._lock:
                self._counters["requests_dropped"] += 1
                self._counters["spans_dropped"] += entry[1]

    def stats(self) -> dict[str, int]:
        with self._lock:
            counters = dict(self._counters)
        counters["queue_depth"] = self._queue.qsize()
        counters["queue_bytes"] = self._queued_bytes
        return counters


def _grpc_retry_delay(error: grpc.RpcError) -> float | None:
    try:
        trailers = dict(error.trailing_metadata() or ())
    except Exception:
        return None
    raw = trailers.get(RETRY_INFO_TRAILER)
    if not raw:
        return None
    info = error_details_pb2.RetryInfo.FromString(raw)
    return info.retry_delay.seconds + info.retry_delay.nanos / 1e9


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None
