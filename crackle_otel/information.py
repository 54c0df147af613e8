"""Information theory over metric columns: entropy, mutual information, divergences,
transfer entropy and permutation entropy. Every quantity is in bits.

Estimators are plug-in (maximum likelihood) over equal-width histograms: count,
normalise, sum ``-p log2 p``. They are fast (one ``np.bincount`` per table) and
exact for discrete data, but biased upwards for MI on continuous data: with
``kx`` and ``ky`` bins and ``n`` samples, independent variables still show about
``(kx - 1)(ky - 1) / (2 n ln 2)`` bits (Miller-Madow). The default bin count is
chosen to keep that bias small.

Default binning rule (``bin_count``)::

    k = min(ceil(log2 n) + 1, floor(sqrt(n / 5))), clipped to [2, 64]

* ``ceil(log2 n) + 1`` is Sturges' rule: it grows slowly, so at large ``n`` the
  bias above vanishes (n = 100 000 -> 18 bins -> ~0.002 bits).
* ``sqrt(n / 5)`` keeps at least ~5 expected samples per cell of the ``k x k``
  joint table (Cochran's rule for chi-square tables), which matters at small
  ``n`` where Sturges alone would give a table too sparse for a trustworthy MI
  (n = 100 -> 4 bins instead of 8; bias ~0.06 instead of ~0.35 bits).
* at least 2 bins so that a dependence is expressible at all; at most 64 so that
  joint tables stay small.

Transfer entropy works on a three-way table (``k^3`` cells), so its default uses
the cube-root analogue ``floor((n / 5) ** (1/3))`` as the second bound.

Inputs must be finite: NaN or inf raise ``ValueError`` (callers drop absent
values first). Empty inputs and length mismatches raise ``ValueError`` too.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.stats import chi2

__all__ = [
    "bin_count",
    "discretize",
    "entropy",
    "joint_entropy",
    "mutual_information",
    "normalized_mutual_information",
    "mutual_information_codes",
    "conditional_mutual_information_codes",
    "mi_significance",
    "shared_histograms",
    "kl_divergence",
    "jsd",
    "transfer_entropy",
    "permutation_entropy",
]

MIN_BINS = 2
MAX_BINS = 64
_MIN_PER_CELL = 5  # Cochran: expected count per joint-table cell
_MAX_DENSE_CELLS = 1 << 22  # above this, count joint cells with np.unique instead of a dense bincount
_MAX_PERMUTATION_ORDER = 10  # 10! patterns already need ~10^7 samples to estimate


# ------------------------------------------------------------------ validation
def _finite_vector(x, name: str = "x") -> np.ndarray:
    values = np.asarray(x, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {values.shape}")
    if values.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or inf; drop absent values before computing information measures")
    return values


def _same_length(x: np.ndarray, y: np.ndarray, names: str = "x and y") -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{names} must have the same length, got {x.shape[0]} and {y.shape[0]}")


def _check_bins(bins) -> int | None:
    if bins is None:
        return None
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer or None, got {bins!r}")
    return int(bins)


def _codes_vector(codes, n_bins: int, name: str) -> np.ndarray:
    array = np.asarray(codes)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer codes, got dtype {array.dtype}")
    if n_bins < 1:
        raise ValueError(f"the bin count for {name} must be at least 1, got {n_bins}")
    if array.min() < 0 or array.max() >= n_bins:
        raise ValueError(f"{name} must hold codes in [0, {n_bins - 1}]")
    return array.astype(np.intp, copy=False)


# --------------------------------------------------------------------- binning
def bin_count(n: int) -> int:
    """Default number of equal-width bins for ``n`` samples (see the module docstring)."""
    if n < 1:
        raise ValueError(f"need at least one sample to choose a bin count, got {n}")
    sturges = math.ceil(math.log2(n)) + 1
    cochran = math.floor(math.sqrt(n / _MIN_PER_CELL))
    return int(min(max(min(sturges, cochran), MIN_BINS), MAX_BINS))


def _three_way_bin_count(n: int) -> int:
    sturges = math.ceil(math.log2(n)) + 1
    cochran = math.floor((n / _MIN_PER_CELL) ** (1.0 / 3.0))
    return int(min(max(min(sturges, cochran), MIN_BINS), MAX_BINS))


def _codes_between(values: np.ndarray, low: float, high: float, n_bins: int) -> np.ndarray:
    """Equal-width codes over [low, high]; the top edge belongs to the last bin."""
    if n_bins == 1 or high <= low:
        return np.zeros(values.shape[0], dtype=np.intp)
    width = high - low
    if not math.isfinite(width):  # range wider than float64: halve everything first
        values, low, width = values * 0.5, low * 0.5, high * 0.5 - low * 0.5
    scaled = (values - low) / width * n_bins  # divide first: n_bins / width may underflow
    codes = scaled.astype(np.intp)
    np.minimum(codes, n_bins - 1, out=codes)
    np.maximum(codes, 0, out=codes)  # guards rounding just below ``low``
    return codes


def discretize(x, bins: int | None = None) -> tuple[np.ndarray, int]:
    """Equal-width bin codes ``0..n_bins-1`` of ``x`` over ``[min(x), max(x)]``.

    ``bins=None`` uses ``bin_count(len(x))``. A constant series gets one bin.
    Returns ``(codes, n_bins)``; ``codes`` is an intp array.
    """
    values = _finite_vector(x)
    n_bins = _check_bins(bins) or bin_count(values.size)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.size, dtype=np.intp), 1
    return _codes_between(values, low, high, n_bins), n_bins


# ------------------------------------------------------------ counts -> bits
def _sum_n_log2_n(counts: np.ndarray) -> float:
    """Sum of ``c * log2(c)`` over the non-zero counts."""
    nonzero = counts[counts > 0].astype(float)
    return float(np.dot(nonzero, np.log2(nonzero)))


def _entropy_of_counts(counts: np.ndarray) -> float:
    total = float(counts.sum())
    if total <= 0:
        return 0.0
    nonzero = counts[counts > 0].astype(float)
    # sum c log2(N / c) / N is exactly 0 for a single occupied cell (no rounding residue).
    return max(0.0, float(np.dot(nonzero, np.log2(total / nonzero))) / total)


def _cell_counts(combined: np.ndarray, n_cells: int) -> np.ndarray:
    if n_cells <= _MAX_DENSE_CELLS:
        return np.bincount(combined, minlength=n_cells)
    return np.unique(combined, return_counts=True)[1]


def _joint_codes(*pairs: tuple[np.ndarray, int]) -> tuple[np.ndarray, int]:
    """Mixed-radix combination of several code vectors into one code per sample."""
    combined = np.zeros(pairs[0][0].shape[0], dtype=np.int64)
    n_cells = 1
    for codes, n_bins in pairs:
        combined *= n_bins
        combined += codes
        n_cells *= n_bins
    return combined, n_cells


# --------------------------------------------------------- codes fast paths
def mutual_information_codes(cx, kx: int, cy, ky: int) -> float:
    """I(X;Y) in bits from precomputed bin codes (``cx`` in [0, kx), ``cy`` in [0, ky)).

    The detectors' fast path: discretise each column once, then call this per pair.
    """
    cx = _codes_vector(cx, kx, "cx")
    cy = _codes_vector(cy, ky, "cy")
    _same_length(cx, cy, "cx and cy")
    n = cx.shape[0]
    if kx * ky <= _MAX_DENSE_CELLS:
        # One pass over the samples; the marginals come from the small joint table.
        joint = np.bincount(cx * ky + cy, minlength=kx * ky).reshape(kx, ky)
        joint_sum = _sum_n_log2_n(joint)
        sx = _sum_n_log2_n(joint.sum(axis=1))
        sy = _sum_n_log2_n(joint.sum(axis=0))
    else:
        joint_sum = _sum_n_log2_n(np.unique(cx.astype(np.int64) * ky + cy, return_counts=True)[1])
        sx = _sum_n_log2_n(np.bincount(cx, minlength=kx))
        sy = _sum_n_log2_n(np.bincount(cy, minlength=ky))
    # I = Hx + Hy - Hxy = log2 N + (S_xy - S_x - S_y) / N with S = sum c log2 c.
    return max(0.0, math.log2(n) + (joint_sum - sx - sy) / n)


def conditional_mutual_information_codes(cx, kx: int, cy, ky: int, cz, kz: int) -> float:
    """I(X;Y|Z) in bits from precomputed bin codes.

    I(X;Y|Z) = H(X,Z) + H(Y,Z) - H(X,Y,Z) - H(Z).
    """
    cx = _codes_vector(cx, kx, "cx")
    cy = _codes_vector(cy, ky, "cy")
    cz = _codes_vector(cz, kz, "cz")
    _same_length(cx, cy, "cx and cy")
    _same_length(cx, cz, "cx and cz")
    n = cx.shape[0]
    xyz, n_xyz = _joint_codes((cx, kx), (cy, ky), (cz, kz))
    if n_xyz <= _MAX_DENSE_CELLS:
        # One pass over the samples; the other tables are sums of the small x-y-z table.
        table = np.bincount(xyz, minlength=n_xyz).reshape(kx, ky, kz)
        s_xyz = _sum_n_log2_n(table)
        s_xz = _sum_n_log2_n(table.sum(axis=1))
        s_yz = _sum_n_log2_n(table.sum(axis=0))
        s_z = _sum_n_log2_n(table.sum(axis=(0, 1)))
    else:
        xz, n_xz = _joint_codes((cx, kx), (cz, kz))
        yz, n_yz = _joint_codes((cy, ky), (cz, kz))
        s_xyz = _sum_n_log2_n(_cell_counts(xyz, n_xyz))
        s_xz = _sum_n_log2_n(_cell_counts(xz, n_xz))
        s_yz = _sum_n_log2_n(_cell_counts(yz, n_yz))
        s_z = _sum_n_log2_n(np.bincount(cz, minlength=kz))
    # The log2 N terms cancel (two entropies added, two subtracted).
    return max(0.0, (s_xyz + s_z - s_xz - s_yz) / n)


def mi_significance(mi_bits: float, n: int, kx: int, ky: int) -> float:
    """p-value of a plug-in MI under independence (G-test).

    G = 2 N ln(2) I  ~  chi2 with (kx - 1)(ky - 1) degrees of freedom.
    A table with one row or column carries no dependence: p = 1.
    """
    if not math.isfinite(mi_bits) or mi_bits < 0:
        raise ValueError(f"mi_bits must be a finite non-negative number, got {mi_bits!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    dof = (kx - 1) * (ky - 1)
    if dof <= 0:
        return 1.0
    g_statistic = 2.0 * n * math.log(2.0) * mi_bits
    return float(chi2.sf(g_statistic, dof))


# ------------------------------------------------------------- sample APIs
def entropy(x, bins: int | None = None) -> float:
    """Shannon entropy (bits) of ``x`` after equal-width binning. A constant series has 0."""
    codes, n_bins = discretize(x, bins)
    return _entropy_of_counts(np.bincount(codes, minlength=n_bins))


def _paired_codes(x, y, bins: int | None) -> tuple[np.ndarray, int, np.ndarray, int]:
    xv = _finite_vector(x, "x")
    yv = _finite_vector(y, "y")
    _same_length(xv, yv)
    cx, kx = discretize(xv, bins)
    cy, ky = discretize(yv, bins)
    return cx, kx, cy, ky


def joint_entropy(x, y, bins: int | None = None) -> float:
    """H(X, Y) in bits over the product of the two equal-width binnings."""
    cx, kx, cy, ky = _paired_codes(x, y, bins)
    return _entropy_of_counts(np.bincount(cx * ky + cy, minlength=kx * ky))


def mutual_information(x, y, bins: int | None = None) -> float:
    """I(X; Y) = H(X) + H(Y) - H(X, Y) in bits (>= 0), plug-in over equal-width bins."""
    return mutual_information_codes(*_paired_codes(x, y, bins))


def normalized_mutual_information(x, y, bins: int | None = None) -> float:
    """I(X; Y) / min(H(X), H(Y)) in [0, 1]; 0 when either variable is constant after binning.

    1 means one variable determines the other's bin (at this resolution).
    """
    cx, kx, cy, ky = _paired_codes(x, y, bins)
    smaller = min(_entropy_of_counts(np.bincount(cx, minlength=kx)), _entropy_of_counts(np.bincount(cy, minlength=ky)))
    if smaller <= 0:
        return 0.0
    return float(min(1.0, mutual_information_codes(cx, kx, cy, ky) / smaller))


# ------------------------------------------------------------- divergences
def shared_histograms(a, b, bins: int | None = None, smoothing: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Probability vectors of samples ``a`` and ``b`` over shared equal-width edges.

    The edges span both samples, so the vectors are comparable bin by bin.
    ``bins=None`` uses ``bin_count`` of the smaller sample. ``smoothing`` adds
    that pseudo-count to every bin of both histograms (Laplace) before
    normalising, which keeps ``kl_divergence`` finite.
    """
    av = _finite_vector(a, "a")
    bv = _finite_vector(b, "b")
    if not math.isfinite(smoothing) or smoothing < 0:
        raise ValueError(f"smoothing must be a finite non-negative pseudo-count, got {smoothing!r}")
    n_bins = _check_bins(bins) or bin_count(min(av.size, bv.size))
    low = min(float(av.min()), float(bv.min()))
    high = max(float(av.max()), float(bv.max()))
    if high <= low:  # both samples are the same constant
        n_bins = 1
    counts_a = np.bincount(_codes_between(av, low, high, n_bins), minlength=n_bins) + float(smoothing)
    counts_b = np.bincount(_codes_between(bv, low, high, n_bins), minlength=n_bins) + float(smoothing)
    return counts_a / counts_a.sum(), counts_b / counts_b.sum()


