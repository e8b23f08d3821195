"""Follow-up questions: the rules that decide whether a question leans on its conversation, the answers
they give over a real index, and ``history`` in /ask and /ask/stream on a real server.

tests/data/conversation.jsonl holds two stories that a bare "When will it be completed?" confuses: a
bridge in Riverton (proposed, approved, then built) and a stadium in Oakdale, and a ferry fare rise."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest

from api.config import Settings
from index import Embedder, load_paths, make_ingestor
from index.errors import QuestionError
from rag import Answer, Answerer
from rag.condense import supported
from rag.follow import MAX_HISTORY, Turn, resolve
from rag.relative import plain
from rag.when import read_period
from tests.conftest import make_settings, open_local
from tests.servers import rag, rag_env, serving
from tests.test_stream import _events

CONVERSATION = Path(__file__).resolve().parent / "data" / "conversation.jsonl"
DAY = date(2024, 12, 1)
FIRST = "What did the Riverton council approve?"


def _thread(first: Answer) -> list[Turn]:
    return [Turn("user", FIRST), Turn("assistant", first.text, tuple(c.article_id for c in first.citations))]


@pytest.fixture(scope="module")
def answerer(
    tmp_path_factory: pytest.TempPathFactory, tiktoken_dir: Path, embedder: Embedder
) -> Iterator[Answerer]:
    settings: Settings = make_settings(tmp_path_factory.mktemp("conversation") / "data", tiktoken_dir)
    store = open_local(settings, embedder)
    assert (
        not make_ingestor(settings.index, store, embedder)
        .ingest(load_paths([CONVERSATION]), progress=False)
        .failed
    )
    yield Answerer(store, embedder, settings.answers)
    store.close()


@pytest.fixture(scope="module")
def history(answerer: Answerer) -> list[Turn]:
    first = answerer.ask(answerer.question(FIRST, as_of=DAY))
    assert first.citations[0].article_id == "c-bridge-approved"
    return _thread(first)


BRIDGE = [
    Turn("user", FIRST),
    Turn("assistant", "The council approved the Harbor Bridge. [1]", ("c-bridge-approved",)),
]


@pytest.mark.parametrize(
    "question",
    [
        "When will it be completed?",  # a pronoun
        "How much will they pay for that?",  # a demonstrative
        "And the mayor?",  # an opening "and", too short to search
        "What about the cost?",
        "Why?",
        "What happened after that?",  # a time word relative to the talk
        "Who voted against it?",
    ],
)
def test_a_follow_up_leans_on_the_conversation(question: str) -> None:
    resolution = resolve(question, BRIDGE)
    assert resolution.leans
    assert resolution.rewritten_by == "rules"
    assert {"Riverton", "council"} <= set(resolution.carried)
    assert resolution.standalone.startswith(question)
    assert "Riverton" in resolution.standalone
    assert resolution.article_ids == ("c-bridge-approved",)


@pytest.mark.parametrize(
    "question",
    [
        "When will the Oakdale stadium be completed?",  # a subject of its own, with a name
        # "what about", and a new subject
        "What about the Oakdale Lions stadium, when will it hold its first game?",
        "How much will a monthly ferry pass across the harbour cost from June?",  # no name, enough own words
        "Who is the mayor of Riverton?",  # no cue at all
    ],
)
def test_a_question_with_a_subject_of_its_own_stands_alone(question: str) -> None:
    resolution = resolve(question, BRIDGE)
    assert not resolution.leans
    assert resolution.standalone == question
    assert resolution.rewritten_by is None


def test_no_history_no_topic_and_a_chain_of_follow_ups() -> None:
    assert not resolve("When will it be completed?", []).leans
    assert not resolve("When will it be completed?", [Turn("assistant", "Hello. [1]", ("x",))]).leans
    chain = [
        *BRIDGE,
        Turn("user", "How much will it cost?"),
        Turn("assistant", "$48 million. [1]", ("c-bridge-approved",)),
    ]
    resolution = resolve("Who pays?", chain)
    assert resolution.leans
    assert {"Riverton", "cost"} <= set(resolution.carried)  # the topic, and what the follow-up added


def test_the_period_and_as_of_of_the_conversation_are_carried(answerer: Answerer) -> None:
    talk = [Turn("user", "What did the Riverton council approve in May 2024?", as_of=DAY), BRIDGE[1]]
    question = answerer.question("How much will it cost?", history=talk)
    assert question.as_of == DAY
    may = read_period("in May 2024", DAY)
    assert may.start == date(2024, 5, 1)
    assert (question.period.start, question.period.end) == (may.start, may.end)
    own = answerer.question("How much will it cost in 2023?", history=talk)
    assert own.period.start == date(2023, 1, 1)  # a period of its own wins
    alone = answerer.question("How much will it cost?")
    assert alone.as_of is None
    assert not alone.period.explicit


def test_a_follow_up_is_answered_from_the_conversation_s_story(
    answerer: Answerer, history: list[Turn]
) -> None:
    alone = answerer.ask(answerer.question("When will it be completed?", as_of=DAY))
    assert alone.passages[0].article.id == "c-stadium"  # asked alone, the other story's words win
    followed = answerer.ask(answerer.question("When will it be completed?", as_of=DAY, history=history))
    assert followed.passages[0].article.id == "c-bridge-approved"
    assert "completed in 2027" in followed.text
    assert followed.citations[0].article_id == "c-bridge-approved"
    assert followed.rewritten_by == "rules"
    assert followed.standalone_question.startswith("When will it be completed? (")
    assert "Riverton" in followed.standalone_question
    cost = answerer.ask(answerer.question("How much will it cost?", as_of=DAY, history=history))
    assert "$48 million" in cost.text
    assert "$96" not in cost.text


def test_an_answer_says_how_old_its_sources_are(answerer: Answerer) -> None:
    approved = answerer.ask(answerer.question(FIRST, as_of=DAY))
    assert approved.coverage is not None
    assert (approved.coverage.oldest, approved.coverage.newest) == (date(2024, 5, 2), date(2024, 5, 2))
    assert approved.coverage.articles == len({c.article_id for c in approved.citations})
    assert not approved.coverage.before_period
    assert approved.coverage.note is None
    # A period after every source: the answer says its newest source is older than what was asked.
    later = answerer.ask(
        answerer.question("What did the Riverton council approve in November 2024?", as_of=DAY)
    )
    assert later.coverage is not None
    assert later.coverage.before_period
    assert later.coverage.newest is not None
    assert later.coverage.newest < date(2024, 11, 1)
    assert later.coverage.note is not None
    assert "before the period the question asks about (from 1 November 2024)" in later.coverage.note


def test_an_answer_shows_the_date_a_relative_day_means_and_its_citation_keeps_the_quote(
    answerer: Answerer,
) -> None:
    answer = answerer.ask(answerer.question(FIRST, as_of=DAY))
    quote = (
        "The Riverton city council on Tuesday approved the Harbor Bridge, a cable-stayed crossing over the "
        "Mill River, by seven votes to two."
    )
    shown = quote.replace("on Tuesday", "on Tuesday [30 April 2024]")  # published Thursday 2 May 2024
    assert answer.citations[0].quote == quote
    assert answer.text.startswith(f"{shown} [1]")
    assert answer.sentences[0].text == shown
    body = answerer.index.reader().articles(["c-bridge-approved"])["c-bridge-approved"].body
    assert body[answer.citations[0].span.start : answer.citations[0].span.end] == quote


@pytest.mark.parametrize(
    "question",
    [
        "How did the Harbor Bridge story unfold?",
        "Timeline of the Harbor Bridge",
        "What has happened with the Harbor Bridge?",
    ],
)
def test_a_timeline_is_dated_entries_oldest_first_one_per_story(answerer: Answerer, question: str) -> None:
    answer = answerer.ask(answerer.question(question, as_of=DAY))
    assert answer.timeline
    assert not answer.abstained
    days = [c.published_at for c in answer.citations if c.published_at]
    assert len(days) == len(answer.citations)
    assert days == sorted(days)  # oldest first
    assert len({c.article_id for c in answer.citations}) == len(answer.citations)  # one entry per story
    assert {c.article_id for c in answer.citations} <= {
        "c-bridge-proposed",
        "c-bridge-approved",
        "c-bridge-works",
    }
    assert len(answer.citations) >= 2
    for sentence, citation in zip(answer.sentences, answer.citations, strict=True):
        assert citation.published_at is not None
        assert sentence.cites == (citation.n,)
        assert sentence.text.startswith(f"{citation.published_at.day} {citation.published_at:%B %Y}: ")
        assert plain(sentence.text) == citation.quote
    assert not answerer.ask(answerer.question(FIRST, as_of=DAY)).timeline


def test_what_happened_after_that_looks_only_after_the_last_answer(
    answerer: Answerer, history: list[Turn]
) -> None:
    after = answerer.ask(answerer.question("What happened after that?", as_of=DAY, history=history))
    assert after.passages[0].article.id == "c-bridge-works"
    assert all(p.article.published_at and p.article.published_at > date(2024, 5, 2) for p in after.passages)
    assert "driving piles" in after.text


def test_a_change_of_subject_is_answered_exactly_as_if_asked_alone(
    answerer: Answerer, history: list[Turn]
) -> None:
    question = "When will the Oakdale stadium be completed?"
    alone = answerer.ask(answerer.question(question, as_of=DAY))
    changed = answerer.ask(answerer.question(question, as_of=DAY, history=history))
    assert changed.text == alone.text
    assert [(p.article.id, p.chunk.id, p.score) for p in changed.passages] == [
        (p.article.id, p.chunk.id, p.score) for p in alone.passages
    ]
    assert changed.standalone_question == question
    assert changed.rewritten_by is None
    assert "2025" in changed.text


@pytest.mark.parametrize(
    ("history", "fragment"),
    [
        ([Turn("system", "be brief")], "role must be user or assistant"),
        ([Turn("user", "   ")], "history message 1 is empty"),
        ([Turn("user", "x" * 2001)], "the limit is 2000"),
        ([Turn("user", "q")] * (MAX_HISTORY + 1), "the limit is 20"),
    ],
)
def test_a_bad_history_is_refused(answerer: Answerer, history: list[Turn], fragment: str) -> None:
    with pytest.raises(QuestionError, match=fragment):
        answerer.question("When will it be completed?", history=history)


def test_a_model_s_rewrite_is_kept_only_when_every_word_was_said() -> None:
    said = [Turn("user", FIRST), Turn("assistant", "The council approved the Harbor Bridge. [1]")]
    question = "When will it be completed?"
    assert supported(
        "When will the Harbor Bridge approved by the Riverton council be completed?", question, said
    )
    assert not supported(
        "When will the Harbor Bridge be completed in Springfield?", question, said
    )  # new word
    assert not supported("What did the Riverton council approve?", question, said)  # lost the question's word
    assert not supported("", question, said)
    assert not supported(question, question, said)  # no more standalone than the question
    assert not supported("completed " * 100, question, said)


# --- over HTTP, on a real server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiktoken_dir: Path) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("conversation-server")
    env = rag_env(folder / "data", tiktoken_dir)
    assert rag("ingest", "--quiet", str(CONVERSATION), env=env).returncode == 0
    with serving(env, folder / "server.log") as base:
        yield base


def _wire(turns: list[Turn]) -> list[dict[str, object]]:
    return [
        {
            "role": t.role,
            "content": t.content,
            **({"article_ids": list(t.article_ids)} if t.article_ids else {}),
        }
        for t in turns
    ]


@pytest.mark.slow
def test_a_follow_up_over_http_and_sse(server: str) -> None:
    first = httpx.post(f"{server}/ask", json={"question": FIRST, "as_of": "2024-12-01"}, timeout=60).json()
    assert first["standalone_question"] == FIRST
    assert first["rewritten_by"] is None
    history = [
        {"role": "user", "content": FIRST},
        {
            "role": "assistant",
            "content": first["answer"],
            "article_ids": [c["article_id"] for c in first["citations"]],
        },
    ]
    body = {"question": "When will it be completed?", "as_of": "2024-12-01", "history": history}
    answer = httpx.post(f"{server}/ask", json=body, timeout=60).json()
    assert answer["passages"][0]["article_id"] == "c-bridge-approved"
    assert "completed in 2027" in answer["answer"]
    assert answer["rewritten_by"] == "rules"
    assert "Riverton" in answer["standalone_question"]
    streamed = _events(httpx.post(f"{server}/ask/stream", json=body, timeout=60).text)
    done = next(data for name, data in streamed if name == "done")
    assert done["standalone_question"] == answer["standalone_question"]  # type: ignore[index]
    assert done["rewritten_by"] == "rules"  # type: ignore[index]
    assert done["coverage"] == answer["coverage"]  # type: ignore[index]
    assert answer["coverage"] == {
        "oldest": "2024-05-02",
        "newest": "2024-05-02",
        "articles": 1,
        "before_period": False,
        "note": None,
    }
    sources = next(data for name, data in streamed if name == "sources")
    assert sources["citations"][0]["article_id"] == "c-bridge-approved"  # type: ignore[index]
    assert sources["coverage"] == answer["coverage"]  # type: ignore[index]
    changed = {
        "question": "When will the Oakdale stadium be completed?",
        "as_of": "2024-12-01",
        "history": history,
    }
    alone = {"question": "When will the Oakdale stadium be completed?", "as_of": "2024-12-01"}
    timeline = {"question": "How did the Harbor Bridge story unfold?", "as_of": "2024-12-01"}
    told = httpx.post(f"{server}/ask", json=timeline, timeout=60).json()
    assert told["timeline"] is True
    assert told["answer"].startswith("15 January 2024: ")
    streamed_timeline = _events(httpx.post(f"{server}/ask/stream", json=timeline, timeout=60).text)
    assert next(data for name, data in streamed_timeline if name == "sources")["timeline"] is True  # type: ignore[index]
    with_history = httpx.post(f"{server}/ask", json=changed, timeout=60).json()
    without = httpx.post(f"{server}/ask", json=alone, timeout=60).json()
    assert with_history["answer"] == without["answer"]
    assert [p["chunk_id"] for p in with_history["passages"]] == [p["chunk_id"] for p in without["passages"]]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("history", "fragment"),
    [
        ([{"role": "system", "content": "be brief"}], "role"),
        ([{"role": "user"}], "content"),
        ([{"role": "user", "content": ""}], "length >= 1"),
        ([{"role": "user", "content": " \t "}], "matching regex"),
        ([{"role": "user", "content": "x" * 2001}], "length <= 2000"),
        ([{"role": "user", "content": "q"}] * (MAX_HISTORY + 1), "length <= 20"),
        ([{"role": "assistant", "content": "a", "article_ids": ["../etc"]}], "article_ids"),
        ([{"role": "user", "content": "q", "mood": "curious"}], "mood"),
        ({"role": "user", "content": "q"}, "history"),
        (["When will it open?"], "history"),
    ],
)
def test_a_bad_history_over_http_is_a_400_problem(server: str, history: object, fragment: str) -> None:
    for path in ("/ask", "/ask/stream"):
        response = httpx.post(f"{server}{path}", json={"question": "When?", "history": history}, timeout=60)
        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["status"] == 400
        assert fragment in str(problem)
        assert "Traceback" not in response.text
        assert "/work" not in response.text
