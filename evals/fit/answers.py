"""Does this sentence answer this question? A first measurement for issue 22, on the tune half only.

For each answerable tune question, every sentence the extractive composer would consider (those of the
best five passages it retrieves) is a row, labelled by whether it holds a gold answer (after SQuAD-style
normalisation). Features over the question and the sentence: its cosine to the question, the share of
the question's words and of its three rarest words in it, the passage's rank, what the question asks
for (a person, a place, a number, a date, a reason) against what the sentence holds (a new name, a
count, a date, a cause word), its new names, its length, and the composer's own score. A logistic
regression (rag/linear.py's type) is fitted on four fifths of the tune questions (by hash) and read on
the fifth left: how often the best-scored sentence of a question holds its answer, by the composer's
score and by the scorer, and how well the scorer ranks answering sentences (AUC). The check half is not
read. Nothing is served from it yet.

    python -m evals.fit.answers evals/datasets/realtimeqa-articles evals/datasets/realtimeqa-briefs
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from evals import fit
from evals.harness import normalize_answer
from index.terms import tokenize
from rag.abstain import COUNT, DATE, DAY_OF_MONTH

NAMES = (
    "cosine",
    "overlap",
    "rare",
    "rank",
    "person_named",
    "place_named",
    "number_held",
    "date_held",
    "reason_held",
    "new_names",
    "length",
    "composer",
)
_PERSON = re.compile(r"\b(who|whom|whose)\b", re.I)
_PLACE = re.compile(r"\b(where|which|what) ?(country|city|state|nation|place|region|continent|town)?\b", re.I)
_REASON = re.compile(r"\bwhy\b", re.I)
_CAUSE = re.compile(r"\b(because|due to|after|as a result|amid|over|caused|blamed|following)\b", re.I)
_CAPITAL = re.compile(r"(?<!^)(?<![.!?] )\b[A-Z][\w'’-]+")


def _fold(question_id: str) -> bool:
    """Four fifths of the tune questions fit; the fifth left reads."""
    return hashlib.sha256(f"answers:{question_id}".encode()).digest()[0] % 5 != 0


Row = tuple[str, list[float], bool, str, str]
"""Question id, features, holds an answer, the question, the sentence."""


def _rows(fit_set: fit.FitSet) -> list[Row]:
    answerer = fit_set.answerer
    composer = answerer.quotes
    rows = []
    for q in fit_set.half(tune=True):
        question = answerer.question(q.question, as_of=q.asked_on, top_k=10)
        reader = answerer.index.reader()
        vector = answerer.embedder.embed([question.searched])[0]
        hits = [
            h for h in answerer.retriever.retrieve(question, vector, reader) if not h.article.headline_only
        ][:5]
        own = set(question.asked)
        idf = reader.idf(list(own)) if own else np.zeros(0)
        rare = {t for t, _ in sorted(zip(own, idf, strict=True), key=lambda p: -p[1])[:3]}
        asked_names = {w.lower() for w in _CAPITAL.findall(q.question)}
        wants_person, wants_place = bool(_PERSON.search(q.question)), bool(_PLACE.search(q.question))
        golds = [normalize_answer(a) for a in q.answers if normalize_answer(a)]
        for c in composer.candidates(question, vector, hits, reader):
            terms = set(tokenize([c.text])[0])
            new_names = [w for w in _CAPITAL.findall(c.text) if w.lower() not in asked_names]
            held = f" {normalize_answer(c.text)} "
            features = [
                float(c.vector @ vector),
                len(own & terms) / len(own) if own else 0.0,
                len(rare & terms) / len(rare) if rare else 0.0,
                1.0 / c.hit.rank,
                float(wants_person and bool(new_names)),
                float(wants_place and bool(new_names)),
                float("count" in question.wants and bool(COUNT.search(DAY_OF_MONTH.sub(" ", c.text)))),
                float("date" in question.wants and bool(DATE.search(c.text))),
                float(bool(_REASON.search(q.question)) and bool(_CAUSE.search(c.text))),
                min(len(new_names), 5) / 5,
                math.log(max(len(c.text), 1)) / math.log(400),
                c.score,
            ]
            rows.append((q.id, features, any(f" {g} " in held for g in golds), q.question, c.text))
    return rows


def _cross_encoder(rows: list[Row], args: argparse.Namespace) -> None:
    """A cross-encoder from the packaged MiniLM (evals/fit/reranker.py's), trained on the four fifths'
    sentences (each question's answering one against the others), read on the fifth left."""
    from evals.fit.reranker import Group, score, train
    from index.embed import set_threads

    set_threads(2)
    by_question: dict[str, list[Row]] = {}
    for row in rows:
        by_question.setdefault(row[0], []).append(row)
    groups = {
        qid: Group(qid, found[0][3], [r[4] for r in found], [r[1][-1] for r in found], [r[2] for r in found])
        for qid, found in by_question.items()
    }
    model, tokenizer = train([g for qid, g in groups.items() if _fold(qid)], args)
    held = [g for qid, g in groups.items() if not _fold(qid)]
    logits, ms = score(model, tokenizer, held, args.max_tokens)
    print(f"cross-encoder: {ms:.1f} ms a sentence (torch, {len(held)} questions)")
    for w in (0.0, 0.1, 0.25, 0.5, 1.0, 100.0):
        right = 0
        for g, ce in zip(held, logits, strict=True):
            best = max(range(len(g.texts)), key=lambda i: g.scores[i] + w * ce[i])
            right += g.gold[best]
        print(
            f"  best sentence by composer + {w:g} x cross-encoder holds the answer: {right / len(held):.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = fit.parser(__doc__)
    parser.add_argument("--cross-encoder", action="store_true", help="also train and read a cross-encoder")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--negatives", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args(argv)
    rows = [row for fit_set in fit.fit_sets(args.datasets) for row in _rows(fit_set)]
    ids = [r[0] for r in rows]
    x = np.array([r[1] for r in rows])
    y = np.array([r[2] for r in rows])
    train = np.array([_fold(i) for i in ids])
    model = LogisticRegression(max_iter=2000, class_weight="balanced").fit(x[train], y[train])
    scores = model.decision_function(x)
    read = ~train
    print(f"{len(set(ids))} tune questions, {len(rows)} sentences, {y.mean():.3f} of them hold an answer")
    print(
        f"AUC on the fifth left: scorer {roc_auc_score(y[read], scores[read]):.3f}, "
        f"composer's score {roc_auc_score(y[read], x[read][:, NAMES.index('composer')]):.3f}"
    )
    for name, column in (("composer's score", x[:, NAMES.index("composer")]), ("scorer", scores)):
        best: dict[str, tuple[float, bool]] = {}
        for qid, value, label, keep in zip(ids, column, y, read, strict=True):
            if keep and (qid not in best or value > best[qid][0]):
                best[qid] = (float(value), bool(label))
        hits = sum(label for _, label in best.values())
        print(f"best sentence holds the answer, by the {name}: {hits}/{len(best)} = {hits / len(best):.3f}")
    for feature, weight in zip(NAMES, model.coef_[0], strict=True):
        print(f"  {feature:<13} {weight:+.3f}")
    if args.cross_encoder:
        _cross_encoder(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
