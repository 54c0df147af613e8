"""Attribution: which attribute values carry the slow, the heavy and the failing tasks.

The first question about slow or failing requests is what they have in common:
one host, one route, one version, one tenant. For every descriptive attribute
of the group (and the task label, where it varies) and every value with at
least ``min_attributed_tasks`` tasks (and as many without it), the value's
tasks are compared with the rest of the group:

- every metric by rank: Mann-Whitney U (normal approximation with the tie
  correction; effect: the probability that a task with the value exceeds one
  without, and the ratio of medians). A metric that sits at one value for most
  tasks (retries: mostly 0) is compared instead by how often it leaves that
  value, exactly (hypergeometric): with a handful of non-zero values the
  normal approximation would overstate the evidence by orders of magnitude;
- every failure signal (error status, exception event, HTTP 5xx and 4xx, gRPC
  error: ``crackle_otel.failures``) by its rate, one-sided Fisher exact test
  (hypergeometric tail), effect: the rate ratio. Attributes that describe the
  failure itself (``error.type``, ``exception.*``, or carried almost only by
  failing tasks) are not compared on failures: "error.type=timeout fails" is
  no finding.

Every test of a cool - all attributes, values, metrics and rates - is one
Benjamini-Hochberg family at the profile's significance, so fifty noise
attributes find nothing; a difference must also pass the effect-size
thresholds. High-cardinality attributes (more than
``MAX_VALUES_PER_ATTRIBUTE`` distinct values: ids, user ids, URLs) are skipped
and counted, never reported value by value. Each value with differences is one
ATTRIBUTION pattern ("host.name=db-7: duration_ms 3.1x the rest (p95 212 vs
68 ms), 12% of tasks") linking to the value's worst tasks and a few typical
tasks of the rest; two attributes naming the same tasks (host.name and
k8s.pod.name) make one pattern.

``distinguishing_values`` is the reusable half: which attribute values set a
given set of tasks apart from the others (incidents, clusters).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import hypergeom, mannwhitneyu, norm

from ..attributes import MAX_VALUES_PER_ATTRIBUTE, NOT_KEPT
from ..failures import FAILURE_METRICS, RATE_NAMES, RATE_PHRASES, Failure
from ..matrix import MetricMatrix
from ..patterns import InvolvedTask, Pattern, PatternKind
from ..profile import ThermalProfile
from ._explain import DistinguishingValue, Explainer
from ._stats import average_ranks, counter_columns, even_sample, sorted_codes, usable_columns
from ._stats import median as _median

LABEL = "label"  # the task label as a pseudo-attribute (the span name, when groups mix them)
_MAX_ROWS = 20_000  # tasks compared (evenly spaced beyond): plenty of power, bounded cost
_MAX_ATTRIBUTES = 64  # attribute names compared, the most widely carried first
_MAX_MODE_SHARE = 0.5  # a metric with more of its values at one value is compared by how often it leaves it
_MAX_PATTERNS = 20  # attributions reported per cool, the most confident first
_MAX_PHRASES = 3  # differences spelt out in a description
_TYPICAL_REST = 5  # typical tasks of the rest linked beside the value's worst
_SAME_TASKS = 0.95  # two values whose task sets overlap this much (Jaccard) are one finding
_DESCRIBES_FAILURE = 0.9  # an attribute carried by failing tasks this often describes the failure
# Attributes that describe a failure (set because the task failed), never compared on failure rates.
_FAILURE_ATTRIBUTES = ("error.type", "exception.", "otel.status_", "rpc.grpc.status", "http.response.status",
                       "http.status")
_DURATION = "duration_ms"
_SIGNAL_OF = {name: signal for signal, name in RATE_NAMES.items()}  # a rate's name -> its Failure bit


def detect(matrix: MetricMatrix, profile: ThermalProfile) -> list[Pattern]:
    """ATTRIBUTION patterns: attribute values whose tasks' metrics or failure rates differ from the rest."""
    rate = profile.rate
    minimum = rate.min_attributed_tasks
    if matrix.n_tasks < 2 * minimum:
        return []
    rows = even_sample(np.arange(matrix.n_tasks), _MAX_ROWS)
    attributes, skipped = _attributes(matrix, rows, minimum)
    if not attributes:
        return []
    layout = _Layout(attributes, rows.size)
    outcomes: dict[bytes, _Batch] = {}
    batches = _rate_tests(matrix, rows, layout, outcomes)
    batches += _metric_tests(matrix, rows, layout, minimum, outcomes)
    if not batches:
        return []
    family = _Family(batches, rate.significance)
    context = _Context(matrix, rows, layout, profile, Explainer(matrix), family.size, skipped)
    differences = [d for d in (_difference(t, layout.members(t.slot), None, context) for t in family.significant()) if d]
    differences = family.confirm(_against_peers(differences, context, family.cutoff))
    differences = _one_side_of_two_values(differences, layout)
    if not differences:
        return []
    by_value: dict[int, list[_Difference]] = {}
    for difference in differences:
        by_value.setdefault(difference.test.slot, []).append(difference)
    candidates = [_Candidate.of(slot, found, context) for slot, found in by_value.items()]
    candidates = _explained_away(_merge_aliases(candidates, layout), context, family.cutoff)
    candidates.sort(key=lambda c: (-c.confidence, c.key))
    return [c.pattern(context) for c in candidates[:_MAX_PATTERNS]]


