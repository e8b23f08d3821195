"""The index's shard actors on a Ray cluster; ``index.store.sharded.ShardedStore`` reads and writes
through them.

Layout: ``shards`` shards, each held by ``replicas`` Ray actors (``ShardActor``, each an ``IndexStore`` in
its own folder on its node), placed so that the replicas of one shard sit on different nodes. An article
belongs to the shard ``sha1(article id) mod shards``: a hash spreads articles, and with them writes and
query work, evenly whatever their dates (partitioning by month would put "this week" on one shard).
Actors are named and detached: the index lives as long as the cluster, and any driver finds it. A shard
answers by its own (local) chunk ids; the driver makes them global.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from index.embed import Vectors, set_threads
from index.errors import ArticleNotFoundError
from index.records import Article, Chunk, Span
from index.store import ArticleWrite, IndexStore, LocalReader
from index.store.probe import Probe, ShardAnswer, answer_probe
from index.store.protocols import CatalogEntry, Statistics
from index.store.sharded import ShardedStore
from index.store.window import Hits, Window

NAMESPACE = "newsrag"
PREFIX = "newsrag-shard"
_KEEP_READERS = 16


class ShardActor:
    """One replica of one shard: an IndexStore in ``data_dir`` on its node, answering by local chunk ids.
    (Made a Ray actor by ``ray.remote`` when the layout is created.)

    It keeps its last few published readers, so that a driver's reader, taken at some generation of
    every shard, keeps reading that generation while writes go on (``at``): searches by a reader never
    see a later write, as on one machine."""

    def __init__(self, data_dir: str, model_name: str, dimension: int) -> None:
        set_threads(1)  # several shards share a node's cores: one thread each, no spinning
        self.store = IndexStore(Path(data_dir), model_name, dimension)
        self._readers: OrderedDict[int, LocalReader] = OrderedDict()
        self._remember()

    def _remember(self) -> None:
        reader = self.store.reader()
        self._readers[reader.generation] = reader
        while len(self._readers) > _KEEP_READERS:
            self._readers.popitem(last=False)

    def _at(self, generation: int | None) -> LocalReader:
        """The reader of ``generation`` when it is still kept (else the latest)."""
        kept = self._readers.get(generation) if generation is not None else None
        return kept or self.store.reader()

    def generation(self) -> int:
        """The generation of the shard's database (moves with any driver's writes)."""
        return self.store.generation

    def published(self) -> int:
        """The generation its readers see."""
        return self.store.reader().generation

    def node(self) -> str:
        """The Ray node this replica runs on."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def catalog_entries(self) -> list[CatalogEntry]:
        return self.store.catalog_entries()

    def minhashes(self) -> list[tuple[str, bytes | None, str, str | None]]:
        return self.store.minhashes()

    def content_hashes(self, ids: list[str]) -> dict[str, str | None]:
        return self.store.content_hashes(ids)

    def write(self, writes: list[ArticleWrite], publish: bool) -> list[CatalogEntry]:
        self.store.write(writes, publish=publish)
        self._remember()
        return self.store.catalog_entries(w.article.id for w in writes)

    def flush(self) -> None:
        self.store.flush()
        self._remember()

    def refresh(self) -> None:
        self.store.refresh()
        self._remember()

    def delete(self, article_id: str) -> bool:
        try:
            self.store.delete(article_id)
        except ArticleNotFoundError:
            return False
        self._remember()
        return True

    def probe(self, probe: Probe, generation: int | None = None) -> ShardAnswer:
        """Everything one question reads from this shard, at once (index/store/probe.py)."""
        return answer_probe(self._at(generation), probe)

    def search(self, query: Vectors, k: int, window: Window, generation: int | None = None) -> Hits:
        return self._at(generation).dense(query, k, window)

    def statistics(self, tokens: list[str], generation: int | None = None) -> Statistics:
        return self._at(generation).statistics(tokens)

    def lexical_top(
        self, tokens: list[str], statistics: Statistics, k: int, window: Window, generation: int | None = None
    ) -> Hits:
        return self._at(generation).lexical(tokens, statistics).top(k, window)

    def lexical_of(
        self,
        tokens: list[str],
        statistics: Statistics,
        ids: npt.NDArray[np.int64],
        generation: int | None = None,
    ) -> npt.NDArray[np.float32]:
        return self._at(generation).lexical(tokens, statistics).of(ids)

    def vectors(self, ids: npt.NDArray[np.int64], generation: int | None = None) -> Vectors:
        return self._at(generation).vectors(ids)

    def similarities(
        self, query: Vectors, ids: npt.NDArray[np.int64], generation: int | None = None
    ) -> npt.NDArray[np.float32]:
        return self._at(generation).similarities(query, ids)

    def passages(self, ids: list[int]) -> list[tuple[Chunk, Article]]:
        return self.store.reader().passages(ids)

    def articles(self, ids: list[str]) -> dict[str, Article]:
        return self.store.reader().articles(ids)

    def sentence_vectors(self, article_id: str, spans: list[Span]) -> dict[Span, Vectors]:
        return self.store.reader().sentence_vectors(article_id, spans)


def connect(address: str) -> None:
    """Join the Ray cluster at ``address`` (``auto``, or ``HOST:PORT`` of its head)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)


def create_layout(
    base_dir: str, shards: int, replicas: int, model_name: str, dimension: int, prefix: str = PREFIX
) -> list[list[Any]]:
    """Start the shard actors (named ``PREFIX-shard-replica``, detached), each replica of a shard on a
    different node when the cluster has enough nodes; returns their handles, shard by shard. Another
    ``prefix`` keeps another index on the same cluster."""
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
                name=f"{prefix}-{shard}-{replica}",
                namespace=NAMESPACE,
                lifetime="detached",
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
            ).remote(f"{base_dir}/shard-{shard}-replica-{replica}", model_name, dimension)
            copies.append(actor)
        layout.append(copies)
    return layout


def find_layout(prefix: str = PREFIX) -> list[list[Any]]:
    """The shard actors already running on the connected cluster (empty when there are none)."""
    import ray

    names = [
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == NAMESPACE
    ]
    found: dict[int, dict[int, Any]] = {}
    for name in names:
        rest = name[len(prefix) + 1 :].split("-")
        if name.startswith(prefix + "-") and len(rest) == 2 and all(x.isdigit() for x in rest):
            shard, replica = (int(x) for x in rest)
            found.setdefault(shard, {})[replica] = ray.get_actor(name, namespace=NAMESPACE)
    return [[found[s][r] for r in sorted(found[s])] for s in sorted(found)]


def open_cluster(
    address: str, base_dir: str, shards: int, replicas: int, model_name: str, dimension: int
) -> ShardedStore:
    """The index on the Ray cluster at ``address``, its shard actors started when it has none yet."""
    connect(address)
    layout = find_layout() or create_layout(base_dir, shards, replicas, model_name, dimension)
    return ShardedStore(layout)
