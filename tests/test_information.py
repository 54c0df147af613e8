"""Information measures: analytic values, scipy cross-checks, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import lfilter
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as scipy_entropy

from crackle_otel import information as info


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240601)


# ------------------------------------------------------------------ binning
@pytest.mark.parametrize("n, expected", [(1, 2), (20, 2), (100, 4), (1000, 11), (100_000, 18), (10**12, 41)])
def test_bin_count_follows_documented_rule(n, expected):
    assert info.bin_count(n) == expected


def test_bin_count_stays_in_range():
    counts = [info.bin_count(n) for n in (1, 2, 10, 10**3, 10**6, 10**9, 2**200)]
    assert all(info.MIN_BINS <= k <= info.MAX_BINS for k in counts)
    assert counts == sorted(counts)


def test_bin_count_rejects_no_samples():
    with pytest.raises(ValueError):
        info.bin_count(0)


def test_discretize_equal_width_codes():
    codes, n_bins = info.discretize([0.0, 0.24, 0.26, 0.5, 0.74, 1.0], bins=4)
    assert n_bins == 4
    assert codes.dtype == np.intp
    assert codes.tolist() == [0, 0, 1, 2, 2, 3]  # the maximum falls into the last bin


def test_discretize_constant_series_gets_one_bin():
    codes, n_bins = info.discretize(np.full(50, 7.5))
    assert n_bins == 1
    assert not codes.any()


def test_discretize_handles_range_wider_than_float64():
    codes, n_bins = info.discretize([-1e308, 0.0, 1e308], bins=2)
    assert n_bins == 2
    assert codes.tolist() == [0, 1, 1]


def test_discretize_default_bins_use_rule(rng):
    codes, n_bins = info.discretize(rng.normal(size=1000))
    assert n_bins == info.bin_count(1000)
    assert codes.min() == 0 and codes.max() == n_bins - 1


@pytest.mark.parametrize("bad", [[], [1.0, math.nan], [1.0, math.inf], [[1.0, 2.0]]])
def test_discretize_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        info.discretize(bad)


@pytest.mark.parametrize("bins", [0, -3, 2.5, True])
def test_bins_must_be_positive_integer(bins):
    with pytest.raises(ValueError):
        info.entropy([1.0, 2.0, 3.0], bins=bins)


# ------------------------------------------------------------------ entropy
@pytest.mark.parametrize("k", [2, 4, 8, 16])
def test_entropy_of_uniform_over_k_bins_is_log2_k(k):
    x = np.repeat(np.arange(k, dtype=float), 25)
    assert info.entropy(x, bins=k) == pytest.approx(math.log2(k))


def test_entropy_of_constant_series_is_zero():
    assert info.entropy(np.full(100, 3.0)) == 0.0


def test_entropy_matches_scipy_on_histogram(rng):
    x = rng.gamma(2.0, size=5000)
    counts, _ = np.histogram(x, bins=12)
    assert info.entropy(x, bins=12) == pytest.approx(scipy_entropy(counts, base=2), abs=1e-12)


def test_joint_entropy_of_identical_variables_equals_entropy(rng):
    x = rng.normal(size=2000)
    assert info.joint_entropy(x, x, bins=10) == pytest.approx(info.entropy(x, bins=10))


def test_joint_entropy_of_independent_uniform_codes_adds(rng):
    x = np.repeat(np.arange(4.0), 4)
    y = np.tile(np.arange(4.0), 4)  # every (x, y) pair exactly once
    assert info.joint_entropy(x, y, bins=4) == pytest.approx(4.0)


# ------------------------------------------------------- mutual information
def test_mi_of_identical_variables_equals_entropy(rng):
    x = rng.normal(size=5000)
    assert info.mutual_information(x, x, bins=8) == pytest.approx(info.entropy(x, bins=8))


def test_mi_of_exactly_independent_table_is_zero():
    x = np.repeat(np.arange(4.0), 4)
    y = np.tile(np.arange(4.0), 4)
    assert info.mutual_information(x, y, bins=4) == pytest.approx(0.0, abs=1e-12)


def test_mi_of_independent_samples_is_near_plugin_bias(rng):
    n = 20_000
    x, y = rng.normal(size=n), rng.normal(size=n)
    k = info.bin_count(n)
    bias = (k - 1) ** 2 / (2 * n * math.log(2))
    mi = info.mutual_information(x, y)
    assert 0.0 <= mi < 3 * bias


def test_mi_detects_nonlinear_dependence(rng):
    x = rng.uniform(-1, 1, size=5000)
    y = x**2 + 0.05 * rng.normal(size=5000)  # zero correlation, strong dependence
    assert abs(np.corrcoef(x, y)[0, 1]) < 0.05
    assert info.mutual_information(x, y) > 1.0


def test_mi_is_symmetric(rng):
    x = rng.normal(size=3000)
    y = np.sin(x) + 0.3 * rng.normal(size=3000)
    assert info.mutual_information(x, y) == pytest.approx(info.mutual_information(y, x))


def test_mi_with_constant_is_zero(rng):
    assert info.mutual_information(rng.normal(size=100), np.ones(100)) == 0.0


def test_mi_rejects_length_mismatch():
    with pytest.raises(ValueError, match="same length"):
        info.mutual_information([1.0, 2.0, 3.0], [1.0, 2.0])


def test_mi_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        info.mutual_information([1.0, math.nan], [1.0, 2.0])


def test_normalized_mi_bounds(rng):
    x = rng.normal(size=4000)
    assert info.normalized_mutual_information(x, x) == pytest.approx(1.0)
    assert info.normalized_mutual_information(x, 2 * x + 1) == pytest.approx(1.0)
    assert info.normalized_mutual_information(x, rng.normal(size=4000)) < 0.05
    assert info.normalized_mutual_information(x, np.zeros(4000)) == 0.0


def test_mi_codes_matches_sample_api(rng):
    x = rng.normal(size=3000)
    y = x + rng.normal(size=3000)
    cx, kx = info.discretize(x)
    cy, ky = info.discretize(y)
    assert info.mutual_information_codes(cx, kx, cy, ky) == pytest.approx(info.mutual_information(x, y))


def test_codes_paths_for_huge_tables_agree_with_small_tables(rng):
    # Declaring thousands of bins switches to sparse counting; unused bins must not change the result.
    x = rng.integers(0, 4, size=3000)
    y = (x + rng.integers(0, 2, size=3000)) % 4
    z = rng.integers(0, 3, size=3000)
    assert info.mutual_information_codes(x, 3000, y, 3000) == pytest.approx(info.mutual_information_codes(x, 4, y, 4))
    assert info.conditional_mutual_information_codes(x, 300, y, 300, z, 300) == pytest.approx(
        info.conditional_mutual_information_codes(x, 4, y, 4, z, 3)
    )


def test_mi_codes_rejects_out_of_range_codes():
    with pytest.raises(ValueError, match="codes"):
        info.mutual_information_codes(np.array([0, 1, 4]), 4, np.array([0, 1, 2]), 3)
    with pytest.raises(ValueError, match="integer"):
        info.mutual_information_codes(np.array([0.0, 1.0]), 2, np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="same length"):
        info.mutual_information_codes(np.array([0, 1]), 2, np.array([0, 1, 1]), 2)


def test_cmi_of_chain_given_middle_is_zero(rng):
    # X -> Z -> Y with Z discrete: X and Y are independent given Z.
    n = 50_000
    z = rng.integers(0, 3, size=n)
    x = (z + (rng.random(n) < 0.2)) % 3
    y = (z + (rng.random(n) < 0.2)) % 3
    assert info.mutual_information_codes(x, 3, y, 3) > 0.2
    assert info.conditional_mutual_information_codes(x, 3, y, 3, z, 3) < 0.001


def test_cmi_with_uninformative_condition_equals_mi(rng):
    n = 5000
    x = rng.integers(0, 4, size=n)
    y = (x + rng.integers(0, 2, size=n)) % 4
    z = np.zeros(n, dtype=np.intp)
    mi = info.mutual_information_codes(x, 4, y, 4)
    assert info.conditional_mutual_information_codes(x, 4, y, 4, z, 1) == pytest.approx(mi)


def test_cmi_of_xor_is_one_bit_while_mi_is_zero():
    # Y = X xor Z: X alone says nothing about Y, X given Z says everything.
    x = np.array([0, 0, 1, 1] * 100)
    z = np.array([0, 1, 0, 1] * 100)
    y = x ^ z
    assert info.mutual_information_codes(x, 2, y, 2) == pytest.approx(0.0, abs=1e-12)
    assert info.conditional_mutual_information_codes(x, 2, y, 2, z, 2) == pytest.approx(1.0)


def test_mi_significance_separates_dependence_from_noise(rng):
    n = 2000
    x = rng.normal(size=n)
    noise = rng.normal(size=n)
    cx, kx = info.discretize(x)
    cn, kn = info.discretize(noise)
    cy, ky = info.discretize(x + 0.5 * rng.normal(size=n))
    assert info.mi_significance(info.mutual_information_codes(cx, kx, cy, ky), n, kx, ky) < 1e-10
    assert info.mi_significance(info.mutual_information_codes(cx, kx, cn, kn), n, kx, kn) > 0.01


def test_mi_significance_g_test_value():
    # G = 2 N ln2 I; with 1 degree of freedom and G = 3.841 the p-value is 0.05.
    mi_bits = 3.841458820694124 / (2 * 1000 * math.log(2))
    assert info.mi_significance(mi_bits, 1000, 2, 2) == pytest.approx(0.05, rel=1e-6)
    assert info.mi_significance(0.5, 1000, 1, 8) == 1.0


def test_mi_significance_rejects_negative_mi():
    with pytest.raises(ValueError):
        info.mi_significance(-0.1, 100, 2, 2)


# -------------------------------------------------------------- divergences
def test_shared_histograms_use_common_edges():
    p, q = info.shared_histograms([0.0, 0.1, 0.2, 0.3], [0.7, 0.8, 0.9, 1.0], bins=2)
    assert p.tolist() == [1.0, 0.0]
    assert q.tolist() == [0.0, 1.0]


def test_shared_histograms_smoothing_adds_pseudo_counts():
    p, q = info.shared_histograms([0.0, 0.1, 0.2, 0.3], [0.7, 0.8, 0.9, 1.0], bins=2, smoothing=1.0)
    assert p == pytest.approx([5 / 6, 1 / 6])
    assert q == pytest.approx([1 / 6, 5 / 6])
    assert math.isfinite(info.kl_divergence(p, q))


def test_shared_histograms_of_one_constant_is_one_bin():
    p, q = info.shared_histograms([2.0, 2.0], [2.0, 2.0, 2.0])
    assert p.tolist() == [1.0] and q.tolist() == [1.0]


def test_shared_histograms_reject_negative_smoothing():
    with pytest.raises(ValueError):
        info.shared_histograms([1.0, 2.0], [1.0, 2.0], smoothing=-1.0)


def test_kl_of_known_distributions():
    # D([1/2, 1/2] || [1/4, 3/4]) = 1/2 log2 2 + 1/2 log2(2/3)
    expected = 0.5 * 1.0 + 0.5 * math.log2(2 / 3)
    assert info.kl_divergence([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected)
    assert info.kl_divergence([0.3, 0.7], [0.3, 0.7]) == 0.0


def test_kl_matches_scipy_and_normalises_counts(rng):
    p = rng.random(10) + 0.01
    q = rng.random(10) + 0.01
    assert info.kl_divergence(p * 7, q * 3) == pytest.approx(scipy_entropy(p, q, base=2))


def test_kl_is_infinite_when_q_misses_mass():
    assert info.kl_divergence([0.5, 0.5], [1.0, 0.0]) == math.inf
    assert info.kl_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "p, q, message",
    [([0.5, 0.5], [1.0], "same length"), ([-0.1, 1.1], [0.5, 0.5], "negative"), ([0.0, 0.0], [0.5, 0.5], "no mass")],
)
def test_kl_validates_vectors(p, q, message):
    with pytest.raises(ValueError, match=message):
        info.kl_divergence(p, q)


def test_jsd_matches_scipy_and_is_symmetric(rng):
    p = rng.random(12)
    q = rng.random(12)
    expected = jensenshannon(p, q, base=2) ** 2
    assert info.jsd(p, q) == pytest.approx(expected)
    assert info.jsd(q, p) == pytest.approx(info.jsd(p, q))


def test_jsd_bounds():
    assert info.jsd([0.2, 0.8], [0.2, 0.8]) == 0.0
    assert info.jsd([1.0, 0.0, 0.0], [0.0, 0.5, 0.5]) == pytest.approx(1.0)  # disjoint supports
    assert 0.0 < info.jsd([0.5, 0.5], [0.9, 0.1]) < 1.0


def test_disjoint_samples_give_infinite_kl_and_unit_jsd(rng):
    p, q = info.shared_histograms(rng.uniform(0, 1, 500), rng.uniform(5, 6, 500))
    assert info.kl_divergence(p, q) == math.inf
    assert info.jsd(p, q) == pytest.approx(1.0)


# ---------------------------------------------------------- transfer entropy
def _coupled_pair(rng, n=5000, lag=1):
    driver = rng.normal(size=n)
    follower = np.zeros(n)
    follower[lag:] = 0.8 * driver[:-lag] + 0.4 * rng.normal(size=n - lag)
    return driver, follower


def test_transfer_entropy_detects_direction(rng):
    driver, follower = _coupled_pair(rng)
    forward = info.transfer_entropy(driver, follower)
    backward = info.transfer_entropy(follower, driver)
    assert forward > 0.5
    assert forward > 10 * backward


def test_transfer_entropy_respects_lag(rng):
    driver, follower = _coupled_pair(rng, lag=3)
    assert info.transfer_entropy(driver, follower, lag=3) > 5 * info.transfer_entropy(driver, follower, lag=1)


def test_transfer_entropy_of_independent_series_is_small(rng):
    assert info.transfer_entropy(rng.normal(size=5000), rng.normal(size=5000)) < 0.05


def test_transfer_entropy_discounts_own_history(rng):
    # y follows its own past; x copies y's past too, so x adds nothing beyond y_{t-1}.
    y = lfilter([1.0], [1.0, -0.9], rng.normal(size=5000))  # AR(1): y_t = 0.9 y_{t-1} + e_t
    x = y.copy()
    assert info.transfer_entropy(x, y) < 0.1


@pytest.mark.parametrize("lag", [0, -1, 1.5])
def test_transfer_entropy_rejects_bad_lag(lag):
    with pytest.raises(ValueError, match="lag"):
        info.transfer_entropy(np.arange(10.0), np.arange(10.0), lag=lag)


def test_transfer_entropy_needs_enough_samples():
    with pytest.raises(ValueError, match="samples"):
        info.transfer_entropy([1.0, 2.0], [1.0, 2.0])


# -------------------------------------------------------- permutation entropy
def test_permutation_entropy_of_monotone_series_is_zero():
    assert info.permutation_entropy(np.arange(200.0)) == pytest.approx(0.0, abs=1e-12)
    assert info.permutation_entropy(-np.arange(200.0), order=4, delay=2) == pytest.approx(0.0, abs=1e-12)


def test_permutation_entropy_of_white_noise_is_near_one(rng):
    assert info.permutation_entropy(rng.normal(size=20_000), order=4) > 0.99


def test_permutation_entropy_of_sawtooth_counts_its_patterns():
    # Windows cycle through rising, rising, (high, high, low), (high, low, mid):
    # probabilities 1/2, 1/4, 1/4 -> 1.5 bits out of log2(3!) possible.
    x = np.tile([0.0, 1.0, 2.0, 3.0], 500)
    assert info.permutation_entropy(x, order=3) == pytest.approx(1.5 / math.log2(6), abs=1e-3)


def test_permutation_entropy_unnormalised_is_in_bits(rng):
    value = info.permutation_entropy(rng.normal(size=20_000), order=3, normalize=False)
    assert value == pytest.approx(math.log2(6), abs=0.01)


def test_permutation_entropy_known_counts():
    # Windows of order 2: up, up, down, down -> two patterns, equally often -> 1 bit.
    assert info.permutation_entropy([0.0, 1.0, 2.0, 1.0, 0.0], order=2, normalize=False) == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs", [{"order": 1}, {"order": 11}, {"delay": 0}, {"order": 5, "delay": 3}])
def test_permutation_entropy_validates_arguments(kwargs):
    with pytest.raises(ValueError):
        info.permutation_entropy(np.arange(10.0), **kwargs)


def test_permutation_entropy_of_constant_series_is_zero():
    assert info.permutation_entropy(np.full(100, 4.2)) == 0.0


def test_permutation_entropy_rejects_empty():
    with pytest.raises(ValueError, match="empty"):
        info.permutation_entropy([])
