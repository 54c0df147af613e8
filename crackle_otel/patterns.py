"""Patterns: what a cool finds, with the evidence that justifies it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, Hashable, Mapping


class PatternKind(Enum):
    """What kind of emergent pattern was found; ``str(kind)`` is its display name."""

    CLUSTERING = "clustering"
    OUTLIER = "outlier"
    PHASE_TRANSITION = "phase transition"
    CONSERVATION = "conservation law"
    CONSERVATION_VIOLATION = "conservation violation"
    CORRELATION = "correlation"
    LEAD_LAG = "lead-lag dependency"
    CONSTANT = "constant metric"
    ATTRIBUTION = "attribution"
    INCIDENT = "incident"

    def __str__(self) -> str:
        return self.value

    @property
    def slug(self) -> str:
        """Machine-friendly name (``phase_transition``), used in attribute values."""
        return self.name.lower()


@dataclass(frozen=True)
class InvolvedTask:
    """A task a pattern points at, and the part it plays in it.

    ``role`` is one of: member, outlier, before, after, violator, carrier,
    leader, follower, origin, affected (incidents), attributed (a task with the attribute value a pattern
    names), rest (a typical task without it). ``identity`` is the task's opaque identity (for a span,
    ``(trace_id, span_id)``), so an adapter can link back to it.
    """

    label: str
    role: str
    index: int
    timestamp: float
    identity: Hashable | None = None

    def to_dict(self) -> dict[str, Any]:
        identity = list(self.identity) if isinstance(self.identity, tuple) else self.identity
        return {
            "label": self.label,
            "role": self.role,
            "index": self.index,
            "timestamp": self.timestamp,
            "identity": identity,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "InvolvedTask":
        identity = data.get("identity")
        if isinstance(identity, list):
            identity = tuple(identity)
        return cls(
            label=data["label"],
            role=data["role"],
            index=int(data["index"]),
            timestamp=float(data["timestamp"]),
            identity=identity,
        )


def _frozen_statistics(stats: Mapping[str, Any]) -> Mapping[str, float]:
    clean = {}
    for name, value in stats.items():
        value = float(value)
        # JSON has no NaN; a statistic that is not a number is not evidence.
        if math.isnan(value):
            continue
        clean[name] = value
    return MappingProxyType(clean)


@dataclass(frozen=True)
class Pattern:
    """One detected pattern. Immutable; build a changed copy with ``dataclasses.replace``.

    - ``description``: one honest line a person can act on.
    - ``confidence``: in [0, 1].
    - ``metrics``: the metric names the pattern is about.
    - ``statistics``: the figures that justify it (effect size, p-value, thresholds used).
    - ``involved``: the tasks that matter (capped by the profile), each with its role.
    - ``explanation``: optional *why*, e.g. which attribute values set the involved tasks apart.
    - ``key``: a stable identity across cools ("the same pattern again"), used to de-duplicate.
    - ``group``: which population the pattern was found in (set by adapters; "" in the core).
    """

    kind: PatternKind
    description: str
    confidence: float
    metrics: tuple[str, ...] = ()
    statistics: Mapping[str, float] = field(default_factory=dict)
    involved: tuple[InvolvedTask, ...] = ()
    explanation: Mapping[str, str] = field(default_factory=dict)
    key: str = ""
    group: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.kind, PatternKind):
            raise TypeError(f"kind must be a PatternKind, got {self.kind!r}")
        confidence = float(self.confidence)
        if math.isnan(confidence):
            raise ValueError("confidence must be a number")
        object.__setattr__(self, "confidence", min(1.0, max(0.0, confidence)))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "involved", tuple(self.involved))
        object.__setattr__(self, "statistics", _frozen_statistics(self.statistics))
        object.__setattr__(self, "explanation", MappingProxyType(dict(self.explanation)))
        if not self.key:
            object.__setattr__(self, "key", f"{self.kind.slug}:{'|'.join(self.metrics)}")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Its mappings are read-only proxies, which pickle cannot take: rebuilt from plain dicts
        # (``__post_init__`` freezes them again, unchanged), e.g. to come back from a worker process.
        return (Pattern, (self.kind, self.description, self.confidence, self.metrics, dict(self.statistics),
                          self.involved, dict(self.explanation), self.key, self.group))

    @property
    def involved_labels(self) -> list[str]:
        return [task.label for task in self.involved]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.slug,
            "description": self.description,
            "confidence": self.confidence,
            "metrics": list(self.metrics),
            "statistics": dict(self.statistics),
            "involved": [task.to_dict() for task in self.involved],
            "explanation": dict(self.explanation),
            "key": self.key,
            "group": self.group,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Pattern":
        return cls(
            kind=PatternKind[data["kind"].upper()],
            description=data["description"],
            confidence=data["confidence"],
            metrics=tuple(data.get("metrics", ())),
            statistics=data.get("statistics", {}),
            involved=tuple(InvolvedTask.from_dict(t) for t in data.get("involved", ())),
            explanation=data.get("explanation", {}),
            key=data.get("key", ""),
            group=data.get("group", ""),
        )

    @classmethod
    def from_json(cls, text: str) -> "Pattern":
        return cls.from_dict(json.loads(text))

    def __str__(self) -> str:
        return f"[{self.kind}] {self.description} (confidence: {self.confidence:.2f})"
