"""Generated answers against a real model server (llama.cpp's, with SmolLM2-135M-Instruct on 127.0.0.1):
every sentence shown is checked, the Karabakh answer invents no cause, and an outage answers by quoting."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.config import Settings
from api.web.app import create_app
from index import Embedder, load_paths, make_ingestor
from index.store import IndexStore
from index.tokens import encoding
from rag import Answerer
from rag.answer import make_composer, make_condenser
from rag.condense import ModelCondenser, supported
from rag.follow import Turn
from rag.generate import GenerativeComposer
from tests.conftest import NEWS, SEED_ID, SEEDS, local_client, make_settings, open_local
from tests.servers import free_port, llama_server

pytestmark = pytest.mark.slow

KARABAKH = "Why did Russian peacekeepers leave Karabakh?"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with llama_server(tmp_path_factory.mktemp("llama") / "server.log") as base:
        yield base


@pytest.fixture(scope="module")
def indexed(
    tmp_path_factory: pytest.TempPathFactory, tiktoken_dir: Path, embedder: Embedder
) -> Iterator[tuple[Settings, IndexStore]]:
    settings = make_settings(tmp_path_factory.mktemp("generate") / "data", tiktoken_dir)
    store = open_local(settings, embedder)
    make_ingestor(settings.index, store, embedder).ingest(load_paths([SEEDS, NEWS]), progress=False)
    yield settings, store
    store.close()


def _body(answerer: Answerer, article_id: str) -> str:
    return answerer.index.reader().articles([article_id])[article_id].body


def _answerer(settings: Settings, store: IndexStore, embedder: Embedder, base_url: str) -> Answerer:
    with_model = dataclasses.replace(settings.answers, llm_base_url=base_url, llm_model="smollm2")
    tokens = encoding(settings.index.tiktoken_cache_dir)
    composer = make_composer(with_model, embedder, tokens)
    return Answerer(store, embedder, with_model, composer=composer, condenser=make_condenser(with_model))


def _shown_sentences_are_checked(answerer: Answerer, question: str) -> None:
    answer = answerer.ask(answerer.question(question))
    assert not answer.abstained
    assert answer.sentences
    assert all(s.verified for s in answer.sentences)  # nothing unchecked is ever shown
    for citation in answer.citations:  # every citation still quotes its article verbatim
        body = _body(answerer, citation.article_id)
        assert body[citation.span.start : citation.span.end] == citation.quote
    if answer.generated:
        assert answer.timings_ms["completion_tokens"] > 0
        assert answer.timings_ms["model"] > 0
    else:
        assert answer.fallback == "no generated sentence was supported by its sources"


def test_generated_answers_show_only_checked_sentences(
    model: str, indexed: tuple[Settings, IndexStore], embedder: Embedder
) -> None:
    answerer = _answerer(*indexed, embedder, model)
    assert isinstance(answerer.composer, GenerativeComposer)
    for question in (
        KARABAKH,
        "Who won the harbour marathon?",
        "Why were flights cancelled across the region?",
    ):
        _shown_sentences_are_checked(answerer, question)


def test_the_karabakh_answer_invents_no_cause(
    model: str, indexed: tuple[Settings, IndexStore], embedder: Embedder
) -> None:
    answerer = _answerer(*indexed, embedder, model)
    answer = answerer.ask(answerer.question(KARABAKH))
    assert answer.citations[0].article_id == SEED_ID
    seed = _body(answerer, SEED_ID).lower()
    for sentence in answer.sentences:  # the seed gives no cause: no sentence may state one it lacks
        assert sentence.verified
        for cause in ("because", "due to", "as a result", "in order to", "so that"):
            assert cause not in sentence.text.lower() or cause in seed


def test_a_model_outage_answers_by_quoting_and_opens_the_breaker(
    indexed: tuple[Settings, IndexStore], embedder: Embedder
) -> None:
    answerer = _answerer(*indexed, embedder, f"http://127.0.0.1:{free_port()}/v1")  # nothing listens
    composer = answerer.composer
    assert isinstance(composer, GenerativeComposer)
    for _ in range(3):
        answer = answerer.ask(answerer.question(KARABAKH))
        assert answer.fallback is not None
        assert answer.fallback.startswith("the language model is unavailable")
        assert not answer.generated
        assert "withdrawal of Russian peacekeepers" in answer.text
    assert composer.breaker.open
    started = time.perf_counter()
    paused = answerer.ask(answerer.question(KARABAKH))
    assert paused.fallback == "the language model failed repeatedly; paused"
    assert time.perf_counter() - started < 5  # no call, no retry, while the breaker is open


def test_the_api_says_whether_an_answer_was_generated(
    model: str, indexed: tuple[Settings, IndexStore], embedder: Embedder
) -> None:
    settings, store = indexed
    app = create_app(settings, opener=lambda s: _answerer(s, store, embedder, model), background=False)
    with local_client(app) as client:
        body = client.post("/ask", json={"question": KARABAKH}, timeout=120).json()
        assert set(body) >= {"generated", "fallback", "sentences"}
        assert all(s["verified"] for s in body["sentences"])
        assert body["generated"] is (body["fallback"] is None)
        stream = client.post("/ask/stream", json={"question": KARABAKH}, timeout=120).text
        assert '"generated":' in stream
        assert '"verified":true' in stream
        # As an OpenAI-compatible service: a model per way of answering, each answering its way.
        models = client.get("/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["news", "news-generated"]
        question = {"messages": [{"role": "user", "content": KARABAKH}]}
        quoted = client.post("/v1/chat/completions", json={**question, "model": "news"}, timeout=120).json()
        seed = _body(_answerer(settings, store, embedder, model), SEED_ID)
        said = quoted["choices"][0]["message"]["content"].split("\n\nSources:")[0]
        for sentence in re.findall(r"(.+?) \[\d+\](?= |$)", said):
            assert sentence.strip() in seed  # verbatim quotes, though a model is configured
        written = client.post(
            "/v1/chat/completions", json={**question, "model": "news-generated"}, timeout=120
        )
        assert written.status_code == 200
        assert written.json()["citations"][0]["article_id"] == SEED_ID


MARATHON = [
    Turn("user", "Who won the harbour marathon?"),
    Turn(
        "assistant",
        "Kenyan runner Grace Wanjiru won the harbour marathon in 2 hours 18 minutes, a course record. [1]",
        ("t-marathon-record",),
    ),
]


def test_a_follow_up_is_rewritten_by_the_model_only_when_every_word_was_said(
    model: str, indexed: tuple[Settings, IndexStore], embedder: Embedder
) -> None:
    answerer = _answerer(*indexed, embedder, model)
    condenser = answerer.condenser
    assert isinstance(condenser, ModelCondenser)
    follow_up = "How many runners finished it?"
    rewrite = condenser.condense(follow_up, MARATHON)  # the model's, checked; None when it brought words in
    assert rewrite is None or supported(rewrite, follow_up, MARATHON)
    assert not condenser.breaker.open
    question = answerer.question(follow_up, history=MARATHON)
    assert question.follow is not None
    assert question.follow.rewritten_by == ("model" if rewrite else "rules")
    assert question.searched == (rewrite or question.follow.standalone)
    answer = answerer.ask(question)
    assert answer.standalone_question == question.searched
    assert answer.citations[0].article_id == "t-marathon-record"
    assert all(s.verified for s in answer.sentences)


def test_a_model_outage_leaves_follow_ups_to_the_rules(
    indexed: tuple[Settings, IndexStore], embedder: Embedder
) -> None:
    answerer = _answerer(*indexed, embedder, f"http://127.0.0.1:{free_port()}/v1")  # nothing listens
    condenser = answerer.condenser
    assert isinstance(condenser, ModelCondenser)
    for _ in range(3):
        question = answerer.question("How many runners finished it?", history=MARATHON)
        assert question.follow is not None
        assert question.follow.rewritten_by == "rules"
        assert "marathon" in question.searched
    assert condenser.breaker.open
