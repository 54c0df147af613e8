"""Conservation laws: exact linear invariants between metrics, and where they break.

The crate called any metric with a low coefficient of variation "conserved",
so IDs, batch counters, a drifting temperature and constant-by-design values
came out as laws (review sections 3-4). Here a law is a linear equation between
2-4 metrics that each vary on their own, such as
``records_in - records_out - errors = 0``, whose residual is tiny next to how
much its terms move: RMS residual / sqrt(sum (coef_j * sd_j)^2) must stay within
``profile.rate.conservation_tolerance`` (for a two-term law that means
|r| >= 1 - tolerance^2, so r = 0.9 is far from a law).

Method (vectorised; loops run over metrics, windows and candidate laws, never tasks):

1. Candidate metrics: present on enough tasks, varying, not counters / IDs
   (``_stats.counter_columns``: anything that never decreases in time order).
   Metrics present on the same tasks form a block; laws are searched inside it.
2. Discovery runs on a deterministic, evenly spaced sample (<= 20k tasks) cut
   into a dyadic tree of time windows (all, halves, quarters, ...). In a window
   the near-null eigenvectors of the correlation matrix name the metrics that
   take part in some exact relation; each 2-4 subset of those is tested by the
   smallest eigenvalue of its own correlation matrix (= squared relative
   residual). A law broken in part of the stream still holds in the windows
   before the break, which is what makes the search robust to a violation.
3. A candidate is fitted (total least squares on standardised terms) on the
   windows where it held, refined by trimmed refits (least-trimmed-squares
   concentration steps), rounded to small integer coefficients when that costs
   almost nothing, and verified on every task that reports its terms. Its
   task-to-task changes must balance too: two metrics that merely follow one
   slow trend fit a line across the trend, but not step by step.
4. Only minimal laws are reported: a candidate in the span of laws already
   accepted is implied by them, and a smaller law that merely restricts a
   bigger one to tasks where the extra term stayed constant is dropped.
5. Tasks where an accepted law fails form one CONSERVATION_VIOLATION pattern.

Metrics constant by design get at most a low-confidence CONSTANT note, and only
with ``profile.constant_notes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from itertools import combinations

import numpy as np

from ..matrix import MetricMatrix
from ..patterns import Pattern, PatternKind
from ..profile import ThermalProfile
from ._explain import Explainer
from ._stats import counter_columns, usable_columns

SAMPLE_ROWS = 20_000  # discovery sample; verification always uses every task
MIN_LAW_ROWS = 20  # fewest tasks a law (or a discovery window) must hold on
MAX_TERMS = 4
MAX_WINDOW_DEPTH = 5  # up to 32 finest windows (63 in the tree)
MIN_HOLDING_FRACTION = 0.5  # a "law" broken by most tasks is not one
VIOLATION_SIGMAS = 5.0  # a task violates when |residual| > 5 x the law's own RMS ...
THRESHOLD_FLOOR = 0.5  # ... or > half the tolerance x term scale, whichever is larger
# Task-to-task changes must balance too, within this multiple of the tolerance.
LOCAL_TOLERANCE_FACTOR = 10.0
ROUNDING_SLACK = 0.25  # integer coefficients may cost at most this share of the tolerance
MAX_DENOMINATOR = 12  # simple rationals tried: p/q with q <= 12
MAX_INTEGER = 10_000  # larger integer coefficients are not "simple"
SPAN_DISTANCE = 0.1  # a law this close to the span of accepted laws is implied by them
# A metric whose weight in the near-null space is below ~tolerance could be dropped
# from the law within tolerance (the smaller law is then found instead).
NULL_WEIGHT_PER_TOLERANCE = 0.5
EIGEN_BUDGET = 64 * 32**3  # sum of k^3 over windows: the full tree up to 32 metrics, the root alone beyond ~88
MAX_SUBSETS_PER_WINDOW = 3_000
NEIGHBOURHOOD = 6  # metrics per null vector searched when a window has too many candidates
MAX_BLOCKS = 8
CONSTANT_NOTE_CONFIDENCE = 0.2
BEFORE_TASKS = 8  # tasks shown where the law still held, next to the violators


@dataclass(frozen=True)
class _Fit:
    coefficients: np.ndarray  # raw units, one per term
    constant: float
    rms: float  # residual standard deviation on the fit rows
    scale: float  # sqrt(sum (coef_j * sd_j)^2): how much the terms move
    threshold: float  # |residual| beyond which a task violates the law

    @property
    def relative(self) -> float:
        return self.rms / self.scale if self.scale > 0 else math.inf


@dataclass(frozen=True)
class _Law:
    columns: tuple[int, ...]  # matrix columns, ascending
    fit: _Fit
    integer: bool  # coefficients are small integers (shown exactly)
    sample_holding: np.ndarray  # bool over the discovery sample
    direction: np.ndarray  # unit vector over the block's metrics, in standardised units


# --------------------------------------------------------------------- entry


def detect(matrix: MetricMatrix, profile: ThermalProfile) -> list[Pattern]:
    """Conservation laws, their violations and (optionally) constant-metric notes."""
    values = matrix.values
    if matrix.n_tasks == 0 or matrix.n_metrics == 0:
        return []
    tolerance = profile.rate.conservation_tolerance
    min_rows = max(profile.rate.min_tasks, MIN_LAW_ROWS)
    patterns: list[Pattern] = []
    if profile.constant_notes:
        patterns.extend(_constant_notes(matrix, profile))
    present = np.isfinite(values)
    candidates = _law_candidates(values, min_rows)
    for block_columns, block_rows in _presence_blocks(present, candidates, min_rows):
        for law in _find_laws(values, block_columns, block_rows, tolerance, min_rows):
            patterns.extend(_law_patterns(matrix, present, law, profile, tolerance, min_rows))
    return patterns


# ------------------------------------------------------- candidates & blocks


def _law_candidates(values: np.ndarray, min_rows: int) -> np.ndarray:
    """Varying metrics that are not counters or IDs (metrics that never decrease in time order)."""
    usable = usable_columns(values, min_rows)
    return usable[~counter_columns(values)[usable]]


def _presence_blocks(present: np.ndarray, candidates: np.ndarray, min_rows: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Groups of candidate metrics reported together on enough tasks, with those tasks.

    Greedy: seed with the most present metric, add each metric that keeps at
    least half of the seed's tasks complete; repeat on what is left.
    """
    if candidates.size < 2:
        return []
    counts = present[:, candidates].sum(axis=0)
    if counts.min() == present.shape[0]:  # the usual case: every metric on every task
        return [(np.sort(candidates), np.ones(present.shape[0], dtype=bool))]
    by_column = np.asfortranarray(present[:, candidates])  # contiguous columns: ~10x faster slicing
    remaining = [int(i) for i in np.argsort(-counts, kind="stable")]
    blocks = []
    while len(remaining) >= 2 and len(blocks) < MAX_BLOCKS:
        seed, rest = remaining[0], []
        rows = by_column[:, seed].copy()
        needed = max(min_rows, 0.5 * counts[seed])
        block = [seed]
        for position in remaining[1:]:
            both = rows & by_column[:, position]
            if both.sum() >= needed:
                rows, block = both, block + [position]
            else:
                rest.append(position)
        if len(block) >= 2 and rows.sum() >= min_rows:
            blocks.append((np.sort(candidates[block]), rows))
        remaining = rest
    return blocks