# ------------------------------------------------------------------ inputs
@dataclass(frozen=True)
class _Attribute:
    name: str
    values: tuple[str, ...]  # code - 1 -> value
    codes: np.ndarray  # per analysed row: 0 = absent (or a value too rare to compare), else 1 + index
    eligible: np.ndarray  # codes (>= 1) with enough tasks on both sides
    covers_all: bool  # every analysed task carries one of exactly two values: one side says it all


def _attributes(matrix: MetricMatrix, rows: np.ndarray, minimum: int) -> tuple[list[_Attribute], int]:
    """The attributes worth comparing over ``rows``, and how many were skipped as high-cardinality."""
    table = matrix.attribute_table
    columns: list[tuple[str, tuple[str, ...], np.ndarray]] = []
    labels = [matrix.labels[i] for i in rows.tolist()]
    names, codes = sorted_codes(labels)
    columns.append((LABEL, tuple(names), codes + 1))
    present = table.codes[rows] != 0 if table.keys else np.zeros((rows.size, 0), dtype=bool)
    carried = present.sum(axis=0)
    order = [j for j in np.argsort(-carried, kind="stable") if carried[j] >= minimum][:_MAX_ATTRIBUTES]
    for j in order:
        columns.append((table.keys[j], table.values[j], table.codes[rows, j].astype(np.intp)))
    attributes = []
    skipped = 0
    for name, values, codes in columns:
        kept = codes[codes > 0]
        counts = np.bincount(kept, minlength=len(values) + 1)
        distinct = int(np.count_nonzero(counts))
        if name in table.high_cardinality or (codes == NOT_KEPT).any() or distinct > MAX_VALUES_PER_ATTRIBUTE:
            skipped += 1
            continue
        if distinct < 2 and kept.size == rows.size:
            continue  # one value everywhere: nothing to compare
        eligible = np.flatnonzero((counts >= minimum) & (rows.size - counts >= minimum))
        eligible = eligible[eligible > 0]
        if eligible.size == 0:
            continue
        attributes.append(_Attribute(name, values, np.maximum(codes, 0), eligible,
                                     covers_all=distinct == 2 and kept.size == rows.size))
    return attributes, skipped


class _Layout:
    """Every (attribute, value) as one slot, so one ``bincount`` per metric sums all of them."""

    def __init__(self, attributes: list[_Attribute], n_rows: int) -> None:
        self.attributes = attributes
        sizes = [len(a.values) + 1 for a in attributes]
        self.offsets = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.intp)
        self.total = int(sum(sizes))
        self.slots = np.column_stack([a.codes + offset for a, offset in zip(attributes, self.offsets)])
        self.attribute_of = np.repeat(np.arange(len(attributes)), sizes)
        self.code_of = np.concatenate([np.arange(size) for size in sizes])
        eligible = np.zeros(self.total, dtype=bool)
        for a, offset in zip(attributes, self.offsets):
            eligible[a.eligible + offset] = True
        self.eligible = np.flatnonzero(eligible)
        self.n_rows = n_rows
        self.counts = self.sums(None, None)  # tasks per slot

    def sums(self, present: np.ndarray | None, weights: np.ndarray | None) -> np.ndarray:
        """Per slot, the count (no weights) or weighted sum over the analysed rows in ``present``."""
        slots = self.slots if present is None else self.slots[present]
        repeated = None if weights is None else np.repeat(weights, slots.shape[1])
        return np.bincount(slots.ravel(), weights=repeated, minlength=self.total)

    def members(self, slot: int) -> np.ndarray:
        """Mask over analysed rows: the tasks carrying the slot's value."""
        a = int(self.attribute_of[slot])
        return self.attributes[a].codes == self.code_of[slot]

    def describe(self, slot: int) -> tuple[str, str]:
        a = self.attributes[int(self.attribute_of[slot])]
        return a.name, a.values[int(self.code_of[slot]) - 1]


