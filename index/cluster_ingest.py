"""Preparing an ingest on a Ray cluster: the ``Ingestor`` (index/ingest.py) decides what changed and
writes through the cluster's store, which sends each article to its shard and decides its story across
all shards; only chunking and embedding run elsewhere, here, in a pool of Ray Data actors, each with the
packaged model loaded once (``map_batches`` over an actor pool).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator
from typing import Any

from index.config import IndexSettings
from index.records import Article
from index.store.protocols import ArticleWrite

DEFAULT_BATCH_ARTICLES = 32


class _Prepare:
    """A Ray Data worker: chunks and embeds batches of pickled articles with the packaged model."""

    def __init__(self, settings: IndexSettings) -> None:
        from index import chunker, packaged_embedder
        from index.embed import set_threads

        set_threads(1)  # one CPU reserved per worker: one thread, or workers on one node fight over cores
        self._embedder = packaged_embedder(settings, threads=1)
        self._chunker = chunker(settings)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from index.ingest import prepare

        articles = [pickle.loads(blob) for blob in batch["item"]]  # noqa: S301 - pickled by our own driver
        return {"write": [pickle.dumps(w) for w in prepare(articles, self._chunker, self._embedder)]}


class RayPreparer:
    """Chunks and embeds on ``workers`` Ray Data actors (one CPU each) of the connected cluster."""

    def __init__(
        self, settings: IndexSettings, workers: int = 1, batch_articles: int = DEFAULT_BATCH_ARTICLES
    ) -> None:
        self._settings = settings
        self._workers = max(workers, 1)
        self._batch_articles = batch_articles

    def prepare(self, batches: Iterable[list[Article]]) -> Iterator[list[ArticleWrite]]:
        import ray

        rows = [{"item": pickle.dumps(article)} for batch in batches for article in batch]
        if not rows:
            return
        dataset = ray.data.from_items(rows).map_batches(
            _Prepare,
            fn_constructor_kwargs={"settings": self._settings},
            batch_size=self._batch_articles,
            compute=ray.data.ActorPoolStrategy(size=self._workers),
            num_cpus=1,
        )
        for batch in dataset.iter_batches(batch_size=self._batch_articles, batch_format="numpy"):
            yield [pickle.loads(blob) for blob in batch["write"]]  # noqa: S301 - from our workers