# ------------------------------------------------------------------ discovery


def _find_laws(
    values: np.ndarray, columns: np.ndarray, rows: np.ndarray, tolerance: float, min_rows: int
) -> list[_Law]:
    """Minimal linear laws among ``columns`` on the complete ``rows`` (time order)."""
    row_index = np.flatnonzero(rows)
    if row_index.size > SAMPLE_ROWS:
        row_index = row_index[np.linspace(0, row_index.size - 1, SAMPLE_ROWS).round().astype(np.intp)]
    sample = values[np.ix_(row_index, columns)]
    # Correlations do not care about scale; standardising only keeps the sums well conditioned
    # and gives the implied-law test one unit per metric.
    spread = sample.std(axis=0)
    spread[spread == 0] = 1.0
    z = (sample - sample.mean(axis=0)) / spread
    k = columns.size
    windows, corr, varying = _window_correlations(z, window_size=max(2 * k + 10, 2 * MIN_LAW_ROWS))

    held_in: dict[tuple[int, ...], list[int]] = {}
    smallest = np.linalg.eigvalsh(corr)[:, 0]  # one batched call; most windows stop here
    for w in np.flatnonzero(smallest <= tolerance**2):
        for support in _supports_holding(corr[w], varying[w], tolerance):
            held_in.setdefault(support, []).append(int(w))

    laws = []
    for support, window_ids in sorted(held_in.items()):
        law = _fit_candidate(sample, spread, support, windows, window_ids, tolerance, min_rows, k, columns)
        if law is not None and law.sample_holding.mean() >= MIN_HOLDING_FRACTION:
            laws.append(law)
    return _minimal_laws(laws, min_rows, sample.shape[0])


