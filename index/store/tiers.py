"""The segment-list policy both segmented indexes share (vectors and BM25): tombstone removal, and
merging the smallest segments while ``fanout`` of them share a size tier (sizes within a factor of
``fanout``), so that a write costs its batch plus merges whose total is logarithmic, as in Lucene's
tiered merge policy. As Lucene's ``floor_segment``, segments under ``floor`` live entries merge as soon
as there are two: a stream of small writes (an HTTP ingest, a cluster's shards fed batch by batch)
leaves one small segment, not up to ``fanout`` - 1 of them in every tier for each question to search;
a write then costs at most ``floor`` entries more."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, Self, TypeVar

import numpy as np
import numpy.typing as npt

from index.store.window import Ids, Layout


class TieredSegment(Protocol):
    @property
    def layout(self) -> Layout: ...

    @property
    def live(self) -> int: ...

    def without(self, positions: npt.NDArray[np.int64]) -> Self: ...


S = TypeVar("S", bound=TieredSegment)
DEFAULT_FLOOR = 5_000


def without_ids(segments: Sequence[S], ids: Ids) -> list[S]:
    """The segments with ``ids`` marked removed (each segment touched only if it holds some)."""
    if not ids.size:
        return list(segments)
    kept: list[S] = []
    for segment in segments:
        positions = segment.layout.positions(ids)
        kept.append(segment.without(positions) if positions.size else segment)
    return kept


def merge_tiers(
    segments: Sequence[S], fanout: int, merge: Callable[[Sequence[S]], S], floor: int = DEFAULT_FLOOR
) -> list[S]:
    """Merge the segments under ``floor``, then the smallest while ``fanout`` of them share a size tier;
    empty merges vanish."""
    current = list(segments)
    small = [s for s in current if s.live < floor]
    if len(small) >= 2:
        chosen = {id(s) for s in small}
        merged = merge(small)
        current = [s for s in current if id(s) not in chosen] + ([merged] if merged.layout.size else [])
    while True:
        group: list[S] = []
        for segment in sorted(current, key=lambda s: s.live):
            if group and segment.live > max(group[0].live, 1) * fanout:
                break
            group.append(segment)
        if len(group) < fanout:
            return current
        merged = merge(group)
        chosen = {id(s) for s in group}
        current = [s for s in current if id(s) not in chosen]
        if merged.layout.size:
            current.append(merged)
