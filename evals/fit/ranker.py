"""Train the learned ranker (rag/ranker.json) on the tune half of the dev questions.

For every tune question, the production NewsRetriever proposes its candidate articles with their
features (asked with as_of = asked_on); gold articles are the positives. A logistic regression over
standardised features is fitted and written as plain weights, so serving needs no scikit-learn.

    python -m evals.fit.ranker evals/datasets/realtimeqa-briefs evals/datasets/realtimeqa-articles
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from evals import fit
from evals.data import EvalQuestion
from rag import Answerer, Filters
from rag.rank import DEFAULT_RANKER_PATH, FEATURES, LinearRanker, Matrix
from rag.retrieve import NewsRetriever, RetrievalConfig


def training_rows(
    answerer: Answerer, questions: Sequence[EvalQuestion], config: RetrievalConfig
) -> tuple[Matrix, np.ndarray, np.ndarray]:
    """Feature rows, labels and question-group numbers over the candidates of ``questions``."""
    retriever = NewsRetriever(answerer.store, config=config)
    vectors = answerer.embedder.embed([q.question for q in questions])
    rows, labels, groups = [], [], []
    for number, (q, vector) in enumerate(zip(questions, vectors, strict=True)):
        found = retriever.candidates(q.question, vector, Filters(), q.asked_on or date.today())
        if found is None:
            continue
        gold = [a in q.gold_ids for a in found.article_ids]
        if not any(gold):
            continue  # nothing to learn: gold is not among the candidates
        rows.append(found.rows)
        labels.extend(gold)
        groups.extend([number] * len(gold))
    return np.vstack(rows), np.array(labels, dtype=int), np.array(groups)


def fit_ranker(rows: Matrix, labels: np.ndarray, names: Sequence[str] = FEATURES) -> LinearRanker:
    columns = [FEATURES.index(n) for n in names]
    x = rows[:, columns]
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=1.0, max_iter=2000)
    model.fit((x - mean) / scale, labels)
    return LinearRanker(
        tuple(names), mean, scale, model.coef_[0].astype(np.float64), float(model.intercept_[0])
    )


def main(argv: list[str] | None = None) -> int:
    parser = fit.parser(__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_RANKER_PATH)
    args = parser.parse_args(argv)
    all_rows, all_labels = [], []
    used = []
    for chosen in fit.fit_sets(args.datasets):
        questions = chosen.half(tune=True)
        rows, labels, _ = training_rows(chosen.answerer, questions, RetrievalConfig())
        all_rows.append(rows)
        all_labels.append(labels)
        used.append(f"{chosen.folder.name}: {len(questions)} tune questions, {len(labels)} candidates")
    ranker = fit_ranker(np.vstack(all_rows), np.concatenate(all_labels))
    args.out.write_text(
        ranker.to_json(
            trained_on=used, command="python -m evals.fit.ranker " + " ".join(map(str, args.datasets))
        )
        + "\n"
    )
    for name, weight in zip(ranker.names, ranker.weights, strict=True):
        print(f"{name:<16} {weight:+.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
