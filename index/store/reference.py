"""The reference implementations of the vector and lexical index protocols, kept to check the served
ones against (tests/test_store_contract.py runs one contract over both kinds of each):

``ExactVectors``
    One FAISS flat index, copied whole for every reader. Exact, and linear in the corpus for every
    write.
``FullBM25``
    bm25s over every chunk, rebuilt on every change, linear in the corpus per write.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import bm25s
import faiss
import numpy as np
import numpy.typing as npt

from index.store.lexical import K1, B, Tokens, idf, positive_top
from index.store.vectors import Vectors
from index.store.window import EVERYTHING, Hits, Ids, Window


class _ExactReader:
    def __init__(self, index: Any, published: dict[int, int], dimension: int) -> None:
        self._index = index
        self._published = published
        self._dimension = dimension

    @property
    def size(self) -> int:
        return int(self._index.ntotal)

    def search(self, query: Vectors, k: int, window: Window = EVERYTHING) -> Hits:
        if not self.size or k <= 0:
            return []
        params = None
        if not window.everything:
            allowed = np.array(
                [i for i, day in self._published.items() if window.admits(day)], dtype=np.int64
            )
            if window.ids is not None:
                allowed = np.intersect1d(allowed, window.ids)
            if not allowed.size:
                return []
            params = faiss.SearchParameters()
            params.sel = faiss.IDSelectorBatch(allowed)
        scores, ids = self._index.search(query.reshape(1, -1), min(k, self.size), params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def vectors(self, ids: Ids) -> Vectors:
        if not ids.size:
            return np.zeros((0, self._dimension), dtype=np.float32)
        return np.asarray(self._index.reconstruct_batch(ids), dtype=np.float32)


class ExactVectors:
    """Exhaustive inner-product search over one flat index, copied for each reader."""

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
        self._published: dict[int, int] = {}

    def add(self, ids: Ids, vectors: Vectors, published: npt.NDArray[np.int32]) -> None:
        if ids.size:
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
            self._published.update(zip(ids.tolist(), published.tolist(), strict=True))

    def remove(self, ids: Ids) -> None:
        if ids.size:
            self._index.remove_ids(faiss.IDSelectorBatch(ids))
            for i in ids.tolist():
                self._published.pop(i, None)

    def reader(self) -> _ExactReader:
        return _ExactReader(faiss.clone_index(self._index), dict(self._published), self.dimension)


class _FullScores:
    def __init__(self, scores: npt.NDArray[np.float32], ids: Ids, published: npt.NDArray[np.int32]) -> None:
        self._scores, self._ids, self._published = scores, ids, published
        self._order = np.argsort(ids)

    def top(self, k: int, window: Window = EVERYTHING) -> Hits:
        keep = np.ones(self._ids.size, dtype=bool)
        dated = self._published >= 0
        if window.after is not None:
            keep &= ~dated | (self._published >= window.after)
        if window.before is not None:
            keep &= ~dated | (self._published <= window.before)
        if not window.undated:
            keep &= dated
        if window.ids is not None:
            keep &= np.isin(self._ids, window.ids)
        return positive_top(self._scores[keep], self._ids[keep], k)

    def of(self, ids: Ids) -> npt.NDArray[np.float32]:
        if not self._ids.size:
            return np.zeros(ids.size, dtype=np.float32)
        at = np.minimum(np.searchsorted(self._ids[self._order], ids), self._ids.size - 1)
        hit = self._ids[self._order][at] == ids
        return np.where(hit, self._scores[self._order][at], 0.0).astype(np.float32)


class _FullReader:
    def __init__(
        self,
        model: bm25s.BM25 | None,
        ids: Ids,
        published: npt.NDArray[np.int32],
        documents: Sequence[Sequence[str]] = (),
    ) -> None:
        self._model, self._ids, self._published = model, ids, published
        self._documents = documents

    @property
    def size(self) -> int:
        return int(self._ids.size)

    def idf(self, tokens: Tokens) -> npt.NDArray[np.float64]:
        counts = Counter(t for document in self._documents for t in set(document))
        df = np.array([counts.get(t, 0) for t in tokens], dtype=np.float64)
        return idf(df, float(len(self._documents)))

    def query(self, tokens: Tokens) -> _FullScores:
        known = [t for t in tokens if self._model is not None and t in self._model.vocab_dict]
        if not known or self._model is None:
            scores = np.zeros(self._ids.size, dtype=np.float32)
        else:
            scores = np.asarray(self._model.get_scores(known), dtype=np.float32)
        return _FullScores(scores, self._ids, self._published)


class FullBM25:
    """bm25s over all chunks, rebuilt whenever they change."""

    def __init__(self) -> None:
        self._documents: dict[int, tuple[list[str], int]] = {}
        self._reader: _FullReader | None = None

    def add(self, ids: Ids, documents: Sequence[Tokens], published: npt.NDArray[np.int32]) -> None:
        for i, tokens, day in zip(ids.tolist(), documents, published.tolist(), strict=True):
            self._documents[i] = (list(tokens), day)
        self._reader = None

    def remove(self, ids: Ids) -> None:
        for i in ids.tolist():
            self._documents.pop(i, None)
        self._reader = None

    def reader(self) -> _FullReader:
        if self._reader is None:
            ids = np.array(sorted(self._documents), dtype=np.int64)
            published = np.array([self._documents[i][1] for i in ids.tolist()], dtype=np.int32)
            model = None
            corpus = [self._documents[i][0] for i in ids.tolist()]
            if ids.size and any(corpus):
                model = bm25s.BM25(k1=K1, b=B, method="lucene")
                model.index(corpus, show_progress=False)
            self._reader = _FullReader(model, ids, published, corpus)
        return self._reader
