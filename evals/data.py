"""Evaluation datasets: a folder with corpus.jsonl and questions.jsonl (the RealTime QA layout)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from index.errors import InputError


class DatasetError(InputError):
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
class DialogueTurn:
    """One user turn of a dialogue; later turns are a ``follow-up`` (leans on the earlier ones) or a
    ``new-subject`` (changes the subject: to be answered as if asked alone)."""

    question: str
    answers: tuple[str, ...]
    gold_ids: tuple[str, ...]
    kind: str = "first"


@dataclass(frozen=True)
class Dialogue:
    """A conversation over a dataset's corpus, asked on one day."""

    id: str
    asked_on: date | None
    turns: tuple[DialogueTurn, ...]


TURN_KINDS = ("follow-up", "new-subject")


@dataclass(frozen=True)
class Dataset:
    name: str
    corpus: Path
    questions: tuple[EvalQuestion, ...]
    dialogues: tuple[Dialogue, ...] = ()
    """From dialogues.jsonl beside the corpus, when there is one."""


def load_dataset(folder: Path) -> Dataset:
    """The dataset in ``folder`` (corpus.jsonl + questions.jsonl, and dialogues.jsonl when present)."""
    dataset = load_files(folder / "corpus.jsonl", folder / "questions.jsonl", name=folder.name)
    dialogues = folder / "dialogues.jsonl"
    if dialogues.is_file():
        return Dataset(dataset.name, dataset.corpus, dataset.questions, tuple(load_dialogues(dialogues)))
    return dataset


def load_dialogues(path: Path) -> list[Dialogue]:
    """Dialogues from a JSONL file, one a line: ``{"id", "asked_on", "turns": [{"question", "answers",
    "gold_ids", "kind"}, ...]}`` (the first turn has no kind; later ones are ``follow-up`` or
    ``new-subject``). A malformed line stops with its file and line number."""
    dialogues = []
    for where, line in _lines(path, "dialogue"):
        try:
            raw = json.loads(line)
            turns = tuple(
                DialogueTurn(
                    question=str(t["question"]),
                    answers=tuple(str(a) for a in t["answers"]),
                    gold_ids=tuple(str(g) for g in t["gold_ids"]),
                    kind=str(t.get("kind", "first")) if i else "first",
                )
                for i, t in enumerate(raw["turns"])
            )
            dialogue = Dialogue(
                id=str(raw["id"]),
                asked_on=date.fromisoformat(raw["asked_on"]) if raw.get("asked_on") else None,
                turns=turns,
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DatasetError(f"{where}: not a dialogue record ({exc})") from exc
        if len(turns) < 2 or any(t.kind not in TURN_KINDS for t in turns[1:]):
            raise DatasetError(f"{where}: a dialogue needs a first turn and later turns of kind {TURN_KINDS}")
        if not all(t.gold_ids and t.answers for t in turns):
            raise DatasetError(f"{where}: every turn needs answers and gold_ids")
        dialogues.append(dialogue)
    if not dialogues:
        raise DatasetError(f"{path}: no dialogues")
    return dialogues


def _lines(path: Path, kind: str) -> Iterator[tuple[str, str]]:
    """The non-blank lines of a JSONL file, each with its ``file:line`` for error messages."""
    if not path.is_file():
        raise DatasetError(f"{path}: {kind} file not found")
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            yield f"{path}:{number}", line


def load_files(corpus: Path, questions: Path, name: str | None = None) -> Dataset:
    """A dataset from an explicit corpus file and question file."""
    if not corpus.is_file():
        raise DatasetError(f"{corpus}: corpus file not found")
    return Dataset(name or corpus.parent.name, corpus, tuple(load_questions(questions)))


def load_questions(path: Path) -> list[EvalQuestion]:
    """Questions from a JSONL file; a malformed line stops with its file and line number."""
    questions = []
    for where, line in _lines(path, "question"):
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