def _window_correlations(z: np.ndarray, window_size: int) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """Correlation matrices of a dyadic tree of time windows: the whole range, halves, quarters, ...

    Moments are computed once on the finest windows and merged pairwise
    upwards (Chan et al.'s parallel update: exact, no cancellation), so the
    whole tree costs one pass over the rows. Metrics constant in a window get
    an identity row there: they cannot take part in a law found in it.
    """
    n, k = z.shape
    depth = 0
    while (
        depth < MAX_WINDOW_DEPTH
        and n / 2 ** (depth + 1) >= window_size
        and (2 ** (depth + 2) - 1) * k**3 <= EIGEN_BUDGET  # wide blocks get fewer windows
    ):
        depth += 1
    bounds = np.linspace(0, n, 2**depth + 1).round().astype(int)
    level = []
    for start, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        rows = z[start:stop]
        mean = rows.mean(axis=0)
        centred = rows - mean
        level.append((start, stop, stop - start, mean, centred.T @ centred))
    nodes = list(level)
    while len(level) > 1:
        merged = []
        for (s_a, _, n_a, mean_a, m2_a), (_, e_b, n_b, mean_b, m2_b) in zip(level[0::2], level[1::2]):
            total = n_a + n_b
            delta = mean_b - mean_a
            mean = mean_a + delta * n_b / total
            m2 = m2_a + m2_b + np.outer(delta, delta) * n_a * n_b / total
            merged.append((s_a, e_b, total, mean, m2))
        level = merged
        nodes.extend(level)
    nodes = [node for node in nodes if node[2] >= MIN_LAW_ROWS]
    windows = [(node[0], node[1]) for node in nodes]
    if not nodes:
        return windows, np.zeros((0, k, k)), np.zeros((0, k), dtype=bool)
    cov = np.stack([node[4] / node[2] for node in nodes])
    sd = np.sqrt(np.maximum(np.diagonal(cov, axis1=1, axis2=2), 0.0))
    varying = sd > 1e-9
    safe_sd = np.where(varying, sd, 1.0)
    corr = cov / (safe_sd[:, :, None] * safe_sd[:, None, :])
    fixed = ~(varying[:, :, None] & varying[:, None, :])
    corr[fixed] = 0.0
    diagonal = np.arange(k)
    corr[:, diagonal, diagonal] = 1.0
    return windows, corr, varying


