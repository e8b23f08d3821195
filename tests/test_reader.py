"""The reader (issue 30) in the service: it quotes the sentence that states the asked-for fact and gives the
words that do as the short answer, the same through every door (in-process, /ask, its stream, /v1 and
MCP); a question the news does not answer is refused; a missing or damaged model stops start-up with the
fix."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from api.config import Settings
from evals.harness import normalize_answer
from index import Embedder, load_paths, make_ingestor
from index.errors import ConfigError
from index.terms import tokenize
from rag import Answerer
from rag.config import AnswerSettings
from rag.follow import Turn
from rag.reader import DEFAULT_FOLDER, MANIFEST, SpanReader
from rag.unstated import NOT_STATED_WHY, gives_reason
from tests.conftest import NEWS, SEEDS, make_settings, open_local
from tests.servers import free_port, rag, rag_env, serving

READER_NEWS = Path(__file__).resolve().parent / "data" / "reader.jsonl"
WHERE = "Where will the Hillside pupils be taught after the storm?"
KARABAKH = "Why did Russian peacekeepers leave Karabakh?"
MARATHON = "Who won the harbour marathon?"


@pytest.fixture(scope="module")
def reading(
    tmp_path_factory: pytest.TempPathFactory, tiktoken_dir: Path, embedder: Embedder
) -> Iterator[Answerer]:
    """The seed, the short news items and the storm story, read with the reader (the default)."""
    settings = make_settings(tmp_path_factory.mktemp("reader") / "data", tiktoken_dir)
    store = open_local(settings, embedder)
    report = make_ingestor(settings.index, store, embedder).ingest(
        load_paths([SEEDS, NEWS, READER_NEWS]), progress=False
    )
    assert not report.failed
    yield Answerer(store, embedder, settings.answers)
    store.close()


def _short(answer: Any) -> str:
    short = answer.short_answer
    assert short is not None, answer.text
    quote = next(c.quote for c in answer.citations if c.n == short.n)
    assert quote[short.start : short.end] == short.text
    return normalize_answer(short.text)


def test_a_where_question_is_answered_by_the_sentence_that_names_the_place(reading: Answerer) -> None:
    answer = reading.ask(reading.question(WHERE, as_of=None))
    assert not answer.abstained
    assert "grange community centre" in _short(answer)
    assert answer.short_answer is not None
    assert answer.short_answer.n == 1
    assert "Grange Community Centre" in answer.sentences[0].text  # the answer leads, not the storm


def test_a_how_many_follow_up_is_answered_with_the_number(reading: Answerer) -> None:
    first = reading.ask(reading.question(MARATHON))
    assert "wanjiru" in _short(first)
    history = [Turn("user", MARATHON), Turn("assistant", first.text, ("t-marathon-record",))]
    answer = reading.ask(reading.question("How many finished?", history=history))
    assert "18 000" in _short(answer)
    assert "18,000" in answer.sentences[0].text


def test_near_topic_questions_over_the_seed_are_refused(reading: Answerer) -> None:
    for question in ("What is the population of Baku?", "How many peacekeepers were wounded in 2021?"):
        answer = reading.ask(reading.question(question))
        assert answer.abstained, (question, answer.text)
        assert answer.short_answer is None
        assert answer.citations  # the closest sources are still listed


def test_a_why_the_article_never_gives_has_no_short_answer_and_says_so(reading: Answerer) -> None:
    # The seed speaks of the early withdrawal and what it means, never of why: the right quotes, no short
    # answer, and the answer says the reason is not stated.
    answer = reading.ask(reading.question(KARABAKH))
    assert not answer.abstained
    assert any("withdrawal of Russian peacekeepers" in c.quote for c in answer.citations)
    assert answer.short_answer is None
    assert answer.unstated == NOT_STATED_WHY
    # A why the article gives: "A storm tore part of the roof off" the school is what closed it.
    closed = reading.ask(reading.question("Why was Hillside Primary School closed?"))
    assert closed.short_answer is not None
    assert "storm" in closed.short_answer.text.lower()
    assert closed.unstated is None
    # Asked where, not why, the same kind of question keeps its short answer and has no note.
    where = reading.ask(reading.question(WHERE))
    assert where.short_answer is not None
    assert where.unstated is None


def test_a_short_answer_to_why_must_say_a_reason() -> None:
    def gives(quote: str, words: str, asked: str = "") -> bool:
        at = quote.index(words)
        return gives_reason(quote, at, at + len(words), tokenize([asked])[0])

    withdrawal = (
        "The meeting comes with the early withdrawal of the peacekeepers, a step that raises questions "
        "about stability in the region."
    )
    assert not gives(withdrawal, "a step that raises questions about stability in the region")
    assert gives("The school closed because the storm tore its roof off.", "the storm tore its roof off")
    assert gives("The school closed after a storm tore its roof off.", "a storm tore its roof off")
    assert gives("They left to protect the crossing.", "to protect the crossing")
    assert gives("A storm tore the roof off the school, flooding six rooms.", "A storm")
    assert not gives("The ferry, run by the council, left at noon.", "run by the council")
    # The opening words of what the question itself is about are no cause.
    pupils = "The school's 240 pupils will be taught at the Grange until the repairs are finished."
    assert not gives(pupils, "The school's 240", "Why are the pupils taught at the Grange?")
    presence = "The presence of peacekeepers in the region has become a point of contention."
    words = "The presence of peacekeepers in the region has become a point of contention"
    assert not gives(presence, words, "Why did the peacekeepers leave?")
    storm = "A storm tore the roof off Hillside School, flooding six rooms."
    assert gives(storm, "A storm tore the roof off Hillside School", "Why was Hillside School closed?")


def test_reader_off_keeps_the_scored_choice(reading: Answerer) -> None:
    off = Answerer(reading.index, reading.embedder, AnswerSettings(reader=False))
    answer = off.ask(off.question(WHERE))
    assert off.quotes.span_reader is None
    assert answer.short_answer is None


def test_a_missing_or_damaged_reader_stops_start_up_with_the_fix(tmp_path: Path, tiktoken_dir: Path) -> None:
    folder = tmp_path / "reader"
    shutil.copytree(DEFAULT_FOLDER, folder)
    model = folder / json.loads((folder / MANIFEST).read_text())["file"]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"damaged.*make train-reader"):
        SpanReader(folder)
    env = rag_env(tmp_path / "data", tiktoken_dir) | {"RAG_READER_PATH": str(folder)}
    damaged = rag("serve", "--port", str(free_port()), env=env, timeout=120)
    assert damaged.returncode == 2
    assert "damaged" in damaged.stderr
    assert "git checkout -- rag/models/reader" in damaged.stderr
    assert "Traceback" not in damaged.stderr

    model.unlink()
    with pytest.raises(ConfigError, match="missing"):
        SpanReader(folder)
    missing = rag("serve", "--port", str(free_port()), env=env, timeout=120)
    assert missing.returncode == 2
    assert "missing" in missing.stderr
    assert "make train-reader" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.slow
def test_the_same_short_answer_through_every_door(
    reading: Answerer, tmp_path: Path, tiktoken_dir: Path
) -> None:
    wanted = reading.ask(reading.question(WHERE)).short_answer
    assert wanted is not None
    env = rag_env(tmp_path / "data", tiktoken_dir)
    assert rag("ingest", "--quiet", str(SEEDS), str(NEWS), str(READER_NEWS), env=env).returncode == 0
    expected = {"text": wanted.text, "n": wanted.n, "start": wanted.start, "end": wanted.end}
    with serving(env, tmp_path / "server.log") as base:
        asked = httpx.post(f"{base}/ask", json={"question": WHERE}, timeout=60).json()
        assert {k: asked["short_answer"][k] for k in expected} == expected

        with httpx.stream("POST", f"{base}/ask/stream", json={"question": WHERE}, timeout=60) as stream:
            events = _events(stream.iter_lines())
        sources = json.loads(events["sources"])
        assert {k: sources["short_answer"][k] for k in expected} == expected

        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
        reply = client.chat.completions.create(model="news", messages=[{"role": "user", "content": WHERE}])
        content = reply.choices[0].message.content or ""
        assert content.startswith(f"**{wanted.text}** [{wanted.n}]\n\n")
        streamed = client.chat.completions.create(
            model="news", messages=[{"role": "user", "content": WHERE}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == content

        assert asyncio.run(session_call(base, WHERE))["short_answer"] == expected

        # A why the news never gives: the note through every door, and no short answer.
        why = {"question": KARABAKH}
        asked = httpx.post(f"{base}/ask", json=why, timeout=60).json()
        assert (asked["unstated"], asked["short_answer"]) == (NOT_STATED_WHY, None)
        with httpx.stream("POST", f"{base}/ask/stream", json=why, timeout=60) as stream:
            sources = json.loads(_events(stream.iter_lines())["sources"])
        assert (sources["unstated"], sources["short_answer"]) == (NOT_STATED_WHY, None)
        reply = client.chat.completions.create(model="news", messages=[{"role": "user", "content": KARABAKH}])
        assert (reply.choices[0].message.content or "").startswith(f"{NOT_STATED_WHY}\n\n")
        told = asyncio.run(session_call(base, KARABAKH))
        assert (told["unstated"], told["short_answer"]) == (NOT_STATED_WHY, None)


async def session_call(base: str, question: str) -> Any:
    """MCP's ``answer_question`` over the server's streamable HTTP endpoint: its structured result."""
    async with (
        httpx2.AsyncClient(timeout=60) as http,
        Client(streamable_http_client(f"{base}/mcp", http_client=http)) as session,
    ):
        result = await session.call_tool("answer_question", {"question": question})
        return result.structured_content


def _events(lines: Iterator[str]) -> dict[str, str]:
    """The data of each named Server-Sent Event (the last of a name)."""
    found, name = {}, ""
    for line in lines:
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and name:
            found[name] = line.split(":", 1)[1].strip()
    return found


def test_reader_settings_come_from_the_environment() -> None:
    assert AnswerSettings.from_env({}).reader
    assert not AnswerSettings.from_env({"RAG_READER": "off"}).reader
    assert AnswerSettings.from_env({"RAG_READER_THREADS": "2"}).reader_threads == 2
    with pytest.raises(ConfigError, match="RAG_READER_THREADS"):
        AnswerSettings.from_env({"RAG_READER_THREADS": "many"})
    assert Settings.from_env({"RAG_READER": "off"}).answers.reader is False
