"""Correlation and lead/lag between pairs of metrics.

Three kinds of dependence, every test of every pair in one Benjamini-Hochberg
family at ``profile.rate.significance`` (so 50 noise metrics stay quiet):

* **linear / monotone** (CORRELATION): Pearson r and Spearman rho, t-test on the
  coefficient, reported when |r| or |rho| >= ``min_abs_correlation``;
* **non-linear** (CORRELATION, method "mutual information"): mutual information
  of equal-frequency bins with a G-test, reported only when r and rho are weak
  and the bias-corrected normalised MI >= ``min_normalized_mi`` (y = x^2, sin x);
* **lead/lag** (LEAD_LAG): in time order, the lag k in 1..K at which the rank
  correlation of a_t with b_{t+k} peaks, reported when it is significant and
  clearly stronger than at lag 0 and than in the reverse direction; transfer
  entropy both ways is given as supporting evidence.

Counters and IDs are skipped: they correlate with time, hence with every trend.
Slowly drifting metrics are autocorrelated, which makes independent drifts look
significantly correlated; every test therefore uses the effective sample size
n (1 - a1 b1) / (1 + a1 b1) of two AR(1) series with lag-1 autocorrelations
a1, b1 (Bretherton et al. 1999), capped so that strongly coupled trends (a
latency and its p99 during a ramp) stay detectable.

Tasks may carry different metric sets, so every pair uses the tasks that carry
both (NaN = absent). All pairs are computed at once from presence-masked
matrix products, exact for Pearson whatever the presence patterns. Ranks are
taken per metric over the tasks that carry it, so Spearman is exact when both
metrics are present on the same tasks and a close approximation otherwise.
Rank and MI statistics use at most ``RANK_SAMPLE`` evenly spaced tasks, lead/lag
the most recent ``LAG_WINDOW`` tasks (contiguous: lags need neighbours); the
patterns say so in ``sample_size``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import false_discovery_control, norm
from scipy.stats import t as student_t

from .. import information
from ..matrix import MetricMatrix
from ..patterns import InvolvedTask, Pattern, PatternKind
from ..profile import ThermalProfile
from ._interrupt import checkpoint
from ._stats import benjamini_hochberg, counter_columns, even_sample, median, usable_columns

MIN_PAIRED_TASKS = 10  # fewest shared tasks for a correlation test
MIN_MI_TASKS = 50  # gives at least 3 bins per metric (information.bin_count)
RANK_SAMPLE = 20_000  # rank and MI statistics: evenly spaced tasks beyond this
LAG_WINDOW = 20_000  # lead/lag: the most recent tasks beyond this
MAX_LAG = 10
TASKS_PER_LAG = 20  # K = min(MAX_LAG, window / 20): every lag keeps plenty of aligned pairs
LEAD_MARGIN = 0.10  # |rho at the lag| must beat lag 0 and the reverse direction by this much
NONLINEAR_GAP = 0.15  # |rho| - |r| beyond this reads as "monotonic but not linear"
MAX_AUTOCORRELATION_PRODUCT = 0.99  # keeps the effective sample size >= n / 200
EVIDENCE_DECADES = 4.0  # q this many decades below the significance level counts as full evidence

_TESTS = ("pearson", "spearman", "mutual_information", "lead_lag")


# ------------------------------------------------------------------ views
@dataclass
class _View:
    """Some rows of the usable columns as scores: z-scores or standardised ranks, NaN = absent."""

    rows: np.ndarray  # matrix rows, time order
    scores: np.ndarray  # (len(rows), n_columns)

    @property
    def size(self) -> int:
        return self.rows.size


@dataclass
class _Lead:
    leader_first: bool  # True: the pair's first metric leads the second
    lag: int
    rho_lag: float
    rho_zero: float
    rho_reverse: float
    n: int
    effective_n: float
    max_lag: int
    p_value: float


@dataclass
class _Pair:
    i: int  # positions in the usable columns
    j: int
    n: int
    pearson: float
    spearman: float
    effective_n: float
    rank_n: int  # tasks behind spearman (the sample)
    mi_bits: float = math.nan  # bias-corrected
    normalized_mi: float = math.nan
    mi_n: int = 0
    lead: _Lead | None = None
    p: dict[str, float] = field(default_factory=dict)
    q: dict[str, float] = field(default_factory=dict)
    significant: dict[str, bool] = field(default_factory=dict)


@dataclass
class _Evidence:
    """Everything the patterns of one cool need."""

    matrix: MetricMatrix
    columns: np.ndarray  # usable matrix column indices
    linear: _View  # z-scores, every row
    ranks: _View  # standardised ranks, evenly spaced sample
    codes: list[np.ndarray | None]  # equal-frequency bin codes on the sample, -1 = absent
    window: _View  # standardised ranks, the most recent contiguous rows

    def name(self, position: int) -> str:
        return self.matrix.metric_names[self.columns[position]]


def detect(matrix: MetricMatrix, profile: ThermalProfile) -> list[Pattern]:
    """CORRELATION and LEAD_LAG patterns between the matrix's metrics."""
    min_rows = max(profile.rate.min_tasks, MIN_PAIRED_TASKS)
    candidates = usable_columns(matrix.values, min_rows)
    columns = candidates[~counter_columns(matrix.values[:, candidates])]
    if columns.size < 2:
        return []
    evidence, pairs = _evaluate(matrix, columns, min_rows, profile)
    _control_false_discoveries(pairs, profile.rate.significance)
    patterns = []
    for pair in pairs:
        checkpoint()
        pattern = _lead_lag_pattern(evidence, pair, profile) or _correlation_pattern(evidence, pair, profile)
        if pattern is not None:
            patterns.append(pattern)
    return patterns


