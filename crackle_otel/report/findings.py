"""Standing findings: the same pattern found by cool after cool, kept once, with the evidence to plot it.

A sliding window finds a standing cluster or law again at every cool, and a change point
twice (once from each window that holds it). ``FindingLedger`` is a ``CoolObserver``: it
sees every detection of every cool and folds them into one ``Finding`` per standing
pattern: per group and key, and for patterns with a position in time (phase transitions,
violations) per position too, so two shifts of one metric an hour apart stay two findings.

Each finding keeps one representative detection, its plot data (``evidence``) and the
spans it points at. Which detection represents it: offline, the one that saw the most
tasks (for a group that fits its kiln, the final window: the whole input), ties going
to the more confident; live, the latest. Offline (``positions`` given) it also turns
window rows into places in the input (``SpanPositions``) and counts clusters and
outliers over the whole input (see ``Finding.count``).

Memory is bounded by ``max_findings`` (the least recently seen go first).
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Sequence

import numpy as np

from ..matrix import MetricMatrix
from ..patterns import InvolvedTask, Pattern, PatternKind
from ..detect.attribution import value_tasks
from .evidence import edge_of, incident_evidence, service_of, evidence as plot_evidence

logger = logging.getLogger(__name__)

DEFAULT_MAX_FINDINGS = 1000
MAX_SPANS_LISTED = 128  # evidence span ids kept per finding
_MAX_EDGES = 4096  # caller -> callee services remembered for incident call graphs
_POSITION_STAT = re.compile(r"(?:^|_)index$")
_TASK_POSITION = re.compile(r"\btask (\d+)\b")
_TASK_POSITION_AND_TIME = re.compile(r"\btask (\d+) \((\d{4}-[^)]*)\)")
_LEADING_COUNT = re.compile(r"^(\d+) tasks \((\d+(?:\.\d+)?)%\)")
_SHARE_OF_TASKS = re.compile(r"\d+% of tasks \(\d+ of \d+\)")  # an attribution's closing count
# Kinds whose leading "N tasks (x%)" counts a role of the involved tasks: counted over the whole input.
_COUNTED_ROLE = {PatternKind.CLUSTERING: "member", PatternKind.OUTLIER: "outlier"}
_POSITIONAL = (PatternKind.PHASE_TRANSITION, PatternKind.CONSERVATION_VIOLATION)


class SpanPositions:
    """Where each recorded task came from: its ordinal among the spans of the input, per group.

    A ring per group mirrors the group's kiln (same capacity), so the i-th row of a cooled
    window maps to the ordinal of the span it was made from. Ordinals count every span
    read, across files in order; ``place`` turns one back into (file, ordinal in file).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._rings: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}
        self._file_starts: list[int] = []
        self._file_names: list[str] = []

    def start_file(self, name: str, first_ordinal: int) -> None:
        """Spans from ``first_ordinal`` (1-based) on come from ``name``."""
        self._file_starts.append(first_ordinal)
        self._file_names.append(name)

    def note(self, group: str, ordinal: int) -> None:
        """``group`` recorded a task made from span ``ordinal``."""
        self.note_many(group, (ordinal,))

    def note_many(self, group: str, ordinals: Sequence[int]) -> None:
        """``note`` each of ``group``'s tasks in order (its ring written a slice at a time, as they wrap)."""
        ring = self._rings.get(group)
        if ring is None:
            ring = self._rings[group] = np.zeros(self.capacity, dtype=np.int64)
            self._counts[group] = 0
        count = self._counts[group]
        self._counts[group] = count + len(ordinals)
        skipped = max(0, len(ordinals) - self.capacity)  # overwritten within this call
        if skipped:
            ordinals = ordinals[skipped:]
        start = (count + skipped) % self.capacity
        before_wrap = min(len(ordinals), self.capacity - start)
        ring[start:start + before_wrap] = ordinals[:before_wrap]
        if before_wrap < len(ordinals):
            ring[:len(ordinals) - before_wrap] = ordinals[before_wrap:]

    def recorded(self, group: str) -> int:
        return self._counts.get(group, 0)

    def window_ordinals(self, group: str, n_rows: int) -> np.ndarray:
        """Span ordinals of the last ``n_rows`` tasks of ``group`` (a cooled window's rows), oldest first."""
        count = self._counts.get(group, 0)
        ring = self._rings.get(group)
        if ring is None or n_rows == 0:
            return np.zeros(0, dtype=np.int64)
        sequence = np.arange(count - n_rows, count)
        return ring[sequence % self.capacity]

    def place(self, ordinal: int) -> tuple[str, int]:
        """(file name, 1-based span ordinal within that file)."""
        at = bisect.bisect_right(self._file_starts, ordinal) - 1
        if at < 0:
            return "", ordinal
        return self._file_names[at], ordinal - self._file_starts[at] + 1

    def describe(self, ordinal: int) -> str:
        name, offset = self.place(ordinal)
        return f"span {offset:,} of {name}" if name else f"span {offset:,}"


