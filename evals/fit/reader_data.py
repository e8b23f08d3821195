"""Training examples for the reader (issue 30): a question, a short context of whole sentences, and the
answer's character span in that context, or none.

The reader will be asked about the composer's best candidate sentences packed into one short context, so
every example is such a window: consecutive sentences of a source text, at most ``max_chars`` long, the
answer's sentence at a random place in it (or any window for a question with no answer there).

Sources, read at training time only (their text is never copied into the project):
- ``squad.jsonl``: SQuAD 1.1 and 2.0 dev paragraphs; answer spans, and questions written to look
  answerable that the paragraph does not answer (the near-topic case a missing story is);
- ``fairytaleqa.jsonl``: explicit answer spans in story sections;
- ``selqa.jsonl``: answer sentences; the span is the whole sentence (which sentence answers);
- the RealTime QA tune half (``evals/split.py``): sentences of a gold article that hold a gold answer,
  the span being the answer; as no-answer examples, the same question over the non-gold article of the
  corpus that shares most of its words (the story missing, its nearest neighbour on the topic there
  instead) and over a window of the gold article holding no gold answer (the story's topic, not the
  asked-for fact: what the composer used to quote).
The check half is never read.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from evals.data import Dataset
from evals.searched import Page, SearchedQuestion, find_answer, load
from evals.split import in_tune_half
from index.sentences import split_sentences
from index.terms import tokenize

QA_FILES = ("squad.jsonl", "fairytaleqa.jsonl", "selqa.jsonl")
MAX_CHARS = 500
"""A window's length: about 110 word pieces, so a question and its window fit in 160 (the reader reads
its candidates packed to about this length when serving)."""


@dataclass(frozen=True)
class Example:
    id: str
    group: str
    """The record or question it comes from: a validation split keeps a group on one side."""
    source: str
    question: str
    context: str
    start: int | None
    """Where the answer starts in ``context``; None when the context does not answer."""
    end: int | None

    @property
    def answerable(self) -> bool:
        return self.start is not None


def window(
    text: str, rng: random.Random, answer: tuple[int, int] | None, max_chars: int = MAX_CHARS
) -> tuple[int, int] | None:
    """A run of whole sentences of ``text`` (its start and end) at most ``max_chars`` long that holds
    ``answer`` (start and end offsets), its sentence at a random place; any such run when ``answer`` is
    None. None when the answer's sentences alone are longer than ``max_chars``."""
    spans = [(s.start, s.end) for s in split_sentences(text)]
    if not spans:
        return None
    if answer is None:
        first = rng.randrange(len(spans))
        last = first
    else:
        inside = [i for i, (s, e) in enumerate(spans) if s < answer[1] and e > answer[0]]
        if not inside:
            return None
        first, last = inside[0], inside[-1]
    if spans[last][1] - spans[first][0] > max_chars:
        return None
    # Grow the run on a random side while it fits, so the answer sits anywhere in it.
    while True:
        sides = []
        if first > 0 and spans[last][1] - spans[first - 1][0] <= max_chars:
            sides.append(-1)
        if last + 1 < len(spans) and spans[last + 1][1] - spans[first][0] <= max_chars:
            sides.append(1)
        if not sides:
            return spans[first][0], spans[last][1]
        if rng.choice(sides) < 0:
            first -= 1
        else:
            last += 1


def _example(
    ids: tuple[str, str],
    source: str,
    question: str,
    text: str,
    answer: tuple[int, int] | None,
    rng: random.Random,
) -> Example | None:
    """``ids``: the example's and its group's."""
    cut = window(text, rng, answer)
    if cut is None:
        return None
    context = text[cut[0] : cut[1]]
    if answer is None:
        return Example(*ids, source, question, context, None, None)
    return Example(*ids, source, question, context, answer[0] - cut[0], answer[1] - cut[0])


