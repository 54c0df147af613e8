"""One OTel metric data point -> the metrics a collection task records.

Shared by CrackleMetricReader (SDK points) and the gateway (OTLP proto points),
so both see a stream the same way:

- gauges and non-monotonic sums: the value;
- monotonic sums: cumulative ones give the value and ``<name>.rate`` (the
  increase since the previous reading of that stream), delta ones the rate only;
- histograms (and exponential histograms, summaries): ``<name>.count`` and
  ``<name>.mean`` of the observations since the previous reading, because the
  all-time mean of a long-running process barely moves.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Hashable


class PointKind(Enum):
    VALUE = "value"  # gauge, non-monotonic sum
    MONOTONIC_SUM = "monotonic_sum"
    DISTRIBUTION = "distribution"  # histogram, exponential histogram, summary


class CumulativeReadings:
    """The previous reading of each cumulative stream, to turn totals into per-interval figures."""

    def __init__(self) -> None:
        self._previous: dict[Hashable, tuple[int, Any]] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._previous

    def __len__(self) -> int:
        return len(self._previous)

    def since_last(self, key: Hashable, start_ns: int, current: Any) -> Any:
        """The previous reading if comparable (same start time, not reset), else None; stores ``current``."""
        previous = self._previous.get(key)
        self._previous[key] = (start_ns, current)
        if previous is None or previous[0] != start_ns:
            return None  # first reading, or the stream restarted: the whole value is new
        before = previous[1]
        earlier = before[0] if isinstance(before, tuple) else before
        now = current[0] if isinstance(current, tuple) else current
        if now < earlier:
            return None  # a reset without a new start time
        return before


def add_point(
    values: dict[str, float],
    name: str,
    kind: PointKind,
    *,
    cumulative: bool,
    start_ns: int,
    readings: CumulativeReadings,
    key: Hashable,
    value: float = 0.0,
    count: int = 0,
    total: float = 0.0,
) -> None:
    """Add the metrics of one point of stream ``name`` to ``values`` (see module docstring)."""
    if kind is PointKind.DISTRIBUTION:
        if cumulative:
            previous = readings.since_last(key, start_ns, (count, total))
            if previous is not None:
                count, total = count - previous[0], total - previous[1]
        values[f"{name}.count"] = float(count)
        if count > 0:
            values[f"{name}.mean"] = total / count
    elif kind is PointKind.MONOTONIC_SUM:
        if cumulative:
            values[name] = value
            previous = readings.since_last(key, start_ns, value)
            values[f"{name}.rate"] = value - previous if previous is not None else value
        else:
            values[f"{name}.rate"] = value
    else:
        values[name] = value
