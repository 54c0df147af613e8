"""The seed crate's four detectors (crackle-runtime 0.2, seeds/002), ported to numpy as a baseline.

Faithful to the Rust source: greedy clustering over raw Euclidean distance
(every unvisited task takes each later one within the threshold: order
dependent, O(n^2)); first-half vs second-half mean shift relative to the
global mean; "conservation" = coefficient of variation below a tolerance;
Pearson |r| above a threshold on every pair, involving every task. Thresholds
are the crate's CoolingRate::Medium values as far as its docs give them
(cluster 1.0, phase 0.5, conservation CV 0.05, correlation 0.7).

Used by benchmarks/cool.py (speed) and benchmarks/quality.py --baseline (quality).
"""

from __future__ import annotations

import numpy as np

from crackle_otel.matrix import MetricMatrix
from crackle_otel.patterns import Pattern, PatternKind

CLUSTER_THRESHOLD = 1.0
PHASE_SENSITIVITY = 0.5
CONSERVATION_TOLERANCE = 0.05
CORRELATION_THRESHOLD = 0.7


def crate_detect(matrix: MetricMatrix, cluster_threshold: float = CLUSTER_THRESHOLD) -> list[Pattern]:
    values = matrix.values
    names = matrix.metric_names
    patterns = [*_greedy_clusters(values, names, cluster_threshold)]
    for j, name in enumerate(names):
        column = values[np.isfinite(values[:, j]), j]
        if column.size < 2:
            continue
        mean = column.mean()
        half = column.size // 2
        if abs(mean) > np.finfo(float).eps:
            shift = abs(column[half:].mean() - column[:half].mean()) / abs(mean)
            if shift > PHASE_SENSITIVITY:
                patterns.append(Pattern(PatternKind.PHASE_TRANSITION, f"metric '{name}' shifted by {shift:.1%}",
                                        min(1.0, shift / PHASE_SENSITIVITY), (name,)))
            cv = column.std() / abs(mean)
            if cv < CONSERVATION_TOLERANCE:
                patterns.append(Pattern(PatternKind.CONSERVATION, f"metric '{name}' is conserved", 1.0 - cv, (name,)))
    complete = np.isfinite(values).all(axis=0)
    if complete.sum() >= 2 and values.shape[0] >= 3:
        with np.errstate(all="ignore"):
            r = np.corrcoef(values[:, complete], rowvar=False)
        kept = [names[j] for j in np.flatnonzero(complete)]
        for a, b in zip(*np.nonzero(np.triu(np.abs(np.nan_to_num(r)) >= CORRELATION_THRESHOLD, 1))):
            patterns.append(Pattern(PatternKind.CORRELATION, f"'{kept[a]}' and '{kept[b]}' r={r[a, b]:.3f}",
                                    abs(r[a, b]), (kept[a], kept[b])))
    return patterns


def _greedy_clusters(values: np.ndarray, names: tuple[str, ...], threshold: float):
    data = np.nan_to_num(values)
    n = data.shape[0]
    visited = np.zeros(n, dtype=bool)
    for i in range(n):
        if visited[i]:
            continue
        visited[i] = True
        close = np.flatnonzero(~visited[i + 1 :] & (np.sqrt(((data[i + 1 :] - data[i]) ** 2).sum(axis=1)) < threshold))
        visited[i + 1 + close] = True
        if close.size:
            yield Pattern(PatternKind.CLUSTERING, f"{close.size + 1} tasks clustered together", 0.5, names)
