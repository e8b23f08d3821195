"""The index on a Ray cluster beside one machine: ingest throughput with one and two worker nodes, and
query latency through the cluster against the same corpus on one machine.

    .venv/bin/python benchmarks/cluster.py [--items 600] [--questions 300]

A cluster is simulated on this machine with ``ray.cluster_utils.Cluster``: a head with no CPUs for tasks
(it holds only the shard actors, which reserve none) and worker nodes of one CPU each, so Ray Data's
embedding actors (one CPU each, one torch thread each) land on the worker nodes. Two shards, one replica.

1. One machine: ``rag ingest``'s path (an Ingestor in this process, two threads) on the first ``--items``
   briefs items; articles per second.
2. The cluster with one worker node: the same items through the Ingestor with a ``RayPreparer(workers=1)``.
3. A second worker node joins: the next ``--items`` items with ``workers=2``.
4. The rest of the briefs corpus is ingested (two workers); then ``--questions`` briefs questions are
   asked one at a time, through the cluster and through the cached one-machine eval index of the same
   corpus, alternating, each process with one thread. p50/p95 of the whole answer.

Two cores: two embedding actors share the two cores with the driver and the shard actors, so the
two-node figure shows what the engine adds, not what a second machine would.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evals.cache import cached_answerer  # noqa: E402
from evals.config import EvalSettings  # noqa: E402
from evals.data import load_dataset  # noqa: E402
from index import load_paths, make_ingestor, open_index, packaged_embedder  # noqa: E402
from index.cluster import NAMESPACE, create_layout, find_layout  # noqa: E402
from index.cluster_ingest import RayPreparer  # noqa: E402
from index.config import IndexSettings  # noqa: E402
from index.embed import set_threads  # noqa: E402
from index.ingest import Ingestor  # noqa: E402
from index.records import Article  # noqa: E402
from index.store.sharded import ShardedStore  # noqa: E402
from rag import Answerer  # noqa: E402

BRIEFS = ROOT / "evals" / "datasets" / "realtimeqa-briefs"


def _rate(label: str, count: int, seconds: float) -> float:
    rate = count / seconds
    print(f"{label:<44} {count:>6} articles {seconds:>7.1f} s {rate:>7.1f} articles/s", flush=True)
    return rate


def _percentiles(values: list[float]) -> tuple[float, float]:
    p50, p95 = np.percentile(values, [50, 95])
    return float(p50), float(p95)


def ingest_rates(
    cluster: Any, items: list[Article], size: int, work: Path, base: EvalSettings
) -> ShardedStore:
    """Articles per second on one machine, then on the cluster with one and two worker nodes; returns
    the cluster's index with every item."""
    embedder = packaged_embedder(IndexSettings.from_env())
    first, second, rest = items[:size], items[size : 2 * size], items[2 * size :]
    set_threads(2)
    local = IndexSettings(data_dir=work / "one-machine", tiktoken_cache_dir=base.index.tiktoken_cache_dir)
    store = open_index(local, embedder)
    start = time.perf_counter()
    make_ingestor(local, store, embedder).ingest(first, progress=False)
    one_machine = _rate("one machine, 2 threads", len(first), time.perf_counter() - start)
    store.close()

    create_layout(str(work / "shards"), 2, 1, embedder.name, embedder.dimension)
    sharded = ShardedStore(find_layout())
    settings = base.index
    start = time.perf_counter()
    Ingestor(sharded, RayPreparer(settings, workers=1)).ingest(first, progress=False)
    one_node = _rate("cluster, 1 worker node", len(first), time.perf_counter() - start)
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    start = time.perf_counter()
    Ingestor(sharded, RayPreparer(settings, workers=2)).ingest(second, progress=False)
    two_nodes = _rate("cluster, 2 worker nodes", len(second), time.perf_counter() - start)
    Ingestor(sharded, RayPreparer(settings, workers=2)).ingest(rest, progress=False)
    print(
        f"ratios: 1 node / one machine {one_node / one_machine:.2f}x, "
        f"2 nodes / 1 node {two_nodes / one_node:.2f}x",
        flush=True,
    )
    return sharded


def query_latency(sharded: ShardedStore, count: int, base: EvalSettings) -> dict[str, float]:
    """The same questions through the cluster and through one machine's index of the same corpus."""
    set_threads(1)
    embedder = packaged_embedder(IndexSettings.from_env())
    clustered = Answerer(sharded, embedder)
    single = cached_answerer(BRIEFS / "corpus.jsonl", base, embedder)
    questions = list(load_dataset(BRIEFS).questions)[:count]
    times: dict[str, list[float]] = {"one machine": [], "cluster": []}
    for q in questions[:10]:  # warm both
        single.ask(single.question(q.question, as_of=q.asked_on))
        clustered.ask(clustered.question(q.question, as_of=q.asked_on))
    rounds = []
    for q in questions:
        for name, answerer in (("one machine", single), ("cluster", clustered)):
            before = sharded.rounds
            start = time.perf_counter()
            answerer.ask(answerer.question(q.question, as_of=q.asked_on))
            times[name].append((time.perf_counter() - start) * 1000)
            if name == "cluster":
                rounds.append(sharded.rounds - before)
    base_p50, base_p95 = _percentiles(times["one machine"])
    p50, p95 = _percentiles(times["cluster"])
    print(f"{'answer, one machine':<44} p50 {base_p50:7.1f} ms  p95 {base_p95:7.1f} ms")
    print(f"{'answer, cluster (2 shards)':<44} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms")
    print(f"ratio of p50: cluster / one machine {p50 / base_p50:.2f}x ({len(questions)} questions)")
    print(
        f"rounds per question: mean {np.mean(rounds):.2f}, one round for {np.mean(np.array(rounds) == 1):.1%}"
    )
    return {
        "questions": len(questions),
        "one_machine_p50_ms": round(base_p50, 2),
        "one_machine_p95_ms": round(base_p95, 2),
        "cluster_p50_ms": round(p50, 2),
        "cluster_p95_ms": round(p95, 2),
        "query_p50_ratio": round(p50 / base_p50, 3),
        "rounds_per_question": round(float(np.mean(rounds)), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=600, help="articles per ingest measurement")
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    ray.data.DataContext.get_current().enable_progress_bars = False
    base = EvalSettings.from_env()
    items = [a for a in load_paths([BRIEFS / "corpus.jsonl"]) if isinstance(a, Article)]
    work = Path(tempfile.mkdtemp(prefix="newsrag-cluster-bench-"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
    try:
        sharded = ingest_rates(cluster, items, args.items, work, base)
        figures = query_latency(sharded, args.questions, base)
        if args.json:
            print(json.dumps(figures))
    finally:
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]
    return 0


if __name__ == "__main__":
    sys.exit(main())
