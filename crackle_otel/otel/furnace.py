"""The furnace: groups of kilns fed with tasks, cooled, de-duplicated, emitted.

This is the part of span analysis that does not care where a task came from:
the SDK span processor feeds it spans it extracted on its cooler thread, the
OTLP gateway feeds it spans (and metric collections) decoded from OTLP
requests, and ``crackle-otel analyze`` feeds it spans read from files. All of
them group the same way, keep the same bounded kilns, cool them the same way
and report a standing pattern only once (again only when it changes materially).

Thread-safety: ``record`` may run on one thread while ``cool`` runs on another.
One short lock guards the group table and counters (``record_spans`` holds it for
its batch: a few ms for an OTLP request); detection runs outside it (``Kiln.cool``
itself lets recording go on), and one cool runs at a time.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import deque
from typing import Any, Callable, Hashable, Iterable, Mapping, Protocol, Sequence

import numpy as np

from ..detect import EDGE_DETECTORS, run_detectors
from ..errors import CoolInterrupted
from ..incidents import GroupFacts, IncidentTracker, changes_of
from ..kiln import Kiln, RecordedTask
from ..matrix import MetricMatrix
from ..patterns import Pattern, PatternKind
from .calls import CALL_GAP, SELF_TIME, CallGraph, Edge, EdgeTask
from .config import CrackleConfig
from .extract import GROUP_SEPARATOR, ExtractedSpan
from .reporting import ReportedPatterns, changed_materially  # noqa: F401 (changed_materially: public here too)

logger = logging.getLogger(__name__)

_MAX_REPORTED_KEPT = 256  # recent reported patterns kept for reported_patterns()
FULL_COOL_EVERY = 4  # cool intervals between two runs of every detector on a group


class Emitter(Protocol):
    def emit(self, patterns: Sequence[Pattern]) -> None: ...

    def force_flush(self, timeout_millis: int = 30_000) -> bool: ...

    def shutdown(self, timeout_millis: int = 30_000) -> None: ...

    def stats(self) -> dict[str, int]: ...


class CoolObserver(Protocol):
    """Sees every cool of every group: what the detectors found (repeats included) and the window they read.

    ``window`` is the group's kiln as cooled: a pattern's ``InvolvedTask.index`` is a row
    of it. Called on the cooling thread after the emitter, with the group set on each
    pattern; it must be quick (errors are logged and counted, never raised).

    An observer that keeps per-group state beside the kilns (where each row came from)
    may also have ``taken(group, window) -> object``: a furnace whose detectors run
    elsewhere (``detection``) calls it when it takes the window, in cool order, and passes
    what it returned to ``cooled(..., taken=...)`` once the detectors are done, by which
    time later tasks have been recorded.
    """

    def cooled(self, group: str, window: MetricMatrix, patterns: Sequence[Pattern]) -> None: ...


class Detection(Protocol):
    """Runs a window's detectors elsewhere (another process): what ``run_detectors`` returns, to come."""

    #: Windows handed over and not yet reported before a cool waits for the oldest: bounds memory and lag.
    max_in_flight: int

    def submit(self, window: MetricMatrix, profile: Any, only: frozenset[str] | None) -> "DetectionResult": ...


class DetectionResult(Protocol):
    def done(self) -> bool: ...

    def result(self) -> tuple[list[Pattern], dict[str, str]]: ...

    def take_back(self) -> bool:
        """Withdraw the window if no worker has started on it (True): the caller runs its detectors."""
        ...


class _DetectedHere:
    """A window's detection run in this process after all (taken back while the caller would only wait)."""

    def __init__(self, outcome: tuple[list[Pattern], dict[str, str]]) -> None:
        self._outcome = outcome

    def done(self) -> bool:
        return True

    def result(self) -> tuple[list[Pattern], dict[str, str]]:
        return self._outcome

    def take_back(self) -> bool:
        return False


