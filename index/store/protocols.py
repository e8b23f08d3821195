"""The seam between an index and its users: what one question reads (``IndexReader``), what an ingest
writes (``IndexWriter``), and the records that cross it. Two backends implement them: one machine's
``IndexStore`` (index/store/local.py) and a Ray cluster's ``ShardedStore`` (index/store/sharded.py); one
contract suite runs over both (tests/test_index_contract.py).

A reader is one generation of the index, frozen: take it once per question (``Index.reader()``) and
read only from it. Its searches and catalog lookups see that generation alone; text (passages,
articles, sentence vectors) is read by id at the end, leaving out ids a later write removed, so an
article deleted before a question began is never cited.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from index.chunk import ChunkDraft
from index.embed import Vectors
from index.records import Article, Chunk, Span
from index.store.window import EVERYTHING, Hits, Ids, Window

if TYPE_CHECKING:
    from index.store.probe import Probe

Tokens = Sequence[str]


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
    """The story the article belongs to, when the writer knows it (a cluster's driver decides across
    all shards); otherwise the store assigns it among its own articles (index/dedup.py)."""


@dataclass(frozen=True)
class CatalogEntry:
    """What an index knows of one article without reading its text."""

    article_id: str
    published: date | None
    source: str | None
    story: str
    title_terms: frozenset[str]
    chunk_ids: tuple[int, ...]


@dataclass(frozen=True)
class Statistics:
    """Corpus statistics for some tokens: document frequencies, documents, total length. Shards add them
    up (``combine``), so every shard scores with the whole corpus's numbers."""

    tokens: tuple[str, ...]
    df: tuple[int, ...]
    documents: int
    lengths: float

    @property
    def avgdl(self) -> float:
        return self.lengths / self.documents if self.documents else 1.0

    @staticmethod
    def combine(parts: Sequence[Statistics]) -> Statistics:
        first = parts[0]
        df = tuple(sum(p.df[i] for p in parts) for i in range(len(first.tokens)))
        return Statistics(first.tokens, df, sum(p.documents for p in parts), sum(p.lengths for p in parts))


class LexicalScores(Protocol):
    """One query's BM25 scores over a reader's chunks."""

    def top(self, k: int, window: Window = EVERYTHING) -> Hits:
        """The best ``k`` (chunk id, score) with a positive score inside the window, best first."""
        ...

    def of(self, ids: Ids) -> npt.NDArray[np.float32]:
        """The scores of ``ids`` (0 for chunks not matched or not present)."""
        ...


class IndexReader(Protocol):
    """One generation of the index, frozen; see the module docstring."""

    @property
    def generation(self) -> int: ...

    @property
    def size(self) -> int:
        """Live chunks."""
        ...

    @property
    def article_count(self) -> int:
        """Live articles."""
        ...

    @property
    def missing_shards(self) -> tuple[int, ...]:
        """Shards this reader could not reach so far (answers came from the others); () on one machine."""
        ...

    def chunk_ids(self) -> Ids:
        """Every live chunk id, ascending."""
        ...

    def prefetch(self, probe: Probe) -> None:
        """What this question will search (index/store/probe.py): a reader may fetch it all at once (a
        cluster's asks every shard once) and answer the searches it covers from that."""
        ...

    # --- dense --------------------------------------------------------------------------------------

    def dense(self, query: Vectors, k: int, window: Window = EVERYTHING) -> Hits:
        """The best ``k`` (chunk id, inner product) inside ``window``, best first."""
        ...

    def vectors(self, ids: Ids) -> Vectors:
        """The stored vectors of chunk ``ids`` (all of them live in this generation), in order."""
        ...

    def similarities(self, query: Vectors, ids: Ids) -> npt.NDArray[np.float32]:
        """The inner product of ``query`` with the vector of each chunk of ``ids`` (all live)."""
        ...

    # --- lexical ------------------------------------------------------------------------------------

    def statistics(self, tokens: Tokens) -> Statistics:
        """This index's BM25 statistics for ``tokens``."""
        ...

    def lexical(self, tokens: Tokens, statistics: Statistics | None = None) -> LexicalScores:
        """BM25 scores of a query, with ``statistics`` (a whole cluster's) or this index's own."""
        ...

    def idf(self, tokens: Tokens) -> npt.NDArray[np.float64]:
        """The BM25 inverse document frequency of each token over the whole index."""
        ...

    # --- the catalog --------------------------------------------------------------------------------

    def window(
        self,
        after: date | None = None,
        before: date | None = None,
        undated: bool = True,
        sources: Sequence[str] = (),
        exclude: Sequence[str] = (),
    ) -> Window:
        """What a search may return: published within the dates (undated articles when ``undated``),
        from these outlets only (any when empty, case-insensitive), leaving out ``exclude``."""
        ...

    def entries_of(self, chunk_ids: Sequence[int]) -> list[CatalogEntry | None]:
        """The article of each chunk (None for a chunk this generation does not hold)."""
        ...

    def entry(self, article_id: str) -> CatalogEntry | None: ...

    def story(self, story: str) -> list[CatalogEntry]:
        """The live articles of one story, in the order they were written."""
        ...

    # --- text, read by id ---------------------------------------------------------------------------

    def passages(self, ids: Sequence[int]) -> list[tuple[Chunk, Article]]:
        """Chunks with their articles, in the order asked, leaving out ids a later write removed."""
        ...

    def articles(self, ids: Iterable[str]) -> dict[str, Article]:
        """Articles by id, leaving out ids with no article."""
        ...

    def sentence_vectors(self, article_id: str, spans: Sequence[Span]) -> dict[Span, Vectors]:
        """The vectors stored at ingest for these sentences of one article (those that were)."""
        ...


class IndexWriter(Protocol):
    """What an ingest writes through: one writer's batches, each all or nothing."""

    def content_hashes(self, ids: Sequence[str]) -> dict[str, str | None]:
        """The stored content hash of each id (None: not stored)."""
        ...

    def write(self, batch: Sequence[ArticleWrite], publish: bool = True) -> None:
        """Insert or replace the articles of ``batch``; with ``publish=False`` readers see them only
        after ``flush``."""
        ...

    def delete(self, article_id: str) -> None:
        """Remove one article (ArticleNotFoundError when there is none); no reader taken afterwards
        sees it."""
        ...

    def flush(self) -> None:
        """Publish the writes made with ``publish=False``."""
        ...


class Index(IndexWriter, Protocol):
    """An index: readers of its latest published generation, and its writer."""

    def reader(self) -> IndexReader:
        """The latest published generation (never waits for a writer)."""
        ...

    def refresh(self) -> bool:
        """Catch up with writes made elsewhere; True when there were any."""
        ...

    def follow(self, interval: float = ...) -> None:
        """Catch up in a background thread from now on."""
        ...

    def on_publish(self, listener: Callable[[int], object]) -> None:
        """Call ``listener`` with the generation after every publish in this process: of its own writes,
        and of writes made elsewhere once caught up with."""
        ...

    def close(self) -> None: ...