def _supports_holding(corr: np.ndarray, varying: np.ndarray, tolerance: float) -> list[tuple[int, ...]]:
    """Minimal subsets (2-4 metrics) of one window with relative residual <= tolerance.

    The smallest eigenvalue of a subset's correlation matrix is its squared
    relative residual; metrics with weight in the window's near-null
    eigenvectors are the only ones that can take part.
    """
    k = corr.shape[0]
    eigenvalues, eigenvectors = np.linalg.eigh(corr)
    limit = tolerance**2
    null_vectors = eigenvectors[:, eigenvalues <= limit]
    if null_vectors.shape[1] == 0:
        return []
    weight = np.sqrt((null_vectors**2).sum(axis=1))
    involved = np.flatnonzero(varying & (weight >= NULL_WEIGHT_PER_TOLERANCE * tolerance))
    holding: list[tuple[int, ...]] = []
    for size in range(2, MAX_TERMS + 1):
        subsets = _subsets(involved, null_vectors, size)
        if subsets.size == 0:
            continue
        if holding:  # supersets of a law that holds here are not minimal
            member = np.zeros((subsets.shape[0], k), dtype=bool)
            np.put_along_axis(member, subsets, True, axis=1)
            contains = np.zeros(subsets.shape[0], dtype=bool)
            for support in holding:
                contains |= member[:, list(support)].all(axis=1)
            subsets = subsets[~contains]
            if subsets.size == 0:
                continue
        blocks = corr[subsets[:, :, None], subsets[:, None, :]]
        smallest = np.linalg.eigvalsh(blocks)[:, 0]
        holding.extend(tuple(int(c) for c in s) for s in subsets[smallest <= limit])
    return holding


def _subsets(involved: np.ndarray, null_vectors: np.ndarray, size: int) -> np.ndarray:
    """All ``size``-subsets of ``involved``, or those within each null vector's heaviest metrics."""
    if involved.size < size:
        return np.zeros((0, size), dtype=np.intp)
    if math.comb(involved.size, size) <= MAX_SUBSETS_PER_WINDOW:
        return np.asarray(list(combinations(involved.tolist(), size)), dtype=np.intp)
    found: set[tuple[int, ...]] = set()
    for vector in null_vectors.T:
        heaviest = np.sort(np.argsort(-np.abs(vector), kind="stable")[:NEIGHBOURHOOD])
        found.update(combinations(heaviest.tolist(), size))
    if not found:
        return np.zeros((0, size), dtype=np.intp)
    return np.asarray(sorted(found), dtype=np.intp)


# -------------------------------------------------------------------- fitting


def _fit(terms: np.ndarray, rows: np.ndarray, tolerance: float, min_rows: int) -> _Fit | None:
    """Total least squares on standardised terms: the combination that varies least."""
    chosen = terms[rows]
    if chosen.shape[0] < min_rows:
        return None
    mean = chosen.mean(axis=0)
    centred = chosen - mean
    cov = centred.T @ centred / chosen.shape[0]
    sd = np.sqrt(np.diag(cov))
    if np.any(sd <= 1e-12 * (np.abs(mean) + 1.0)):
        return None  # a term is constant here: the law is smaller than this support
    corr = cov / np.outer(sd, sd)
    _, eigenvectors = np.linalg.eigh(corr)
    return _evaluate(eigenvectors[:, 0] / sd, cov, mean, tolerance)


def _evaluate(coefficients: np.ndarray, cov: np.ndarray, mean: np.ndarray, tolerance: float) -> _Fit:
    rms = math.sqrt(max(float(coefficients @ cov @ coefficients), 0.0))
    scale = math.sqrt(float(np.sum(coefficients**2 * np.diag(cov))))
    threshold = max(VIOLATION_SIGMAS * rms, THRESHOLD_FLOOR * tolerance * scale)
    return _Fit(coefficients, float(mean @ coefficients), rms, scale, threshold)


