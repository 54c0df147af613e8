"""The kiln's information-theoretic views, through the public Kiln API."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crackle_otel import information
from crackle_otel.kiln import Kiln

N_TASKS = 2000


@pytest.fixture
def kiln() -> Kiln:
    """Tasks in time order with a stationary, a shifting, a dependent and a trending metric."""
    rng = np.random.default_rng(7)
    stationary = rng.normal(100.0, 5.0, N_TASKS)
    shifting = rng.normal(100.0, 5.0, N_TASKS)
    shifting[N_TASKS // 2 :] += 20.0  # the second half moves by four standard deviations
    dependent = stationary * 2.0 + rng.normal(0.0, 1.0, N_TASKS)
    trending = np.arange(N_TASKS, dtype=float)  # a monotone counter
    noise = rng.normal(size=N_TASKS)
    kiln = Kiln(capacity=N_TASKS)
    for i in range(N_TASKS):
        kiln.record(
            "op",
            {
                "stationary": stationary[i],
                "shifting": shifting[i],
                "dependent": dependent[i],
                "trending": trending[i],
                "noise": noise[i],
            },
            timestamp=1_700_000_000.0 + i,
        )
    return kiln


def test_mi_matrix_is_symmetric_with_entropies_on_diagonal(kiln):
    names, mi = kiln.mi_matrix()
    assert names == ("stationary", "shifting", "dependent", "trending", "noise")
    assert mi.shape == (5, 5)
    assert np.allclose(mi, mi.T)
    assert (mi >= 0).all()
    stationary = kiln.snapshot().column("stationary")
    assert mi[0, 0] == pytest.approx(information.entropy(stationary))


def test_mi_matrix_ranks_dependent_pair_above_independent_pair(kiln):
    names, mi = kiln.mi_matrix()
    at = {name: i for i, name in enumerate(names)}
    dependent = mi[at["stationary"], at["dependent"]]
    independent = mi[at["stationary"], at["noise"]]
    assert dependent > 1.0
    assert independent < 0.1
    assert dependent > 10 * independent


def test_mi_matrix_honours_bins(kiln):
    _, coarse = kiln.mi_matrix(bins=2)
    assert coarse.max() <= 1.0 + 1e-12  # two bins carry at most one bit


def test_mi_matrix_uses_only_tasks_with_both_metrics():
    kiln = Kiln()
    rng = np.random.default_rng(3)
    x = rng.normal(size=400)
    for i, value in enumerate(x):
        kiln.record("a", {"x": value, "y": value}, timestamp=float(i))
    for i in range(400):
        kiln.record("b", {"z": float(i)}, timestamp=400.0 + i)
    names, mi = kiln.mi_matrix()
    at = {name: i for i, name in enumerate(names)}
    assert mi[at["x"], at["y"]] == pytest.approx(information.entropy(x))
    assert mi[at["x"], at["z"]] == 0.0  # never observed together


def test_jsd_shift_is_larger_for_shifting_metric(kiln):
    shifted = kiln.jsd_shift("shifting")
    stationary = kiln.jsd_shift("stationary")
    assert 0.0 <= stationary < 0.05
    assert shifted > 0.5
    assert shifted <= 1.0


def test_distribution_shift_is_finite_and_larger_for_shifting_metric(kiln):
    shifted = kiln.distribution_shift("shifting")
    stationary = kiln.distribution_shift("stationary")
    assert math.isfinite(shifted)  # the kiln smooths, so empty bins do not give inf
    assert shifted > 1.0
    assert stationary < 0.1


def test_shift_uses_time_order_not_insertion_order():
    kiln = Kiln()
    # Record late tasks first: the second half in time has the larger values.
    for i in range(200):
        kiln.record("op", {"m": 10.0 + (i % 7) * 0.1}, timestamp=1000.0 + i)
    for i in range(200):
        kiln.record("op", {"m": (i % 7) * 0.1}, timestamp=float(i))
    assert kiln.jsd_shift("m", bins=4) == pytest.approx(1.0)


def test_unknown_metric_raises_key_error(kiln):
    with pytest.raises(KeyError):
        kiln.jsd_shift("no_such_metric")
    with pytest.raises(KeyError):
        kiln.distribution_shift("no_such_metric")


def test_shift_needs_two_values():
    kiln = Kiln()
    kiln.record("op", {"m": 1.0})
    with pytest.raises(ValueError):
        kiln.jsd_shift("m")


def test_permutation_entropies_separate_regular_from_random(kiln):
    entropies = kiln.permutation_entropies()
    assert set(entropies) == {"stationary", "shifting", "dependent", "trending", "noise"}
    assert entropies["trending"] == pytest.approx(0.0, abs=1e-12)
    assert entropies["noise"] > 0.98
    assert all(0.0 <= value <= 1.0 for value in entropies.values())


def test_permutation_entropies_skip_too_short_series():
    kiln = Kiln()
    for i in range(3):
        kiln.record("op", {"short": float(i), "long": float(i)}, timestamp=float(i))
    for i in range(3, 20):
        kiln.record("op", {"long": float(i % 5)}, timestamp=float(i))
    entropies = kiln.permutation_entropies(order=3)
    assert "short" not in entropies
    assert "long" in entropies
