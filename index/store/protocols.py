"""What users of an index rely on, whichever holds it: one machine's ``IndexStore`` or a cluster's
``ShardedStore`` (index/cluster.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from index.chunk import ChunkDraft
from index.embed import Vectors
from index.records import Article, Chunk, Span
from index.store.catalog import Catalog
from index.store.lexical import LexicalScores
from index.store.window import Window

Hits = list[tuple[int, float]]


@dataclass(frozen=True)
class ArticleWrite:
    """One article with its chunks and sentences and their vectors, ready to store."""

    article: Article
    chunks: Sequence[ChunkDraft]
    vectors: Vectors
    sentences: Sequence[Span] = ()
    sentence_vectors: Vectors | None = None
    """Vectors of ``sentences``, kept so answers need not embed sentences at query time."""
    story: str | None = None
    """The story the article belongs to, when the writer knows it (a cluster's ingest decides across all
    shards); otherwise the store finds near-duplicates among its own articles."""


class LexicalView(Protocol):
    def query(self, tokens: Sequence[str]) -> LexicalScores: ...

    def idf(self, tokens: Sequence[str]) -> npt.NDArray[np.float64]: ...


class SnapshotView(Protocol):
    """One consistent view for one query."""

    catalog: Catalog
    generation: int

    @property
    def size(self) -> int: ...

    @property
    def lexical(self) -> LexicalView: ...

    def search(self, query: Vectors, k: int, window: Window = ...) -> Hits: ...

    def vectors(self, ids: npt.NDArray[np.int64]) -> Vectors: ...

    def chunk_ids(self) -> npt.NDArray[np.int64]: ...


class StoreView(Protocol):
    """The stored index as the retriever, the composer, the answerer, the API and the evaluation read it."""

    def snapshot(self) -> SnapshotView: ...

    @property
    def size(self) -> int: ...

    def article_count(self) -> int: ...

    def close(self) -> None: ...

    def passages(self, ids: Sequence[int]) -> list[tuple[Chunk, Article]]: ...

    def chunks(self, ids: Sequence[int]) -> list[Chunk]: ...

    def articles(self, ids: Iterable[str]) -> dict[str, Article]: ...

    def article(self, article_id: str) -> Article: ...

    def sentence_vectors(self, article_id: str, spans: Sequence[Span]) -> dict[Span, Vectors]: ...

    def search(self, query: Vectors, k: int, window: Window = ...) -> Hits: ...

    def chunk_ids(self) -> npt.NDArray[np.int64]: ...

    def missing_shards(self) -> tuple[int, ...]: ...

    def content_hash(self, article_id: str) -> str | None: ...

    def write(self, batch: Sequence[ArticleWrite], publish: bool = ...) -> None: ...

    def flush(self) -> None: ...

    def delete(self, article_id: str) -> None: ...

    def watch(self, interval: float = ...) -> None: ...
