"""Articles in, index updated: skip what is unchanged, replace what changed, report what failed."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence

from tqdm import tqdm

from index.chunk import ChunkDraft, Chunker, passage_text
from index.embed import Embedder
from index.errors import ArticleError
from index.records import Article, IngestReport, Span
from index.sentences import split_sentences
from index.store import ArticleWrite
from index.store.protocols import StoreView

DEFAULT_BATCH_ARTICLES = 64
DEFAULT_BATCH_CHARS = 400_000
"""A batch is committed once it holds this much article text (about 2,500 texts to embed), or
``DEFAULT_BATCH_ARTICLES`` articles, whichever comes first."""


class Ingestor:
    """Chunks, embeds and stores articles, a batch (one transaction) at a time."""

    def __init__(
        self,
        store: StoreView,
        embedder: Embedder,
        chunker: Chunker,
        batch_articles: int = DEFAULT_BATCH_ARTICLES,
        batch_chars: int = DEFAULT_BATCH_CHARS,
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._chunker = chunker
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

        Each batch is committed on its own, so a crash keeps every batch before it. ``progress`` shows a
        bar (default: when stderr is a terminal); ``on_batch`` is told, after each commit, how many items
        are done (committed or failed). ``batch_chars`` overrides how much text one batch holds (smaller:
        progress moves more often). Readers see the new articles when the whole ingest is published,
        at its end.
        """
        added: list[str] = []
        replaced: list[str] = []
        unchanged: list[str] = []
        failed: list[str] = []
        pending: dict[str, Article] = {}
        pending_chars = 0
        most_chars = self._batch_chars if batch_chars is None else batch_chars
        show = sys.stderr.isatty() if progress is None else progress
        seen = 0  # not ``bar.n``: a disabled tqdm bar counts nothing
        with tqdm(desc="ingest", unit="article", disable=not show, file=sys.stderr) as bar:
            for item in items:
                bar.update(1)
                seen += 1
                if isinstance(item, ArticleError):
                    failed.append(str(item))
                    continue
                pending[item.id] = item
                pending_chars += len(item.body)
                if len(pending) >= self._batch_articles or pending_chars >= most_chars:
                    self._flush_batch(pending, added, replaced, unchanged)
                    pending_chars = 0
                    if on_batch is not None:
                        on_batch(seen)
            self._flush_batch(pending, added, replaced, unchanged)
            if on_batch is not None:
                on_batch(seen)
        self._store.flush()
        return IngestReport(tuple(added), tuple(replaced), tuple(unchanged), tuple(failed))

    def _flush_batch(
        self, pending: dict[str, Article], added: list[str], replaced: list[str], unchanged: list[str]
    ) -> None:
        todo: list[Article] = []
        for article in pending.values():
            stored = self._store.content_hash(article.id)
            if stored == article.content_hash:
                unchanged.append(article.id)
                continue
            (added if stored is None else replaced).append(article.id)
            todo.append(article)
        pending.clear()
        if todo:
            self._store.write(prepare(todo, self._chunker, self._embedder), publish=False)


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
