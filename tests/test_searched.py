"""Searched news (issue 41): the eval set built from the pages a search returned for each question
(evals/searched.py), the reader's training windows from them (evals/fit/reader_data.py), both on a small
folder of made-up pages laid out as ../shared/data/news-qa is; and the searched set's answer metric."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
from itertools import islice
from pathlib import Path

import pytest

from evals.data import load_dataset
from evals.fit.reader_data import PACKED_CHARS, SEARCHED_POSITIVES, searched_examples
from evals.searched import find_answer
from evals.split import in_tune_half
from tests.conftest import ROOT

FILLER = (
    "The council met on Monday to discuss the harbour. Residents asked about parking near the quay. "
    "A spokesperson said more details would follow. "
)


def _ids(tune: bool, how_many: int) -> list[str]:
    """The first ``how_many`` made-up question ids of one half."""
    found = (f"20240{n:03d}_0" for n in range(1000))
    return list(islice((i for i in found if in_tune_half(i) == tune), how_many))


@pytest.fixture(scope="module")
def news_qa(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight questions, four of each half; in each half two have a page that states the answer (and one
    on the topic that does not), two have only pages on the topic."""
    folder = tmp_path_factory.mktemp("news-qa")
    questions, pages = [], []
    for tune in (True, False):
        for n, qid in enumerate(_ids(tune, 4)):
            ferry = f"Ferry{qid[5:8]}"
            answer = f"Captain {ferry}son"
            results = []
            if n < 2:
                stating = (
                    f"The ferry {ferry} was new and its steering was checked. {FILLER * 4}"
                    f"The new ferry {ferry} will be steered by {answer}, the port said. {FILLER}"
                )
                pages.append({"id": f"p-{qid}-s", "text": stating})
                results.append(f"p-{qid}-s")
            for m in range(2):
                topic = f"{FILLER}The ferry {ferry} was late again on day {m}, and its steering was checked."
                pages.append({"id": f"p-{qid}-t{m}", "text": topic})
                results.append(f"p-{qid}-t{m}")
            questions.append(
                {
                    "id": qid,
                    "question": f"Who will steer the new ferry {ferry}?",
                    "asked_on": "2024-03-01",
                    "choices": [f"“{answer}”", "Someone else"],
                    "answers": [f"“{answer}”"],
                    "results": [*results, "p-not-downloaded"],
                }
            )
    with gzip.open(folder / "questions.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(q) + "\n" for q in questions)
    with gzip.open(folder / "pages.jsonl.gz", "wt", encoding="utf-8") as handle:
        for page in pages:
            extra = {"url": f"https://news.example/{page['id']}", "title": "Ferry news"}
            handle.write(json.dumps({**page, **extra, "published_at": "2024-02-28"}) + "\n")
    return folder


def _build(news_qa: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "evals.searched", "--news-qa", str(news_qa), "--out", str(out), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_the_searched_set_pools_the_pages_and_marks_what_they_state(news_qa: Path, tmp_path: Path) -> None:
    built = _build(news_qa, tmp_path / "tune", "--split", "tune")
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout) == {"questions": 4, "answerable": 2, "pages": 10}
    dataset = load_dataset(tmp_path / "tune")
    assert all(in_tune_half(q.id) for q in dataset.questions)
    corpus = [json.loads(line) for line in dataset.corpus.read_text().splitlines()]
    assert {r["source"] for r in corpus} == {"news.example"}
    bodies = {r["id"]: r["body"] for r in corpus}
    for q in dataset.questions:
        assert q.answerable == bool(q.gold_ids)
        assert q.gold_ids == tuple(p for p in bodies if p.startswith(f"p-{q.id}-") and p.endswith("-s"))
        for page_id, body in bodies.items():  # a gold page states the answer; the others do not
            if page_id.startswith(f"p-{q.id}-"):
                assert (find_answer(body, q.answers) is not None) == (page_id in q.gold_ids)

    sampled = _build(news_qa, tmp_path / "sample", "--sample", "4")
    assert sampled.returncode == 0, sampled.stderr
    questions = load_dataset(tmp_path / "sample").questions
    assert sorted(q.answerable for q in questions) == [False, False, True, True]
    assert _build(news_qa, tmp_path / "again", "--sample", "4").stdout == sampled.stdout

    missing = _build(tmp_path / "nowhere", tmp_path / "x")
    assert missing.returncode == 2
    assert "no searched pages" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_an_answer_is_found_as_a_whole_phrase_without_its_quotes() -> None:
    text = "They chose Squid Game; not Squid Games."
    assert find_answer(text, ["“Squid Game”"]) == (11, 21)
    assert find_answer("Squid Gamers", ["Squid Game"]) is None
    assert find_answer(text, ["  ", "“”"]) is None


def test_training_windows_come_from_the_tune_half_s_pages(news_qa: Path) -> None:
    examples = list(searched_examples(news_qa, random.Random(0)))
    assert {e.group for e in examples} == set(_ids(True, 4))
    answers = {e.group: f"Captain Ferry{e.group[5:8]}son" for e in examples}
    positives = [e for e in examples if e.answerable]
    assert len(positives) == 2  # the two questions with a stating page, one window each
    assert all(sum(e.group == g for e in positives) <= SEARCHED_POSITIVES for g in answers)
    for example in examples:
        answer = answers[example.group]
        if example.answerable:
            assert example.context[example.start : example.end] == answer
        else:
            assert answer.lower() not in example.context.lower()
            assert "ferry" in example.context.lower()  # the near-topic sentence, not any sentence
    negatives = {e.id.split("/")[1] for e in examples if not e.answerable}
    assert any(p.endswith("-s") for p in negatives)  # a stating page, away from the answer
    assert any("-t" in p for p in negatives)  # a page on the topic that never states it


def test_packed_contexts_hold_one_sentence_a_page_as_the_service_reads_them(news_qa: Path) -> None:
    examples = [e for e in searched_examples(news_qa, random.Random(0), packed=True) if "/packed" in e.id]
    assert {e.group for e in examples} == set(_ids(True, 4))  # one packed context a question
    for example in examples:
        answer = f"Captain Ferry{example.group[5:8]}son"
        assert len(example.context) <= PACKED_CHARS
        assert example.context.count(f"Ferry{example.group[5:8]}") >= 2  # a sentence of each page
        if example.answerable:
            assert example.id.endswith("/packed")
            assert example.context[example.start : example.end] == answer
        else:
            assert example.id.endswith("/packed-none")
            assert answer.lower() not in example.context.lower()
    assert sorted(e.answerable for e in examples) == [False, False, True, True]