# ------------------------------------------------------------------- tests
@dataclass
class _Test:
    slot: int
    kind: str  # "rank" (a metric by rank), "share" (a metric leaving its usual value), "rate" (a failure signal)
    name: str  # metric or rate name
    p: float
    higher: bool  # the value's tasks are higher / fail more
    effect: float  # rank: P(value task > rest task); share, rate: ratio of (smoothed) rates
    value_rate: float = math.nan  # share, rate: the value's rate
    rest_rate: float = math.nan
    value_hits: int = 0  # share, rate: tasks of the value that failed / left the usual value
    rest_hits: int = 0
    column: int = -1  # rank, share: the metric's column
    mode: float = math.nan  # share: the metric's usual value
    q: float = math.nan
    alike: tuple[str, ...] = ()  # other signals (or 0/1 metrics) that hit exactly the same tasks


def _metric_columns(matrix: MetricMatrix, rows: np.ndarray, minimum: int) -> np.ndarray:
    values = matrix.values[rows]
    usable = usable_columns(values, 2 * minimum)
    usable = usable[~counter_columns(values[:, usable])]  # ids and counters order tasks in time, nothing more
    return np.array([j for j in usable if matrix.metric_names[j] not in FAILURE_METRICS], dtype=np.intp)


@dataclass
class _Batch:
    """The tests of one metric or failure signal over many slots, as arrays (only significant ones become _Test)."""

    kind: str
    name: str
    slots: np.ndarray
    p: np.ndarray
    effect: np.ndarray
    column: int = -1
    mode: float = math.nan
    value_rate: np.ndarray | None = None
    rest_rate: np.ndarray | None = None
    hits: np.ndarray | None = None
    rest_hits: np.ndarray | None = None
    alike: list[str] = field(default_factory=list)

    def test(self, i: int, q: float = math.nan) -> _Test:
        higher = bool(self.effect[i] > (0.5 if self.kind == "rank" else 1.0))
        test = _Test(int(self.slots[i]), self.kind, self.name, float(self.p[i]), higher, float(self.effect[i]),
                     column=self.column, mode=self.mode, q=q, alike=tuple(self.alike))
        if self.hits is not None:
            test.value_rate, test.rest_rate = float(self.value_rate[i]), float(self.rest_rate[i])
            test.value_hits, test.rest_hits = int(self.hits[i]), int(self.rest_hits[i])
        return test


def _metric_tests(matrix: MetricMatrix, rows: np.ndarray, layout: _Layout, minimum: int,
                  outcomes: dict[bytes, _Batch]) -> list[_Batch]:
    """Rank (or share) tests of every metric; ``outcomes``: 0/1 outcomes already tested, by their bytes."""
    batches: list[_Batch] = []
    for j in _metric_columns(matrix, rows, minimum):
        column = matrix.values[rows, j]
        present = np.isfinite(column)
        everywhere = bool(present.all())
        x = column if everywhere else column[present]
        total = x.size
        counts = layout.counts if everywhere else layout.sums(present, None)
        n1 = counts[layout.eligible]
        n2 = total - n1
        testable = (n1 >= minimum) & (n2 >= minimum)
        slots, n1, n2 = layout.eligible[testable], n1[testable], n2[testable]
        if slots.size == 0:
            continue
        name = matrix.metric_names[j]
        levels, level_counts = np.unique(x, return_counts=True)
        mode_at = int(np.argmax(level_counts))
        if level_counts[mode_at] > _MAX_MODE_SHARE * total:
            away = (x != levels[mode_at]).astype(float)
            same = outcomes.get(away.astype(bool).tobytes()) if everywhere else None
            if same is not None:  # event_count == exceptions: one hypothesis, tested once
                same.alike.append(name)
                continue
            hits = layout.sums(None if everywhere else present, away)[slots]
            batches.append(_proportion_tests(slots, "share", name, hits, n1, float(away.sum()), total,
                                             two_sided=True, column=int(j), mode=float(levels[mode_at])))
            continue
        ranks = average_ranks(x)
        rank_sums = layout.sums(None if everywhere else present, ranks)[slots]
        ties = float(np.sum(level_counts.astype(float) ** 3 - level_counts))
        u = rank_sums - n1 * (n1 + 1) / 2
        mean = n1 * n2 / 2
        sd = np.sqrt(n1 * n2 / 12 * ((total + 1) - ties / (total * (total - 1))))
        z = (np.abs(u - mean) - 0.5) / sd
        p = np.minimum(1.0, 2 * norm.sf(np.maximum(z, 0)))
        batches.append(_Batch("rank", name, slots, p, u / (n1 * n2), column=int(j)))
    return batches


