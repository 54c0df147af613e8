"""Calls between spans: a span's self time and the caller's wait, from parent/child span ids.

A span's duration mixes its own work with the time its children took, and a
slow call looks the same from the caller whether the callee worked longer or
the request sat in a network or a queue. Two derived measurements tell them
apart:

- ``self_time_ms``: the span's duration minus the part of it its children in
  the same service cover (their intervals merged, clipped to the span). Added
  to the span's own metrics when it has such children; without them it would
  only repeat ``duration_ms``.
- ``call_gap_ms``: for a call across services (the parent span runs in another
  service than the child), the caller's span duration minus the callee's span
  duration: what the caller waited beyond the callee's own work — network,
  queues, connection pools on either side. Durations, not timestamps, so clock
  skew between hosts does not enter. Recorded as a task of the *edge group*
  ``"<caller service> -> <callee group>"``, so each caller->callee edge is
  analysed like any other group.

Order: in one process children end before their parents, so a span's
same-service children are normally known when it is observed (the SDK
processor and an exporter's batches keep that order). Across services the two
spans of a call arrive in either order: whichever comes second completes it.
Memory is bounded: a span is remembered as a possible parent, and a child
waits for its parent, for ``max_age_s`` of span time (the two spans of a call
are exported within seconds of each other), and at most ``max_spans`` of each
are kept (oldest forgotten first; children that never met their parent are
counted in ``stats()``).
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import NamedTuple, Sequence

from .extract import ExtractedSpan

SELF_TIME = "self_time_ms"
CALL_GAP = "call_gap_ms"
EDGE_SEPARATOR = " -> "
DEFAULT_MAX_SPANS = 16_384
DEFAULT_MAX_AGE_S = 60.0
_MAX_EDGES = 4096  # distinct caller->callee edges remembered for the call graph
# tuple.__new__(SomeNamedTuple, values) is the named tuple without its Python-level __new__ (~0.5 us less).
_new_tuple = tuple.__new__


def edge_group(caller_service: str, callee_group: str) -> str:
    return f"{caller_service}{EDGE_SEPARATOR}{callee_group}"


class Edge(NamedTuple):
    """Spans of ``caller_group`` call spans of ``callee_group`` (in another service)."""

    caller_service: str
    caller_group: str
    callee_service: str
    callee_group: str


class _Parent(NamedTuple):
    """What a later child needs of a span it may belong to."""

    service: str
    group: str
    label: str
    duration_ms: float
    timestamp_s: float


class _Child(NamedTuple):
    timestamp_s: float
    service: str
    group: str
    start_ns: int
    end_ns: int
    duration_ms: float


@dataclass(slots=True)
class EdgeTask:
    """One call across services, as a task of its edge group."""

    group: str
    label: str  # the caller span's name
    timestamp_s: float  # the caller span's start
    identity: tuple[int, int]  # the caller span: the one whose duration holds the wait
    metrics: dict[str, float]
    caller_service: str
    callee_service: str


class CallGraph:
    """Joins spans with their parents and children; see the module docstring. Thread-safe."""

    def __init__(self, *, max_spans: int = DEFAULT_MAX_SPANS, max_age_s: float = DEFAULT_MAX_AGE_S) -> None:
        if max_spans < 1:
            raise ValueError("max_spans must be at least 1")
        self.max_spans = max_spans
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        # Oldest first, forgotten from the front. OrderedDicts, not dicts: a dict's first key after
        # deletions at its front is found by scanning past the deleted slots (up to max_spans of them
        # per span observed: 1.8 s per 100k spans at the default 16,384, against 0.1 s).
        self._parents: OrderedDict[tuple[int, int], _Parent] = OrderedDict()  # (trace, span) -> facts
        self._waiting: OrderedDict[tuple[int, int], list[_Child]] = OrderedDict()  # (trace, parent span) -> children
        self._waiting_count = 0
        self._edges: Counter[Edge] = Counter()  # calls seen per edge
        self._forgotten = 0
        self._late_children = 0
        self._calls = 0

    def observe(self, span: ExtractedSpan) -> list[EdgeTask]:
        """Add ``self_time_ms`` to ``span.metrics`` when it has same-service children; return completed calls."""
        with self._lock:
            return self._observe_locked(span)

    def observe_all(self, spans: Sequence[ExtractedSpan]) -> list[list[EdgeTask]]:
        """``observe`` each span in order under one hold of the lock: the calls each completed."""
        with self._lock:
            observe = self._observe_locked
            return [observe(span) for span in spans]

    def _observe_locked(self, span: ExtractedSpan) -> list[EdgeTask]:
        identity = span.identity
        service = span.service
        start_ns, end_ns, timestamp_s = span.start_ns, span.end_ns, span.timestamp_s
        duration_ms = (end_ns - start_ns) / 1e6
        calls: list[EdgeTask] = []
        children = self._waiting.pop(identity, None)
        if children is not None:
            self._waiting_count -= len(children)
            same = [(c.start_ns, c.end_ns) for c in children if c.service == service]
            if same:
                covered = _covered_ns(same, start_ns, end_ns)
                span.metrics[SELF_TIME] = max(0.0, duration_ms - covered / 1e6)
            for child in children:
                if child.service != service:
                    calls.append(self._call(service, span.group, span.label, timestamp_s, identity, duration_ms,
                                            child.service, child.group, child.duration_ms))
        if span.parent_span_id:
            parent_key = (identity[0], span.parent_span_id)
            parent = self._parents.get(parent_key)
            if parent is None:
                self._wait_for_parent(parent_key, _new_tuple(_Child, (timestamp_s, service, span.group, start_ns,
                                                                      end_ns, duration_ms)))
            elif parent.service != service:
                calls.append(self._call(parent.service, parent.group, parent.label, parent.timestamp_s,
                                        parent_key, parent.duration_ms, service, span.group, duration_ms))
            else:
                self._late_children += 1  # its parent was already measured without it
        # Remembered as a possible parent (inline: once per span); the oldest forgotten past the bounds.
        parents = self._parents
        parents[identity] = _new_tuple(_Parent, (service, span.group, span.label, duration_ms, timestamp_s))
        horizon = timestamp_s - self.max_age_s
        while parents:
            oldest = next(iter(parents.values()))
            if len(parents) <= self.max_spans and oldest.timestamp_s >= horizon:
                break
            parents.popitem(last=False)
        return calls

    def _call(self, caller_service: str, caller_group: str, label: str, timestamp_s: float,
              identity: tuple[int, int], caller_ms: float, callee_service: str, callee_group: str,
              callee_ms: float) -> EdgeTask:
        self._calls += 1
        edge = _new_tuple(Edge, (caller_service, caller_group, callee_service, callee_group))
        if edge in self._edges or len(self._edges) < _MAX_EDGES:
            self._edges[edge] += 1
        return EdgeTask(edge_group(caller_service, callee_group), label, timestamp_s, identity,
                        {CALL_GAP: caller_ms - callee_ms}, caller_service, callee_service)

    def _wait_for_parent(self, key: tuple[int, int], child: _Child) -> None:
        waiting = self._waiting
        siblings = waiting.get(key)
        if siblings is None:
            waiting[key] = [child]
        else:
            siblings.append(child)
        self._waiting_count += 1
        horizon = child.timestamp_s - self.max_age_s
        while waiting:
            oldest = next(iter(waiting.values()))
            if self._waiting_count <= self.max_spans and oldest[0].timestamp_s >= horizon:
                break
            self._waiting_count -= len(waiting.popitem(last=False)[1])
            self._forgotten += 1

    # ---------------------------------------------------------------- reading
    def edges(self) -> dict["Edge", int]:
        """Calls seen per edge (the first 4096 distinct edges)."""
        with self._lock:
            return dict(self._edges)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "calls_joined": self._calls,
                "spans_remembered": len(self._parents),
                "children_waiting": self._waiting_count,
                "children_unmatched": self._forgotten,  # waited for a parent that never came
                "late_children": self._late_children,
            }


def _covered_ns(intervals: list[tuple[int, int]], start: int, end: int) -> int:
    """Nanoseconds of [start, end] covered by the union of ``intervals``."""
    covered = 0
    reach = start
    for lo, hi in sorted(intervals):
        lo, hi = max(lo, reach), min(hi, end)
        if hi > lo:
            covered += hi - lo
            reach = hi
    return covered
