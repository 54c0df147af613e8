"""One finding, one pattern: the last step of a cool, after every detector ran.

Detectors are independent, so the same spans can be described twice (a cluster
and an outlier set over the same slow tasks; a conservation law and the
correlations its terms imply; an attribution and the cluster it explains).
``consolidate`` folds such descriptions into one pattern before they are
reported. It sees every detector's output of one cool of one group.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..matrix import MetricMatrix
from ..patterns import Pattern, PatternKind
from ..profile import ThermalProfile
from .attribution import attribute_value_of, value_tasks

# A metric that is a part of another by construction: their dependence is arithmetic, not a
# finding. Self time is the part of a span's duration its children do not cover (otel/calls.py).
PART_OF = {"self_time_ms": "duration_ms"}
_PAIR_KINDS = frozenset({PatternKind.CORRELATION, PatternKind.LEAD_LAG})
_ARITHMETIC_KINDS = _PAIR_KINDS | {PatternKind.CONSERVATION, PatternKind.CONSERVATION_VIOLATION}
_SAME_SPANS = 0.5  # an outlier set this much inside a cluster describes the cluster's spans


def consolidate(patterns: list[Pattern], matrix: MetricMatrix, profile: ThermalProfile) -> list[Pattern]:
    """The patterns of one cool with duplicate descriptions of the same finding folded together."""
    patterns = [p for p in patterns if not _arithmetic_pair(p)]
    patterns = _without_implied_correlations(patterns)
    if matrix.fresh is not None:
        patterns = [p for p in patterns if not _standing_shape(p)]
    patterns = merge_attributions(patterns, matrix, profile)
    return _outliers_into_clusters(patterns)


# ------------------------------------------------- attributions absorb clusters and outlier sets
_SAME_TASKS = 0.6  # estimated Jaccard overlap of a cluster with an attribute value's tasks
_OUTLIERS_INSIDE = 0.8  # share of an outlier set carrying the attribute value


def merge_attributions(patterns: list[Pattern], matrix: MetricMatrix, profile: ThermalProfile) -> list[Pattern]:
    """A cluster or outlier set made of one attribute value's tasks is that attribution's evidence, not news.

    "host.name=db-7: duration_ms 3x the rest" says what a cluster of the same
    tasks (why: host.name=db-7) or five high duration outliers on db-7 say,
    and names the cause: the cluster or outlier set is folded into the
    attribution (its figures as ``cluster.*`` / ``outliers.*`` statistics, its
    tasks among the links) and not reported on its own.
    """
    attributions = [p for p in patterns if p.kind is PatternKind.ATTRIBUTION]
    if not attributions:
        return patterns
    tasks = {p.key: value_tasks(matrix, p) for p in attributions}
    absorbed: dict[str, list[Pattern]] = {p.key: [] for p in attributions}
    kept: list[Pattern] = []
    for pattern in patterns:
        if pattern.kind is PatternKind.CLUSTERING:
            home = _best_home(pattern, attributions, tasks, _cluster_overlap, _SAME_TASKS)
        elif pattern.kind is PatternKind.OUTLIER:
            home = _best_home(pattern, attributions, tasks, _outliers_inside, _OUTLIERS_INSIDE)
        else:
            home = None
        if home is None:
            kept.append(pattern)
        else:
            absorbed[home.key].append(pattern)
    return [_absorb(p, absorbed[p.key], matrix, profile) if p.kind is PatternKind.ATTRIBUTION and absorbed[p.key]
            else p for p in kept]


def _best_home(pattern, attributions, tasks, overlap, minimum) -> Pattern | None:
    scored = [(overlap(pattern, attribution, tasks[attribution.key]), attribution) for attribution in attributions
              if tasks[attribution.key] is not None]
    scored = [(score, attribution) for score, attribution in scored if score >= minimum]
    return max(scored, key=lambda item: item[0])[1] if scored else None


def _involved_share(pattern: Pattern, members: np.ndarray) -> float:
    indices = np.array([task.index for task in pattern.involved if 0 <= task.index < members.size], dtype=np.intp)
    return float(members[indices].mean()) if indices.size else 0.0


def _cluster_overlap(cluster: Pattern, attribution: Pattern, members: np.ndarray) -> float:
    """Jaccard overlap of the cluster with the value's tasks, estimated from the cluster's linked members."""
    size = cluster.statistics.get("size", float(len(cluster.involved)))
    common = _involved_share(cluster, members) * size
    union = size + float(members.sum()) - common
    return common / union if union > 0 else 0.0


def _outliers_inside(outliers: Pattern, attribution: Pattern, members: np.ndarray) -> float:
    """Share of the outlier set carrying the value, when the attribution found the same metric moving that way."""
    metric = outliers.metrics[0] if outliers.metrics else ""
    superiority = attribution.statistics.get(f"{metric}.superiority")
    high = outliers.key.endswith(":+")
    if superiority is None or (superiority > 0.5) != high:
        return 0.0
    return _involved_share(outliers, members)


def _absorb(attribution: Pattern, others: list[Pattern], matrix: MetricMatrix, profile: ThermalProfile) -> Pattern:
    named, _ = attribute_value_of(attribution, matrix)  # (found: its tasks were)
    statistics = dict(attribution.statistics)
    explanation = dict(attribution.explanation)
    notes = []
    metrics = list(attribution.metrics)
    involved = list(attribution.involved)
    seen = {task.index for task in involved}
    for other in others:
        if other.kind is PatternKind.CLUSTERING:
            prefix = "cluster"
            figures = {name: other.statistics[name] for name in ("size", "separation") if name in other.statistics}
            notes.append(f"they form a separate cluster (separation {figures.get('separation', float('nan')):.1f})")
        else:
            metric = other.metrics[0]
            prefix = f"outliers.{metric}"
            figures = {name: other.statistics[name] for name in ("count", "p_value") if name in other.statistics}
            worst = other.statistics.get(f"{metric}.worst_z")
            if worst is not None:
                figures["worst_z"] = worst
            count = int(figures.get("count", len(other.involved)))
            notes.append(f"{count} of them are outliers on {metric}" if count > 1 else f"one of them is an outlier on {metric}")
        statistics.update({f"{prefix}.{name}": value for name, value in figures.items()})
        metrics.extend(name for name in other.metrics if name not in metrics)
        for key, text in other.explanation.items():
            if key != named:  # "db-7 is 100% of the cluster" is the attribution itself
                explanation.setdefault(key, text)
        for task in other.involved:
            if task.index not in seen and len(involved) < profile.max_involved:
                involved.append(task)
                seen.add(task.index)
    return dataclasses.replace(
        attribution,
        description=f"{attribution.description}; {'; '.join(notes)}",
        confidence=max([attribution.confidence, *(other.confidence for other in others)]),
        metrics=tuple(metrics),
        statistics=statistics,
        explanation=explanation,
        involved=tuple(involved),
    )


# ------------------------------------------------- arithmetic, implied and standing descriptions
def _arithmetic_pair(pattern: Pattern) -> bool:
    """A correlation, lead/lag or law between a metric and a part of it."""
    if pattern.kind not in _ARITHMETIC_KINDS or len(pattern.metrics) != 2:
        return False
    a, b = pattern.metrics
    return PART_OF.get(a) == b or PART_OF.get(b) == a


def _standing_shape(pattern: Pattern) -> bool:
    """In a stream: a cluster on one measure that no attribute explains is the group's usual shape.

    Latency with two modes (cache hits and misses, two code paths) is how the
    operation works, not news; a cluster becomes a finding when attribute values
    set it apart (a host, a version) or it stands apart on independent metrics.
    """
    if pattern.kind is not PatternKind.CLUSTERING or pattern.explanation:
        return False
    measures = {PART_OF.get(name, name) for name in pattern.metrics}
    return len(measures) <= 1


def _without_implied_correlations(patterns: list[Pattern]) -> list[Pattern]:
    """A law ties its terms together: correlations between two of its terms say it again."""
    laws = [set(p.metrics) for p in patterns if p.kind is PatternKind.CONSERVATION]
    if not laws:
        return patterns
    return [
        p for p in patterns
        if not (p.kind in _PAIR_KINDS and any(set(p.metrics) <= terms for terms in laws))
    ]


def _outliers_into_clusters(patterns: list[Pattern]) -> list[Pattern]:
    """An outlier set whose tasks are mostly one cluster's members is part of that cluster's finding."""
    clusters = [p for p in patterns if p.kind is PatternKind.CLUSTERING]
    if not clusters:
        return patterns
    # By matrix row: identities are optional (None for every task recorded without one).
    members = [{t.index for t in c.involved} for c in clusters]
    merged: dict[int, int] = {}  # cluster position -> outlier tasks folded into it
    kept = []
    for pattern in patterns:
        if pattern.kind is PatternKind.OUTLIER and pattern.involved:
            tasks = {t.index for t in pattern.involved}
            overlaps = [len(tasks & m) / len(tasks) for m in members]
            best = max(range(len(clusters)), key=overlaps.__getitem__)
            if overlaps[best] >= _SAME_SPANS:
                merged[best] = merged.get(best, 0) + len(tasks)
                continue
        kept.append(pattern)
    folded = {id(clusters[position]): count for position, count in merged.items()}
    return [
        dataclasses.replace(p, statistics={**p.statistics, "outliers_merged": folded[id(p)]}) if id(p) in folded else p
        for p in kept
    ]
