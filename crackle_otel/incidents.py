"""Incidents: changes in several groups at about the same time, tied together by calls, with a ranked origin.

Per-group detectors see one population each. When a service slows down, its own
operations change, the calls into it wait longer, and every caller up the
chain gets slower too: many phase transitions, one cause. This layer sits above
the per-group cools (it sees their change points and the call graph, nothing
else) and turns them into one ``incident``:

- **Changes.** A phase transition of a latency metric (``duration_ms``,
  ``self_time_ms``, ``call_gap_ms``) that is a slowdown — the median after its
  most recent change point at least ``MIN_RATIO`` times and ``MIN_CHANGE_MS``
  above the median before — becomes a ``Change``.
- **Incidents.** Changes that began, and were first seen, within ``window_s``
  of each other belong together; every such set spanning two or more groups
  is an incident
  (the call graph does not decide what belongs together: a shared host or
  database links services no call does; it decides where it started).
- **Origin.** What a change says about a service depends on what was measured:
  a rise of a span's *own* time (``self_time_ms``, or the duration of a span
  that has no children) is evidence against its service; a rise of the wait
  on a call (``call_gap_ms`` of an edge group) is evidence against the callee
  — unless the caller is itself slow and the callee is not, or the caller's
  calls to several services all wait longer: then the caller is starved; a
  rise of a span's *total* duration when its time went to its children is an
  effect, evidence against nobody. Services are ranked by their strongest
  evidence, ``|log2(after/before)| x confidence`` (own time and call waits
  corroborating each other add a quarter of the weaker), and a callee ranks
  before its caller at a near tie. Outgoing calls whose callee is not seen
  (a service's client spans in the span processor) are evidence against the
  peer they name.

Reporting: an incident is reported when it forms and again when its top
origin changes or the number of groups it covers doubles. The per-group
patterns it explains (phase transitions, clusters and outliers of its
services over its period) are folded into it rather than sent as unrelated
alerts; a change standing alone is held back for ``hold_s`` so that the
changes it belongs with can join it first.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Mapping

import numpy as np

from .matrix import MetricMatrix
from .patterns import InvolvedTask, Pattern, PatternKind

DURATION = "duration_ms"
SELF_TIME = "self_time_ms"
CALL_GAP = "call_gap_ms"
LATENCY_METRICS = (DURATION, SELF_TIME, CALL_GAP)
FOLDED_KINDS = frozenset({PatternKind.PHASE_TRANSITION, PatternKind.CLUSTERING, PatternKind.OUTLIER})

_MIN_SIDE = 3  # tasks on each side of a change for its medians to mean anything
MIN_RATIO = 1.5  # a slowdown: the median after is at least this many times the median before
MIN_CHANGE_MS = 0.5  # and at least this much longer (a sub-millisecond wobble is nobody's incident)
_CORROBORATION = 0.25  # share of the weaker of own-time and call-wait evidence added to the stronger
_NEAR_TIE = 0.9  # a callee within this share of its caller's score ranks first
_COMPARABLE = 0.5  # waits on two callees at least this share of each other: the caller is starved
_SHOWN_CANDIDATES = 5
_CHANGE_TIME = re.compile(r"change(_\d+)?_timestamp")  # not a ramp's end: a change begins at its start


@dataclass(frozen=True)
class GroupFacts:
    """What the incident layer knows about a group besides its changes."""

    service: str
    kind: str = ""  # span kind of its spans: "client" for outgoing calls
    caller: str = ""  # edge groups: the calling service (``service`` is the callee's)
    peer: str = ""  # client groups: who they call (peer.service, server.address ...), if known
    has_self_time: bool = False  # its spans have children in their own service
    calls_out: bool = False  # its spans are parents of spans in other services

    @property
    def is_edge(self) -> bool:
        return bool(self.caller)


@dataclass
class Change:
    """One group's latency metric moved at ``at`` from median ``before`` to ``after``."""

    group: str
    metric: str
    at: float
    before: float
    after: float
    confidence: float
    pattern: Pattern
    evidence: tuple[InvolvedTask, ...] = ()  # tasks after the change, most relevant first
    first_seen: float = 0.0
    last_seen: float = 0.0

    @property
    def log_ratio(self) -> float:
        return math.log2(self.after / self.before)

    @property
    def strength(self) -> float:
        return abs(self.log_ratio) * self.confidence

    @property
    def ratio(self) -> float:
        return self.after / self.before


