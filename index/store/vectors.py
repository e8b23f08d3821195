"""Vector indexes: add and remove chunk vectors, search within a window, vectors by id.

The served implementation of the protocol, checked by one contract suite against the reference,
``ExactVectors`` (index/store/reference.py: one FAISS flat index, copied whole for every reader):

``SegmentedVectors``
    A log-structured set of immutable segments. A write adds one small segment (its cost is the
    batch's); removals are tombstones; segments of a size tier merge when there are ``fanout`` of
    them. Segments up to ``ivf_threshold`` vectors are exact (flat); larger ones are IVF-Flat indexes
    trained on their own vectors (retrained at every merge, so they follow the data as it grows), with
    ``nprobe`` raised as a window narrows and exact scoring of the allowed positions when few remain.
    Positions in a segment are ordered by date, so a date window is a range selector.

A reader (``reader()``) is an immutable view: later writes never change what it returns.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import faiss
import numpy as np
import numpy.typing as npt

from index.store.files import atomically, save_arrays
from index.store.tiers import DEFAULT_FLOOR, merge_tiers, without_ids
from index.store.window import EVERYTHING, Hits, Ids, Layout, Window, merge_hits

Vectors = npt.NDArray[np.float32]

DEFAULT_FANOUT = 8
DEFAULT_IVF_THRESHOLD = 50_000
DEFAULT_NPROBE = 24
EXACT_BELOW = 20_000
"""Allowed positions below this count in an IVF segment are scored exactly instead."""


class VectorReader(Protocol):
    """An immutable view of a vector index."""

    @property
    def size(self) -> int:
        """Live vectors."""
        ...

    def search(self, query: Vectors, k: int, window: Window = EVERYTHING) -> Hits:
        """The best ``k`` (chunk id, inner product) inside the window, best first."""
        ...

    def vectors(self, ids: Ids) -> Vectors:
        """The vectors of ``ids`` (all must be live in this view), in the order given."""
        ...


class VectorIndex(Protocol):
    """The writer's side: one writer at a time; readers are taken with ``reader()``."""

    def add(self, ids: Ids, vectors: Vectors, published: npt.NDArray[np.int32]) -> None: ...

    def remove(self, ids: Ids) -> None: ...

    def reader(self) -> VectorReader: ...


def _top(scores: npt.NDArray[np.float32], ids: Ids, k: int) -> Hits:
    if not scores.size or k <= 0:
        return []
    if scores.size > k:
        cut = np.argpartition(-scores, k - 1)[:k]
        scores, ids = scores[cut], ids[cut]
    order = np.argsort(-scores, kind="stable")
    return [(int(ids[i]), float(scores[i])) for i in order]