def _proportion_tests(slots, kind, name, hits, n1, total_hits, total, two_sided, column=-1, mode=math.nan) -> _Batch:
    """Value vs rest on a 0/1 outcome: Fisher's exact test (hypergeometric), one- or two-sided."""
    slots = np.asarray(slots, dtype=np.intp)
    hits = np.rint(hits).astype(np.int64)
    n1 = np.asarray(n1).astype(np.int64)
    k_total = int(round(total_hits))
    upper = np.ones(hits.size)
    some = hits > 0  # P(X >= 0) = 1: no need to ask scipy
    upper[some] = hypergeom.sf(hits[some] - 1, total, k_total, n1[some])
    if two_sided:
        lower = hypergeom.cdf(hits, total, k_total, n1)
        p = np.minimum(1.0, 2 * np.minimum(upper, lower))
    else:
        p = upper
    rest_hits = k_total - hits
    n2 = total - n1
    ratio = ((hits + 0.5) / (n1 + 1)) / ((rest_hits + 0.5) / (n2 + 1))  # smoothed: finite when a side has none
    return _Batch(kind, name, slots, np.asarray(p, dtype=float), ratio, column, mode, hits / n1, rest_hits / n2,
                  hits, rest_hits)


def _rate_tests(matrix: MetricMatrix, rows: np.ndarray, layout: _Layout, outcomes: dict[bytes, _Batch]) -> list[_Batch]:
    """One-sided exact tests of every failure signal's rate; signals failing the same tasks are tested once."""
    bits = matrix.failure_bits[rows]
    if not bits.any():
        return []
    batches: list[_Batch] = []
    for signal in Failure:
        failed = (bits & signal) != 0
        total_failed = int(failed.sum())
        if total_failed == 0:
            continue
        same = outcomes.get(failed.tobytes())
        if same is not None:
            same.alike.append(RATE_NAMES[signal])
            continue
        describing = np.array([_describes_failure(attribute, failed) for attribute in layout.attributes])
        slots = layout.eligible[~describing[layout.attribute_of[layout.eligible]]]
        if slots.size == 0:
            continue
        hits = layout.sums(None, failed.astype(float))[slots]
        batches.append(_proportion_tests(slots, "rate", RATE_NAMES[signal], hits, layout.counts[slots], total_failed,
                                         layout.n_rows, two_sided=False))
        outcomes[failed.tobytes()] = batches[-1]
    return batches


def _describes_failure(attribute: _Attribute, failed: np.ndarray) -> bool:
    """Whether an attribute is set because tasks fail (error.type ...): no finding about failures."""
    if attribute.name.startswith(_FAILURE_ATTRIBUTES):
        return True
    carriers = attribute.codes > 0
    carried = int(carriers.sum())
    return 0 < carried < carriers.size and failed[carriers].mean() >= _DESCRIBES_FAILURE


class _Family:
    """Every test of the cool, controlled as one family of attribute values (Benjamini-Bogomolov).

    A finding is an attribute value, so the false discoveries that matter are
    values: each value's tests (metrics, rates) are combined into one Simes
    p-value, Benjamini-Hochberg selects values across all attributes at the
    profile's level, and within a selected value its differences are tested at
    that level scaled by the share of values selected. A strongly attributed
    value with ten differing metrics does not lower the bar for other values,
    as one flat family of tests would let it.
    """

    def __init__(self, batches: list[_Batch], q: float) -> None:
        self.batches = batches
        self.level = q
        p = np.concatenate([batch.p for batch in batches])
        slots = np.concatenate([batch.slots for batch in batches])
        self.size = p.size
        order = np.lexsort((p, slots))  # by value, then p
        by_value, p_sorted = slots[order], p[order]
        starts = np.flatnonzero(np.r_[True, by_value[1:] != by_value[:-1]])
        sizes = np.diff(np.r_[starts, p.size])
        rank = np.arange(p.size) - np.repeat(starts, sizes) + 1
        tests = np.repeat(sizes, sizes)
        self.values = by_value[starts]
        self.value_p = np.minimum(np.minimum.reduceat(p_sorted * tests / rank, starts), 1.0)  # Simes
        self.value_q = _bh_adjusted(self.value_p)
        selected = self.value_q <= q
        within = q * selected.sum() / self.values.size
        passing = np.where(p_sorted <= within * rank / tests, rank, 0)
        held_rank = np.repeat(np.maximum.reduceat(passing, starts), sizes)  # step-up within the value
        significant = np.zeros(p.size, dtype=bool)
        significant[order] = (rank <= held_rank) & np.repeat(selected, sizes)
        self.significant_mask = significant
        self.q_of_value = dict(zip(self.values.tolist(), self.value_q.tolist()))
        #: The largest p-value the family rejects at (a re-test must do at least as well).
        self.cutoff = float(p[significant].max()) if significant.any() else 0.0

    def significant(self) -> list[_Test]:
        tests, start = [], 0
        for batch in self.batches:
            mask = self.significant_mask[start:start + batch.p.size]
            tests.extend(batch.test(int(i), self.q_of_value[int(batch.slots[i])]) for i in np.flatnonzero(mask))
            start += batch.p.size
        return tests

    def confirm(self, differences: list["_Difference"]) -> list["_Difference"]:
        """The values' step-up again, counting only values whose differences held as discoveries.

        Differences dropped after the first pass (too small, or only against a
        rest another value skews) must not lower the bar for the others, as
        Benjamini-Hochberg's adaptivity to many discoveries would.
        """
        p_of = {slot: float(self.value_p[np.searchsorted(self.values, slot)]) for slot in {d.test.slot for d in differences}}
        held = sorted(p_of, key=p_of.get)
        p = np.array([p_of[slot] for slot in held])
        passing = p <= self.level * np.arange(1, p.size + 1) / self.values.size
        kept = set(held[: int(np.flatnonzero(passing)[-1]) + 1] if passing.any() else [])
        return [d for d in differences if d.test.slot in kept]