@dataclasses.dataclass
class _Cooled:
    """One group's part of a cool: the window taken from its kiln, and what the detectors found in it."""

    name: str
    group: "_Group"
    window: MetricMatrix
    first_seen: float  # the group's as of the cool (start-up transients are judged against it)
    patterns: list[Pattern] = dataclasses.field(default_factory=list)
    detection: DetectionResult | None = None  # deferred: the detectors' results, to come
    only: frozenset[str] | None = None  # the detectors run (None: all)
    taken: Any = None  # what the observer noted when the window was taken (deferred cools)


@dataclasses.dataclass
class _CoolState:
    """What a cool's reporting reads besides the windows, as of the cool: calls, group facts, cool counts.

    A deferred cool is reported after later tasks were recorded; they must not change it."""

    edges: dict[Edge, int]
    facts: dict[str, GroupFacts]
    cools: dict[str, int]


@dataclasses.dataclass
class _PendingCool:
    now: float
    final: bool
    cooled: list[_Cooled]
    state: _CoolState
    seconds: float  # spent in this process so far (taking the windows)


@dataclasses.dataclass
class _Group:
    kiln: Kiln
    reported: ReportedPatterns
    facts: GroupFacts  # service, span kind ... as the incident layer needs them
    new_tasks: int = 0  # since the last cool of any kind
    since_full: int = 0  # since the last full cool
    cools: int = 0  # full cools (the reporting rule's clock)
    last_full: float = -math.inf  # span time of the last full cool
    first_seen: float = math.inf  # span time of its earliest task


#: A task on its way to a group's kiln: (group, task, origin: its span, call or facts, input ordinal or None).
_RoutedTask = tuple[str, RecordedTask, "ExtractedSpan | EdgeTask | GroupFacts | None", "int | None"]


def _routed(spans: Sequence[ExtractedSpan], observed: Sequence[Sequence[EdgeTask]],
            ordinals: Sequence[int] | None) -> list[_RoutedTask]:
    """The tasks of spans, in order: each span's completed calls (``observed``), then the span itself."""
    routed: list[_RoutedTask] = []
    append = routed.append
    for position, span in enumerate(spans):
        ordinal = None if ordinals is None else ordinals[position]
        for call in observed[position]:
            append((call.group, (call.label, call.metrics, call.timestamp_s, call.identity, None, 0), call, ordinal))
        append((span.group, (span.label, span.metrics, span.timestamp_s, span.identity, span.attributes,
                             span.failures), span, ordinal))
    return routed


START_UP_S = 60.0  # a group's first minute of span time


def _start_up(pattern: Pattern, first_seen: float, window: MetricMatrix) -> bool:
    """A group's first moments: caches filling, connections opening, code warming up.

    Services are slow for a while after they (or the stream) start: their first
    requests are outliers, and every group would report the end of that as a phase
    transition. Left out: outliers among the group's first ``START_UP_S`` of span
    time, and changes within it after which the metric is lower (a rise there is
    reported: a service that starts slowing down at once is news).
    """
    if pattern.kind is PatternKind.OUTLIER:
        return bool(pattern.involved) and all(t.timestamp < first_seen + START_UP_S for t in pattern.involved)
    if pattern.kind is not PatternKind.PHASE_TRANSITION or not pattern.metrics:
        return False
    at = pattern.statistics.get("change_timestamp")
    if at is None or at >= first_seen + START_UP_S or pattern.metrics[0] not in window.metric_names:
        return False
    column = window.column(pattern.metrics[0])
    before = column[(window.timestamps < at) & np.isfinite(column)]
    after = column[(window.timestamps >= at) & np.isfinite(column)]
    return bool(before.size and after.size and np.median(after) < np.median(before))


