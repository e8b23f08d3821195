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

from evals import fit
from evals.data import EvalQuestion
from rag import Answerer
from rag.linear import LogisticModel, Matrix
from rag.rank import DEFAULT_RANKER_PATH, NAMES, LinearRanker
from rag.retrieve import NewsRetriever, RetrievalConfig


def training_rows(
    answerer: Answerer, questions: Sequence[EvalQuestion], config: RetrievalConfig
) -> tuple[Matrix, np.ndarray, np.ndarray]:
    """Feature rows, labels and question-group numbers over the candidates of ``questions``."""
    retriever = NewsRetriever(config=config)
    vectors = answerer.embedder.embed([q.question for q in questions])
    reader = answerer.index.reader()
    rows, labels, groups = [], [], []
    for number, (q, vector) in enumerate(zip(questions, vectors, strict=True)):
        question = answerer.question(q.question, as_of=q.asked_on or date.today())
        found = retriever.candidates(question, vector, reader)
        if found is None:
            continue
        gold = [a in q.gold_ids for a in found.article_ids]
        if not any(gold):
            continue  # nothing to learn: gold is not among the candidates
        rows.append(found.rows)
        labels.extend(gold)
        groups.extend([number] * len(gold))
    return np.vstack(rows), np.array(labels, dtype=int), np.array(groups)


def fit_ranker(rows: Matrix, labels: np.ndarray, names: Sequence[str] = NAMES) -> LinearRanker:
    """A ranker over the features ``names`` of ``rows`` (whose columns are all of ``NAMES``)."""
    columns = [NAMES.index(n) for n in names]
    return LinearRanker(LogisticModel.fitted(names, rows[:, columns], labels))


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
        ranker.model.to_json(
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