@dataclass
class Finding:
    """One standing pattern: a representative detection, how often it was seen, and what to plot."""

    pattern: Pattern
    evidence: dict[str, Any]
    spans: list[dict[str, Any]]
    first_seen: float  # span time (Unix s) of the earliest window that found it
    last_seen: float
    windows: int = 1  # cools that found it
    window_tasks: int = 0  # tasks in the representative window
    #: Over the whole input: tasks of the counted role in the windows that found it, each task once
    #: (clusters: members, outliers: outliers, attributions: the value's tasks); None for other kinds.
    count: int | None = None
    count_exact: bool = True
    group_tasks: int = 0  # tasks of the group analysed in the whole input (offline)
    places: dict[str, dict[str, Any]] = field(default_factory=dict)  # statistic -> {file, span, timestamp}
    folded: list[str] = field(default_factory=list)  # an incident: the group patterns it explains
    scope: str = ""  # which part of the input the representative window covered
    order: int = 0

    @property
    def id(self) -> str:
        return f"f{self.order}"

    @property
    def when(self) -> float:
        """When it happened: its first change or violation for a pattern placed in time, else when first seen."""
        moments = [value for name, value in self.pattern.statistics.items()
                   if name.endswith("_timestamp") and "ramp_end" not in name and value > 0]
        return min(moments) if moments else self.first_seen

    def to_dict(self) -> dict[str, Any]:
        pattern = self.pattern
        return {
            "id": self.id,
            "kind": pattern.kind.slug,
            "kind_name": str(pattern.kind),
            "group": pattern.group,
            "description": pattern.description,
            "confidence": pattern.confidence,
            "metrics": list(pattern.metrics),
            "statistics": dict(pattern.statistics),
            "explanation": dict(pattern.explanation),
            "key": pattern.key,
            "when": self.when,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "windows": self.windows,
            "window_tasks": self.window_tasks,
            "count": self.count,
            "count_exact": self.count_exact,
            "group_tasks": self.group_tasks,
            "places": self.places,
            "scope": self.scope,
            "folded": self.folded,
            "spans": self.spans,
            "evidence": self.evidence,
        }


def span_ids(involved: Sequence[InvolvedTask], limit: int = MAX_SPANS_LISTED) -> list[dict[str, Any]]:
    """Trace and span ids (hex) of the involved tasks that are spans, roles interleaved, at most ``limit``."""
    from ..otel.emit import span_ids_of

    listed = []
    for task in interleave_roles(involved, limit):
        ids = span_ids_of(task.identity)
        if ids is not None:
            listed.append({"trace_id": f"{ids[0]:032x}", "span_id": f"{ids[1]:016x}",
                           "role": task.role, "timestamp": task.timestamp, "label": task.label})
    return listed