# --------------------------------------------------------------- evidence
def _evaluate(
    matrix: MetricMatrix, columns: np.ndarray, min_rows: int, profile: ThermalProfile
) -> tuple[_Evidence, list[_Pair]]:
    data = matrix.values[:, columns]
    n_rows = data.shape[0]
    all_rows = np.arange(n_rows)

    # Linear: Pearson on every task that carries both metrics.
    linear = _View(all_rows, _standardize(data))
    pearson, shared = _pairwise_correlation(linear.scores, linear.scores)
    checkpoint()
    autocorrelation = _lag1_autocorrelation(linear.scores)

    # Monotone: Spearman on an evenly spaced sample.
    sample = even_sample(np.arange(n_rows), RANK_SAMPLE)
    ranks = _View(sample, _standardize(_average_ranks(data[sample])))
    spearman, rank_shared = _pairwise_correlation(ranks.scores, ranks.scores)
    checkpoint()
    rank_autocorrelation = _lag1_autocorrelation(ranks.scores)

    # Lead/lag on the most recent contiguous tasks (the sample itself when that is every task).
    window_rows = all_rows[max(0, n_rows - LAG_WINDOW) :]
    if sample.size == n_rows and window_rows.size == n_rows:
        window = ranks
    else:
        window = _View(window_rows, _standardize(_average_ranks(data[window_rows])))

    codes = [_equal_frequency_codes(ranks.scores[:, c]) for c in range(columns.size)]
    evidence = _Evidence(matrix, columns, linear, ranks, codes, window)

    first, second = np.triu_indices(columns.size, k=1)
    keep = shared[first, second] >= min_rows
    first, second = first[keep], second[keep]
    n = shared[first, second]
    effective_n = _effective_n(n, autocorrelation[first], autocorrelation[second])
    p_pearson = _correlation_p(pearson[first, second], effective_n)
    rank_n = rank_shared[first, second]
    rank_effective_n = _effective_n(rank_n, rank_autocorrelation[first], rank_autocorrelation[second])
    p_spearman = _correlation_p(spearman[first, second], rank_effective_n)
    leads = _lead_lags(window.scores, first, second, min_rows)

    pairs = []
    for index, (i, j) in enumerate(zip(first.tolist(), second.tolist())):
        checkpoint()
        pair = _Pair(
            i=i,
            j=j,
            n=int(n[index]),
            pearson=float(pearson[i, j]),
            spearman=float(spearman[i, j]),
            effective_n=float(effective_n[index]),
            rank_n=int(rank_n[index]),
            lead=leads[index] if leads else None,
        )
        pair.p["pearson"] = float(p_pearson[index])
        pair.p["spearman"] = float(p_spearman[index])
        if codes[i] is not None and codes[j] is not None:
            effective_fraction = float(rank_effective_n[index] / max(rank_n[index], 1))
            _add_mutual_information(pair, codes[i], codes[j], effective_fraction, profile)
        if pair.lead is not None:
            pair.p["lead_lag"] = pair.lead.p_value
        pairs.append(pair)
    return evidence, pairs


