"""Question to ranked passages: dense search over chunks, within filters and the ``as_of`` date."""

from __future__ import annotations

from datetime import date
from typing import Protocol

from index.embed import Embedder, Vectors
from index.records import Chunk
from index.store import IndexStore
from rag.records import Filters, Hit

_OVERFETCH = 4


class Retriever(Protocol):
    """Finds the passages most likely to answer a question."""

    def retrieve(
        self, query: str, query_vector: Vectors, k: int, filters: Filters, as_of: date | None
    ) -> list[Hit]: ...


class DenseRetriever:
    """Inner product of unit vectors (cosine) between the question and every allowed chunk.

    Returns the best passage of each of the ``k`` best articles, so one long article cannot fill the list.
    """

    def __init__(self, store: IndexStore, embedder: Embedder) -> None:
        self._store = store
        self._embedder = embedder

    def retrieve(
        self, query: str, query_vector: Vectors, k: int, filters: Filters, as_of: date | None
    ) -> list[Hit]:
        before = filters.published_before
        if as_of is not None and (before is None or as_of < before):
            before = as_of
        allowed = None
        if filters.sources or filters.published_after or before:
            allowed = self._store.chunk_ids(filters.sources, filters.published_after, before)
        depth = k * _OVERFETCH
        while True:
            found = self._store.search(query_vector, depth, allowed)
            chunks = self._store.chunks([chunk_id for chunk_id, _ in found])
            best: dict[str, Chunk] = {}
            for chunk in chunks:
                best.setdefault(chunk.article_id, chunk)
            if len(best) >= k or len(found) < depth:
                break
            depth *= 4
        scores = dict(found)
        top = list(best.values())[:k]
        articles = self._store.articles(c.article_id for c in top)
        return [
            Hit(rank=rank, score=scores[chunk.id], chunk=chunk, article=articles[chunk.article_id])
            for rank, chunk in enumerate(top, start=1)
        ]