def interleave_roles(involved: Sequence[InvolvedTask], limit: int) -> list[InvolvedTask]:
    """At most ``limit`` tasks, taking from each role in turn (each role keeps its detector's order)."""
    if len(involved) <= limit:
        return list(involved)
    by_role: dict[str, list[InvolvedTask]] = {}
    for task in involved:
        by_role.setdefault(task.role, []).append(task)
    chosen: list[InvolvedTask] = []
    queues = [iter(tasks) for tasks in by_role.values()]
    while len(chosen) < limit and queues:
        for queue in list(queues):
            task = next(queue, None)
            if task is None:
                queues.remove(queue)
            elif len(chosen) < limit:
                chosen.append(task)
    return chosen


class FindingLedger:
    """Folds every cool's detections into standing findings (see the module docstring). Thread-safe.

    ``positions``: offline, where each task came from (window rows -> places in the input).
    ``keep``: ``"widest"`` (offline) or ``"latest"`` (live) representative detection.
    ``max_involved``: involved tasks kept on a representative pattern (the profile's own
    limit: analysis may raise the detectors' limit to count whole clusters). ``evidence``:
    keep plot data.
    """

    def __init__(self, *, positions: SpanPositions | None = None, keep: str = "widest",
                 max_findings: int = DEFAULT_MAX_FINDINGS, max_involved: int = MAX_SPANS_LISTED,
                 evidence: bool = True) -> None:
        if keep not in ("widest", "latest"):
            raise ValueError(f"keep must be 'widest' or 'latest', got {keep!r}")
        self.positions = positions
        self.keep = keep
        self.max_findings = max_findings
        self.max_involved = max_involved
        self.evidence = evidence  # plot data (a few dozen kB per finding); off when nothing will plot it
        self._lock = threading.Lock()
        self._findings: OrderedDict[tuple[Hashable, ...], Finding] = OrderedDict()  # least recently seen first
        self._by_key: dict[tuple[str, str], list[tuple[Hashable, ...]]] = {}
        self._counted_until: dict[str, int] = {}  # group -> tasks already counted (offline)
        self._next_order = 0
        # What an incident's plot needs from the groups around it: their latest latency changes
        # and the calls between services seen so far (bounded: groups and edges are capped upstream).
        self._changes: dict[str, list[tuple[str, float, float, float]]] = {}
        self._edges: set[tuple[str, str]] = set()

    # ------------------------------------------------------------ observing
    def taken(self, group: str, window: MetricMatrix) -> tuple[np.ndarray | None, int]:
        """Where the rows of a window just taken from ``group``'s kiln came from, before later tasks move them.

        For ``cooled(..., taken=...)`` when the detectors run elsewhere (``Furnace(detection=...)``):
        (span ordinals of the rows, the first row no earlier window of the group held).
        """
        if self.positions is None:
            return None, 0
        n = window.n_tasks
        ordinals = self.positions.window_ordinals(group, n)
        recorded = self.positions.recorded(group)
        # Rows not in an earlier window of this group: each task is counted once.
        fresh_from = max(0, n - (recorded - self._counted_until.get(group, 0)))
        self._counted_until[group] = recorded
        return ordinals, fresh_from

    def cooled(self, group: str, window: MetricMatrix, patterns: Sequence[Pattern], *,
               taken: tuple[np.ndarray | None, int] | None = None) -> None:
        """Fold one cooled window's detections in; ``taken``: what ``taken`` said when the window was taken."""
        n = window.n_tasks
        ordinals, fresh_from = taken if taken is not None else self.taken(group, window)
        if n == 0:
            return
        start, stop = float(window.timestamps[0]), float(window.timestamps[-1])
        with self._lock:
            if self.evidence:  # only an incident's plot reads the context
                self._note_context(group, window, patterns)
            for pattern in patterns:
                try:
                    self._fold(pattern, window, ordinals, fresh_from, start, stop)
                except Exception:  # one pattern's bookkeeping must not cost the group's other findings
                    logger.exception("crackle findings: could not keep a %s pattern of %s", pattern.kind, group)

    # ------------------------------------------------------------ reading
    def findings(self) -> list[Finding]:
        """Every standing finding, most confident first; offline, with whole-input counts in the description.

        Changes, clusters and outliers an incident explains are not findings of their own: they are
        listed in the incident (``Finding.folded``), as the incident layer folds them in a stream.
        """
        with self._lock:
            found = list(self._findings.values())
            if self.positions is not None:
                for finding in found:
                    self._count_in_description(finding)
            folded = _fold_into_incidents(found)
        return sorted((f for f in found if id(f) not in folded), key=lambda f: (-f.pattern.confidence, f.order))

    def _count_in_description(self, finding: Finding) -> None:
        """"415 tasks (16.6%)" of one window becomes the count over the whole input (each task once)."""
        assert self.positions is not None
        finding.group_tasks = self.positions.recorded(finding.pattern.group)
        if finding.count is None or not finding.group_tasks:
            return
        approx = "" if finding.count_exact else "~"
        share = finding.count / finding.group_tasks
        description = _LEADING_COUNT.sub(f"{approx}{finding.count} tasks ({share:.1%})", finding.pattern.description,
                                         count=1)
        description = _SHARE_OF_TASKS.sub(f"{share:.0%} of tasks ({approx}{finding.count} of {finding.group_tasks})",
                                          description)
        finding.pattern = dataclasses.replace(finding.pattern, description=description)

    def recent(self, limit: int) -> list[Finding]:
        """The ``limit`` most recently seen findings, newest first (those an incident explains in it)."""
        with self._lock:
            found = list(self._findings.values())
            folded = _fold_into_incidents(found)
        return [f for f in found if id(f) not in folded][-limit:][::-1]

    def __len__(self) -> int:
        return len(self._findings)

    # ------------------------------------------------------------ folding
    def _note_context(self, group: str, window: MetricMatrix, patterns: Sequence[Pattern]) -> None:
        edge = edge_of(group)
        if edge is not None and len(self._edges) < _MAX_EDGES:
            self._edges.add(edge)
        from ..incidents import changes_of  # the incident layer's own measure of a change

        changes = changes_of([p for p in patterns if p.group == group], window, group, 0.0)
        if changes:
            self._changes[group] = [(c.metric, c.at, c.before, c.after) for c in changes]

    def _fold_incident(self, pattern: Pattern) -> None:
        """An incident spans groups: kept by its key, plotted as a timeline and a call graph."""
        ident = (pattern.group, pattern.key)
        finding = self._findings.get(ident)
        times = [task.timestamp for task in pattern.involved] or [pattern.statistics.get("start_timestamp", 0.0)]
        if finding is None:
            finding = Finding(pattern=pattern, evidence={}, spans=[], first_seen=min(times), last_seen=max(times),
                              windows=0)
            self._insert(ident, finding)
        else:
            self._findings.move_to_end(ident)
        finding.windows += 1
        finding.first_seen = min(finding.first_seen, min(times))
        finding.last_seen = max(finding.last_seen, max(times))
        finding.pattern = self._trimmed(pattern)
        finding.spans = span_ids(pattern.involved)
        if self.evidence:
            finding.evidence = incident_evidence(pattern, self._changes, self._edges)

    def _fold(self, pattern: Pattern, window: MetricMatrix, ordinals: np.ndarray | None,
              fresh_from: int, start: float, stop: float) -> None:
        if pattern.kind is PatternKind.INCIDENT:
            self._fold_incident(pattern)
            return
        n = window.n_tasks
        changes = self._change_positions(pattern, window, ordinals)
        ident = self._match(pattern, changes, tolerance=max(16, n // 8))
        finding = self._findings.get(ident) if ident is not None else None
        counted = self._fresh_count(pattern, window, fresh_from) if ordinals is not None else None
        if finding is None:
            ident = (pattern.group, pattern.key, *changes)
            finding = Finding(pattern=pattern, evidence={}, spans=[], first_seen=start, last_seen=stop,
                              windows=0, window_tasks=-1)
            if counted is not None:
                finding.count = 0
            self._insert(ident, finding)
        else:
            self._findings.move_to_end(ident)
        finding.windows += 1
        finding.first_seen = min(finding.first_seen, start)
        finding.last_seen = max(finding.last_seen, stop)
        if counted is not None and finding.count is not None:
            finding.count += counted[0]
            finding.count_exact = finding.count_exact and counted[1]
        if self._represents(pattern, n, finding):
            self._represent(finding, pattern, window, ordinals)

    def _represents(self, pattern: Pattern, n: int, finding: Finding) -> bool:
        if self.keep == "latest" or finding.window_tasks < 0:
            return True
        if n != finding.window_tasks:
            return n > finding.window_tasks
        return pattern.confidence > finding.pattern.confidence

    def _represent(self, finding: Finding, pattern: Pattern, window: MetricMatrix, ordinals: np.ndarray | None) -> None:
        finding.window_tasks = window.n_tasks
        finding.evidence = plot_evidence(pattern, window) if self.evidence else {}
        finding.spans = span_ids(pattern.involved)
        if ordinals is None:
            pattern = _in_time_terms(pattern, window)
        elif self.positions is not None:
            finding.places = self._places(pattern, window, ordinals)
            first, last = self.positions.place(int(ordinals[0])), self.positions.place(int(ordinals[-1]))
            finding.scope = (f"{window.n_tasks:,} spans of {pattern.group}: span {first[1]:,} of {first[0]} "
                             f"to span {last[1]:,} of {last[0]}")
            pattern = self._in_input_terms(pattern, ordinals)
        finding.pattern = self._trimmed(pattern)

    def _trimmed(self, pattern: Pattern) -> Pattern:
        if len(pattern.involved) <= self.max_involved:
            return pattern
        return dataclasses.replace(pattern, involved=tuple(interleave_roles(pattern.involved, self.max_involved)))

    def _insert(self, ident: tuple[Hashable, ...], finding: Finding) -> None:
        finding.order = self._next_order
        self._next_order += 1
        self._findings[ident] = finding
        self._by_key.setdefault(ident[:2], []).append(ident)
        while len(self._findings) > self.max_findings:
            old, _ = self._findings.popitem(last=False)
            siblings = self._by_key.get(old[:2], [])
            if old in siblings:
                siblings.remove(old)
            if not siblings:
                self._by_key.pop(old[:2], None)

    def _match(self, pattern: Pattern, changes: tuple[int, ...], tolerance: int) -> tuple[Hashable, ...] | None:
        """The standing finding this detection is another sighting of, if any."""
        for ident in self._by_key.get((pattern.group, pattern.key), ()):
            if not changes or not ident[2:]:
                return ident
            if any(abs(a - b) <= tolerance for a in changes for b in ident[2:]):
                return ident
        return None

    # ------------------------------------------------------------ positions
    @staticmethod
    def _change_positions(pattern: Pattern, window: MetricMatrix, ordinals: np.ndarray | None) -> tuple[int, ...]:
        """Where a positional pattern changes: span ordinals offline, else times in milliseconds."""
        if pattern.kind not in _POSITIONAL:
            return ()
        rows = sorted({int(v) for name, v in pattern.statistics.items()
                       if name.endswith("_index") and ("change" in name or "first_violation" in name)
                       and 0 <= v < window.n_tasks})
        if ordinals is not None and len(ordinals) == window.n_tasks:
            return tuple(int(ordinals[r]) for r in rows)
        return tuple(int(window.timestamps[r] * 1000) for r in rows)

    def _places(self, pattern: Pattern, window: MetricMatrix, ordinals: np.ndarray) -> dict[str, dict[str, Any]]:
        assert self.positions is not None
        places = {}
        for name, value in pattern.statistics.items():
            if _POSITION_STAT.search(name) and 0 <= value < window.n_tasks and value == int(value):
                file, offset = self.positions.place(int(ordinals[int(value)]))
                places[name] = {"file": file, "span": offset, "timestamp": float(window.timestamps[int(value)])}
        return places

    def _in_input_terms(self, pattern: Pattern, ordinals: np.ndarray) -> Pattern:
        """The description with window rows as places in the input (whole-input counts: ``_count_in_description``)."""
        assert self.positions is not None
        positions = self.positions

        def place(match: re.Match[str]) -> str:
            row = int(match.group(1))
            return positions.describe(int(ordinals[row])) if 0 <= row < len(ordinals) else match.group(0)

        return dataclasses.replace(pattern, description=_TASK_POSITION.sub(place, pattern.description))

    @staticmethod
    def _fresh_count(pattern: Pattern, window: MetricMatrix, fresh_from: int) -> tuple[int, bool] | None:
        """(tasks of the counted role among the rows no earlier window had, whether that is exact)."""
        n = window.n_tasks
        members = value_tasks(window, pattern)
        if members is not None:  # an attribution's tasks are those that carry its value: all known
            return int(members[fresh_from:].sum()), True
        role = _COUNTED_ROLE.get(pattern.kind)
        if role is None:
            return None
        rows = [task.index for task in pattern.involved if task.role == role]
        size = pattern.statistics.get("size", pattern.statistics.get("count"))
        fresh = sum(1 for row in rows if row >= fresh_from)
        if size is None or len(rows) >= size:
            return fresh, True
        # The detector listed only some members: scale by the share of fresh rows among them.
        share = fresh / len(rows) if rows else (n - fresh_from) / max(n, 1)
        return int(round(size * share)), False



def _in_time_terms(pattern: Pattern, window: MetricMatrix) -> Pattern:
    """Live, a row of a sliding window means nothing to a reader: "at task 1500 (<time>)" becomes "at <time>"."""
    def moment(match: re.Match[str]) -> str:
        row = int(match.group(1))
        if not 0 <= row < window.n_tasks:
            return match.group(0)
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(window.timestamps[row])))

    description = _TASK_POSITION_AND_TIME.sub(lambda m: m.group(2), pattern.description)
    return dataclasses.replace(pattern, description=_TASK_POSITION.sub(moment, description))