def changes_of(patterns: Iterable[Pattern], matrix: MetricMatrix, group: str, now: float) -> list[Change]:
    """The latency changes among one group's phase transitions, measured on the group's matrix."""
    changes = []
    for pattern in patterns:
        if pattern.kind is not PatternKind.PHASE_TRANSITION or not pattern.metrics:
            continue
        metric = pattern.metrics[0]
        if metric not in LATENCY_METRICS or metric not in matrix.metric_names:
            continue
        times = [v for k, v in pattern.statistics.items() if _CHANGE_TIME.fullmatch(k)]
        if not times:
            continue
        at = max(times)  # the most recent change point: what is happening now
        earlier = [t for t in times if t < at]
        column = matrix.column(metric)
        stamps = matrix.timestamps
        present = np.isfinite(column)
        after = column[present & (stamps >= at)]
        before = column[present & (stamps < at) & (stamps >= (max(earlier) if earlier else -math.inf))]
        if after.size < _MIN_SIDE or before.size < _MIN_SIDE:
            continue
        level_before, level_after = float(np.median(before)), float(np.median(after))
        if level_before <= 0 or level_after < MIN_RATIO * level_before or level_after - level_before < MIN_CHANGE_MS:
            continue  # not a slowdown worth an incident
        evidence = tuple(t for t in pattern.involved if t.role == "after" and t.timestamp >= at)
        changes.append(Change(group, metric, at, level_before, level_after, pattern.confidence, pattern,
                              evidence, first_seen=now, last_seen=now))
    return changes


@dataclass
class _Incident:
    number: int
    members: dict[tuple[str, str], Change]  # (group, metric) -> change
    reported_origin: str = ""
    reported_groups: int = 0
    ranking: list[tuple[str, float, Change]] = field(default_factory=list)

    @property
    def start(self) -> float:
        return min(c.at for c in self.members.values())

    @property
    def groups(self) -> set[str]:
        return {group for group, _ in self.members}