def _bh_adjusted(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values)."""
    order = np.argsort(p, kind="stable")
    ranked = p[order] * p.size / np.arange(1, p.size + 1)
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    return adjusted


def _against_peers(differences: list["_Difference"], context: "_Context", cutoff: float) -> list["_Difference"]:
    """Differences that hold against the value's peers, not only against a rest another value skews.

    One host 3x slower makes every other host look faster than "the rest"
    (which holds the slow one). Where values of one attribute differ on one
    metric in both directions, the higher side is tested again against the
    rest without the lower values, then the lower side against the rest
    without the higher values that held.
    """
    groups: dict[tuple[int, str], list[_Difference]] = {}
    for difference in differences:
        test = difference.test
        if test.kind != "rate":
            groups.setdefault((int(context.layout.attribute_of[test.slot]), test.name), []).append(difference)
    dropped: set[int] = set()
    for group in groups.values():
        higher = [d for d in group if d.test.higher]
        lower = [d for d in group if not d.test.higher]
        if not higher or not lower:
            continue
        for side, others in ((higher, lower), (lower, None)):
            if others is None:  # the lower side, against the rest without the higher values that held
                others = [d for d in higher if id(d) not in dropped]
            excluded = np.zeros(context.rows.size, dtype=bool)
            for other in others:
                excluded |= context.layout.members(other.test.slot)
            for difference in side:
                members = context.layout.members(difference.test.slot)
                peers = ~members & ~excluded
                retested = _retest(difference.test, members, peers, context)
                if retested is None:
                    continue  # too few peers left to tell (two values: the same fact twice, see below)
                again = _difference(retested, members, peers, context)
                if again is None or again.test.p > cutoff or again.test.higher != difference.test.higher:
                    dropped.add(id(difference))
    return [d for d in differences if id(d) not in dropped]


def _retest(test: _Test, members: np.ndarray, rest: np.ndarray, context: "_Context") -> _Test | None:
    """``test`` computed again on ``members`` against ``rest`` (None: too few tasks to compare)."""
    minimum = context.profile.rate.min_attributed_tasks
    if test.kind == "rate":
        n1, n2 = int(members.sum()), int(rest.sum())
        if n1 < minimum or n2 < minimum:
            return None
        failed = (context.matrix.failure_bits[context.rows] & _SIGNAL_OF[test.name]) != 0
        hits, rest_hits = int(failed[members].sum()), int(failed[rest].sum())
        return _proportion_tests([test.slot], "rate", test.name, np.array([hits]), np.array([n1]),
                                 hits + rest_hits, n1 + n2, False).test(0, test.q)
    column = context.matrix.values[context.rows, test.column]
    present = np.isfinite(column)
    value_side, rest_side = column[members & present], column[rest & present]
    if value_side.size < minimum or rest_side.size < minimum:
        return None
    if test.kind == "share":
        hits, rest_hits = int(np.sum(value_side != test.mode)), int(np.sum(rest_side != test.mode))
        n1 = np.array([value_side.size])
        return _proportion_tests([test.slot], "share", test.name, np.array([hits]), n1, hits + rest_hits,
                                 value_side.size + rest_side.size, True, test.column, test.mode).test(0, test.q)
    result = mannwhitneyu(value_side, rest_side, alternative="two-sided", method="asymptotic")
    superiority = float(result.statistic) / (value_side.size * rest_side.size)
    return dataclasses.replace(test, p=float(result.pvalue), effect=superiority, higher=superiority > 0.5)


def _one_side_of_two_values(differences: list["_Difference"], layout: _Layout) -> list["_Difference"]:
    """With two values covering every task, "A higher" and "B lower" are one fact: keep the higher side."""
    return [d for d in differences
            if d.test.higher or not layout.attributes[int(layout.attribute_of[d.test.slot])].covers_all]


# --------------------------------------------------------------- patterns
@dataclass(frozen=True)
class _Context:
    matrix: MetricMatrix
    rows: np.ndarray
    layout: _Layout
    profile: ThermalProfile
    explainer: Explainer
    tests: int
    skipped: int


@dataclass
class _Difference:
    """One significant, large-enough difference of a value's tasks, with the figures that describe it."""

    test: _Test
    statistics: dict[str, float]
    phrase: str
    strength: float  # in [0, 1]: effect size against the profile's threshold