def _add_mutual_information(
    pair: _Pair, codes_a: np.ndarray, codes_b: np.ndarray, effective_fraction: float, profile: ThermalProfile
) -> None:
    both = (codes_a >= 0) & (codes_b >= 0)
    cx, cy = codes_a[both], codes_b[both]
    n = cx.size
    if n < MIN_MI_TASKS:
        return
    kx, ky = int(cx.max()) + 1, int(cy.max()) + 1
    counts_x, counts_y = np.bincount(cx, minlength=kx), np.bincount(cy, minlength=ky)
    # Only bins these tasks use count as degrees of freedom (ties or absences can empty some).
    used_x, used_y = int(np.count_nonzero(counts_x)), int(np.count_nonzero(counts_y))
    if used_x < 2 or used_y < 2:
        return
    plug_in = information.mutual_information_codes(cx, kx, cy, ky)
    # Independent variables still show ~(kx-1)(ky-1)/(2 n ln 2) bits (Miller-Madow): the
    # G-test allows for it, the effect size must not include it.
    corrected = max(0.0, plug_in - (used_x - 1) * (used_y - 1) / (2.0 * n * math.log(2.0)))
    smaller_entropy = min(_entropy_bits(counts_x), _entropy_bits(counts_y))
    pair.mi_bits = corrected
    pair.normalized_mi = corrected / smaller_entropy if smaller_entropy > 0 else 0.0
    pair.mi_n = n
    if pair.normalized_mi < profile.rate.min_normalized_mi:
        # Too weak to report whatever its p-value; it still counts in the family, as p = 1 (conservative).
        pair.p["mutual_information"] = 1.0
        return
    # Williams' correction: the plain G-test rejects ~1.5x too often on tables this sparse.
    nonzero_x, nonzero_y = counts_x[counts_x > 0], counts_y[counts_y > 0]
    williams = 1.0 + (n * np.sum(1.0 / nonzero_x) - 1.0) * (n * np.sum(1.0 / nonzero_y) - 1.0) / (
        6.0 * n * (used_x - 1) * (used_y - 1)
    )
    effective_n = max(1, round(n * effective_fraction))
    pair.p["mutual_information"] = information.mi_significance(plug_in / williams, effective_n, used_x, used_y)


