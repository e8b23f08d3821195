"""One evaluation: dataset in, metrics (and per-question outcomes) out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evals.baselines import bm25_rankings, dense_rankings
from evals.data import Dataset
from evals.dialogue import TurnOutcome, dialogue_metrics, gate_values, run_dialogues
from evals.harness import (
    Outcome,
    answer_metrics,
    latency,
    mean_scores,
    retrieval_scores,
    run_system,
    significance,
)
from rag import Answerer


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, Any]
    outcomes: list[Outcome]
    rankings: dict[str, dict[str, list[str]]]
    """Baseline name to {question id: ranked article ids}."""
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    """The system's retrieval metrics per question: {metric: {question id: score}}."""
    turns: list[TurnOutcome] = field(default_factory=list)
    """The dialogues' later turns, when the dataset has dialogues."""


def evaluate_dataset(
    answerer: Answerer,
    dataset: Dataset,
    k: int = 10,
    limit: int | None = None,
    baselines: bool = False,
    progress: bool | None = None,
) -> Evaluation:
    """Score the production Answerer on ``dataset`` (first ``limit`` questions), with baselines if asked."""
    questions: Sequence[Any] = dataset.questions[:limit] if limit else dataset.questions
    outcomes = run_system(answerer, questions, k, progress)
    system_scores = retrieval_scores(questions, {o.question.id: o.ranking for o in outcomes})
    metrics: dict[str, Any] = {
        "dataset": dataset.name,
        "questions": len(questions),
        "answerable": sum(q.answerable for q in questions),
        "k": k,
        **mean_scores(system_scores),
        **answer_metrics(outcomes),
        "latency_ms": latency(outcomes),
    }
    answered = [o for o in outcomes if not o.abstained]
    if any(o.generated or o.fallback for o in outcomes):  # a language model was configured
        metrics["answers_generated"] = sum(o.generated for o in answered) / max(len(answered), 1)
        metrics["fallbacks"] = dict(Counter(o.fallback for o in outcomes if o.fallback))
    turns: list[TurnOutcome] = []
    if dataset.dialogues:
        turns = run_dialogues(answerer, dataset.dialogues, k, progress)
        metrics["dialogues"] = {"dialogues": len(dataset.dialogues), **dialogue_metrics(turns)}
        metrics.update(gate_values(metrics["dialogues"]))
    rankings: dict[str, dict[str, list[str]]] = {}
    if baselines:
        answerable = [q for q in questions if q.answerable]
        rankings = {
            "bm25": bm25_rankings(answerer, answerable, k),
            "dense": dense_rankings(answerer, answerable, k, progress),
        }
        metrics["baselines"] = {}
        for name, ranking in rankings.items():
            scores = retrieval_scores(questions, ranking)
            metrics["baselines"][name] = {
                **mean_scores(scores),
                "vs_system": significance(system_scores, scores),
            }
    return Evaluation(metrics, outcomes, rankings, system_scores, turns)


def hit_curve(questions: Sequence[Any], ranking: Mapping[str, Sequence[str]], depth: int = 10) -> list[float]:
    """Hit@k for k = 1..depth over the answerable questions."""
    answerable = [q for q in questions if q.answerable]
    if not answerable:
        return []
    curve = []
    for k in range(1, depth + 1):
        hits = sum(bool(set(ranking.get(q.id, ())[:k]) & set(q.gold_ids)) for q in answerable)
        curve.append(hits / len(answerable))
    return curve
