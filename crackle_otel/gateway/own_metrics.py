"""The gateway's own counters as OTel metrics (read from ``GatewayService.stats()`` at collection).

Same mechanism as the span processor's (``otel.selfmetrics``), with the
gateway's figures: what it received and refused, what it analysed and skipped,
what it found and emitted, and what it forwarded.
"""

from __future__ import annotations

from typing import Any

from ..otel.selfmetrics import ANALYSIS_COUNTERS, ANALYSIS_GAUGES

COUNTERS: tuple[tuple[str, str, str, Any], ...] = (
    ("crackle.gateway.requests", "{request}", "OTLP export requests received (any outcome)", "requests"),
    (
        "crackle.gateway.requests.refused",
        "{request}",
        "OTLP export requests refused, by crackle.reason",
        {
            "full": "rejected_full",
            "malformed": "rejected_malformed",
            "oversized": "rejected_oversized",
            "stopping": "rejected_stopping",
            "unauthenticated": "rejected_unauthenticated",
            "timeout": "rejected_timeout",
        },
    ),
    ("crackle.gateway.spans.received", "{span}", "Spans in accepted OTLP requests", "spans_received"),
    ("crackle.gateway.metric_points.received", "{point}", "Metric points in accepted OTLP requests",
     "metric_points_received"),
    ("crackle.gateway.tasks.recorded", "{task}", "Spans and metric collections recorded into a kiln",
     "tasks_recorded"),
    (
        "crackle.gateway.tasks.skipped",
        "{task}",
        "Spans and metric collections not analysed, by crackle.reason",
        {
            "own": "spans_skipped_own",
            "undecodable": "spans_undecodable",
            "rejected": "tasks_rejected",
            "overflow": "tasks_overflowed",
        },
    ),
    *ANALYSIS_COUNTERS,
    (
        "crackle.gateway.pass_through.spans",
        "{span}",
        "Spans the pass-through forwarded, gave up on (failed) or dropped, by crackle.reason",
        {
            "forwarded": "pass_through_spans_forwarded",
            "failed": "pass_through_spans_failed",
            "dropped": "pass_through_spans_dropped",
        },
    ),
)

GAUGES: tuple[tuple[str, str, str, str], ...] = (
    ("crackle.groups", "{group}", "Groups being analysed (each has a kiln)", "groups"),
    ("crackle.gateway.queue.size", "{request}", "Requests waiting for the analyser", "queue_depth"),
    ("crackle.gateway.queue.bytes", "By", "Bytes of requests accepted and not yet analysed", "queue_bytes"),
    ("crackle.gateway.connections", "{connection}", "Open OTLP/HTTP connections", "connections_open"),
    ("crackle.gateway.pass_through.queue.size", "{request}", "Requests waiting to be forwarded",
     "pass_through_queue_depth"),
    *ANALYSIS_GAUGES,
)
