"""Lexical indexes: BM25 (the Lucene variant: k1 = 1.5, b = 0.75) over tokenized chunks.

The served implementation of the protocol, checked by one contract suite against the reference,
``FullBM25`` (index/store/reference.py: bm25s over every chunk, rebuilt on every change):

``SegmentedBM25``
    Immutable segments holding raw term frequencies (a sparse positions x terms matrix) and document
    lengths; a write adds one small segment, removals are tombstones, and segments of a size tier merge
    as vectors do. Scores use corpus-wide statistics at query time (document frequencies summed over
    segments, the current average length), so a term scores the same whichever segment holds the
    chunk. As in Lucene, removed chunks count in document frequencies until their segment merges.

Tokens come from ``index.lexical.tokenize``; a query scores what its tokens match (a token repeated in the
question counts again, as in bm25s).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from index.store.files import map_arrays, save_arrays
from index.store.protocols import LexicalScores, Statistics
from index.store.tiers import DEFAULT_FLOOR, merge_tiers, without_ids
from index.store.window import EVERYTHING, Hits, Ids, Layout, Window, merge_hits

K1 = 1.5
B = 0.75
LARGE_SEGMENT = 50_000
COMMON_SHARE = 0.2
NOMINATION_POSTINGS = 100
Tokens = Sequence[str]


class LexicalReader(Protocol):
    """An immutable view of a lexical index."""

    @property
    def size(self) -> int: ...

    def query(self, tokens: Tokens) -> LexicalScores: ...

    def idf(self, tokens: Tokens) -> npt.NDArray[np.float64]:
        """The BM25 inverse document frequency of each token (unknown tokens: the rarest possible)."""
        ...


class LexicalIndex(Protocol):
    """The writer's side: one writer at a time; readers are taken with ``reader()``."""

    def add(self, ids: Ids, documents: Sequence[Tokens], published: npt.NDArray[np.int32]) -> None: ...

    def remove(self, ids: Ids) -> None: ...

    def reader(self) -> LexicalReader: ...


def idf(df: npt.NDArray[np.float64], n: float) -> npt.NDArray[np.float64]:
    return np.log1p((n - df + 0.5) / (df + 0.5))


def bm25(
    tf: npt.NDArray[np.float32],
    lengths: npt.NDArray[np.float32],
    tokens: Tokens,
    statistics: Statistics,
) -> npt.NDArray[np.float32]:
    """BM25 of rows of term frequencies (columns: ``tokens``, a query that counts a repeated token again)
    with ``statistics``: what a segment scores, computed from the counts alone."""
    if not tf.size:
        return np.zeros(tf.shape[0], dtype=np.float32)
    known = dict(zip(statistics.tokens, statistics.df, strict=True))
    weights = idf(np.array([known.get(t, 0) for t in tokens], dtype=np.float64), float(statistics.documents))
    norm = K1 * ((1 - B) + B * lengths.astype(np.float64) / statistics.avgdl)
    scores = (weights * tf / (tf + norm[:, None])).sum(axis=1)
    return np.where(tf.sum(axis=1) > 0, scores, 0.0).astype(np.float32)


def positive_top(scores: npt.NDArray[np.float32], ids: Ids, k: int) -> Hits:
    """The ``k`` best positive scores (one pass to find the matched positions, then only those)."""
    matched = np.flatnonzero(scores > 0)
    if not matched.size or k <= 0:
        return []
    if matched.size > k:
        matched = matched[np.argpartition(-scores[matched], k - 1)[:k]]
    chosen, named = scores[matched], ids[matched]
    order = np.lexsort((named, -chosen))
    return [(int(named[i]), float(chosen[i])) for i in order]


