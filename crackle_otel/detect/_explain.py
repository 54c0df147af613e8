"""Why a set of tasks stands apart: label and attribute values over-represented in it.

A pattern that says "48 tasks are slow" is half an answer; "host.name=db-3 is
95% of them and 4% of the rest" is the other half. Detectors call
``Explainer(matrix).over_represented(chosen, pool, noun)`` for the tasks a
pattern involves; codes per key are built lazily, once per matrix.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binom

from ..matrix import MetricMatrix

_MAX_KEYS = 16  # attribute keys considered (bounded work on wide attribute sets)
_MAX_VALUES_PER_KEY = 2
_MIN_SHARE = 0.2  # a value must cover at least this share of the chosen tasks ...
_MIN_LIFT = 3.0  # ... and be this many times more common than among the others
_SIGNIFICANCE = 0.01  # ... and that many by chance must be unlikely (binomial test)
_KEY_SAMPLE = 2000  # tasks read to learn which attribute keys exist


class Explainer:
    def __init__(self, matrix: MetricMatrix) -> None:
        self._matrix = matrix
        self._codes: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _keys(self) -> list[str]:
        keys = ["label"]
        seen: set[str] = set()
        step = max(1, len(self._matrix.attributes) // _KEY_SAMPLE)
        for attributes in self._matrix.attributes[::step]:
            if attributes:
                for key in attributes:
                    if key not in seen and len(seen) < _MAX_KEYS:
                        seen.add(key)
        return keys + sorted(seen)

    def _codes_for(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(value names, code per task); "" stands for "task has no such attribute"."""
        if key not in self._codes:
            if key == "label":
                values = np.array(self._matrix.labels, dtype=str)
            else:
                values = np.array([(a.get(key) or "") if a else "" for a in self._matrix.attributes], dtype=str)
            names, codes = np.unique(values, return_inverse=True)
            self._codes[key] = (names, codes.ravel())
        return self._codes[key]

    def over_represented(self, chosen: np.ndarray, pool: np.ndarray | None = None, noun: str = "them") -> dict[str, str]:
        """Per key, the values much more common among ``chosen`` (row indices) than among the rest of ``pool``.

        ``pool`` is a boolean mask of the tasks to compare against (default: all).
        Returns e.g. {"host.name": "db-3 (95% of cluster, 4% elsewhere)"}; keys
        where nothing stands out are left out.
        """
        chosen = np.asarray(chosen, dtype=np.intp)
        n = self._matrix.n_tasks
        if chosen.size < 2 or n == 0:
            return {}
        others = np.ones(n, dtype=bool) if pool is None else pool.copy()
        others[chosen] = False
        n_others = int(others.sum())
        explanation = {}
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
            notable = notable[chance < _SIGNIFICANCE]
            if notable.size == 0:
                continue
            notable = notable[np.argsort(-inside[notable], kind="stable")][:_MAX_VALUES_PER_KEY]
            explanation[key] = "; ".join(
                f"{names[c]} ({inside_share[c]:.0%} of {noun}, {outside_share[c]:.0%} elsewhere)" for c in notable
            )
        return explanation
