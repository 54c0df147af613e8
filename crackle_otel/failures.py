"""How a task failed, as first-class input (not only a 0/1 metric): one bit per failure signal.

A span fails in several ways that instrumentations record differently: its
status is ERROR, it recorded an exception event, its HTTP response status is
5xx (or 4xx), its gRPC status is not OK. Extraction sets these bits per span;
``Kiln.record(..., failures=...)`` keeps them beside the metrics, and the
attribution detector compares each signal's rate between an attribute value's
tasks and the rest. For matrices built without them, ``failure_bits`` derives
what it can from the usual metric columns (``is_error``, status codes).
"""

from __future__ import annotations

from enum import IntFlag

import numpy as np


class Failure(IntFlag):
    ERROR_STATUS = 1  # span status ERROR
    EXCEPTION = 2  # at least one "exception" event
    HTTP_5XX = 4  # HTTP response status 500-599
    HTTP_4XX = 8  # HTTP response status 400-499
    GRPC_ERROR = 16  # gRPC status other than OK (0)


#: The metric columns and span attributes that carry failure signals (rates, never compared by rank).
ERROR_METRIC = "is_error"
HTTP_STATUS_ATTRIBUTES = ("http.response.status_code", "http.status_code")  # stable semconv, then the old name
GRPC_STATUS_ATTRIBUTE = "rpc.grpc.status_code"
FAILURE_METRICS = frozenset({ERROR_METRIC, *HTTP_STATUS_ATTRIBUTES, GRPC_STATUS_ATTRIBUTE})

#: How each signal is named where a person reads it, and as a pattern's "metric".
RATE_NAMES = {
    Failure.ERROR_STATUS: "error_rate",
    Failure.EXCEPTION: "exception_rate",
    Failure.HTTP_5XX: "http_5xx_rate",
    Failure.HTTP_4XX: "http_4xx_rate",
    Failure.GRPC_ERROR: "grpc_error_rate",
}
RATE_PHRASES = {
    Failure.ERROR_STATUS: "errors",
    Failure.EXCEPTION: "exceptions",
    Failure.HTTP_5XX: "HTTP 5xx",
    Failure.HTTP_4XX: "HTTP 4xx",
    Failure.GRPC_ERROR: "gRPC errors",
}


def status_code_failures(http_status: object, grpc_status: object) -> int:
    """The failure bits of an HTTP and a gRPC status code (either may be None or malformed)."""
    bits = 0
    if type(http_status) is int or type(http_status) is float:
        if 500 <= http_status < 600:
            bits |= Failure.HTTP_5XX
        elif 400 <= http_status < 500:
            bits |= Failure.HTTP_4XX
    if (type(grpc_status) is int or type(grpc_status) is float) and grpc_status != 0:
        bits |= Failure.GRPC_ERROR
    return int(bits)


def failure_bits(values: np.ndarray, metric_names: tuple[str, ...], recorded: np.ndarray | None) -> np.ndarray:
    """Per task, the failure bits: those recorded (if any) and those the failure metric columns show."""
    n = values.shape[0]
    bits = np.zeros(n, dtype=np.uint8) if recorded is None or len(recorded) != n else recorded.astype(np.uint8)
    columns = {name: j for j, name in enumerate(metric_names)}
    if ERROR_METRIC in columns:
        bits |= np.where(values[:, columns[ERROR_METRIC]] > 0, Failure.ERROR_STATUS, 0).astype(np.uint8)
    for name in HTTP_STATUS_ATTRIBUTES:
        if name in columns:
            code = values[:, columns[name]]
            bits |= np.where((code >= 500) & (code < 600), Failure.HTTP_5XX, 0).astype(np.uint8)
            bits |= np.where((code >= 400) & (code < 500), Failure.HTTP_4XX, 0).astype(np.uint8)
    if GRPC_STATUS_ATTRIBUTE in columns:
        code = values[:, columns[GRPC_STATUS_ATTRIBUTE]]
        bits |= np.where(np.isfinite(code) & (code != 0), Failure.GRPC_ERROR, 0).astype(np.uint8)
    return bits