def _top_at(scores: npt.NDArray[np.float32], where: npt.NDArray[np.int64] | int, k: int) -> Hits:
    """``positive_top`` of a slice of positions (``where``: its first position) or of explicit ``where``
    positions."""
    matched = np.flatnonzero(scores > 0)
    if not matched.size or k <= 0:
        return []
    if matched.size > k:
        matched = matched[np.argpartition(-scores[matched], k - 1)[:k]]
    chosen = scores[matched]
    positions = matched + where if isinstance(where, int) else where[matched]
    order = np.lexsort((positions, -chosen))
    return [(int(positions[i]), float(chosen[i])) for i in order]


# --- segmented ---------------------------------------------------------------------------------------


class Vocabulary:
    """Term ids, shared by every segment of one index; it only grows."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def encode(self, tokens: Tokens) -> list[int]:
        ids = self.ids
        return [ids.setdefault(t, len(ids)) for t in tokens]


@dataclass(frozen=True)
class Segment:
    layout: Layout
    tf: sp.csc_matrix
    """Positions x term ids (as many terms as the vocabulary had at build), raw term frequencies."""
    lengths: npt.NDArray[np.float32]
    df: npt.NDArray[np.int64]
    """Chunks of this segment holding each term (removed chunks included, as in Lucene)."""
    deleted: npt.NDArray[np.bool_]
    removed: int
    name: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Stable across removals (the file of a saved segment keeps its name)."""

    @property
    def live(self) -> int:
        return self.layout.size - self.removed

    def scores(
        self, terms: npt.NDArray[np.int64], weights: npt.NDArray[np.float64], avgdl: float
    ) -> npt.NDArray[np.float32]:
        usable = terms < self.tf.shape[1]
        terms, weights = terms[usable], weights[usable]
        if not terms.size:
            return np.zeros(self.layout.size, dtype=np.float32)
        sub = self.tf[:, terms]
        rows = sub.indices
        per_term = np.repeat(weights, np.diff(sub.indptr))
        tf = sub.data.astype(np.float64)
        norm = K1 * ((1 - B) + B * self.lengths[rows] / avgdl)
        contribution = per_term * tf / (tf + norm)
        return np.bincount(rows, contribution, minlength=self.layout.size).astype(np.float32)

    def scores_at(
        self,
        positions: npt.NDArray[np.int64],
        terms: npt.NDArray[np.int64],
        weights: npt.NDArray[np.float64],
        avgdl: float,
    ) -> npt.NDArray[np.float32]:
        """Exact scores of a few positions: each term's postings (sorted) are searched, not scanned."""
        out = np.zeros(positions.size, dtype=np.float64)
        if not positions.size:
            return out.astype(np.float32)
        norm = K1 * ((1 - B) + B * self.lengths[positions] / avgdl)
        indptr, indices, data = self.tf.indptr, self.tf.indices, self.tf.data
        for term, weight in zip(terms.tolist(), weights.tolist(), strict=True):
            if term >= self.tf.shape[1]:
                continue
            rows = indices[indptr[term] : indptr[term + 1]]
            at = np.minimum(np.searchsorted(rows, positions), max(rows.size - 1, 0))
            hit = rows[at] == positions if rows.size else np.zeros(positions.size, dtype=bool)
            tf = np.where(hit, data[indptr[term] + at] if rows.size else 0.0, 0.0)
            out += weight * tf / (tf + norm)
        return out.astype(np.float32)

    def without(self, positions: npt.NDArray[np.int64]) -> Segment:
        deleted = self.deleted.copy()
        deleted[positions] = True
        return replace(self, deleted=deleted, removed=int(np.count_nonzero(deleted)))

    def save(self, folder: Path) -> list[Path]:
        """Write the segment atomically to ``seg-NAME.npz`` (its layout, term matrix and lengths)."""
        (path,) = self.files(folder, self.name)
        tf = self.tf
        arrays = {
            "ids": self.layout.ids,
            "published": self.layout.published,
            "data": tf.data,
            "indices": tf.indices,
            "indptr": tf.indptr,
            "shape": np.array(tf.shape),
            "lengths": self.lengths,
        }
        save_arrays(path, arrays)
        return [path]

    @staticmethod
    def files(folder: Path, name: str) -> list[Path]:
        return [folder / f"seg-{name}.npz"]

    @classmethod
    def load(cls, folder: Path, name: str, dimension: int) -> Segment:
        """A saved segment; raises OSError, ValueError or KeyError when it is damaged."""
        del dimension  # vectors only
        data = map_arrays(folder / f"seg-{name}.npz")  # shared by every process that serves the index
        layout = Layout.load(data)
        shape = tuple(int(n) for n in data["shape"])
        tf = sp.csc_matrix((data["data"], data["indices"], data["indptr"]), shape=shape, copy=False)
        lengths = data["lengths"]
        tf.sort_indices()  # saved sorted: a no-op that writes nothing
        df = np.diff(tf.indptr).astype(np.int64)
        return cls(layout, tf, lengths, df, np.zeros(layout.size, dtype=bool), 0, name)


