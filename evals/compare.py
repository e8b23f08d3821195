"""Runs saved and compared: `rag eval --save-run FILE` and `rag eval --compare FILE`.

A run holds what the system did with every question (its ranking, answer, citations, abstention) and
each question's score on every metric that has one, with the hashes of the dataset and of the index and
the code's version. A comparison scores the same questions again and tests each metric's change with
Fisher's paired randomization test (evals/harness.py's ``significance``, as against the baselines): a
metric fails only when it dropped by more than its allowed delta *and* the drop is significant
(p < 0.05), so a question or two moving by noise (a tie broken another way on another CPU) does not fail
a pull request, and a real regression does even when it stays above the absolute floors. The report
lists the questions that moved, better and worse, with both answers, as markdown for a CI job summary.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.data import Dataset, DatasetError
from evals.dialogue import turn_scores
from evals.evaluate import Evaluation
from evals.harness import (
    ANSWER_METRICS,
    RETRIEVAL_METRICS,
    SIGNIFICANCE_LEVEL,
    Outcome,
    short_answer_scores,
    significance,
)
from index.config import PROJECT_ROOT

FORMAT = "newsrag-eval-run/1"
PER_QUESTION = (
    *RETRIEVAL_METRICS,
    "answer_accuracy",
    "citation_recall",
    "abstention_recall",
    "short_answer_hit",
    "followup_story@3",
    "followup_hit@1",
    "new_subject_story@3",
    "new_subject_hit@1",
)
"""The metrics a run keeps per question (or per dialogue turn), and so the ones a comparison tests."""
MOVED = (
    "hit@1",
    "answer_accuracy",
    "citation_recall",
    "abstention_recall",
    "followup_story@3",
    "followup_hit@1",
    "new_subject_story@3",
    "new_subject_hit@1",
)
"""The metrics by which a question counts as moved (the rest follow Hit@1)."""
MOVED_SHOWN = 25
"""Questions listed per direction in the markdown summary (all of them are in the JSON run)."""
_TURN_METRICS = {"follow-up": "followup", "new-subject": "new_subject"}


class CompareError(DatasetError):
    """Two runs that cannot be compared (another dataset, another k), or a run file that is not one."""


def dataset_hash(dataset: Dataset) -> str:
    """The corpus bytes and the questions and dialogues scored (after --split, --sample): two runs
    compare only when these are equal."""
    digest = hashlib.sha256(dataset.corpus.read_bytes())
    for q in dataset.questions:
        digest.update(
            json.dumps(
                [q.id, q.question, str(q.asked_on), q.answers, q.gold_ids, q.answerable], ensure_ascii=False
            ).encode()
        )
    for d in dataset.dialogues:
        turns = [[t.question, t.answers, t.gold_ids, t.kind] for t in d.turns]
        digest.update(json.dumps([d.id, str(d.asked_on), turns], ensure_ascii=False).encode())
    return digest.hexdigest()[:20]


def code_version() -> str:
    """The git commit of the code (``+dirty`` with uncommitted changes outside evals/baselines/), or
    ``unknown`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        status = subprocess.run(
            # The baselines being rewritten are not a change of the code.
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!evals/baselines"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if commit.returncode != 0:
        return "unknown"
    return commit.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def _outcome(o: Outcome, k: int) -> dict[str, Any]:
    return {
        "question": o.question.question,
        "answerable": o.question.answerable,
        "ranking": list(o.ranking[:k]),
        "answer": o.answer,
        "abstained": o.abstained,
        "cited": list(o.cited),
        "correct": o.correct,
        "short_answer": o.short_answer,
    }


def question_scores(evaluation: Evaluation) -> dict[str, dict[str, float]]:
    """Every ``PER_QUESTION`` metric, per question or dialogue turn id."""
    scores: dict[str, dict[str, float]] = {m: dict(v) for m, v in evaluation.scores.items()}
    answerable = [o for o in evaluation.outcomes if o.question.answerable]
    scores["answer_accuracy"] = {o.question.id: float(o.correct) for o in answerable}
    scores["citation_recall"] = {
        o.question.id: float(not o.abstained and bool(set(o.cited) & set(o.question.gold_ids)))
        for o in answerable
    }
    scores["short_answer_hit"] = {
        o.question.id: short_answer_scores(o)[0] for o in answerable if o.answer_in_gold
    }
    scores["abstention_recall"] = {
        o.question.id: float(o.abstained) for o in evaluation.outcomes if not o.question.answerable
    }
    for kind, key in _TURN_METRICS.items():
        turns = [t for t in evaluation.turns if t.kind == kind]
        for metric in ("story@3", "hit@1"):
            scores[f"{key}_{metric}"] = {
                f"{t.dialogue}#{t.turn}": turn_scores(t.with_history)[metric] for t in turns
            }
    return {m: v for m, v in scores.items() if v}


def make_run(
    evaluation: Evaluation, dataset: Dataset, index_hash: str, about: Mapping[str, Any]
) -> dict[str, Any]:
    """The run of ``evaluation`` as a JSON-ready dict (``about``: how it was run: k, stage, ...)."""
    k = int(evaluation.metrics["k"])
    return {
        "format": FORMAT,
        "dataset": evaluation.metrics["dataset"],
        "dataset_hash": dataset_hash(dataset),
        "index_hash": index_hash,
        "code": code_version(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "run": dict(about),
        "metrics": {key: v for key, v in evaluation.metrics.items() if key != "gate"},
        "scores": question_scores(evaluation),
        "questions": {o.question.id: _outcome(o, k) for o in evaluation.outcomes},
        "turns": {
            f"{t.dialogue}#{t.turn}": {**_outcome(t.with_history, k), "kind": t.kind}
            for t in evaluation.turns
        },
    }


def save_run(path: Path, run: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(run, indent=1, ensure_ascii=False) + "\n")
    temporary.replace(path)


def load_run(path: Path) -> dict[str, Any]:
    """A run saved by ``save_run``, checked part by part before anything uses it: CompareError (exit 2,
    with what is wrong and where) when the file is missing, not UTF-8 JSON, or not a run: a part of the
    wrong type, no scores, a score that is not a number from 0 to 1 (NaN included), an unknown metric."""
    try:
        run = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_no_constant)
    except OSError as exc:
        raise CompareError(f"{path}: cannot read the saved run ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise CompareError(f"{path}: not a saved run (not UTF-8 at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise CompareError(f"{path}: not a saved run (broken JSON at line {exc.lineno})") from None
    except ValueError as exc:  # NaN or Infinity, refused by _no_constant
        raise CompareError(f"{path}: not a saved run ({exc})") from None
    if not isinstance(run, dict) or run.get("format") != FORMAT:
        raise CompareError(f"{path}: not a saved run of `rag eval --save-run` ({FORMAT})")
    parts = {
        "dataset": str,
        "dataset_hash": str,
        "metrics": dict,
        "scores": dict,
        "questions": dict,
        "turns": dict,
    }
    broken = [key for key, kind in parts.items() if not isinstance(run.get(key), kind)]
    if broken:
        raise CompareError(
            f"{path}: a saved run without its {', '.join(broken)}; write it again with --save-run"
        )
    problem = _run_problem(run)
    if problem:
        raise CompareError(f"{path}: not a usable saved run: {problem}; write it again with --save-run")
    return run


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} where a number belongs")


def _is_score(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def _run_problem(run: Mapping[str, Any]) -> str | None:
    """What is wrong with a run's contents, or None."""
    k = run["metrics"].get("k")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        return f"metrics.k is {k!r}, not a depth"
    for metric in (*RETRIEVAL_METRICS, *ANSWER_METRICS):
        value = run["metrics"].get(metric)
        if value is not None and not _is_score(value):
            return f"metrics.{metric} is {value!r}, not a number from 0 to 1"
    if not run["scores"]:
        return "it holds no scores"
    for metric, per_question in run["scores"].items():
        if metric not in PER_QUESTION:
            return f"scores.{metric[:60]} is no metric of this version ({', '.join(PER_QUESTION)})"
        if not isinstance(per_question, dict) or not per_question:
            return f"scores.{metric} is not an object of question ids and scores"
        for qid, value in per_question.items():
            if not _is_score(value):
                return f"scores.{metric}.{qid[:60]} is {value!r:.60}, not a number from 0 to 1"
    for part in ("questions", "turns"):
        for qid, outcome in run[part].items():
            if not isinstance(outcome, dict) or not all(
                isinstance(outcome.get(key, ""), str) for key in ("question", "answer")
            ):
                return f"{part}.{qid[:60]} is not a question's outcome"
    return None


def comparable(saved: Mapping[str, Any], digest: str, k: object) -> None:
    """Refuse (CompareError) a saved run of other questions (``digest``: ``dataset_hash``) or depth."""
    if saved["dataset_hash"] != digest:
        raise CompareError(
            f"the saved run is of another dataset ({saved['dataset']}) than this one: corpus, questions "
            "and dialogues must be the same (and the same --split, --sample and --limit); refresh it with "
            "--save-run"
        )
    if saved["metrics"].get("k") != k:
        raise CompareError(f"the saved run ranked {saved['metrics'].get('k')} documents, this one {k}")


@dataclass(frozen=True)
class Verdict:
    """One metric of a comparison."""

    metric: str
    before: float | None
    after: float | None
    difference: float
    p_value: float
    allowed: float
    questions: int

    @property
    def failed(self) -> bool:
        """Dropped by more than allowed, and significantly."""
        return self.difference < -self.allowed - 1e-12 and self.p_value < SIGNIFICANCE_LEVEL


@dataclass(frozen=True)
class Moved:
    """A question (or dialogue turn) whose scores changed."""

    id: str
    question: str
    changes: dict[str, tuple[float, float]]
    """Metric -> (before, after)."""
    before: str
    after: str

    @property
    def change(self) -> float:
        return sum(after - before for before, after in self.changes.values())

    @property
    def better(self) -> bool:
        return self.change > 0


@dataclass(frozen=True)
class Comparison:
    dataset: str
    saved_code: str
    code: str
    verdicts: list[Verdict]
    moved: list[Moved]
    index_changed: bool

    @property
    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.failed]


def compare(
    saved: Mapping[str, Any], current: Mapping[str, Any], max_drop: Mapping[str, float]
) -> Comparison:
    """``current`` against ``saved``, metric by metric (see the module docstring); refuses runs of
    different datasets or depths."""
    comparable(saved, current["dataset_hash"], current["metrics"].get("k"))
    verdicts = []
    for metric in PER_QUESTION:
        before, after = saved["scores"].get(metric, {}), current["scores"].get(metric, {})
        ids = sorted(set(before) & set(after))
        if not ids:
            continue
        test = significance({metric: {i: after[i] for i in ids}}, {metric: {i: before[i] for i in ids}})[
            metric
        ]
        verdicts.append(
            Verdict(
                metric,
                _metric(saved, metric),
                _metric(current, metric),
                float(test["difference"]),
                float(test["p_value"]),
                max_drop.get(metric, 0.0),
                len(ids),
            )
        )
    return Comparison(
        current["dataset"],
        saved.get("code", "unknown"),
        current.get("code", "unknown"),
        verdicts,
        _moved(saved, current),
        saved.get("index_hash") != current.get("index_hash"),
    )


def _metric(run: Mapping[str, Any], metric: str) -> float | None:
    value = run["metrics"].get(metric)
    return float(value) if isinstance(value, int | float) else None


def _moved(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[Moved]:
    by_id: dict[str, dict[str, tuple[float, float]]] = {}
    for metric in MOVED:
        before, after = saved["scores"].get(metric, {}), current["scores"].get(metric, {})
        for i in set(before) & set(after):
            if before[i] != after[i]:
                by_id.setdefault(i, {})[metric] = (before[i], after[i])
    moved = []
    for i, changes in sorted(by_id.items()):
        then = saved["questions"].get(i) or saved["turns"].get(i, {})
        now = current["questions"].get(i) or current["turns"].get(i, {})
        moved.append(
            Moved(i, now.get("question", ""), changes, then.get("answer", ""), now.get("answer", ""))
        )
    return moved


def parse_max_drops(values: Sequence[str]) -> dict[str, float]:
    """``METRIC=DELTA`` options (a metric of ``PER_QUESTION``, a delta from 0 to 1)."""
    drops = {}
    for value in values:
        metric, sep, number = value.partition("=")
        if not sep or metric not in PER_QUESTION:
            raise SystemExit(
                f"rag eval: --max-drop takes METRIC=DELTA with METRIC in {', '.join(PER_QUESTION)}"
            )
        try:
            delta = float(number)
        except ValueError:
            raise SystemExit(f"rag eval: --max-drop {value}: {number!r} is not a number") from None
        if not 0 <= delta <= 1:
            raise SystemExit(f"rag eval: --max-drop {value}: the delta must be between 0 and 1")
        drops[metric] = delta
    return drops


def _cut(text: str, limit: int = 160) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def summary(comparison: Comparison) -> str:
    """The comparison as markdown (a CI job summary)."""
    verdict = "**fails**" if comparison.failed else "passes"
    lines = [
        f"### rag eval {comparison.dataset}: {comparison.code} against {comparison.saved_code} ({verdict})",
        "",
        "| metric | saved | now | Δ | p | allowed drop | |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in comparison.verdicts:
        mark = "❌ regression" if v.failed else ("▼" if v.difference < 0 else "▲" if v.difference > 0 else "")
        lines.append(
            f"| {v.metric} | {_number(v.before)} | {_number(v.after)} | {v.difference:+.4f} | "
            f"{v.p_value:.3f} | {v.allowed:.3f} | {mark} |"
        )
    lines += [
        "",
        "Δ and p: the mean per-question change and Fisher's paired randomization test over the same "
        "questions; a metric fails when it drops by more than its allowed delta with p < 0.05.",
    ]
    if comparison.index_changed:
        lines += ["", "The index was built by other indexing code or settings than the saved run's."]
    # The largest moves first.
    worse = sorted((m for m in comparison.moved if not m.better), key=lambda m: m.change)
    better = sorted((m for m in comparison.moved if m.better), key=lambda m: -m.change)
    lines += ["", f"{len(comparison.moved)} questions moved: {len(better)} better, {len(worse)} worse."]
    for title, chosen in (("Worse", worse), ("Better", better)):
        if not chosen:
            continue
        lines += [
            "",
            f"#### {title}",
            "",
            "| id | question | moved | saved answer | answer now |",
            "|---|---|---|---|---|",
        ]
        for m in chosen[:MOVED_SHOWN]:
            changes = ", ".join(f"{k} {a:g}→{b:g}" for k, (a, b) in m.changes.items())
            lines.append(
                f"| {m.id} | {_cut(m.question, 100)} | {changes} | {_cut(m.before)} | {_cut(m.after)} |"
            )
        if len(chosen) > MOVED_SHOWN:
            lines.append(f"| … | {len(chosen) - MOVED_SHOWN} more in the run file | | | |")
    return "\n".join(lines) + "\n"


def write_summary(text: str, path: Path | None) -> list[Path]:
    """Write the summary to ``path`` and append it to ``$GITHUB_STEP_SUMMARY`` when that is set."""
    written = []
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    step = os.environ.get("GITHUB_STEP_SUMMARY")
    if step:
        with Path(step).open("a") as handle:
            handle.write(text + "\n")
        written.append(Path(step))
    return written