def _lead_lags(w: np.ndarray, first: np.ndarray, second: np.ndarray, min_rows: int) -> list[_Lead]:
    """Best lag per pair, either direction: corr(i_t, j_{t+k}) or corr(j_t, i_{t+k})."""
    size = w.shape[0]
    max_lag = min(MAX_LAG, size // TASKS_PER_LAG)
    if max_lag < 1 or first.size == 0:
        return []
    m = w.shape[1]
    lagged = np.empty((max_lag, m, m))
    aligned = np.empty((max_lag, m, m))
    for k in range(1, max_lag + 1):
        checkpoint()
        lagged[k - 1], aligned[k - 1] = _pairwise_correlation(w[:-k], w[k:])
    lagged[aligned < min_rows] = np.nan
    forward, backward = lagged[:, first, second], lagged[:, second, first]
    pair_index = np.arange(first.size)
    best_forward = _nan_argmax_abs(forward)
    best_backward = _nan_argmax_abs(backward)
    rho_forward = forward[best_forward, pair_index]
    rho_backward = backward[best_backward, pair_index]
    leader_first = ~(np.abs(rho_backward) > np.abs(rho_forward))
    lag = np.where(leader_first, best_forward, best_backward) + 1
    rho_lag = np.where(leader_first, rho_forward, rho_backward)
    rho_reverse = np.where(leader_first, rho_backward, rho_forward)
    rho_zero = _pairwise_correlation(w, w)[0][first, second]
    n = np.where(leader_first, aligned[lag - 1, first, second], aligned[lag - 1, second, first])
    autocorrelation = _lag1_autocorrelation(w)
    effective_n = _effective_n(n, autocorrelation[first], autocorrelation[second])
    rival = np.fmax(np.abs(rho_zero), np.abs(rho_reverse))
    p_value = _lead_p(rho_lag, np.nan_to_num(rival), effective_n, max_lag)
    return [
        _Lead(
            leader_first=bool(leader_first[index]),
            lag=int(lag[index]),
            rho_lag=float(rho_lag[index]),
            rho_zero=float(rho_zero[index]),
            rho_reverse=float(rho_reverse[index]),
            n=int(n[index]),
            effective_n=float(effective_n[index]),
            max_lag=max_lag,
            p_value=float(p_value[index]),
        )
        for index in range(first.size)
    ]


def _lead_p(rho_lag: np.ndarray, rival: np.ndarray, effective_n: np.ndarray, max_lag: int) -> np.ndarray:
    """Both must hold (intersection-union test, so the larger p-value): the peak is non-zero
    (Bonferroni over the 2K lags searched) and it beats its best rival (lag 0 or reversed)."""
    peak = np.minimum(1.0, 2 * max_lag * _correlation_p(rho_lag, effective_n))
    # Fisher z difference with the independent-samples error: conservative for these overlapping samples.
    with np.errstate(invalid="ignore"):
        gap = np.arctanh(np.minimum(np.abs(rho_lag), 0.999999)) - np.arctanh(np.minimum(rival, 0.999999))
        beats_rival = norm.sf(gap / np.sqrt(2.0 / np.maximum(effective_n - 3.0, 1.0)))
    return np.nan_to_num(np.maximum(peak, beats_rival), nan=1.0)


def _control_false_discoveries(pairs: list[_Pair], significance: float) -> None:
    """One Benjamini-Hochberg family over every test of every pair."""
    entries = [(pair, test) for pair in pairs for test in _TESTS if test in pair.p and math.isfinite(pair.p[test])]
    if not entries:
        return
    p_values = np.array([pair.p[test] for pair, test in entries])
    q_values = false_discovery_control(np.clip(p_values, 0.0, 1.0), method="bh")
    passed = benjamini_hochberg(p_values, significance)
    for (pair, test), q, ok in zip(entries, q_values, passed):
        pair.q[test] = float(q)
        pair.significant[test] = bool(ok)


# --------------------------------------------------------------- patterns
def _correlation_pattern(evidence: _Evidence, pair: _Pair, profile: ThermalProfile) -> Pattern | None:
    rate = profile.rate
    linear = pair.significant.get("pearson", False) and abs(pair.pearson) >= rate.min_abs_correlation
    monotone = pair.significant.get("spearman", False) and abs(pair.spearman) >= rate.min_abs_correlation
    if linear or monotone:
        return _monotone_pattern(evidence, pair, profile, linear, monotone)
    if pair.significant.get("mutual_information", False) and pair.normalized_mi >= rate.min_normalized_mi:
        return _mutual_information_pattern(evidence, pair, profile)
    return None


def _monotone_pattern(
    evidence: _Evidence, pair: _Pair, profile: ThermalProfile, linear: bool, monotone: bool
) -> Pattern:
    r, rho = pair.pearson, pair.spearman
    a, b = sorted((evidence.name(pair.i), evidence.name(pair.j)))
    by_rank = monotone and (not linear or abs(rho) - abs(r) > NONLINEAR_GAP)
    test = "spearman" if by_rank else "pearson"
    coefficient = rho if by_rank else r
    direction = "rise and fall together" if coefficient > 0 else "move in opposite directions"
    figures = f"n={pair.n}, {_format_p(pair.p[test])}"
    strength = abs(coefficient)
    if by_rank and abs(rho) - abs(r) > NONLINEAR_GAP:
        shape = f", monotonically but not linearly (Spearman {_coefficient(rho)}, r={_coefficient(r)}, {figures})"
    elif not monotone and abs(r) - abs(rho) > NONLINEAR_GAP:
        # A Pearson r the ranks do not confirm is carried by a minority of extreme tasks.
        shape = (
            f", but mostly through a minority of extreme tasks "
            f"(r={_coefficient(r)}, Spearman only {_coefficient(rho)}, {figures})"
        )
        strength = math.sqrt(abs(r) * abs(np.nan_to_num(rho)))
    else:
        shape = f" (r={_coefficient(r)}, Spearman {_coefficient(rho)}, {figures})"
    view = evidence.ranks if by_rank else evidence.linear
    contribution = view.scores[:, pair.i] * view.scores[:, pair.j] * np.sign(coefficient)
    statistics = {
        "pearson_r": r,
        "spearman_rho": rho,
        "p_value": pair.p[test],
        "q_value": pair.q[test],
        "n": pair.n,
    }
    if pair.effective_n < 0.99 * pair.n:
        statistics["effective_n"] = pair.effective_n
    if pair.rank_n < pair.n:
        statistics["sample_size"] = pair.rank_n
    if not math.isnan(pair.mi_bits):
        statistics.update(mutual_information_bits=pair.mi_bits, normalized_mi=pair.normalized_mi)
    statistics.update(significance=profile.rate.significance, min_abs_correlation=profile.rate.min_abs_correlation)
    return Pattern(
        kind=PatternKind.CORRELATION,
        description=f"{a} and {b} {direction}{shape}",
        confidence=strength * _evidence_weight(pair.q[test], profile.rate.significance),
        metrics=(a, b),
        statistics=statistics,
        involved=_carriers(evidence.matrix, view.rows, contribution, "carrier", profile.max_involved),
        # Carriers: tasks where both metrics sit far from their centres in the direction of r.
        explanation={"method": "spearman" if by_rank else "pearson"},
        key=f"correlation:{a}|{b}",
    )


def _mutual_information_pattern(evidence: _Evidence, pair: _Pair, profile: ThermalProfile) -> Pattern:
    a, b = sorted((evidence.name(pair.i), evidence.name(pair.j)))
    test = "mutual_information"
    description = (
        f"{a} and {b} depend on each other non-linearly, beyond what a line or monotone curve explains "
        f"(normalised MI {pair.normalized_mi:.2f}, {pair.mi_bits:.2f} bits, while r={_coefficient(pair.pearson)} "
        f"and Spearman {_coefficient(pair.spearman)}; n={pair.mi_n}, {_format_p(pair.p[test])})"
    )
    # Linfoot's informational correlation: the |r| of a Gaussian pair sharing this much information.
    strength = math.sqrt(1.0 - 2.0 ** (-2.0 * pair.mi_bits))
    codes_a, codes_b = evidence.codes[pair.i], evidence.codes[pair.j]
    statistics = {
        "mutual_information_bits": pair.mi_bits,
        "normalized_mi": pair.normalized_mi,
        "p_value": pair.p[test],
        "q_value": pair.q[test],
        "pearson_r": pair.pearson,
        "spearman_rho": pair.spearman,
        "n": pair.n,
    }
    if pair.mi_n < pair.n:
        statistics["sample_size"] = pair.mi_n
    statistics.update(significance=profile.rate.significance, min_normalized_mi=profile.rate.min_normalized_mi)
    return Pattern(
        kind=PatternKind.CORRELATION,
        description=description,
        confidence=strength * _evidence_weight(pair.q[test], profile.rate.significance),
        metrics=(a, b),
        statistics=statistics,
        involved=_carriers(
            evidence.matrix,
            evidence.ranks.rows,
            _pointwise_mutual_information(codes_a, codes_b),
            "carrier",
            profile.max_involved,
        ),
        # Carriers: tasks in the value combinations far more frequent than independence predicts.
        explanation={"method": "mutual information"},
        key=f"correlation:{a}|{b}",
    )


def _lead_lag_pattern(evidence: _Evidence, pair: _Pair, profile: ThermalProfile) -> Pattern | None:
    lead = pair.lead
    rate = profile.rate
    if lead is None or not pair.significant.get("lead_lag", False):
        return None
    rival = max(abs(lead.rho_zero), abs(lead.rho_reverse))
    if abs(lead.rho_lag) < rate.min_abs_correlation or abs(lead.rho_lag) - rival < LEAD_MARGIN:
        return None
    i, j = (pair.i, pair.j) if lead.leader_first else (pair.j, pair.i)
    leader, follower = evidence.name(i), evidence.name(j)
    k = lead.lag
    window = evidence.window
    te_forward, te_reverse = _transfer_entropies(window.scores[:, i], window.scores[:, j], k)
    steps = np.diff(evidence.matrix.timestamps[window.rows])
    lag_seconds = float(median(steps)) * k if steps.size else 0.0
    when = f" (~{_format_duration(lag_seconds)})" if lag_seconds > 0 else ""
    inversely = ", inversely" if lead.rho_lag < 0 else ""
    transfer = f"; TE {te_forward:.2f} vs {te_reverse:.2f} bits" if math.isfinite(te_forward) else ""
    description = (
        f"{leader} leads {follower} by {k} task{'s' if k > 1 else ''}{when}{inversely}: "
        f"Spearman {_coefficient(lead.rho_lag)} at lag {k} vs {_coefficient(lead.rho_zero)} at lag 0 "
        f"and {_coefficient(lead.rho_reverse)} reversed"
        f"{transfer} (n={lead.n}, {_format_p(pair.p['lead_lag'])})"
    )
    dominance = 1.0 - rival / abs(lead.rho_lag)
    confidence = abs(lead.rho_lag) * (0.5 + 0.5 * dominance) * _evidence_weight(pair.q["lead_lag"], rate.significance)
    contribution = window.scores[:-k, i] * window.scores[k:, j] * np.sign(lead.rho_lag)
    pair_limit = max(1, profile.max_involved // 2)
    involved = _carriers(evidence.matrix, window.rows[:-k], contribution, "leader", pair_limit) + _carriers(
        evidence.matrix, window.rows[k:], contribution, "follower", pair_limit
    )
    statistics = {
        "lag": k,
        "lag_seconds": lag_seconds,
        "spearman_at_lag": lead.rho_lag,
        "spearman_at_lag0": lead.rho_zero,
        "spearman_reversed": lead.rho_reverse,
        "transfer_entropy_bits": te_forward,
        "reverse_transfer_entropy_bits": te_reverse,
        "p_value": pair.p["lead_lag"],
        "q_value": pair.q["lead_lag"],
        "n": lead.n,
        "max_lag_tested": lead.max_lag,
    }
    if lead.effective_n < 0.99 * lead.n:
        statistics["effective_n"] = lead.effective_n
    if window.size < evidence.matrix.n_tasks:
        statistics["sample_size"] = window.size
    statistics.update(significance=rate.significance, min_abs_correlation=rate.min_abs_correlation)
    return Pattern(
        kind=PatternKind.LEAD_LAG,
        description=description,
        confidence=confidence,
        metrics=(leader, follower),
        statistics=statistics,
        involved=involved[: profile.max_involved],
        # Leaders and the tasks k later (followers) where the two metrics move together the most.
        explanation={"method": "lagged rank correlation, transfer entropy"},
        key=f"lead_lag:{leader}>{follower}",
    )


def _transfer_entropies(leader: np.ndarray, follower: np.ndarray, lag: int) -> tuple[float, float]:
    """TE leader -> follower and back, on the tasks that carry both (NaN when too few)."""
    both = np.isfinite(leader) & np.isfinite(follower)
    x, y = leader[both], follower[both]
    if x.size < lag + 3:
        return math.nan, math.nan
    return information.transfer_entropy(x, y, lag=lag), information.transfer_entropy(y, x, lag=lag)


def _carriers(
    matrix: MetricMatrix, rows: np.ndarray, contribution: np.ndarray, role: str, limit: int
) -> tuple[InvolvedTask, ...]:
    """Tasks with a positive contribution, the largest first, at most ``limit`` (in time order)."""
    positive = np.flatnonzero(contribution > 0)  # NaN (absent) compares False
    if positive.size > limit:
        # argpartition is linear; matrix.involved would sort every candidate.
        positive = np.sort(positive[np.argpartition(-contribution[positive], limit - 1)[:limit]])
    return matrix.involved(rows[positive], role, limit, priority=contribution[positive])


def _evidence_weight(q_value: float, significance: float) -> float:
    """0.6 at the significance level, rising to 1 when q is EVIDENCE_DECADES decades below it."""
    decades = math.log10(significance / max(q_value, 1e-300))
    return 0.6 + 0.4 * min(1.0, max(0.0, decades / EVIDENCE_DECADES))


def _coefficient(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "n/a"


def _format_p(p: float) -> str:
    if p < 1e-12:
        return "p<1e-12"
    if p < 1e-3:
        return f"p={p:.0e}"
    return f"p={p:.3f}"


def _format_duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120.0:
        return f"{seconds:.1f} s"
    if seconds < 7200.0:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# ------------------------------------------------------------ statistics
def _standardize(data: np.ndarray) -> np.ndarray:
    """Columns as z-scores over their present values; NaN stays NaN, constant columns become 0."""
    with np.errstate(all="ignore"):
        mean = np.nanmean(data, axis=0)
        std = np.nanstd(data, axis=0)
    std = np.where(np.isfinite(std) & (std > 0), std, np.inf)
    return (data - np.nan_to_num(mean)) / std


def _pairwise_correlation(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson r of a[:, i] with b[:, j] over the rows where both are present, for every i, j.

    Presence-masked sums turn all pairs into six matrix products, exact for any
    pattern of absent values. Inputs should be roughly standardised, which keeps
    the sums free of cancellation. Returns (r, number of shared rows); r is NaN
    where fewer than 3 rows are shared or one side is constant on them.
    """
    present_a, present_b = np.isfinite(a), np.isfinite(b)
    if present_a.all() and present_b.all():
        return _complete_correlation(a, b)
    a0, b0 = np.where(present_a, a, 0.0), np.where(present_b, b, 0.0)
    fa, fb = present_a.astype(float), present_b.astype(float)
    n = fa.T @ fb
    sum_a, sum_b = a0.T @ fb, fa.T @ b0
    with np.errstate(all="ignore"):
        var_a = (a0 * a0).T @ fb - sum_a * sum_a / n
        var_b = fa.T @ (b0 * b0) - sum_b * sum_b / n
        cov = a0.T @ b0 - sum_a * sum_b / n
        r = cov / np.sqrt(var_a * var_b)
    # A variance this small relative to n is rounding noise on a constant.
    degenerate = (n < 3) | (var_a <= 1e-9 * n) | (var_b <= 1e-9 * n)
    r = np.where(degenerate, np.nan, np.clip(r, -1.0, 1.0))
    return r, n.round().astype(np.int64)


def _complete_correlation(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``_pairwise_correlation`` when nothing is absent: one matrix product."""
    n = a.shape[0]
    centred_a, centred_b = a - a.mean(axis=0), b - b.mean(axis=0)
    norm_a = np.sqrt(np.einsum("ij,ij->j", centred_a, centred_a))
    norm_b = np.sqrt(np.einsum("ij,ij->j", centred_b, centred_b))
    with np.errstate(all="ignore"):
        r = (centred_a.T @ centred_b) / np.outer(norm_a, norm_b)
    degenerate = (norm_a[:, None] ** 2 <= 1e-9 * n) | (norm_b[None, :] ** 2 <= 1e-9 * n) | (n < 3)
    r = np.where(degenerate, np.nan, np.clip(r, -1.0, 1.0))
    return r, np.full(r.shape, n, dtype=np.int64)


def _lag1_autocorrelation(scores: np.ndarray) -> np.ndarray:
    """Lag-1 autocorrelation of each column over the tasks that carry it, in time order."""
    result = np.zeros(scores.shape[1])
    for c in range(scores.shape[1]):
        checkpoint()
        column = scores[:, c]
        column = column[np.isfinite(column)]
        if column.size >= 3:
            centred = column - column.mean()
            denominator = float(np.dot(centred, centred))
            if denominator > 0:
                result[c] = float(np.dot(centred[:-1], centred[1:])) / denominator
    return result


def _effective_n(n, autocorrelation_a, autocorrelation_b):
    """Sample size of two AR(1) series worth of independent pairs (Bretherton et al. 1999)."""
    product = np.clip(np.asarray(autocorrelation_a) * np.asarray(autocorrelation_b), 0.0, MAX_AUTOCORRELATION_PRODUCT)
    return np.maximum(3.0, n * (1.0 - product) / (1.0 + product))


def _correlation_p(r: np.ndarray, effective_n: np.ndarray) -> np.ndarray:
    """Two-sided p-value of a correlation coefficient (t-test with n - 2 degrees of freedom); NaN r -> NaN."""
    df = np.maximum(np.asarray(effective_n, dtype=float) - 2.0, 1.0)
    r_squared = np.minimum(np.square(r), 1.0 - 1e-16)
    with np.errstate(invalid="ignore"):
        t_statistic = np.abs(r) * np.sqrt(df / (1.0 - r_squared))
        return np.minimum(1.0, 2.0 * student_t.sf(t_statistic, df))


def _nan_argmax_abs(values: np.ndarray) -> np.ndarray:
    """Row of the largest |value| in each column, ignoring NaN (0 for an all-NaN column)."""
    return np.argmax(np.nan_to_num(np.abs(values), nan=-1.0), axis=0)


def _average_ranks(data: np.ndarray) -> np.ndarray:
    """Ranks per column over its present values (1..count), ties sharing their average rank; NaN stays."""
    ranks = np.full(data.shape, np.nan)
    for c in range(data.shape[1]):
        checkpoint()
        present = np.flatnonzero(np.isfinite(data[:, c]))
        values = data[present, c]
        order = np.argsort(values, kind="stable")
        ordered = values[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        ends = np.r_[starts[1:], ordered.size]
        ranks[present[order], c] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def _equal_frequency_codes(ranks: np.ndarray) -> np.ndarray | None:
    """Bin codes of equal-width bins over ranks (= equal-frequency bins of the values); -1 = absent.

    Heavy tails would leave most equal-width bins of the values empty; ranks do not.
    """
    present = np.isfinite(ranks)
    count = int(present.sum())
    if count < MIN_MI_TASKS:
        return None
    codes = np.full(ranks.size, -1, dtype=np.intp)
    codes[present], _ = information.discretize(ranks[present])
    return codes


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-np.dot(p, np.log2(p)))


def _pointwise_mutual_information(codes_a: np.ndarray, codes_b: np.ndarray) -> np.ndarray:
    """log2 p(x, y) / (p(x) p(y)) of each task's cell (NaN where a metric is absent):
    high where the dependence lives."""
    both = (codes_a >= 0) & (codes_b >= 0)
    cx, cy = codes_a[both], codes_b[both]
    kx, ky = int(cx.max()) + 1, int(cy.max()) + 1
    joint = np.bincount(cx * ky + cy, minlength=kx * ky).reshape(kx, ky)
    px, py = joint.sum(axis=1), joint.sum(axis=0)
    result = np.full(codes_a.size, np.nan)
    result[both] = np.log2(joint[cx, cy] * cx.size / (px[cx] * py[cy]))
    return result
