"""The packaged model on torch against the served ONNX Runtime backends, side by side in one run.

    .venv/bin/python benchmarks/embed.py [--questions 300] [--articles 60] [--json]

Questions: the same fixed sample of briefs questions as benchmarks/latency.py, one at a time with one
thread (as `rag serve` embeds them), torch, ONNX fp32 and ONNX int8 interleaved question by question so
that drift on the machine hits all three alike. Passages: what an ingest embeds for the first N articles
of the RealTime QA articles corpus (every chunk and every sentence, through ``index.ingest.prepare``),
with the ingest's thread count (the machine's cores), each backend in turn. Prints p50/p95 ms per
question, texts and articles per second, the ratios to torch, and the cosine of each backend's vectors
to torch's (min and mean over questions and passages).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evals.data import load_dataset  # noqa: E402
from index import Embedder, load_paths, packaged_embedder  # noqa: E402
from index.config import IndexSettings  # noqa: E402
from index.embed import TorchEmbedder, core_count, set_threads  # noqa: E402
from index.ingest import prepare  # noqa: E402
from index.records import Article  # noqa: E402
from index.store import ArticleWrite  # noqa: E402

BACKENDS = ("torch", "onnx", "onnx-int8")
BRIEFS = ROOT / "evals/datasets/realtimeqa-briefs"
ARTICLES = ROOT / "evals/datasets/realtimeqa-articles"


def _embedder(backend: str, threads: int) -> Embedder:
    if backend == "torch":
        return TorchEmbedder(threads=threads)
    return packaged_embedder(IndexSettings(embedder=backend), threads=threads)


def _questions(count: int) -> list[str]:
    chosen = sorted(load_dataset(BRIEFS).questions, key=lambda q: hashlib.sha256(q.id.encode()).hexdigest())
    return [q.question for q in chosen[:count]]


def _articles(count: int) -> list[Article]:
    found = [item for item in load_paths([ARTICLES / "corpus.jsonl"]) if isinstance(item, Article)]
    return found[:count]


def _queries(questions: list[str]) -> dict[str, object]:
    set_threads(1)
    models = {backend: _embedder(backend, 1) for backend in BACKENDS}
    times: dict[str, list[float]] = {backend: [] for backend in BACKENDS}
    vectors: dict[str, list[np.ndarray]] = {backend: [] for backend in BACKENDS}
    for model in models.values():
        model.embed(["warm up"])
    for question in questions:
        for backend, model in models.items():
            started = time.perf_counter()
            vector = model.embed([question])
            times[backend].append((time.perf_counter() - started) * 1000)
            vectors[backend].append(vector[0])
    reference = np.vstack(vectors["torch"])
    out: dict[str, object] = {}
    for backend in BACKENDS:
        key = _key(backend)
        out[f"{key}_query_p50_ms"] = round(float(np.percentile(times[backend], 50)), 3)
        out[f"{key}_query_p95_ms"] = round(float(np.percentile(times[backend], 95)), 3)
        if backend != "torch":
            cosines = (np.vstack(vectors[backend]) * reference).sum(axis=1)
            out[f"{key}_query_min_cosine"] = round(float(cosines.min()), 6)
            out[f"{key}_query_mean_cosine"] = round(float(cosines.mean()), 6)
    return out


def _passages(articles: list[Article]) -> dict[str, object]:
    from index import chunker

    threads = core_count()
    set_threads(threads)
    cut = chunker(IndexSettings.from_env())
    out: dict[str, object] = {"core_count": threads}
    reference: np.ndarray | None = None
    for backend in BACKENDS:
        model = _embedder(backend, threads)
        model.embed(["warm up"])
        started = time.perf_counter()
        writes = prepare(articles, cut, model)
        seconds = time.perf_counter() - started
        vectors = np.vstack([_vectors(w) for w in writes])
        key = _key(backend)
        out["texts"] = int(vectors.shape[0])
        out[f"{key}_passages_per_s"] = round(vectors.shape[0] / seconds, 1)
        out[f"{key}_articles_per_s"] = round(len(articles) / seconds, 2)
        if reference is None:
            reference = vectors
        else:
            cosines = (vectors * reference).sum(axis=1)
            out[f"{key}_passage_min_cosine"] = round(float(cosines.min()), 6)
            out[f"{key}_passage_mean_cosine"] = round(float(cosines.mean()), 6)
    return out


def _vectors(write: ArticleWrite) -> np.ndarray:
    if write.sentence_vectors is None:
        return write.vectors
    return np.vstack([write.vectors, write.sentence_vectors])


def _key(backend: str) -> str:
    return {"torch": "torch", "onnx": "served", "onnx-int8": "int8"}[backend]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--articles", type=int, default=60)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    figures = _queries(_questions(args.questions))
    figures.update(_passages(_articles(args.articles)))
    for key in ("served", "int8"):
        figures[f"{key}_query_p50_ratio"] = round(
            float(figures[f"{key}_query_p50_ms"]) / float(figures["torch_query_p50_ms"]),
            3,  # type: ignore[arg-type]
        )
        figures[f"{key}_passages_ratio"] = round(
            float(figures[f"{key}_passages_per_s"]) / float(figures["torch_passages_per_s"]),
            3,  # type: ignore[arg-type]
        )
    figures["min_cosine_to_torch"] = min(
        figures["served_query_min_cosine"], figures["served_passage_min_cosine"]
    )  # type: ignore[type-var]
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(
        f"{args.questions} questions, one thread; {figures['texts']} texts of {args.articles} articles, "
        f"{figures['core_count']} threads"
    )
    for backend in BACKENDS:
        key = _key(backend)
        line = (
            f"{backend:<10} query p50 {figures[f'{key}_query_p50_ms']:>6} ms"
            f"  p95 {figures[f'{key}_query_p95_ms']:>6} ms"
            f"  ingest {figures[f'{key}_passages_per_s']:>7} texts/s"
            f" {figures[f'{key}_articles_per_s']:>6} articles/s"
        )
        if backend != "torch":
            line += (
                f"  x{figures[f'{key}_query_p50_ratio']} query, x{figures[f'{key}_passages_ratio']} ingest;"
                f" cosine to torch min {figures[f'{key}_query_min_cosine']}"
                f" / {figures[f'{key}_passage_min_cosine']}"
            )
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