def _services_of(group: str) -> set[str]:
    """The services a group is about: its own, and an edge group's caller too."""
    edge = edge_of(group)
    return {service_of(group), edge[0]} if edge else {service_of(group)}


def _fold_into_incidents(findings: Sequence[Finding]) -> set[int]:
    """Findings an incident explains (its services, from shortly before it began), listed in it; their ids.

    The same rule as ``IncidentTracker.explains``, applied to what a ledger kept: a group's change can
    be kept before the incident it belongs to forms.
    """
    from ..incidents import IncidentTracker, explained_by

    margin = IncidentTracker().window_s
    incidents = [f for f in findings if f.pattern.kind is PatternKind.INCIDENT]
    folded: set[int] = set()
    for incident in incidents:
        groups = [g.strip() for g in incident.pattern.explanation.get("groups", "").split(",") if g.strip()]
        services = set().union(*map(_services_of, groups))
        start = incident.pattern.statistics.get("start_timestamp", incident.first_seen)
        incident.folded = []
        for finding in findings:
            pattern = finding.pattern
            latest = max((task.timestamp for task in pattern.involved), default=finding.last_seen)
            # No call graph here: the stream folded its callers' small slowdowns already.
            if explained_by(pattern, _services_of(pattern.group), services, start, margin, {}, latest=latest):
                folded.add(id(finding))
                incident.folded.append(f"[{pattern.kind}] {pattern.group}: {pattern.description}")
    return folded
