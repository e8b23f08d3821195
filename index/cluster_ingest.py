"""Ingest on a Ray cluster: Ray Data reads, chunks and embeds on the workers, each article goes to the
replicas of its shard.

The driver loads and cleans the files (index/load.py), skips articles whose content hash a shard already
holds (so an interrupted ingest resumes, and nothing is written twice), and decides each article's story
against every shard's articles (near-duplicates are found across shards, in the same order one machine
would). Chunking and embedding run in a pool of Ray actors, each with the packaged model loaded once
(``map_batches`` over an actor pool); the driver writes each finished batch to the shard owners.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

from index.cluster import ShardedStore
from index.config import IndexSettings
from index.dedup import StoryIndex, signature
from index.errors import ArticleError
from index.records import Article, IngestReport
from index.store import ArticleWrite

DEFAULT_BATCH_ARTICLES = 32


class StoryAssigner:
    """Stories across all shards: the story of the earliest stored near-duplicate, else the article's own
    (the rule IndexStore applies on one machine)."""

    def __init__(self, rows: Iterable[tuple[str, bytes | None, str, str | None]]) -> None:
        self._index = StoryIndex()
        self._known: dict[str, tuple[str, str | None]] = {}
        for article_id, minhash, story, published in rows:
            self._index.add(article_id, minhash)
            self._known[article_id] = (story, published)

    def assign(self, article: Article) -> str:
        self._index.remove(article.id)
        minhash = signature(article.body)
        similar = [s for s in self._index.similar(minhash) if s != article.id and s in self._known]
        story = article.id
        if similar:
            earliest = min(similar, key=lambda s: (self._known[s][1] is None, self._known[s][1] or "", s))
            story = self._known[earliest][0]
        self._index.add(article.id, minhash)
        published = article.published_at.isoformat() if article.published_at else None
        self._known[article.id] = (story, published)
        return story


class _Prepare:
    """A Ray Data worker: chunks and embeds batches of pickled articles with the packaged model."""

    def __init__(self, settings: IndexSettings) -> None:
        from index import PackagedEmbedder, chunker
        from index.embed import set_threads

        set_threads(1)  # one CPU reserved per worker: one thread, or workers on one node fight over cores
        self._embedder = PackagedEmbedder()
        self._chunker = chunker(settings)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from index.ingest import prepare

        items = [pickle.loads(blob) for blob in batch["item"]]  # noqa: S301 - pickled by our own driver
        writes = prepare([article for article, _ in items], self._chunker, self._embedder)
        return {
            "write": [
                pickle.dumps(
                    ArticleWrite(w.article, w.chunks, w.vectors, w.sentences, w.sentence_vectors, story)
                )
                for w, (_, story) in zip(writes, items, strict=True)
            ]
        }


def ingest_on_cluster(
    store: ShardedStore,
    items: Iterable[Article | ArticleError],
    settings: IndexSettings,
    workers: int = 1,
    batch_articles: int = DEFAULT_BATCH_ARTICLES,
    progress: bool | None = None,
) -> IngestReport:
    """Store every article of ``items`` on the cluster; errors in ``items`` are reported, not raised."""
    import ray

    articles: dict[str, Article] = {}
    failed: list[str] = []
    for item in items:
        if isinstance(item, ArticleError):
            failed.append(str(item))
        else:
            articles[item.id] = item
    hashes: dict[str, str | None] = {}
    ids = list(articles)
    for start in range(0, len(ids), 1000):
        hashes.update(store.content_hashes(ids[start : start + 1000]))
    unchanged = [a for a in ids if hashes.get(a) == articles[a].content_hash]
    todo = [articles[a] for a in ids if hashes.get(a) != articles[a].content_hash]
    added = [a.id for a in todo if hashes.get(a.id) is None]
    replaced = [a.id for a in todo if hashes.get(a.id) is not None]
    if todo:
        stories = StoryAssigner(store.minhashes())
        rows = [{"item": pickle.dumps((a, stories.assign(a)))} for a in todo]
        dataset = ray.data.from_items(rows).map_batches(
            _Prepare,
            fn_constructor_kwargs={"settings": settings},
            batch_size=batch_articles,
            compute=ray.data.ActorPoolStrategy(size=max(workers, 1)),
            num_cpus=1,
        )
        show = sys.stderr.isatty() if progress is None else progress
        with tqdm(total=len(todo), desc="ingest", unit="article", disable=not show, file=sys.stderr) as bar:
            for batch in dataset.iter_batches(batch_size=batch_articles, batch_format="numpy"):
                writes = [pickle.loads(blob) for blob in batch["write"]]  # noqa: S301 - from our workers
                store.write(writes, publish=False)
                bar.update(len(writes))
        store.flush()
    return IngestReport(tuple(added), tuple(replaced), tuple(unchanged), tuple(failed))
