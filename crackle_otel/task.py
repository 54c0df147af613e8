"""Tasks, their outputs and the record of a fired task.

A task is anything with ``fire() -> TaskOutput`` and ``label() -> str``; an
optional ``cool(output, all_metrics)`` hook may add metrics once every task of
the cycle has fired (it sees all of them, which is the point of cooling).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Hashable, Iterable, Mapping, Protocol, runtime_checkable

from .errors import InvalidMetricError

MetricInput = Mapping[str, Any] | Iterable[tuple[str, Any]]


def coerce_metric(name: str, value: Any) -> float:
    """Return ``value`` as a finite float; bools become 0/1.

    Raises InvalidMetricError for NaN, inf and anything that is not a real
    number, naming the metric so the caller knows which one was bad.
    """
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if not isinstance(value, numbers.Real):
        raise InvalidMetricError(
            f"metric {name!r}: expected a real number or bool, got {type(value).__name__}"
        )
    try:
        as_float = float(value)
    except (OverflowError, ValueError) as exc:  # ints beyond float range
        raise InvalidMetricError(f"metric {name!r}: {exc}") from None
    if not math.isfinite(as_float):
        raise InvalidMetricError(f"metric {name!r}: value must be finite, got {as_float!r}")
    return as_float


def _metric_items(metrics: MetricInput | None) -> Iterable[tuple[str, Any]]:
    if metrics is None:
        return ()
    if type(metrics) is dict or isinstance(metrics, Mapping):
        return metrics.items()
    return metrics


@dataclass(frozen=True)
class TaskOutput:
    """The value a task produced and the named metrics that describe it.

    Metrics are validated on construction: a bad one raises
    ``InvalidMetricError`` here, at the call that made it, not later in a cool.
    """

    value: Any = None
    metrics: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clean: dict[str, float] = {}
        for name, raw in _metric_items(self.metrics):
            if not isinstance(name, str) or not name:
                raise InvalidMetricError(f"metric names must be non-empty strings, got {name!r}")
            clean[name] = coerce_metric(name, raw)
        object.__setattr__(self, "metrics", MappingProxyType(clean))

    def with_metric(self, name: str, value: Any) -> "TaskOutput":
        """A copy of this output with one more (or one replaced) metric."""
        return TaskOutput(self.value, {**self.metrics, name: value})


@runtime_checkable
class CrackleTask(Protocol):
    """What the kiln fires. ``cool`` is optional (see module docstring)."""

    def fire(self) -> TaskOutput: ...

    def label(self) -> str: ...


def task_label(task: Any) -> str:
    """The task's label, or its class name when it has no ``label()``."""
    label = getattr(task, "label", None)
    if callable(label):
        return str(label())
    return type(task).__name__


@dataclass(frozen=True)
class FiredTask:
    """One task as the kiln holds it: what it measured and when.

    ``identity`` is whatever lets a pattern point back at the task (for a span:
    ``(trace_id, span_id)``); ``cooled_at`` is set once a cool has seen it.
    Timestamps are Unix seconds.
    """

    label: str
    metrics: Mapping[str, float]
    fired_at: float
    cooled_at: float | None = None
    value: Any = None
    identity: Hashable | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
