"""The column matrix detectors read: tasks x metrics, float64, NaN = absent.

Rows are in time order (oldest first), so detectors that care about order
(change points, lead/lag) can read columns as time series directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Hashable, Mapping, Sequence

import numpy as np

from .attributes import AttributeTable
from .failures import failure_bits
from .patterns import InvolvedTask


@dataclass(frozen=True)
class MetricMatrix:
    values: np.ndarray  # shape (n_tasks, n_metrics), float64, NaN where a task lacks a metric
    metric_names: tuple[str, ...]
    labels: tuple[str, ...]  # per task
    timestamps: np.ndarray  # per task, Unix seconds, non-decreasing
    identities: tuple[Hashable | None, ...]  # per task, opaque (e.g. (trace_id, span_id))
    # Per task, descriptive string attributes (host.name, http.route ...) or None; empty = none kept.
    # Not analysed as metrics: they explain *why* a set of tasks stands apart. A kiln's snapshot
    # holds an AttributeTable (encoded; reads as the same sequence of mappings).
    attributes: Sequence[Mapping[str, str] | None] = ()
    # Per task, crackle_otel.failures.Failure bits as recorded (None: none recorded).
    failures: np.ndarray | None = None
    # Per task, whether no earlier cool has seen it (a stream's news); None: every task is new.
    # Detectors that judge single tasks (outliers) judge each task once, when it is new.
    fresh: np.ndarray | None = None

    def __post_init__(self) -> None:
        n, m = self.values.shape
        if len(self.metric_names) != m:
            raise ValueError("one name per column expected")
        if not (len(self.labels) == len(self.identities) == len(self.timestamps) == n):
            raise ValueError("one label, identity and timestamp per row expected")
        if self.attributes and len(self.attributes) != n:
            raise ValueError("one attribute mapping (or None) per row expected")
        if self.failures is not None and len(self.failures) != n:
            raise ValueError("one failure mask per row expected")
        if self.fresh is not None and self.fresh.shape != (n,):
            raise ValueError("one fresh flag per row expected")

    @cached_property
    def attribute_table(self) -> AttributeTable:
        """The descriptive attributes, encoded per name (built once from mappings if need be)."""
        if isinstance(self.attributes, AttributeTable):
            return self.attributes
        if not self.attributes:
            return AttributeTable.empty(self.n_tasks)
        return AttributeTable.from_mappings(self.attributes)

    @cached_property
    def failure_bits(self) -> np.ndarray:
        """Per task, how it failed (``Failure`` bits): as recorded, plus what ``is_error`` and status-code columns show."""
        return failure_bits(self.values, self.metric_names, self.failures)

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[dict[str, float]],
        labels: Sequence[str] | None = None,
        timestamps: Sequence[float] | None = None,
        identities: Sequence[Hashable | None] | None = None,
        attributes: Sequence[Mapping[str, str] | None] | None = None,
        failures: Sequence[int] | None = None,
    ) -> "MetricMatrix":
        """Build a matrix from per-task dicts (tests, small data); rows keep their order."""
        names: dict[str, int] = {}
        for row in rows:
            for name in row:
                names.setdefault(name, len(names))
        values = np.full((len(rows), len(names)), np.nan)
        for i, row in enumerate(rows):
            for name, value in row.items():
                values[i, names[name]] = value
        n = len(rows)
        return cls(
            values=values,
            metric_names=tuple(names),
            labels=tuple(labels) if labels is not None else tuple(f"task-{i}" for i in range(n)),
            timestamps=np.asarray(timestamps if timestamps is not None else np.arange(n), dtype=float),
            identities=tuple(identities) if identities is not None else (None,) * n,
            attributes=tuple(attributes) if attributes is not None else (),
            failures=np.asarray(failures, dtype=np.uint8) if failures is not None else None,
        )

    @classmethod
    def from_columns(
        cls,
        columns: Mapping[str, Sequence[float] | np.ndarray],
        *,
        labels: Sequence[str] | None = None,
        start: float = 0.0,
        interval_s: float = 1.0,
        identities: Sequence[Hashable | None] | None = None,
        attributes: Sequence[Mapping[str, str] | None] | None = None,
        failures: Sequence[int] | None = None,
    ) -> "MetricMatrix":
        """Build a matrix from equal-length columns (one per metric), tasks ``interval_s`` apart from ``start``."""
        names = tuple(columns)
        values = np.column_stack([np.asarray(columns[name], dtype=float) for name in names])
        n = values.shape[0]
        return cls(
            values=values,
            metric_names=names,
            labels=tuple(labels) if labels is not None else tuple(f"task-{i}" for i in range(n)),
            timestamps=start + interval_s * np.arange(n, dtype=float),
            identities=tuple(identities) if identities is not None else tuple(range(n)),
            attributes=tuple(attributes) if attributes is not None else (),
            failures=np.asarray(failures, dtype=np.uint8) if failures is not None else None,
        )

    @property
    def n_tasks(self) -> int:
        return self.values.shape[0]

    @property
    def n_metrics(self) -> int:
        return self.values.shape[1]

    @property
    def fresh_rows(self) -> np.ndarray:
        """Boolean mask of the tasks no earlier cool has seen (every task when ``fresh`` is None)."""
        return np.ones(self.n_tasks, dtype=bool) if self.fresh is None else self.fresh

    def column(self, name: str) -> np.ndarray:
        """The column of one metric (a view; NaN where absent)."""
        return self.values[:, self.metric_names.index(name)]

    def involved(
        self,
        indices: np.ndarray | Sequence[int],
        role: str,
        limit: int,
        priority: np.ndarray | None = None,
    ) -> tuple[InvolvedTask, ...]:
        """The tasks at ``indices`` as InvolvedTask, at most ``limit`` of them.

        With ``priority`` (one score per index, higher = more relevant) the
        top ``limit`` are kept; without it, an evenly spaced sample in time.
        """
        idx = np.asarray(indices, dtype=np.intp)
        if idx.size > limit:
            if priority is not None:
                keep = np.argsort(-np.asarray(priority, dtype=float), kind="stable")[:limit]
                idx = idx[np.sort(keep)]
            else:
                idx = idx[np.linspace(0, idx.size - 1, limit).round().astype(np.intp)]
        # Python ints and floats in one call each: per-element numpy scalars cost more than the tasks.
        times = np.asarray(self.timestamps[idx], dtype=float).tolist()
        labels, identities = self.labels, self.identities
        return tuple(
            InvolvedTask(label=labels[i], role=role, index=i, timestamp=time, identity=identities[i])
            for i, time in zip(idx.tolist(), times)
        )
