"""OTLP/gRPC transport: TraceService, MetricsService and LogsService Export.

The servicers derive from opentelemetry-proto's generated classes, but are
registered by hand instead of with ``add_*Servicer_to_server`` because:
- the generated handler deserialises inside grpc, where a malformed payload
  becomes INTERNAL; the OTLP spec asks for INVALID_ARGUMENT, so we take raw
  bytes and parse them ourselves;
- a message over ``grpc.max_receive_message_length`` is refused by grpc core
  (RESOURCE_EXHAUSTED) before a unary handler runs, so we could not count it.
  Registered as stream-unary (identical on the wire for a one-message call),
  the handler does run and sees an empty request stream in that case.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import grpc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from .intake import Intake
from .rpc_status import grpc_status
from .signals import LOGS, METRICS, TRACES, Signal


@dataclass(frozen=True)
class GrpcSettings:
    endpoint: str
    max_message_bytes: int
    retry_after_s: float
    max_workers: int = 8
    tls_cert_file: str | None = None
    tls_key_file: str | None = None


class _ExportHandler:
    """The Export method shared by the three servicers."""

    def __init__(self, signal: Signal, intake: Intake, settings: GrpcSettings) -> None:
        self._signal = signal
        self._intake = intake
        self._settings = settings

    def Export(self, request_iterator: Iterator[bytes], context: grpc.ServicerContext) -> bytes:  # noqa: N802 (gRPC name)
        try:
            payload = next(request_iterator, None)
        except grpc.RpcError:  # the call was terminated before its message arrived
            payload = None
        if payload is None:
            # grpc core has already answered RESOURCE_EXHAUSTED for a message over
            # max_receive_message_length; the stream then ends empty or raises,
            # depending on timing. A client cancelling before its one message is
            # sent looks the same here and is (rarely) counted as oversized too.
            self._intake.note_oversized("grpc", self._signal, None, self._settings.max_message_bytes)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "request larger than the receiver's limit")
        try:
            request = self._signal.request_type.FromString(payload)
        except (DecodeError, ValueError) as error:
            self._intake.note_malformed("grpc", self._signal, error)
            context.abort_with_status(
                grpc_status(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {self._signal.request_type.__name__}: {error}")
            )
        verdict = self._intake.submit(self._signal, request)
        if verdict.accepted:
            return self._signal.response(verdict.rejected_items, verdict.message).SerializeToString()
        if verdict.refusal == "full":
            context.abort_with_status(
                grpc_status(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "receiver queue is full, retry later",
                    retry_delay_s=self._settings.retry_after_s,
                )
            )
        context.abort_with_status(
            grpc_status(grpc.StatusCode.UNAVAILABLE, "receiver is shutting down", retry_delay_s=self._settings.retry_after_s)
        )


class TraceServicer(_ExportHandler, trace_service_pb2_grpc.TraceServiceServicer):
    pass


class MetricsServicer(_ExportHandler, metrics_service_pb2_grpc.MetricsServiceServicer):
    pass


class LogsServicer(_ExportHandler, logs_service_pb2_grpc.LogsServiceServicer):
    pass


_SERVICERS = ((TRACES, TraceServicer), (METRICS, MetricsServicer), (LOGS, LogsServicer))


def start_grpc_server(intake: Intake, settings: GrpcSettings) -> tuple[grpc.Server, int]:
    """Bind and start the gRPC server; returns it and the bound port."""
    server = grpc.server(
        ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="crackle-otlp-grpc"),
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            # grpc enables SO_REUSEPORT by default: a second receiver on a busy
            # port would then bind "successfully" and share its traffic.
            ("grpc.so_reuseport", 0),
        ],
    )
    for signal, servicer_class in _SERVICERS:
        servicer = servicer_class(signal, intake, settings)
        handler = grpc.stream_unary_rpc_method_handler(servicer.Export)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(signal.grpc_service, {"Export": handler}),))
    port = _bind(server, settings)
    server.start()
    return server, port


def _bind(server: grpc.Server, settings: GrpcSettings) -> int:
    try:
        if settings.tls_cert_file:
            with open(settings.tls_key_file or "", "rb") as key, open(settings.tls_cert_file, "rb") as cert:
                credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
            port = server.add_secure_port(settings.endpoint, credentials)
        else:
            port = server.add_insecure_port(settings.endpoint)
    except RuntimeError as error:  # grpc raises RuntimeError when it cannot bind
        raise OSError(f"cannot bind OTLP/gRPC endpoint {settings.endpoint}: {error}") from None
    if not port:
        raise OSError(f"cannot bind OTLP/gRPC endpoint {settings.endpoint}")
    return port
