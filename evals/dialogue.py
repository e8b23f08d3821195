"""Dialogues, scored turn by turn: each later turn is asked with the conversation before it (the
system's own answers as the assistant turns, with the articles they cited, as the widget sends them)
and again alone, as the service answered every question before it took a history.

A turn is *answered from the right story* when a gold article is in the first three of the ranking and
an expected answer is in the answer's text (``story@3``). Follow-ups and changes of subject are scored
apart: a follow-up should gain from its history, a change of subject must not lose."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from evals.data import TURN_KINDS, Dialogue, EvalQuestion
from evals.harness import Outcome, outcome_of, significance
from rag import Answerer
from rag.follow import Turn

STORY_DEPTH = 3
DIALOGUE_METRICS = ("story@3", "hit@1", "hit@3", "answer_accuracy")


@dataclass(frozen=True)
class TurnOutcome:
    """One later turn of a dialogue, asked with its history and alone."""

    dialogue: str
    turn: int
    kind: str
    standalone: str
    """What was searched with the history."""
    leaned: bool
    """Resolved as leaning on the conversation."""
    with_history: Outcome
    alone: Outcome
    resolve_ms: float
    """Time taken to validate and resolve the history (no model)."""


def run_dialogues(
    answerer: Answerer, dialogues: Sequence[Dialogue], k: int, progress: bool | None = None
) -> list[TurnOutcome]:
    """Ask every dialogue on its ``asked_on`` day (see the module docstring)."""
    show = sys.stderr.isatty() if progress is None else progress
    limit = answerer.settings.max_question_chars
    outcomes = []
    for d in tqdm(dialogues, desc="dialogues", unit="dialogue", disable=not show, file=sys.stderr):
        history: list[Turn] = []
        for n, turn in enumerate(d.turns, start=1):
            q = EvalQuestion(f"{d.id}#{n}", turn.question, d.asked_on, turn.answers, (), turn.gold_ids)
            started = time.perf_counter()
            question = answerer.question(turn.question, as_of=d.asked_on, top_k=k, history=history)
            resolve_ms = (time.perf_counter() - started) * 1000
            answer = answerer.ask(question)
            if n > 1:
                alone = answerer.ask(answerer.question(turn.question, as_of=d.asked_on, top_k=k))
                outcomes.append(
                    TurnOutcome(
                        d.id,
                        n,
                        turn.kind,
                        answer.standalone_question,
                        question.follow is not None,
                        outcome_of(answerer, q, answer),
                        outcome_of(answerer, q, alone),
                        round(resolve_ms, 3),
                    )
                )
            cited = tuple(dict.fromkeys(c.article_id for c in answer.citations))
            history += [Turn("user", turn.question), Turn("assistant", answer.text[:limit], cited)]
    return outcomes


def turn_scores(o: Outcome) -> dict[str, float]:
    """One turn's scores on DIALOGUE_METRICS."""
    gold = set(o.question.gold_ids)
    top = set(o.ranking[:STORY_DEPTH])
    return {
        "story@3": float(bool(top & gold) and o.correct),
        "hit@1": float(bool(set(o.ranking[:1]) & gold)),
        "hit@3": float(bool(top & gold)),
        "answer_accuracy": float(o.correct),
    }


def dialogue_metrics(outcomes: Sequence[TurnOutcome]) -> dict[str, object]:
    """Per kind of turn, with history and alone: the means of ``DIALOGUE_METRICS``, the share of turns
    resolved as leaning, the paired randomization test of history against alone, and the time to
    resolve a history."""
    result: dict[str, object] = {}
    for kind in TURN_KINDS:
        chosen = [o for o in outcomes if o.kind == kind]
        if not chosen:
            continue
        per = {
            mode: {
                metric: {
                    f"{o.dialogue}#{o.turn}": turn_scores(o.with_history if mode == "history" else o.alone)[
                        metric
                    ]
                    for o in chosen
                }
                for metric in DIALOGUE_METRICS
            }
            for mode in ("history", "alone")
        }
        result[kind] = {
            "turns": len(chosen),
            "leaned": round(sum(o.leaned for o in chosen) / len(chosen), 4),
            "history": {m: round(float(np.mean(list(v.values()))), 4) for m, v in per["history"].items()},
            "alone": {m: round(float(np.mean(list(v.values()))), 4) for m, v in per["alone"].items()},
            "history_vs_alone": significance(per["history"], per["alone"]),
        }
    times = [o.resolve_ms for o in outcomes]
    if times:
        result["resolve_ms"] = {
            "p50": round(float(np.percentile(times, 50)), 3),
            "p95": round(float(np.percentile(times, 95)), 3),
        }
    return result


GATE_VALUES = (
    "followup_story@3",
    "followup_hit@1",
    "new_subject_story@3",
    "new_subject_hit@1",
)
"""The dialogue figures `rag eval --min` can gate on (with history; each has an ``_alone`` twin)."""


def gate_values(metrics: dict[str, object]) -> dict[str, float]:
    """``GATE_VALUES`` and their ``_alone`` twins, from ``dialogue_metrics``."""
    values: dict[str, float] = {}
    for kind, key in (("follow-up", "followup"), ("new-subject", "new_subject")):
        part = metrics.get(kind)
        if isinstance(part, dict):
            for metric in ("story@3", "hit@1"):
                values[f"{key}_{metric}"] = part["history"][metric]
                values[f"{key}_{metric}_alone"] = part["alone"][metric]
    return values