def _probability_pair(p, q) -> tuple[np.ndarray, np.ndarray]:
    pv = _finite_vector(p, "p")
    qv = _finite_vector(q, "q")
    _same_length(pv, qv, "p and q")
    for vector, name in ((pv, "p"), (qv, "q")):
        if (vector < 0).any():
            raise ValueError(f"{name} has negative entries; expected a probability (or count) vector")
        if vector.sum() <= 0:
            raise ValueError(f"{name} has no mass; expected a probability (or count) vector")
    return pv / pv.sum(), qv / qv.sum()


def _kl_normalised(p: np.ndarray, q: np.ndarray) -> float:
    support = p > 0
    if (q[support] == 0).any():
        return math.inf
    ps, qs = p[support], q[support]
    return max(0.0, float(np.dot(ps, np.log2(ps / qs))))


def kl_divergence(p, q) -> float:
    """D(p || q) in bits; inputs are normalised first.

    ``inf`` when p puts mass where q has none (use ``shared_histograms(..., smoothing=...)``
    to avoid that on samples).
    """
    return _kl_normalised(*_probability_pair(p, q))


def jsd(p, q) -> float:
    """Jensen-Shannon divergence in bits: symmetric, 0 for equal vectors, 1 for disjoint supports."""
    pn, qn = _probability_pair(p, q)
    middle = 0.5 * (pn + qn)
    value = 0.5 * _kl_normalised(pn, middle) + 0.5 * _kl_normalised(qn, middle)
    return float(min(1.0, max(0.0, value)))


