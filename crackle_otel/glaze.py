"""GlazeLayer: enrich any task with metrics derived from its output.

A derived metric whose function raises (or returns a non-finite value) is
skipped and counted in ``errors``; the task's own output is never lost.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

from .errors import InvalidMetricError
from .task import CrackleTask, TaskOutput, coerce_metric, task_label

logger = logging.getLogger(__name__)

DerivedMetric = Callable[[TaskOutput], Any]


class GlazeLayer:
    """Wraps a task; after it fires, adds ``name = fn(output)`` for each derived metric."""

    def __init__(self, task: CrackleTask) -> None:
        self.task = task
        self._derived: list[tuple[str, DerivedMetric]] = []
        self.errors = 0  # derived metrics skipped because their function failed

    def with_derived_metric(self, name: str, fn: DerivedMetric) -> "GlazeLayer":
        self._derived.append((name, fn))
        return self

    def fire(self) -> TaskOutput:
        output = self.task.fire()
        metrics = dict(output.metrics)
        for name, fn in self._derived:
            try:
                metrics[name] = coerce_metric(name, fn(output))
            except Exception as exc:  # includes InvalidMetricError: skip the metric, keep the task
                self.errors += 1
                level = logging.DEBUG if isinstance(exc, InvalidMetricError) else logging.WARNING
                logger.log(level, "crackle glaze: derived metric %r of %r skipped: %s", name, self.label(), exc)
        return TaskOutput(output.value, metrics)

    def label(self) -> str:
        return task_label(self.task)

    def cool(self, output: TaskOutput, all_metrics: list[tuple[str, dict[str, float]]]):
        hook = getattr(self.task, "cool", None)
        return hook(output, all_metrics) if callable(hook) else None

    @classmethod
    def glaze_all(cls, tasks: Iterable[CrackleTask], derived: dict[str, DerivedMetric]) -> list["GlazeLayer"]:
        """Glaze a batch of tasks with the same derived metrics (the crate's GlazeBatch)."""
        glazed = []
        for task in tasks:
            layer = cls(task)
            for name, fn in derived.items():
                layer.with_derived_metric(name, fn)
            glazed.append(layer)
        return glazed