# --- segmented ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """Immutable vectors in position order, and the positions removed since (a new mask per removal)."""

    layout: Layout
    index: Any
    """FAISS index whose labels are positions: IndexFlatIP, or IndexIVFFlat with a direct map."""
    ivf: bool
    deleted: npt.NDArray[np.bool_]
    deleted_bits: npt.NDArray[np.uint8]
    """``deleted`` packed for FAISS's IDSelectorBitmap (bit i = position i)."""
    removed: int
    name: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Stable across removals (the file of a saved segment keeps its name)."""

    @property
    def live(self) -> int:
        return self.layout.size - self.removed

    def search(self, query: Vectors, k: int, window: Window, nprobe: int) -> Hits:
        layout = self.layout
        admitted = layout.count(window)
        if not admitted or not self.live:
            return []
        keep: list[Any] = []  # FAISS selectors hold raw pointers: keep their objects alive
        small = window.ids is not None or (self.ivf and admitted <= EXACT_BELOW)
        if small:
            positions = layout.allowed(window, self.deleted if self.removed else None)
            if not positions.size:
                return []
            scores = self.vectors_at(positions) @ query.reshape(-1)
            return [(int(layout.ids[p]), s) for p, s in _top(scores.astype(np.float32), positions, k)]
        selector: Any = None
        ranges = layout.ranges(window)
        if ranges != [(0, layout.size)]:
            parts = [faiss.IDSelectorRange(lo, hi) for lo, hi in ranges]
            keep.extend(parts)
            selector = parts[0] if len(parts) == 1 else faiss.IDSelectorOr(parts[0], parts[1])
        if self.removed:
            bitmap = faiss.IDSelectorBitmap(layout.size, faiss.swig_ptr(self.deleted_bits))
            alive = faiss.IDSelectorNot(bitmap)
            keep.extend([bitmap, alive])
            selector = alive if selector is None else faiss.IDSelectorAnd(selector, alive)
        keep.append(selector)
        if self.ivf:
            params: Any = faiss.SearchParametersIVF()
            share = admitted / layout.size
            params.nprobe = min(int(self.index.nlist), math.ceil(nprobe / max(share, 1e-3)))
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        scores, positions = self.index.search(query.reshape(1, -1), min(k, admitted), params=params)
        return [
            (int(layout.ids[p]), float(s)) for p, s in zip(positions[0], scores[0], strict=True) if p >= 0
        ]

    def vectors_at(self, positions: npt.NDArray[np.int64]) -> Vectors:
        return np.asarray(self.index.reconstruct_batch(positions), dtype=np.float32)

    def save(self, folder: Path) -> list[Path]:
        """Write the segment atomically: its layout in ``seg-NAME.npz``, its FAISS index in
        ``seg-NAME.faiss`` (read back directly, without a copy). Returns the files."""
        files = self.files(folder, self.name)
        atomically(files[1], lambda tmp: faiss.write_index(self.index, str(tmp)))
        arrays = {"ids": self.layout.ids, "published": self.layout.published, "ivf": np.array(self.ivf)}
        save_arrays(files[0], arrays)
        return files

    @staticmethod
    def files(folder: Path, name: str) -> list[Path]:
        return [folder / f"seg-{name}.npz", folder / f"seg-{name}.faiss"]

    @classmethod
    def load(cls, folder: Path, name: str, dimension: int) -> Segment:
        """A saved segment; raises OSError, ValueError, KeyError or RuntimeError when it is damaged."""
        with np.load(folder / f"seg-{name}.npz", allow_pickle=False) as data:
            layout = Layout.load(data)
            ivf = bool(data["ivf"])
        # Mapped, not read: the pages are shared by every process serving this index, and a segment is
        # never changed once saved (a write makes a new segment; a merge writes a new file). FAISS maps an
        # IVF index's lists with one flag and a flat index's vectors with another, never both at once.
        flags = faiss.IO_FLAG_MMAP if ivf else faiss.IO_FLAG_MMAP_IFC
        index: Any = faiss.read_index(str(folder / f"seg-{name}.faiss"), flags)
        if index.d != dimension or index.ntotal != layout.size:
            raise ValueError(f"{index.ntotal} vectors of dimension {index.d}")
        if ivf:
            index.make_direct_map()
        deleted = np.zeros(layout.size, dtype=bool)
        return cls(layout, index, ivf, deleted, np.packbits(deleted, bitorder="little"), 0, name)

    def without(self, positions: npt.NDArray[np.int64]) -> Segment:
        deleted = self.deleted.copy()
        deleted[positions] = True
        return replace(
            self,
            deleted=deleted,
            deleted_bits=np.packbits(deleted, bitorder="little"),
            removed=int(np.count_nonzero(deleted)),
        )


def build_segment(
    ids: Ids, vectors: Vectors, published: npt.NDArray[np.int32], ivf_threshold: int = DEFAULT_IVF_THRESHOLD
) -> Segment:
    """An immutable segment of these vectors: flat below ``ivf_threshold``, IVF-Flat from there."""
    layout, order = Layout.build(ids, published)
    vectors = np.ascontiguousarray(vectors[order], dtype=np.float32)
    dimension = vectors.shape[1]
    ivf = ids.size >= ivf_threshold
    if ivf:
        nlist = int(min(1024, max(64, 2 * math.sqrt(ids.size))))
        quantizer = faiss.IndexFlatIP(dimension)
        index: Any = faiss.IndexIVFFlat(quantizer, dimension, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = vectors[rng.choice(ids.size, min(ids.size, nlist * 40), replace=False)]
        index.train(sample)
        index.add(vectors)
        index.make_direct_map()
    else:
        index = faiss.IndexFlatIP(dimension)
        index.add(vectors)
    deleted = np.zeros(ids.size, dtype=bool)
    return Segment(layout, index, ivf, deleted, np.packbits(deleted, bitorder="little"), 0)


class SegmentedReader:
    def __init__(self, segments: tuple[Segment, ...], dimension: int, nprobe: int) -> None:
        self._segments = segments
        self._dimension = dimension
        self._nprobe = nprobe

    @property
    def size(self) -> int:
        return sum(s.live for s in self._segments)

    @property
    def segments(self) -> int:
        return len(self._segments)

    def search(self, query: Vectors, k: int, window: Window = EVERYTHING) -> Hits:
        if k <= 0:
            return []
        return merge_hits([s.search(query, k, window, self._nprobe) for s in self._segments], k)

    def vectors(self, ids: Ids) -> Vectors:
        out = np.zeros((ids.size, self._dimension), dtype=np.float32)
        found = np.zeros(ids.size, dtype=bool)
        for segment in self._segments:
            here, positions = segment.layout.locate(ids)
            here &= ~found
            if segment.removed:
                here[here] &= ~segment.deleted[positions[here]]
            if here.any():
                out[here] = segment.vectors_at(positions[here])
                found |= here
        if not found.all():
            raise KeyError(f"{int((~found).sum())} vectors are not in this reader")
        return out


class SegmentedVectors:
    """Log-structured vector segments; see the module docstring."""

    KIND = "vectors"
    SEGMENT = Segment

    def __init__(
        self,
        dimension: int,
        fanout: int = DEFAULT_FANOUT,
        ivf_threshold: int = DEFAULT_IVF_THRESHOLD,
        nprobe: int = DEFAULT_NPROBE,
        floor: int = DEFAULT_FLOOR,
    ) -> None:
        self.dimension = dimension
        self.fanout = fanout
        self.floor = floor
        self.ivf_threshold = ivf_threshold
        self.nprobe = nprobe
        self._segments: list[Segment] = []

    @property
    def segments(self) -> tuple[Segment, ...]:
        return tuple(self._segments)

    def add(self, ids: Ids, vectors: Vectors, published: npt.NDArray[np.int32]) -> None:
        if ids.size:
            self._segments.append(build_segment(ids, vectors, published, self.ivf_threshold))
            self._merge_tiers()

    def add_segment(self, segment: Segment) -> None:
        """Adopt a segment built elsewhere (loaded from disk, or merged in the background)."""
        self._segments.append(segment)

    def remove(self, ids: Ids) -> None:
        self._segments = without_ids(self._segments, ids)

    def reader(self) -> SegmentedReader:
        return SegmentedReader(tuple(self._segments), self.dimension, self.nprobe)

    def _merge_tiers(self) -> None:
        self._segments = merge_tiers(self._segments, self.fanout, self._merged, self.floor)

    def _merged(self, group: Sequence[Segment]) -> Segment:
        ids, vectors, published = [], [], []
        for segment in group:
            alive = np.flatnonzero(~segment.deleted)
            ids.append(segment.layout.ids[alive])
            published.append(segment.layout.published[alive])
            vectors.append(
                segment.vectors_at(alive) if alive.size else np.zeros((0, self.dimension), np.float32)
            )
        return build_segment(
            np.concatenate(ids), np.vstack(vectors), np.concatenate(published), self.ivf_threshold
        )