# ----------------------------------------------------------- time series
def transfer_entropy(x, y, lag: int = 1, bins: int | None = None) -> float:
    """Transfer entropy from ``x`` to ``y`` in bits, history length 1.

    Embedding: for every t with t >= max(lag, 1),

        TE(x -> y) = I(y_t ; x_{t-lag} | y_{t-1})

    i.e. how much the past of ``x`` (``lag`` steps back) tells about ``y`` beyond
    what ``y``'s own previous value already tells. Both series are discretised
    once over their full range; ``bins=None`` uses the three-way table rule
    (see the module docstring) for the number of aligned samples.
    """
    xv = _finite_vector(x, "x")
    yv = _finite_vector(y, "y")
    _same_length(xv, yv)
    if isinstance(lag, bool) or not isinstance(lag, (int, np.integer)) or lag < 1:
        raise ValueError(f"lag must be a positive integer, got {lag!r}")
    start = int(lag)  # the first t with both x_{t-lag} and y_{t-1}
    n_aligned = xv.size - start
    if n_aligned < 2:
        raise ValueError(f"need more than {start + 1} samples for transfer entropy at lag {lag}, got {xv.size}")
    n_bins = _check_bins(bins) or _three_way_bin_count(n_aligned)
    cx, kx = discretize(xv, n_bins)
    cy, ky = discretize(yv, n_bins)
    n = xv.size
    y_now = cy[start:]
    x_past = cx[start - lag : n - lag]
    y_past = cy[start - 1 : n - 1]
    return conditional_mutual_information_codes(y_now, ky, x_past, kx, y_past, ky)