@dataclass
class _Candidate:
    slot: int
    key: str
    attribute: str
    value: str
    members: np.ndarray  # mask over analysed rows
    differences: list[_Difference]
    aliases: list[str] = field(default_factory=list)

    @property
    def confidence(self) -> float:
        return max(d.strength * (1 - d.test.q) for d in self.differences)

    @classmethod
    def of(cls, slot: int, differences: list[_Difference], context: _Context) -> "_Candidate":
        attribute, value = context.layout.describe(slot)
        members = context.layout.members(slot)
        differences.sort(key=_importance)
        return cls(slot, f"attribution:{attribute}={value}", attribute, value, members, differences)

    def pattern(self, context: _Context) -> Pattern:
        matrix, rows = context.matrix, context.rows
        n = rows.size
        count = int(self.members.sum())
        statistics: dict[str, float] = {
            "share": count / n,
            "tasks_with_value": count,
            "tasks_rest": n - count,
            "tests": context.tests,
            "high_cardinality_attributes": context.skipped,
        }
        if n < matrix.n_tasks:
            statistics["sample_size"] = n
        for difference in self.differences:
            statistics.update(difference.statistics)
        phrases = [_phrase(d) for d in self.differences]
        more = len(phrases) - _MAX_PHRASES
        phrases = phrases[:_MAX_PHRASES]
        description = (f"{self.attribute}={self.value}: " + ", ".join(phrases)
                       + (f" (+{more} more)" if more > 0 else "") + f"; {count / n:.0%} of tasks ({count} of {n})")
        explanation = dict(context.explainer.over_represented(rows[self.members], noun="them"))
        explanation.pop(self.attribute, None)
        if self.aliases:
            explanation["same tasks"] = ", ".join(self.aliases)
        return Pattern(
            kind=PatternKind.ATTRIBUTION,
            description=description,
            confidence=self.confidence,
            metrics=tuple(dict.fromkeys(name for d in self.differences for name in (d.test.name, *d.test.alike))),
            statistics=statistics,
            involved=_involved(self, context),
            explanation=explanation,
            key=self.key,
        )


def _phrase(difference: _Difference) -> str:
    """The difference's phrase, naming the signals that hit exactly the same tasks."""
    alike = difference.test.alike
    if not alike:
        return difference.phrase
    names = ", ".join(RATE_PHRASES[_SIGNAL_OF[name]] if name in _SIGNAL_OF else name for name in alike)
    return f"{difference.phrase[:-1]}; {names} alike)"


def _importance(difference: _Difference) -> tuple:
    """Failure rates first, then the duration, then the rest; within each, the strongest first."""
    test = difference.test
    order = 0 if test.kind == "rate" else 1 if test.name == _DURATION else 2
    return order, -difference.strength, test.q, test.name


