"""The processor's own counters as OTel metrics (observable instruments, read at collection).

Instruments (meter ``crackle_otel``): every figure comes from ``processor.stats()``,
so the metrics and ``stats()`` can never disagree.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

METER_NAME = "crackle_otel"

# (instrument name, unit, description, stats key or {crackle.reason value: stats key})
# Cooling and pattern counters: the same figures (and names) for the span processor and the gateway.
ANALYSIS_COUNTERS: tuple[tuple[str, str, str, Any], ...] = (
    ("crackle.cools", "{cool}", "Cooler runs that cooled at least one group", "cools"),
    ("crackle.cool.time", "s", "Total time spent cooling", "cool_seconds_total"),
    ("crackle.patterns.detected", "{pattern}", "Patterns found by cools (repeats included)", "patterns_detected"),
    ("crackle.patterns.reported", "{pattern}", "New or materially changed patterns handed to the emitter",
     "patterns_reported"),
    ("crackle.patterns.suppressed", "{pattern}", "Patterns detected but not reported (repeats, folded, superseded)",
     "patterns_suppressed"),
    ("crackle.patterns.exported", "{pattern}", "Reported patterns the backend accepted", "patterns_exported"),
    ("crackle.patterns.dropped", "{pattern}", "Reported patterns lost: queue full, export failed, or shutdown",
     "patterns_dropped"),
    ("crackle.export.failures", "{export}", "Export calls to the pattern backend that failed", "export_failures"),
)
ANALYSIS_GAUGES: tuple[tuple[str, str, str, str], ...] = (
    ("crackle.cool.duration", "s", "Duration of the last cool", "cool_seconds_last"),
    ("crackle.patterns.pending", "{pattern}", "Reported patterns waiting to be exported", "patterns_pending"),
)
_COUNTERS: tuple[tuple[str, str, str, Any], ...] = (
    ("crackle.spans.ended", "{span}", "Sampled spans handed to the crackle processor", "spans_ended"),
    ("crackle.spans.recorded", "{span}", "Spans recorded into a group's kiln", "spans_recorded"),
    ("crackle.spans.dropped", "{span}", "Spans dropped: buffer full (oldest first) or after shutdown", "spans_dropped"),
    (
        "crackle.spans.skipped",
        "{span}",
        "Spans not analysed, by crackle.reason",
        {"own": "spans_skipped_own", "rejected": "spans_rejected", "overflow": "spans_overflowed"},
    ),
    *ANALYSIS_COUNTERS,
)
_GAUGES: tuple[tuple[str, str, str, str], ...] = (
    ("crackle.groups", "{group}", "Span groups being analysed (each has a kiln)", "groups"),
    ("crackle.queue.size", "{span}", "Spans waiting for the cooler", "spans_pending"),
    *ANALYSIS_GAUGES,
)


def _callback(stats: Callable[[], dict[str, Any]], key: Any) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        current = stats()
        if isinstance(key, dict):
            return [Observation(current[k], {"crackle.reason": reason}) for reason, k in key.items()]
        return [Observation(current[key])]

    return observe


def register_self_metrics(
    stats: Callable[[], dict[str, Any]],
    meter_provider: MeterProvider | None = None,
    *,
    counters: Sequence[tuple[str, str, str, Any]] = _COUNTERS,
    gauges: Sequence[tuple[str, str, str, Any]] = _GAUGES,
) -> list[Any]:
    """Create the observable instruments reading ``stats()`` (e.g. ``processor.stats``); returns them.

    ``counters`` / ``gauges``: (instrument name, unit, description, stats key or
    {crackle.reason value: stats key}); the defaults are the span processor's.
    The OTLP gateway passes its own tables.
    """
    meter = (meter_provider or metrics.get_meter_provider()).get_meter(METER_NAME)
    instruments = []
    for name, unit, description, key in counters:
        instruments.append(
            meter.create_observable_counter(name, callbacks=[_callback(stats, key)], unit=unit, description=description)
        )
    for name, unit, description, key in gauges:
        instruments.append(
            meter.create_observable_gauge(name, callbacks=[_callback(stats, key)], unit=unit, description=description)
        )
    return instruments