def qa_examples(folder: Path, rng: random.Random) -> Iterator[Example]:
    """The examples of ``QA_FILES`` in ``folder`` (one per record; a record whose answer's sentences do
    not fit a window is left out)."""
    for name in QA_FILES:
        with (folder / name).open(encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                answer = None
                if record["answerable"]:
                    start = int(record["answer_starts"][0])
                    answer = (start, start + len(record["answers"][0]))
                ids = (record["id"], record["id"])
                made = _example(ids, record["source"], record["question"], record["context"], answer, rng)
                if made is not None:
                    yield made


def news_examples(dataset: Dataset, rng: random.Random) -> Iterator[Example]:
    """The tune half of a RealTime QA dataset: for each answerable question, every gold article sentence
    that holds a gold answer (the span the answer's first occurrence in it), and one window of the
    non-gold article sharing most of the question's words (no answer) when that window holds no gold
    answer, and one window of the gold article holding no gold answer (no answer)."""
    from index import load_paths

    articles = {a.id: a for a in load_paths([dataset.corpus]) if not isinstance(a, Exception)}
    order = list(articles)
    texts = [f"{articles[i].title} {articles[i].body}" for i in order]
    words = dict(zip(order, map(set, tokenize(texts)), strict=True))
    for q in dataset.questions:
        if not q.answerable or not in_tune_half(q.id):
            continue
        found = 0
        for gold in q.gold_ids:  # one window per gold article, at the first gold answer it holds
            body = articles[gold].body if gold in articles else ""
            for answer in q.answers:
                at = _find(body, answer)
                if at is not None:
                    ids = (f"{q.id}/{gold}", q.id)
                    made = _example(ids, dataset.name, q.question, body, at, rng)
                    if made is not None:
                        found += 1
                        yield made
                    break
        if found and q.gold_ids[0] in articles:
            ids = (f"{q.id}/topic", q.id)
            topic = _example(ids, dataset.name, q.question, articles[q.gold_ids[0]].body, None, rng)
            if topic is not None and not any(_find(topic.context, a) for a in q.answers):
                yield topic
        asked = set(tokenize([q.question])[0])
        others = [i for i in articles if i not in q.gold_ids and articles[i].body]
        if found and others:
            nearest = max(others, key=lambda i: (len(asked & words[i]), i))
            ids = (f"{q.id}/missing/{nearest}", q.id)
            missing = _example(ids, dataset.name, q.question, articles[nearest].body, None, rng)
            if missing is not None and not any(_find(missing.context, a) for a in q.answers):
                yield missing


SEARCHED_POSITIVES = 2
"""Stating pages read a question (its windows around the answer)."""
SEARCHED_NEGATIVES = 2
"""Near-topic windows a question: from pages that do not state the answer, and one from a stating page
away from the answer. About 1.5 no-answer windows for each answer window over the tune half."""


def searched_examples(folder: Path, rng: random.Random, packed: bool = False) -> Iterator[Example]:
    """Windows of the tune half's searched news pages (evals/searched.py): for each question, the window
    around the best-fitting mention of its answer on up to SEARCHED_POSITIVES stating pages, and up to
    SEARCHED_NEGATIVES no-answer windows where the question's words are densest: on its other pages, and
    (for a question with a stating page) one on that page away from the answer. With ``packed``, also
    the context the service reads (``packed_example``)."""
    questions, pages = load(folder)
    for q in questions:
        if not in_tune_half(q.id) or not q.pages:
            continue
        asked = set(tokenize([q.question])[0])
        stating = [p for p in q.pages if find_answer(pages[p].text, q.answers)]
        if packed:
            made = packed_example(q, pages, stating, asked, rng)
            if made is not None:
                yield made
        for page_id in stating[:SEARCHED_POSITIVES]:
            text = pages[page_id].text
            best = max(_mentions(text, q.answers), key=lambda at: _fit(text, at, asked), default=None)
            if best is not None:
                made = _example((f"{q.id}/{page_id}", q.id), "news-qa", q.question, text, best, rng)
                if made is not None:
                    yield made
        others = [(p, _densest(pages[p].text, asked)) for p in q.pages if p not in stating]
        if stating:
            away = _densest(pages[stating[0]].text, asked, avoid=q.answers)
            others = [*others[: SEARCHED_NEGATIVES - 1], (stating[0], away)]
        for page_id, sentence in others[:SEARCHED_NEGATIVES]:
            if sentence is None:
                continue
            text = pages[page_id].text
            cut = window(text, rng, sentence)
            if cut is None or find_answer(text[cut[0] : cut[1]], q.answers):
                continue
            ids = (f"{q.id}/{page_id}/near", q.id)
            yield Example(*ids, "news-qa", q.question, text[cut[0] : cut[1]], None, None)


PACKED_CHARS = 420
"""A packed context's length: about the 96 word pieces the service reads a question's candidates in."""


def packed_example(
    q: SearchedQuestion,
    pages: dict[str, Page],
    stating: Sequence[str],
    asked: set[str],
    rng: random.Random,
) -> Example | None:
    """What the service reads (rag/reader.py): candidate sentences of several articles packed after the
    question, best first by their words. Here the sentence densest in the question's words of each of the
    question's pages, in the order of the search, and for a question with a stating page the sentence
    that states the answer (best fitting) at a random place among them: an answer, or none of the
    near-topic sentences states one."""
    near: list[str] = []
    for page_id in q.pages:
        if page_id in stating:
            continue
        text = pages[page_id].text
        at = _densest(text, asked, avoid=q.answers)
        if at is not None:
            near.append(text[at[0] : at[1]])
    answer: tuple[str, tuple[int, int]] | None = None
    if stating:
        text = pages[stating[0]].text
        best = max(_mentions(text, q.answers), key=lambda at: _fit(text, at, asked), default=None)
        sentence = (
            next((s for s in split_sentences(text) if s.start <= best[0] < s.end), None) if best else None
        )
        if best is None or sentence is None or best[1] > sentence.end:
            return None
        answer = (text[sentence.start : sentence.end], (best[0] - sentence.start, best[1] - sentence.start))
    room = PACKED_CHARS - (len(answer[0]) + 1 if answer else 0)
    picked: list[tuple[str, tuple[int, int] | None]] = []
    for sentence_text in near:
        if room >= len(sentence_text) + 1:
            picked.append((sentence_text, None))
            room -= len(sentence_text) + 1
    if answer is not None:
        picked.insert(rng.randrange(len(picked) + 1), answer)
    context, start, end = "", None, None
    for sentence_text, place in picked:
        if context:
            context += " "
        if place is not None:
            start, end = len(context) + place[0], len(context) + place[1]
        context += sentence_text
    if not context or (answer is None and find_answer(context, q.answers)):
        return None
    kind = "packed" if start is not None else "packed-none"
    return Example(f"{q.id}/{kind}", q.id, "news-qa", q.question, context, start, end)


def _mentions(text: str, answers: Sequence[str]) -> Iterator[tuple[int, int]]:
    """Every whole-phrase occurrence of a gold answer in ``text``."""
    at = 0
    while (found := find_answer(text[at:], answers)) is not None:
        yield at + found[0], at + found[1]
        at += found[1]


def _fit(text: str, at: tuple[int, int], asked: set[str]) -> int:
    """How many of the question's words the sentence around ``at`` holds."""
    sentence = next((s for s in split_sentences(text) if s.start <= at[0] < s.end), None)
    return len(asked & set(tokenize([text[sentence.start : sentence.end]])[0])) if sentence else 0


def _densest(text: str, asked: set[str], avoid: Sequence[str] = ()) -> tuple[int, int] | None:
    """The sentence of ``text`` holding most of the question's words (and none of ``avoid``)."""
    sentences = [
        s for s in split_sentences(text) if not (avoid and find_answer(text[s.start : s.end], avoid))
    ]
    if not sentences:
        return None
    words = tokenize([text[s.start : s.end] for s in sentences])
    best = max(range(len(sentences)), key=lambda i: len(asked & set(words[i])))
    return sentences[best].start, sentences[best].end


def _find(text: str, answer: str) -> tuple[int, int] | None:
    """The first occurrence of ``answer`` in ``text`` as a whole phrase, ignoring case."""
    if not answer.strip():
        return None
    match = re.search(rf"(?<!\w){re.escape(answer.strip())}(?!\w)", text, re.IGNORECASE)
    return (match.start(), match.end()) if match else None


def split_for_validation(
    examples: Sequence[Example], share: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """``share`` of the groups kept aside to validate a training run (every example of a group on one
    side): (train, validation)."""
    groups = sorted({e.group for e in examples})
    held = set(random.Random(seed).sample(groups, int(len(groups) * share)))
    return [e for e in examples if e.group not in held], [e for e in examples if e.group in held]