class Furnace:
    """Per-group kilns (capped), cooled on demand; new or materially changed patterns go to ``emitter``.

    Sizes come from ``config``: ``kiln_capacity`` (a sliding window per group),
    ``max_groups`` (tasks of further groups are counted in ``tasks_overflowed``,
    never mixed into a catch-all kiln), ``max_metrics_per_group``,
    ``pattern_memory_cools`` and the profile. ``keep_reported``: how many recently
    reported patterns ``reported_patterns()`` returns (each holds up to
    ``max_involved`` tasks, so 0 saves memory where nobody asks, e.g. offline analysis).

    ``detection``: run the detectors of each cooled window there (``crackle-otel analyze``'s
    worker processes) while the caller goes on recording. A cool then takes the windows,
    hands them over and returns; its patterns are reported by a later ``cool`` (the last
    one with ``final``), in cool order and from the state as of the cool, so the reports
    are those of running the detectors in place. Where a cool would only wait for them,
    it runs windows no worker has started in the caller's thread. Single caller thread
    only; no ``deadline`` or ``should_stop``.
    """

    def __init__(self, config: CrackleConfig, emitter: Emitter | None = None, *,
                 keep_reported: int = _MAX_REPORTED_KEPT, observer: CoolObserver | None = None,
                 detection: Detection | None = None) -> None:
        self.config = config
        self.emitter = emitter
        self.observer = observer
        self.detection = detection
        self._pending: deque[_PendingCool] = deque()  # cools handed to ``detection``, oldest first
        self._in_flight = 0  # their windows
        #: A group is "filled" (worth cooling before the interval) after this many new tasks.
        self.cool_after = max(config.profile.rate.min_tasks, config.kiln_capacity // 2)
        #: Every interval a group with new tasks gets the detectors cheap enough for that (its newest
        #: tasks against its usual: where incidents begin); every detector runs this often (span time),
        #: or when half its window is new, or at a final cool.
        self.full_every_s = FULL_COOL_EVERY * config.cool_interval_millis / 1000
        self._lock = threading.Lock()  # group table and counters
        self._cool_lock = threading.Lock()  # one cool at a time: reported-pattern memory, emit order
        self._groups: dict[str, _Group] = {}
        self._recorded = 0
        self._rejected = 0
        self._overflowed = 0
        self._filled = 0  # groups that reached cool_after new tasks since their last cool
        self._cools = 0
        self._group_cools = 0  # groups cooled, summed over cools
        self._cools_skipped = 0
        self._cools_interrupted = 0
        self._last_cool_seconds = 0.0
        self._total_cool_seconds = 0.0
        self._patterns_detected = 0
        self._patterns_reported = 0
        self._patterns_repeated = 0
        self._emit_errors = 0
        self._observer_errors = 0
        self._patterns_emit_failed = 0  # reported patterns in emit() calls that raised
        self._reported_recent: deque[Pattern] = deque(maxlen=keep_reported)
        # Calls between spans (self time, the caller's wait) and incidents across groups.
        self._calls = CallGraph(max_spans=config.call_graph_spans)
        interval_s = config.cool_interval_millis / 1000
        self._incidents = IncidentTracker(hold_s=interval_s, max_involved=config.profile.max_involved)
        self._held: list[tuple[str, Pattern]] = []  # lone changes waiting for others to join them
        self._latest = 0.0  # newest task time seen: the incident layer's clock (span time, also offline)
        self._patterns_folded = 0  # explained by an incident: part of it, not reported on its own
        self._patterns_superseded = 0  # held back, then found again by a later cool of their group
        self._patterns_start_up = 0  # a group's start-up transient (see _start_up)
        self._incidents_reported = 0

    # -------------------------------------------------------------- recording
    def record_span(self, span: ExtractedSpan) -> bool:
        """Record an extracted span into its group's kiln (see ``record``), with its calls; whether it was kept.

        The call graph adds ``self_time_ms`` to the span's metrics and completes
        calls across services, each recorded into its caller->callee edge group.
        """
        return self._record_routed(_routed([span], self._calls.observe_all([span]), None))[-1]

    def record_spans(self, spans: Sequence[ExtractedSpan], ordinals: Sequence[int] | None = None) -> None:
        """``record_span`` each span in order, as a batch: the same tasks, rows, counters and cool triggers.

        ``ordinals``: each span's place in the input, handed on with its tasks (and its calls') to
        ``_kept``. The feeders of ``serve`` and ``analyze`` record a request's scope at a time, the
        span processor a drained chunk (see ``_record_routed``).
        """
        self._record_routed(_routed(spans, self._calls.observe_all(spans), ordinals))

    def record(
        self,
        group: str,
        label: str,
        metrics: Mapping[str, Any],
        *,
        timestamp: float,
        identity: Hashable | None = None,
        attributes: Mapping[str, str] | None = None,
        failures: int = 0,
        facts: GroupFacts | None = None,
    ) -> bool:
        """Record one task into ``group``'s kiln. False when it was not kept (overflow or no usable metric).

        ``facts``: what the group is (its service, span kind ...), used when the group is new;
        by default its service is the group name's first part.
        """
        return self._record_routed([(group, (label, metrics, timestamp, identity, attributes, failures), facts,
                                     None)])[0]

    def _record_routed(self, routed: Sequence[_RoutedTask]) -> list[bool]:
        """Each ``(group, task, origin, ordinal)`` into its group's kiln, in order; whether each was kept.

        Each group's tasks go to its kiln in one ``Kiln.record_many``: a group's rows depend only on
        the order of its own tasks, and groups are made in the order their first task comes (so
        ``max_groups`` turns away the same ones), so a batch leaves what one task at a time leaves
        (but that a kiln's warnings about bad values come group by group). The furnace's lock is held
        for the whole batch: a cool on another thread waits for it (a few ms for an OTLP request's
        ~500 spans) and never sees half of one.
        """
        kept = [False] * len(routed)
        runs: dict[str, tuple[_Group, list[int]]] = {}  # group -> its entry, the positions of its tasks
        groups = self._groups
        with self._lock:
            latest = self._latest
            for position, (name, task, origin, _) in enumerate(routed):
                if task[2] > latest:
                    latest = task[2]
                run = runs.get(name)
                if run is None:
                    entry = groups.get(name) or self._new_group(name, origin)
                    if entry is None:
                        continue
                    run = runs[name] = (entry, [])
                run[1].append(position)
            self._latest = latest
            for name, (entry, positions) in runs.items():
                tasks = [routed[position][1] for position in positions]
                for task in tasks:  # comparisons in order, as task by task (min() is not, with a NaN)
                    if task[2] < entry.first_seen:
                        entry.first_seen = task[2]
                recorded = entry.kiln.record_many(tasks)
                if False in recorded:
                    positions = [position for position, was_kept in zip(positions, recorded) if was_kept]
                    self._rejected += len(recorded) - len(positions)
                    tasks = [routed[position][1] for position in positions]
                if not positions:
                    continue
                self._count_kept(entry, len(positions))
                for position in positions:
                    kept[position] = True
                if self._kept is not None:
                    self._kept(name, tasks, [routed[position][3] for position in positions])
        return kept

    def _new_group(self, name: str, origin: "ExtractedSpan | EdgeTask | GroupFacts | None") -> _Group | None:
        """The group made for its first task (``origin``: that task's span, call or facts); None past max_groups.

        Caller holds the lock."""
        if len(self._groups) >= self.config.max_groups:
            # Not analysed: mixing operations in one catch-all kiln would invent patterns.
            self._overflowed += 1
            return None
        if type(origin) is ExtractedSpan:
            facts = GroupFacts(origin.service, kind=origin.kind, peer=origin.peer)
        elif type(origin) is EdgeTask:
            facts = GroupFacts(origin.callee_service, caller=origin.caller_service)
        else:
            facts = origin or GroupFacts(name.split(GROUP_SEPARATOR, 1)[0])
        group = self._groups[name] = _Group(
            kiln=Kiln(
                self.config.profile,
                capacity=self.config.kiln_capacity,
                max_metrics=self.config.max_metrics_per_group,
                seal_on_cool=False,
            ),
            reported=ReportedPatterns(self.config.pattern_memory_cools),
            facts=facts,
        )
        return group

    def _count_kept(self, entry: _Group, kept: int) -> None:
        """Count what a group's kiln just kept (the group is filled when its new tasks reach ``cool_after``)."""
        self._recorded += kept
        before = entry.new_tasks
        entry.new_tasks = before + kept
        entry.since_full += kept
        if before < self.cool_after <= before + kept:
            self._filled += 1

    #: ``_kept(group, tasks, ordinals)``, for subclasses that note where tasks came from: what a group's
    #: kiln kept, in order, with the ordinals ``record_spans`` was given (else None); called under the
    #: furnace's lock. None here, so that the span-by-span path does not call a method that does nothing.
    _kept: Callable[[str, list[RecordedTask], list[Any]], None] | None = None

    @property
    def has_filled_groups(self) -> bool:
        """Whether some group has ``cool_after`` new tasks (a cool with ``only_filled`` would do work)."""
        return self._filled > 0

    # ---------------------------------------------------------------- cooling
    def cool(self, *, only_filled: bool = False, deadline: float = math.inf,
             should_stop: Callable[[], bool] | None = None, final: bool = False) -> list[Pattern]:
        """Cool the groups with new tasks (only those with ``cool_after`` new ones if ``only_filled``).

        Every cooled group's patterns go through the incident layer first (changes
        across groups become one incident; the per-group patterns it explains are
        folded into it), then through each group's reporting rule, and are emitted
        together. ``final``: no more tasks will come (flush, shutdown, end of a
        file): nothing is held back.

        The cool stops when ``deadline`` (``time.monotonic()``) passes or
        ``should_stop()`` holds: between groups, and inside a group's detectors at
        their safe points (a group interrupted there keeps its new tasks for the
        next cool and reports nothing; counted in ``cools_interrupted``). Groups
        left waiting are counted in ``cools_skipped``; what the groups cooled
        before the stop found is reported. Returns the patterns reported (new or
        materially changed, group set), which were also handed to the emitter.

        With ``detection``, the patterns returned are those of earlier cools whose
        detectors are done by now (with ``final``: of every cool, this one included).
        """
        if self.detection is not None:
            if deadline != math.inf or should_stop is not None:
                raise ValueError("a furnace with detection elsewhere cools without a deadline")
            with self._cool_lock:
                return self._cool_deferred(only_filled, final)

        def stop() -> bool:
            return time.monotonic() >= deadline or (should_stop is not None and should_stop())

        with self._cool_lock:
            started = time.perf_counter()
            due, now = self._due(only_filled, final)
            cooled: list[_Cooled] = []
            for position, (name, group) in enumerate(due):
                if stop():
                    with self._lock:
                        self._cools_skipped += len(due) - position
                    break
                try:
                    patterns, window = self._cool_group(group, stop, self._is_full(group, now, final), now)
                except CoolInterrupted:
                    with self._lock:
                        self._cools_interrupted += 1
                        self._cools_skipped += len(due) - position - 1
                    break
                cooled.append(_Cooled(name, group, window, group.first_seen, patterns))
            return self._report(cooled, now, final, None, lambda: time.perf_counter() - started)

    def _due(self, only_filled: bool, final: bool) -> tuple[list[tuple[str, _Group]], float]:
        """The groups a cool takes, and its clock (the newest task time).

        A group with new tasks; and, on a ``final`` cool, a group whose newest tasks only had
        the cheap look: a group that went quiet right after one would otherwise never get
        its full detectors (a service stopped just after its traffic slowed down).
        """
        with self._lock:
            now = self._latest
            due = [
                (name, group)
                for name, group in self._groups.items()
                if (group.new_tasks and not (only_filled and group.new_tasks < self.cool_after))
                or (final and group.since_full)
            ]
            return due, now

    def _is_full(self, group: _Group, now: float, final: bool) -> bool:
        """Whether a group's cool runs every detector (else only those cheap enough for every interval)."""
        return final or group.since_full >= self.cool_after or now - group.last_full >= self.full_every_s

    def _cool_deferred(self, only_filled: bool, final: bool) -> list[Pattern]:
        """Take the due windows and hand them to ``detection``; report the cools whose detectors are done."""
        assert self.detection is not None
        started = time.perf_counter()
        due, now = self._due(only_filled, final)
        cooled: list[_Cooled] = []
        for name, group in due:
            full = self._is_full(group, now, final)
            window = self._take_group(group, full, now)
            only = None if full else EDGE_DETECTORS
            cooled.append(_Cooled(name, group, window, group.first_seen, taken=self._taken(name, window),
                                  detection=self.detection.submit(window, self.config.profile, only), only=only))
        if cooled or final or self._held or self._pending:  # else, as in place: nothing to report
            self._pending.append(_PendingCool(now, final, cooled, self._state(), time.perf_counter() - started))
            self._in_flight += len(cooled)
        reported: list[Pattern] = []
        while self._pending and (final or self._in_flight > self.detection.max_in_flight
                                 or all(c.detection is not None and c.detection.done() for c in self._pending[0].cooled)):
            waited = time.perf_counter()
            self._detect_here_while_waiting()
            cool = self._pending.popleft()
            self._in_flight -= len(cool.cooled)
            for part in cool.cooled:
                assert part.detection is not None
                part.patterns, errors = part.detection.result()  # raises when the work was lost (a dead worker)
                part.detection = None
                part.group.kiln.note_detector_errors(errors)
            reported += self._report(cool.cooled, cool.now, cool.final, cool.state,
                                     lambda: cool.seconds + time.perf_counter() - waited)
        return reported

    def _detect_here_while_waiting(self) -> None:
        """Until the oldest cool's detectors are done, run windows no worker has started, newest first, here.

        This process waits when the workers are behind (too many windows in flight) and at the
        end: its core would idle while theirs work through the queue. The detectors are pure
        functions of the window, so where they run does not change what they find.
        """
        head = self._pending[0].cooled
        while not all(part.detection is not None and part.detection.done() for part in head):
            part = next((part for cool in reversed(self._pending) for part in reversed(cool.cooled)
                         if part.detection is not None and part.detection.take_back()), None)
            if part is None:
                return  # all started: wait for them
            part.detection = _DetectedHere(run_detectors(part.window, self.config.profile, only=part.only))

    def _taken(self, name: str, window: MetricMatrix) -> Any:
        """What the observer notes when a window is taken, for its ``cooled`` once the detectors are done."""
        taken = getattr(self.observer, "taken", None)
        if taken is None:
            return None
        try:
            return taken(name, window)
        except Exception:
            with self._lock:
                self._observer_errors += 1
            logger.exception("crackle: cool observer failed")
            return None

    def _state(self) -> _CoolState:
        edges = self._calls.edges()
        with self._lock:
            cools = {name: group.cools for name, group in self._groups.items()}
        return _CoolState(edges, self._group_facts(edges), cools)

    def _report(self, cooled: list[_Cooled], now: float, final: bool, state: _CoolState | None,
                seconds: Callable[[], float]) -> list[Pattern]:
        """A cool's second half, once its detectors are done: incidents, the reporting rule, emit, observe.

        ``state``: as of the cool (deferred); None reads the furnace's now (a cool in place).
        """
        found: list[tuple[str, _Group, list[Pattern]]] = []
        windows: list[tuple[str, MetricMatrix, list[Pattern], Any]] = []
        changes = []
        for part in cooled:
            name, group, window, patterns = part.name, part.group, part.window, part.patterns
            start_ups = [p for p in patterns if _start_up(p, part.first_seen, window)]
            if start_ups:
                patterns = [p for p in patterns if p not in start_ups]
                with self._lock:
                    self._patterns_detected += len(start_ups)
                    self._patterns_start_up += len(start_ups)
            found.append((name, group, patterns))
            windows.append((name, window, patterns, part.taken))
            changes.extend(changes_of(patterns, window, name, now))
        if not found and not self._held:
            return []
        if state is None:
            edges = self._calls.edges()
            facts = self._group_facts(edges)
        else:
            edges, facts = state.edges, state.facts
        incidents = self._incidents.update(changes, facts, {(e.caller_service, e.callee_service) for e in edges}, now)
        reported = list(incidents)
        folded = 0
        # Lone changes held back at an earlier cool: folded into an incident by now, or reported.
        held, self._held = self._held, []
        cooled_now = {name for name, _, _ in found}  # a group cooled again supersedes what it held
        waiting = [(name, self._groups[name], [p]) for name, p in held
                   if name in self._groups and name not in cooled_now]
        superseded = len(held) - len(waiting)
        for name, group, patterns in waiting + found:
            visible = []
            for pattern in patterns:
                if self._incidents.explains(name, pattern):
                    folded += 1
                elif not final and self._incidents.holds(name, pattern, now):
                    self._held.append((name, pattern))
                else:
                    visible.append(pattern)
            fresh, repeats = group.reported.select(visible, group.cools if state is None else state.cools[name])
            reported.extend(dataclasses.replace(p, group=name) for p in fresh)
            with self._lock:
                self._patterns_repeated += repeats
        with self._lock:
            self._patterns_detected += sum(len(p) for _, _, p in found) + len(incidents)
            self._patterns_reported += len(reported)
            self._patterns_folded += folded
            self._patterns_superseded += superseded
            self._incidents_reported += len(incidents)
            self._reported_recent.extend(reported)
            if found:
                elapsed = seconds()
                self._last_cool_seconds = elapsed
                self._total_cool_seconds += elapsed
                self._cools += 1
        if reported and self.emitter is not None:
            try:
                self.emitter.emit(reported)
            except Exception:
                with self._lock:
                    self._emit_errors += 1
                    self._patterns_emit_failed += len(reported)
                logger.exception("crackle: emitter failed")
        self._observe(windows, incidents)
        return reported

    def _observe(self, windows: list[tuple[str, MetricMatrix, list[Pattern], Any]], incidents: list[Pattern]) -> None:
        """Show the observer every cooled group's window and findings (repeats and folded ones too)."""
        if self.observer is None:
            return
        cooled = {name for name, _, _, _ in windows}
        for position, (name, window, patterns, taken) in enumerate(windows):
            found = [dataclasses.replace(p, group=name) for p in patterns]
            # An incident goes with its origin's window, or the first one when that group did not cool now.
            found += [p for p in incidents if p.group == name or (position == 0 and p.group not in cooled)]
            try:
                if taken is None:
                    self.observer.cooled(name, window, found)
                else:
                    self.observer.cooled(name, window, found, taken=taken)  # type: ignore[call-arg]
            except Exception:
                with self._lock:
                    self._observer_errors += 1  # the report's collector, not the emitter: counted apart
                logger.exception("crackle: cool observer failed")

    def _start_group_cool(self, group: _Group, full: bool) -> tuple[int, int]:
        """A group's counters as its cool starts: (new tasks, tasks since its last full cool) before it."""
        with self._lock:
            waiting, since_full = group.new_tasks, group.since_full
            if waiting >= self.cool_after:
                self._filled -= 1
            group.new_tasks = 0
            if full:
                group.since_full = 0
                group.cools += 1
            self._group_cools += 1
        return waiting, since_full

    def _take_group(self, group: _Group, full: bool, now: float) -> MetricMatrix:
        """A group's cool up to its detectors (run elsewhere): its window."""
        self._start_group_cool(group, full)
        window = group.kiln.take_window(only=None if full else EDGE_DETECTORS)
        if full:
            group.last_full = now
        return window

    def _cool_group(self, group: _Group, stop: Callable[[], bool], full: bool,
                    now: float) -> tuple[list[Pattern], MetricMatrix]:
        """One group's cool: every detector (``full``) or only those cheap enough for every interval."""
        waiting, since_full = self._start_group_cool(group, full)
        try:
            result = group.kiln.cool_with_matrix(should_stop=stop, only=None if full else EDGE_DETECTORS)
        except CoolInterrupted:
            with self._lock:  # as if this cool never started: the tasks are still new
                arrived = group.new_tasks  # recorded meanwhile (counted in _filled if they reached cool_after)
                group.new_tasks += waiting
                if full:
                    group.since_full += since_full
                    group.cools -= 1
                if arrived < self.cool_after <= group.new_tasks:
                    self._filled += 1
            raise
        if full:
            group.last_full = now
        return result

    def _group_facts(self, edges: Iterable[Edge]) -> dict[str, GroupFacts]:
        """Every group's facts, completed with what its kiln and the call graph's ``edges`` know by now."""
        callers = {edge.caller_group for edge in edges}
        with self._lock:
            groups = list(self._groups.items())
        return {
            name: dataclasses.replace(
                group.facts,
                has_self_time=SELF_TIME in group.kiln.metric_names and CALL_GAP not in group.kiln.metric_names,
                calls_out=name in callers,
            )
            for name, group in groups
        }

    # ---------------------------------------------------------------- reading
    def stats(self) -> dict[str, Any]:
        """Counters: tasks_recorded/rejected/overflowed, groups, cools, patterns, kiln rejections, emit errors."""
        with self._lock:
            groups = list(self._groups.values())
            stats: dict[str, Any] = {
                "tasks_recorded": self._recorded,
                "tasks_rejected": self._rejected,
                "tasks_overflowed": self._overflowed,
                "groups": len(groups),
                "cools": self._cools,
                "group_cools": self._group_cools,
                "cools_skipped": self._cools_skipped,
                "cools_interrupted": self._cools_interrupted,
                "cool_seconds_last": self._last_cool_seconds,
                "cool_seconds_total": self._total_cool_seconds,
                "patterns_detected": self._patterns_detected,
                "patterns_reported": self._patterns_reported,
                "patterns_repeated": self._patterns_repeated,
                # detected == reported + suppressed + held: a repeat, a part of an incident, a start-up
                # transient, or held back and found again is suppressed; a lone change may be held
                # for one interval.
                "patterns_suppressed": (self._patterns_repeated + self._patterns_folded + self._patterns_superseded
                                        + self._patterns_start_up),
                "patterns_held": len(self._held),
                "emit_errors": self._emit_errors,
                "observer_errors": self._observer_errors,
                "patterns_emit_failed": self._patterns_emit_failed,
                "patterns_folded": self._patterns_folded,
                "incidents_reported": self._incidents_reported,
                "incidents_open": self._incidents.open_incidents(),
            }
        kiln_stats = [g.kiln.stats() for g in groups]
        stats["values_rejected"] = sum(s.rejected_values for s in kiln_stats)
        stats["metric_names_rejected"] = sum(s.rejected_metric_names for s in kiln_stats)
        stats["attribute_names_rejected"] = sum(s.rejected_attribute_names for s in kiln_stats)
        stats["attribute_values_not_kept"] = sum(s.attribute_values_not_kept for s in kiln_stats)
        stats["detector_errors"] = sum(s.detector_errors for s in kiln_stats)
        stats.update(self._calls.stats())
        return stats

    def reported_patterns(self) -> list[Pattern]:
        """The most recently reported patterns (up to ``keep_reported``), oldest first, with their group set."""
        with self._lock:
            return list(self._reported_recent)

    def group_names(self) -> list[str]:
        with self._lock:
            return list(self._groups)

    def group_snapshot(self, group: str) -> MetricMatrix:
        """A copy of what ``group``'s kiln holds now (its sliding window), oldest first. KeyError if unknown."""
        with self._lock:
            kiln = self._groups[group].kiln
        return kiln.snapshot()
