"""The three OTLP signals described once, so both transports treat them alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


def _count_spans(request: trace_service_pb2.ExportTraceServiceRequest) -> int:
    return sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)


def _count_log_records(request: logs_service_pb2.ExportLogsServiceRequest) -> int:
    return sum(len(scope.log_records) for resource in request.resource_logs for scope in resource.scope_logs)


def _count_metric_points(request: metrics_service_pb2.ExportMetricsServiceRequest) -> int:
    total = 0
    for resource in request.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                kind = metric.WhichOneof("data")  # gauge, sum, histogram, exponential_histogram, summary
                if kind is not None:
                    total += len(getattr(metric, kind).data_points)
    return total


@dataclass(frozen=True)
class Signal:
    """Everything transport code needs to know about one OTLP signal."""

    name: str  # "traces", "metrics", "logs"
    http_path: str
    grpc_service: str  # full gRPC service name, from the generated descriptor
    request_type: type[Message]
    response_type: type[Message]
    partial_success_type: type[Message]
    rejected_field: str  # partial-success field counting rejected items
    consumer_method: str
    received_stat: str  # counter of items in accepted requests
    count_items: Callable[[Message], int]

    def response(self, rejected_items: int = 0, error_message: str = "") -> Message:
        """An Export response; partial_success is set only when something was rejected or said."""
        response = self.response_type()
        if rejected_items or error_message:
            partial = self.partial_success_type(error_message=error_message)
            setattr(partial, self.rejected_field, int(rejected_items))
            response.partial_success.CopyFrom(partial)
        return response


TRACES = Signal(
    name="traces",
    http_path="/v1/traces",
    grpc_service=trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name,
    request_type=trace_service_pb2.ExportTraceServiceRequest,
    response_type=trace_service_pb2.ExportTraceServiceResponse,
    partial_success_type=trace_service_pb2.ExportTracePartialSuccess,
    rejected_field="rejected_spans",
    consumer_method="consume_traces",
    received_stat="spans_received",
    count_items=_count_spans,
)

METRICS = Signal(
    name="metrics",
    http_path="/v1/metrics",
    grpc_service=metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"].full_name,
    request_type=metrics_service_pb2.ExportMetricsServiceRequest,
    response_type=metrics_service_pb2.ExportMetricsServiceResponse,
    partial_success_type=metrics_service_pb2.ExportMetricsPartialSuccess,
    rejected_field="rejected_data_points",
    consumer_method="consume_metrics",
    received_stat="metric_points_received",
    count_items=_count_metric_points,
)

LOGS = Signal(
    name="logs",
    http_path="/v1/logs",
    grpc_service=logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"].full_name,
    request_type=logs_service_pb2.ExportLogsServiceRequest,
    response_type=logs_service_pb2.ExportLogsServiceResponse,
    partial_success_type=logs_service_pb2.ExportLogsPartialSuccess,
    rejected_field="rejected_log_records",
    consumer_method="consume_logs",
    received_stat="log_records_received",
    count_items=_count_log_records,
)

SIGNALS: tuple[Signal, ...] = (TRACES, METRICS, LOGS)
SIGNALS_BY_PATH: dict[str, Signal] = {signal.http_path: signal for signal in SIGNALS}
