"""The index in shards on a Ray cluster (index/cluster.py starts the shard actors): the same ``Index`` and
``IndexReader`` as one machine, scattered and gathered.

- chunk ids are global: ``local id * shards + shard``; the catalog (dates, outlets, stories) is gathered
  once from the shards and kept in step with the writes made through this driver;
- a dense search is scattered with the query vector and its window, each shard's best are merged
  (``merge_hits``, as segments' are on one machine);
- BM25 runs in two phases, as Elasticsearch's dfs_query_then_fetch does: the shards' document
  frequencies and lengths are added up first, and every shard scores with those corpus-wide numbers,
  so a chunk scores the same whichever shard holds it;
- text and vectors are fetched from the shards that hold them;
- stories are decided here, across every shard, by the story rule of one machine (index/dedup.py).
A call that fails on one replica (its node died) is retried on the next; a shard with no replica left is
left out, and the reader's ``missing_shards`` says which (the answer says it is degraded, never a 500).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from index.dedup import StoryAssigner, signature
from index.embed import Vectors
from index.errors import ArticleNotFoundError, IndexStoreError, ShardUnavailableError
from index.records import Article, Chunk, Span
from index.store.catalog import Catalog, CatalogLookups
from index.store.follow import Listeners, start_follower
from index.store.lexical import bm25, idf
from index.store.probe import Probe, SentenceKey, ShardAnswer
from index.store.protocols import ArticleWrite, CatalogEntry, Statistics, Tokens
from index.store.rows import dequantize
from index.store.window import EVERYTHING, Hits, Ids, Window, merge_hits

log = logging.getLogger("index.cluster")

DEFAULT_TIMEOUT_SECONDS = 60.0
DEFAULT_FOLLOW_SECONDS = 2.0


def shard_of(article_id: str, shards: int) -> int:
    """The shard an article belongs to: stable across processes, machines and Python versions."""
    return int(hashlib.sha1(article_id.encode()).hexdigest()[:8], 16) % shards  # noqa: S324 - not security


class ShardedStore:
    """An ``Index`` over shard actors; see the module docstring."""

    def __init__(self, layout: list[list[Any]], timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        if not layout:
            raise IndexStoreError("no shards: create the cluster's index with `rag ingest --cluster ...`")
        self._layout = layout
        self.shards = len(layout)
        self._timeout = timeout_seconds
        self._dead: set[tuple[int, int]] = set()
        self.rounds = 0
        """Scatter-gather rounds made so far (a question through ``prefetch`` makes one)."""
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self._listeners = Listeners()
        self._stories: StoryAssigner | None = None
        self._generations = self.scatter_all("generation", set())
        self._published = self.scatter_all("published", set())
        """Each shard's published generation: what a reader taken now reads (on every replica alike)."""
        self._catalog = self._gather_catalog()
        self._pending = self._catalog
        """The catalog with writes the shards have not published yet (published by ``flush``)."""

    # --- calls with failover ---------------------------------------------------------------------------

    def _live(self, shard: int) -> list[tuple[int, Any]]:
        return [(r, a) for r, a in enumerate(self._layout[shard]) if (shard, r) not in self._dead]

    def scatter(
        self, method: str, arguments: dict[int, tuple[Any, ...]], missing: set[int]
    ) -> dict[int, Any]:
        """``method`` on one live replica of every shard of ``arguments`` at once, the next replica of a
        shard whose replica fails; shards with no live replica are left out and added to ``missing``."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        self.rounds += 1
        pending = {s: self._live(s) for s in arguments}
        results: dict[int, Any] = {}
        while pending:
            calls = {}
            for shard, replicas in list(pending.items()):
                if not replicas:
                    missing.add(shard)
                    del pending[shard]
                    continue
                replica, actor = replicas[0]
                calls[shard] = (replica, getattr(actor, method).remote(*arguments[shard]))
            for shard, (replica, ref) in calls.items():
                try:
                    results[shard] = ray.get(ref, timeout=self._timeout)
                    del pending[shard]
                except (RayActorError, GetTimeoutError) as exc:
                    failure = type(exc).__name__
                    log.warning("shard %d replica %d failed (%s); trying another", shard, replica, failure)
                    self._dead.add((shard, replica))
                    pending[shard] = pending[shard][1:]
        return results

    def scatter_all(self, method: str, missing: set[int], *args: Any) -> dict[int, Any]:
        return self.scatter(method, dict.fromkeys(range(self.shards), args), missing)

    def call(self, shard: int, method: str, *args: Any) -> Any:
        """``method`` on one live replica of ``shard``; raises ShardUnavailableError when none answers."""
        found = self.scatter(method, {shard: args}, set())
        if shard not in found:
            raise ShardUnavailableError(f"no replica of shard {shard} answers")
        return found[shard]

    # --- global ids and the catalog -------------------------------------------------------------------

    def gid(self, shard: int, local: int) -> int:
        return local * self.shards + shard

    def split(self, ids: Iterable[int]) -> dict[int, list[int]]:
        """Global chunk ids by shard, as local ids (in the order given)."""
        found: dict[int, list[int]] = {}
        for g in ids:
            found.setdefault(int(g) % self.shards, []).append(int(g) // self.shards)
        return found

    def by_shard(self, article_ids: Iterable[str]) -> dict[int, list[str]]:
        found: dict[int, list[str]] = {}
        for article_id in dict.fromkeys(article_ids):
            found.setdefault(shard_of(article_id, self.shards), []).append(article_id)
        return found

    def _gather_catalog(self) -> Catalog:
        entries: list[CatalogEntry] = []
        for shard, part in sorted(self.scatter_all("catalog_entries", set()).items()):
            entries.extend(self._global(shard, e) for e in part)
        return Catalog.build(entries)

    def _global(self, shard: int, entry: CatalogEntry) -> CatalogEntry:
        return dataclasses.replace(entry, chunk_ids=tuple(self.gid(shard, c) for c in entry.chunk_ids))

    # --- Index ------------------------------------------------------------------------------------------

    def reader(self) -> ShardedReader:
        return ShardedReader(self, self._catalog, dict(self._published))

    @property
    def generation(self) -> int:
        return sum(self.scatter_all("generation", set()).values())

    def content_hashes(self, ids: Sequence[str]) -> dict[str, str | None]:
        found: dict[str, str | None] = dict.fromkeys(ids)
        parts = {s: (a,) for s, a in self.by_shard(ids).items()}
        for part in self.scatter("content_hashes", parts, set()).values():
            found.update(part)
        return found

    def write(self, batch: Sequence[ArticleWrite], publish: bool = True) -> None:
        """Each article to every live replica of its shard, its story decided across all shards; the
        catalog follows."""
        import ray

        with self._lock:
            stories = self._story_assigner()
            by_shard: dict[int, list[ArticleWrite]] = {}
            for item in batch:
                a = item.article
                story = item.story or stories.assign(a.id, signature(a.body), a.published_at)
                by_shard.setdefault(shard_of(a.id, self.shards), []).append(
                    dataclasses.replace(item, story=story)
                )
            entries: list[CatalogEntry] = []
            for shard, writes in by_shard.items():
                refs = [(r, a.write.remote(writes, publish)) for r, a in self._live(shard)]
                if not refs:
                    self._stories = None
                    raise ShardUnavailableError(f"no replica of shard {shard} can take writes")
                results = []
                for replica, ref in refs:
                    try:
                        results.append(ray.get(ref, timeout=self._timeout * 10))
                    except Exception:
                        log.exception("shard %d replica %d failed a write; it is left out", shard, replica)
                        self._dead.add((shard, replica))
                if not results:
                    self._stories = None
                    raise ShardUnavailableError(f"no replica of shard {shard} took the write")
                entries.extend(self._global(shard, e) for e in results[0])
            self._pending = self._pending.changed(entries, ())
            if publish:
                self._catalog = self._pending
            self._take_generations()

    def flush(self) -> None:
        import ray

        ray.get(
            [a.flush.remote() for s in range(self.shards) for _, a in self._live(s)],
            timeout=self._timeout * 10,
        )
        with self._lock:
            self._catalog = self._pending
            self._take_generations()

    def barrier(self) -> None:
        """Return once every live replica of every shard has run every call that reached it before this
        one. A shard actor is a sequential Ray actor (one call at a time, in the order the calls reach it),
        so a call queued behind the others is a barrier: writes a driver handed to the shards before it
        died, still queued or running there, have committed when it returns."""
        import ray

        ray.get(
            [a.generation.remote() for s in range(self.shards) for _, a in self._live(s)],
            timeout=self._timeout * 10,
        )

    def delete(self, article_id: str) -> None:
        import ray

        shard = shard_of(article_id, self.shards)
        with self._lock:
            done = ray.get([a.delete.remote(article_id) for _, a in self._live(shard)], timeout=self._timeout)
            if not any(done):
                raise ArticleNotFoundError(f"no article with id {article_id!r}")
            if self._stories is not None:
                self._stories.remove(article_id)
            self._pending = self._pending.changed((), [article_id])
            self._catalog = self._pending
            self._take_generations()

    def refresh(self) -> bool:
        """Gather the catalog again when another driver wrote (shard generations moved)."""
        generations = self.scatter_all("generation", set())
        if generations == self._generations:
            return False
        with self._lock:
            import ray

            ray.get([a.refresh.remote() for s in range(self.shards) for _, a in self._live(s)])
            self._catalog = self._pending = self._gather_catalog()
            self._take_generations()
            self._stories = None
        return True

    def follow(self, interval: float = DEFAULT_FOLLOW_SECONDS) -> None:
        if self._follower is None:
            self._follower = start_follower(self.refresh, interval, self._stop, "cluster")

    def on_publish(self, listener: Callable[[int], object]) -> None:
        self._listeners.add(listener)

    def close(self) -> None:
        self._stop.set()

    def _take_generations(self) -> None:
        self._generations = self.scatter_all("generation", set())
        self._published = self.scatter_all("published", set())
        self._listeners.tell(sum(self._generations.values()))

    def _story_assigner(self) -> StoryAssigner:
        if self._stories is None:
            rows = [row for part in self.scatter_all("minhashes", set()).values() for row in part]
            self._stories = StoryAssigner(rows)
        return self._stories


class ShardedReader(CatalogLookups):
    """What one question reads through the cluster (``IndexReader``): the gathered catalog of one
    generation, and scatter-gather searches pinned to the shards' generations of that moment; shards that
    could not answer are in ``missing_shards``.

    After ``prefetch`` (one round: index/store/probe.py), what the probe covered is answered from what
    the shards sent: the dense hits, the lexical top scored with the cluster's statistics, candidates'
    vectors, scores, passages and sentence vectors. Anything else costs a round of its own."""

    def __init__(self, store: ShardedStore, catalog: Catalog, published: dict[int, int]) -> None:
        self._store = store
        self.catalog = catalog
        self._published = published
        self._missing: set[int] = set()
        self._probe: Probe | None = None
        self._dense: dict[tuple[Any, int], Hits] = {}
        self._lexical: dict[tuple[Any, int], Hits] = {}
        self._statistics: Statistics | None = None
        self._vectors: dict[int, Vectors] = {}
        self._similar: dict[int, float] = {}
        """Inner products with the probe's query vector."""
        self._bm25: dict[int, float] = {}
        self._passages: dict[int, tuple[Chunk, Article]] = {}
        self._sentences: dict[SentenceKey, Vectors] = {}

    @property
    def generation(self) -> int:
        return sum(self._published.values())

    @property
    def missing_shards(self) -> tuple[int, ...]:
        return tuple(sorted(self._missing))

    def _scatter(self, method: str, arguments: dict[int, tuple[Any, ...]]) -> dict[int, Any]:
        return self._store.scatter(method, arguments, self._missing)

    def _at(self, shard: int) -> int | None:
        """The generation of ``shard`` this reader reads."""
        return self._published.get(shard)

    def _windows(self, window: Window) -> dict[int, Window]:
        """The window of each shard (its own chunk ids, when the window names ids)."""
        if window.ids is None:
            return dict.fromkeys(range(self._store.shards), window)
        parts = self._store.split(window.ids)
        return {
            s: dataclasses.replace(window, ids=np.sort(np.array(parts.get(s, []), dtype=np.int64)))
            for s in range(self._store.shards)
        }

    def _gathered(self, found: dict[int, Hits], k: int) -> Hits:
        gid = self._store.gid
        return merge_hits(([(gid(shard, i), s) for i, s in hits] for shard, hits in found.items()), k)

    # --- one round per question ------------------------------------------------------------------------

    def prefetch(self, probe: Probe) -> None:
        searched = [w for w, _ in probe.dense] + ([probe.lexical[0]] if probe.lexical else [])
        local = [self._windows(w) for w in searched]  # each shard's windows, in its own chunk ids
        arguments = {}
        for s in range(self._store.shards):
            dense = tuple((local[j][s], k) for j, (_, k) in enumerate(probe.dense))
            lexical = (local[-1][s], probe.lexical[1]) if probe.lexical else None
            arguments[s] = (dataclasses.replace(probe, dense=dense, lexical=lexical), self._at(s))
        answers: dict[int, ShardAnswer] = self._scatter("probe", arguments)
        if not answers:
            return
        gid = self._store.gid
        stats = Statistics.combine([a.statistics for a in answers.values()])
        nominees: list[tuple[int, float]] = []
        for shard, answer in answers.items():
            gids = [gid(shard, int(i)) for i in answer.ids]
            scores = bm25(answer.tf, answer.lengths, probe.tokens, stats)
            self._bm25.update(zip(gids, scores.tolist(), strict=True))
            self._similar.update(zip(gids, answer.similarities.tolist(), strict=True))
            for chunk, article in answer.passages:
                g = gid(shard, chunk.id)
                self._passages[g] = (dataclasses.replace(chunk, id=g), article)
            self._sentences.update({key: dequantize(blob) for key, blob in answer.sentences.items()})
            nominees.extend((gid(shard, i), self._bm25[gid(shard, i)]) for i, _ in answer.lexical)
        for number, (window, k) in enumerate(probe.dense):
            self._dense[(_key(window), k)] = self._gathered(
                {s: a.dense[number] for s, a in answers.items()}, k
            )
        if probe.lexical:
            window, k = probe.lexical
            positive = [(i, score) for i, score in nominees if score > 0]
            self._lexical[(_key(window), k)] = merge_hits([positive], k)
        self._statistics = stats
        self._probe = probe

    def _covers(self, query: Vectors) -> bool:
        return self._probe is not None and (
            query is self._probe.vector or np.array_equal(query, self._probe.vector)
        )

    # --- IndexReader ------------------------------------------------------------------------------------

    def dense(self, query: Vectors, k: int, window: Window = EVERYTHING) -> Hits:
        if self._covers(query) and (_key(window), k) in self._dense:
            return self._dense[(_key(window), k)]
        arguments = {s: (query, k, w, self._at(s)) for s, w in self._windows(window).items()}
        return self._gathered(self._scatter("search", arguments), k)

    def vectors(self, ids: Ids) -> Vectors:
        wanted = [int(i) for i in ids]
        missing = [i for i in wanted if i not in self._vectors]
        if missing:
            parts = self._store.split(missing)
            arguments = {s: (np.array(local, dtype=np.int64), self._at(s)) for s, local in parts.items()}
            for shard, matrix in self._scatter("vectors", arguments).items():
                for local, row in zip(parts[shard], matrix, strict=True):
                    self._vectors[self._store.gid(shard, local)] = row
        if not self._vectors:
            return np.zeros((0, 0), dtype=np.float32)
        dimension = next(iter(self._vectors.values())).size
        blank = np.zeros(dimension, dtype=np.float32)
        return (
            np.vstack([self._vectors.get(i, blank) for i in wanted]) if wanted else blank[:0].reshape(0, -1)
        )

    def similarities(self, query: Vectors, ids: Ids) -> npt.NDArray[np.float32]:
        wanted = [int(i) for i in ids]
        if self._covers(query) and all(i in self._similar for i in wanted):
            return np.array([self._similar[i] for i in wanted], dtype=np.float32)
        parts = self._store.split(wanted)
        arguments = {s: (query, np.array(local, dtype=np.int64), self._at(s)) for s, local in parts.items()}
        found: dict[int, float] = {}
        for shard, values in self._scatter("similarities", arguments).items():
            for local, value in zip(parts[shard], values, strict=True):
                found[self._store.gid(shard, local)] = float(value)
        return np.array([found.get(i, 0.0) for i in wanted], dtype=np.float32)

    def statistics(self, tokens: Tokens) -> Statistics:
        if self._statistics is not None and set(tokens) <= set(self._statistics.tokens):
            known = dict(zip(self._statistics.tokens, self._statistics.df, strict=True))
            s = self._statistics
            return Statistics(tuple(tokens), tuple(known[t] for t in tokens), s.documents, s.lengths)
        arguments = {s: (list(tokens), self._at(s)) for s in range(self._store.shards)}
        parts = list(self._scatter("statistics", arguments).values())
        return Statistics.combine(parts) if parts else Statistics(tuple(tokens), (0,) * len(tokens), 0, 0.0)

    def lexical(self, tokens: Tokens, statistics: Statistics | None = None) -> ShardedScores:
        covered = self._probe is not None and tuple(tokens) == self._probe.tokens and statistics is None
        return ShardedScores(self, list(tokens), statistics or self.statistics(tokens), covered)

    def idf(self, tokens: Tokens) -> npt.NDArray[np.float64]:
        stats = self.statistics(tokens)
        return idf(np.array(stats.df, dtype=np.float64), float(stats.documents))

    def passages(self, ids: Sequence[int]) -> list[tuple[Chunk, Article]]:
        missing = [int(i) for i in ids if int(i) not in self._passages]
        if missing:
            parts = self._store.split(missing)
            for shard, rows in self._scatter("passages", {s: (local,) for s, local in parts.items()}).items():
                for chunk, article in rows:
                    g = self._store.gid(shard, chunk.id)
                    self._passages[g] = (dataclasses.replace(chunk, id=g), article)
        return [self._passages[int(i)] for i in ids if int(i) in self._passages]

    def articles(self, ids: Iterable[str]) -> dict[str, Article]:
        wanted = list(dict.fromkeys(ids))
        known = {article.id: article for _, article in self._passages.values()}
        found = {a: known[a] for a in wanted if a in known}
        missing = [a for a in wanted if a not in found]
        if missing:
            parts = {s: (a,) for s, a in self._store.by_shard(missing).items()}
            for part in self._scatter("articles", parts).values():
                found.update(part)
        return found

    def sentence_vectors(self, article_id: str, spans: Sequence[Span]) -> dict[Span, Vectors]:
        found = {
            s: self._sentences[(article_id, s.start, s.end)]
            for s in spans
            if (article_id, s.start, s.end) in self._sentences
        }
        missing = [s for s in spans if s not in found]
        if missing:
            shard = shard_of(article_id, self._store.shards)
            fetched = self._scatter("sentence_vectors", {shard: (article_id, missing)})
            found.update(fetched.get(shard, {}))
        return found


