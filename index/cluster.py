"""The index in shards on a Ray cluster: the same store interface, scattered and gathered.

Layout: ``shards`` shards, each held by ``replicas`` Ray actors (``ShardActor``, each an ``IndexStore`` in
its own folder on its node), placed so that the replicas of one shard sit on different nodes. An article
belongs to the shard ``sha1(article id) mod shards``: a hash spreads articles, and with them writes and
query work, evenly whatever their dates (partitioning by month would put "this week" on one shard).
Actors are named and detached: the index lives as long as the cluster, and any driver finds it.

``ShardedStore`` is what the retriever and the API use instead of an ``IndexStore``:
- chunk ids become global: ``local id * shards + shard``; the catalog (dates, outlets, stories) is
  gathered once from the shards and kept in step with the writes made through it;
- a dense search is scattered with the query vector and its window, each shard's best are merged;
- BM25 runs in two phases, as Elasticsearch's dfs_query_then_fetch does: the shards' document
  frequencies and lengths are added up first, and every shard scores with those corpus-wide numbers,
  so a chunk scores the same whichever shard holds it;
- text and vectors are fetched from the shards that hold them.
A call that fails on one replica (its node died) is retried on the next; a shard with no replica left is
left out, and ``missing_shards`` says which (the answer says it is degraded, never a 500).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from index.embed import Vectors
from index.errors import ArticleNotFoundError, IndexStoreError
from index.records import Article, Chunk, Span
from index.store import ArticleWrite, IndexStore
from index.store.catalog import Catalog, CatalogEntry
from index.store.lexical import Statistics
from index.store.watch import start_watcher
from index.store.window import EVERYTHING, Window

log = logging.getLogger("index.cluster")

NAMESPACE = "newsrag"
PREFIX = "newsrag-shard"
DEFAULT_TIMEOUT_SECONDS = 60.0
Hits = list[tuple[int, float]]


class ShardUnavailableError(IndexStoreError):
    """No replica of a shard answers."""


def shard_of(article_id: str, shards: int) -> int:
    """The shard an article belongs to: stable across processes, machines and Python versions."""
    return int(hashlib.sha1(article_id.encode()).hexdigest()[:8], 16) % shards  # noqa: S324 - not security


class ShardActor:
    """One replica of one shard: an IndexStore in ``data_dir`` on its node, answering by local chunk ids.
    (Made a Ray actor by ``ray.remote`` when the layout is created.)"""

    def __init__(self, data_dir: str, model_name: str, dimension: int) -> None:
        self.store = IndexStore(Path(data_dir), model_name, dimension)

    def generation(self) -> int:
        return self.store.generation

    def node(self) -> str:
        """The Ray node this replica runs on."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def catalog_entries(self) -> list[CatalogEntry]:
        return self.store.catalog_entries()

    def minhashes(self) -> list[tuple[str, bytes | None, str, str | None]]:
        return self.store.minhashes()

    def content_hashes(self, ids: list[str]) -> dict[str, str | None]:
        return {i: self.store.content_hash(i) for i in ids}

    def write(self, writes: list[ArticleWrite], publish: bool) -> list[CatalogEntry]:
        self.store.write(writes, publish=publish)
        return self.store.catalog_entries(w.article.id for w in writes)

    def flush(self) -> None:
        self.store.flush()

    def delete(self, article_id: str) -> bool:
        try:
            self.store.delete(article_id)
        except ArticleNotFoundError:
            return False
        return True

    def search(self, query: Vectors, k: int, window: Window) -> Hits:
        return self.store.search(query, k, window)

    def statistics(self, tokens: list[str]) -> Statistics:
        return self.store.snapshot().lexical.statistics(tokens)  # type: ignore[attr-defined, no-any-return]

    def lexical_top(self, tokens: list[str], statistics: Statistics, k: int, window: Window) -> Hits:
        scores = self.store.snapshot().lexical.query(tokens, statistics)  # type: ignore[call-arg]
        return scores.top(k, window)

    def lexical_of(self, tokens: list[str], statistics: Statistics, ids: npt.NDArray[np.int64]) -> Any:
        return self.store.snapshot().lexical.query(tokens, statistics).of(ids)  # type: ignore[call-arg]

    def vectors(self, ids: npt.NDArray[np.int64]) -> Vectors:
        return self.store.snapshot().vectors(ids)

    def passages(self, ids: list[int]) -> list[tuple[Chunk, Article]]:
        return self.store.passages(ids)

    def articles(self, ids: list[str]) -> dict[str, Article]:
        return self.store.articles(ids)

    def sentence_vectors(self, article_id: str, spans: list[Span]) -> dict[Span, Vectors]:
        return self.store.sentence_vectors(article_id, spans)