def _fit_candidate(
    sample: np.ndarray,
    spread: np.ndarray,
    support: tuple[int, ...],
    windows: list[tuple[int, int]],
    window_ids: list[int],
    tolerance: float,
    min_rows: int,
    k: int,
    columns: np.ndarray,
) -> _Law | None:
    terms = sample[:, support]
    n = terms.shape[0]
    in_windows = np.zeros(n, dtype=bool)
    for w in window_ids:
        in_windows[slice(*windows[w])] = True
    fit = _fit(terms, in_windows, tolerance, min_rows)
    if fit is None or fit.relative > tolerance:
        # The law's constant may differ between windows: use the largest one alone.
        start, stop = max((windows[w] for w in window_ids), key=lambda b: (b[1] - b[0], -b[0]))
        in_windows[:] = False
        in_windows[start:stop] = True
        fit = _fit(terms, in_windows, tolerance, min_rows)
    if fit is None or fit.relative > tolerance:
        return None
    fit, holding = _concentrate(terms, fit, in_windows, tolerance, min_rows)
    if fit.relative > tolerance:
        return None
    fit, integer = _simplify(terms, holding, fit, tolerance)
    holding = np.abs(terms @ fit.coefficients - fit.constant) <= fit.threshold
    if _local_relative_residual(terms[holding], fit.coefficients) > LOCAL_TOLERANCE_FACTOR * tolerance:
        return None
    direction = np.zeros(k)
    direction[list(support)] = fit.coefficients * spread[list(support)]
    direction /= np.linalg.norm(direction)
    return _Law(tuple(int(columns[c]) for c in support), fit, integer, holding, direction)


def _local_relative_residual(terms: np.ndarray, coefficients: np.ndarray) -> float:
    """Relative residual of task-to-task changes (0 when nothing changes).

    Two metrics that both follow one slow trend (latency and consumer lag
    during a degradation) fit a line across the trend, but their task-level
    wiggles are unrelated; a real law also balances each task's changes.
    """
    steps = np.diff(terms, axis=0)
    if steps.shape[0] == 0:
        return 0.0
    moved = float(np.sum(coefficients**2 * np.mean(steps**2, axis=0)))
    if moved <= 0:
        return 0.0
    return math.sqrt(float(np.mean((steps @ coefficients) ** 2)) / moved)


def _concentrate(
    terms: np.ndarray, fit: _Fit, rows: np.ndarray, tolerance: float, min_rows: int
) -> tuple[_Fit, np.ndarray]:
    """Least-trimmed-squares concentration steps: refit on the tasks the law fits."""
    for _ in range(4):
        holding = np.abs(terms @ fit.coefficients - fit.constant) <= fit.threshold
        if np.array_equal(holding, rows):
            break
        refit = _fit(terms, holding, tolerance, min_rows)
        if refit is None:
            break
        fit, rows = refit, holding
    return fit, rows


def _simplify(terms: np.ndarray, rows: np.ndarray, fit: _Fit, tolerance: float) -> tuple[_Fit, bool]:
    """Smallest integer coefficients that fit (almost) as well, else the exact fit scaled to lead with 1."""
    chosen = terms[rows]
    mean = chosen.mean(axis=0)
    centred = chosen - mean
    cov = centred.T @ centred / chosen.shape[0]
    allowed = min(tolerance, fit.relative + ROUNDING_SLACK * tolerance)
    best: tuple[float, np.ndarray] | None = None
    for pivot in range(fit.coefficients.size):
        ratios = fit.coefficients / fit.coefficients[pivot]
        for denominator in range(1, MAX_DENOMINATOR + 1):
            integers = np.round(ratios * denominator)
            if np.any(integers == 0) or not np.all(np.abs(integers) <= MAX_INTEGER):
                continue
            integers = integers / math.gcd(*(int(abs(v)) for v in integers))
            size = float(np.abs(integers).sum())
            if best is not None and size >= best[0]:
                continue
            if _evaluate(integers, cov, mean, tolerance).relative <= allowed:
                best = (size, integers)
    if best is not None:
        coefficients, integer = best[1], True
    else:
        coefficients, integer = fit.coefficients / fit.coefficients[0], False
    if coefficients[0] < 0:
        coefficients = -coefficients
    simplified = _evaluate(coefficients, cov, mean, tolerance)
    nearest = round(simplified.constant)
    if integer and abs(simplified.constant - nearest) <= 1e-9 * max(1.0, abs(nearest)):
        simplified = replace(simplified, constant=float(nearest))  # float noise of an exact law
    return simplified, integer