class IncidentTracker:
    """Keeps recent changes of every group, links them into incidents, decides what to report.

    ``window_s``: changes further apart than this are not linked; ``horizon_s``:
    a change not detected again for this long (or that happened longer ago) is
    forgotten; ``hold_s``: how long a change standing alone is held back.
    """

    def __init__(self, *, window_s: float = 60.0, horizon_s: float = 300.0, hold_s: float = 0.0,
                 max_involved: int = 128) -> None:
        self.window_s = window_s
        self.horizon_s = horizon_s
        self.hold_s = hold_s
        self.max_involved = max_involved
        self._changes: dict[tuple[str, str], Change] = {}
        self._incidents: list[_Incident] = []
        self._numbers = 0
        self._facts: Mapping[str, GroupFacts] = {}
        self._callers: dict[str, set[str]] = {}  # callee service -> services calling it

    # ----------------------------------------------------------------- update
    def update(self, changes: Iterable[Change], facts: Mapping[str, GroupFacts],
               service_calls: Iterable[tuple[str, str]], now: float) -> list[Pattern]:
        """Take this cool's changes; return the incident patterns due for reporting now.

        ``facts``: every group's facts; ``service_calls``: (caller, callee) service pairs seen.
        """
        self._facts = facts
        for change in changes:
            key = (change.group, change.metric)
            known = self._changes.get(key)
            if known is not None and self._continues(known, change, now):
                change.first_seen = known.first_seen
                # An edge shift dates a standing change at its newest tasks, later every
                # cool; the change began when it was first dated.
                change.at = min(change.at, known.at)
            self._changes[key] = change
        self._forget(now)
        service_calls = list(service_calls)
        callees = _callees(service_calls)
        self._callers = _callees((callee, caller) for caller, callee in service_calls)
        components = self._components()
        incidents = self._match(components)
        reports = []
        for incident in incidents:
            incident.ranking = _keep_standing_origin(
                _rank(incident.members.values(), facts, callees), incident.reported_origin)
            if not incident.ranking:
                continue
            origin = incident.ranking[0][0]
            groups = len(incident.groups)
            if origin != incident.reported_origin or groups >= 2 * max(1, incident.reported_groups):
                reports.append(self._pattern(incident))
                incident.reported_origin, incident.reported_groups = origin, groups
        self._incidents = incidents
        return reports

    def _continues(self, known: Change, change: Change, now: float) -> bool:
        """Whether ``change`` is ``known`` seen again: dated close to it, or found every cool since
        (``window_s``) at about the same level (within 2x)."""
        if abs(known.at - change.at) <= self.window_s:
            return True
        return now - known.last_seen <= self.window_s and abs(math.log2(change.after / known.after)) < 1.0

    def _forget(self, now: float) -> None:
        stale = [k for k, c in self._changes.items() if now - c.last_seen > self.horizon_s or now - c.at > self.horizon_s]
        for key in stale:
            del self._changes[key]

    def _components(self) -> list[list[Change]]:
        """Changes linked in time, two groups or more.

        Two changes are linked when they began within ``window_s`` of each other and
        were first detected within ``window_s`` of each other: one cause moves its groups
        together, and what was found minutes earlier is another story.
        """
        changes = sorted(self._changes.values(), key=lambda c: c.at)
        parent = list(range(len(changes)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i, a in enumerate(changes):
            for j in range(i + 1, len(changes)):
                b = changes[j]
                if b.at - a.at > self.window_s:
                    break
                if abs(b.first_seen - a.first_seen) <= self.window_s:
                    parent[root(i)] = root(j)
        by_root: dict[int, list[Change]] = {}
        for i, change in enumerate(changes):
            by_root.setdefault(root(i), []).append(change)
        return [members for members in by_root.values() if len({c.group for c in members}) >= 2]

    def _match(self, components: list[list[Change]]) -> list[_Incident]:
        """Carry incident numbers (and what was reported) over to this cool's components."""
        matched = []
        previous = list(self._incidents)
        for members in components:
            keys = {(c.group, c.metric) for c in members}
            same = next((i for i in previous if keys & set(i.members)), None)
            if same is None:
                self._numbers += 1
                same = _Incident(self._numbers, {})
            else:
                previous.remove(same)
            same.members = {(c.group, c.metric): c for c in members}
            matched.append(same)
        return matched

    def _services_of(self, group: str) -> frozenset[str]:
        facts = self._facts.get(group)
        if facts is None:
            return frozenset()
        return frozenset((facts.service, facts.caller)) - {""}

    # ---------------------------------------------------------------- folding
    def explains(self, group: str, pattern: Pattern) -> bool:
        """Whether ``pattern`` of ``group`` describes an incident's spans (then it is folded into it)."""
        services = self._services_of(group)
        return any(
            incident.ranking and explained_by(
                pattern, services, set().union(*(self._services_of(g) for g in incident.groups)),
                incident.start, self.window_s, self._callers)
            for incident in self._incidents)

    def holds(self, group: str, pattern: Pattern, now: float) -> bool:
        """Whether a change of ``group`` standing alone is still held back (see module docstring)."""
        if pattern.kind is not PatternKind.PHASE_TRANSITION or not pattern.metrics:
            return False
        change = self._changes.get((group, pattern.metrics[0]))
        return change is not None and change.pattern is pattern and now - change.first_seen < self.hold_s

    # ---------------------------------------------------------------- reading
    def open_incidents(self) -> int:
        return len(self._incidents)

    # ---------------------------------------------------------------- pattern
    def _pattern(self, incident: _Incident) -> Pattern:
        ranking = incident.ranking
        origin, score, evidence = ranking[0]
        runner_up = ranking[1][1] if len(ranking) > 1 else 0.0
        members = sorted(incident.members.values(), key=lambda c: -c.strength)
        services = {s for c in members for s in self._services_of(c.group)}
        origin_changes = [c for c in members if origin in self._services_of(c.group)]
        affected = [c for c in members if origin not in self._services_of(c.group)]
        # Confidence: the origin's evidence, discounted when another candidate is nearly as strong.
        margin = (score - runner_up) / score if score > 0 else 0.0
        confidence = evidence.confidence * (0.5 + 0.5 * margin)
        statistics: dict[str, float] = {
            "start_timestamp": incident.start,
            # When the origin's own change began: a strong new cause can join changes that began
            # earlier (within the window), and it is what the incident is about from then on.
            "origin_start_timestamp": evidence.at,
            "groups_changed": len(incident.groups),
            "services_changed": len(services),
            "origin_score": score,
            "origin_ratio": evidence.ratio,
            "runner_up_score": runner_up,
        }
        for number, (name, candidate_score, _) in enumerate(ranking[:_SHOWN_CANDIDATES], start=1):
            statistics[f"candidate_{number}_score"] = candidate_score
        origin_facts = self._facts.get(evidence.group) or GroupFacts(origin)
        operation = _operation_of(evidence.group, origin_facts)
        explanation = {
            "origin.service": origin,
            "origin.operation": operation,
            "origins": ", ".join(f"{name} ({s:.2f})" for name, s, _ in ranking[:_SHOWN_CANDIDATES]),
            "groups": ", ".join(sorted(incident.groups)[:20]),
        }
        involved = self._involved(origin_changes, affected)
        return Pattern(
            kind=PatternKind.INCIDENT,
            description=self._describe(incident, origin, evidence, origin_changes, affected, services),
            confidence=confidence,
            metrics=tuple(sorted({c.metric for c in members})),
            statistics=statistics,
            involved=involved,
            explanation=explanation,
            key=f"incident:{incident.number}",
            group=evidence.group,
        )

    def _involved(self, origin_changes: list[Change], affected: list[Change]) -> tuple[InvolvedTask, ...]:
        """The origin's evidence first (half the links), then the most affected other groups'."""
        budget = self.max_involved
        chosen: list[InvolvedTask] = []
        seen = set()

        def take(changes: list[Change], role: str, limit: int) -> None:
            per_change = max(1, limit // max(1, len(changes)))
            for change in changes:
                for task in change.evidence[:per_change]:
                    if len(chosen) >= budget or task.identity in seen:
                        continue
                    seen.add(task.identity)
                    chosen.append(InvolvedTask(task.label, role, task.index, task.timestamp, task.identity))

        take(origin_changes[:4], "origin", budget // 2 if affected else budget)
        take(affected[:8], "affected", budget - len(chosen))
        return tuple(chosen)

    def _describe(self, incident: _Incident, origin: str, evidence: Change, origin_changes: list[Change],
                  affected: list[Change], services: set[str]) -> str:
        facts = self._facts
        what = []
        said = {id(c): _what_it_says(c, facts.get(c.group) or GroupFacts(origin)) for c in origin_changes}
        own = [c for c in origin_changes if said[id(c)] in (OWN_TIME, PEER_TIME)]  # not its effects
        waits = [c for c in origin_changes if said[id(c)] == WAIT]
        if own:
            best = max(own, key=lambda c: c.strength)
            noun = "own time" if best.metric == SELF_TIME else "time"
            what.append(f"its {noun} {_moved(best)} in {_operation_of(best.group, facts.get(best.group))}")
        if waits:
            best = max(waits, key=lambda c: c.strength)
            caller = (facts.get(best.group) or GroupFacts(origin)).caller
            if caller == origin:
                what.append(f"its calls to other services wait {_factor(best)} longer")
            else:
                what.append(f"calls into it from {caller} wait {_factor(best)} longer")
        if not what:
            what.append(f"{_operation_of(evidence.group, facts.get(evidence.group))} {_moved(evidence)}")
        by_service: dict[str, Change] = {}
        for change in affected:
            for service in self._services_of(change.group) - {origin}:
                if service not in by_service or change.strength > by_service[service].strength:
                    by_service[service] = change
        effects = ", ".join(f"{s} {_factor(c)}" for s, c in
                            sorted(by_service.items(), key=lambda item: -item[1].strength)[:4])
        text = (f"{origin} is the likely origin: {' and '.join(what)} from {_when(evidence.at)}; "
                f"{len(incident.groups)} groups in {len(services)} services changed since {_when(incident.start)}")
        if effects:
            text += f" (also slower: {effects})"
        others = [f"{name} ({score:.1f})" for name, score, _ in incident.ranking[1:3]]
        if others:
            text += f"; other candidates: {', '.join(others)}"
        return text


# ------------------------------------------------------------------ folding
def explained_by(pattern: Pattern, group_services: set[str] | frozenset[str], incident_services: set[str],
                 start: float, window_s: float, callers: Mapping[str, set[str]], *,
                 latest: float | None = None) -> bool:
    """Whether an incident over ``incident_services`` that began at ``start`` explains ``pattern`` of a
    group of ``group_services``: a phase transition, cluster or outlier set of one of its services, or
    of a service calling them (``callers``: callee -> its callers), that reaches into the incident's
    period (``latest``: its newest task's time, by default read from its involved tasks)."""
    if pattern.kind not in FOLDED_KINDS:
        return False
    if latest is None:
        latest = max((t.timestamp for t in pattern.involved), default=math.inf)
    return latest >= start - window_s and bool(group_services & upstream(incident_services, callers))


def upstream(services: set[str], callers: Mapping[str, set[str]]) -> set[str]:
    """``services`` and every service calling them, directly or not: a caller slowing down a little
    (too little to be one of the incident's changes) during it is the incident's effect."""
    seen = set(services)
    frontier = list(services)
    while frontier:
        for caller in callers.get(frontier.pop(), ()):
            if caller not in seen:
                seen.add(caller)
                frontier.append(caller)
    return seen


# ------------------------------------------------------------------ ranking
def _callees(edges: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    """Caller service -> the services it calls."""
    callees: dict[str, set[str]] = {}
    for caller, callee in edges:
        callees.setdefault(caller, set()).add(callee)
    return callees


def _rank(changes: Iterable[Change], facts: Mapping[str, GroupFacts],
          callees: Mapping[str, set[str]]) -> list[tuple[str, float, Change]]:
    """Candidate origin services, best first: (service, score, its strongest change)."""
    own: dict[str, Change] = {}
    effects: dict[str, Change] = {}
    gaps: list[tuple[str, str, Change]] = []  # (caller, callee, change)
    changes = list(changes)

    def keep(table: dict[str, Change], service: str, change: Change) -> None:
        if service not in table or change.strength > table[service].strength:
            table[service] = change

    for change in changes:
        info = facts.get(change.group)
        if info is None:
            continue
        said = _what_it_says(change, info)
        if said == WAIT:
            gaps.append((info.caller, info.service, change))
        elif said == EFFECT:
            keep(effects, info.service, change)
        elif said == PEER_TIME:
            keep(own, info.peer or f"{info.service} -> {_operation_of(change.group, info)}", change)
        else:
            keep(own, info.service, change)
    callers_into: dict[str, set[str]] = {}
    wait_on: dict[str, dict[str, float]] = {}  # caller -> callee -> strongest rise of the wait
    for caller, callee, change in gaps:
        callers_into.setdefault(callee, set()).add(caller)
        waited = wait_on.setdefault(caller, {})
        waited[callee] = max(waited.get(callee, 0.0), change.strength)
    waits: dict[str, Change] = {}
    for caller, callee, change in gaps:
        lone_edge = len(callers_into[callee]) == 1 and callee not in own
        # Starved: its calls to several services wait comparably longer (a x300 wait on one callee
        # beside a x1.5 on another is that callee's doing).
        strongest = max(wait_on[caller].values())
        comparable = sum(1 for strength in wait_on[caller].values() if strength >= _COMPARABLE * strongest)
        starved_caller = caller in own or comparable >= 2
        keep(waits, caller if lone_edge and starved_caller else callee, change)
    scores: dict[str, tuple[float, Change]] = {}
    for service in set(own) | set(waits):
        a = own[service].strength if service in own else 0.0
        b = waits[service].strength if service in waits else 0.0
        best = own[service] if a >= b else waits[service]
        scores[service] = (max(a, b) + _CORROBORATION * min(a, b), best)
    # A service whose spans only got longer because their children did is an effect, unless
    # nothing it calls changed (not even as an effect): then the change is its own after all
    # (at half weight).
    changed = set(scores) | set(effects)
    for service, change in effects.items():
        if service not in scores and not (callees.get(service, set()) & changed):
            scores[service] = (0.5 * change.strength, change)
    ranked = sorted(scores.items(), key=lambda item: -item[1][0])
    # A callee nearly as strong as its caller ranks first: the caller's wait may be the callee's doing.
    for i in range(len(ranked) - 1):
        (first, (s1, _)), (second, (s2, _)) = ranked[i], ranked[i + 1]
        if s2 >= _NEAR_TIE * s1 and _calls(first, second, changes, facts):
            ranked[i], ranked[i + 1] = ranked[i + 1], ranked[i]
    return [(service, score, change) for service, (score, change) in ranked if score > 0]


def _keep_standing_origin(ranking: list[tuple[str, float, Change]],
                          reported: str) -> list[tuple[str, float, Change]]:
    """The origin already reported stays first until another candidate is clearly stronger.

    Evidence keeps arriving while an incident stands, and two candidates within a few per
    cent of each other trade places from one cool to the next (a caller's span that wraps a
    call nothing traced rises with the callee); naming a new origin at every such turn
    re-reports the incident and tells an SRE to look elsewhere on no new information.
    Clearly stronger: the reported origin's score falls below ``_NEAR_TIE`` of the leader's.
    """
    if not ranking or not reported or ranking[0][0] == reported:
        return ranking
    for i, (service, score, _) in enumerate(ranking):
        if service == reported:
            if score >= _NEAR_TIE * ranking[0][1]:
                return [ranking[i], *ranking[:i], *ranking[i + 1:]]
            break
    return ranking


OWN_TIME, PEER_TIME, WAIT, EFFECT = "own time", "peer time", "wait", "effect"


def _what_it_says(change: Change, info: GroupFacts) -> str:
    """What a change is evidence of (see the module docstring): the group's own time, the time of
    the peer a client span calls (its callee's spans unseen), a wait on a call, or an effect."""
    if change.metric == CALL_GAP and info.is_edge:
        return WAIT
    if change.metric == SELF_TIME:
        return OWN_TIME
    if info.kind == "client" and not info.calls_out:
        return PEER_TIME
    if info.has_self_time or info.calls_out or info.kind == "client":
        return EFFECT  # its time went to its children
    return OWN_TIME  # a span without children: its duration is its own time


def _calls(caller: str, callee: str, changes: list[Change], facts: Mapping[str, GroupFacts]) -> bool:
    return any((info := facts.get(c.group)) is not None and info.caller == caller and info.service == callee
               for c in changes)


def _operation_of(group: str, facts: GroupFacts | None) -> str:
    """The part of a group name after its service ("svc | op" -> "op"; edge "a -> svc | op" -> "a -> op")."""
    name = group.split(" -> ", 1)[-1]
    operation = name.split(" | ", 1)[1] if " | " in name else name
    if facts is not None and facts.caller:
        return f"calls from {facts.caller} to {operation}"
    return operation


def _factor(change: Change) -> str:
    return f"x{change.ratio:.2g}"


def _moved(change: Change) -> str:
    verb = "rose" if change.after > change.before else "fell"
    return f"{verb} {_factor(change)} ({_ms(change.before)} -> {_ms(change.after)} median)"


def _ms(value: float) -> str:
    return f"{value:.3g} ms" if value < 1000 else f"{value / 1000:.3g} s"


def _when(timestamp: float) -> str:
    if timestamp >= 1e9:
        return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%H:%M:%SZ")
    return f"t={timestamp:g}"