def connect(address: str) -> None:
    """Join the Ray cluster at ``address`` (``auto``, or ``HOST:PORT`` of its head)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)


def create_layout(
    base_dir: str, shards: int, replicas: int, model_name: str, dimension: int
) -> list[list[Any]]:
    """Start the shard actors (named, detached), each replica of a shard on a different node when the
    cluster has enough nodes; returns their handles, shard by shard."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # Hard affinity: with soft affinity Ray placed every zero-CPU actor on one node (measured with three
    # nodes), which would leave no replica when that node goes.
    nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])  # type: ignore[no-untyped-call]
    remote = ray.remote(num_cpus=0, max_restarts=0)(ShardActor)
    layout = []
    for shard in range(shards):
        copies = []
        for replica in range(replicas):
            node = nodes[(shard + replica) % len(nodes)]
            actor = remote.options(
                name=f"{PREFIX}-{shard}-{replica}",
                namespace=NAMESPACE,
                lifetime="detached",
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
            ).remote(f"{base_dir}/shard-{shard}-replica-{replica}", model_name, dimension)
            copies.append(actor)
        layout.append(copies)
    return layout


def find_layout() -> list[list[Any]]:
    """The shard actors already running on the connected cluster (empty when there are none)."""
    import ray

    names = [
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == NAMESPACE
    ]
    found: dict[int, dict[int, Any]] = {}
    for name in names:
        if name.startswith(PREFIX + "-"):
            shard, replica = (int(x) for x in name[len(PREFIX) + 1 :].split("-"))
            found.setdefault(shard, {})[replica] = ray.get_actor(name, namespace=NAMESPACE)
    return [[found[s][r] for r in sorted(found[s])] for s in sorted(found)]


def open_cluster(
    address: str, base_dir: str, shards: int, replicas: int, model_name: str, dimension: int
) -> ShardedStore:
    """The index on the Ray cluster at ``address``, its shard actors started when it has none yet."""
    connect(address)
    layout = find_layout() or create_layout(base_dir, shards, replicas, model_name, dimension)
    return ShardedStore(layout)