def _minimal_laws(laws: list[_Law], min_rows: int, n_sample: int) -> list[_Law]:
    """Drop restrictions of bigger laws, then keep a basis of minimal laws."""
    counts = [int(law.sample_holding.sum()) for law in laws]
    margin = max(min_rows, 0.05 * n_sample)
    kept = []
    for i, law in enumerate(laws):
        restricted = any(
            set(law.columns) < set(other.columns)
            and counts[j] >= counts[i] + margin
            and (law.sample_holding & other.sample_holding).sum() >= 0.95 * counts[i]
            for j, other in enumerate(laws)
        )
        if not restricted:
            kept.append(i)
    # Fewest terms first, then widest support, then the simplest equation (smallest integers).
    kept.sort(key=lambda i: (len(laws[i].columns), -counts[i], _complexity(laws[i]), laws[i].columns))
    basis: list[np.ndarray] = []
    accepted = []
    for i in kept:
        direction = laws[i].direction
        residual = direction - sum((b @ direction) * b for b in basis) if basis else direction
        distance = float(np.linalg.norm(residual))
        if distance < SPAN_DISTANCE:
            continue  # implied by laws already accepted
        basis.append(residual / distance)
        accepted.append(laws[i])
    return accepted


def _complexity(law: _Law) -> tuple[float, float]:
    """Integer laws by the size of their coefficients; others after them, tightest first."""
    if law.integer:
        return (float(np.abs(law.fit.coefficients).sum()), 0.0)
    return (math.inf, round(law.fit.relative, 6))


# ------------------------------------------------------------------- patterns


