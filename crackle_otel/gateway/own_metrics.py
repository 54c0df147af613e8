"""The gateway's own counters as OTel metrics (read from ``GatewayService.stats()`` at collection).

Same mechanism as the span processor's (``otel.selfmetrics``), with the
gateway's figures: what it received and refused, what it analysed and skipped,
what it found and emitted, and what it forwarded.
"""

from __future__ import annotations

from typing import Any

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
    ("crackle.cools", "{cool}", "Cooler runs that cooled at least one group", "cools"),
    ("crackle.cool.time", "s", "Total time spent cooling", "cool_seconds_total"),
    ("crackle.patterns.detected", "{pattern}", "Patterns found by cools (repeats included)", "patterns_detected"),
    ("crackle.patterns.reported", "{pattern}", "New or materially changed patterns handed to the emitter",
     "patterns_reported"),
    ("crackle.patterns.suppressed", "{pattern}", "Patterns detected again unchanged, not reported again",
     "patterns_suppressed"),
    ("crackle.patterns.exported", "{pattern}", "Reported patterns the backend accepted", "patterns_exported"),
    ("crackle.patterns.dropped", "{pattern}", "Reported patterns lost: queue full, export failed, or shutdown",
     "patterns_dropped"),
    ("crackle.export.failures", "{export}", "Export calls to the pattern backend that failed", "export_failures"),
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
    ("crackle.gateway.pass_through.queue.size", "{request}", "Requests waiting to be forwarded",
     "pass_through_queue_depth"),
    ("crackle.cool.duration", "s", "Duration of the last cool", "cool_seconds_last"),
    ("crackle.patterns.pending", "{pattern}", "Reported patterns waiting to be exported", "patterns_pending"),
)
