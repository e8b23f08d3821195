"""Articles in, index updated: skip what is unchanged, replace what changed, report what failed.

One ingest path for `rag ingest`, HTTP ingest, background jobs and the cluster: an ``Ingestor`` over an
``IndexWriter`` (one machine's store or the cluster's). Only preparing a batch (chunking, splitting
sentences, embedding) differs: ``LocalPreparer`` does it in this process, the cluster's ``RayPreparer``
(index/cluster_ingest.py) on a pool of Ray Data workers.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from tqdm import tqdm

from index.chunk import ChunkDraft, Chunker, passage_text
from index.embed import Embedder
from index.errors import ArticleError
from index.records import Article, IngestReport, Span
from index.sentences import split_sentences
from index.store.protocols import ArticleWrite, IndexWriter

DEFAULT_BATCH_ARTICLES = 64
DEFAULT_BATCH_CHARS = 400_000
"""A batch is committed once it holds this much article text (about 2,500 texts to embed), or
``DEFAULT_BATCH_ARTICLES`` articles, whichever comes first."""


class Preparer(Protocol):
    """Turns batches of articles into what a store writes."""

    def prepare(self, batches: Iterable[list[Article]]) -> Iterator[list[ArticleWrite]]:
        """The writes of each batch (batches may come back in another order)."""
        ...


class LocalPreparer:
    """Chunks and embeds each batch in this process, one model call per batch."""

    def __init__(self, chunker: Chunker, embedder: Embedder) -> None:
        self._chunker = chunker
        self._embedder = embedder

    def prepare(self, batches: Iterable[list[Article]]) -> Iterator[list[ArticleWrite]]:
        for batch in batches:
            yield prepare(batch, self._chunker, self._embedder)


class Ingestor:
    """Stores articles through an ``IndexWriter``, a batch (one transaction) at a time."""

    def __init__(
        self,
        store: IndexWriter,
        preparer: Preparer,
        batch_articles: int = DEFAULT_BATCH_ARTICLES,
        batch_chars: int = DEFAULT_BATCH_CHARS,
    ) -> None:
        self._store = store
        self._preparer = preparer
        self._batch_articles = batch_articles
        self._batch_chars = batch_chars

    def ingest(
        self,
        items: Iterable[Article | ArticleError],
        progress: bool | None = None,
        on_batch: Callable[[int], None] | None = None,
        batch_chars: int | None = None,
    ) -> IngestReport:
        """Store every article of ``items``; errors in ``items`` are reported, not raised.

        Each batch is committed on its own, so a crash keeps every batch before it, and an ingest run
        again skips what was committed (its content hash is stored). ``progress`` shows a bar (default:
        when stderr is a terminal); ``on_batch`` is told, after each commit, how many items are done
        (committed, unchanged or failed). ``batch_chars`` overrides how much text one batch holds
        (smaller: progress moves more often). Readers see the new articles when the whole ingest is
        published, at its end.
        """
        added: list[str] = []
        replaced: list[str] = []
        unchanged: list[str] = []
        failed: list[str] = []
        most_chars = self._batch_chars if batch_chars is None else batch_chars
        show = sys.stderr.isatty() if progress is None else progress
        written = 0

        def todo() -> Iterator[list[Article]]:
            """Batches of what changed; the rest is counted as unchanged or failed on the way."""
            for batch in self._batches(items, most_chars, failed):
                hashes = self._store.content_hashes([a.id for a in batch])
                changed = []
                for article in batch:
                    stored = hashes.get(article.id)
                    if stored == article.content_hash:
                        unchanged.append(article.id)
                        continue
                    (added if stored is None else replaced).append(article.id)
                    changed.append(article)
                if changed:
                    yield changed
                elif on_batch is not None:
                    on_batch(written + len(unchanged) + len(failed))

        with tqdm(desc="ingest", unit="article", disable=not show, file=sys.stderr) as bar:
            for writes in self._preparer.prepare(todo()):
                self._store.write(writes, publish=False)
                written += len(writes)
                bar.n = written + len(unchanged) + len(failed)
                bar.refresh()
                if on_batch is not None:
                    on_batch(written + len(unchanged) + len(failed))
        self._store.flush()
        return IngestReport(tuple(added), tuple(replaced), tuple(unchanged), tuple(failed))

    def _batches(
        self, items: Iterable[Article | ArticleError], most_chars: int, failed: list[str]
    ) -> Iterator[list[Article]]:
        """Articles in batches of at most ``batch_articles`` articles or ``most_chars`` characters (the
        last article of a batch may pass it); errors go to ``failed``; a repeated id keeps its last."""
        pending: dict[str, Article] = {}
        chars = 0
        for item in items:
            if isinstance(item, ArticleError):
                failed.append(str(item))
                continue
            pending[item.id] = item
            chars += len(item.body)
            if len(pending) >= self._batch_articles or chars >= most_chars:
                yield list(pending.values())
                pending, chars = {}, 0
        if pending:
            yield list(pending.values())


def prepare(articles: Sequence[Article], chunker: Chunker, embedder: Embedder) -> list[ArticleWrite]:
    """Chunks, sentences and their vectors for each article (one model call for the whole batch): what a
    store writes. Pure, so that a cluster's workers can run it too (index/cluster_ingest.py)."""
    planned: list[tuple[Article, list[ChunkDraft], list[Span]]] = []
    texts: list[str] = []
    for article in articles:
        drafts = chunker.chunk(article)
        sentences = split_sentences(article.body)
        texts.extend(passage_text(article, d.text) for d in drafts)
        texts.extend(article.body[s.start : s.end] for s in sentences)
        planned.append((article, drafts, sentences))
    if not planned:
        return []
    vectors = embedder.embed(texts)
    writes, offset = [], 0
    for article, drafts, sentences in planned:
        middle = offset + len(drafts)
        end = middle + len(sentences)
        writes.append(ArticleWrite(article, drafts, vectors[offset:middle], sentences, vectors[middle:end]))
        offset = end
    return writes
