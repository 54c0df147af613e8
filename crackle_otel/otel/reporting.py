"""What a stream of cools reports: a standing pattern once, again only when it changes materially.

The same correlation, law or cluster is found by every cool while it holds;
re-sending it every interval would bury the news. A pattern (by ``key``) is
reported when it first appears and again when its confidence or one of its
substantive statistics moves. Bookkeeping figures do not count: sample sizes
grow as a window fills and positions shift as it slides, without the pattern
saying anything new. Nor do figures of the baseline a pattern is compared with
(``rest_*``: the rest of the group) and ratios to it: they move with the whole
group (which the phase detector reports) or with a handful of events among
thousands (a 0.4 % error rate elsewhere is 0.2 % in the next window); the
pattern's own figures decide.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Iterable

from ..patterns import Pattern

CONFIDENCE_TOLERANCE = 0.1  # confidence moved by at least this much, or
STATISTIC_FACTOR = 2.0  # a substantive statistic grew/shrank 2x or flipped sign
_NEGLIGIBLE = 1e-12
_MAX_REMEMBERED = 1024

# p- and q-values (confidence covers them), counts and sample sizes, positions in the window.
_BOOKKEEPING_NAMES = frozenset({
    "p_value", "pvalue", "q_value", "n", "effective_n", "sample_size", "tasks", "count", "size", "clusters",
    "change_points", "min_segment", "expected_by_chance", "index", "timestamp", "tests", "high_cardinality_attributes",
})
_BOOKKEEPING_SUFFIXES = ("_index", "_timestamp", "_tasks", "_p_value")
_CHANGE_PREFIX = re.compile(r"^change_\d+_")
_BASELINE_PREFIX = "rest_"  # the rest of the group a pattern is compared with
_RELATIVE_NAMES = frozenset({"ratio", "median_ratio"})  # a pattern's figure over the baseline's


def is_bookkeeping(name: str) -> bool:
    """Whether a statistic describes the sample or the baseline rather than the pattern (see module docstring)."""
    base = _CHANGE_PREFIX.sub("", name.rsplit(".", 1)[-1])
    return (base in _BOOKKEEPING_NAMES or base.startswith(("tasks_", _BASELINE_PREFIX)) or base in _RELATIVE_NAMES
            or base.endswith(_BOOKKEEPING_SUFFIXES))


def changed_materially(before: Pattern, after: Pattern) -> bool:
    """Whether ``after`` (same key) says something the report of ``before`` did not.

    Descriptions are not compared: they embed figures that wobble every cool.
    """
    if abs(after.confidence - before.confidence) >= CONFIDENCE_TOLERANCE:
        return True
    for name, old in before.statistics.items():
        new = after.statistics.get(name)
        if new is None or is_bookkeeping(name) or not (math.isfinite(old) and math.isfinite(new)):
            continue
        if old * new < 0:
            return True
        small, large = sorted((abs(old), abs(new)))
        if small > _NEGLIGIBLE and large / small >= STATISTIC_FACTOR:
            return True
    return False


class ReportedPatterns:
    """What one stream already reported: pattern key -> (pattern as reported, last cool it was seen)."""

    def __init__(self, forget_after_cools: int) -> None:
        self.forget_after_cools = forget_after_cools
        self._entries: dict[str, tuple[Pattern, int]] = {}

    def select(self, patterns: Iterable[Pattern], cool_number: int) -> tuple[list[Pattern], int]:
        """(patterns new or materially changed, how many were repeats)."""
        fresh: list[Pattern] = []
        repeats = 0
        for pattern in patterns:
            entry = self._entries.get(pattern.key)
            if entry is None or changed_materially(entry[0], pattern):
                fresh.append(pattern)
                # Only confidence and statistics are compared later: the involved tasks (up to
                # max_involved each) need not be remembered.
                self._entries[pattern.key] = (dataclasses.replace(pattern, involved=()), cool_number)
            else:
                repeats += 1
                # Keep comparing with what was reported, so slow drift adds up to a change.
                self._entries[pattern.key] = (entry[0], cool_number)
        self._forget(cool_number)
        return fresh, repeats

    def _forget(self, cool_number: int) -> None:
        stale = [k for k, (_, seen) in self._entries.items() if cool_number - seen >= self.forget_after_cools]
        for key in stale:
            del self._entries[key]
        if len(self._entries) > _MAX_REMEMBERED:
            by_age = sorted(self._entries, key=lambda k: self._entries[k][1])
            for key in by_age[: len(self._entries) - _MAX_REMEMBERED]:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