class ShardedStore:
    """An ``IndexStore`` look-alike over shard actors; see the module docstring."""

    def __init__(self, layout: list[list[Any]], timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        if not layout:
            raise IndexStoreError("no shards: create the cluster's index with `rag ingest --cluster ...`")
        self._layout = layout
        self.shards = len(layout)
        self._timeout = timeout_seconds
        self._dead: set[tuple[int, int]] = set()
        self._missing = threading.local()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.data_dir = Path("cluster")
        self._generations = self._all("generation")
        self._catalog = self._gather_catalog()
        self._pending = self._catalog
        """The catalog with writes the shards have not published yet (published by ``flush``)."""

    # --- calls with failover ---------------------------------------------------------------------------

    def _live(self, shard: int) -> list[tuple[int, Any]]:
        return [(r, a) for r, a in enumerate(self._layout[shard]) if (shard, r) not in self._dead]

    def _call(self, shard: int, method: str, *args: Any) -> Any:
        """``method`` on a live replica of ``shard``, the next one when a replica fails."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        for replica, actor in self._live(shard):
            try:
                return ray.get(getattr(actor, method).remote(*args), timeout=self._timeout)
            except (RayActorError, GetTimeoutError) as exc:
                log.warning(
                    "shard %d replica %d failed (%s); trying another", shard, replica, type(exc).__name__
                )
                self._dead.add((shard, replica))
        raise ShardUnavailableError(f"no replica of shard {shard} answers")

    def _scatter(self, method: str, arguments: dict[int, tuple[Any, ...]]) -> dict[int, Any]:
        """``method`` on every shard of ``arguments`` at once; shards with no live replica are left out
        and recorded in ``missing_shards``."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        pending = {s: self._live(s) for s in arguments}
        results: dict[int, Any] = {}
        missing = set(getattr(self._missing, "shards", ()))
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
                    log.warning(
                        "shard %d replica %d failed (%s); trying another", shard, replica, type(exc).__name__
                    )
                    self._dead.add((shard, replica))
                    pending[shard] = pending[shard][1:]
        self._missing.shards = tuple(sorted(missing))
        return results

    def _all(self, method: str, *args: Any) -> dict[int, Any]:
        return self._scatter(method, dict.fromkeys(range(self.shards), args))

    def missing_shards(self) -> tuple[int, ...]:
        """Shards left out of this thread's last query (``reset_missing`` starts a new one)."""
        return tuple(getattr(self._missing, "shards", ()))

    def reset_missing(self) -> None:
        self._missing.shards = ()

    # --- global ids and the catalog -------------------------------------------------------------------

    def gid(self, shard: int, local: int) -> int:
        return local * self.shards + shard

    def split(self, ids: Iterable[int]) -> dict[int, list[int]]:
        """Global chunk ids by shard, as local ids (in the order given)."""
        found: dict[int, list[int]] = {}
        for g in ids:
            found.setdefault(int(g) % self.shards, []).append(int(g) // self.shards)
        return found

    def _gather_catalog(self) -> Catalog:
        entries: list[CatalogEntry] = []
        for shard, part in sorted(self._all("catalog_entries").items()):
            entries.extend(self._global(shard, e) for e in part)
        return Catalog.build(entries)

    def _global(self, shard: int, entry: CatalogEntry) -> CatalogEntry:
        return dataclasses.replace(entry, chunk_ids=tuple(self.gid(shard, c) for c in entry.chunk_ids))

    # --- the IndexStore interface the retriever, the API and the evaluation use -----------------------

    def snapshot(self) -> ShardedSnapshot:
        self.reset_missing()
        return ShardedSnapshot(self, self._catalog, sum(self._generations.values()))

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    @property
    def size(self) -> int:
        return self._catalog.chunks

    @property
    def generation(self) -> int:
        return sum(self._all("generation").values())

    def article_count(self) -> int:
        return self._catalog.articles

    def chunk_ids(self) -> npt.NDArray[np.int64]:
        return np.flatnonzero(self._catalog.chunk_slot >= 0).astype(np.int64)

    def search(self, query: Vectors, k: int, window: Window = EVERYTHING) -> Hits:
        return self.snapshot().search(query, k, window)

    def passages(self, ids: Sequence[int]) -> list[tuple[Chunk, Article]]:
        found: dict[int, tuple[Chunk, Article]] = {}
        parts = self.split(ids)
        for shard, rows in self._scatter("passages", {s: (local,) for s, local in parts.items()}).items():
            for chunk, article in rows:
                g = self.gid(shard, chunk.id)
                found[g] = (dataclasses.replace(chunk, id=g), article)
        return [found[int(i)] for i in ids if int(i) in found]

    def chunks(self, ids: Sequence[int]) -> list[Chunk]:
        return [chunk for chunk, _ in self.passages(ids)]

    def articles(self, ids: Iterable[str]) -> dict[str, Article]:
        by_shard: dict[int, list[str]] = {}
        for article_id in dict.fromkeys(ids):
            by_shard.setdefault(shard_of(article_id, self.shards), []).append(article_id)
        found: dict[str, Article] = {}
        for part in self._scatter("articles", {s: (a,) for s, a in by_shard.items()}).values():
            found.update(part)
        return found

    def article(self, article_id: str) -> Article:
        found = self.articles([article_id])
        if article_id not in found:
            raise ArticleNotFoundError(f"no article with id {article_id!r}")
        return found[article_id]

    def sentence_vectors(self, article_id: str, spans: Sequence[Span]) -> dict[Span, Vectors]:
        try:
            result: dict[Span, Vectors] = self._call(
                shard_of(article_id, self.shards), "sentence_vectors", article_id, list(spans)
            )
        except ShardUnavailableError:
            return {}
        return result

    def content_hash(self, article_id: str) -> str | None:
        hashes: dict[str, str | None] = self._call(
            shard_of(article_id, self.shards), "content_hashes", [article_id]
        )
        return hashes.get(article_id)

    def content_hashes(self, ids: Sequence[str]) -> dict[str, str | None]:
        by_shard: dict[int, list[str]] = {}
        for article_id in ids:
            by_shard.setdefault(shard_of(article_id, self.shards), []).append(article_id)
        found: dict[str, str | None] = {}
        for part in self._scatter("content_hashes", {s: (a,) for s, a in by_shard.items()}).values():
            found.update(part)
        return found

    def minhashes(self) -> list[tuple[str, bytes | None, str, str | None]]:
        rows = []
        for part in self._all("minhashes").values():
            rows.extend(part)
        return rows

    def write(self, batch: Sequence[ArticleWrite], publish: bool = True) -> None:
        """Each article to every live replica of its shard; the catalog follows."""
        import ray

        by_shard: dict[int, list[ArticleWrite]] = {}
        for item in batch:
            by_shard.setdefault(shard_of(item.article.id, self.shards), []).append(item)
        with self._lock:
            entries: list[CatalogEntry] = []
            for shard, writes in by_shard.items():
                refs = [(r, a.write.remote(writes, publish)) for r, a in self._live(shard)]
                if not refs:
                    raise ShardUnavailableError(f"no replica of shard {shard} can take writes")
                results = []
                for replica, ref in refs:
                    try:
                        results.append(ray.get(ref, timeout=self._timeout * 10))
                    except Exception:
                        log.exception("shard %d replica %d failed a write; it is left out", shard, replica)
                        self._dead.add((shard, replica))
                if not results:
                    raise ShardUnavailableError(f"no replica of shard {shard} took the write")
                entries.extend(self._global(shard, e) for e in results[0])
            self._pending = self._pending.changed(entries, ())
            if publish:
                self._catalog = self._pending
            self._generations = self._all("generation")

    def flush(self) -> None:
        import ray

        ray.get(
            [a.flush.remote() for s in range(self.shards) for _, a in self._live(s)],
            timeout=self._timeout * 10,
        )
        with self._lock:
            self._catalog = self._pending
            self._generations = self._all("generation")

    def delete(self, article_id: str) -> None:
        import ray

        shard = shard_of(article_id, self.shards)
        with self._lock:
            done = ray.get([a.delete.remote(article_id) for _, a in self._live(shard)], timeout=self._timeout)
            if not any(done):
                raise ArticleNotFoundError(f"no article with id {article_id!r}")
            self._pending = self._pending.changed((), [article_id])
            self._catalog = self._pending
            self._generations = self._all("generation")

    def refresh(self) -> bool:
        """Gather the catalog again when another driver wrote (shard generations moved)."""
        generations = self._all("generation")
        if generations == self._generations:
            return False
        with self._lock:
            self._catalog = self._pending = self._gather_catalog()
            self._generations = generations
        return True

    def watch(self, interval: float = 2.0) -> None:
        if self._watcher is None:
            self._watcher = start_watcher(self.refresh, interval, self._stop, "cluster")

    def close(self) -> None:
        self._stop.set()


class ShardedSnapshot:
    """What one query reads through the cluster: the gathered catalog, and scatter-gather searches."""

    def __init__(self, store: ShardedStore, catalog: Catalog, generation: int) -> None:
        self._store = store
        self.catalog = catalog
        self.generation = generation
        self.lexical = ShardedLexical(store)
        self.dimension = 0

    @property
    def size(self) -> int:
        return self.catalog.chunks

    def chunk_ids(self) -> npt.NDArray[np.int64]:
        return np.flatnonzero(self.catalog.chunk_slot >= 0).astype(np.int64)

    def _windows(self, window: Window) -> dict[int, tuple[Window]]:
        if window.ids is None:
            return dict.fromkeys(range(self._store.shards), (window,))
        parts = self._store.split(window.ids)
        return {
            s: (dataclasses.replace(window, ids=np.sort(np.array(parts.get(s, []), dtype=np.int64))),)
            for s in range(self._store.shards)
        }

    def search(self, query: Vectors, k: int, window: Window = EVERYTHING) -> Hits:
        arguments = {s: (query, k, w) for s, (w,) in self._windows(window).items()}
        merged: Hits = []
        for shard, hits in self._store._scatter("search", arguments).items():
            merged.extend((self._store.gid(shard, i), score) for i, score in hits)
        merged.sort(key=lambda hit: (-hit[1], hit[0]))
        return merged[:k]

    def vectors(self, ids: npt.NDArray[np.int64]) -> Vectors:
        parts = self._store.split(ids.tolist())
        found = self._store._scatter(
            "vectors", {s: (np.array(local, dtype=np.int64),) for s, local in parts.items()}
        )
        rows: dict[int, Vectors] = {}
        for shard, matrix in found.items():
            for local, row in zip(parts[shard], matrix, strict=True):
                rows[self._store.gid(shard, local)] = row
        dimension = next(iter(rows.values())).size if rows else 0
        return (
            np.vstack([rows.get(int(i), np.zeros(dimension, dtype=np.float32)) for i in ids])
            if rows
            else (np.zeros((0, 0), dtype=np.float32))
        )


class ShardedLexical:
    """BM25 across shards with corpus-wide statistics (two phases)."""

    def __init__(self, store: ShardedStore) -> None:
        self._store = store

    @property
    def size(self) -> int:
        return self._store.size

    def statistics(self, tokens: Sequence[str]) -> Statistics:
        parts = list(self._store._all("statistics", list(tokens)).values())
        return Statistics.combine(parts) if parts else Statistics(tuple(tokens), (0,) * len(tokens), 0, 0.0)

    def idf(self, tokens: Sequence[str]) -> npt.NDArray[np.float64]:
        from index.store.lexical import idf

        stats = self.statistics(tokens)
        return idf(np.array(stats.df, dtype=np.float64), float(stats.documents))

    def query(self, tokens: Sequence[str]) -> ShardedScores:
        return ShardedScores(self._store, list(tokens), self.statistics(tokens))


class ShardedScores:
    def __init__(self, store: ShardedStore, tokens: list[str], statistics: Statistics) -> None:
        self._store, self._tokens, self._statistics = store, tokens, statistics

    def top(self, k: int, window: Window = EVERYTHING) -> Hits:
        windows = ShardedSnapshot(self._store, self._store.catalog, 0)._windows(window)
        arguments = {s: (self._tokens, self._statistics, k, w) for s, (w,) in windows.items()}
        merged: Hits = []
        for shard, hits in self._store._scatter("lexical_top", arguments).items():
            merged.extend((self._store.gid(shard, i), score) for i, score in hits)
        merged.sort(key=lambda hit: (-hit[1], hit[0]))
        return merged[:k]

    def of(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        parts = self._store.split(ids.tolist())
        arguments = {
            s: (self._tokens, self._statistics, np.array(local, dtype=np.int64)) for s, local in parts.items()
        }
        scores: dict[int, float] = {}
        for shard, values in self._store._scatter("lexical_of", arguments).items():
            for local, value in zip(parts[shard], values, strict=True):
                scores[self._store.gid(shard, local)] = float(value)
        return np.array([scores.get(int(i), 0.0) for i in ids], dtype=np.float32)
