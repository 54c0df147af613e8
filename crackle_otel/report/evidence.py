"""What a plot of a pattern needs, taken from the window its detectors read, small enough to embed.

``evidence(pattern, window)`` returns a JSON-ready dict whose ``plot`` names the picture:

- ``series`` (phase transitions, constant metrics): the metric over time, the change points and the
  level of each segment between them (means over the full window, not the plotted sample);
- ``residual`` (conservation laws and violations): the law's residual over time, its tolerance and
  the violation period;
- ``pair`` (correlations): the two metrics against each other;
- ``lead_lag``: both metrics over time, standardised, with the lag;
- ``groups`` (clusters, outliers, and any kind without a picture of its own): the involved tasks
  against the rest of the window on the pattern's metrics; for an attribution, the tasks that
  carry its attribute value against the others, on its leading metric.

Everything is read from the window by metric name and from statistics by name pattern, so a
detector that adds statistics or changes its wording does not break its plot. At most
``MAX_POINTS`` rows per plot (an even sample in time; involved tasks are always kept).
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..detect.attribution import value_tasks
from ..matrix import MetricMatrix
from ..patterns import Pattern, PatternKind

MAX_POINTS = 800
MAX_GROUP_METRICS = 2  # a cluster is drawn on the two metrics that set it apart most
_CHANGE_INDEX = re.compile(r"^change(?:_(\d+))?_index$")
_RESIDUAL_KINDS = (PatternKind.CONSERVATION, PatternKind.CONSERVATION_VIOLATION)


def evidence(pattern: Pattern, window: MetricMatrix) -> dict[str, Any]:
    """The plot data of ``pattern`` from ``window`` (the matrix its detectors read)."""
    metrics = [name for name in pattern.metrics if name in window.metric_names]
    kind = pattern.kind
    if kind in _RESIDUAL_KINDS and _coefficients(pattern, metrics):
        return _residual(pattern, window, metrics)
    if kind is PatternKind.LEAD_LAG and len(metrics) >= 2:
        return _lead_lag(pattern, window, metrics[:2])
    if kind is PatternKind.CORRELATION and len(metrics) >= 2:
        return _pair(pattern, window, metrics[:2])
    if kind in (PatternKind.PHASE_TRANSITION, PatternKind.CONSTANT) and metrics:
        return _series(pattern, window, metrics[0])
    if kind is PatternKind.ATTRIBUTION:
        members = value_tasks(window, pattern)
        shown = metrics or [name for name in ("duration_ms",) if name in window.metric_names]
        if members is not None and shown:
            return _groups(pattern, window, shown[:1], members=(pattern.key.removeprefix("attribution:"), members))
    if metrics:
        return _groups(pattern, window, _ranked(pattern, metrics)[:MAX_GROUP_METRICS])
    return {"plot": "none", "reason": "the window holds none of the pattern's metrics"}


# ------------------------------------------------------------------ helpers
_EXACT_POWERS = 22  # 10 ** k is exact in a double up to here


def _round(values: np.ndarray | Iterable[float], digits: int = 6) -> list[float | None]:
    """Floats for JSON: significant digits kept, NaN/inf as null (plotly leaves a gap).

    Each value is ``float(f"{value:.{digits}g}")``, computed for the whole array at once (a
    plot's thousands of values one by one were most of a cool's bookkeeping): the value scaled
    to ``digits`` digits before the point, rounded to an integer, scaled back. Both scalings are
    exact powers of ten, so scaling back is the double nearest the decimal, as parsing the text
    would give; scaling up rounds once, so a value within two units of the last place of a
    half (where that rounding could tip it), or whose exponent is not what log10 said, or tiny
    or huge, takes the text route.
    """
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        return [_round_one(value, digits) for value in array.tolist()]
    magnitude = np.abs(array)
    fast = np.isfinite(array) & (magnitude > 0)
    with np.errstate(all="ignore"):
        exponent = np.floor(np.log10(np.where(fast, magnitude, 1.0)))
        shift = (digits - 1) - exponent  # decimal places that leave ``digits`` digits before the point
        fast &= np.abs(shift) <= _EXACT_POWERS
        shift = np.where(fast, shift, 0.0)
        power = 10.0 ** np.abs(shift)
        scaled = np.where(shift >= 0, magnitude * power, magnitude / power)
        mantissa = np.rint(scaled)
        from_half = np.abs(scaled - np.floor(scaled) - 0.5)
        fast &= ((from_half > 2 * np.spacing(scaled)) & (mantissa >= 10.0 ** (digits - 1))
                 & (mantissa < 10.0 ** digits))
        rounded = np.copysign(np.where(shift >= 0, mantissa / power, mantissa * power), array)
    out: list[float | None] = rounded.tolist()
    for i in np.flatnonzero(~fast).tolist():
        out[i] = _round_one(float(array[i]), digits)
    return out


def _round_one(value: float, digits: int) -> float | None:
    return float(f"{value:.{digits}g}") if math.isfinite(value) else None


def _sample_rows(n: int, keep: Iterable[int] = (), limit: int = MAX_POINTS) -> np.ndarray:
    """Rows to draw: all when few, else an even sample in time plus the rows in ``keep``."""
    if n <= limit:
        return np.arange(n)
    sample = np.linspace(0, n - 1, limit).round().astype(np.intp)
    extra = np.fromiter((i for i in keep if 0 <= i < n), dtype=np.intp)
    return np.unique(np.concatenate([sample, extra]))


def _times(window: MetricMatrix, rows: np.ndarray) -> list[float | None]:
    return _round(window.timestamps[rows], 15)  # Unix seconds to the microsecond


def _involved_rows(pattern: Pattern, window: MetricMatrix) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = {}
    for task in pattern.involved:
        if 0 <= task.index < window.n_tasks:
            rows.setdefault(task.role, []).append(task.index)
    return rows


def _ranked(pattern: Pattern, metrics: list[str]) -> list[str]:
    """Metrics by how far they set the involved tasks apart (|z| statistics), strongest first."""
    def strength(name: str) -> float:
        for suffix in (".z_vs_rest", ".worst_z"):
            value = pattern.statistics.get(name + suffix)
            if value is not None:
                return abs(value)
        return 0.0
    return sorted(metrics, key=strength, reverse=True)


# ------------------------------------------------------------------ kinds
def _series(pattern: Pattern, window: MetricMatrix, metric: str) -> dict[str, Any]:
    column = window.column(metric)
    n = window.n_tasks
    changes = sorted({int(v) for name, v in pattern.statistics.items()
                      if _CHANGE_INDEX.match(name) and 0 <= v < n})
    bounds = [0, *changes, n]
    segments = []
    for start, stop in zip(bounds, bounds[1:]):
        values = column[start:stop]
        values = values[np.isfinite(values)]
        if values.size and stop > start:
            segments.append({
                "t0": float(window.timestamps[start]), "t1": float(window.timestamps[stop - 1]),
                "mean": _round([values.mean()])[0], "sd": _round([values.std()])[0], "tasks": int(values.size),
            })
    ramp_end = pattern.statistics.get("ramp_end_index")
    rows = _sample_rows(n, keep=[c + d for c in changes for d in (-1, 0)])
    return {
        "plot": "series",
        "metric": metric,
        "t": _times(window, rows),
        "y": _round(column[rows]),
        "changes": [float(window.timestamps[c]) for c in changes],
        "ramp_end": float(window.timestamps[int(ramp_end)]) if ramp_end is not None and 0 <= ramp_end < n else None,
        "segments": segments,
    }


def _coefficients(pattern: Pattern, metrics: list[str]) -> dict[str, float]:
    found = {name: pattern.statistics.get(f"coef.{name}") for name in metrics}
    return {name: value for name, value in found.items() if value is not None}


def _residual(pattern: Pattern, window: MetricMatrix, metrics: list[str]) -> dict[str, Any]:
    coefficients = _coefficients(pattern, metrics)
    residual = np.zeros(window.n_tasks)
    for name, coefficient in coefficients.items():
        residual = residual + coefficient * window.column(name)  # NaN where a term is missing
    residual -= pattern.statistics.get("constant", 0.0)
    stats = pattern.statistics
    first, last = stats.get("first_violation_index"), stats.get("last_violation_index")
    period = None
    if first is not None and last is not None and 0 <= first <= last < window.n_tasks:
        period = [float(window.timestamps[int(first)]), float(window.timestamps[int(last)])]
    violators = _involved_rows(pattern, window).get("violator", [])
    rows = _sample_rows(window.n_tasks, keep=violators[:MAX_POINTS // 4])
    tolerance = stats.get("threshold")
    if tolerance is None and "residual_rms" in stats:
        tolerance = 3 * stats["residual_rms"]
    return {
        "plot": "residual",
        "equation": " + ".join(f"{c:g}*{name}" for name, c in coefficients.items()),
        "t": _times(window, rows),
        "y": _round(residual[rows]),
        "tolerance": _round([tolerance])[0] if tolerance is not None else None,
        "period": period,
    }


def _pair(pattern: Pattern, window: MetricMatrix, metrics: list[str]) -> dict[str, Any]:
    x, y = window.column(metrics[0]), window.column(metrics[1])
    both = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    rows = both[_sample_rows(both.size)]
    return {
        "plot": "pair",
        "metrics": metrics,
        "x": _round(x[rows]),
        "y": _round(y[rows]),
        "t": _times(window, rows),
    }


def _standardised(values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if finite.size < 2:
        return values
    center = np.median(finite)
    spread = np.median(np.abs(finite - center)) * 1.4826 or finite.std() or 1.0
    return (values - center) / spread


def _lead_lag(pattern: Pattern, window: MetricMatrix, metrics: list[str]) -> dict[str, Any]:
    leader, follower = (window.column(name) for name in metrics)
    rows = _sample_rows(window.n_tasks)
    return {
        "plot": "lead_lag",
        "metrics": metrics,
        "t": _times(window, rows),
        "leader": _round(_standardised(leader)[rows], 4),
        "follower": _round(_standardised(follower)[rows], 4),
        "lag_tasks": pattern.statistics.get("lag"),
        "lag_seconds": pattern.statistics.get("lag_seconds"),
    }


def _groups(pattern: Pattern, window: MetricMatrix, metrics: list[str],
            members: tuple[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The involved tasks (by role), or the ``members`` (a name and a row mask), against the rest of the window."""
    if members is not None:
        name, involved = members  # all of the value's tasks are set apart, not only those drawn
        chosen = np.flatnonzero(involved)
        by_role = {name: chosen[_sample_rows(chosen.size)].tolist()}
    else:
        by_role = _involved_rows(pattern, window)
        by_role.pop("rest", None)
        involved = np.zeros(window.n_tasks, dtype=bool)
        for rows in by_role.values():
            involved[rows] = True
    rest = np.flatnonzero(~involved)
    rest = rest[_sample_rows(rest.size)]
    columns = [window.column(name) for name in metrics]

    def points(rows: np.ndarray) -> dict[str, Any]:
        return {"t": _times(window, rows), "values": [_round(c[rows]) for c in columns]}

    # A detector may list only the most typical of a large cluster: the rest then holds the others.
    total = pattern.statistics.get("size", pattern.statistics.get("count"))
    listed = sum(len(rows) for rows in by_role.values())
    unlisted = int(total) - listed if members is None and total is not None and total > listed else 0

    centers = {}
    for name in metrics:
        center, rest_center = pattern.statistics.get(f"{name}.center"), pattern.statistics.get(f"{name}.rest_center")
        if center is not None and rest_center is not None:
            centers[name] = {"group": _round([center])[0], "rest": _round([rest_center])[0]}
    return {
        "plot": "groups",
        "metrics": metrics,
        "groups": {role: points(np.asarray(rows[:MAX_POINTS], dtype=np.intp)) for role, rows in by_role.items()},
        "rest": points(rest),
        "unlisted": unlisted,
        "centers": centers,
    }


