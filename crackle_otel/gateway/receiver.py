"""OTLPReceiver: an in-process OTLP/gRPC + OTLP/HTTP endpoint feeding one consumer.

    class Sink:
        def consume_traces(self, request): ...   # ExportTraceServiceRequest
        def consume_metrics(self, request): ...  # ExportMetricsServiceRequest (each method optional)
        def consume_logs(self, request): ...     # ExportLogsServiceRequest

    with OTLPReceiver(Sink(), grpc_endpoint="127.0.0.1:0", http_endpoint="127.0.0.1:0") as receiver:
        ...  # exporters send to receiver.grpc_port / receiver.http_port

A consumer method may return None, a count of rejected items, or
(count, message); the sender sees it as partial success when the consumer
answers within ``partial_success_wait_s`` (the data is queued either way).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .auth import BearerToken, TLSFiles
from .defaults import DEFAULT_GRPC_ENDPOINT, DEFAULT_HTTP_ENDPOINT
from .grpc_server import GrpcSettings, OTLPGrpcServer
from .http_server import HttpSettings, OTLPHTTPServer, split_endpoint
from .intake import Intake, RateLimitedLog
from .netloop import NetworkLoop

logger = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # gRPC's own default receive limit
DEFAULT_MAX_QUEUE_SIZE = 128  # export requests, not items
DEFAULT_MAX_QUEUE_BYTES = 64 * 1024 * 1024  # wire bytes accepted and not yet consumed
DEFAULT_MAX_CONNECTIONS = 512  # HTTP connections, and gRPC calls in flight


class OTLPReceiver:
    """Receives OTLP traces, metrics and logs and hands each request to ``consumer``.

    One network loop thread serves both transports, a small pool decodes, one
    worker thread calls the consumer. When the queue is full (``max_queue_size``
    requests or ``max_queue_bytes`` bytes) the sender is told to retry (gRPC
    RESOURCE_EXHAUSTED with RetryInfo, HTTP 429 with Retry-After): nothing is
    dropped without the sender knowing. ``auth_token`` and ``tls_client_ca_file``
    require a bearer token and/or a client certificate (``auth``). ``pages``: read-only GET pages served on
    the HTTP endpoint (path -> callable returning an ``http_server.Page``).
    """

    def __init__(
        self,
        consumer: Any,
        *,
        grpc_endpoint: str | None = DEFAULT_GRPC_ENDPOINT,
        http_endpoint: str | None = DEFAULT_HTTP_ENDPOINT,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        tls_client_ca_file: str | None = None,
        auth_token: str | None = None,
        request_timeout_s: float = 10.0,
        header_timeout_s: float = 10.0,
        body_timeout_s: float = 30.0,
        health_path: str = "/health",
        pages: Any = None,
        retry_after_s: float = 1.0,
        partial_success_wait_s: float = 0.2,
        decode_workers: int = 2,
        log_interval_s: float = 10.0,
    ) -> None:
        if grpc_endpoint is None and http_endpoint is None:
            raise ValueError("enable at least one of grpc_endpoint and http_endpoint")
        if http_endpoint is not None:
            split_endpoint(http_endpoint)  # fail now, not at start()
        if max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be >= 1, got {max_message_bytes}")
        if bool(tls_cert_file) != bool(tls_key_file):
            raise ValueError("TLS needs both tls_cert_file and tls_key_file")
        if tls_client_ca_file and not tls_cert_file:
            raise ValueError("mutual TLS (tls_client_ca_file) needs tls_cert_file and tls_key_file too")
        if min(request_timeout_s, header_timeout_s, body_timeout_s) <= 0 or max_connections < 1:
            raise ValueError("timeouts must be > 0 and max_connections >= 1")
        if not health_path.startswith("/"):
            raise ValueError(f"health_path must start with '/', got {health_path!r}")
        if retry_after_s <= 0:
            raise ValueError(f"retry_after_s must be > 0, got {retry_after_s}")
        self._intake = Intake(
            consumer,
            max_queue_size=max_queue_size,
            max_queue_bytes=max_queue_bytes,
            partial_success_wait_s=partial_success_wait_s,
            log=RateLimitedLog(log_interval_s),
        )
        tls = TLSFiles(tls_cert_file, tls_key_file, tls_client_ca_file) if tls_cert_file and tls_key_file else None
        token = BearerToken(auth_token)
        self.authenticated = token.required or bool(tls_client_ca_file)
        self._grpc_settings = None if grpc_endpoint is None else GrpcSettings(
            endpoint=grpc_endpoint,
            max_message_bytes=max_message_bytes,
            retry_after_s=retry_after_s,
            tls=tls,
            token=token,
            request_timeout_s=request_timeout_s,
            max_concurrent_calls=max_connections,
        )
        self._http_settings = None if http_endpoint is None else HttpSettings(
            endpoint=http_endpoint,
            max_message_bytes=max_message_bytes,
            retry_after_s=retry_after_s,
            health_path=health_path,
            tls=tls,
            token=token,
            max_connections=max_connections,
            header_timeout_s=header_timeout_s,
            body_timeout_s=body_timeout_s,
            pages=dict(pages or {}),
        )
        self._network = NetworkLoop(decode_workers=decode_workers)
        self._grpc_server: OTLPGrpcServer | None = None
        self._http_server: OTLPHTTPServer | None = None
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        self._started = False
        # stop() claims this lock once and never releases it: later calls
        # (another thread, or a signal handler) see it taken and return.
        self._stop_claim = threading.Lock()
        self._stopper: int | None = None
        self._stopped = threading.Event()
        self._drained = True

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> OTLPReceiver:
        if self._started or self._stop_claim.locked():
            raise RuntimeError("an OTLPReceiver can be started once")
        self._started = True
        self._intake.start()
        self._network.start()
        try:
            if self._grpc_settings is not None:
                self._grpc_server = OTLPGrpcServer(self._intake, self._grpc_settings, self._network)
                self.grpc_port = self._grpc_server.start()
            if self._http_settings is not None:
                self._http_server = OTLPHTTPServer(self._http_settings, self._intake, self.stats, self._network)
                self.http_port = self._http_server.port
                self._http_server.start()
        except BaseException:
            self.stop(grace_s=0.0)
            raise
        logger.info("OTLP receiver listening: grpc port %s, http port %s", self.grpc_port, self.http_port)
        return self

    def stop(self, grace_s: float = 5.0) -> bool:
        """Stop accepting, let in-flight requests finish, drain the queue into the
        consumer and join the worker, all within ``grace_s``.

        Idempotent and safe from any thread, including a signal handler that
        interrupts a running stop(). Returns True when everything queued was
        consumed (a later call reports the first call's outcome, or False while
        that call is still running).
        """
        if not self._stop_claim.acquire(blocking=False):
            if self._stopper != threading.get_ident():  # re-entering on our own thread must not wait on ourselves
                self._stopped.wait(grace_s)
            return self._drained and self._stopped.is_set()
        self._stopper = threading.get_ident()
        deadline = time.monotonic() + max(0.0, grace_s)
        try:
            # New calls and connections are refused at once; those in flight get the grace period.
            if self._grpc_server is not None:
                self._grpc_server.stop(max(0.0, deadline - time.monotonic()))
            if self._http_server is not None:
                self._http_server.stop(max(0.0, deadline - time.monotonic()))
            self._network.stop(max(0.0, deadline - time.monotonic()))
            self._drained = self._intake.drain(max(0.0, deadline - time.monotonic()))
            if not self._drained:
                logger.warning("OTLP receiver stopped with %d requests not consumed", self._intake.unconsumed())
        finally:
            self._stopped.set()
        return self._drained

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- introspection -------------------------------------------------------
    @property
    def serving(self) -> bool:
        return self._started and self._intake.accepting

    def stats(self) -> dict[str, int]:
        """Counters: requests, requests_accepted, requests_consumed, spans_received,
        metric_points_received, log_records_received, rejected_full(_items),
        rejected_malformed, rejected_oversized, rejected_stopping, rejected_unauthenticated,
        rejected_timeout, consumer_rejected_items, consumer_errors, queue_depth, queue_capacity,
        queue_bytes, queue_bytes_capacity, connections_open, connections_refused."""
        stats = self._intake.stats()
        http = self._http_server
        stats["connections_open"] = http.open_connections if http is not None else 0
        stats["connections_refused"] = http.connections_refused if http is not None else 0
        return stats
