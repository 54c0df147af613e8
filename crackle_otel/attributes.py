"""Descriptive attributes of tasks (host.name, http.route ...), dictionary-encoded and bounded.

A span carries a handful of strings that say *where* it ran and *what* it was
for. Patterns use them to say why tasks stand apart, and the attribution
detector compares each value's tasks with the rest. Kept as one dict per task
they would cost ~2-4 KB a task (~0.5-0.8 GB for 50 groups of 4,096 spans);
encoded, a task costs two bytes per attribute name and each distinct value is
held once per kiln.

- ``AttributeTable``: an immutable table of the attributes of some tasks:
  ``codes[task, key]`` (0 = the task has no such attribute, ``NOT_KEPT`` = it
  had one whose value was not kept) indexing ``values[key]``. It reads as a
  sequence of per-task mappings (``table[i] -> {"host.name": "db-7"}`` or None).
- ``AttributeStore``: the kiln's ring buffer of encoded rows. Bounded: at most
  ``max_keys`` attribute names (more are skipped and counted) and
  ``TABLE_SIZE`` remembered values per name; a full table is compacted to the
  values still in the window, and a name with more than
  ``MAX_VALUES_PER_ATTRIBUTE`` of them there is high-cardinality (ids, user
  names, URLs with query strings): its further new values are not kept (counted)
  until the window has turned over once.
"""

from __future__ import annotations

import struct
from typing import Any, Iterator, Mapping, Sequence, overload

import numpy as np

ABSENT = 0
NOT_KEPT = -1
#: More distinct values than this in a window make an attribute high-cardinality:
#: its values are never compared one by one (they would be ids, not populations).
MAX_VALUES_PER_ATTRIBUTE = 128
#: Values remembered per attribute name before the table is compacted.
TABLE_SIZE = 2 * MAX_VALUES_PER_ATTRIBUTE
#: Longer values are cut (as extraction does): a value names something, it is not a payload.
MAX_VALUE_LENGTH = 128
DEFAULT_MAX_KEYS = 32
_CODE_TYPE = np.int16  # TABLE_SIZE + sentinels fit with room to spare
_INITIAL_WIDTH = 4


def _as_value(value: Any) -> str:
    text = value if type(value) is str else str(value)
    return text if len(text) <= MAX_VALUE_LENGTH else text[:MAX_VALUE_LENGTH]