def _difference(test: _Test, members: np.ndarray, rest: np.ndarray | None, context: _Context) -> _Difference | None:
    """The figures of a significant test of the value's tasks (``members``) against ``rest`` (default: the others).

    None when the difference is too small to act on (the profile's effect-size thresholds).
    """
    rate = context.profile.rate
    name = test.name
    if rest is None:
        rest = ~members
    if test.kind == "rate" and not (test.higher and test.effect >= rate.min_rate_ratio):
        return None  # fewer failures than the rest is no finding about failures
    if test.kind == "share" and max(test.effect, 1 / test.effect) < rate.min_rate_ratio:
        return None
    if test.kind == "rank" and max(test.effect, 1 - test.effect) < rate.min_superiority:
        return None
    stats: dict[str, float] = {f"{name}.p_value": test.p, f"{name}.q_value": test.q}
    if test.kind in ("rate", "share"):
        stats.update({f"{name}.rate": test.value_rate, f"{name}.rest_rate": test.rest_rate,
                      f"{name}.ratio": test.effect})
        stats[f"{name}.tasks_hit" if test.kind == "share" else f"{name}.failed_tasks"] = test.value_hits
        stats[f"{name}.rest_tasks_hit" if test.kind == "share" else f"{name}.rest_failed_tasks"] = test.rest_hits
        strength = _strength(abs(math.log(test.effect)) / math.log(rate.min_rate_ratio))
        if test.kind == "rate":
            phrase = (f"{RATE_PHRASES[_SIGNAL_OF[name]]} {test.value_rate:.1%} vs {test.rest_rate:.1%}"
                      f" ({_times(test.value_rate, test.rest_rate)})")
        else:
            stats[f"{name}.usual_value"] = test.mode
            column = context.matrix.values[context.rows, test.column]
            away = ">" if test.mode <= np.nanmin(column) else "<" if test.mode >= np.nanmax(column) else "!="
            phrase = f"{name} {away} {test.mode:g} on {test.value_rate:.0%} vs {test.rest_rate:.0%} of the rest"
        return _Difference(test, stats, phrase, strength)
    column = context.matrix.values[context.rows, test.column]
    value_side = column[members & np.isfinite(column)]
    rest_side = column[rest & np.isfinite(column)]
    median, rest_median = float(_median(value_side)), float(_median(rest_side))
    p95, rest_p95 = float(np.percentile(value_side, 95)), float(np.percentile(rest_side, 95))
    stats.update({f"{name}.median": median, f"{name}.rest_median": rest_median, f"{name}.p95": p95,
                  f"{name}.rest_p95": rest_p95, f"{name}.superiority": test.effect})
    # Cohen's d of a normal shift with this probability of superiority, against the profile's minimum.
    shift = math.sqrt(2) * abs(float(norm.ppf(min(max(test.effect, 1e-12), 1 - 1e-12))))
    minimum_shift = math.sqrt(2) * float(norm.ppf(rate.min_superiority))
    strength = _strength(shift / minimum_shift)
    unit = " ms" if name.endswith("_ms") or name.endswith(".ms") else ""
    if median > 0 and rest_median > 0:
        ratio = median / rest_median
        stats[f"{name}.median_ratio"] = ratio
        if max(ratio, 1 / ratio) < rate.min_median_ratio or (ratio > 1) != test.higher:
            return None  # significant, but too small a difference to act on (or only in the tails)
        level = f"{ratio:.2g}x the rest" if ratio < 1 else f"{_ratio(ratio)} the rest"
    else:
        level = f"{'higher' if test.higher else 'lower'} than the rest (median {median:.4g} vs {rest_median:.4g}{unit})"
    phrase = f"{name} {level} (p95 {p95:.4g} vs {rest_p95:.4g}{unit})"
    return _Difference(test, stats, phrase, strength)


def _strength(excess: float) -> float:
    """0.5 at the threshold, towards 1 well beyond it."""
    return 1 - 0.5 ** (excess * excess)


def _ratio(ratio: float) -> str:
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


def _times(value_rate: float, rest_rate: float) -> str:
    return f"x{value_rate / rest_rate:.2g}" if rest_rate > 0 else "none elsewhere"


