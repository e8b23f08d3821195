"""Run the production Answerer over a dataset and score retrieval and answers.

Retrieval metrics are document level (an article is relevant when it is gold) and computed by ranx.
Answer metrics follow the definitions in evals/RESULTS.md; unanswerable questions count only toward
abstention metrics.
"""

from __future__ import annotations

import re
import sys
import unicodedata
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from ranx import Qrels, Run, evaluate
from ranx.statistical_tests import fisher_randomization_test
from tqdm import tqdm

from evals.data import EvalQuestion
from rag import Answer, Answerer, Hit
from rag.relative import plain

RETRIEVAL_METRICS = {
    "hit@1": "hit_rate@1",
    "hit@5": "hit_rate@5",
    "hit@10": "hit_rate@10",
    "mrr@10": "mrr@10",
    "ndcg@10": "ndcg@10",
    "recall@10": "recall@10",
}
ANSWER_METRICS = (
    "answer_accuracy",
    "citation_precision",
    "citation_recall",
    "groundedness",
    "abstention_precision",
    "abstention_recall",
    "abstention_f1",
)
PERMUTATIONS = 2000
SIGNIFICANCE_LEVEL = 0.05
_CITED_SENTENCE = re.compile(r"(.+?) \[(\d+)\](?= |$)")
_NO_DOC = "__none__"


@dataclass(frozen=True)
class Outcome:
    """What the system did with one question."""

    question: EvalQuestion
    ranking: tuple[str, ...]
    answer: str = ""
    abstained: bool = False
    cited: tuple[str, ...] = ()
    grounded: tuple[bool, ...] = ()
    correct: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)
    generated: bool = False
    fallback: str | None = None


def run_system(
    answerer: Answerer, questions: Sequence[EvalQuestion], k: int, progress: bool | None = None
) -> list[Outcome]:
    """Ask every question as a user would on its ``asked_on`` day (``as_of``), through Answerer.ask."""
    outcomes = []
    show = sys.stderr.isatty() if progress is None else progress
    for q in tqdm(questions, desc="eval", unit="question", disable=not show, file=sys.stderr):
        answer = answerer.ask(answerer.question(q.question, as_of=q.asked_on, top_k=k))
        outcomes.append(outcome_of(answerer, q, answer))
    return outcomes


def outcome_of(answerer: Answerer, q: EvalQuestion, answer: Answer) -> Outcome:
    """How ``answer`` does on ``q``."""
    ranking = ranking_of(answer.passages)
    by_n = {c.n: c for c in answer.citations}
    grounded = []
    if answer.generated:  # written by a model: grounded means checked and supported by its citations
        grounded = [s.verified for s in answer.sentences]
    elif not answer.abstained:
        bodies = {
            a.id: a.body
            for a in answerer.index.reader().articles(c.article_id for c in answer.citations).values()
        }
        for sentence, n in _CITED_SENTENCE.findall(answer.text):
            citation = by_n.get(int(n))
            body = bodies.get(citation.article_id, "") if citation else ""
            # A relative day's date ("on Wednesday [17 April 2024]") is shown, not quoted.
            grounded.append(bool(citation) and plain(sentence).strip() in body)
    correct = not answer.abstained and any(_contains(answer.text, gold) for gold in q.answers)
    return Outcome(
        question=q,
        ranking=ranking,
        answer=answer.text,
        abstained=answer.abstained,
        cited=tuple(c.article_id for c in answer.citations),
        grounded=tuple(grounded),
        correct=correct,
        timings_ms=answer.timings_ms,
        generated=answer.generated,
        fallback=answer.fallback,
    )


def ranking_of(hits: Sequence[Hit]) -> tuple[str, ...]:
    """Article ids in rank order; the copies of a collapsed story follow the copy that is shown."""
    ids = (a.id for h in hits for a in (h.article, *h.also_reported))
    return tuple(dict.fromkeys(ids))


