"""Run the production Answerer over a dataset and score retrieval and answers.

Retrieval metrics are document level (an article is relevant when it is gold), with binary relevance:
Hit@k, MRR@10, nDCG@10 and Recall@10 as ranx and trec_eval define them, and Fisher's paired randomization
test. They are written here in NumPy rather than taken from ranx, which computed them until issue 29: ranx
compiles its metrics with numba's on-disk cache (``cache=True``) inside site-packages, and numba writes
that cache without a lock (numba/numba#10128). Its functions are specialised on the length of the
document ids, so two ``rag eval`` processes at once (two corpora, ids of 20 and 25 characters) could leave
an index entry that names one signature beside machine code compiled for another; every later process
then loaded it. The gate scored the same code two ways (../shared/evidence/seed-eval-under-load: every
system's Hit@1 0.700, answers unchanged). ranx's randomization test also ran in numba's parallel threads,
each with its own random stream, so its p-values hung on the thread count. These few lines have no cache,
no compiler and no threads, and give the same figures (tests/test_evals.py checks them against ranx).
Answer metrics follow the definitions in evals/RESULTS.md; unanswerable questions count only toward
abstention metrics.
"""

from __future__ import annotations

import math
import re
import sys
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from evals.data import EvalQuestion
from rag import Answer, Answerer, Hit
from rag.relative import plain

RETRIEVAL_METRICS = ("hit@1", "hit@5", "hit@10", "mrr@10", "ndcg@10", "recall@10")
CUTOFF = 10
"""The depth of MRR, nDCG and Recall."""
ANSWER_METRICS = (
    "answer_accuracy",
    "citation_precision",
    "citation_recall",
    "groundedness",
    "abstention_precision",
    "abstention_recall",
    "abstention_f1",
    "answered",
    "short_answer_hit",
    "short_answer_exact",
    "short_answer_f1",
)
"""``short_answer_*`` are scored over the answerable questions whose gold answer stands word for word in a
gold article (the reader can only find what is written): the short answer holds a gold answer (hit), is
one (exact match, SQuAD-normalised), and its best token F1 against them; no short answer scores 0.
``answered``: the share of answerable questions not refused."""
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
    short_answer: str | None = None
    answer_in_gold: bool = False
    """A gold answer stands word for word in a gold article's title or body."""


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
    in_gold = False
    if q.answerable and q.answers:
        golds = answerer.index.reader().articles(q.gold_ids).values()
        in_gold = any(_contains(f"{a.title} {a.body}", gold) for a in golds for gold in q.answers)
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
        short_answer=None if answer.short_answer is None or answer.abstained else answer.short_answer.text,
        answer_in_gold=in_gold,
    )


def short_answer_scores(o: Outcome) -> tuple[float, float, float]:
    """Hit, exact match and token F1 of ``o``'s short answer against its gold answers (the best of them)."""
    if not o.short_answer:
        return 0.0, 0.0, 0.0
    golds = o.question.answers
    hit = any(_contains(o.short_answer, g) for g in golds)
    exact = any(normalize_answer(o.short_answer) == normalize_answer(g) for g in golds)
    return float(hit), float(exact), max(token_f1(o.short_answer, g) for g in golds)


def token_f1(found: str, gold: str) -> float:
    """SQuAD's token F1 of two answers (normalised)."""
    a, b = normalize_answer(found).split(), normalize_answer(gold).split()
    common = sum(min(a.count(w), b.count(w)) for w in set(a) & set(b))
    if not common:
        return 0.0
    precision, recall = common / len(a), common / len(b)
    return 2 * precision * recall / (precision + recall)


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


def retrieval_scores(
    questions: Sequence[EvalQuestion], rankings: Mapping[str, Sequence[str]]
) -> dict[str, dict[str, float]]:
    """Per-question scores for every retrieval metric over the answerable questions: {metric: {question
    id: score}}. A question with nothing retrieved scores 0."""
    scores: dict[str, dict[str, float]] = {key: {} for key in RETRIEVAL_METRICS}
    for q in questions:
        if not q.answerable:
            continue
        gold = set(q.gold_ids)
        ranked = list(dict.fromkeys(rankings.get(q.id, ())))[:CUTOFF]
        found = [rank for rank, doc in enumerate(ranked, start=1) if doc in gold]
        ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(gold), CUTOFF) + 1))
        for k in (1, 5, 10):
            scores[f"hit@{k}"][q.id] = float(bool(found) and found[0] <= k)
        scores["mrr@10"][q.id] = 1 / found[0] if found else 0.0
        scores["ndcg@10"][q.id] = sum(1 / math.log2(rank + 1) for rank in found) / ideal
        scores["recall@10"][q.id] = len(found) / len(gold)
    return scores


def mean_scores(scores: dict[str, dict[str, float]]) -> dict[str, float | None]:
    return {m: (round(float(np.mean(list(v.values()))), 4) if v else None) for m, v in scores.items()}


def significance(
    system: dict[str, dict[str, float]], baseline: dict[str, dict[str, float]]
) -> dict[str, dict[str, float | bool]]:
    """Fisher's paired randomization test, per metric: the p-value of system vs baseline over the questions
    both scored. Each of PERMUTATIONS draws swaps the two systems' scores of a random set of questions; the
    p-value is the share of draws whose difference of sums is at least the observed one (two-sided). The
    draws come from one seeded generator, so the same scores give the same p-value on every machine."""
    result: dict[str, dict[str, float | bool]] = {}
    for metric, per_question in system.items():
        ids = sorted(per_question)
        if not ids:
            continue
        # Scores scaled to integers: sums of integers are exact, so a draw that ties the observed
        # difference counts as at least as large (float sums in another order might not).
        a = np.round(np.array([baseline[metric][i] for i in ids]) * 1e6).astype(np.int64)
        b = np.round(np.array([per_question[i] for i in ids]) * 1e6).astype(np.int64)
        differences = b - a
        swaps = np.random.default_rng(42).choice(np.array([-1, 1]), size=(PERMUTATIONS, len(ids)))
        drawn = np.abs(swaps @ differences)
        p_value = float(np.mean(drawn >= abs(int(differences.sum()))))
        result[metric] = {
            "difference": round(float(differences.mean()) / 1e6, 4),
            "p_value": round(p_value, 4),
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
        "answered": _ratio(sum(not o.abstained for o in answerable), len(answerable)),
        **_short_answer_metrics([o for o in answerable if o.answer_in_gold]),
    }


def _short_answer_metrics(readable: Sequence[Outcome]) -> dict[str, float | None]:
    scored = np.array([short_answer_scores(o) for o in readable]).reshape(-1, 3)
    names = ("short_answer_hit", "short_answer_exact", "short_answer_f1")
    if not len(scored):
        return dict.fromkeys(names)
    return {name: round(float(v), 4) for name, v in zip(names, scored.mean(axis=0), strict=True)}


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
