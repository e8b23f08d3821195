"""Ablation: what each retrieval stage adds, on the check half of the dev questions (never tuned on).

Stages, each the production code with more switched on:
  1. plain dense      FAISS top chunks for the question, no dates (the "dense" baseline)
  2. + as_of cap      nothing published after the day asked (DenseRetriever, the first version)
  3. + BM25, RRF      dense and BM25 candidates fused by reciprocal rank (NewsRetriever, no time)
  4. + learned ranker text features only, trained here on the tune half
  5. + time           period and recent-window candidates, date features (the served ranker)
  6. + stories        near-duplicate copies collapsed
  7. + headline-only  records with no text left after cleaning, found by headline and address (served)
Rows 1-6 leave the headline-only articles out (as ingest did before they were kept).
Each row's p is Fisher's paired randomization test against the row above. Latency is embedding plus
retrieval per question, in this run, with its ratio to plain dense search.

    python -m evals.fit.ablation evals/datasets/realtimeqa-briefs evals/datasets/realtimeqa-articles
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from evals import fit
from evals.data import EvalQuestion
from evals.fit.ranker import fit_ranker, training_rows
from evals.harness import mean_scores, ranking_of, retrieval_scores, significance
from rag import Answerer, Filters
from rag.rank import TEXT_FEATURES, FusionRanker, LinearRanker
from rag.retrieve import DenseRetriever, NewsRetriever, RetrievalConfig, Retriever

METRICS = ("hit@1", "hit@5", "hit@10", "mrr@10")


def _plain_dense(skip: frozenset[str]) -> Callable[[Answerer, EvalQuestion, int], list[str]]:
    def rank(answerer: Answerer, q: EvalQuestion, k: int) -> list[str]:
        vector = answerer.embedder.embed([q.question])[0]
        reader = answerer.index.reader()
        found = reader.dense(vector, (k + len(skip)) * 4)
        passages = reader.passages([i for i, _ in found])
        return [a for a in dict.fromkeys(c.article_id for c, _ in passages) if a not in skip][:k]

    return rank


def _through(
    retriever: Retriever, skip: frozenset[str] = frozenset()
) -> Callable[[Answerer, EvalQuestion, int], list[str]]:
    filters = Filters(exclude=tuple(sorted(skip)))

    def rank(answerer: Answerer, q: EvalQuestion, k: int) -> list[str]:
        vector = answerer.embedder.embed([q.question])[0]
        question = answerer.question(q.question, as_of=q.asked_on, top_k=k, filters=filters)
        return list(ranking_of(retriever.retrieve(question, vector, answerer.index.reader())))

    return rank


def headline_only_ids(answerer: Answerer) -> frozenset[str]:
    """The articles of the index that are known by their headline alone."""
    reader = answerer.index.reader()
    ids = {e.article_id for e in reader.entries_of(reader.chunk_ids().tolist()) if e is not None}
    return frozenset(a.id for a in reader.articles(ids).values() if a.headline_only)


def stages(answerer: Answerer, tune: Sequence[EvalQuestion]) -> list[tuple[str, Callable[..., list[str]]]]:
    full = RetrievalConfig()
    skip = headline_only_ids(answerer)
    text_only = replace(full, time=False, collapse_stories=False)
    rows, labels, _ = training_rows(answerer, tune, text_only)
    text_ranker = fit_ranker(rows, labels, TEXT_FEATURES)
    served = LinearRanker.load()
    return [
        ("plain dense", _plain_dense(skip)),
        ("+ as_of cap", _through(DenseRetriever(), skip)),
        ("+ BM25, RRF", _through(NewsRetriever(FusionRanker(), text_only), skip)),
        ("+ learned ranker (text)", _through(NewsRetriever(text_ranker, text_only), skip)),
        ("+ time", _through(NewsRetriever(served, replace(full, collapse_stories=False)), skip)),
        ("+ stories", _through(NewsRetriever(served, full), skip)),
        ("+ headline-only (served)", _through(NewsRetriever(served, full))),
    ]


def run(chosen: fit.FitSet, k: int) -> list[str]:
    dataset, answerer = chosen.dataset, chosen.answerer
    tune, check = chosen.half(tune=True), chosen.half(tune=False)
    lines = [
        f"### {dataset.name}: check half, {len(check)} questions",
        "",
        "| stage | hit@1 | hit@5 | hit@10 | mrr@10 | Δ hit@1 vs above (p) | Δ mrr@10 vs above (p) "
        "| latency p50 / p95 ms | × plain dense (p50) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    previous = None
    dense_p50 = 0.0
    for name, rank in stages(answerer, tune):
        rankings, times = {}, []
        for q in check:
            started = time.perf_counter()
            rankings[q.id] = rank(answerer, q, k)
            times.append((time.perf_counter() - started) * 1000)
        scores = retrieval_scores(check, rankings)
        means = mean_scores(scores)
        p50, p95 = float(np.percentile(times, 50)), float(np.percentile(times, 95))
        dense_p50 = dense_p50 or p50
        cells = [f"{means[m]:.3f}" for m in METRICS]
        for metric in ("hit@1", "mrr@10"):
            if previous is None:
                cells.append("")
            else:
                test = significance(scores, previous)[metric]
                cells.append(f"{test['difference']:+.3f} (p={test['p_value']:.3f})")
        cells.append(f"{p50:.1f} / {p95:.1f}")
        cells.append(f"{p50 / dense_p50:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        previous = scores
        print(lines[-1], file=sys.stderr)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = fit.parser(__doc__)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)
    for chosen in fit.fit_sets(args.datasets):
        chosen.answerer.embedder.embed(["warm up"])
        print("\n".join(run(chosen, args.k)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
