"""What users of an index rely on, whichever holds it: one machine's ``IndexStore`` or a cluster's
``ShardedStore`` (index/cluster.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from index.embed import Vectors
from index.records import Article, Chunk, Span
from index.store.catalog import Catalog
from index.store.lexical import LexicalScores
from index.store.window import Window

if TYPE_CHECKING:
    from index.store.store import ArticleWrite

Hits = list[tuple[int, float]]


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