def _law_patterns(
    matrix: MetricMatrix,
    present: np.ndarray,
    law: _Law,
    profile: ThermalProfile,
    tolerance: float,
    min_rows: int,
) -> list[Pattern]:
    """The law verified on every task that reports its terms, and its violation if any."""
    columns = list(law.columns)
    rows = np.flatnonzero(present[:, columns].all(axis=1))
    terms = matrix.values[np.ix_(rows, columns)]
    residual = terms @ law.fit.coefficients - law.fit.constant
    holding = np.abs(residual) <= law.fit.threshold
    n_checked, n_holding = rows.size, int(holding.sum())
    if n_holding < min_rows or n_holding / n_checked < MIN_HOLDING_FRACTION:
        return []
    held = terms[holding]
    rms = float(np.sqrt(np.mean(residual[holding] ** 2)))
    scale = float(np.sqrt(np.sum(law.fit.coefficients**2 * held.var(axis=0))))
    relative = rms / scale if scale > 0 else math.inf
    local_relative = _local_relative_residual(held, law.fit.coefficients)
    if relative > tolerance or local_relative > LOCAL_TOLERANCE_FACTOR * tolerance:
        return []
    names = [matrix.metric_names[c] for c in columns]
    equation = _equation(names, law.fit.coefficients, law.integer, law.fit.constant, law.fit.threshold)
    lhs_key = _canonical_lhs(names, law.fit.coefficients, law.integer)
    holding_fraction = n_holding / n_checked
    coefficient_stats = {
        f"coef.{name}": (float(c) if law.integer else _round_significant(float(c)))
        for name, c in zip(names, law.fit.coefficients)
    }
    tightness = 1.0 - relative / tolerance
    confidence = (
        (0.6 + 0.4 * tightness) * (1.0 - math.exp(-n_holding / MIN_LAW_ROWS)) * (0.7 + 0.3 * holding_fraction)
    )
    exact = relative < 1e-9
    if n_holding == n_checked:
        where = f"all {n_checked} tasks"
    else:
        where = f"{n_holding} of {n_checked} tasks"
    fit_text = (
        "exactly" if exact else f"with a residual of {relative:.2%} of its terms' spread (tolerance {tolerance:.1%})"
    )
    law_pattern = Pattern(
        kind=PatternKind.CONSERVATION,
        description=f"{equation} holds {fit_text} on {where}",
        confidence=confidence,
        metrics=tuple(names),
        statistics={
            **coefficient_stats,
            "constant": law.fit.constant,
            "residual_rms": rms,
            "relative_residual": relative,
            "step_relative_residual": local_relative,
            "tolerance": tolerance,
            "tasks_checked": n_checked,
            "tasks_holding": n_holding,
            "holding_fraction": holding_fraction,
            "sample_size": law.sample_holding.size,
        },
        key=f"conservation:{lhs_key}",
    )
    patterns = [law_pattern]
    min_violators = max(3, profile.rate.min_tasks // 4)
    violating = ~holding
    if violating.sum() >= min_violators:
        patterns.append(
            _violation_pattern(
                matrix, rows, residual, holding, names, equation, lhs_key, coefficient_stats,
                law, tolerance, confidence, profile, min_rows,
            )
        )
    return patterns


def _violation_pattern(
    matrix: MetricMatrix,
    rows: np.ndarray,
    residual: np.ndarray,
    holding: np.ndarray,
    names: list[str],
    equation: str,
    lhs_key: str,
    coefficient_stats: dict[str, float],
    law: _Law,
    tolerance: float,
    law_confidence: float,
    profile: ThermalProfile,
    min_rows: int,
) -> Pattern:
    violating = np.flatnonzero(~holding)
    first, last = int(rows[violating[0]]), int(rows[violating[-1]])
    imbalance = residual[violating]
    mean_imbalance = float(imbalance.mean())
    worst = float(imbalance[np.argmax(np.abs(imbalance))])
    held_before = int(holding[: violating[0]].sum())
    threshold = law.fit.threshold
    ratio = float(np.mean(np.abs(imbalance))) / threshold
    confidence = law_confidence * (1.0 - 1.0 / max(ratio, 1.0)) * (1.0 - math.exp(-violating.size / 3.0))

    n_before = min(BEFORE_TASKS, profile.max_involved // 4) if held_before else 0
    before_rows = rows[np.flatnonzero(holding[: violating[0]])[-n_before:]] if n_before else np.zeros(0, np.intp)
    involved = matrix.involved(
        rows[violating], "violator", limit=profile.max_involved - before_rows.size, priority=np.abs(imbalance)
    ) + matrix.involved(before_rows, "before", limit=before_rows.size)

    size = f"off by {_format(mean_imbalance, threshold, signed=True)} on average " \
           f"(worst {_format(worst, threshold, signed=True)})"
    start = f"task {first} ({_when(matrix.timestamps[first])})"
    # "Held, then broke" only when the violators fill the period they span (not scattered glitches).
    contiguous = violating.size >= 0.5 * (violating[-1] - violating[0] + 1)
    if held_before >= min_rows and contiguous:
        span = f" through task {last}" if last != first else ""
        held_after = int(holding[violating[-1] + 1 :].sum())
        recovered = f"; it holds again on the {held_after} tasks after" if held_after >= min_rows else ""
        description = f"{equation} held for {held_before} tasks, then broke at {start}{span}: " \
                      f"{violating.size} tasks {size}{recovered}"
    else:
        description = f"{equation} is broken by {violating.size} of {rows.size} tasks, " \
                      f"from {start} to task {last}: {size}"
    # Which hosts, routes ... the violators share that the tasks where the law held do not.
    pool = np.zeros(matrix.n_tasks, dtype=bool)
    pool[rows] = True
    explanation = Explainer(matrix).over_represented(rows[violating], pool, "violators")
    return Pattern(
        kind=PatternKind.CONSERVATION_VIOLATION,
        description=description,
        explanation=explanation,
        confidence=confidence,
        metrics=tuple(names),
        statistics={
            **coefficient_stats,
            "constant": law.fit.constant,
            "violating_tasks": violating.size,
            "tasks_checked": rows.size,
            "tasks_held_before": held_before,
            "tasks_held_after": int(holding[violating[-1] + 1 :].sum()),
            "first_violation_index": first,
            "last_violation_index": last,
            "first_violation_timestamp": float(matrix.timestamps[first]),
            "last_violation_timestamp": float(matrix.timestamps[last]),
            "mean_imbalance": mean_imbalance,
            "max_abs_imbalance": abs(worst),
            "violation_threshold": threshold,
            "imbalance_ratio": ratio,
            "tolerance": tolerance,
        },
        involved=involved,
        key=f"conservation_violation:{lhs_key}",
    )


def _constant_notes(matrix: MetricMatrix, profile: ThermalProfile) -> list[Pattern]:
    """Metrics with one value on every task: constant by design, at most worth a note."""
    values = matrix.values
    counts = np.isfinite(values).sum(axis=0)
    with np.errstate(all="ignore"):
        low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
    notes = []
    for j in np.flatnonzero((counts >= profile.rate.min_tasks) & (low == high)):
        name, value = matrix.metric_names[j], float(low[j])
        notes.append(
            Pattern(
                kind=PatternKind.CONSTANT,
                description=f"{name} is {value:g} on all {int(counts[j])} tasks that report it "
                            f"(constant by design, not a conservation law)",
                confidence=CONSTANT_NOTE_CONFIDENCE,
                metrics=(name,),
                statistics={"value": value, "tasks_checked": int(counts[j])},
                key=f"constant:{name}",
            )
        )
    return notes


# ----------------------------------------------------------------- rendering


def _round_significant(value: float, digits: int = 3) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))


