"""OTLP requests -> tasks in a Furnace: what `serve` and `analyze` both do with what they receive.

Spans go through the one extraction (``extract``, via ``from_proto_span`` for
protobuf and ``view_of_json_span`` for OTLP/JSON read by ``analyze``, which
reads them through ``extract_json_span``, the two in one step) the span
processor uses, so a span analysed in-process and the same span received over
OTLP give the same task in the same group. Spans of crackle's own scope (pattern spans
of some upstream crackle) are never analysed. Metric collections become one
task each in the group ``<service.name> | otel.metrics``.

Not thread-safe: one thread feeds (the receiver's consumer worker, or the
file reader); the Furnace it feeds may be cooled from another thread. The spans
of a request's scope are recorded as one batch (``Furnace.record_spans``).
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from ..otel.emit import INSTRUMENTATION_SCOPE
from ..otel.extract import (
    GROUP_SEPARATOR,
    ExtractedSpan,
    ExtractionRules,
    attributes_of,
    extract,
    from_proto_span,
)
from ..otel.furnace import Furnace
from .metric_points import METRICS_GROUP_SUFFIX, MetricCollections
from .otlp_json import JSONTraces

logger = logging.getLogger(__name__)

METRIC_COLLECTION_LABEL = "otel.metrics collection"


class RequestFeeder:
    """Decodes OTLP trace and metric requests into the furnace's groups, counting what it skips."""

    def __init__(self, furnace: Furnace, rules: ExtractionRules, *, max_metric_streams: int = 4096) -> None:
        self.furnace = furnace
        self.rules = rules
        self._metric_collections = MetricCollections(
            max_streams=max_metric_streams, skip_scopes=frozenset({INSTRUMENTATION_SCOPE})
        )
        self.spans_seen = 0
        self.spans_skipped_own = 0
        self.spans_undecodable = 0
        self.metric_collections = 0

    def feed(self, record: trace_service_pb2.ExportTraceServiceRequest | JSONTraces
             | metrics_service_pb2.ExportMetricsServiceRequest) -> int:
        """Record whatever was read (``OTLPFile.records()``); returns how many spans or collections."""
        if isinstance(record, JSONTraces):
            return self.feed_json_traces(record)
        if isinstance(record, trace_service_pb2.ExportTraceServiceRequest):
            return self.feed_traces(record)
        return self.feed_metrics(record)

    def feed_traces(self, request: trace_service_pb2.ExportTraceServiceRequest) -> int:
        """Record every span of the request; returns how many spans were seen."""
        seen = 0
        rules = self.rules
        for resource_spans in request.resource_spans:
            resource = attributes_of(resource_spans.resource.attributes)  # once per resource, not per span
            for scope_spans in resource_spans.scope_spans:
                scope = scope_spans.scope.name
                seen += self._record_scope(
                    scope, scope_spans.spans, lambda span: from_proto_span(span, resource, scope, rules)
                )
        return seen

    def feed_json_traces(self, traces: JSONTraces) -> int:
        """``feed_traces`` for OTLP/JSON traces decoded straight into span views (or extracted spans)."""
        rules = self.rules
        if traces.extracted:  # a span whose extraction failed as it was decoded comes as its view: once more
            extract_one = lambda span: span if type(span) is ExtractedSpan else extract(span, rules)  # noqa: E731
        else:
            extract_one = lambda view: extract(view, rules)  # noqa: E731
        return sum(self._record_scope(scope, spans, extract_one) for scope, spans in traces.scopes)

    def _record_scope(self, scope: str, spans, extract_one) -> int:
        """Extract and record the spans of one instrumentation scope (never crackle's own).

        Each span is recorded with its ordinal in the input (``spans_seen`` as it counted that
        span; ``analyze`` places findings in its files with it).
        """
        if scope == INSTRUMENTATION_SCOPE:
            self.spans_skipped_own += len(spans)
            self.spans_seen += len(spans)
            return len(spans)
        extracted: list[ExtractedSpan] = []
        ordinals: list[int] = []
        seen = self.spans_seen
        for span in spans:
            seen += 1
            try:
                extracted.append(extract_one(span))
            except Exception:  # e.g. a group_by callable that fails on this span
                self.spans_undecodable += 1
                logger.debug("crackle gateway: could not extract a span", exc_info=True)
                continue
            ordinals.append(seen)
        self.spans_seen = seen
        self.furnace.record_spans(extracted, ordinals)  # the scope's spans as one batch, each with its ordinal
        return len(spans)

    def feed_metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> int:
        """Record each (resource, collection time) as one task; returns how many collections."""
        count = 0
        for collection in self._metric_collections.collections(request):
            count += 1
            self.furnace.record(
                f"{collection.service}{GROUP_SEPARATOR}{METRICS_GROUP_SUFFIX}",
                METRIC_COLLECTION_LABEL,
                collection.values,
                timestamp=collection.timestamp_s,
            )
        self.metric_collections += count
        return count

    def stats(self) -> dict[str, Any]:
        return {
            "spans_seen": self.spans_seen,
            "spans_skipped_own": self.spans_skipped_own,
            "spans_undecodable": self.spans_undecodable,
            "metric_collections": self.metric_collections,
            "metric_points_overflowed": self._metric_collections.points_overflowed,
            "metric_points_skipped": self._metric_collections.points_skipped,
        }
