"""Baselines scored beside the system on the same questions and the same chunks.

Both are "plain": no dates, no filters, no reranking; a document's rank is that of its best chunk.
- ``bm25``: bm25s (Lucene BM25, English stopwords) over the text that is embedded for each chunk.
- ``dense``: the same FAISS index and model as the system, top chunks for the raw question.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import bm25s
from tqdm import tqdm

from evals.data import EvalQuestion
from index.chunk import passage_text
from rag import Answerer

_DEPTH_PER_DOC = 4
logging.getLogger("bm25s").setLevel(logging.WARNING)


def _collapse(article_ids: Sequence[str], k: int) -> list[str]:
    return list(dict.fromkeys(article_ids))[:k]


def dense_rankings(
    answerer: Answerer, questions: Sequence[EvalQuestion], k: int, progress: bool | None = None
) -> dict[str, list[str]]:
    reader = answerer.index.reader()
    show = sys.stderr.isatty() if progress is None else progress
    vectors = answerer.embedder.embed([q.question for q in questions])
    rankings = {}
    for q, vector in tqdm(
        list(zip(questions, vectors, strict=True)), desc="dense", disable=not show, file=sys.stderr
    ):
        found = reader.dense(vector, k * _DEPTH_PER_DOC)
        passages = reader.passages([chunk_id for chunk_id, _ in found])
        rankings[q.id] = _collapse([c.article_id for c, _ in passages], k)
    return rankings


def bm25_rankings(answerer: Answerer, questions: Sequence[EvalQuestion], k: int) -> dict[str, list[str]]:
    reader = answerer.index.reader()
    passages = reader.passages([int(i) for i in reader.chunk_ids()])
    chunks = [chunk for chunk, _ in passages]
    texts = [passage_text(article, chunk.text) for chunk, article in passages]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    depth = min(len(texts), k * _DEPTH_PER_DOC)
    tokens = bm25s.tokenize([q.question for q in questions], stopwords="en", show_progress=False)
    results, _ = retriever.retrieve(tokens, k=depth, show_progress=False, n_threads=1)
    return {
        q.id: _collapse([chunks[int(i)].article_id for i in row], k)
        for q, row in zip(questions, results, strict=True)
    }
