"""The reader's training examples (evals/fit/reader_data.py): windows of whole sentences that hold the
answer where it is, spans that point at it, no-answer windows that do not hold it, and only the tune half
of the news questions."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from evals.data import load_dataset
from evals.fit.reader_data import MAX_CHARS, news_examples, qa_examples, split_for_validation, window
from evals.split import in_tune_half
from tests.conftest import ROOT

TEXT = " ".join(
    f"Sentence number {i} tells of the harbour, the ferry and the bridge that opened in year {1990 + i}."
    for i in range(30)
)


def test_a_window_is_whole_sentences_around_the_answer_and_fits() -> None:
    answer_at = TEXT.index("year 2007")
    answer = (answer_at, answer_at + len("year 2007"))
    places = set()
    for seed in range(20):
        cut = window(TEXT, random.Random(seed), answer)
        assert cut is not None
        start, end = cut
        assert start <= answer[0]
        assert answer[1] <= end
        assert end - start <= MAX_CHARS
        assert start == 0 or TEXT[start - 2 : start] == ". "  # begins where a sentence begins
        assert TEXT[end - 1] == "."
        places.add(answer[0] - start)
    assert len(places) > 3  # the answer's sentence is not always in the same place
    assert window(TEXT, random.Random(1), answer) == window(TEXT, random.Random(1), answer)
    assert window(TEXT, random.Random(1), answer, max_chars=40) is None  # its sentence alone is longer


def test_qa_records_become_examples_whose_spans_are_their_answers(tmp_path: Path) -> None:
    records: dict[str, list[dict[str, Any]]] = {
        "squad.jsonl": [
            {"question": "When did the bridge open?", "answers": ["year 2007"], "answerable": True},
            {"question": "Who painted the bridge?", "answers": [], "answerable": False},
        ],
        "fairytaleqa.jsonl": [{"question": "What opened?", "answers": ["the bridge"], "answerable": True}],
        "selqa.jsonl": [
            {"question": "Which sentence?", "answers": ["Sentence number 3"], "answerable": True}
        ],
    }
    for name, rows in records.items():
        with (tmp_path / name).open("w") as handle:
            for i, row in enumerate(rows):
                starts = [TEXT.index(a) for a in row["answers"]]
                record = {"id": f"{name}-{i}", "source": name.split(".")[0], "context": TEXT, **row}
                handle.write(json.dumps(record | {"answer_starts": starts}) + "\n")
    examples = list(qa_examples(tmp_path, random.Random(0)))
    assert len(examples) == 4
    for example in examples:
        assert len(example.context) <= MAX_CHARS
        assert example.context in TEXT
        if example.answerable:
            assert example.start is not None
            assert example.end is not None
            answer = example.context[example.start : example.end]
            assert answer in {"year 2007", "the bridge", "Sentence number 3"}
    assert [e.answerable for e in examples if e.source == "squad"] == [True, False]


def test_news_examples_read_only_the_tune_half() -> None:
    dataset = load_dataset(ROOT / "evals" / "datasets" / "seed")
    questions = {q.id: q for q in dataset.questions}
    examples = list(news_examples(dataset, random.Random(0)))
    assert examples
    assert all(in_tune_half(e.group) for e in examples)
    assert {e.answerable for e in examples} == {True, False}
    for example in examples:
        golds = questions[example.group].answers
        if example.answerable:
            assert example.start is not None
            found = example.context[example.start : example.end].lower()
            assert found in {g.lower() for g in golds}
        else:
            assert not any(g.lower() in example.context.lower() for g in golds)
            if "/missing/" in example.id:  # the nearest other article; else a window of the gold one
                assert example.id.split("/")[2] not in questions[example.group].gold_ids
            else:
                assert example.id.endswith("/topic")
    train, held = split_for_validation(examples, 0.3, seed=1)
    assert held
    assert not {e.group for e in train} & {e.group for e in held}
    assert len(train) + len(held) == len(examples)


def test_targets_point_at_the_answer_s_pieces_and_cls_when_there_is_none() -> None:
    import torch

    from evals.fit.reader import best_span, encode, tokenizer
    from evals.fit.reader_data import Example

    context = "The ferry left at noon. The new bridge opened in March 2019, the mayor said."
    at = context.index("March 2019")
    examples = [
        Example("a", "a", "t", "When did the bridge open?", context, at, at + len("March 2019")),
        Example("b", "b", "t", "Who built the tunnel?", context, None, None),
        Example("c", "c", "t", "When?", "word " * 400 + "in 1999.", 2000, 2007),  # cut off: no target
    ]
    tok = tokenizer()
    batch, offsets = encode(tok, examples)
    start, end = int(batch.starts[0]), int(batch.ends[0])
    assert context[int(offsets[0][start][0]) : int(offsets[0][end][1])] == "March 2019"
    assert (int(batch.starts[1]), int(batch.ends[1])) == (0, 0)
    assert (int(batch.starts[2]), int(batch.ends[2])) == (0, 0)
    logits = torch.full((12,), -5.0)
    logits_end = torch.full((12,), -5.0)
    logits[3], logits_end[5] = 4.0, 4.0
    assert best_span(logits, logits_end)[:2] == (3, 5)
    logits[0], logits_end[0] = 9.0, 9.0  # [CLS] wins: no answer
    assert best_span(logits, logits_end)[:2] == (0, 0)