class ShardedScores:
    """One query's BM25 scores across the shards, with the corpus-wide statistics."""

    def __init__(
        self, reader: ShardedReader, tokens: list[str], statistics: Statistics, covered: bool
    ) -> None:
        self._reader, self._tokens, self._statistics = reader, tokens, statistics
        self._covered = covered
        """The reader's probe searched these tokens: its scores are the reader's."""

    def top(self, k: int, window: Window = EVERYTHING) -> Hits:
        reader = self._reader
        if self._covered and (_key(window), k) in reader._lexical:
            return reader._lexical[(_key(window), k)]
        arguments = {
            s: (self._tokens, self._statistics, k, w, reader._at(s))
            for s, w in reader._windows(window).items()
        }
        return reader._gathered(reader._scatter("lexical_top", arguments), k)

    def of(self, ids: Ids) -> npt.NDArray[np.float32]:
        reader = self._reader
        wanted = [int(i) for i in ids]
        if self._covered and all(i in reader._bm25 for i in wanted):
            return np.array([reader._bm25[i] for i in wanted], dtype=np.float32)
        store = reader._store
        parts = store.split(wanted)
        arguments = {
            s: (self._tokens, self._statistics, np.array(local, dtype=np.int64), reader._at(s))
            for s, local in parts.items()
        }
        scores: dict[int, float] = {}
        for shard, values in reader._scatter("lexical_of", arguments).items():
            for local, value in zip(parts[shard], values, strict=True):
                scores[store.gid(shard, local)] = float(value)
        return np.array([scores.get(i, 0.0) for i in wanted], dtype=np.float32)


def _key(window: Window) -> tuple[Any, ...]:
    """A window as a cache key (its ids by value: ``Window`` compares without them)."""
    ids = None if window.ids is None else window.ids.tobytes()
    return (window.after, window.before, window.undated, ids)
