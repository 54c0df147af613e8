"""Binary segmentation over prefix-sum segment costs (the distribution-shape search of ``phase``).

A cost says how badly one model fits a segment ``[start, end)`` of a series;
splitting a segment at ``k`` gains ``cost(start, end) - cost(start, k) - cost(k, end)``.
Every cost here is built from prefix sums, so the cost of any segment is O(1) and
the best split of a segment is one vectorised pass over its candidate positions.

The search only considers block boundaries (at most ``MAX_BLOCKS`` of them), then
backward-eliminates change points that no longer pay their penalty once their
neighbours are known, and finally refines each survivor at full resolution
within one block. Time: O(n) to build the sums plus O(blocks) per split.
"""

from __future__ import annotations

import heapq

import numpy as np

from ._changepoints import neighbourhood

MAX_BLOCKS = 2000  # candidate positions per search pass; refinement restores full resolution


class MultinomialCost:
    """Negative log-likelihood (nats) of a categorical model per segment: L * H(segment).

    On quantile-bin codes this sees any change of distribution; the gain of a
    split is (L_left + L_right) times the weighted Jensen-Shannon divergence of
    the two sides, so it is the likelihood-ratio (G) statistic halved.
    """

    def __init__(self, codes: np.ndarray, n_codes: int) -> None:
        self.n = codes.size
        # One contiguous prefix-count row per code (a row-wise cumsum is much faster than a column-wise one).
        self._counts = np.zeros((n_codes, self.n + 1), dtype=np.int32)
        np.cumsum(codes[None, :] == np.arange(n_codes)[:, None], axis=1, out=self._counts[:, 1:])

    def counts(self, start, end) -> np.ndarray:
        """Counts per code of each segment, shape (..., n_codes)."""
        return np.moveaxis(self._counts[:, end] - self._counts[:, start], 0, -1)

    def cost(self, start, end) -> np.ndarray:
        counts = self.counts(start, end).astype(float)
        length = counts.sum(axis=-1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(counts > 0, counts * np.log(counts / length), 0.0)
        return -terms.sum(axis=-1)


def split_gain(cost, start: int, change: int, end: int) -> float:
    """How much the change point ``change`` lowers the cost of ``[start, end)``."""
    whole = cost.cost(np.array([start]), np.array([end]))
    parts = cost.cost(np.array([start, change]), np.array([change, end]))
    return float(whole[0] - parts.sum())


def _best_split(cost, start: int, end: int, positions: np.ndarray, min_size: int) -> tuple[float, int]:
    lo = np.searchsorted(positions, start + min_size, side="left")
    hi = np.searchsorted(positions, end - min_size, side="right")
    candidates = positions[lo:hi]
    if candidates.size == 0:
        return -np.inf, -1
    starts = np.full(candidates.size, start)
    ends = np.full(candidates.size, end)
    whole = cost.cost(np.array([start]), np.array([end]))[0]
    gains = whole - cost.cost(starts, candidates) - cost.cost(candidates, ends)
    best = int(np.argmax(gains))  # first maximum: deterministic
    return float(gains[best]), int(candidates[best])


def binary_segmentation(cost, min_size: int, penalty: float, max_changes: int) -> list[int]:
    """Change points (sorted) of the series behind ``cost``.

    Greedy: split the segment whose best split gains most, while that gain
    exceeds ``penalty``, at most ``max_changes`` times; then drop change points
    that stop paying the penalty once their neighbours are known; then refine
    each at full resolution.
    """
    n = cost.n
    if n < 2 * min_size or max_changes < 1:
        return []
    positions = np.linspace(0, n, min(MAX_BLOCKS, n) + 1).round().astype(np.intp)  # sorted, distinct
    block = int(np.ceil(n / max(1, positions.size - 1)))
    heap: list[tuple[float, int, int, int]] = []

    def push(start: int, end: int) -> None:
        gain, at = _best_split(cost, start, end, positions, min_size)
        if at >= 0 and gain > penalty:
            heapq.heappush(heap, (-gain, start, end, at))

    push(0, n)
    changes: list[int] = []
    while heap and len(changes) < max_changes:
        _, start, end, at = heapq.heappop(heap)
        changes.append(at)
        push(start, at)
        push(at, end)
    changes = prune(cost, sorted(changes), penalty)
    return refine(cost, changes, min_size, block)


def prune(cost, changes: list[int], penalty: float) -> list[int]:
    """Backward elimination: remove the weakest change point while it gains less than ``penalty``.

    Greedy search can split a smooth ramp in its middle before finding its ends;
    once the ends are in, the middle split gains nothing and goes.
    """
    changes = list(changes)
    while changes:
        bounds = [0, *changes, cost.n]
        gains = [split_gain(cost, bounds[i], bounds[i + 1], bounds[i + 2]) for i in range(len(changes))]
        weakest = int(np.argmin(gains))
        if gains[weakest] > penalty:
            break
        del changes[weakest]
    return changes


def refine(cost, changes: list[int], min_size: int, block: int) -> list[int]:
    """Move each change point to its best full-resolution position within one block."""
    if block <= 1 or not changes:
        return changes
    changes = list(changes)
    for i in range(len(changes)):
        start, end, window = neighbourhood(changes, i, cost.n, min_size, block)
        if window.size:
            _, changes[i] = _best_split(cost, start, end, window, min_size)
    return changes