def _involved(candidate: _Candidate, context: _Context) -> tuple[InvolvedTask, ...]:
    """The value's worst tasks on its leading difference, then a few typical tasks of the rest."""
    matrix, rows, limit = context.matrix, context.rows, context.profile.max_involved
    lead = candidate.differences[0].test
    members = rows[candidate.members]
    rest = rows[~candidate.members]
    duration = matrix.metric_names.index(_DURATION) if _DURATION in matrix.metric_names else -1
    if lead.kind == "rate":
        failed = (matrix.failure_bits & _SIGNAL_OF[lead.name]) != 0
        score = failed.astype(float)
        if duration >= 0:  # among the failed, the slowest first
            score = score + np.nan_to_num(matrix.values[:, duration], nan=0.0) / (1 + np.nanmax(np.abs(matrix.values[:, duration])))
        typical_rest = rest[~failed[rest]]
        center_column = duration
    else:
        values = matrix.values[:, lead.column]
        score = np.nan_to_num(values if lead.higher else -values, nan=-np.inf)
        if lead.kind == "share":
            score = np.where(values != lead.mode, 1.0, 0.0) * (1 if lead.higher else -1)
        typical_rest = rest
        center_column = lead.column
    n_rest = min(_TYPICAL_REST, limit // 4, typical_rest.size)
    worst = members[np.argsort(-score[members], kind="stable")][: limit - n_rest]
    typical = _typical(matrix, typical_rest, center_column, n_rest)
    return matrix.involved(worst, "attributed", limit) + matrix.involved(typical, "rest", limit)


def _typical(matrix: MetricMatrix, rest: np.ndarray, column: int, count: int) -> np.ndarray:
    """``count`` tasks of ``rest`` closest to its median on ``column`` (evenly spaced in time without one)."""
    if count <= 0 or rest.size == 0:
        return rest[:0]
    if column < 0:
        return rest[np.linspace(0, rest.size - 1, count).round().astype(np.intp)]
    values = matrix.values[rest, column]
    distance = np.abs(values - np.nanmedian(values))
    return rest[np.argsort(np.nan_to_num(distance, nan=np.inf), kind="stable")[:count]]


def _merge_aliases(candidates: list[_Candidate], layout: _Layout) -> list[_Candidate]:
    """Values of different attributes naming the same tasks (host.name, k8s.pod.name) are one finding."""
    candidates = sorted(candidates, key=lambda c: (-c.confidence, _alias_rank(c, layout), c.key))
    kept: list[_Candidate] = []
    for candidate in candidates:
        for holder in kept:
            both = np.count_nonzero(holder.members & candidate.members)
            either = np.count_nonzero(holder.members | candidate.members)
            if either and both / either >= _SAME_TASKS:
                holder.aliases.append(f"{candidate.attribute}={candidate.value}")
                break
        else:
            kept.append(candidate)
    return kept


def _alias_rank(candidate: _Candidate, layout: _Layout) -> tuple:
    # Among names of the same tasks: an attribute other than the label, the most specific (most values;
    # http.route over http.request.method), named shortest.
    attribute = layout.attributes[int(layout.attribute_of[candidate.slot])]
    return candidate.attribute == LABEL, -len(attribute.values), len(candidate.attribute)


def _explained_away(candidates: list[_Candidate], context: _Context, cutoff: float) -> list[_Candidate]:
    """Differences that hold apart from stronger attributions, not only because they share tasks with one.

    After a deploy, every value more common among the new version's (slower)
    requests looks slower too. Strongest first, a difference of a weaker
    value is tested again within the tasks outside (or, when too few, inside)
    each stronger attribution of another attribute on the same metric; one
    that no longer holds there was that attribution's, and is dropped.
    """
    ordered = sorted(candidates, key=lambda c: (-c.confidence, min(d.test.q for d in c.differences), c.key))
    kept: list[_Candidate] = []
    for candidate in ordered:
        held = [d for d in candidate.differences
                if all(_holds_apart(d, candidate, stronger, context, cutoff) for stronger in kept
                       if stronger.attribute != candidate.attribute
                       and any(s.test.name == d.test.name for s in stronger.differences))]
        if held:
            candidate.differences = held
            kept.append(candidate)
    return kept


def _holds_apart(difference: _Difference, candidate: _Candidate, stronger: _Candidate, context: _Context,
                 cutoff: float) -> bool:
    minimum = context.profile.rate.min_attributed_tasks
    for stratum in (~stronger.members, stronger.members):
        members, rest = candidate.members & stratum, ~candidate.members & stratum
        if members.sum() < minimum or rest.sum() < minimum:
            continue
        retested = _retest(difference.test, members, rest, context)
        if retested is None:
            continue
        again = _difference(retested, members, rest, context)
        return again is not None and again.test.p <= cutoff and again.test.higher == difference.test.higher
    return True  # no stratum to tell: the difference stands


# ------------------------------------------------------------ reusable half
def distinguishing_values(matrix: MetricMatrix, chosen: np.ndarray, pool: np.ndarray | None = None) -> list[DistinguishingValue]:
    """Which attribute values set the tasks at ``chosen`` apart from the rest of ``pool`` (default: all).

    The structured form of a pattern's ``why`` (``Explainer.over_represented``):
    values covering at least 20% of the chosen tasks, at least 3x as common as
    among the others, and unlikely by chance. For incidents across groups, call
    it per group with the group's tasks of the incident.
    """
    return Explainer(matrix).distinguishing(np.asarray(chosen, dtype=np.intp), pool)


def attribute_value_of(pattern: Pattern, matrix: MetricMatrix) -> tuple[str, str] | None:
    """(attribute, value) an ATTRIBUTION pattern of ``matrix`` names (its key: ``attribution:<name>=<value>``)."""
    prefix = "attribution:"
    if pattern.kind is not PatternKind.ATTRIBUTION or not pattern.key.startswith(prefix):
        return None
    named = pattern.key[len(prefix):]
    # Attribute names may hold "=" too: the longest known name the key starts with.
    for name in sorted((LABEL, *matrix.attribute_table.keys), key=len, reverse=True):
        if named.startswith(name + "="):
            return name, named[len(name) + 1:]
    return None


def value_tasks(matrix: MetricMatrix, pattern: Pattern) -> np.ndarray | None:
    """Mask over ``matrix``'s tasks carrying the attribute value an ATTRIBUTION pattern names.

    None when ``pattern`` is no attribution or ``matrix`` has no such attribute; no task when none carries the value.
    """
    named = attribute_value_of(pattern, matrix)
    if named is None:
        return None
    name, value = named
    if name == LABEL:
        return np.array([label == value for label in matrix.labels], dtype=bool)
    values, codes = matrix.attribute_table.column(name)
    if value not in values:
        return np.zeros(matrix.n_tasks, dtype=bool)
    return codes == values.index(value) + 1
