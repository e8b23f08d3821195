"""Evaluation datasets: a folder with corpus.jsonl and questions.jsonl (the RealTime QA layout)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from index.errors import RagError


class DatasetError(RagError):
    """A dataset file that cannot be read as one."""


@dataclass(frozen=True)
class EvalQuestion:
    """One question with its gold evidence; ``answerable=False`` means the right move is to abstain."""

    id: str
    question: str
    asked_on: date | None
    answers: tuple[str, ...]
    choices: tuple[str, ...]
    gold_ids: tuple[str, ...]
    answerable: bool = True


@dataclass(frozen=True)
class Dataset:
    name: str
    corpus: Path
    questions: tuple[EvalQuestion, ...]


def load_dataset(folder: Path) -> Dataset:
    """The dataset in ``folder`` (corpus.jsonl + questions.jsonl)."""
    return load_files(folder / "corpus.jsonl", folder / "questions.jsonl", name=folder.name)


def load_files(corpus: Path, questions: Path, name: str | None = None) -> Dataset:
    """A dataset from an explicit corpus file and question file."""
    if not corpus.is_file():
        raise DatasetError(f"{corpus}: corpus file not found")
    return Dataset(name or corpus.parent.name, corpus, tuple(load_questions(questions)))


def load_questions(path: Path) -> list[EvalQuestion]:
    """Questions from a JSONL file; a malformed line stops with its file and line number."""
    if not path.is_file():
        raise DatasetError(f"{path}: question file not found")
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            raw = json.loads(line)
            answerable = bool(raw.get("answerable", True))
            question = EvalQuestion(
                id=str(raw["id"]),
                question=str(raw["question"]),
                asked_on=date.fromisoformat(raw["asked_on"]) if raw.get("asked_on") else None,
                answers=tuple(raw.get("answers") or ()),
                choices=tuple(raw.get("choices") or ()),
                gold_ids=tuple(raw.get("gold_ids") or ()),
                answerable=answerable,
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DatasetError(f"{where}: not a question record ({exc})") from exc
        if question.answerable and not question.gold_ids:
            raise DatasetError(f"{where}: an answerable question needs gold_ids")
        questions.append(question)
    if not questions:
        raise DatasetError(f"{path}: no questions")
    return questions