class AttributeTable(Sequence[Mapping[str, str] | None]):
    """The descriptive attributes of ``n`` tasks, encoded per attribute name (immutable)."""

    __slots__ = ("keys", "codes", "values", "high_cardinality", "_index")

    def __init__(
        self,
        keys: Sequence[str],
        codes: np.ndarray,
        values: Sequence[Sequence[str]],
        high_cardinality: frozenset[str] = frozenset(),
    ) -> None:
        self.keys: tuple[str, ...] = tuple(keys)
        self.codes: np.ndarray = codes  # (n, len(keys)); 0 absent, NOT_KEPT, else 1 + index into values[key]
        self.values: tuple[tuple[str, ...], ...] = tuple(tuple(v) for v in values)
        #: Names whose values were not all kept (too many distinct values: now, or still in the window).
        self.high_cardinality = frozenset(high_cardinality)
        self._index = {key: j for j, key in enumerate(self.keys)}
        if codes.ndim != 2 or codes.shape[1] != len(self.keys) or len(self.values) != len(self.keys):
            raise ValueError("one code column and one value list per key expected")

    @classmethod
    def empty(cls, n: int) -> "AttributeTable":
        return cls((), np.zeros((n, 0), dtype=_CODE_TYPE), ())

    @classmethod
    def from_mappings(cls, rows: Sequence[Mapping[str, Any] | None]) -> "AttributeTable":
        """Encode per-task mappings (tests, scenarios, hand-built matrices); values become strings."""
        keys: dict[str, int] = {}
        tables: list[dict[str, int]] = []
        encoded: list[list[tuple[int, int]]] = []
        for row in rows:
            pairs = []
            for key, raw in (row or {}).items():
                j = keys.get(key)
                if j is None:
                    j = keys[key] = len(keys)
                    tables.append({})
                value = _as_value(raw)
                table = tables[j]
                code = table.get(value)
                if code is None:
                    code = table[value] = len(table) + 1
                pairs.append((j, code))
            encoded.append(pairs)
        dtype = _CODE_TYPE if all(len(t) < np.iinfo(_CODE_TYPE).max for t in tables) else np.int32
        codes = np.zeros((len(rows), len(keys)), dtype=dtype)
        for i, pairs in enumerate(encoded):
            for j, code in pairs:
                codes[i, j] = code
        return cls(tuple(keys), codes, [tuple(table) for table in tables])

    # -------------------------------------------------------------- reading
    def __len__(self) -> int:
        return self.codes.shape[0]

    @overload
    def __getitem__(self, index: int) -> Mapping[str, str] | None: ...

    @overload
    def __getitem__(self, index: slice) -> list[Mapping[str, str] | None]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._row(i) for i in range(*index.indices(len(self)))]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("task index out of range")
        return self._row(index)

    def _row(self, i: int) -> dict[str, str] | None:
        row = {}
        for j, code in enumerate(self.codes[i].tolist()):
            if code > 0:
                row[self.keys[j]] = self.values[j][code - 1]
        return row or None

    def __iter__(self) -> Iterator[Mapping[str, str] | None]:
        for i in range(len(self)):
            yield self._row(i)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (AttributeTable, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  (mutable-looking sequence semantics: unhashable)

    def __repr__(self) -> str:
        return f"AttributeTable({len(self)} tasks, keys={list(self.keys)})"

    def column(self, key: str) -> tuple[tuple[str, ...], np.ndarray] | None:
        """(values, codes) of one name: codes[i] = 1 + index into values, 0 absent, NOT_KEPT; None if unknown."""
        j = self._index.get(key)
        if j is None:
            return None
        return self.values[j], self.codes[:, j]

    def present_counts(self) -> dict[str, int]:
        """How many tasks carry each name."""
        return dict(zip(self.keys, (self.codes != ABSENT).sum(axis=0).tolist()))

    def take(self, rows: np.ndarray) -> "AttributeTable":
        """The table of the tasks at ``rows`` (in that order)."""
        return AttributeTable(self.keys, self.codes[rows], self.values, self.high_cardinality)


class AttributeStore:
    """Encoded attribute rows of a ring buffer of ``capacity`` tasks (the kiln's; caller locks)."""

    def __init__(self, capacity: int, max_keys: int = DEFAULT_MAX_KEYS, *, rows: int | None = None) -> None:
        self.capacity = capacity
        self.max_keys = max_keys
        # ``rows`` allocated now (the kiln grows them with its own, see ``grow``), up to ``capacity``.
        self._codes = np.zeros((rows or capacity, min(_INITIAL_WIDTH, max_keys)), dtype=_CODE_TYPE)
        self._keys: dict[str, int] = {}
        self._tables: list[dict[str, int]] = []  # per key: value -> code
        self._values: list[list[str]] = []  # per key: code - 1 -> value
        # (name, value) as a span carries it -> (column, code): one dict lookup per attribute on the
        # recording path. Holds only kept values (at most TABLE_SIZE, and their uncut forms, per name).
        self._pairs: dict[tuple[str, Any], tuple[int, int]] = {}
        self._high_since: list[int | None] = []  # per key: rows written when it turned high-cardinality
        self._written = 0  # rows ever written (the kiln's ring position)
        self._any = False
        self._layout()
        self.keys_rejected = 0  # attribute values skipped: their name came beyond max_keys
        self.values_not_kept = 0  # values of high-cardinality names, not kept

    def _layout(self) -> None:
        width = self._codes.shape[1]
        self._pack = struct.Struct(f"{width}h").pack_into
        self._buffer = memoryview(self._codes).cast("B")
        self._row_bytes = 2 * width
        self._zeros = (0,) * width

    def grow(self, rows: int) -> None:
        """Hold ``rows`` rows (the kiln's ring grew); written rows keep their slots."""
        grown = np.zeros((rows, self._codes.shape[1]), dtype=_CODE_TYPE)
        grown[: self._codes.shape[0]] = self._codes
        self._codes = grown
        self._layout()

    @property
    def has_attributes(self) -> bool:
        return self._any

    def write(self, slot: int, attributes: Mapping[str, Any] | None) -> None:
        """Encode ``attributes`` into row ``slot`` (the ``written``-th row of the ring)."""
        self._written += 1
        if not attributes:
            if self._any:
                self._pack(self._buffer, slot * self._row_bytes, *self._zeros)
            return
        self._any = True
        row = list(self._zeros)
        pairs = self._pairs
        for item in attributes.items():
            try:
                found = pairs.get(item)
            except TypeError:  # an unhashable value (a list): its string form is kept
                found = None
            if found is None:
                found = self._encode(*item)
                if found is None:
                    continue
                row.extend(self._zeros[len(row):])  # the matrix may have widened
            row[found[0]] = found[1]
        self._pack(self._buffer, slot * self._row_bytes, *row)

    def _encode(self, key: str, value: Any) -> tuple[int, int] | None:
        """(column, code) of a name and value not seen as such yet; None when the name gets no column."""
        j = self._keys.get(key)
        if j is None:
            j = self._add_key(key)
            if j is None:
                return None
        try:
            code = self._tables[j].get(value)
        except TypeError:
            code = None
        if code is None:
            code = self._add_value(j, value)
        if code > 0 and type(value) is str and len(value) <= MAX_VALUE_LENGTH:  # stored as it is: one entry per value
            self._pairs[(key, value)] = (j, code)
        return j, code

    def _add_key(self, key: str) -> int | None:
        if len(self._keys) >= self.max_keys:
            self.keys_rejected += 1
            return None
        j = len(self._keys)
        if j >= self._codes.shape[1]:
            grown = np.zeros((self._codes.shape[0], min(self.max_keys, 2 * self._codes.shape[1])), dtype=_CODE_TYPE)
            grown[:, : self._codes.shape[1]] = self._codes
            self._codes = grown
            self._layout()
        self._keys[key] = j
        self._tables.append({})
        self._values.append([])
        self._high_since.append(None)
        return j

    def _add_value(self, j: int, raw: Any) -> int:
        value = _as_value(raw)
        table = self._tables[j]
        if value is not raw and value in table:  # the cut (or str()) form is known
            return table[value]
        since = self._high_since[j]
        if since is not None and self._written - since <= self.capacity:
            self.values_not_kept += 1
            return NOT_KEPT
        # High-cardinality since a whole window ago (look again), or a full table: keep what is live.
        if (since is not None or len(table) >= TABLE_SIZE) and not self._compact(j):
            self._high_since[j] = self._written
            self.values_not_kept += 1
            return NOT_KEPT
        self._high_since[j] = None
        table = self._tables[j]  # compacting rebuilt it
        self._values[j].append(value)
        code = table[value] = len(self._values[j])
        if value is not raw and isinstance(raw, str):
            table[raw] = code  # the uncut string too, so the next one is found at once
        return code

    def _filled_rows(self) -> np.ndarray:
        return self._codes[: min(self._written, self.capacity)]

    def _compact(self, j: int) -> bool:
        """Keep only the values still in the window; False when too many are (high cardinality)."""
        column = self._filled_rows()[:, j]
        live = np.unique(column[column > 0])
        if live.size > MAX_VALUES_PER_ATTRIBUTE:
            return False
        remap = np.zeros(TABLE_SIZE + 2, dtype=_CODE_TYPE)
        remap[NOT_KEPT] = NOT_KEPT  # index -1: the last slot
        remap[live] = np.arange(1, live.size + 1, dtype=_CODE_TYPE)
        column[:] = remap[column]
        values = [self._values[j][code - 1] for code in live.tolist()]
        self._values[j] = values
        self._tables[j] = {value: code for code, value in enumerate(values, start=1)}
        self._pairs = {pair: found for pair, found in self._pairs.items() if found[0] != j}  # old codes
        return True

    def row(self, slot: int) -> dict[str, str]:
        names = list(self._keys)
        return {names[j]: self._values[j][code - 1]
                for j, code in enumerate(self._codes[slot, : len(names)].tolist()) if code > 0}

    def table(self, slots: np.ndarray) -> AttributeTable:
        """The attributes of the tasks at ``slots`` (in that order)."""
        names = tuple(self._keys)
        codes = self._codes[slots, : len(names)].copy()
        not_kept = (codes == NOT_KEPT).any(axis=0)
        high = frozenset(name for name, j in self._keys.items() if self._high_since[j] is not None or not_kept[j])
        return AttributeTable(names, codes, self._values, high)
