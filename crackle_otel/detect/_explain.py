"""Why a set of tasks stands apart: label and attribute values over-represented in it.

A pattern that says "48 tasks are slow" is half an answer; "host.name=db-3 is
95% of them and 4% of the rest" is the other half. Detectors call
``Explainer(matrix).over_represented(chosen, pool, noun)`` for the tasks a
pattern involves; codes per key are built lazily, once per matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

from ..matrix import MetricMatrix
from ._stats import sorted_codes

_MAX_KEYS = 16  # attribute keys considered (bounded work on wide attribute sets)
_MAX_VALUES_PER_KEY = 2
_MIN_SHARE = 0.2  # a value must cover at least this share of the chosen tasks ...
_MIN_LIFT = 3.0  # ... and be this many times more common than among the others
_SIGNIFICANCE = 0.01  # ... and that many by chance must be unlikely (binomial test)


@dataclass(frozen=True)
class DistinguishingValue:
    """An attribute value much more common among some tasks than among the others."""

    attribute: str
    value: str
    inside_share: float  # of the chosen tasks carrying it
    outside_share: float  # of the other tasks carrying it
    p_value: float  # binomial: this many of the chosen by chance, at the others' rate


class Explainer:
    def __init__(self, matrix: MetricMatrix) -> None:
        self._matrix = matrix
        self._codes: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _keys(self) -> list[str]:
        # The most widely carried names first: bounded work on wide attribute sets.
        present = self._matrix.attribute_table.present_counts()
        carried = sorted((key for key, count in present.items() if count), key=lambda key: (-present[key], key))
        return ["label"] + sorted(carried[:_MAX_KEYS])

    def _codes_for(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(value names, code per task); "" stands for "task has no such attribute" (or its value was not kept)."""
        if key not in self._codes:
            if key == "label":
                self._codes[key] = _label_codes(self._matrix.labels)
            else:
                values, column = self._matrix.attribute_table.column(key)
                self._codes[key] = (np.array(("", *values), dtype=object), np.maximum(column, 0).astype(np.intp))
        return self._codes[key]

    def distinguishing(self, chosen: np.ndarray, pool: np.ndarray | None = None) -> list[DistinguishingValue]:
        """Per key, the values much more common among ``chosen`` (row indices) than among the rest of ``pool``.

        ``pool`` is a boolean mask of the tasks to compare against (default: all).
        At most two values per key, most common among the chosen first.
        """
        chosen = np.asarray(chosen, dtype=np.intp)
        n = self._matrix.n_tasks
        if chosen.size < 2 or n == 0:
            return []
        others = np.ones(n, dtype=bool) if pool is None else pool.copy()
        others[chosen] = False
        n_others = int(others.sum())
        found = []
        for key in self._keys():
            names, codes = self._codes_for(key)
            inside = np.bincount(codes[chosen], minlength=names.size)
            outside = np.bincount(codes[others], minlength=names.size)
            inside_share = inside / chosen.size
            outside_share = outside / max(n_others, 1)
            notable = np.flatnonzero(
                (names != "") & (inside >= 2) & (inside_share >= _MIN_SHARE) & (inside_share >= _MIN_LIFT * outside_share)
            )
            if notable.size == 0:
                continue
            # Could this many of the chosen carry the value by chance, at its rate among the others?
            background = (outside[notable] + 0.5) / (n_others + 1.0)
            chance = binom.sf(inside[notable] - 1, chosen.size, background)
            keep = chance < _SIGNIFICANCE
            notable, chance = notable[keep], chance[keep]
            order = np.argsort(-inside[notable], kind="stable")[:_MAX_VALUES_PER_KEY]
            found.extend(
                DistinguishingValue(key, str(names[c]), float(inside_share[c]), float(outside_share[c]), float(p))
                for c, p in zip(notable[order], chance[order])
            )
        return found

    def over_represented(self, chosen: np.ndarray, pool: np.ndarray | None = None, noun: str = "them") -> dict[str, str]:
        """``distinguishing`` as text per key, e.g. {"host.name": "db-3 (95% of cluster, 4% elsewhere)"}."""
        explanation: dict[str, list[str]] = {}
        for found in self.distinguishing(chosen, pool):
            explanation.setdefault(found.attribute, []).append(
                f"{found.value} ({found.inside_share:.0%} of {noun}, {found.outside_share:.0%} elsewhere)"
            )
        return {key: "; ".join(texts) for key, texts in explanation.items()}


def _label_codes(labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(np.array(labels, dtype=str), return_inverse=True)``: the same names and codes,
    from the few distinct labels (sorting thousands of strings for a handful of names was most of
    an explanation's time). numpy drops trailing NULs from its strings: such labels go its way."""
    distinct = set(labels)
    if any(not isinstance(label, str) or label.endswith("\x00") for label in distinct):
        names, codes = np.unique(np.array(labels, dtype=str), return_inverse=True)
        return names, codes.ravel()
    names, codes = sorted_codes(labels)
    return np.array(names, dtype=str), codes
