"""Question to ranked passages: dense search over chunks, within filters and the ``as_of`` date."""

from __future__ import annotations

from datetime import date
from typing import Protocol

from index.embed import Embedder, Vectors
from index.store import IndexStore
from rag.records import Filters, Hit


class Retriever(Protocol):
    """Finds the passages most likely to answer a question."""

    def retrieve(
        self, query: str, query_vector: Vectors, k: int, filters: Filters, as_of: date | None
    ) -> list[Hit]: ...


class DenseRetriever:
    """Inner product of unit vectors (cosine) between the question and every allowed chunk."""

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
        found = self._store.search(query_vector, k, allowed)
        chunks = self._store.chunks([chunk_id for chunk_id, _ in found])
        articles = self._store.articles(c.article_id for c in chunks)
        scores = dict(found)
        return [
            Hit(rank=rank, score=scores[chunk.id], chunk=chunk, article=articles[chunk.article_id])
            for rank, chunk in enumerate(chunks, start=1)
        ]
