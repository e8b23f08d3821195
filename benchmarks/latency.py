"""Query latency of the served pipeline against plain dense search, measured in the same run.

    .venv/bin/python benchmarks/latency.py [DATASET_DIR] [--questions N]

For N questions of the dataset (default: 500 briefs questions, a fixed sample), each asked with
as_of = its asked_on, it times:
  dense     embed the question + FAISS top chunks (no dates, no BM25, no ranker)
  retrieve  embed + the served NewsRetriever (BM25, periods, ranker, stories)
  ask       the whole Answerer.ask (retrieve + compose + cite)
and prints p50 / p95 in ms and the ratio of each to dense. Index built once and cached (rag eval's cache).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evals.cache import cached_answerer  # noqa: E402
from evals.config import EvalSettings  # noqa: E402
from evals.data import EvalQuestion, load_dataset  # noqa: E402
from index import packaged_embedder  # noqa: E402
from index.config import IndexSettings  # noqa: E402
from rag import Answerer  # noqa: E402


def _timed(fn: Callable[[EvalQuestion], object], questions: list[EvalQuestion]) -> list[float]:
    times = []
    for q in questions:
        started = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", nargs="?", type=Path, default=ROOT / "evals/datasets/realtimeqa-briefs")
    parser.add_argument("--questions", type=int, default=500)
    args = parser.parse_args()
    dataset = load_dataset(args.dataset)
    questions = sorted(dataset.questions, key=lambda q: hashlib.sha256(q.id.encode()).hexdigest())
    questions = questions[: args.questions]
    answerer: Answerer = cached_answerer(
        dataset.corpus, EvalSettings.from_env(), packaged_embedder(IndexSettings.from_env())
    )
    index, embedder = answerer.index, answerer.embedder
    embedder.embed(["warm up"])

    def dense(q: EvalQuestion) -> object:
        return index.reader().dense(embedder.embed([q.question])[0], 40)

    def retrieve(q: EvalQuestion) -> object:
        vector = embedder.embed([q.question])[0]
        question = answerer.question(q.question, as_of=q.asked_on, top_k=10)
        return answerer.retriever.retrieve(question, vector, index.reader())

    def ask(q: EvalQuestion) -> object:
        return answerer.ask(answerer.question(q.question, as_of=q.asked_on, top_k=10))

    results = {
        name: _timed(fn, questions) for name, fn in (("dense", dense), ("retrieve", retrieve), ("ask", ask))
    }
    base = float(np.percentile(results["dense"], 50))
    base95 = float(np.percentile(results["dense"], 95))
    print(f"{dataset.name}: {len(questions)} questions, {index.reader().size} chunks")
    print(f"{'stage':<10} {'p50 ms':>8} {'p95 ms':>8} {'x dense p50':>12} {'x dense p95':>12}")
    for name, times in results.items():
        p50, p95 = float(np.percentile(times, 50)), float(np.percentile(times, 95))
        print(f"{name:<10} {p50:>8.1f} {p95:>8.1f} {p50 / base:>12.2f} {p95 / base95:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
