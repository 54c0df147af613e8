"""google.rpc.Status payloads shared by both transports.

gRPC carries the Status in the ``grpc-status-details-bin`` trailer; OTLP/HTTP
sends it as the body of every error response. ``grpcio-status`` is not a
dependency, so the few lines it would give us live here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

# The OTLP Python gRPC exporter reads the retry delay from this trailer rather
# than from inside grpc-status-details-bin, so both are sent.
RETRY_INFO_TRAILER = "google.rpc.retryinfo-bin"
STATUS_DETAILS_TRAILER = "grpc-status-details-bin"


def retry_info(delay_s: float) -> error_details_pb2.RetryInfo:
    whole = int(delay_s)
    return error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=whole, nanos=int(round((delay_s - whole) * 1e9)))
    )


def status_proto(code: int, message: str, *, retry_delay_s: float | None = None) -> status_pb2.Status:
    """A google.rpc.Status; with a RetryInfo detail when the sender should retry later."""
    status = status_pb2.Status(code=code, message=message)
    if retry_delay_s is not None:
        detail = any_pb2.Any()
        detail.Pack(retry_info(retry_delay_s))
        status.details.append(detail)
    return status


@dataclass(frozen=True)
class GrpcStatus(grpc.Status):
    """Concrete grpc.Status for ``context.abort_with_status``."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, bytes], ...] = field(default=())


def grpc_status(code: grpc.StatusCode, message: str, *, retry_delay_s: float | None = None) -> GrpcStatus:
    """A grpc.Status whose trailers carry the google.rpc.Status (and RetryInfo)."""
    proto = status_proto(code.value[0], message, retry_delay_s=retry_delay_s)
    trailers: list[tuple[str, bytes]] = [(STATUS_DETAILS_TRAILER, proto.SerializeToString())]
    if retry_delay_s is not None:
        trailers.append((RETRY_INFO_TRAILER, retry_info(retry_delay_s).SerializeToString()))
    return GrpcStatus(code=code, details=message, trailing_metadata=tuple(trailers))


CODE_INVALID_ARGUMENT = code_pb2.INVALID_ARGUMENT
CODE_RESOURCE_EXHAUSTED = code_pb2.RESOURCE_EXHAUSTED
CODE_UNAVAILABLE = code_pb2.UNAVAILABLE
CODE_UNIMPLEMENTED = code_pb2.UNIMPLEMENTED
CODE_UNAUTHENTICATED = code_pb2.UNAUTHENTICATED
