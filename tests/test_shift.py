"""The edge-shift detector on sparse streams: a dozen usual calls, then a few very slow ones.

Real low-volume endpoints see a few calls a minute; when their service slows down the
first evidence is three or four slow calls against a usual of about ten. Driven through a
sliding-window Kiln, as the furnace drives it: a full cool marks the usual as seen, then
the partial edge look reads what is new.
"""

from __future__ import annotations

import numpy as np

from crackle_otel import Kiln
from crackle_otel.detect import EDGE_DETECTORS
from crackle_otel.patterns import PatternKind

T0 = 1_700_000_000.0


def _edge_look(usual: list[float], newest: list[float], *, gap_s: float = 20.0) -> list:
    kiln = Kiln(seal_on_cool=False, capacity=4096)
    t = T0
    for value in usual:
        kiln.record("GET /verify", {"call_gap_ms": value}, timestamp=t)
        t += gap_s
    kiln.cool()  # the usual has been looked at: only what follows is new
    for value in newest:
        kiln.record("GET /verify", {"call_gap_ms": value}, timestamp=t)
        t += gap_s
    patterns, _ = kiln.cool_with_matrix(only=EDGE_DETECTORS)
    return [p for p in patterns if p.key == "phase_transition:call_gap_ms:edge"]


def test_three_slow_calls_against_a_usual_of_nine_are_a_shift():
    usual = [3.1, 2.5, 3.6, 2.3, 1.5, 3.0, 2.7, 2.6, 3.5]
    found = _edge_look(usual, [60.9, 80.6, 82.0], gap_s=30.0)
    assert len(found) == 1
    shift = found[0]
    assert shift.kind is PatternKind.PHASE_TRANSITION
    assert shift.statistics["ratio"] > 20
    assert shift.statistics["tasks_after"] == 3


def test_a_value_of_zero_or_less_is_left_out_not_disqualifying():
    # A callee span that outlasted its caller's (a negative gap) is one odd value, not a reason
    # to stop reading the edge.
    usual = [3.1, 2.5, 3.6, 2.3, 1.5, 3.0, 2.7, 2.6, 3.5, 3.1]
    found = _edge_look(usual, [-64.1, 60.9, 80.6, 82.0], gap_s=30.0)
    assert len(found) == 1
    assert found[0].statistics["level_after"] > 50


def test_slow_calls_no_further_out_than_the_usual_tail_are_not_a_shift():
    # This edge's usual already holds ~230 ms stalls (a connection set up anew): three calls at
    # 20 ms are within what it does.
    usual = [2.7, 2.5, 1.6, 229.7, 2.8, 2.8, 1.5, 20.4, 2.7, 1.5, 225.6, 1.6]
    assert _edge_look(usual, [16.7, 19.3, 17.4], gap_s=15.0) == []


def test_a_few_slow_calls_at_one_moment_are_one_stall_not_a_shift():
    usual = [3.1, 2.5, 3.6, 2.3, 1.5, 3.0, 2.7, 2.6, 3.5]
    assert _edge_look(usual, [60.9, 80.6, 82.0], gap_s=0.5) == []


def test_sparse_heavy_tailed_streams_stay_quiet():
    """Healthy sparse edges (log-normal, spreads 0.2-0.8, rare 50-100x stalls) looked at as a
    stream every four new calls: false shifts stay near the nominal rate (significance / 100
    per look, ~1e-4), i.e. at most one in ~2,000 looks."""
    rng = np.random.default_rng(1)
    false_shifts = looks = 0
    for _ in range(300):
        median = rng.uniform(1.0, 20.0)
        values = median * rng.lognormal(0.0, rng.uniform(0.2, 0.8), size=40)
        stalls = rng.random(40) < 0.01
        values[stalls] *= rng.uniform(50, 100, size=int(stalls.sum()))
        kiln = Kiln(seal_on_cool=False, capacity=4096)
        t = T0
        for i, value in enumerate(values):
            kiln.record("GET /x", {"call_gap_ms": float(value)}, timestamp=t)
            t += rng.exponential(20.0)
            if i >= 11 and i % 4 == 3:
                patterns, _ = kiln.cool_with_matrix(only=EDGE_DETECTORS)
                false_shifts += sum(p.kind is PatternKind.PHASE_TRANSITION for p in patterns)
                looks += 1
                kiln.cool()
    assert looks > 2000
    assert false_shifts <= 1
