"""OTLP metric points -> one task per (resource, collection time), the way CrackleMetricReader sees them.

An SDK stamps every point of one collection with the same ``time_unix_nano``,
so the points of one resource that share a time are one collection: one fired
task, whose metrics are the data-point streams, named by the reader's
``stream_name`` (``instrument{attr=value,...}``) and valued like the reader does:

- gauges and non-monotonic sums: the value;
- monotonic sums: cumulative ones give the value and ``….rate`` (the increase
  since the previous collection of that stream), delta ones ``….rate`` only;
- histograms, exponential histograms and summaries: ``….count`` and ``….mean``
  of the observations since the previous collection.

Cumulative streams need their previous reading; that memory is bounded by
``max_streams`` (points of further cumulative streams are skipped and counted
in ``points_overflowed``: without a previous reading their totals would
masquerade as per-interval figures).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2

from ..otel.extract import MISSING_GROUP_VALUE, attributes_of
from ..otel.datapoints import CumulativeReadings, PointKind, add_point
from ..otel.reader import stream_name

_CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
METRICS_GROUP_SUFFIX = "otel.metrics"


@dataclass(frozen=True)
class Collection:
    """One resource's points of one collection time, as a fired task."""

    service: str
    timestamp_s: float
    values: dict[str, float]


class MetricCollections:
    """Turns ExportMetricsServiceRequests into Collections; remembers cumulative readings (bounded)."""

    def __init__(self, *, max_streams: int = 4096, max_name_length: int = 200, skip_scopes: frozenset[str] = frozenset()):
        self.max_streams = max_streams
        self.max_name_length = max_name_length
        self.skip_scopes = skip_scopes
        # (resource identity, stream name) -> (start_time_unix_nano, cumulative value or (count, sum))
        self._previous = CumulativeReadings()
        self.points_overflowed = 0
        self.points_skipped = 0  # points of skipped scopes, or without a usable value

    def collections(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> Iterator[Collection]:
        for resource_metrics in request.resource_metrics:
            resource = attributes_of(resource_metrics.resource.attributes)
            service = str(resource.get("service.name") or MISSING_GROUP_VALUE)
            # Two instances of one service each have their own cumulative streams.
            resource_key = tuple(sorted((k, str(v)) for k, v in resource.items()))
            by_time: dict[int, dict[str, float]] = {}
            for scope_metrics in resource_metrics.scope_metrics:
                if scope_metrics.scope.name in self.skip_scopes:
                    self.points_skipped += sum(_point_count(m) for m in scope_metrics.metrics)
                    continue
                for metric in scope_metrics.metrics:
                    self._add_metric(resource_key, metric, by_time)
            for time_ns in sorted(by_time):
                if by_time[time_ns]:
                    yield Collection(service=service, timestamp_s=time_ns / 1e9, values=by_time[time_ns])

    def _add_metric(self, resource_key: Any, metric: metrics_pb2.Metric, by_time: dict[int, dict[str, float]]) -> None:
        kind = metric.WhichOneof("data")
        if kind is None:
            return
        data = getattr(metric, kind)
        cumulative = getattr(data, "aggregation_temporality", _CUMULATIVE) == _CUMULATIVE  # summaries: always
        for point in data.data_points:
            name = stream_name(metric.name, attributes_of(point.attributes), self.max_name_length)
            values = by_time.setdefault(point.time_unix_nano, {})
            key = (resource_key, name)
            if kind in ("gauge", "sum"):
                number = point.WhichOneof("value")
                if number is None:
                    self.points_skipped += 1
                    continue
                point_kind = PointKind.MONOTONIC_SUM if kind == "sum" and data.is_monotonic else PointKind.VALUE
                if point_kind is PointKind.MONOTONIC_SUM and cumulative and not self._tracked(key):
                    continue
                add_point(values, name, point_kind, cumulative=cumulative, start_ns=point.start_time_unix_nano,
                          readings=self._previous, key=key, value=float(getattr(point, number)))
                continue
            if cumulative and not self._tracked(key):
                continue
            add_point(values, name, PointKind.DISTRIBUTION, cumulative=cumulative, start_ns=point.start_time_unix_nano,
                      readings=self._previous, key=key, count=int(point.count), total=float(point.sum))

    def _tracked(self, key: Any) -> bool:
        """Whether a cumulative stream has (or gets) a memory slot; over the cap its points are skipped."""
        if key in self._previous or len(self._previous) < self.max_streams:
            return True
        self.points_overflowed += 1
        return False


def _point_count(metric: metrics_pb2.Metric) -> int:
    kind = metric.WhichOneof("data")
    return 0 if kind is None else len(getattr(metric, kind).data_points)
