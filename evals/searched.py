"""Searched news (issue 41): the RealTime QA dev questions asked over the news pages a web search returned
for them on the day, pooled into one corpus.

The pages are ../shared/data/news-qa (its SOURCE.md): read when the set is built, never copied into the
project, never read by the service. A question whose pages state a gold answer word for word is
answerable, its gold articles the pages that state it; a question whose pages never state it is one the
service should refuse (the near-topic case: same story, other days, no answer).

    python -m evals.searched --out build/searched/gate --sample 32
    python -m evals.searched --out build/searched/check --split check

writes ``OUT/corpus.jsonl`` and ``OUT/questions.jsonl`` for `rag eval OUT`. A sample is fixed (chosen by
hash of the question id, as `rag eval --sample` does) and holds as many answerable questions as not.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from evals.split import in_tune_half
from index.config import PROJECT_ROOT

NEWS_QA = PROJECT_ROOT.parent / "shared" / "data" / "news-qa"
_EDGES = " \t\n\"'“”‘’.,;:!?()[]"


@dataclass(frozen=True)
class Page:
    id: str
    url: str
    title: str
    published_at: str | None
    text: str


@dataclass(frozen=True)
class SearchedQuestion:
    id: str
    question: str
    asked_on: str
    answers: tuple[str, ...]
    choices: tuple[str, ...]
    pages: tuple[str, ...]
    """The search's results, in its order (ids of pages that are in pages.jsonl)."""


def load(folder: Path = NEWS_QA) -> tuple[list[SearchedQuestion], dict[str, Page]]:
    """The questions and their pages."""
    pages = {}
    with gzip.open(folder / "pages.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            raw = json.loads(line)
            page = Page(raw["id"], raw["url"], raw["title"] or "", raw["published_at"], raw["text"])
            pages[page.id] = page
    questions = []
    with gzip.open(folder / "questions.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            raw = json.loads(line)
            questions.append(
                SearchedQuestion(
                    raw["id"],
                    raw["question"],
                    raw["asked_on"],
                    tuple(raw["answers"]),
                    tuple(raw["choices"]),
                    tuple(p for p in raw["results"] if p in pages),
                )
            )
    return questions, pages


def find_answer(text: str, answers: Iterable[str]) -> tuple[int, int] | None:
    """Where a gold answer first stands in ``text`` as a whole phrase (case and the answer's quotes and
    edge punctuation ignored); None when no answer does."""
    for answer in answers:
        core = answer.strip(_EDGES)
        if not core:
            continue
        match = re.search(rf"(?<!\w){re.escape(core)}(?!\w)", text, re.IGNORECASE)
        if match:
            return match.start(), match.end()
    return None


def stating(question: SearchedQuestion, pages: dict[str, Page]) -> list[str]:
    """The question's pages whose text states a gold answer."""
    return [p for p in question.pages if find_answer(pages[p].text, question.answers)]


def _rank(question_id: str) -> str:
    return hashlib.sha256(question_id.encode()).hexdigest()


def select(
    questions: Sequence[SearchedQuestion], pages: dict[str, Page], split: str | None, sample: int | None
) -> list[SearchedQuestion]:
    """The questions of ``split`` (tune, check or both) with at least one page; with ``sample``, the first
    ``sample // 2`` answerable and as many unanswerable ones by hash of the id."""
    chosen = [q for q in questions if q.pages and (split is None or in_tune_half(q.id) == (split == "tune"))]
    if not sample:
        return chosen
    answerable = sorted((q for q in chosen if stating(q, pages)), key=lambda q: _rank(q.id))
    refused = sorted((q for q in chosen if not stating(q, pages)), key=lambda q: _rank(q.id))
    half = sample // 2
    return sorted([*answerable[:half], *refused[: sample - half]], key=lambda q: q.id)


def write(questions: Sequence[SearchedQuestion], pages: dict[str, Page], out: Path) -> dict[str, int]:
    """The dataset folder for ``questions``: their pages pooled as one corpus, each question with its
    stating pages as gold (answerable) or none (to be refused). Returns counts."""
    out.mkdir(parents=True, exist_ok=True)
    used = sorted({p for q in questions for p in q.pages})
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        for page_id in used:
            page = pages[page_id]
            row = {
                "id": page.id,
                "title": page.title,
                "url": page.url,
                "source": urlsplit(page.url).hostname or "",
                "published_at": page.published_at,
                "body": page.text,
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    answerable = 0
    with (out / "questions.jsonl").open("w", encoding="utf-8") as handle:
        for q in questions:
            gold = stating(q, pages)
            answerable += bool(gold)
            record: dict[str, object] = {
                "id": q.id,
                "question": q.question,
                "asked_on": q.asked_on,
                "answers": list(q.answers),
                "choices": list(q.choices),
                "gold_ids": gold,
                "answerable": bool(gold),
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return {"questions": len(questions), "answerable": answerable, "pages": len(used)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.searched", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--news-qa", type=Path, default=NEWS_QA, help="the searched pages (default: %(default)s)"
    )
    parser.add_argument("--out", type=Path, required=True, help="the dataset folder to write")
    parser.add_argument("--split", choices=["tune", "check"], help="only one half (evals/split.py)")
    parser.add_argument("--sample", type=int, help="a fixed sample of N questions, half of them answerable")
    args = parser.parse_args(argv)
    if not (args.news_qa / "questions.jsonl.gz").is_file():
        print(f"python -m evals.searched: no searched pages in {args.news_qa} (--news-qa)", file=sys.stderr)
        return 2
    questions, pages = load(args.news_qa)
    counts = write(select(questions, pages, args.split, args.sample), pages, args.out)
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