def term_counts(documents: Sequence[Sequence[int]], vocabulary_size: int) -> sp.csr_matrix:
    """Documents (term ids) as a documents x terms matrix of term frequencies."""
    rows: list[int] = []
    cols: list[int] = []
    counts: list[int] = []
    for row, document in enumerate(documents):
        terms = Counter(document)
        rows.extend([row] * len(terms))
        cols.extend(terms)
        counts.extend(terms.values())
    data = np.array(counts, dtype=np.float32)
    coordinates = (np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64))
    return sp.csr_matrix((data, coordinates), shape=(len(documents), vocabulary_size))


def build_segment(ids: Ids, tf: sp.csr_matrix, published: npt.NDArray[np.int32]) -> Segment:
    """An immutable segment from a documents x terms matrix of term frequencies (rows in ``ids`` order)."""
    layout, order = Layout.build(ids, published)
    tf = tf[order].tocsc()
    tf.sort_indices()
    lengths = np.asarray(tf.sum(axis=1)).ravel().astype(np.float32)
    df = np.diff(tf.indptr).astype(np.int64)
    return Segment(layout, tf, lengths, df, np.zeros(ids.size, dtype=bool), 0)


class SegmentedScores:
    """One query's scores. In a segment of ``LARGE_SEGMENT`` chunks or more, only the query's rarer terms
    nominate candidates (those in at most ``COMMON_SHARE`` of its chunks, and more, rarest first, until
    their postings number ``NOMINATION_POSTINGS`` times the candidates wanted), whose exact scores (every
    term) then rank them: the long posting lists of common words are not scanned whole. Smaller segments
    are scored exactly throughout."""

    def __init__(
        self,
        segments: tuple[Segment, ...],
        terms: npt.NDArray[np.int64],
        weights: npt.NDArray[np.float64],
        avgdl: float,
        large_segment: int = LARGE_SEGMENT,
    ) -> None:
        self._segments, self._terms, self._weights, self._avgdl = segments, terms, weights, avgdl
        self._large = large_segment

    def top(self, k: int, window: Window = EVERYTHING) -> Hits:
        if not self._terms.size or k <= 0:
            return []
        found = []
        for segment in self._segments:
            depth = max(4 * k, 100)
            nominate = self._terms
            if segment.layout.size >= self._large:
                usable = self._terms[self._terms < segment.tf.shape[1]]
                order = np.argsort(segment.df[usable], kind="stable")
                postings = np.cumsum(segment.df[usable][order])
                # The rarest terms, until they reach every common term's share or enough postings to fill
                # the candidates many times over.
                enough = postings >= NOMINATION_POSTINGS * depth
                rare = segment.df[usable][order] <= COMMON_SHARE * segment.layout.size
                keep = rare | ~np.concatenate([[False], enough[:-1]])
                nominate = np.sort(usable[order][keep])
            weights = self._weights[np.isin(self._terms, nominate)]
            scores = segment.scores(nominate, weights, self._avgdl)
            exact = nominate.size == self._terms.size
            depth = k if exact else depth
            if window.ids is not None:
                allowed = segment.layout.allowed(window, segment.deleted if segment.removed else None)
                parts: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64] | int]] = [
                    (scores[allowed], allowed)
                ]
            else:
                parts = []
                for lo, hi in segment.layout.ranges(window):
                    part = scores[lo:hi]
                    if segment.removed:
                        part = np.where(segment.deleted[lo:hi], 0.0, part).astype(np.float32)
                    parts.append((part, lo))
            for part, where in parts:
                hits = _top_at(part, where, depth)
                if not exact and hits:
                    chosen = np.array([p for p, _ in hits], dtype=np.int64)
                    exact_scores = segment.scores_at(chosen, self._terms, self._weights, self._avgdl)
                    hits = positive_top(exact_scores, chosen, k)
                found.append([(int(segment.layout.ids[p]), score) for p, score in hits])
        return merge_hits(found, k)

    def of(self, ids: Ids) -> npt.NDArray[np.float32]:
        out = np.zeros(ids.size, dtype=np.float32)
        if not self._terms.size:
            return out
        for segment in self._segments:
            here, positions = segment.layout.locate(ids)
            if segment.removed:
                here[here] &= ~segment.deleted[positions[here]]
            if here.any():
                out[here] = segment.scores_at(positions[here], self._terms, self._weights, self._avgdl)
        return out