def normalize_answer(text: str) -> str:
    """Lowercase, no accents, punctuation or articles, single spaces (SQuAD-style)."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(w for w in text.split() if w not in {"a", "an", "the"})


def _contains(answer: str, gold: str) -> bool:
    needle = normalize_answer(gold)
    return bool(needle) and f" {needle} " in f" {normalize_answer(answer)} "


def qrels_of(questions: Sequence[EvalQuestion]) -> Qrels:
    return Qrels({q.id: dict.fromkeys(q.gold_ids, 1) for q in questions if q.answerable})


def run_of(rankings: Mapping[str, Sequence[str]], name: str) -> Run:
    """A ranx Run from ranked document ids (scores are 1/rank)."""
    runs = {
        qid: {doc: 1.0 / rank for rank, doc in enumerate(docs, start=1)} or {_NO_DOC: 0.0}
        for qid, docs in rankings.items()
    }
    return Run(runs, name=name)


def retrieval_scores(
    questions: Sequence[EvalQuestion], rankings: Mapping[str, Sequence[str]], name: str
) -> dict[str, dict[str, float]]:
    """Per-question scores for every retrieval metric: {metric: {question id: score}}."""
    answerable = [q for q in questions if q.answerable]
    if not answerable:
        return {key: {} for key in RETRIEVAL_METRICS}
    qrels = qrels_of(answerable)
    run = run_of({q.id: rankings.get(q.id, ()) for q in answerable}, name)
    scores: dict[str, dict[str, float]] = {}
    for key, ranx_name in RETRIEVAL_METRICS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numba's "unsafe cast" notes inside ranx
            evaluate(qrels, run, ranx_name, return_mean=False, make_comparable=True)
        scores[key] = {qid: float(v) for qid, v in run.scores[ranx_name].items()}
    return scores


def mean_scores(scores: dict[str, dict[str, float]]) -> dict[str, float | None]:
    return {m: (round(float(np.mean(list(v.values()))), 4) if v else None) for m, v in scores.items()}


def significance(
    system: dict[str, dict[str, float]], baseline: dict[str, dict[str, float]]
) -> dict[str, dict[str, float | bool]]:
    """Fisher's paired randomization test (ranx), per metric: the p-value of system vs baseline."""
    result: dict[str, dict[str, float | bool]] = {}
    for metric, per_question in system.items():
        ids = sorted(per_question)
        if not ids:
            continue
        # Scores scaled to integers: the test compares permuted mean differences with the observed one,
        # and float rounding would otherwise make equal differences look smaller (p = 0 for ties).
        a = np.round(np.array([baseline[metric][i] for i in ids]) * 1e6)
        b = np.round(np.array([per_question[i] for i in ids]) * 1e6)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p_value, _ = fisher_randomization_test(a, b, PERMUTATIONS, SIGNIFICANCE_LEVEL, 42)
        result[metric] = {
            "difference": round(float(b.mean() - a.mean()) / 1e6, 4),
            "p_value": round(float(p_value), 4),
            "significant": bool(p_value <= SIGNIFICANCE_LEVEL),
        }
    return result


def answer_metrics(outcomes: Sequence[Outcome]) -> dict[str, float | None]:
    """Answer accuracy, citation precision and recall, groundedness, abstention P/R/F1."""
    answerable = [o for o in outcomes if o.question.answerable]
    unanswerable = [o for o in outcomes if not o.question.answerable]
    citations = [(o, c) for o in answerable if not o.abstained for c in o.cited]
    sentences = [g for o in outcomes for g in o.grounded]
    abstained = [o for o in outcomes if o.abstained]
    precision = _ratio(sum(not o.question.answerable for o in abstained), len(abstained))
    recall = _ratio(sum(o.abstained for o in unanswerable), len(unanswerable))
    f1 = None
    if precision is not None and recall is not None:
        f1 = round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0
    return {
        "answer_accuracy": _ratio(sum(o.correct for o in answerable), len(answerable)),
        "citation_precision": _ratio(sum(c in o.question.gold_ids for o, c in citations), len(citations)),
        "citation_recall": _ratio(
            sum(bool(set(o.cited) & set(o.question.gold_ids)) for o in answerable if not o.abstained),
            len(answerable),
        ),
        "groundedness": _ratio(sum(sentences), len(sentences)),
        "abstention_precision": precision,
        "abstention_recall": recall,
        "abstention_f1": f1,
    }


def latency(outcomes: Sequence[Outcome]) -> dict[str, dict[str, float]]:
    """p50 and p95 in milliseconds per stage."""
    stages: dict[str, list[float]] = {}
    for o in outcomes:
        for stage, ms in o.timings_ms.items():
            stages.setdefault(stage, []).append(ms)
    return {
        stage: {"p50": round(float(np.percentile(v, 50)), 2), "p95": round(float(np.percentile(v, 95)), 2)}
        for stage, v in stages.items()
    }


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