# ------------------------------------------------------------------ incidents
_EDGE = " -> "
_GROUP = " | "


def service_of(group: str) -> str:
    """The service a group belongs to ("svc | op" -> "svc"; an edge group "a -> svc | op" -> "svc")."""
    return group.split(_EDGE, 1)[-1].split(_GROUP, 1)[0]


def edge_of(group: str) -> tuple[str, str] | None:
    """(caller service, callee service) of an edge group ("a -> svc | op"), else None."""
    if _EDGE not in group:
        return None
    caller, callee = group.split(_EDGE, 1)
    return caller, callee.split(_GROUP, 1)[0]


def _ranked_candidates(text: str) -> list[tuple[str, float]]:
    """"svc-a (3.20), svc-b (1.10)" -> [("svc-a", 3.2), ("svc-b", 1.1)]."""
    ranked = []
    for match in re.finditer(r"([^,()]+?) \(([-+0-9.eE]+)\)", text):
        try:
            ranked.append((match.group(1).strip(), float(match.group(2))))
        except ValueError:
            continue
    return ranked


def incident_evidence(pattern: Pattern, changes: Mapping[str, Sequence[tuple[str, float, float, float]]],
                      edges: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """An incident's timeline (when each of its groups changed, and by how much) and its call graph.

    ``changes``: per group, its latest latency changes as (metric, time, median before, median after);
    ``edges``: caller -> callee services seen so far. The graph keeps the incident's services and
    their direct neighbours; the origin and the other candidates carry their scores.
    """
    explanation = pattern.explanation
    groups = [g.strip() for g in explanation.get("groups", "").split(",") if g.strip()] or [pattern.group]
    origin = explanation.get("origin.service") or service_of(pattern.group)
    candidates = _ranked_candidates(explanation.get("origins", ""))
    timeline = []
    for group in groups:
        for metric, at, before, after in changes.get(group, ()):
            timeline.append({"group": group, "service": service_of(group), "metric": metric, "t": at,
                             "before": _round([before])[0], "after": _round([after])[0],
                             "origin": service_of(group) == origin})
    timeline.sort(key=lambda row: row["t"])
    involved_services = {service_of(g) for g in groups} | {origin} | {name for name, _ in candidates}
    kept_edges = sorted({(a, b) for a, b in edges if a in involved_services or b in involved_services})
    nodes = sorted(involved_services | {s for edge in kept_edges for s in edge})
    return {
        "plot": "incident",
        "origin": origin,
        "operation": explanation.get("origin.operation", ""),
        "start": pattern.statistics.get("start_timestamp"),
        "timeline": timeline,
        "groups": groups,
        "graph": {
            "nodes": [{"service": name, "changed": name in {service_of(g) for g in groups},
                       "score": dict(candidates).get(name)} for name in nodes],
            "edges": [list(edge) for edge in kept_edges],
        },
    }
