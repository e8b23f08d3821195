"""Per-article and per-chunk metadata in memory, so filters and features cost no SQL.

A ``Catalog`` is immutable; a write makes the next one from the previous and the change (``changed``):
new articles take new slots at the end, removed ones are marked dead, and nothing is re-read from
SQLite. Copying its arrays costs milliseconds at a million chunks; nothing in it is rebuilt.

``CatalogLookups`` answers a reader's catalog questions (index/store/protocols.py) from one catalog; the
local and the sharded readers both hold one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import numpy.typing as npt

from index.store.protocols import CatalogEntry
from index.store.window import Ids, Window


@dataclass(frozen=True)
class Catalog:
    """Articles by slot (a slot is never reused) and chunks by id."""

    article_ids: tuple[str, ...] = ()
    published: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    """Publication ordinal of each slot (``date.toordinal``), -1 when unknown."""
    sources: tuple[str, ...] = ()
    """Lowercased outlet of each slot ('' when unknown)."""
    stories: tuple[str, ...] = ()
    title_terms: tuple[str, ...] = ()
    """Each slot's title terms, space-separated (a set each would cost ten times the memory)."""
    alive: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    chunk_slot: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    """Slot of the article of each chunk id (-1: no such chunk)."""
    slot_of: dict[str, int] = field(default_factory=dict)
    """Live article id -> slot."""
    chunks_of: dict[int, tuple[int, ...]] = field(default_factory=dict)
    """Live slot -> chunk ids."""
    story_slots: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Live slots of every story."""
    chunks: int = 0
    """Live chunks."""

    @property
    def articles(self) -> int:
        return len(self.slot_of)

    def entry(self, slot: int) -> CatalogEntry:
        """What the catalog holds of the article in ``slot``."""
        published = int(self.published[slot])
        return CatalogEntry(
            article_id=self.article_ids[slot],
            published=date.fromordinal(published) if published > 0 else None,
            source=self.sources[slot] or None,
            story=self.stories[slot],
            title_terms=frozenset(self.title_terms[slot].split()),
            chunk_ids=self.chunks_of.get(slot, ()),
        )

    def copies(self, story: str) -> tuple[int, ...]:
        return self.story_slots.get(story, ())

    def slots(self, chunk_ids: Ids) -> npt.NDArray[np.int32]:
        """The article slot of each chunk id (-1 for chunks this catalog does not hold)."""
        inside = (chunk_ids >= 0) & (chunk_ids < self.chunk_slot.size)
        out = np.full(chunk_ids.size, -1, dtype=np.int32)
        out[inside] = self.chunk_slot[chunk_ids[inside]]
        return out

    def window(
        self,
        after: date | None = None,
        before: date | None = None,
        undated: bool = True,
        sources: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
    ) -> Window:
        """A search window for these filters; an outlet filter, or articles to leave out, become the chunk
        ids allowed."""
        ids = None
        if sources:
            wanted = {s.lower() for s in sources}
            chosen = [slot for slot in self.chunks_of if self.sources[slot] in wanted]
            ids = np.sort(np.array([c for slot in chosen for c in self.chunks_of[slot]], dtype=np.int64))
        if exclude:
            left_out = [c for a in exclude if a in self.slot_of for c in self.chunks_of[self.slot_of[a]]]
            if ids is None:
                ids = np.flatnonzero(self.chunk_slot >= 0).astype(np.int64)
            ids = np.setdiff1d(ids, np.array(left_out, dtype=np.int64))
        return Window(
            after=after.toordinal() if after else None,
            before=before.toordinal() if before else None,
            undated=undated,
            ids=ids,
        )

    @classmethod
    def build(cls, entries: Sequence[CatalogEntry]) -> Catalog:
        """A catalog of ``entries`` from scratch (what opening an index does), without per-entry copies."""
        if not entries:
            return cls()
        counts = np.array([len(e.chunk_ids) for e in entries], dtype=np.int64)
        chunk_ids = np.fromiter(
            (c for e in entries for c in e.chunk_ids), dtype=np.int64, count=int(counts.sum())
        )
        chunk_slot = np.full(int(chunk_ids.max()) + 1 if chunk_ids.size else 0, -1, dtype=np.int32)
        chunk_slot[chunk_ids] = np.repeat(np.arange(len(entries), dtype=np.int32), counts)
        story_slots: dict[str, list[int]] = {}
        for slot, entry in enumerate(entries):
            story_slots.setdefault(entry.story, []).append(slot)
        return cls(
            article_ids=tuple(e.article_id for e in entries),
            published=np.array([_ordinal(e.published) for e in entries], dtype=np.int32),
            sources=tuple((e.source or "").lower() for e in entries),
            stories=tuple(e.story for e in entries),
            title_terms=tuple(" ".join(e.title_terms) for e in entries),
            alive=np.ones(len(entries), dtype=bool),
            chunk_slot=chunk_slot,
            slot_of={e.article_id: slot for slot, e in enumerate(entries)},
            chunks_of={slot: e.chunk_ids for slot, e in enumerate(entries)},
            story_slots={story: tuple(slots) for story, slots in story_slots.items()},
            chunks=int(counts.sum()),
        )

    def changed(self, added: Iterable[CatalogEntry], removed: Iterable[str]) -> Catalog:
        """The next catalog: ``removed`` article ids gone (replaced ones too), ``added`` appended."""
        added = list(added)
        gone = {self.slot_of[a] for a in removed if a in self.slot_of}
        gone |= {self.slot_of[e.article_id] for e in added if e.article_id in self.slot_of}
        alive = self.alive.copy()
        slot_of = dict(self.slot_of)
        chunks_of = dict(self.chunks_of)
        story_slots = dict(self.story_slots)
        top = max([self.chunk_slot.size - 1, *(c for e in added for c in e.chunk_ids)], default=-1)
        chunk_slot = np.full(top + 1, -1, dtype=np.int32)
        chunk_slot[: self.chunk_slot.size] = self.chunk_slot
        count = self.chunks
        for slot in gone:
            alive[slot] = False
            del slot_of[self.article_ids[slot]]
            ids = chunks_of.pop(slot)
            chunk_slot[list(ids)] = -1
            count -= len(ids)
            story = self.stories[slot]
            rest = tuple(s for s in story_slots[story] if s != slot)
            if rest:
                story_slots[story] = rest
            else:
                del story_slots[story]
        first = len(self.article_ids)
        for offset, entry in enumerate(added):
            slot = first + offset
            slot_of[entry.article_id] = slot
            chunks_of[slot] = entry.chunk_ids
            chunk_slot[list(entry.chunk_ids)] = slot
            count += len(entry.chunk_ids)
            story_slots[entry.story] = (*story_slots.get(entry.story, ()), slot)
        return Catalog(
            article_ids=self.article_ids + tuple(e.article_id for e in added),
            published=np.concatenate(
                [self.published, np.array([_ordinal(e.published) for e in added], dtype=np.int32)]
            ),
            sources=self.sources + tuple((e.source or "").lower() for e in added),
            stories=self.stories + tuple(e.story for e in added),
            title_terms=self.title_terms + tuple(" ".join(e.title_terms) for e in added),
            alive=np.concatenate([alive, np.ones(len(added), dtype=bool)]),
            chunk_slot=chunk_slot,
            slot_of=slot_of,
            chunks_of=chunks_of,
            story_slots=story_slots,
            chunks=count,
        )


def _ordinal(day: date | None) -> int:
    return day.toordinal() if day else -1


class CatalogLookups:
    """The catalog part of ``IndexReader``, over ``self.catalog``."""

    catalog: Catalog

    @property
    def size(self) -> int:
        return self.catalog.chunks

    @property
    def article_count(self) -> int:
        return self.catalog.articles

    def chunk_ids(self) -> Ids:
        return np.flatnonzero(self.catalog.chunk_slot >= 0).astype(np.int64)

    def window(
        self,
        after: date | None = None,
        before: date | None = None,
        undated: bool = True,
        sources: Sequence[str] = (),
        exclude: Sequence[str] = (),
    ) -> Window:
        return self.catalog.window(after, before, undated, sources, exclude)

    def entries_of(self, chunk_ids: Sequence[int]) -> list[CatalogEntry | None]:
        slots = self.catalog.slots(np.asarray(chunk_ids, dtype=np.int64)).tolist()
        return [self.catalog.entry(slot) if slot >= 0 else None for slot in slots]

    def entry(self, article_id: str) -> CatalogEntry | None:
        slot = self.catalog.slot_of.get(article_id)
        return None if slot is None else self.catalog.entry(slot)

    def story(self, story: str) -> list[CatalogEntry]:
        return [self.catalog.entry(slot) for slot in self.catalog.copies(story)]