class SegmentedReader:
    def __init__(
        self, segments: tuple[Segment, ...], vocabulary: Vocabulary, large_segment: int = LARGE_SEGMENT
    ) -> None:
        self._segments = segments
        self._large = large_segment
        self._vocabulary = vocabulary
        self._documents = sum(s.layout.size for s in segments)
        self._avgdl = (
            (sum(float(s.lengths.sum()) for s in segments) / self._documents) if self._documents else 1.0
        )
        width = max((s.tf.shape[1] for s in segments), default=0)
        self._df = np.zeros(width, dtype=np.int64)
        for s in segments:
            self._df[: s.df.size] += s.df

    @property
    def size(self) -> int:
        return sum(s.live for s in self._segments)

    def idf(self, tokens: Tokens) -> npt.NDArray[np.float64]:
        ids = [self._vocabulary.ids.get(t, -1) for t in tokens]
        df = np.array([self._df[i] if 0 <= i < self._df.size else 0 for i in ids], dtype=np.float64)
        return idf(df, float(self._documents))

    def statistics(self, tokens: Tokens) -> Statistics:
        """This index's share of the corpus statistics BM25 needs for ``tokens`` (summed across shards)."""
        ids = [self._vocabulary.ids.get(t, -1) for t in tokens]
        df = tuple(int(self._df[i]) if 0 <= i < self._df.size else 0 for i in ids)
        lengths = sum(float(s.lengths.sum()) for s in self._segments)
        return Statistics(tuple(tokens), df, self._documents, lengths)

    def term_frequencies(
        self, ids: Ids, tokens: Tokens
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """How often each of ``tokens`` occurs in each chunk of ``ids`` (rows: ids, columns: tokens), and
        each chunk's length: what BM25 needs besides the statistics (a cluster's driver scores with them)."""
        terms = [self._vocabulary.ids.get(t, -1) for t in tokens]
        tf = np.zeros((ids.size, len(terms)), dtype=np.float32)
        lengths = np.zeros(ids.size, dtype=np.float32)
        for segment in self._segments:
            here, positions = segment.layout.locate(ids)
            if segment.removed:
                here[here] &= ~segment.deleted[positions[here]]
            if not here.any():
                continue
            at = positions[here]
            lengths[here] = segment.lengths[at]
            indptr, indices, data = segment.tf.indptr, segment.tf.indices, segment.tf.data
            for column, term in enumerate(terms):
                if not 0 <= term < segment.tf.shape[1]:
                    continue
                rows = indices[indptr[term] : indptr[term + 1]]
                if not rows.size:
                    continue
                found = np.minimum(np.searchsorted(rows, at), rows.size - 1)
                hit = rows[found] == at
                tf[np.flatnonzero(here)[hit], column] = data[indptr[term] + found[hit]]
        return tf, lengths

    def query(self, tokens: Tokens, statistics: Statistics | None = None) -> SegmentedScores:
        """Scores of ``tokens``; with ``statistics`` (the whole corpus's, when this index is one shard of
        it) a chunk scores as it would in one index holding everything."""
        counts = Counter(self._vocabulary.ids.get(t, -1) for t in tokens)
        counts.pop(-1, None)
        terms = np.array(sorted(t for t in counts if t < self._df.size), dtype=np.int64)
        df, documents, avgdl = self._df[terms].astype(np.float64), float(self._documents), self._avgdl
        if statistics is not None:
            known = dict(zip(statistics.tokens, statistics.df, strict=True))
            names = {self._vocabulary.ids[t]: t for t in tokens if t in self._vocabulary.ids}
            df = np.array([known.get(names[t], 0) for t in terms.tolist()], dtype=np.float64)
            documents, avgdl = float(statistics.documents), statistics.avgdl
        weights = np.array([counts[t] for t in terms.tolist()], dtype=np.float64) * idf(df, documents)
        return SegmentedScores(self._segments, terms, weights, avgdl, self._large)


class SegmentedBM25:
    """Log-structured BM25 segments; see the module docstring."""

    KIND = "lexical"
    SEGMENT = Segment

    def __init__(
        self,
        fanout: int = 8,
        vocabulary: Vocabulary | None = None,
        large_segment: int = LARGE_SEGMENT,
        floor: int = DEFAULT_FLOOR,
    ) -> None:
        self.fanout = fanout
        self.floor = floor
        self.large_segment = large_segment
        """Segments this large nominate candidates by their rarer terms only (see SegmentedScores)."""
        self.vocabulary = vocabulary or Vocabulary()
        self._segments: list[Segment] = []

    @property
    def segments(self) -> tuple[Segment, ...]:
        return tuple(self._segments)

    def add(self, ids: Ids, documents: Sequence[Tokens], published: npt.NDArray[np.int32]) -> None:
        if ids.size:
            encoded = [self.vocabulary.encode(tokens) for tokens in documents]
            self.add_counts(ids, term_counts(encoded, len(self.vocabulary.ids)), published)

    def add_counts(self, ids: Ids, tf: sp.csr_matrix, published: npt.NDArray[np.int32]) -> None:
        """Add documents given as term frequencies over this index's vocabulary (rows in ``ids`` order)."""
        if ids.size:
            self._segments.append(build_segment(ids, tf, published))
            self._merge_tiers()

    def add_segment(self, segment: Segment) -> None:
        self._segments.append(segment)

    def remove(self, ids: Ids) -> None:
        self._segments = without_ids(self._segments, ids)

    def reader(self) -> SegmentedReader:
        return SegmentedReader(tuple(self._segments), self.vocabulary, self.large_segment)

    def _merge_tiers(self) -> None:
        self._segments = merge_tiers(self._segments, self.fanout, self._merged, self.floor)

    def _merged(self, group: Sequence[Segment]) -> Segment:
        width = len(self.vocabulary.ids)
        ids, published, matrices = [], [], []
        for segment in group:
            alive = np.flatnonzero(~segment.deleted)
            ids.append(segment.layout.ids[alive])
            published.append(segment.layout.published[alive])
            tf = segment.tf[alive].tocsr()
            tf.resize((alive.size, width))
            matrices.append(tf)
        return build_segment(
            np.concatenate(ids), sp.vstack(matrices, format="csr"), np.concatenate(published)
        )
