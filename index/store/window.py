"""What a search may return (``Window``), and how an immutable segment lays its entries out so that a
date window is a range of positions rather than a set of ids.

Every segment orders its entries by publication date, undated entries first: a cap such as "nothing
after as_of" is then one ``searchsorted`` and a FAISS range selector, whatever the corpus size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Ids = npt.NDArray[np.int64]
Hits = list[tuple[int, float]]
"""(chunk id, score), best first."""


def merge_hits(parts: Iterable[Hits], k: int) -> Hits:
    """The best ``k`` of several hit lists (of segments, or of shards): by score, then by id."""
    every = [hit for hits in parts for hit in hits]
    every.sort(key=lambda hit: (-hit[1], hit[0]))
    return every[:k]


@dataclass(frozen=True)
class Window:
    """Entries a search may return: published within ``after``..``before`` (proleptic ordinals, both
    inclusive, either open), undated ones when ``undated``, and only ``ids`` when given (sorted)."""

    after: int | None = None
    before: int | None = None
    undated: bool = True
    ids: Ids | None = field(default=None, compare=False)

    @property
    def everything(self) -> bool:
        return self.after is None and self.before is None and self.undated and self.ids is None

    def admits(self, day: int) -> bool:
        """Whether an entry published on ``day`` (an ordinal; negative: undated) passes the dates."""
        if day < 0:
            return self.undated
        return (self.after is None or day >= self.after) and (self.before is None or day <= self.before)


EVERYTHING = Window()


@dataclass(frozen=True)
class Layout:
    """The entries of one immutable segment in position order: by date, undated first."""

    ids: Ids
    """Chunk id at each position."""
    published: npt.NDArray[np.int32]
    """Publication ordinal at each position (-1: undated); ascending."""
    undated: int
    """Positions ``[0, undated)`` are the undated entries."""
    _sorted_ids: Ids
    _sorted_positions: npt.NDArray[np.int64]

    @classmethod
    def load(cls, data: Mapping[str, npt.NDArray[Any]]) -> Layout:
        """The layout saved as ``ids`` and ``published`` arrays; raises ValueError when they are not in
        position order (a damaged file)."""
        layout, order = cls.build(data["ids"].astype(np.int64), data["published"].astype(np.int32))
        if not np.array_equal(order, np.arange(layout.size)):
            raise ValueError("positions out of order")
        return layout

    @classmethod
    def build(cls, ids: Ids, published: npt.NDArray[np.int32]) -> tuple[Layout, npt.NDArray[np.int64]]:
        """The layout of entries given in any order, and the permutation that puts them in position order
        (apply it to whatever else is aligned with ``ids``)."""
        order = np.lexsort((ids, published)).astype(np.int64)
        ids, published = ids[order], published[order].astype(np.int32)
        by_id = np.argsort(ids, kind="stable").astype(np.int64)
        layout = cls(ids, published, int(np.count_nonzero(published < 0)), ids[by_id], by_id)
        return layout, order

    @property
    def size(self) -> int:
        return int(self.ids.size)

    def ranges(self, window: Window) -> list[tuple[int, int]]:
        """Position ranges ``[lo, hi)`` inside the window's dates (``window.ids`` is not applied)."""
        dated = self.published[self.undated :]
        lo = self.undated + (
            int(np.searchsorted(dated, window.after, "left")) if window.after is not None else 0
        )
        hi = self.undated + (
            int(np.searchsorted(dated, window.before, "right")) if window.before is not None else dated.size
        )
        found = []
        if window.undated and self.undated:
            found.append((0, self.undated))
        if hi > lo:
            if found and lo == self.undated:
                found[0] = (0, hi)
            else:
                found.append((lo, hi))
        return found

    def positions(self, ids: Ids) -> npt.NDArray[np.int64]:
        """Positions of ``ids`` that are in this segment (the others are left out), in the order given."""
        if not self.size or not ids.size:
            return np.zeros(0, dtype=np.int64)
        at = np.searchsorted(self._sorted_ids, ids)
        at = np.minimum(at, self.size - 1)
        hit = self._sorted_ids[at] == ids
        found: npt.NDArray[np.int64] = self._sorted_positions[at[hit]]
        return found

    def locate(self, ids: Ids) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
        """For each id: whether it is here, and its position (meaningless where it is not)."""
        if not self.size:
            return np.zeros(ids.size, dtype=bool), np.zeros(ids.size, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._sorted_ids, ids), self.size - 1)
        return self._sorted_ids[at] == ids, self._sorted_positions[at]

    def allowed(self, window: Window, deleted: npt.NDArray[np.bool_] | None) -> npt.NDArray[np.int64]:
        """Every allowed, live position, explicitly (for small selections and exact scoring)."""
        if window.ids is not None:
            found = np.sort(self.positions(window.ids))
            keep = np.zeros(found.size, dtype=bool)
            for lo, hi in self.ranges(window):
                keep |= (found >= lo) & (found < hi)
            found = found[keep]
        else:
            parts = [np.arange(lo, hi, dtype=np.int64) for lo, hi in self.ranges(window)]
            found = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        if deleted is not None and found.size:
            found = found[~deleted[found]]
        return found

    def count(self, window: Window) -> int:
        """How many positions the window's dates admit (an upper bound when ``window.ids`` is set)."""
        return sum(hi - lo for lo, hi in self.ranges(window))