def permutation_entropy(x, order: int = 3, delay: int = 1, normalize: bool = True) -> float:
    """Bandt-Pompe permutation entropy of a time series.

    Each window ``x[t], x[t+delay], ..., x[t+(order-1)*delay]`` is mapped to the
    permutation that sorts it (ties keep order of appearance); the result is the
    Shannon entropy of those ordinal patterns, in bits, divided by
    ``log2(order!)`` when ``normalize`` (0 = perfectly regular, 1 = every
    pattern equally likely, as for white noise). A constant stretch reads as
    "rising" (ties keep order), so a constant series has entropy 0.
    """
    values = _finite_vector(x)
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 2 <= order <= _MAX_PERMUTATION_ORDER:
        raise ValueError(f"order must be an integer in [2, {_MAX_PERMUTATION_ORDER}], got {order!r}")
    if isinstance(delay, bool) or not isinstance(delay, (int, np.integer)) or delay < 1:
        raise ValueError(f"delay must be a positive integer, got {delay!r}")
    span = (order - 1) * delay + 1
    if values.size < span:
        raise ValueError(f"need at least {span} samples for order {order} and delay {delay}, got {values.size}")
    windows = sliding_window_view(values, span)[:, ::delay]
    ranks = np.argsort(windows, axis=1, kind="stable")
    # Base-``order`` number of each permutation: an injective code per pattern.
    codes = ranks @ (order ** np.arange(order, dtype=np.int64))
    counts = _cell_counts(codes, order**order)
    value = _entropy_of_counts(counts)
    if normalize:
        value /= math.log2(math.factorial(order))
    return float(min(1.0, value)) if normalize else float(value)
