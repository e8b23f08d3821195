"""Standing questions scored on their own (rag/standing.py), over the session's indexed news: which
new articles a question is read against, and which answers it is told."""

from __future__ import annotations

import dataclasses

import numpy as np

from rag import Answerer
from rag.standing import StandingMatcher, StandingQuestion, strongest

ASKED = "Why did Russian peacekeepers leave Karabakh?"


def _question(text: str = ASKED, **changes: object) -> StandingQuestion:
    made = StandingQuestion(id="q1", text=text, sources=frozenset(), min_confidence=0.0, after=0)
    return dataclasses.replace(made, **changes)  # type: ignore[arg-type]


def test_a_question_is_told_of_the_article_that_answers_it(news_answerer: Answerer) -> None:
    matcher = StandingMatcher(news_answerer)
    reader = news_answerer.index.reader()
    shortlist = matcher.shortlist(
        [_question(), _question("Who won the 2031 chess olympiad in Lima?", id="q2")]
    )
    assert set(shortlist.embedded) == {"q1", "q2"}  # no vector was kept: both embedded
    found = matcher.match(shortlist, reader, reader.chunk_ids(), as_of=None)
    assert found
    assert {m.question_id for m in found} == {"q1"}
    assert all("Karabakh" in m.answer.text for m in found)
    assert all(m.near >= matcher.near and m.overlap >= matcher.overlap for m in found)
    assert matcher.reads >= 1


def test_outlets_news_and_confidence_bound_what_is_told(news_answerer: Answerer) -> None:
    matcher = StandingMatcher(news_answerer)
    reader = news_answerer.index.reader()
    ids = reader.chunk_ids()
    told = matcher.match(matcher.shortlist([_question()]), reader, ids, as_of=None)
    assert told
    elsewhere = _question(sources=frozenset({"no such outlet"}))
    assert matcher.match(matcher.shortlist([elsewhere]), reader, ids, as_of=None) == []
    old_news = _question(after=int(ids.max()))  # everything committed before the question was asked
    assert matcher.match(matcher.shortlist([old_news]), reader, ids, as_of=None) == []
    surest = max(m.confidence for m in told)
    demanding = _question(min_confidence=min(1.0, surest + 1e-6))
    assert surest == 1.0 or matcher.match(matcher.shortlist([demanding]), reader, ids, as_of=None) == []


def test_a_kept_vector_is_not_embedded_again(news_answerer: Answerer) -> None:
    matcher = StandingMatcher(news_answerer)
    first = matcher.shortlist([_question()])
    kept = _question(vector=first.embedded["q1"])
    again = matcher.shortlist([kept])
    assert again.embedded == {}
    assert np.array_equal(again.vectors[0], first.vectors[0])


def test_the_strongest_answer_per_question() -> None:
    @dataclasses.dataclass(frozen=True)
    class Told:
        asked: str
        confidence: float

    told = [Told("a", 0.3), Told("b", 0.9), Told("a", 0.7), Told("a", 0.5)]
    assert strongest(told, lambda t: t.asked) == [Told("b", 0.9), Told("a", 0.7)]