def _coefficient_text(value: float, integer: bool) -> str:
    if integer:
        return str(int(round(value)))
    return np.format_float_positional(_round_significant(value), trim="-")


def _terms_text(names: list[str], coefficients: np.ndarray, integer: bool) -> str:
    parts = []
    for position, (name, c) in enumerate(zip(names, coefficients)):
        magnitude = _coefficient_text(abs(float(c)), integer)
        term = name if magnitude == "1" else f"{magnitude}*{name}"
        if position == 0:
            parts.append(term if c >= 0 else f"-{term}")
        else:
            parts.append(f"{'-' if c < 0 else '+'} {term}")
    return " ".join(parts)


def _equation(names: list[str], coefficients: np.ndarray, integer: bool, constant: float, resolution: float) -> str:
    return f"{_terms_text(names, coefficients, integer)} = {_format(constant, resolution)}"


def _canonical_lhs(names: list[str], coefficients: np.ndarray, integer: bool) -> str:
    """Terms sorted by name, leading coefficient positive (1 unless integer): stable across cools.

    The constant is left out: a noisy law's fitted constant wobbles from cool to cool.
    """
    order = sorted(range(len(names)), key=lambda i: names[i])
    sorted_names = [names[i] for i in order]
    sorted_coefficients = coefficients[order]
    if integer:
        sorted_coefficients = sorted_coefficients * np.sign(sorted_coefficients[0])
    else:
        sorted_coefficients = sorted_coefficients / sorted_coefficients[0]
    return _terms_text(sorted_names, sorted_coefficients, integer)


def _format(value: float, resolution: float, signed: bool = False) -> str:
    """``value`` rounded to the decimal just below ``resolution`` (so exact laws read "= 0", "= 1000")."""
    if resolution > 0 and abs(value) <= resolution:
        value = 0.0
    if resolution > 0 and math.isfinite(resolution):
        decimals = max(0, -int(math.floor(math.log10(resolution))))
        text = f"{value:.{min(decimals, 6)}f}"
    else:
        text = f"{value:.6g}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    if signed and not text.startswith("-") and text != "0":
        text = "+" + text
    return text


def _when(timestamp: float) -> str:
    if not math.isfinite(timestamp):
        return "unknown time"
    try:
        moment = datetime.fromtimestamp(float(timestamp), tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return f"t={timestamp:g}"
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
